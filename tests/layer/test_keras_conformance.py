"""Keras' own test file for BatchNormalization passes against keras_bn's layer.

The file (`keras/src/layers/normalization/batch_normalization_test.py`) ships
in Keras' source distribution on PyPI, so it is fetched for the installed
Keras version (cached inside the virtual environment) rather than copied into
this repository. It runs unchanged in a subprocess whose conftest replaces
`keras.src.layers.BatchNormalization` with `keras_bn.BatchNormalization`, once
per backend keras_bn supports (each in its own process: Keras picks its
backend when it is imported).
Without network access on first use the download fails and so does the test:
it never skips.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import keras
import pytest

TEST_FILE = "keras/src/layers/normalization/batch_normalization_test.py"
# Keras 3.15.1's file: 33 tests, all of which its own layer passes.
EXPECTED_PASSED = 33

CONFTEST = """
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras.src.layers
import pytest

import keras_bn

keras.src.layers.BatchNormalization = keras_bn.BatchNormalization


def pytest_configure(config):
    config.addinivalue_line("markers", "requires_trainable_backend: Keras' marker")


@pytest.fixture(autouse=True)
def _substituted():
    assert keras.src.layers.BatchNormalization is keras_bn.BatchNormalization
"""


def keras_test_file(cache: Path) -> Path:
    """Keras' test file from the installed version's sdist, downloaded once."""
    version = keras.__version__
    target = cache / version / Path(TEST_FILE).name
    if target.exists():
        return target
    download = cache / version / "sdist"
    download.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", f"keras=={version}"]
        + ["--no-deps", "--no-binary", ":all:", "--quiet", "-d", str(download)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode:
        pytest.fail(f"could not download Keras {version}'s sdist: {result.stderr}")
    (archive,) = download.glob("keras-*.tar.gz")
    with tarfile.open(archive) as tar:
        member = tar.extractfile(f"keras-{version}/{TEST_FILE}")
        staged = target.with_suffix(".part")
        staged.write_bytes(member.read())
    staged.replace(target)
    return target


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_keras_own_batch_normalization_tests_pass(tmp_path, backend):
    source = keras_test_file(Path(sys.prefix) / "keras-sdist-cache")
    (tmp_path / "batch_normalization_test.py").write_bytes(source.read_bytes())
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        + ["-c", str(tmp_path / "pytest.ini"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "KERAS_BACKEND": backend},
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout else ""
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (\w+)", summary)}
    assert counts.get("passed") == EXPECTED_PASSED, result.stdout[-3000:]
    assert result.returncode == 0, result.stdout[-3000:]
