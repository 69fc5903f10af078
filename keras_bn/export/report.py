"""What an export produced and how closely it computes what the Keras model does.

Reports are plain frozen dataclasses: they print readably, compare by value and
hold no reference to the model, so a caller can keep them, log them or turn them
into a table without keeping TensorFlow objects alive.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from keras_bn.export.op_counts import bn_ops_left


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
        steps: For the int8 file of a quantization-aware model, the exact
            gate it was held to instead (`keras_bn.quantization.gate.StepReport.to_dict`):
            its outputs in quantization steps from the model's simulation.
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

    @property
    def passed(self) -> bool | None:
        """Whether `max_rel_error <= tolerance` (or the exact gate passed); `None` without either."""
        if self.steps is not None:
            return bool(self.steps["passed"])
        if self.tolerance is None:
            return None
        return self.max_rel_error <= self.tolerance

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

    def __init__(self, report: ParityReport, destination: str):
        self.report = report
        if report.steps is not None:
            super().__init__(
                f"The exported {report.format} int8 file does not compute what its "
                f"quantization-aware model simulates: {report.steps['summary']} "
                f"(rule: {report.steps['rule']}). Nothing was written to "
                f"{destination!r}."
            )
            return
        super().__init__(
            f"The exported {report.format} model does not match the Keras model: "
            f"max relative error {report.max_rel_error:.3e} (max absolute "
            f"{report.max_abs_error:.3e}) exceeds the tolerance "
            f"{report.tolerance:.3e} of keras_bn.export.parity_bounds on inputs of "
            f"shape {report.input_shape}. Nothing was written to {destination!r}."
        )


def fold_report_to_dict(report: Any) -> dict[str, Any] | None:
    """A `keras_bn.folding.FoldReport` as JSON-ready fields (`None` stays `None`)."""
    if report is None:
        return None
    return report.to_dict()
