"""`keras-bn recalibrate`: population statistics for every BN of a `.keras` model."""

from __future__ import annotations

import argparse

from keras_bn.argument_types import positive_int
from keras_bn.cli import arguments
from keras_bn.cli.loading import existing_file, load_model
from keras_bn.cli.output import print_json, size_text
from keras_bn.cli.progress import Progress
from keras_bn.defaults import EXIT_OK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    arguments.add_model_argument(parser)
    arguments.add_data_argument(
        parser,
        "the inputs: x_train of an .npz, or an .npy (unlabeled images of "
        "a new domain, for instance)",
        required=True,
    )
    arguments.add_output_argument(
        parser,
        "_recalibrated",
        "Everything else MODEL holds (compile configuration, optimizer state) is kept",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        help="images per batch (default: keras_bn.population_statistics')",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="report how far the moving statistics are from the population "
        "estimate; write nothing",
    )


def run(args: argparse.Namespace) -> int:
    from keras_bn import population_statistics
    from keras_bn.data import images_for_model, load_population_data
    from keras_bn.staging import save_model

    output = None
    if not args.dry_run:
        output = arguments.keras_output_path(args)
    data = load_population_data(existing_file(args.data, "data file"))
    stages = ["load", "estimate"] + ([] if args.dry_run else ["save"])
    with Progress(stages, quiet=args.quiet, desc="recalibrate") as progress:
        progress("load")
        # Only the BN statistics change: the compile configuration and the
        # optimizer's state (a checkpoint's Adam moments) are kept.
        model = load_model(args.model, training_state=not args.dry_run)
        data = images_for_model(data, model)
        progress("estimate")
        report = population_statistics(
            model,
            data,
            batch_size=args.batch_size,
            apply=not args.dry_run,
            verbose=0,
        )
        if output is not None:
            progress("save")
            output = save_model(model, output)
    if args.json:
        print_json(
            {
                "status": "ok",
                "output": None if output is None else str(output),
                "population": report,
            }
        )
    else:
        print(report.summary())
        if output is not None:
            print(f"wrote {output} ({size_text(output.stat().st_size)})")
    return EXIT_OK
