"""The exact gate of an int8 file: its outputs in quantization steps of its own simulation.

A model from `quantize_model`, in inference mode, computes what its int8
file computes, in float: the same rounded weights, the same int32 bias grid
(`s_in·s_w`), the same activation grids. The file's integer kernels differ
from that float simulation only in how they round the rescaled accumulator
(a 31-bit fixed-point multiplier) and ties; either can move a value that
lies within a hair of a rounding boundary to the next level. The rule:

    every output within `MAX_STEPS = 1` step of the file's output scale.

One exception, derived: an output that a softmax, logistic or tanh computes
from a rounded input (a classifier's probabilities) moves when an input is
one level off, by more than one output step where the input grid is
coarse. With every input off by at most its step `s`, a softmax output `p`
moves by at most `s · 2 max p'(1 - p')` over the values `p'` it can take on
the way (mean-value theorem: `Σⱼ|∂pᵢ/∂zⱼ| = 2pᵢ(1 - pᵢ)`), and those lie
within a factor `e^{±2s}` of `p`, as `1 - p'` does of `1 - p`; logistic
`s · max p'(1 - p')`, factor `e^{±s}`; tanh `t = 2σ(2z) - 1`, so
`s · 4 max σ'(1 - σ')`, factor `e^{±2s}`. The gate allows each such output
`MAX_STEPS` plus that bound in output steps (`allowed_steps`), computed from
the simulation's own value: a confident probability near 0 or 1 keeps about
its 1 step, one near 1/2 gets the most room.
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

import keras
import numpy as np

from keras_bn.folding.graph import GraphView
from keras_bn.keras_adapter import functional_graph
from keras_bn.quantization.activation_quantizer import ActivationQuantizer
from keras_bn.quantization.graph import activation_name
from keras_bn.quantization.model import producing_quantizer
from keras_bn.quantization.quantizers import activation_scale

__all__ = [
    "MAX_STEPS",
    "SATURATING_OUTPUT_BOUNDS",
    "allowed_steps",
    "StepReport",
    "output_quantizer",
    "output_step",
    "step_report",
]

#: The most quantization steps an output of the int8 file may differ from
#: its simulation.
MAX_STEPS = 1


def _logistic_bound(
    q, h: float, factor_exponent: float, slope: float, s: float
) -> np.ndarray:
    """`s · slope · max q'(1 - q')` over every `q'` within `e^{±factor_exponent}`
    of a `q_true` within `h` of `q` (and `1 - q'` of `1 - q_true`)."""
    grow, shrink = np.exp(factor_exponent), np.exp(-factor_exponent)
    low = np.maximum((q - h) * shrink, 1 - (1 - q + h) * grow)
    high = np.minimum((q + h) * grow, 1 - (1 - q - h) * shrink)
    nearest_half = np.clip(0.5, np.clip(low, 0, 1), np.clip(high, 0, 1))
    return s * slope * nearest_half * (1 - nearest_half)


#: The most an output of these ops changes when every input is off by up to
#: `s`, from the output's value `y`, known to within `h` (see the module
#: docstring).
SATURATING_OUTPUT_BOUNDS = {
    "softmax": lambda y, s, h=0.0: _logistic_bound(y, h, 2 * s, 2.0, s),
    "sigmoid": lambda y, s, h=0.0: _logistic_bound(y, h, s, 1.0, s),
    "tanh": lambda y, s, h=0.0: _logistic_bound((1 + y) / 2, h / 2, 2 * s, 4.0, s),
}


def allowed_steps(model: keras.Model, simulated: np.ndarray) -> int | np.ndarray:
    """The most steps each output of `model`'s int8 file may be off its simulation.

    `MAX_STEPS`, except for an output a softmax, logistic or tanh computes
    from a rounded input: there `MAX_STEPS` plus, in output steps, the most
    that output can move when every input is one level off (the bounds of
    `SATURATING_OUTPUT_BOUNDS`, around the simulation's value, which is
    within half a step of the exact one).

    Args:
        model: a model from `quantize_model`.
        simulated: its outputs in inference mode on the compared inputs.

    Returns:
        `MAX_STEPS`, or an integer array shaped like `simulated`.

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
    bound = SATURATING_OUTPUT_BOUNDS.get(activation_name(activation.layer))
    quantizer = producing_quantizer(view, activation.input_tensors[0])
    if bound is None or quantizer is None:
        return MAX_STEPS
    input_step = activation_scale(
        quantizer.range_min.numpy(), quantizer.range_max.numpy()
    )
    # The exact value lies within half a step of the simulated one.
    moved = bound(np.asarray(simulated, np.float64), input_step, step / 2)
    return MAX_STEPS + np.ceil(moved / step).astype(np.int64)


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
        allowed: the most steps the gate allows any output (`MAX_STEPS`, or
            more for a softmax's: `allowed_steps`).
        max_excess: the most steps by which an output exceeds its own
            allowance; the file passes when it is at most 0.
    """

    step: float
    histogram: dict[int, int]
    max_steps: int
    samples: int
    max_excess: int
    allowed: int = MAX_STEPS

    @property
    def passed(self) -> bool:
        return self.max_excess <= 0

    def to_dict(self) -> dict:
        rule = f"every output within {MAX_STEPS} quantization step"
        if self.allowed != MAX_STEPS:
            rule += (
                f", a saturating output within {MAX_STEPS} plus how far its "
                f"inputs' step can move it (here at most {self.allowed})"
            )
        return {
            "rule": rule,
            "step": self.step,
            "histogram": {str(k): v for k, v in sorted(self.histogram.items())},
            "max_steps": self.max_steps,
            "allowed": self.allowed,
            "max_excess": self.max_excess,
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
    simulated: np.ndarray,
    outputs: np.ndarray,
    step: float,
    allowed: int | np.ndarray = MAX_STEPS,
) -> StepReport:
    """Compares a file's outputs with its simulation's, in steps of `step`.

    Args:
        simulated: the quantized model's outputs in inference mode.
        outputs: the file's dequantized outputs on the same inputs.
        step: the output step (`output_step(model)`).
        allowed: the most steps allowed: one number, or one per output
            (`allowed_steps`).

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
    allowed = np.broadcast_to(np.asarray(allowed, np.int64), steps.shape)
    return StepReport(
        step=float(step),
        histogram={int(v): int(c) for v, c in zip(values, counts, strict=True)},
        max_steps=int(values.max()) if values.size else 0,
        samples=int(simulated.shape[0]) if simulated.ndim else 1,
        allowed=int(allowed.max()) if allowed.size else MAX_STEPS,
        max_excess=int(np.max(steps - allowed)) if steps.size else 0,
    )
