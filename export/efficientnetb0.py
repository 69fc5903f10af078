"""Fold EfficientNetB0's BatchNormalization layers and export it to TFLite and ONNX.

Run from the repository root:

    python export/efficientnetb0.py

Writes export/out/efficientnetb0.tflite and export/out/efficientnetb0.onnx and prints what
each export checked. Replace `weights=None` by `weights="imagenet"` for the trained network
(and delete the stand-in statistics); the export is the same.
"""

from pathlib import Path

import keras

from keras_bn.export import to_onnx, to_tflite
from keras_bn.stand_in_statistics import set_stand_in_statistics

OUT = Path(__file__).resolve().parent / "out"


def main() -> None:
    OUT.mkdir(exist_ok=True)
    model = keras.applications.EfficientNetB0(weights=None, input_shape=(224, 224, 3))
    set_stand_in_statistics(model)  # delete with weights="imagenet"
    for report in (
        to_tflite(model, OUT / "efficientnetb0.tflite"),
        to_onnx(model, OUT / "efficientnetb0.onnx"),
    ):
        print(report.summary())
    print(report.fold_report)


if __name__ == "__main__":
    main()
