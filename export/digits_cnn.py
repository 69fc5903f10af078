"""Train the digits CNN, fold its BatchNormalization layers, export it.

Run from the repository root:

    python export/digits_cnn.py

Trains a small CNN on scikit-learn's 8×8 handwritten digits (bundled, no
download), then writes to export/out/:

- digits_cnn.tflite       float32, BN folded
- digits_cnn_int8.tflite  full-integer int8, calibrated on training images
- digits_cnn.onnx         float32, BN folded

and prints each report, plus the held-out accuracy of the float model and of
the int8 file.
"""

from pathlib import Path

import keras
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from keras_bn.export import run_file, to_onnx, to_tflite

OUT = Path(__file__).resolve().parent / "out"


def digits_cnn() -> keras.Model:
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Conv2D(16, 3, padding="same", use_bias=False),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.Conv2D(32, 3, padding="same", use_bias=False),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(10, activation="softmax"),
        ],
        name="digits_cnn",
    )


def main() -> None:
    OUT.mkdir(exist_ok=True)
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.2, random_state=0, stratify=digits.target
    )
    keras.utils.set_random_seed(0)
    model = digits_cnn()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=12, batch_size=32, verbose=0)

    reports = [
        to_tflite(model, OUT / "digits_cnn.tflite", inputs=x_test),
        to_tflite(
            model,
            OUT / "digits_cnn_int8.tflite",
            quantize="int8",
            representative_data=x_train,
        ),
        to_onnx(model, OUT / "digits_cnn.onnx", inputs=x_test),
    ]
    for report in reports:
        print(report.summary())
    print(reports[0].fold_report)

    float_accuracy = np.mean(model.predict(x_test, verbose=0).argmax(1) == y_test)
    int8_accuracy = np.mean(run_file(reports[1].path, x_test).argmax(1) == y_test)
    print(
        f"held-out accuracy: float {float_accuracy:.2%}, int8 {int8_accuracy:.2%} "
        f"({len(y_test)} images)"
    )


if __name__ == "__main__":
    main()
