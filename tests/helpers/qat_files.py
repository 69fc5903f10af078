"""Export a quantization-aware model to int8 TFLite and QDQ ONNX, and judge both files.

The verdict is recomputed from each runtime's own outputs
(`load_runtime`), independently of the exporter's report, against the
model's inference-mode outputs (the simulation of its file).
"""

import onnx

from keras_bn.export import bn_ops_left, load_runtime, to_onnx, to_tflite
from keras_bn.export.quantized import float_ops
from keras_bn.quantization import quantize_model
from keras_bn.quantization.gate import MAX_STEPS, output_step, step_report
from tests.helpers.folding import set_statistics


def trained_qat(factory, weights, rng):
    """A QAT copy of `factory()` with set statistics, calibrated and fitted one
    epoch on seeded noise; and 32 inputs to compare on."""
    model = factory()
    set_statistics(model, rng)
    shape = model.input_shape[1:]
    x = rng.normal(size=(48, *shape)).astype("float32")
    qat = quantize_model(model, weights=weights, calibration_data=x)
    qat.compile("adam", "mse")
    y = rng.normal(size=(48, *model.output_shape[1:]))
    qat.fit(x, y, epochs=1, batch_size=16, verbose=0)
    return qat, rng.normal(size=(32, *shape)).astype("float32")


def judge_int8_files(qat, x, directory, formats=("tflite", "onnx")) -> dict:
    """Writes `qat`'s int8 files under `directory` and asserts each is its simulation.

    For each file: the export report's exact gate passed, the same gate
    recomputed from the runtime's outputs passes, no BN operator is left;
    the TFLite file is fully integer, the ONNX file is QDQ.

    Returns:
        `{format: StepReport}` of the recomputed gates.
    """
    reports = {}
    if "tflite" in formats:
        reports["tflite"] = to_tflite(
            qat, directory / "m.tflite", quantize="int8", inputs=x
        )
        assert float_ops((directory / "m.tflite").read_bytes()) == []
    if "onnx" in formats:
        reports["onnx"] = to_onnx(qat, directory / "m.onnx", inputs=x)
        assert reports["onnx"].op_histogram["QuantizeLinear"] >= 2
        assert float_weights(directory / "m.onnx") == []
    # The exporters synced each bias grid to its input's range: the
    # simulation is the model as exported.
    simulated = qat(x, training=False).numpy()
    step = output_step(qat)
    gates = {}
    for name, report in reports.items():
        assert bn_ops_left(report.op_histogram) == 0, report.op_histogram
        assert report.parity.steps["passed"], report.parity.steps["summary"]
        gate = step_report(simulated, load_runtime(report.path)(x), step)
        assert gate.passed and gate.max_steps <= MAX_STEPS, (name, gate.describe())
        gates[name] = gate
    return gates


def float_weights(path) -> list[str]:
    """The ONNX convolutions and matrix products whose weight is not int8 behind a DequantizeLinear."""
    graph = onnx.load(str(path)).graph
    producers = {out: node for node in graph.node for out in node.output}
    found = []
    for node in graph.node:
        if node.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm"):
            producer = producers.get(node.input[1])
            if producer is None or producer.op_type != "DequantizeLinear":
                found.append(node.name)
    return found
