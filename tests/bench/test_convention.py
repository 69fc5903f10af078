"""Benchmarks follow one convention and run as `keras-bn bench NAME`."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from keras_bn import cli, defaults
from keras_bn.bench.arguments import ADD_ARGUMENTS
from keras_bn.defaults import BENCHMARKS

CONVERTED = ("fold", "export", "sync")


@pytest.mark.parametrize("name", BENCHMARKS)
def test_module_has_run_and_columns(name):
    module = importlib.import_module(f"keras_bn.bench.{name}")
    assert module.COLUMNS and all(isinstance(c, str) for c in module.COLUMNS)
    assert callable(module.run)


def test_every_benchmark_has_a_description_and_tensorflow_free_flags():
    assert set(ADD_ARGUMENTS) == set(BENCHMARKS)
    for name, description in BENCHMARKS.items():
        assert description and "\n" not in description, name


@pytest.mark.parametrize("name", CONVERTED)
def test_help_shows_the_common_flags_under_the_subcommand(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: keras-bn bench {name}")
    assert "--json" in out and "--repeats" in out


@pytest.mark.parametrize("name", CONVERTED)
def test_a_bad_value_is_a_usage_error(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", name, "--repeats", "0"])
    assert exit_info.value.code == defaults.EXIT_USAGE
    assert "must be at least 1" in capsys.readouterr().err


def test_sync_runs_in_a_fresh_process_and_prints_one_json_document():
    script = Path(sys.executable).parent / "keras-bn"
    result = subprocess.run(
        [str(script), "bench", "sync", "--shapes", "4,3", "--repeats", "1", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["status"] == "ok" and document["benchmark"] == "sync"
    rows = {row["implementation"]: row for row in document["rows"]}
    assert set(rows) == {"keras_bn", "keras"}
    assert rows["keras"]["vs keras"] == 1.0
    assert rows["keras_bn"]["vs keras"] == pytest.approx(
        rows["keras_bn"]["ms"] / rows["keras"]["ms"]
    )
