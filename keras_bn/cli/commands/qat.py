"""`keras-bn qat`: quantization-aware fine-tuning of a `.keras` model for int8 files."""

from __future__ import annotations

import argparse
from pathlib import Path

from keras_bn.argument_types import positive_float, positive_int
from keras_bn.cli import arguments
from keras_bn.cli.errors import CommandError
from keras_bn.cli.loading import existing_file, load_model, saved_compile_config
from keras_bn.cli.output import print_json, size_text
from keras_bn.cli.progress import Progress, training_progress
from keras_bn.defaults import EXIT_OK, WEIGHT_GRANULARITIES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    arguments.add_model_argument(parser)
    arguments.add_data_argument(
        parser,
        "x_train and y_train (integer labels); x_test, y_test to validate",
        npz_only=True,
        required=True,
    )
    parser.add_argument("--epochs", type=positive_int, default=3)
    arguments.add_output_argument(
        parser,
        "_qat",
        "A new model: the QAT layers with their trained int8 ranges",
    )
    parser.add_argument(
        "--weights",
        choices=WEIGHT_GRANULARITIES,
        default="per_channel",
        help="int8 weight scales: one per output channel (default) or per kernel",
    )
    parser.add_argument(
        "--loss",
        help="a Keras loss name; default: the loss the model was compiled with",
    )
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument(
        "--learning-rate",
        type=positive_float,
        help="Adam's (default: keras_bn.quantization.fine_tune's)",
    )


def saved_loss(path: str):
    """The loss a `.keras` file was compiled with, or `None`."""
    import keras

    loss = (saved_compile_config(Path(path)) or {}).get("loss")
    return None if loss is None else keras.losses.deserialize(loss)


def run(args: argparse.Namespace) -> int:
    from keras_bn.data import load_labeled
    from keras_bn.quantization import fine_tune
    from keras_bn.staging import save_model

    output = arguments.keras_output_path(args)
    x, y, validation = load_labeled(existing_file(args.data, "data file"))
    with Progress(["load", "train", "save"], quiet=args.quiet, desc="qat") as progress:
        progress("load")
        model = load_model(args.model)
        loss = args.loss or saved_loss(args.model)
        if loss is None:
            raise CommandError(
                f"{args.model!r} was saved without a compiled loss; give one "
                "with --loss (e.g. --loss sparse_categorical_crossentropy)"
            )
        progress("train")
        options = (
            {} if args.learning_rate is None else {"learning_rate": args.learning_rate}
        )
        result = fine_tune(
            model,
            x,
            y,
            epochs=args.epochs,
            weights=args.weights,
            loss=loss,
            batch_size=args.batch_size,
            validation_data=validation,
            callbacks=[training_progress(args.quiet)],
            **options,
        )
        progress("save")
        output = save_model(result.model, output)
    if args.json:
        print_json({"status": "ok", "output": str(output), "qat": result.to_dict()})
    else:
        print(str(result.report))
        last = {k: f"{v[-1]:.4f}" for k, v in result.history.items()}
        print(f"after {args.epochs} epochs (BN frozen for the last): {last}")
        print(f"wrote {output} ({size_text(output.stat().st_size)})")
    return EXIT_OK
