"""`keras-bn export`: fold and export a `.keras` model, each file checked."""

from __future__ import annotations

import argparse
from pathlib import Path

from keras_bn.argument_types import int_between, non_negative_float
from keras_bn.cli import arguments
from keras_bn.cli.errors import CommandError
from keras_bn.cli.loading import load_model
from keras_bn.cli.output import print_json
from keras_bn.cli.progress import Progress
from keras_bn.defaults import (
    DEFAULT_OPSET,
    EXIT_OK,
    EXPORT_FORMATS,
    FORMAT_CHOICES,
    MAX_OPSET,
    MIN_OPSET,
    QUANTIZE_CHOICES,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    arguments.add_model_argument(parser)
    parser.add_argument(
        "--format", choices=FORMAT_CHOICES, default="all", help="default: %(default)s"
    )
    parser.add_argument(
        "--quantize", choices=QUANTIZE_CHOICES, help="TFLite only (default: float32)"
    )
    arguments.add_data_argument(
        parser,
        ".npz (x_train calibrates int8, x_test checks parity) or .npy "
        "(both); default parity inputs: seeded standard normal",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        help="default: the model's directory; created if missing, and removed "
        "again if the export fails",
    )
    parser.add_argument(
        "--opset",
        type=int_between(MIN_OPSET, MAX_OPSET),
        default=DEFAULT_OPSET,
        help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET} (default: %(default)s)",
    )
    parser.add_argument(
        "--no-fold", action="store_true", help="export the model as it is, BN included"
    )
    parser.add_argument(
        "--tolerance",
        type=non_negative_float,
        help="max relative error allowed, as `check` takes it (default: the bound "
        "of keras_bn.export.parity_bounds); an int8 file, judged by the exact "
        "gate against its simulation, must also be within it of the float "
        "model (not used for a QAT model's files)",
    )
    arguments.add_population_data(parser)


def check_flags(args: argparse.Namespace) -> None:
    """Flag combinations that cannot work, named by their flags."""
    if args.quantize and args.format == "onnx":
        raise CommandError(
            "--quantize applies to TFLite only; use --format tflite or all"
        )
    if args.quantize == "int8" and args.data is None:
        raise CommandError(
            "--quantize int8 needs --data: typical input images (an .npz with "
            "x_train, or an .npy) to calibrate the activation ranges"
        )
    if args.population_data is not None and args.no_fold:
        raise CommandError(
            "--population-data re-estimates the statistics that folding bakes "
            "in; it cannot be combined with --no-fold"
        )


def run(args: argparse.Namespace) -> int:
    from keras_bn.data import images_for_model, load_images, load_population_data
    from keras_bn.export import export_files
    from keras_bn.staging import created_directories

    check_flags(args)
    calibration = evaluation = population_data = None
    if args.data is not None:
        calibration, evaluation = load_images(args.data)
    if args.population_data is not None:
        population_data = load_population_data(args.population_data)
    model = load_model(args.model)
    calibration, evaluation, population_data = (
        images_for_model(a, model) for a in (calibration, evaluation, population_data)
    )
    out = Path(args.output) if args.output else Path(args.model).resolve().parent
    formats = list(EXPORT_FORMATS) if args.format == "all" else [args.format]
    stages = [f"export {f}" for f in formats]
    with (
        created_directories(out),
        Progress(stages, quiet=args.quiet, desc="export") as progress,
    ):
        reports = export_files(
            model,
            out,
            stem=Path(args.model).stem,
            formats=formats,
            quantize=args.quantize,
            calibration=calibration,
            evaluation=evaluation,
            fold=not args.no_fold,
            opset=args.opset,
            population_data=population_data,
            on_format=lambda file_format: progress(f"export {file_format}"),
            tolerance=args.tolerance,
        )
    if args.json:
        print_json({"status": "ok", "exports": reports})
    else:
        for report in reports:
            print(report.summary())
    return EXIT_OK
