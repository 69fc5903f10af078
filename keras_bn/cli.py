"""`keras-bn`: the command line of keras_bn.

Parsing, progress bars, tables and exit codes only: every subcommand calls the
library (`keras_bn.demo`, `keras_bn.folding`, `keras_bn.export`,
`keras_bn.bench`) and turns its errors into one line on stderr.

Exit status: 0 success; 1 bad input (a missing file, a file that is not a Keras
model, a model that cannot be folded or exported, bad data); 2 a usage error
(argparse); 3 a parity failure (an exported or folded model that does not
compute what the Keras model computes); 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import re
import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

import keras_bn
from keras_bn.bench.timing import format_table
from keras_bn.folding import FoldVerificationError

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_USAGE = 2
EXIT_PARITY = 3
EXIT_INTERRUPTED = 130

BENCHMARKS = {
    "layer": "one BN training step vs Keras' layer and the fused kernel",
    "fold": "ResNet50 fold time; unfolded/folded/BN-free inference latency",
    "export": "TFLite and onnxruntime latency and size, unfolded/folded/BN-free",
    "sync": "synchronized BN moments vs Keras on several replicas",
}
EXPORT_FORMATS = ("tflite", "onnx", "all")
QUANTIZE_CHOICES = ("float16", "int8")


class CommandError(Exception):
    """A failure to report as one line with an exit status, no traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.exit_code = exit_code


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (plus the usage) and exit status 2."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


class Progress:
    """A progress bar over named stages, on stderr; silent with `quiet`."""

    def __init__(self, stages: Sequence[str], *, quiet: bool, desc: str):
        self._desc = desc
        self._bar = tqdm(
            total=len(stages),
            desc=desc,
            disable=quiet,
            leave=False,
            file=sys.stderr,
            bar_format="{desc} {n_fmt}/{total_fmt} |{bar:20}| [{elapsed}]",
        )
        self._started = False

    def __call__(self, stage: str) -> None:
        if self._started:
            self._bar.update(1)
        self._started = True
        self._bar.set_description_str(f"{self._desc}: {stage}")

    def close(self) -> None:
        if self._started:
            self._bar.update(1)
        self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TrainingProgress(keras.callbacks.Callback):
    """A tqdm bar over every training step, with loss and accuracy."""

    def __init__(self, quiet: bool):
        super().__init__()
        self._quiet = quiet
        self._bar = None

    def on_train_begin(self, logs=None):
        epochs, steps = self.params.get("epochs", 1), self.params.get("steps") or 0
        self._bar = tqdm(
            total=epochs * steps,
            desc="train",
            unit="step",
            disable=self._quiet,
            leave=False,
            file=sys.stderr,
        )

    def on_train_batch_end(self, batch, logs=None):
        self._bar.update(1)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self._bar.set_postfix(
            epoch=epoch + 1,
            **{
                k: f"{float(v):.3f}"
                for k, v in logs.items()
                if k in ("loss", "accuracy")
            },
        )

    def on_train_end(self, logs=None):
        self._bar.close()


# --- input checks that produce the one-line messages -----------------------


