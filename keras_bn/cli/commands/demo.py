"""`keras-bn demo`: train, fold, export and compare the demo CNN."""

from __future__ import annotations

import argparse
from pathlib import Path

from keras_bn.argument_types import positive_int
from keras_bn.cli import arguments
from keras_bn.cli.loading import existing_file
from keras_bn.cli.output import format_table, print_json, size_text
from keras_bn.cli.progress import Progress, training_progress
from keras_bn.defaults import DEMO_EPOCHS, DEMO_OUT, EXIT_OK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--epochs", type=positive_int, default=DEMO_EPOCHS, help="default: %(default)s"
    )
    arguments.add_data_argument(
        parser,
        "x_train, y_train, x_test, y_test (default: scikit-learn's digits)",
        npz_only=True,
    )
    parser.add_argument(
        "--out", metavar="DIR", default=DEMO_OUT, help="default: %(default)s"
    )


def run(args: argparse.Namespace) -> int:
    from keras_bn import demo

    epochs = args.epochs
    out = Path(args.out)
    data = None if args.data is None else str(existing_file(args.data, "data file"))
    with Progress(demo.DEMO_STAGES, quiet=args.quiet, desc="demo") as progress:
        result = demo.run_demo(
            out,
            epochs=epochs,
            data=data,
            on_stage=progress,
            fit_callbacks=[training_progress(args.quiet)],
        )
    if args.json:
        print_json(
            {
                "status": "ok",
                "dataset": result.dataset,
                "rows": result.rows,
                "history": result.history,
                "fold_report": result.fold_report.to_dict(),
                "population": result.population,
                "out": str(out.resolve()),
            }
        )
        return EXIT_OK
    print_table(result, epochs, out)
    return EXIT_OK


def print_table(result, epochs: int, out: Path) -> None:
    """The data line, one row per artefact, the fold report, where files are."""
    d = result.dataset
    print(
        f"{d['name']}: {d['train']} training and {d['test']} held-out images of "
        f"shape {tuple(d['input_shape'])}, {d['classes']} classes; "
        f"{epochs} epochs under XLA"
    )
    rows = [
        {
            "format": row.format,
            "file": Path(row.path).name,
            "size": size_text(row.file_size),
            "accuracy": f"{row.accuracy:.2%}",
            "max error vs Keras": f"{row.max_error:.1e}",
            "BN ops left": str(row.bn_ops_left),
            "latency (batch 1)": f"{row.latency_ms:.3f} ms",
        }
        for row in result.rows
    ]
    print(format_table(rows, list(rows[0])))
    print(result.fold_report)
    print(result.population.summary())
    print(f"files in {out.resolve()}")
