"""The layer and training benchmarks run, and report the ratios the issue names."""

import argparse
import json

import pytest

from keras_bn import cli
from keras_bn.bench import layer, train
from keras_bn.bench.arguments import ADD_ARGUMENTS, LAYER_DEFAULT_DTYPES

BENCHES = {
    "layer": (layer, ["--shapes", "8,4", "6,3,2,2:1", "--repeats", "1"]),
    "train": (train, ["--batch", "4", "--repeats", "1", "--modes", "graph"]),
}


@pytest.mark.parametrize("name", BENCHES)
def test_bench_rows_have_every_column_and_finite_ratios(name):
    module, argv = BENCHES[name]
    parser = argparse.ArgumentParser()
    ADD_ARGUMENTS[name](parser)
    rows = module.run(parser.parse_args(argv))
    assert rows
    for row in rows:
        assert list(row) == module.COLUMNS
    ratios = [c for c in module.COLUMNS if "/" in c]
    values = [row[c] for row in rows for c in ratios if row[c] is not None]
    assert values and all(v == v and abs(v) < float("inf") for v in values)
    if module is layer:  # every dtype × mode, for each shape
        assert {(r["dtype"], r["mode"]) for r in rows} == {
            (d, m) for d in LAYER_DEFAULT_DTYPES for m in layer.MODES
        }


@pytest.mark.parametrize("name", BENCHES)
def test_bench_runs_as_a_keras_bn_subcommand_with_one_json_document(name, capsys):
    module, argv = BENCHES[name]
    assert cli.main(["bench", name, *argv, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["status"] == "ok" and document["benchmark"] == name
    assert document["rows"] and list(document["rows"][0]) == module.COLUMNS
