"""Files keras_bn writes are either complete and checked, or absent."""

import errno
import io
import os
import zipfile

import pytest

from keras_bn.staging import (
    created_directories,
    save_model,
    staged_file,
    validate_destination,
)


def test_success_moves_the_file_into_place(tmp_path):
    destination = str(tmp_path / "m.onnx")
    with staged_file(destination) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path)
        assert os.path.basename(tmp).startswith(".m.onnx.")
        with open(tmp, "wb") as f:
            f.write(b"model")
    assert os.listdir(tmp_path) == ["m.onnx"]
    assert open(destination, "rb").read() == b"model"


def test_failure_removes_the_partial_file_and_keeps_the_old_one(tmp_path):
    destination = tmp_path / "m.onnx"
    destination.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="converter crashed"):
        with staged_file(str(destination)) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half a mod")
            raise RuntimeError("converter crashed")
    assert os.listdir(tmp_path) == ["m.onnx"]
    assert destination.read_bytes() == b"old"


def test_interrupt_removes_the_partial_file(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with staged_file(str(tmp_path / "m.tflite")):
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_valid_destination_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert validate_destination("m.tflite", ".tflite") == str(tmp_path / "m.tflite")
    assert validate_destination(tmp_path / "M.ONNX", ".onnx").endswith("M.ONNX")


@pytest.mark.parametrize(
    "path, error, match",
    [
        (42, TypeError, "Received: path=42 of type int"),
        ("{tmp}/nowhere/m.onnx", FileNotFoundError, "does not exist"),
        ("{tmp}/m.onnx.txt", ValueError, "must end with '.onnx'"),
        ("{tmp}", ValueError, "not a directory"),
    ],
)
def test_bad_destination_raises(tmp_path, path, error, match):
    if isinstance(path, str):
        path = path.format(tmp=tmp_path)
    with pytest.raises(error, match=match):
        validate_destination(path, ".onnx")


# --- .keras archives and output directories -----------------------------------


class FakeModel:
    """Writes a `.keras`-shaped zip, or half of one and then fails like a full disk."""

    def __init__(
        self, payload: bytes, fail_after: int | None = None, named: bool = True
    ):
        self.payload = payload
        self.fail_after = fail_after
        self.named = named  # h5py's and zipfile's ENOSPC carry no file name
        self.saved_to = None

    def save(self, path):
        self.saved_to = path
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("config.json", "{}")
            archive.writestr("model.weights.h5", self.payload)
        data = buffer.getvalue()
        with open(path, "wb") as f:
            if self.fail_after is None:
                f.write(data)
                return
            f.write(data[: self.fail_after])
        name = (path,) if self.named else ()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), *name)


def test_save_model_writes_a_checked_archive_next_to_the_destination(tmp_path):
    model = FakeModel(b"weights")
    path = save_model(model, tmp_path / "m.keras")
    assert path == tmp_path / "m.keras"
    # Keras insists on the extension: the staged name keeps it.
    assert model.saved_to.endswith(".keras") and model.saved_to != str(path)
    assert os.path.dirname(model.saved_to) == str(tmp_path)
    with zipfile.ZipFile(path) as archive:
        assert archive.read("model.weights.h5") == b"weights"
    assert os.listdir(tmp_path) == ["m.keras"]


@pytest.mark.parametrize("named", [True, False])
def test_a_write_that_fails_midway_keeps_the_old_file_and_leaves_nothing(
    tmp_path, named
):
    old = tmp_path / "out.keras"
    save_model(FakeModel(b"old weights"), old)
    before = old.read_bytes()
    with pytest.raises(OSError, match="No space left") as error:
        save_model(FakeModel(b"new weights" * 100, fail_after=200, named=named), old)
    assert error.value.filename == str(old)  # the destination, not the temp name
    assert old.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.keras"]


