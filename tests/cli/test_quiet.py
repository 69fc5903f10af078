"""A command-line run prints no TensorFlow, absl or converter log line.

Through the installed script with `TF_CPP_MIN_LOG_LEVEL` unset (as a user runs
it): with `-q`, stderr is empty — no `I0000`/`E0000 … cuInit` line, no absl
"All log messages before absl::InitializeLog()" warning, no MLIR converter
diagnostics, no LiteRT "Created TensorFlow Lite XNNPACK delegate" line;
without `-q` it holds the progress bar only.
"""

import re

import pytest

from tests.helpers.cli import (
    run_script,
    stand_in_model_file,
    stderr_lines_besides_progress,
)

# What TensorFlow's and absl's C++ logging, and LiteRT's, look like.
LOG_LINE = re.compile(r"^[IWEF]\d{4} |absl::|cuInit|XNNPACK|^INFO: |^WARNING: ", re.M)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return stand_in_model_file(tmp_path_factory.mktemp("model"), seed=6)


def test_fold_with_progress_prints_only_the_progress_bar(model_file, tmp_path):
    result = run_script("fold", model_file, "-o", tmp_path / "folded.keras")
    assert result.returncode == 0, result.stderr
    assert stderr_lines_besides_progress(result.stderr, "fold") == []
    assert not LOG_LINE.search(result.stderr)


def test_a_tflite_export_is_silent_with_q(model_file, tmp_path):
    result = run_script(
        "export", model_file, "--format", "tflite", "-o", tmp_path, "-q"
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert (tmp_path / "model.tflite").is_file()


def test_log_line_pattern_recognises_tensorflow_logs():
    """The pattern above matches the lines issue 12 quoted, so the tests can fail."""
    for line in [
        "E0000 00:00:1795629377.034469 6350 cuda_platform.cc:52] failed call to "
        "cuInit: INTERNAL: CUDA error",
        "WARNING: All log messages before absl::InitializeLog() is called are "
        "written to STDERR",
        "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    ]:
        assert LOG_LINE.search(line)
