"""What an export produced and how closely it computes what the Keras model does.

Reports are plain frozen dataclasses: they print readably, compare by value and
hold no reference to the model, so a caller can keep them, log them or turn them
into a table without keeping TensorFlow objects alive.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from keras_bn.export.op_counts import bn_ops_left

#: The rules a file can be judged by (`ParityReport.rule`).
#: `"exact_gate"`: every output within one step of the file's int8
#: simulation (`keras_bn.quantization.gate`); `"error_model"`: the
#: scale-relative bound of `keras_bn.export.parity_bounds`; `"tolerance"`:
#: the caller's scale-relative bound.
EXACT_GATE = "exact_gate"
ERROR_MODEL = "error_model"
TOLERANCE = "tolerance"
RULES = (EXACT_GATE, ERROR_MODEL, TOLERANCE)


@dataclasses.dataclass(frozen=True)
class ParityReport:
    """How far an exported file's outputs are from the Keras model's.

    The relative error is measured against the scale of the reference output,
    `max_abs_error / max|y_keras|`, not element by element: an output that
    crosses zero has an element-wise relative error without meaning, while the
    scale-relative error is what the error model in `keras_bn.export.parity_bounds`
    bounds.

    Attributes:
        path: The file that was run.
        format: `"tflite"` or `"onnx"`.
        runtime: The runtime that ran it (`"litert"` or `"onnxruntime"`).
        input_shape: Shape of the inputs compared on, batch first.
        max_abs_error: `max |y_file - y_keras|` over every output element.
        max_rel_error: `max_abs_error / max |y_keras|`.
        reference_scale: `max |y_keras|`, the denominator above.
        top1_agreement: For outputs with a class axis (rank 2, more than one
            column), the fraction of rows whose argmax agrees; `None` otherwise.
        tolerance: The scale-relative tolerance the export was held to, or
            `None` when the report was made by `check_parity` alone.
        steps: For an int8 file with a simulation (a quantization-aware
            model's, or a float model's post-training one), the exact gate
            (`keras_bn.quantization.gate.StepReport.to_dict`): its outputs in
            quantization steps from the simulation's.
        rule: Which rule judged the file: `"exact_gate"`, `"error_model"`,
            `"tolerance"` (see `RULES`), or `None` without a verdict. Under
            the exact gate a `tolerance` also bounds `max_rel_error` (the
            file against the model you gave).
        simulation: What the exact gate compared with: `"quantization-aware
            model"` or `"post-training simulation"`; `None` without one.
        not_simulated: Why a float model's int8 file has no simulation (the
            `quantize_model` error), so that a float rule judged it.
    """

    path: str
    format: str
    runtime: str
    input_shape: tuple[int, ...]
    max_abs_error: float
    max_rel_error: float
    reference_scale: float
    top1_agreement: float | None = None
    tolerance: float | None = None
    steps: dict[str, Any] | None = None
    rule: str | None = None
    simulation: str | None = None
    not_simulated: str | None = None

    @property
    def within_tolerance(self) -> bool | None:
        """Whether `max_rel_error <= tolerance`; `None` without a tolerance."""
        if self.tolerance is None:
            return None
        return self.max_rel_error <= self.tolerance

    @property
    def passed(self) -> bool | None:
        """Whether the file passed its rule (and, with the exact gate, a tolerance given with it).

        `None` without a rule.
        """
        if self.steps is not None:
            return bool(self.steps["passed"]) and self.within_tolerance is not False
        return self.within_tolerance

    def describe_rule(self) -> str | None:
        """One line: which rule judged the file, and why no simulation if none."""
        if self.rule == EXACT_GATE:
            extra = (
                ""
                if self.tolerance is None
                else f"; and max rel error within the tolerance {self.tolerance:.1e}"
            )
            return f"exact int8 gate against its {self.simulation}{extra}"
        if self.rule is None:
            return None
        bound = (
            "keras_bn.export.parity_bounds' bound"
            if self.rule == ERROR_MODEL
            else "the given tolerance"
        )
        why = (
            ""
            if self.not_simulated is None
            else f" (no int8 simulation: {self.not_simulated.rstrip('.')})"
        )
        return f"max rel error within {bound}{why}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, `passed` included."""
        fields = dataclasses.asdict(self)
        fields["input_shape"] = list(self.input_shape)
        return {**fields, "passed": self.passed}


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """Everything an export wrote and checked.

    Attributes:
        path: Where the file now lies.
        format: `"tflite"` or `"onnx"`.
        file_size: Size of the file in bytes.
        op_histogram: Operator type → count in the exported graph, read from
            the file itself (TFLite builtin names such as `"CONV_2D"`, ONNX
            op types such as `"Conv"`).
        parity: The `ParityReport` the file passed before it was moved in place.
            For int8 files its `top1_agreement` is the agreement of the
            quantized outputs with the float Keras model.
        fold_report: What folding did to each BatchNormalization layer (the
            report of `keras_bn.folding.fold_batchnorm`), or `None` with
            `fold=False`.
        quantize: `None`, `"float16"` or `"int8"` (TFLite only).
        details: Format-specific facts (ONNX opset, converter versions).
        population: The `keras_bn.PopulationReport` of the statistics
            re-estimated before export (`population_data=`), or `None`.
    """

    path: str
    format: str
    file_size: int
    op_histogram: dict[str, int]
    parity: ParityReport
    fold_report: Any = None
    quantize: str | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    population: Any = None

    def count(self, *op_types: str) -> int:
        """Number of operators whose type is one of `op_types`."""
        return sum(self.op_histogram.get(op, 0) for op in op_types)

    def bn_ops_left(self, reference: ExportReport | None = None) -> int:
        """BN operators left in the file (`keras_bn.export.op_counts`).

        Args:
            reference: The export of the same network without BN
                (`without_batchnorm`, `fold=False`); without it only operators
                that are a BN are counted.
        """
        return bn_ops_left(
            self.op_histogram, None if reference is None else reference.op_histogram
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields; the fold report as `fold_report_to_dict` gives it."""
        return {
            "path": self.path,
            "format": self.format,
            "file_size": self.file_size,
            "op_histogram": dict(self.op_histogram),
            "parity": self.parity.to_dict(),
            "fold_report": fold_report_to_dict(self.fold_report),
            "quantize": self.quantize,
            "details": dict(self.details),
            "population": None
            if self.population is None
            else self.population.to_dict(),
            "parity_passed": self.parity.passed,
        }

    def summary(self) -> str:
        """A few human-readable lines: file, size, parity and the top ops."""
        ops = ", ".join(
            f"{name}×{n}"
            for name, n in sorted(self.op_histogram.items(), key=lambda kv: -kv[1])
        )
        p = self.parity
        tol = "" if p.tolerance is None else f" (tolerance {p.tolerance:.1e})"
        lines = [
            f"{self.format} file: {self.path} ({self.file_size / 1024:.1f} KiB)"
            + (f", quantize={self.quantize}" if self.quantize else ""),
            f"  parity vs Keras on {p.input_shape}: max abs {p.max_abs_error:.3e}, "
            f"max rel {p.max_rel_error:.3e}{tol}",
        ]
        if p.rule is not None:
            lines.append(f"  judged by: {p.describe_rule()}")
        if p.steps is not None:
            lines.append(f"  exact int8 gate: {p.steps['summary']}")
        if p.top1_agreement is not None:
            lines.append(f"  top-1 agreement with Keras: {p.top1_agreement:.2%}")
        if self.fold_report is not None:
            lines.append(f"  fold: {str(self.fold_report).splitlines()[0]}")
        lines.append(f"  ops: {ops}")
        return "\n".join(lines)


class ParityError(RuntimeError):
    """An exported file does not compute what the Keras model computes.

    Raised before the file is moved into place, so no such file is left behind.
    The `report` attribute holds the failing `ParityReport`.
    """

    def __init__(self, report: ParityReport, destination: str, model_name: str = ""):
        self.report = report
        model = f" of model '{model_name}'" if model_name else ""
        nothing = f"Nothing was written to {destination!r}."
        if report.steps is not None and not report.steps["passed"]:
            super().__init__(
                f"The exported {report.format} int8 file{model} does not compute "
                f"what its {report.simulation} simulates: "
                f"{report.steps['summary']} (rule: {report.steps['rule']}). {nothing}"
            )
            return
        if report.steps is not None:
            super().__init__(
                f"The exported {report.format} int8 file{model} passed the exact "
                f"gate ({report.steps['summary']}), but its max relative error "
                f"against the float model, {report.max_rel_error:.3e} (max absolute "
                f"{report.max_abs_error:.3e}, top-1 agreement "
                f"{_percent(report.top1_agreement)}), exceeds the given tolerance "
                f"{report.tolerance:.3e} on inputs of shape {report.input_shape}. "
                f"{nothing}"
            )
            return
        bound = (
            "the given tolerance"
            if report.rule == TOLERANCE
            else "the tolerance of keras_bn.export.parity_bounds"
        )
        why = (
            ""
            if report.not_simulated is None
            else f" (judged by a float bound: no int8 simulation, {report.not_simulated})"
        )
        named = f" '{model_name}'" if model_name else ""
        super().__init__(
            f"The exported {report.format} file does not match the Keras "
            f"model{named}: max relative error {report.max_rel_error:.3e} (max absolute "
            f"{report.max_abs_error:.3e}) exceeds {bound} {report.tolerance:.3e} "
            f"on inputs of shape {report.input_shape}{why}. {nothing}"
        )


def _percent(fraction: float | None) -> str:
    return "n/a" if fraction is None else f"{fraction:.2%}"


def fold_report_to_dict(report: Any) -> dict[str, Any] | None:
    """A `keras_bn.folding.FoldReport` as JSON-ready fields (`None` stays `None`)."""
    if report is None:
        return None
    return report.to_dict()
