"""Train the digits CNN, fold its BatchNormalization layers, export it.

Run from the repository root:

    python export/digits.py                   # scikit-learn's 8×8 digits
    python export/digits.py --data my.npz     # x_train, y_train, x_test, y_test
    python export/digits.py --epochs 1 --out /tmp/digits   # a quick run

Trains `keras_bn.models.digits_cnn` (the network of `keras-bn demo`), then
writes, each file parity-checked against the Keras model on the held-out
images before it is written (`keras_bn.export.export_files`):

- digits_cnn.tflite       float32, BN folded
- digits_cnn.onnx         float32, BN folded
- digits_cnn_int8.tflite  full-integer int8, calibrated on the training images

and prints each report and the held-out accuracy of the Keras model and of
each file. With `--data my.npz` the stem is `my_cnn`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import keras
import numpy as np

from keras_bn.data import load_dataset
from keras_bn.defaults import DEMO_EPOCHS
from keras_bn.demo import BATCH_SIZE, SEED
from keras_bn.export import export_files, run_file
from keras_bn.models import digits_cnn

OUT = Path(__file__).resolve().parent / "out"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=DEMO_EPOCHS)
    parser.add_argument("--data", help="an .npz (default: the bundled digits)")
    parser.add_argument("--out", type=Path, default=OUT, help="output directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    data = load_dataset(args.data)
    stem = "digits_cnn" if args.data is None else f"{Path(args.data).stem}_cnn"
    keras.utils.set_random_seed(SEED)
    model = digits_cnn(data.x_train.shape[1:], data.num_classes, name=stem)
    model.compile(
        keras.optimizers.Adam(3e-3),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(
        data.x_train, data.y_train, epochs=args.epochs, batch_size=BATCH_SIZE, verbose=0
    )

    args.out.mkdir(parents=True, exist_ok=True)
    reports = export_files(model, args.out, stem=stem, evaluation=data.x_test)
    reports += export_files(
        model,
        args.out,
        stem=stem,
        formats=["tflite"],
        quantize="int8",
        calibration=data.x_train,
        evaluation=data.x_test,
    )
    for report in reports:
        print(report.summary())
    print(reports[0].fold_report)

    def accuracy(outputs: np.ndarray) -> str:
        return f"{np.mean(outputs.argmax(-1) == data.y_test):.2%}"

    print(f"held-out accuracy ({len(data.y_test)} images):")
    print(f"  Keras  {accuracy(model.predict(data.x_test, verbose=0))}")
    for report in reports:
        print(
            f"  {Path(report.path).name}  {accuracy(run_file(report.path, data.x_test))}"
        )


if __name__ == "__main__":
    main()
