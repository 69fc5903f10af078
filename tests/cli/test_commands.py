"""`keras-bn`, called as a user calls it: the installed console script, in a subprocess.

The demo runs once (one epoch) and its files feed the fold, export and check
tests. Every bad input must end in one line on stderr starting with
`keras-bn <command>: error:`, no traceback, and the documented exit status.
Help texts, usage errors and the `.npz` path of the demo run in-process through
`keras_bn.cli.main`, which is what the script calls.
"""

import json
import re
import subprocess
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_bn
from keras_bn import cli, defaults, demo
from keras_bn.cli.commands import COMMANDS
from keras_bn.data import load_dataset
from keras_bn.export import bn_layers_left
from tests.helpers.cli import run_script as keras_bn_cli
from tests.helpers.cli import stderr_lines_besides_progress
from tests.tolerances import DEMO_MIN_ACCURACY_ONE_EPOCH, EXPORT_FLOAT32_RTOL

DEMO_FORMATS = [
    "Keras",
    "Keras folded",
    "TFLite float32",
    "TFLite int8",
    "TFLite int8 QAT",
    "ONNX float32",
]


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """Our own stderr lines (TensorFlow logs its start-up there too)."""
    return [line for line in result.stderr.splitlines() if line.startswith("keras-bn")]


def assert_one_line_error(result, command: str, code: int, *fragments: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"keras-bn {command}: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_out")
    result = keras_bn_cli("demo", "--epochs", "1", "--out", out)
    return out, result


@pytest.fixture(scope="module")
def other_model(tmp_path_factory) -> Path:
    """The demo's architecture with other weights: a file it must not match."""
    keras.utils.set_random_seed(7)
    path = tmp_path_factory.mktemp("other") / "other.keras"
    demo.build_model((8, 8, 1), 10).save(path)
    return path


def test_version():
    result = keras_bn_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"keras-bn {keras_bn.__version__} ")


def test_demo_writes_every_file_and_prints_the_table(demo_run):
    out, result = demo_run
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    for name in [
        "digits_cnn.keras",
        "digits_cnn_folded.keras",
        "digits_cnn.tflite",
        "digits_cnn_int8.tflite",
        "digits_cnn_qat.tflite",
        "digits_cnn.onnx",
    ]:
        assert (out / name).stat().st_size > 0, name
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("format "))
    for column in ["size", "accuracy", "max error vs Keras", "BN ops left", "latency"]:
        assert column in lines[header]
    rows = lines[header + 2 : header + 2 + len(DEMO_FORMATS)]
    accuracies = {}
    for label, row in zip(DEMO_FORMATS, rows, strict=True):
        assert row.startswith(label + " "), row
        accuracies[label] = float(re.search(r"(\d+\.\d+)%", row).group(1)) / 100
        bn_ops_left = int(row.split()[-3])
        assert bn_ops_left == (3 if label == "Keras" else 0), row
    assert min(accuracies.values()) >= DEMO_MIN_ACCURACY_ONE_EPOCH, accuracies
    # float32 artefacts make the same predictions up to ties within rounding.
    for label in ["Keras folded", "TFLite float32", "ONNX float32"]:
        assert accuracies[label] == pytest.approx(accuracies["Keras"], abs=0.01)
    assert "3 of 3 Batch Normalization calls folded" in result.stdout
    population = next(
        line for line in lines if line.startswith("held-out accuracy with the moving")
    )
    moving, recalibrated = (
        float(v) / 100 for v in re.findall(r"(\d+\.\d+)%", population)
    )
    assert moving == pytest.approx(accuracies["Keras"], abs=1e-4)
    assert 0 < recalibrated <= 1
    # The progress bar only: no TensorFlow / absl / converter log line.
    assert stderr_lines_besides_progress(result.stderr, "demo", "train") == []


def test_fold_writes_a_bn_free_model(demo_run, tmp_path):
    out, _ = demo_run
    target = tmp_path / "folded.keras"
    result = keras_bn_cli("fold", out / "digits_cnn.keras", "-o", target, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["fold_report"]["folded"] == report["fold_report"]["total"] == 3
    folded = keras.saving.load_model(target)
    assert bn_layers_left(folded) == 0


def test_export_all_formats(demo_run, tmp_path):
    out, _ = demo_run
    result = keras_bn_cli(
        "export", out / "digits_cnn.keras", "--format", "all", "-o", tmp_path, "-q"
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "digits_cnn.tflite").is_file()
    assert (tmp_path / "digits_cnn.onnx").is_file()
    assert result.stdout.count("parity vs Keras") == 2
    assert "BatchNormalization" not in result.stdout


def test_check_passes_on_the_demo_export(demo_run):
    out, _ = demo_run
    result = keras_bn_cli(
        "check", out / "digits_cnn.keras", out / "digits_cnn.onnx", "--json", "-q"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] is True
    assert report["parity"]["max_rel_error"] <= EXPORT_FLOAT32_RTOL
    assert report["parity"]["rule"] == "error_model"
    table = keras_bn_cli(
        "check", out / "digits_cnn.keras", out / "digits_cnn.onnx", "-q"
    )
    assert table.returncode == 0, table.stderr
    assert "judged by: max rel error within keras_bn.export.parity_bounds' bound" in (
        table.stdout
    )


def test_bench_forwards_its_arguments():
    result = keras_bn_cli(
        "bench",
        "layer",
        "--shapes",
        "8,4",
        "--repeats",
        "1",
        "--modes",
        "eager",
        "--dtypes",
        "float32",
    )
    assert result.returncode == 0, result.stderr
    assert "8x4" in result.stdout and "keras_bn / keras" in result.stdout
    assert "graph" not in result.stdout.split("keras_bn / fused graph")[1]


# --- bad input -----------------------------------------------------------------


def test_missing_model_file(tmp_path):
    result = keras_bn_cli("fold", tmp_path / "absent.keras")
    assert_one_line_error(result, "fold", defaults.EXIT_BAD_INPUT, "does not exist")


def test_not_a_keras_model(tmp_path):
    fake = tmp_path / "notes.keras"
    fake.write_text("not a model")
    result = keras_bn_cli("export", fake)
    assert_one_line_error(
        result, "export", defaults.EXIT_BAD_INPUT, "is not a Keras model"
    )


def test_unfoldable_model(tmp_path):
    path = tmp_path / "unbuilt.keras"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "saving a model not built"
        keras.Sequential([keras.layers.Dense(4), keras_bn.BatchNormalization()]).save(
            path
        )
    result = keras_bn_cli("fold", path, "-o", tmp_path / "folded.keras")
    assert_one_line_error(result, "fold", defaults.EXIT_BAD_INPUT, "never been built")
    assert not (tmp_path / "folded.keras").exists()


def test_parity_failure(demo_run, other_model):
    out, _ = demo_run
    result = keras_bn_cli("check", other_model, out / "digits_cnn.onnx", "-q")
    assert_one_line_error(result, "check", defaults.EXIT_PARITY, "parity failure")
    assert "FAIL" in result.stdout


def test_parity_failure_with_json_is_one_document(demo_run, other_model, capsys):
    """Issue 12: the report, then `{"error": ...}`, made `json.loads` fail."""
    out, _ = demo_run
    argv = ["check", str(other_model), str(out / "digits_cnn.onnx"), "--json", "-q"]
    assert cli.main(argv) == defaults.EXIT_PARITY
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "parity_failure" and report["passed"] is False
    assert report["parity"]["max_rel_error"] > report["parity"]["tolerance"]


# --- in-process: help, usage, data ---------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"keras-bn {command}" in capsys.readouterr().out.split("examples:")[1]


def test_top_level_help_lists_each_command_and_each_exit_status(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    examples, statuses = capsys.readouterr().out.split("exit status:")
    for command in COMMANDS:
        assert f"  keras-bn {command} " in examples, command
    lines = {int(line.split()[0]): line for line in statuses.splitlines()[1:-1]}
    assert set(lines) == {code for code, _, _ in defaults.EXIT_STATUSES}
    for line in lines.values():  # the short meaning is whole, not cut mid-way
        assert line.count("(") == line.count(")"), line


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["demo", "--epochs", "many"],
        ["demo", "--epochs", "0"],
        ["export", "m.keras", "--format", "pb"],
        ["export", "m.keras", "--opset", "12"],
        ["export", "m.keras", "--opset", "19"],
        ["recalibrate", "m.keras", "--data", "x.npy", "--batch-size", "0"],
    ],
)
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == defaults.EXIT_USAGE
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "arrays, fragment",
    [
        ({"x_train": np.zeros((4, 8, 8))}, "Missing: ['y_train', 'x_test', 'y_test']"),
        (
            {
                "x_train": np.zeros((4, 8, 8)),
                "y_train": np.zeros(4, np.float32),
                "x_test": np.zeros((2, 8, 8)),
                "y_test": np.zeros(2, np.int64),
            },
            "`y_train` must be non-negative integer class labels",
        ),
    ],
)
def test_demo_rejects_bad_data(arrays, fragment, tmp_path, capsys):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    assert cli.main(["demo", "--data", str(path), "--out", str(tmp_path), "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("keras-bn demo: error: ")
    assert fragment in err[0]


def test_export_int8_needs_calibration_data(demo_run, capsys):
    out, _ = demo_run
    model = str(out / "digits_cnn.keras")
    assert cli.main(["export", model, "--quantize", "int8", "-q"]) == 1
    assert "--quantize int8 needs --data" in capsys.readouterr().err


def test_demo_on_a_users_npz(tmp_path, capsys):
    data = load_dataset()
    path = tmp_path / "letters.npz"
    np.savez(
        path,
        x_train=data.x_train[:400, ..., 0],
        y_train=data.y_train[:400],
        x_test=data.x_test[:100, ..., 0],
        y_test=data.y_test[:100],
    )
    code = cli.main(
        [
            "demo",
            "--data",
            str(path),
            "--epochs",
            "1",
            "--out",
            str(tmp_path),
            "--json",
            "-q",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dataset"] == {
        "name": str(path),
        "train": 400,
        "test": 100,
        "input_shape": [8, 8, 1],
        "classes": 10,
    }
    assert [row["format"] for row in report["rows"]] == DEMO_FORMATS
    population = report["population"]
    assert population["images"] == 400
    assert population["moving_average_accuracy"] == report["rows"][0]["accuracy"]
    assert 0 < population["population_accuracy"] <= 1
    assert (tmp_path / "letters_cnn_int8.tflite").is_file()


def test_json_mode_reports_errors_on_stdout(tmp_path, capsys):
    code = cli.main(["check", str(tmp_path / "absent.keras"), "x.onnx", "--json"])
    assert code == defaults.EXIT_BAD_INPUT
    report = json.loads(capsys.readouterr().out)
    assert report["exit_code"] == defaults.EXIT_BAD_INPUT
    assert "does not exist" in report["error"]


@pytest.fixture
def int8_export(demo_run, tmp_path):
    """The demo model, the digits as a user's `.npz` (x_train calibrates, x_test
    judges), and `keras-bn export`'s int8 TFLite arguments for them."""
    out, _ = demo_run
    data = keras_bn.data.digits()
    npz = tmp_path / "digits.npz"
    np.savez(npz, x_train=data.x_train, x_test=data.x_test)
    args = ["--format", "tflite", "--quantize", "int8", "--data", str(npz)]
    return str(out / "digits_cnn.keras"), npz, args


def test_int8_export_then_check_on_the_same_npz_agree(int8_export, tmp_path, capsys):
    # Issue 12, case 6: export judged int8 on x_train, check on x_test, and the
    # same file got two verdicts. Both now judge the samples calibration did
    # not see, so they measure the same error and agree.
    model, npz, export_args = int8_export
    assert cli.main(["export", model, *export_args, "-o", str(tmp_path), "--json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    check_args = ["--quantize", "int8", "--data", str(npz), "--json"]
    file = str(tmp_path / "digits_cnn_int8.tflite")
    assert cli.main(["check", model, file, *check_args]) == 0
    checked = json.loads(capsys.readouterr().out)
    export_parity = exported["exports"][0]["parity"]
    assert exported["status"] == checked["status"] == "ok"
    assert export_parity["input_shape"] == checked["parity"]["input_shape"]
    assert export_parity["input_shape"][0] == len(np.load(npz)["x_test"])
    assert export_parity["max_rel_error"] == checked["parity"]["max_rel_error"]
    assert export_parity["passed"] and checked["passed"]
    # Export judged its own file exactly against the post-training simulation;
    # check, with only the file, by the error model's float bound.
    assert export_parity["rule"] == "exact_gate"
    assert export_parity["simulation"] == "post-training simulation"
    assert checked["parity"]["rule"] == "error_model"


def test_int8_export_tolerance_bounds_the_float_error(int8_export, tmp_path, capsys):
    # `--tolerance` bounds a post-training int8 file's error against the
    # float model, on top of the exact gate: below the measured error the
    # export is refused with both verdicts, and nothing is written.
    model, _, args = int8_export
    written = tmp_path / "out"
    code = cli.main(
        ["export", model, *args, "--tolerance", "1e-6", "-o", str(written), "--json"]
    )
    assert code == defaults.EXIT_PARITY
    report = json.loads(capsys.readouterr().out)
    assert "passed the exact gate" in report["error"]
    assert "exceeds the given tolerance 1.000e-06" in report["error"]
    assert not written.exists()