def test_a_truncated_archive_is_refused_before_it_replaces_anything(tmp_path):
    class Truncating(FakeModel):
        def save(self, path):
            super().save(path)
            data = open(path, "rb").read()
            open(path, "wb").write(data[: len(data) // 2])

    old = tmp_path / "out.keras"
    old.write_bytes(b"previous")
    with pytest.raises(ValueError, match="not a complete zip"):
        save_model(Truncating(b"w" * 1000), old)
    assert old.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["out.keras"]


@pytest.mark.parametrize("fails", [False, True])
def test_created_directories_are_removed_only_on_failure(tmp_path, fails):
    existing = tmp_path / "a"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    target = existing / "b" / "c"
    if fails:
        with pytest.raises(RuntimeError, match="export failed"):
            with created_directories(target) as out:
                (out / "half.onnx").write_bytes(b"x")
                raise RuntimeError("export failed")
        assert sorted(os.listdir(existing)) == ["keep.txt"]
    else:
        with created_directories(target) as out:
            (out / "m.onnx").write_bytes(b"x")
        assert (target / "m.onnx").read_bytes() == b"x"
    assert (existing / "keep.txt").read_text() == "mine"


def test_an_existing_directory_is_never_removed(tmp_path):
    (tmp_path / "old.onnx").write_bytes(b"x")
    with pytest.raises(RuntimeError):
        with created_directories(tmp_path):
            raise RuntimeError("export failed")
    assert os.listdir(tmp_path) == ["old.onnx"]


def test_a_directory_that_refuses_the_staged_file_names_the_users_path(
    tmp_path, monkeypatch
):
    """Issue 17, case 12: the error named `.out.keras.my24m493.partial.keras`."""
    import tempfile

    def refused(prefix, suffix, dir):
        name = os.path.join(dir, f"{prefix}abcd1234{suffix}")
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), name)

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PermissionError) as error_info:
        with staged_file("out.keras"):
            pass
    assert error_info.value.filename == "out.keras"
    assert os.listdir(tmp_path) == []


def write(path, content: bytes) -> None:
    with open(path, "wb") as f:
        f.write(content)


def test_files_published_together_wait_for_the_last_one(tmp_path):
    from keras_bn.staging import published_together

    write(tmp_path / "a.tflite", b"old a")
    with published_together():
        with staged_file(tmp_path / "a.tflite") as tmp:
            write(tmp, b"new a")
        assert (tmp_path / "a.tflite").read_bytes() == b"old a"
        with staged_file(tmp_path / "b.onnx") as tmp:
            write(tmp, b"new b")
    assert sorted(os.listdir(tmp_path)) == ["a.tflite", "b.onnx"]
    assert (tmp_path / "a.tflite").read_bytes() == b"new a"
    assert (tmp_path / "b.onnx").read_bytes() == b"new b"


def test_a_failure_in_the_group_publishes_nothing(tmp_path):
    from keras_bn.staging import published_together

    write(tmp_path / "a.tflite", b"old a")
    with pytest.raises(RuntimeError, match="second file"):
        with published_together():
            with staged_file(tmp_path / "a.tflite") as tmp:
                write(tmp, b"new a")
            with staged_file(tmp_path / "b.onnx") as tmp:
                raise RuntimeError("the second file failed its check")
    assert os.listdir(tmp_path) == ["a.tflite"]
    assert (tmp_path / "a.tflite").read_bytes() == b"old a"


def test_a_group_inside_a_group_waits_for_the_outer_one(tmp_path):
    from keras_bn.staging import published_together

    write(tmp_path / "a.tflite", b"old a")
    with pytest.raises(RuntimeError, match="after the inner group"):
        with published_together():
            with published_together():  # as export_files inside the demo
                with staged_file(tmp_path / "a.tflite") as tmp:
                    write(tmp, b"new a")
                with staged_file(tmp_path / "b.onnx") as tmp:
                    write(tmp, b"new b")
            assert (tmp_path / "a.tflite").read_bytes() == b"old a"
            assert not (tmp_path / "b.onnx").exists()
            raise RuntimeError("a step after the inner group failed")
    assert os.listdir(tmp_path) == ["a.tflite"]
    assert (tmp_path / "a.tflite").read_bytes() == b"old a"


def test_a_move_that_fails_rolls_back_the_moves_before_it(tmp_path, monkeypatch):
    from keras_bn.staging import published_together

    write(tmp_path / "a.tflite", b"old a")
    write(tmp_path / "b.onnx", b"old b")
    real_replace = os.replace

    def replace(source, destination):
        if str(destination).endswith("b.onnx") and ".partial" in str(source):
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(source))
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OSError) as error_info:
        with published_together():
            for name in ("a.tflite", "b.onnx"):
                with staged_file(name) as tmp:
                    write(tmp, b"new")
    assert error_info.value.filename == "b.onnx"
    assert sorted(os.listdir(tmp_path)) == ["a.tflite", "b.onnx"]
    assert (tmp_path / "a.tflite").read_bytes() == b"old a"
    assert (tmp_path / "b.onnx").read_bytes() == b"old b"
