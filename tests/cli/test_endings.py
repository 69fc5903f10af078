"""Every way a command can end has a documented exit status and keeps the files.

A closed stdout (`| head`), SIGTERM and SIGHUP, a TensorFlow runtime error and
a bug each end with a status of `keras_bn.defaults.EXIT_STATUSES` (the table of
docs/cli.md), one line on stderr, and no half-written file or half-made
directory; the work completed before a closed stdout is kept.
"""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import pytest

import keras_bn
from keras_bn import cli, defaults
from keras_bn.defaults import STATUS
from keras_bn.stand_in_statistics import set_stand_in_statistics
from tests.helpers.cli import (
    run_script,
    script,
    script_environment,
    stand_in_model_file,
)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return stand_in_model_file(tmp_path_factory.mktemp("model"), seed=6)


@pytest.fixture(scope="module")
def channels_first_file(tmp_path_factory):
    keras.utils.set_random_seed(6)
    model = keras.Sequential(
        [
            keras.Input((2, 6, 6)),
            keras.layers.Conv2D(3, 3, data_format="channels_first"),
            keras_bn.BatchNormalization(axis=1),
        ]
    )
    set_stand_in_statistics(model, seed=6)
    path = tmp_path_factory.mktemp("channels_first") / "cf.keras"
    model.save(path)
    return path


def our_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("keras-bn")]


# --- a closed stdout -------------------------------------------------------------


def test_a_closed_stdout_keeps_the_file_and_prints_no_traceback(model_file, tmp_path):
    """Issue 17, case 6: `keras-bn fold ... --json | true` printed two tracebacks."""
    out = tmp_path / "folded.keras"
    process = subprocess.Popen(
        [script(), "fold", str(model_file), "-o", str(out), "--json", "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=script_environment(),
    )
    process.stdout.close()  # the reader has gone before the document comes
    _, stderr = process.communicate(timeout=300)
    stderr = stderr.decode()
    assert process.returncode == defaults.EXIT_STDOUT_CLOSED, stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert STATUS[process.returncode] == "stdout_closed"
    assert keras_bn.export.bn_layers_left(keras.saving.load_model(out)) == 0


# --- signals ---------------------------------------------------------------------


def test_sigterm_during_an_export_cleans_up_like_ctrl_c(model_file, tmp_path):
    """Issue 17, case 13: SIGTERM left the new directory and a `.partial` file."""
    target = tmp_path / "new" / "dir"
    process = subprocess.Popen(
        [script(), "export", str(model_file), "--format", "onnx", "-o", str(target)]
        + ["-q", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=script_environment(),
        text=True,
    )
    # The staged file exists while the converter writes and parity checks it:
    # the signal arrives in the middle of the export.
    deadline = time.monotonic() + 300
    while not (target.is_dir() and any(".partial" in n for n in os.listdir(target))):
        assert process.poll() is None, "the export ended before its file was staged"
        assert time.monotonic() < deadline, "no staged file within 300 s"
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM == defaults.EXIT_TERMINATED, (
        stdout,
        stderr,
    )
    assert not (tmp_path / "new").exists(), list(target.iterdir())
    document = json.loads(stdout)
    assert document["status"] == STATUS[defaults.EXIT_TERMINATED] == "terminated"
    assert our_lines(stderr) == ["keras-bn export: error: terminated by SIGTERM"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_every_ending_signal_removes_the_staged_file(
    signum, model_file, tmp_path, monkeypatch, capsys
):
    def killed_while_saving(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"PK\x03\x04 half an archive")
        os.kill(os.getpid(), signum)
        time.sleep(60)  # the handler raises before this ends

    def unhandled(signum, frame):  # the test session's, so that it survives
        raise RuntimeError(f"keras-bn left {signal.Signals(signum).name} unhandled")

    monkeypatch.setattr(keras.Model, "save", killed_while_saving)
    previous = signal.signal(signum, unhandled)
    try:
        out = tmp_path / "folded.keras"
        code = cli.main(["fold", str(model_file), "-o", str(out), "-q"])
        assert signal.getsignal(signum) is unhandled  # restored after the command
    finally:
        signal.signal(signum, previous)
    assert code == 128 + signum
    assert code in STATUS
    assert os.listdir(tmp_path) == []
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"keras-bn fold: error: terminated by {signal.Signals(signum).name}"


# --- TensorFlow errors and bugs --------------------------------------------------


def test_channels_first_works_without_the_user_setting_onednn(
    channels_first_file, tmp_path
):
    """Issue 17, case 7: on a CPU without AVX-512, TF runs NCHW only with oneDNN."""
    out = tmp_path / "folded.keras"
    code = (
        "import os, sys\n"
        "from keras_bn.cli import main\n"
        f"status = main(['fold', {str(channels_first_file)!r}, '-o', {str(out)!r}, "
        "'-q'])\n"
        "print(status, os.environ.get('TF_ENABLE_ONEDNN_OPTS'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=script_environment(TF_ENABLE_ONEDNN_OPTS=None),
    )
    assert result.stdout.split()[-2:] == ["0", "1"], result.stderr
    assert out.is_file()


def test_a_tensorflow_error_is_one_line_with_a_documented_status(
    channels_first_file, tmp_path
):
    """The user's choice is kept; TensorFlow's refusal is one line with the cure."""
    result = run_script(
        "fold",
        channels_first_file,
        "-o",
        tmp_path / "folded.keras",
        "--json",
        "-q",
        TF_ENABLE_ONEDNN_OPTS="0",
    )
    assert result.returncode == defaults.EXIT_BAD_INPUT, result.stderr
    assert "Traceback" not in result.stderr
    document = json.loads(result.stdout)
    assert document["status"] == STATUS[defaults.EXIT_BAD_INPUT]
    (line,) = our_lines(result.stderr)
    assert "NHWC" in line and "TF_ENABLE_ONEDNN_OPTS" in line, line
    assert os.listdir(tmp_path) == []


def test_a_bug_has_its_own_documented_status_and_traceback(
    model_file, tmp_path, monkeypatch, capsys
):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(keras_bn.folding, "fold_batchnorm", broken)
    argv = ["fold", str(model_file), "-o", str(tmp_path / "f.keras"), "--json", "-q"]
    assert cli.main(argv) == defaults.EXIT_INTERNAL
    captured = capsys.readouterr()
    assert json.loads(captured.out)["status"] == STATUS[defaults.EXIT_INTERNAL]
    assert "Traceback" in captured.err and "RuntimeError: a bug" in captured.err
    assert os.listdir(tmp_path) == []


def test_a_signal_wrapped_by_a_library_is_still_the_signal():
    """onnxruntime's import turns the handler's exception into an ImportError."""
    from keras_bn.cli.errors import exit_code_for, message_for
    from keras_bn.cli.signals import Terminated

    try:
        try:
            raise Terminated(signal.SIGTERM)
        except Terminated as interrupt:
            raise ImportError("initialization failed") from interrupt
    except ImportError as wrapped:
        assert exit_code_for(wrapped) == defaults.EXIT_TERMINATED
        assert message_for(wrapped) == "terminated by SIGTERM"


def test_a_second_signal_cannot_cut_the_clean_up_short():
    from keras_bn.cli.signals import Terminated, signals_as_interrupts

    seen = []
    with pytest.raises(Terminated):
        with signals_as_interrupts():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(60)  # the handler raises before this ends
            finally:  # the clean-up, during which `docker stop` repeats itself
                seen.append(signal.getsignal(signal.SIGTERM))
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGHUP)
                seen.append("cleaned up")
    assert seen == [signal.SIG_IGN, "cleaned up"]
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN
