"""`keras-bn --help` and usage errors answer without importing TensorFlow, and
`import keras_bn` stays light while every public name and model loading work.

Each check runs in a fresh interpreter, where `sys.modules` tells what the
code imported.
"""

import json
import subprocess
import sys

import keras
import pytest

from keras_bn import demo
from keras_bn.cli.commands import COMMANDS
from keras_bn.defaults import BENCHMARKS
from keras_bn.stand_in_statistics import set_stand_in_statistics

HEAVY = ("tensorflow", "keras", "numpy", "tqdm")


def fresh_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )


COMMANDS_HELP = [[name, "--help"] for name in COMMANDS]
BENCH_HELP = [["bench", name, "--help"] for name in BENCHMARKS]
# Issue 17, case 14: every numeric flag is checked by argparse, before
# TensorFlow loads; the benchmarks' flags too (they imported TensorFlow first).
USAGE_ERRORS = [
    [],
    ["frobnicate"],
    ["fold", "m.keras", "--rtol", "lots"],
    ["fold", "m.keras", "--atol", "-1"],
    ["demo", "--epochs", "0"],
    ["demo", "--epochs", "-2"],
    ["recalibrate", "m.keras", "--data", "x.npy", "--batch-size", "0"],
    ["export", "m.keras", "--opset", "99"],
    ["check", "m.keras", "m.onnx", "--tolerance", "-1"],
    ["qat", "m.keras", "--data", "d.npz", "--learning-rate", "0"],
    ["qat", "m.keras", "--data", "d.npz", "--weights", "per_row"],
    ["bench", "qat", "--learning-rate", "-1"],
    ["bench", "qat", "--epsilon", "-1e-3"],
    ["bench", "frobnicate"],
    *(["bench", name, "--repeats", "0"] for name in BENCHMARKS),
]


@pytest.mark.parametrize(
    "argv, code",
    [(["--help"], 0), (["--version"], 0)]
    + [(argv, 0) for argv in COMMANDS_HELP + BENCH_HELP]
    + [(argv, 2) for argv in USAGE_ERRORS],
    ids=lambda value: " ".join(value) if isinstance(value, list) else str(value),
)
def test_help_and_usage_errors_import_no_tensorflow(argv, code):
    result = fresh_python(
        "import json, sys\n"
        "from keras_bn.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(json.dumps({'code': code, 'heavy': heavy}), file=sys.stderr)\n"
    )
    answer = json.loads(result.stderr.strip().splitlines()[-1])
    assert answer == {"code": code, "heavy": []}


def test_import_keras_bn_is_light_and_every_name_resolves():
    result = fresh_python(
        "import sys, keras_bn\n"
        "assert 'tensorflow' not in sys.modules, 'import keras_bn loaded TF'\n"
        "from keras_bn import fold_batchnorm, BatchNormalization\n"
        "names = [n for n in keras_bn.__all__ if getattr(keras_bn, n) is None]\n"
        "assert not names, names\n"
        "assert BatchNormalization.__module__ == 'keras_bn.layers'\n"
        "assert fold_batchnorm is keras_bn.folding.fold_batchnorm\n"
        "print('ok')\n"
    )
    assert result.stdout.strip() == "ok", result.stderr


@pytest.mark.parametrize("keras_first", [False, True])
def test_keras_loads_our_layer_after_import_keras_bn(keras_first, tmp_path):
    keras.utils.set_random_seed(4)
    model = demo.build_model((8, 8, 1), 10)
    set_stand_in_statistics(model, seed=4)
    path = tmp_path / "model.keras"
    model.save(path)
    imports = "import keras, keras_bn" if keras_first else "import keras_bn, keras"
    result = fresh_python(
        f"{imports}\n"
        f"m = keras.saving.load_model({str(path)!r})\n"
        "print(sum(isinstance(l, keras_bn.BatchNormalization) for l in m.layers))\n"
    )
    assert result.stdout.strip() == "3", result.stderr
