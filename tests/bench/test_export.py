"""`keras_bn.bench.export` (`keras-bn bench export`) runs end to end and its ratios hold."""

import json

import pytest

from keras_bn import cli
from keras_bn.bench import export as bench_export


def test_small_model_benchmark_prints_latency_and_size_ratios(capsys):
    code = cli.main(
        [
            "bench",
            "export",
            "--models",
            "small_cnn",
            "--size",
            "16",
            "--batches",
            "1",
            "2",
        ]
        + ["--repeats", "2", "--json"]
    )
    assert code == 0
    document = json.loads(capsys.readouterr().out)
    assert document["status"] == "ok" and document["benchmark"] == "export"
    latency = [r for r in document["rows"] if r["table"] == "latency"]
    size = [r for r in document["rows"] if r["table"] == "size"]
    assert {(r["runtime"], r["batch"]) for r in latency} == {
        (runtime, batch) for runtime in bench_export.RUNTIMES for batch in (1, 2)
    }
    for row in latency:
        assert row["folded/bn_free"] == pytest.approx(
            row["folded ms"] / row["bn_free ms"]
        )
    sizes = {r["format"]: r for r in size}
    assert set(sizes) == {"tflite", "onnx"}
    # A folded layer keeps one bias vector where the BN kept four statistics.
    assert all(r["folded KiB"] <= r["unfolded KiB"] for r in sizes.values())


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--repeats", "0"], "argument --repeats: must be at least 1"),
        (["--batches", "0"], ""),
    ],
)
def test_bad_arguments_exit_with_a_message(argv, match, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "export", *argv])
    assert exit_info.value.code == 2
    assert match in capsys.readouterr().err
