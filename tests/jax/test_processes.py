"""What a process on JAX sees: no TensorFlow, clear errors, export through the command line.

Each backend check runs in its own subprocess where the backend matters at
import (Keras picks it then); the export runs `keras-bn` as a user does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_bn
from keras_bn.stand_in_statistics import set_stand_in_statistics
from tests.helpers.cli import run_script

TRAIN_ON_JAX = """
import sys

import keras
import numpy as np

import keras_bn

model = keras.Sequential([
    keras.Input((6, 6, 2)),
    keras.layers.Conv2D(4, 3, use_bias=False),
    keras_bn.BatchNormalization(virtual_batch_size=4),
    keras.layers.ReLU(),
    keras.layers.Flatten(),
    keras.layers.Dense(1),
])
model.compile("sgd", "mse")
rng = np.random.default_rng(0)
model.fit(rng.normal(size=(16, 6, 6, 2)), rng.normal(size=(16, 1)), epochs=1, verbose=0)
assert keras.backend.backend() == "jax"
print("tensorflow" in sys.modules)
"""


def _python(code: str, backend: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_BACKEND": backend}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_importing_building_and_training_on_jax_never_imports_tensorflow():
    # Only up to `fit`: Keras 3.15's own `serialize_keras_object` (any
    # `get_config`, so cloning and saving) imports TensorFlow when installed.
    result = _python(TRAIN_ON_JAX, "jax")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_unsupported_backend_is_a_clear_error_at_construction():
    code = """
    import keras_bn
    try:
        keras_bn.BatchNormalization()
    except ValueError as e:
        print(e)
    """
    result = _python(code, "numpy")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'numpy'" in result.stdout and "KERAS_BACKEND=jax" in result.stdout


def test_export_package_on_jax_names_the_command():
    assert keras.backend.backend() == "jax"
    with pytest.raises(ImportError, match="keras-bn export"):
        import keras_bn.export  # noqa: F401


def test_model_trained_on_jax_exports_with_the_command_line(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(4, 3, use_bias=False),
            keras_bn.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    set_stand_in_statistics(model, seed=0)
    rng = np.random.default_rng(0)
    model.compile("sgd", "mse")
    model.fit(rng.normal(size=(16, 6, 6, 2)), rng.normal(size=(16, 3)), verbose=0)
    path = tmp_path / "trained_on_jax.keras"
    model.save(path)
    # The user's KERAS_BACKEND stays jax; the command line switches to TF.
    assert os.environ.get("KERAS_BACKEND") == "jax"
    result = run_script("export", path, "--format", "all", "-o", tmp_path, "--json")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["status"] == "ok"
    assert sorted(e["format"] for e in report["exports"]) == ["onnx", "tflite"]
    assert all(e["parity"]["passed"] for e in report["exports"]), report
