"""`run_demo` publishes its files all together, or none of them."""

import os

import pytest

import keras_bn
from keras_bn import demo


def test_a_failing_step_leaves_the_users_files_as_they_were(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "digits_cnn.keras").write_bytes(b"the user's model")
    (out / "digits_cnn.tflite").write_bytes(b"the user's file")

    def fail(*args, **kwargs):
        raise RuntimeError("population statistics failed")

    # After training and folding have written their two .keras files.
    monkeypatch.setattr(keras_bn, "with_population_statistics", fail)
    with pytest.raises(RuntimeError, match="population statistics failed"):
        demo.run_demo(out, epochs=1)
    assert sorted(os.listdir(out)) == ["digits_cnn.keras", "digits_cnn.tflite"]
    assert (out / "digits_cnn.keras").read_bytes() == b"the user's model"
    assert (out / "digits_cnn.tflite").read_bytes() == b"the user's file"


def test_the_files_are_published_before_the_steps_that_read_them():
    written = [name for name, _ in demo.WRITING_STEPS]
    assert [name for name, _ in demo.DEMO_STEPS[: len(written)]] == written
    assert [name for name, _ in demo.DEMO_STEPS[len(written) :]] == [
        "export BN-free reference",
        "evaluate",
    ]
