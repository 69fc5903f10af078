"""The exact gate of an int8 file: its outputs in quantization steps of its own simulation.

A model from `quantize_model`, in inference mode, computes what its int8
file computes, in float: the same rounded weights, the same int32 bias grid
(`s_in·s_w`), the same activation grids. The file's integer kernels differ
from that float simulation only in how they round the rescaled accumulator
(a 31-bit fixed-point multiplier) and ties; either can move a value that
lies within a hair of a rounding boundary to the next level. The rule:

    every output within `MAX_STEPS = 1` step of the file's output scale.

One exception, derived: an output that a softmax, logistic or tanh computes
from a rounded input (a classifier's probabilities) moves with each input
level by up to the op's slope times the input step, more than one output
step when the input grid is coarse. There the gate allows `MAX_STEPS` plus
`ceil(slope · s_in / s_out)` (`allowed_steps`; slopes in `FIXED_OUTPUT_SLOPES`).
Measured: a post-training digits CNN's softmax off by 2 steps where its
logits were off by one (docs/quantization.md).

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
import math

import keras
import numpy as np

from keras_bn.folding.graph import GraphView
from keras_bn.keras_adapter import functional_graph
from keras_bn.quantization.activation_quantizer import ActivationQuantizer
from keras_bn.quantization.graph import activation_name
from keras_bn.quantization.model import producing_quantizer
from keras_bn.quantization.quantizers import activation_scale

__all__ = [
    "FIXED_OUTPUT_SLOPES",
    "MAX_STEPS",
    "allowed_steps",
    "StepReport",
    "output_quantizer",
    "output_step",
    "step_report",
]

#: The most quantization steps an output of the int8 file may differ from
#: its simulation.
MAX_STEPS = 1
#: The most an output of these ops moves per unit of its input, every input
#: element off by up to one unit (max-norm): softmax
#: `sum_j |dp_i/dz_j| = 2 p_i (1 - p_i) <= 1/2`; logistic `p (1 - p) <= 1/4`;
#: tanh `1 - tanh^2 <= 1`.
FIXED_OUTPUT_SLOPES = {"softmax": 0.5, "sigmoid": 0.25, "tanh": 1.0}


def allowed_steps(model: keras.Model) -> int:
    """The most steps `model`'s int8 file may be off: `MAX_STEPS`, or more after a softmax.

    For an output a softmax, logistic or tanh computes from a rounded input,
    one level of that input moves the output by up to `slope · s_in`; the
    gate allows `MAX_STEPS + ceil(slope · s_in / s_out)` there.

    Raises:
        ValueError: as `output_quantizer`.
    """
    step = output_step(model)
    graph = functional_graph(model)
    view = GraphView(graph)
    call = view.producer(graph.outputs[0])
    if call is None or not isinstance(call.layer, ActivationQuantizer):
        return MAX_STEPS
    activation = view.producer(call.input_tensors[0])
    if activation is None or len(activation.input_tensors) != 1:
        return MAX_STEPS
    slope = FIXED_OUTPUT_SLOPES.get(activation_name(activation.layer))
    quantizer = producing_quantizer(view, activation.input_tensors[0])
    if slope is None or quantizer is None:
        return MAX_STEPS
    input_step = activation_scale(
        quantizer.range_min.numpy(), quantizer.range_max.numpy()
    )
    return MAX_STEPS + math.ceil(slope * input_step / step)


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
            "rule": f"every output within {self.allowed} quantization "
            f"step{'s' * (self.allowed != 1)}",
            "step": self.step,
            "histogram": {str(k): v for k, v in sorted(self.histogram.items())},
            "max_steps": self.max_steps,
            "allowed": self.allowed,
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
