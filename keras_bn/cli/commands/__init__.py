"""One module per `keras-bn` subcommand; their help lines and examples.

Each module has `add_arguments(parser)` and `run(args) -> int` (the exit
status); the files a command reads are declared with
`keras_bn.cli.arguments.add_input_file`, and
`keras_bn.cli.loading.check_input_files` checks them before `run`. None
imports TensorFlow at import. What `--help` says of each command is here, in
one table, so that the top-level help's examples are the commands' own.
"""

from keras_bn.defaults import BENCHMARKS

#: Each command's one-line help, in the order `keras-bn --help` lists them.
HELP = {
    "demo": (
        "train a small CNN with keras_bn.BatchNormalization under XLA, fold it, "
        "export TFLite (float32, int8) and ONNX, and compare them all on held-out "
        "data; also its accuracy with population statistics"
    ),
    "fold": (
        "fold every BatchNormalization of a Keras model into its neighbour "
        "and verify the result"
    ),
    "recalibrate": (
        "re-estimate every BatchNormalization's statistics on data "
        "(population statistics, Ioffe & Szegedy's Algorithm 2)"
    ),
    "qat": (
        "fine-tune a trained model with its BNs folded and int8 rounding simulated "
        "(quantization-aware training); export the result with `keras-bn export`"
    ),
    "export": (
        "fold and export a Keras model to TFLite and/or ONNX; each file is "
        "parity-checked before it is written"
    ),
    "check": "run a TFLite or ONNX file and compare it with a Keras model",
    "bench": "run a benchmark; the remaining arguments go to it",
}
COMMANDS = tuple(HELP)

#: Each command's example command lines; the first is also the top-level help's.
EXAMPLES = {
    "demo": (
        "keras-bn demo --epochs 8 --out export/out",
        "keras-bn demo --data mnist.npz   # x_train, y_train, x_test, y_test",
    ),
    "fold": (
        "keras-bn fold model.keras -o model_folded.keras",
        "keras-bn fold model.keras --population-data digits.npz",
    ),
    "recalibrate": (
        "keras-bn recalibrate model.keras --data digits.npz -o model_recalibrated.keras",
        "keras-bn recalibrate model.keras --data shifted.npy --dry-run   # report only",
    ),
    "qat": (
        "keras-bn qat model.keras --data digits.npz --epochs 3 -o model_qat.keras",
        "keras-bn qat model.keras --data digits.npz --weights per_tensor --json",
        "keras-bn export model_qat.keras --data digits.npz   # int8 TFLite + QDQ ONNX",
    ),
    "export": (
        "keras-bn export model.keras --format all -o export/out",
        "keras-bn export model.keras --format tflite --quantize int8 --data digits.npz",
        "keras-bn export model.keras --population-data digits.npz",
    ),
    "check": (
        "keras-bn check model.keras export/out/model.onnx",
        "keras-bn check model.keras model_int8.tflite --quantize int8 --data digits.npz",
    ),
    "bench": (
        *(f"keras-bn bench {name:<7} # {what}" for name, what in BENCHMARKS.items()),
        "keras-bn bench fold --help",
    ),
}


def examples(*command_lines: str) -> str:
    """An epilog: `command_lines` under `examples:`."""
    return "examples:\n" + "\n".join(f"  {line}" for line in command_lines)
