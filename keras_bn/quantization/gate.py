"""The exact gate of an int8 file: its outputs in quantization steps of its own simulation.

A model from `quantize_model`, in inference mode, computes what its int8
file computes, in float: the same rounded weights, the same int32 bias grid
(`s_in·s_w`), the same activation grids. The file's integer kernels differ
from that float simulation only in how they round the rescaled accumulator
(a 31-bit fixed-point multiplier) and ties; either can move a value that
lies within a hair of a rounding boundary to the next level. The rule:

    every output within `MAX_STEPS = 1` step of the file's output scale.

Measured (docs/quantization.md): on the MobileNetV2-style digits network,
PTQ and QAT, per channel and per tensor, TFLite and ONNX files, 99.8 to
100% of the logits exactly on the simulation's level and the rest one step
off; on the demo CNN with its softmax head, 100% exact. Without the bias
grid in the simulation, per-tensor depthwise kernels were off by up to four
steps: the gate is what found it. A file that rounds with a wrong scale,
drops a rounding or clips at another range is off by many steps.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from keras_bn.folding.graph import GraphView
from keras_bn.keras_adapter import functional_graph
from keras_bn.quantization.activation_quantizer import ActivationQuantizer
from keras_bn.quantization.model import producing_quantizer
from keras_bn.quantization.quantizers import activation_scale

__all__ = [
    "MAX_STEPS",
    "StepReport",
    "output_quantizer",
    "output_step",
    "step_report",
]

#: The most quantization steps an output of the int8 file may differ from
#: its simulation.
MAX_STEPS = 1


def output_step(model: keras.Model) -> float:
    """The quantization step of `model`'s output: the scale of its int8 file's output.

    Raises:
        ValueError: as `output_quantizer`.
    """
    quantizer = output_quantizer(model)
    return activation_scale(quantizer.range_min.numpy(), quantizer.range_max.numpy())


def output_quantizer(model: keras.Model) -> ActivationQuantizer:
    """The quantizer that rounds `model`'s output.

    Follows the output back through layers that only move values (a
    reshape, max pooling) to the quantizer that rounds it.

    Raises:
        ValueError: the output is not rounded by any quantizer (a model that
            does not come from `quantize_model`, or one with several outputs).
    """
    graph = functional_graph(model)
    if graph is None or len(graph.outputs) != 1:
        raise ValueError(
            "The exact int8 gate needs a model from `quantize_model` with one "
            f"output. Received: model '{model.name}'"
        )
    quantizer = producing_quantizer(GraphView(graph), graph.outputs[0])
    if quantizer is not None:
        return quantizer
    raise ValueError(
        f"Model '{model.name}': its output is not rounded onto an int8 grid "
        "(no ActivationQuantizer or QuantizedBlock output quantizer produces "
        "it), so there is no output step to judge by."
    )


@dataclasses.dataclass
class StepReport:
    """How far an int8 file's outputs are from its simulation, in output steps.

    Attributes:
        step: the output's quantization step.
        histogram: `{steps: count}` over every output element.
        max_steps: the largest difference, in steps.
        samples: the number of inputs compared.
        allowed: the most steps the gate allows (`MAX_STEPS`).
    """

    step: float
    histogram: dict[int, int]
    max_steps: int
    samples: int
    allowed: int = MAX_STEPS

    @property
    def passed(self) -> bool:
        return self.max_steps <= self.allowed

    def to_dict(self) -> dict:
        return {
            "rule": f"every output within {self.allowed} quantization step",
            "step": self.step,
            "histogram": {str(k): v for k, v in sorted(self.histogram.items())},
            "max_steps": self.max_steps,
            "samples": self.samples,
            "passed": self.passed,
            "summary": self.describe(),
        }

    def describe(self) -> str:
        """One line: `"passed: 0 steps 97.1%, 1 step 2.9% (640 outputs)"`."""
        total = sum(self.histogram.values())
        parts = ", ".join(
            f"{k} step{'s' * (k != 1)} {100 * v / total:.1f}%"
            for k, v in sorted(self.histogram.items())
        )
        verdict = "passed" if self.passed else "FAILED"
        return f"{verdict}: {parts} of the output step from the simulation ({total} outputs)"


def step_report(
    simulated: np.ndarray, outputs: np.ndarray, step: float, allowed: int = MAX_STEPS
) -> StepReport:
    """Compares a file's outputs with its simulation's, in steps of `step`.

    Args:
        simulated: the quantized model's outputs in inference mode.
        outputs: the file's dequantized outputs on the same inputs.
        step: the output step (`output_step(model)`).
        allowed: the most steps allowed.

    Returns:
        A `StepReport`.

    Raises:
        ValueError: the shapes differ or the step is not positive.
    """
    simulated = np.asarray(simulated, np.float64)
    outputs = np.asarray(outputs, np.float64)
    if simulated.shape != outputs.shape:
        raise ValueError(
            "The file's outputs and the simulation's must have the same shape. "
            f"Received: {outputs.shape} and {simulated.shape}"
        )
    if not step > 0:
        raise ValueError(f"`step` must be positive. Received: step={step}")
    # Both sides lie on the same grid up to float32 rounding of the levels.
    steps = np.rint(np.abs(outputs - simulated) / step).astype(np.int64)
    if not np.all(np.isfinite(outputs)):
        steps = np.where(np.isfinite(outputs), steps, np.iinfo(np.int64).max)
    values, counts = np.unique(steps, return_counts=True)
    return StepReport(
        step=float(step),
        histogram={int(v): int(c) for v, c in zip(values, counts, strict=True)},
        max_steps=int(values.max()) if values.size else 0,
        samples=int(simulated.shape[0]) if simulated.ndim else 1,
        allowed=allowed,
    )
