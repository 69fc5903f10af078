"""`keras-bn fold`: fold every BN of a `.keras` model and verify the result."""

from __future__ import annotations

import argparse

from keras_bn.argument_types import non_negative_float
from keras_bn.cli import arguments
from keras_bn.cli.loading import load_model
from keras_bn.cli.output import print_json, size_text
from keras_bn.cli.progress import Progress
from keras_bn.defaults import EXIT_OK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    arguments.add_model_argument(parser)
    arguments.add_output_argument(
        parser,
        "_folded",
        "The folded model is a new, inference-only model: no compile "
        "configuration or optimizer state",
    )
    parser.add_argument(
        "--rtol",
        type=non_negative_float,
        help="verification, relative to the output's scale "
        "(default: keras_bn.fold_batchnorm's)",
    )
    parser.add_argument(
        "--atol",
        type=non_negative_float,
        help="verification, absolute (default: keras_bn.fold_batchnorm's)",
    )
    arguments.add_population_data(parser)


def tolerances(args: argparse.Namespace) -> dict:
    """The tolerances the user gave; the library's defaults otherwise."""
    given = {"rtol": args.rtol, "atol": args.atol}
    return {name: value for name, value in given.items() if value is not None}


def run(args: argparse.Namespace) -> int:
    from keras_bn.data import images_for_model, load_population_data
    from keras_bn.folding import fold_batchnorm
    from keras_bn.staging import save_model

    # A bad -o fails before the model is loaded.
    output = arguments.keras_output_path(args)
    population_data = None
    if args.population_data is not None:
        population_data = load_population_data(args.population_data)
    stages = ["load", "fold and verify", "save"]
    with Progress(stages, quiet=args.quiet, desc="fold") as progress:
        progress("load")
        model = load_model(args.model)
        population_data = images_for_model(population_data, model)
        progress("fold and verify")
        folded, report = fold_batchnorm(
            model,
            population_data=population_data,
            return_report=True,
            **tolerances(args),
        )
        progress("save")
        output = save_model(folded, output)
    if args.json:
        print_json(
            {
                "status": "ok",
                "output": str(output),
                "fold_report": report.to_dict(),
            }
        )
    else:
        print(report)
        print(
            f"wrote {output} ({size_text(output.stat().st_size)}), an inference "
            "model: no compile configuration or optimizer state"
        )
    return EXIT_OK
