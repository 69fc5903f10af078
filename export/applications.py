"""Fold a keras.applications model's BatchNormalization layers, export TFLite and ONNX.

Run from the repository root, with the model's name:

    python export/applications.py ResNet50
    python export/applications.py MobileNetV2 --size 96    # a smaller input
    python export/applications.py EfficientNetB0 --out /tmp/efficientnet

Writes `<out>/<name in lower case>.tflite` and `.onnx` (default out:
export/out/), each parity-checked before it is written
(`keras_bn.export.export_files`), and prints what each export checked.

The model is built with `weights=None` and seeded stand-in BN statistics
(`keras_bn.models.stand_in_application`), so nothing is downloaded. For the
trained network, build it with
`keras.applications.<Name>(weights="imagenet")` instead; the export is the
same.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from keras_bn.export import export_files
from keras_bn.models import application_names, stand_in_application

OUT = Path(__file__).resolve().parent / "out"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "name", choices=application_names(), metavar="NAME", help="e.g. ResNet50"
    )
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--out", type=Path, default=OUT, help="output directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    model = stand_in_application(args.name, (args.size, args.size, 3))
    args.out.mkdir(parents=True, exist_ok=True)
    reports = export_files(model, args.out, stem=args.name.lower())
    for report in reports:
        print(report.summary())
    print(reports[0].fold_report)


if __name__ == "__main__":
    main()