def _existing_file(path: str, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise CommandError(f"{what} not found: {path!r} does not exist")
    if not p.is_file():
        raise CommandError(f"{what} must be a file. Received: {path!r} (a directory)")
    return p


def load_model(path: str) -> keras.Model:
    """The Keras model in `path`, or a `CommandError` saying why not."""
    p = _existing_file(path, "Keras model")
    if p.suffix == ".keras" and not zipfile.is_zipfile(p):
        raise CommandError(
            f"{path!r} is not a Keras model: a .keras file is a zip archive and "
            "this one is not"
        )
    try:
        model = keras.saving.load_model(p, compile=False)
    except Exception as e:  # Keras raises ValueError, TypeError, KeyError, ...
        raise CommandError(f"cannot load {path!r} as a Keras model: {e}") from e
    if not isinstance(model, keras.Model):
        raise CommandError(
            f"{path!r} holds a {type(model).__name__} layer, not a Keras model"
        )
    return model


def load_arrays(path: str) -> tuple[np.ndarray, np.ndarray]:
    """`(calibration, evaluation)` images from an `.npz` or `.npy` file.

    An `.npz` gives `x_train` and `x_test` (the demo's format; either may be
    missing, the other is used for both); an `.npy` gives one array for both.
    """
    p = _existing_file(path, "data file")
    try:
        loaded = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise CommandError(f"{path!r} is not a NumPy .npy or .npz file: {e}") from e
    if isinstance(loaded, np.ndarray):
        return loaded, loaded
    with loaded:
        arrays = {k: loaded[k] for k in ("x_train", "x_test") if k in loaded}
    if not arrays:
        raise CommandError(
            f"{path!r} must hold an array named x_train or x_test. "
            f"Received arrays: {sorted(loaded.files)}"
        )
    train = arrays.get("x_train", arrays.get("x_test"))
    test = arrays.get("x_test", train)
    return train, test


# --- output ------------------------------------------------------------------


def _jsonable(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def _fold_report_json(report) -> dict:
    return {
        "entries": [_jsonable(e) for e in report],
        "folded": len(report.folded),
        "total": len(report),
        "max_error": report.max_error,
    }


def _print_json(payload: dict) -> None:
    print(json.dumps(_jsonable(payload), indent=2))


def _size(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


# --- subcommands -------------------------------------------------------------


def cmd_demo(args) -> int:
    from keras_bn import demo

    if args.epochs < 1:
        raise CommandError(f"--epochs must be at least 1. Received: {args.epochs}")
    data = None if args.data is None else str(_existing_file(args.data, "data file"))
    with Progress(demo.DEMO_STAGES, quiet=args.quiet, desc="demo") as progress:
        result = demo.run_demo(
            args.out,
            epochs=args.epochs,
            data=data,
            on_stage=progress,
            fit_callbacks=[TrainingProgress(args.quiet)],
        )
    if args.json:
        _print_json(
            {
                "dataset": result.dataset,
                "rows": result.rows,
                "history": result.history,
                "fold_report": _fold_report_json(result.fold_report),
                "out": str(Path(args.out).resolve()),
            }
        )
        return EXIT_OK
    d = result.dataset
    print(
        f"{d['name']}: {d['train']} training and {d['test']} held-out images of "
        f"shape {tuple(d['input_shape'])}, {d['classes']} classes; "
        f"{args.epochs} epochs under XLA"
    )
    rows = [
        {
            "format": row.format,
            "file": Path(row.path).name,
            "size": _size(row.file_size),
            "accuracy": f"{row.accuracy:.2%}",
            "max error vs Keras": f"{row.max_error:.1e}",
            "BN ops left": str(row.bn_ops_left),
            "latency (batch 1)": f"{row.latency_ms:.3f} ms",
        }
        for row in result.rows
    ]
    print(format_table(rows, list(rows[0])))
    print(result.fold_report)
    print(f"files in {Path(args.out).resolve()}")
    return EXIT_OK


def cmd_fold(args) -> int:
    output = Path(args.output) if args.output else None
    if output is not None and output.suffix != ".keras":
        raise CommandError(f"-o must name a .keras file. Received: {args.output!r}")
    with Progress(
        ["load", "fold and verify", "save"], quiet=args.quiet, desc="fold"
    ) as progress:
        progress("load")
        model = load_model(args.model)
        if output is None:
            output = Path(args.model).with_name(f"{Path(args.model).stem}_folded.keras")
        if not output.parent.is_dir():
            raise CommandError(
                f"the directory of -o does not exist: {str(output.parent)!r}"
            )
        progress("fold and verify")
        folded, report = keras_bn.fold_batchnorm(
            model, rtol=args.rtol, atol=args.atol, return_report=True
        )
        progress("save")
        folded.save(output)
    if args.json:
        _print_json({"output": str(output), "fold_report": _fold_report_json(report)})
    else:
        print(report)
        print(f"wrote {output} ({_size(output.stat().st_size)})")
    return EXIT_OK


def cmd_export(args) -> int:
    from keras_bn import export

    formats = ["tflite", "onnx"] if args.format == "all" else [args.format]
    if args.quantize and args.format == "onnx":
        raise CommandError(
            "--quantize applies to TFLite only; use --format tflite or all"
        )
    calibration = evaluation = None
    if args.data is not None:
        calibration, evaluation = load_arrays(args.data)
    if args.quantize == "int8" and calibration is None:
        raise CommandError(
            "--quantize int8 needs --data: typical input images (an .npz with "
            "x_train, or an .npy) to calibrate the activation ranges"
        )
    model = load_model(args.model)
    out = Path(args.output) if args.output else Path(args.model).resolve().parent
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(args.model).stem
    reports = []
    stages = [f"export {f}" for f in formats]
    with Progress(stages, quiet=args.quiet, desc="export") as progress:
        for file_format in formats:
            progress(f"export {file_format}")
            if file_format == "tflite":
                suffix = f"_{args.quantize}" if args.quantize else ""
                int8 = args.quantize == "int8"
                reports.append(
                    export.to_tflite(
                        model,
                        out / f"{stem}{suffix}.tflite",
                        fold=not args.no_fold,
                        quantize=args.quantize,
                        representative_data=calibration if int8 else None,
                        inputs=None if int8 else evaluation,
                    )
                )
            else:
                reports.append(
                    export.to_onnx(
                        model,
                        out / f"{stem}.onnx",
                        fold=not args.no_fold,
                        opset=args.opset,
                        inputs=evaluation,
                    )
                )
    if args.json:
        _print_json(
            {
                "exports": [
                    {
                        **_jsonable(dataclasses.replace(r, fold_report=None)),
                        "fold_report": None
                        if r.fold_report is None
                        else _fold_report_json(r.fold_report),
                        "parity_passed": r.parity.passed,
                    }
                    for r in reports
                ]
            }
        )
        return EXIT_OK
    for report in reports:
        print(report.summary())
    return EXIT_OK


def cmd_check(args) -> int:
    from keras_bn import export

    exported = _existing_file(args.file, "exported file")
    evaluation = None
    if args.data is not None:
        _, evaluation = load_arrays(args.data)
    model = load_model(args.model)
    with Progress(["run and compare"], quiet=args.quiet, desc="check") as progress:
        progress("run and compare")
        report = export.check_parity(model, exported, inputs=evaluation)
        tolerance = (
            args.tolerance
            if args.tolerance is not None
            else export.parity_tolerance(model, args.quantize)
        )
        report = dataclasses.replace(report, tolerance=tolerance)
    if args.json:
        _print_json({"parity": report, "passed": report.passed})
    else:
        rows = [
            {
                "file": exported.name,
                "runtime": report.runtime,
                "inputs": "x".join(map(str, report.input_shape)),
                "max abs error": f"{report.max_abs_error:.2e}",
                "max rel error": f"{report.max_rel_error:.2e}",
                "tolerance": f"{report.tolerance:.2e}",
                "top-1 agreement": ""
                if report.top1_agreement is None
                else f"{report.top1_agreement:.2%}",
                "result": "pass" if report.passed else "FAIL",
            }
        ]
        print(format_table(rows, list(rows[0])))
    if not report.passed:
        raise CommandError(
            f"parity failure: {exported.name} differs from the Keras model by a "
            f"max relative error of {report.max_rel_error:.3e}, above the "
            f"tolerance {report.tolerance:.3e}",
            EXIT_PARITY,
        )
    return EXIT_OK


def cmd_bench(args) -> int:
    module = importlib.import_module(f"keras_bn.bench.{args.name}")
    return int(module.main(list(args.args)))


# --- the parser --------------------------------------------------------------


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a number. Received: {text!r}"
        ) from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0. Received: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The `keras-bn` argument parser, one subparser per subcommand."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="keras-bn",
        description=(
            "Batch Normalization for Keras 3: train with the analytic gradient, "
            "fold BN away, export parity-checked TFLite and ONNX files."
        ),
        epilog=(
            "examples:\n"
            "  keras-bn demo\n"
            "  keras-bn fold model.keras -o model_folded.keras\n"
            "  keras-bn export model.keras --format all -o export/out\n"
            "  keras-bn check model.keras export/out/model.onnx\n"
            "  keras-bn bench layer --repeats 10\n\n"
            "exit status: 0 ok, 1 bad input, 2 usage error, 3 parity failure"
        ),
        formatter_class=formatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=(
            f"keras-bn {keras_bn.__version__} (keras {keras.__version__}, "
            f"tensorflow {tf.__version__})"
        ),
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    common.add_argument(
        "--json", action="store_true", help="print one JSON report on stdout"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_text: str, epilog: str, run: Callable, parents=(common,)):
        sub = commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=epilog,
            parents=list(parents),
            formatter_class=formatter,
        )
        sub.set_defaults(run=run)
        return sub

    from keras_bn.demo import DEFAULT_EPOCHS, DEFAULT_OUT

    demo = add(
        "demo",
        "train a small CNN with keras_bn.BatchNormalization under XLA, fold it, "
        "export TFLite (float32, int8) and ONNX, and compare them all on "
        "held-out data",
        "example:\n  keras-bn demo --epochs 8 --out export/out\n"
        "  keras-bn demo --data mnist.npz   # x_train, y_train, x_test, y_test",
        cmd_demo,
    )
    demo.add_argument(
        "--epochs", type=int, default=DEFAULT_EPOCHS, help="default: %(default)s"
    )
    demo.add_argument(
        "--data",
        metavar="FILE.npz",
        help="x_train, y_train, x_test, y_test (default: scikit-learn's digits)",
    )
    demo.add_argument(
        "--out", metavar="DIR", default=str(DEFAULT_OUT), help="default: %(default)s"
    )

    fold = add(
        "fold",
        "fold every BatchNormalization of a Keras model into its neighbour "
        "and verify the result",
        "example:\n  keras-bn fold model.keras -o model_folded.keras",
        cmd_fold,
    )
    fold.add_argument("model", metavar="MODEL.keras")
    fold.add_argument(
        "-o",
        "--output",
        metavar="OUT.keras",
        help="default: MODEL_folded.keras next to MODEL",
    )
    fold.add_argument(
        "--rtol",
        type=_non_negative_float,
        default=1e-4,
        help="verification, relative to the output's scale (default: %(default)s)",
    )
    fold.add_argument(
        "--atol",
        type=_non_negative_float,
        default=1e-5,
        help="verification, absolute (default: %(default)s)",
    )

    export = add(
        "export",
        "fold and export a Keras model to TFLite and/or ONNX; each file is "
        "parity-checked before it is written",
        "example:\n  keras-bn export model.keras --format all -o export/out\n"
        "  keras-bn export model.keras --format tflite --quantize int8 --data digits.npz",
        cmd_export,
    )
    export.add_argument("model", metavar="MODEL.keras")
    export.add_argument(
        "--format", choices=EXPORT_FORMATS, default="all", help="default: %(default)s"
    )
    export.add_argument(
        "--quantize", choices=QUANTIZE_CHOICES, help="TFLite only (default: float32)"
    )
    export.add_argument(
        "--data",
        metavar="FILE",
        help=".npz (x_train calibrates int8, x_test checks parity) or .npy "
        "(both); default parity inputs: seeded standard normal",
    )
    export.add_argument(
        "-o", "--output", metavar="DIR", help="default: the model's directory"
    )
    export.add_argument(
        "--opset", type=int, default=17, help="ONNX opset (default: %(default)s)"
    )
    export.add_argument(
        "--no-fold", action="store_true", help="export the model as it is, BN included"
    )

    check = add(
        "check",
        "run a TFLite or ONNX file and compare it with a Keras model",
        "example:\n  keras-bn check model.keras export/out/model.onnx\n"
        "  keras-bn check model.keras model_int8.tflite --quantize int8 --data digits.npz",
        cmd_check,
    )
    check.add_argument("model", metavar="MODEL.keras")
    check.add_argument("file", metavar="FILE.tflite|FILE.onnx")
    check.add_argument(
        "--data",
        metavar="FILE",
        help="inputs: x_test of an .npz, or an .npy (default: seeded standard normal)",
    )
    check.add_argument(
        "--quantize",
        choices=QUANTIZE_CHOICES,
        help="the file's quantization, which sets the tolerance (default: float32)",
    )
    check.add_argument(
        "--tolerance",
        type=_non_negative_float,
        help="max relative error allowed (default: keras_bn.export.error_model's bound)",
    )

    bench = add(
        "bench",
        "run a benchmark; the remaining arguments go to it",
        "examples:\n"
        + "".join(f"  keras-bn bench {n:<7} # {h}\n" for n, h in BENCHMARKS.items())
        + "  keras-bn bench layer --help",
        cmd_bench,
        parents=(),
    )
    bench.add_argument("name", choices=list(BENCHMARKS))
    bench.add_argument("args", nargs=argparse.REMAINDER, help="passed to the benchmark")
    return parser


_KNOWN_ERRORS = (ValueError, TypeError, FileNotFoundError, NotImplementedError)


def _one_line(message: str) -> str:
    return re.sub(r"\s+", " ", message).strip()


def main(argv: Sequence[str] | None = None) -> int:
    """Runs `keras-bn` with `argv` (default: `sys.argv[1:]`); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    json_mode = getattr(args, "json", False)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("keras-bn: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        from keras_bn.export import ParityError

        if isinstance(e, CommandError):
            code = e.exit_code
        elif isinstance(e, ParityError | FoldVerificationError):
            code = EXIT_PARITY
        elif isinstance(e, _KNOWN_ERRORS):
            code = EXIT_BAD_INPUT
        else:
            raise
        message = _one_line(str(e)) or type(e).__name__
        print(f"keras-bn {args.command}: error: {message}", file=sys.stderr)
        if json_mode:
            _print_json({"error": message, "exit_code": code})
        return code


if __name__ == "__main__":
    sys.exit(main())
