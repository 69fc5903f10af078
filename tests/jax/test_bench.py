"""`keras-bn bench layer|train --backend jax` run on JAX and report their ratios."""

from __future__ import annotations

import json

import pytest

from tests.helpers.cli import run_script


@pytest.mark.parametrize(
    "argv, ratio",
    [
        (
            ["layer", "--shapes", "16,4", "8,3,2,2:1", "--repeats", "1"],
            "keras_bn / flax",
        ),
        (["train", "--batch", "4", "--repeats", "1"], "BN cost / keras BN cost"),
    ],
)
def test_benchmark_runs_on_jax(argv, ratio):
    result = run_script("bench", *argv, "--backend", "jax", "--json", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(result.stdout)
    assert document["status"] == "ok"
    assert all(ratio in row for row in document["rows"])
    assert "tensorflow" not in result.stderr.lower()
