"""`keras-bn check`: run a TFLite or ONNX file and compare it with a model."""

from __future__ import annotations

import argparse

from keras_bn.argument_types import non_negative_float
from keras_bn.cli import arguments
from keras_bn.cli.errors import CommandError
from keras_bn.cli.loading import existing_file, load_model
from keras_bn.cli.output import format_table, print_json
from keras_bn.cli.progress import Progress
from keras_bn.defaults import EXIT_OK, EXIT_PARITY, QUANTIZE_CHOICES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    arguments.add_model_argument(parser)
    arguments.add_input_file(
        parser, "file", what="exported file", metavar="FILE.tflite|FILE.onnx"
    )
    arguments.add_data_argument(
        parser,
        "inputs: x_test of an .npz, or an .npy (default: seeded standard normal)",
    )
    parser.add_argument(
        "--quantize",
        choices=QUANTIZE_CHOICES,
        help="the file's quantization, which sets the tolerance (default: float32)",
    )
    parser.add_argument(
        "--tolerance",
        type=non_negative_float,
        help="max relative error allowed (default: the bound of keras_bn.export.parity_bounds)",
    )


def run(args: argparse.Namespace) -> int:
    from keras_bn.data import images_for_model, load_images
    from keras_bn.export import check_parity

    exported = existing_file(args.file, "exported file")
    calibration = evaluation = None
    if args.data is not None:
        # int8 files are judged on the samples their calibration did not see:
        # the library picks them from both arrays, as the export did.
        calibration, evaluation = load_images(args.data)
    model = load_model(args.model)
    calibration, evaluation = (
        images_for_model(a, model) for a in (calibration, evaluation)
    )
    with Progress(["run and compare"], quiet=args.quiet, desc="check") as progress:
        progress("run and compare")
        report = check_parity(
            model,
            exported,
            inputs=evaluation,
            tolerance="error_model" if args.tolerance is None else args.tolerance,
            quantize=args.quantize,
            calibration=calibration,
        )
    if not report.passed:
        if not args.json:
            print(format_table([table_row(exported.name, report)], TABLE_COLUMNS))
            print(f"judged by: {report.describe_rule()}")
        raise CommandError(
            f"parity failure: {exported.name} differs from the Keras model by a "
            f"max relative error of {report.max_rel_error:.3e}, above the "
            f"tolerance {report.tolerance:.3e}",
            EXIT_PARITY,
            details={"parity": report, "passed": False},
        )
    if args.json:
        print_json({"status": "ok", "parity": report, "passed": True})
    else:
        print(format_table([table_row(exported.name, report)], TABLE_COLUMNS))
        print(f"judged by: {report.describe_rule()}")
    return EXIT_OK


TABLE_COLUMNS = [
    "file",
    "runtime",
    "inputs",
    "max abs error",
    "max rel error",
    "tolerance",
    "top-1 agreement",
    "result",
]


def table_row(name: str, report) -> dict:
    """The check's one table row."""
    top1 = report.top1_agreement
    return {
        "file": name,
        "runtime": report.runtime,
        "inputs": "x".join(map(str, report.input_shape)),
        "max abs error": f"{report.max_abs_error:.2e}",
        "max rel error": f"{report.max_rel_error:.2e}",
        "tolerance": f"{report.tolerance:.2e}",
        "top-1 agreement": "" if top1 is None else f"{top1:.2%}",
        "result": "pass" if report.passed else "FAIL",
    }
