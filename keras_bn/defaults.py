"""Every default and every set of choices, in one TensorFlow-free module.

The library and the `keras-bn` command line both import these values: the
command line needs them for its help texts and its usage errors before (and
without) importing TensorFlow, and the library validates its arguments
against the same tuples, so the two cannot drift apart.
"""

from __future__ import annotations

__all__ = [
    "BENCHMARKS",
    "DEFAULT_INPUT_BATCH",
    "DEFAULT_INPUT_SEED",
    "DEFAULT_OPSET",
    "DEMO_EPOCHS",
    "DEMO_OUT",
    "EXIT_BAD_INPUT",
    "EXIT_FILE_SYSTEM",
    "EXIT_HANGUP",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PARITY",
    "EXIT_STATUSES",
    "EXIT_STDOUT_CLOSED",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "EXPORT_FORMATS",
    "FORMAT_CHOICES",
    "MAX_OPSET",
    "MIN_OPSET",
    "QUANTIZE_CHOICES",
    "QUANTIZE_MODES",
    "STATUS",
    "TENSORFLOW_ENVIRONMENT",
    "WEIGHT_GRANULARITIES",
]

# ONNX: the opset written by default, and the range accepted. tf2onnx 1.17
# knows opsets up to 18 (`tf2onnx.constants.OPSET_TO_IR_VERSION`); below 13
# several TF ops used by Keras 3 layers have no conversion.
DEFAULT_OPSET = 17
MIN_OPSET = 13
MAX_OPSET = 18

# TFLite quantization: `None` is float32.
QUANTIZE_MODES = (None, "float16", "int8")
QUANTIZE_CHOICES = tuple(mode for mode in QUANTIZE_MODES if mode is not None)
# Quantization-aware training: int8 weight scales per output channel (TFLite's
# default for convolutions) or one per kernel.
WEIGHT_GRANULARITIES = ("per_channel", "per_tensor")

# The file formats `export_files` writes, and the command line's `--format`.
EXPORT_FORMATS = ("tflite", "onnx")
FORMAT_CHOICES = (*EXPORT_FORMATS, "all")

# The inputs drawn when none are given (fold verification, parity checks):
# seeded standard normal, this many samples. Eight samples catch a fold that
# mixes examples and give the maximum over elements a few samples to find
# the tails, at a negligible cost.
DEFAULT_INPUT_BATCH = 8
DEFAULT_INPUT_SEED = 0

# Set before TensorFlow loads, unless the user set them. TensorFlow's CPU
# kernels run NCHW (`channels_first`) convolutions only through oneDNN, which
# TF 2.21 turns on by default only on CPUs with AVX-512: elsewhere (an AMD EPYC
# without it) a `channels_first` model fails with "The Conv2D op currently only
# supports the NHWC tensor format on the CPU". The test suite sets the same.
TENSORFLOW_ENVIRONMENT = {"TF_ENABLE_ONEDNN_OPTS": "1"}

# `keras-bn demo` / `keras_bn.demo.run_demo`.
DEMO_EPOCHS = 8
DEMO_OUT = "export/out"

# Exit statuses of `keras-bn`, with the `status` field of the `--json`
# document and what each means (docs/cli.md shows this table). A signal that
# ends a command exits 128 + its number, as a shell reports a process killed by
# it, after the same clean-up as Ctrl-C.
EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_USAGE = 2
EXIT_PARITY = 3
EXIT_FILE_SYSTEM = 4
EXIT_INTERNAL = 70  # EX_SOFTWARE of BSD's sysexits.h
EXIT_HANGUP = 129  # 128 + SIGHUP
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_STDOUT_CLOSED = 141  # 128 + SIGPIPE
EXIT_TERMINATED = 143  # 128 + SIGTERM
EXIT_STATUSES = (
    (EXIT_OK, "ok", "success"),
    (
        EXIT_BAD_INPUT,
        "error",
        "bad input: a missing file, a file that is not a Keras model, a model "
        "that cannot be folded or exported, bad data, a model TensorFlow cannot "
        "run on this machine",
    ),
    (EXIT_USAGE, "usage_error", "usage error: an unknown flag or a bad value"),
    (
        EXIT_PARITY,
        "parity_failure",
        "parity failure: a folded or exported model does not compute what the "
        "Keras model computes",
    ),
    (
        EXIT_FILE_SYSTEM,
        "file_system_error",
        "file system error: permission denied, no space left, a file where a "
        "directory should be; the message names the path as it was given",
    ),
    (
        EXIT_INTERNAL,
        "internal_error",
        "internal error: a bug in keras_bn or a library it calls; the traceback "
        "follows on stderr",
    ),
    (
        EXIT_HANGUP,
        "terminated",
        "hung up (SIGHUP): cleaned up as for Ctrl-C",
    ),
    (EXIT_INTERRUPTED, "interrupted", "interrupted (Ctrl-C, SIGINT)"),
    (
        EXIT_STDOUT_CLOSED,
        "stdout_closed",
        "stdout closed before the output was printed (piped into `head`): files "
        "already written are kept, nothing more is printed",
    ),
    (
        EXIT_TERMINATED,
        "terminated",
        "terminated (SIGTERM, as `timeout`, `docker stop` or a job scheduler "
        "send it): cleaned up as for Ctrl-C",
    ),
)
STATUS = {code: status for code, status, _ in EXIT_STATUSES}

# `keras-bn bench NAME`: each benchmark's one-line description.
BENCHMARKS = {
    "layer": "one BN training step: keras_bn vs Keras' layer vs TF's fused kernel",
    "train": "a small ResNet-style CNN's training step with four kinds of BN",
    "fold": "ResNet50 fold time; unfolded/folded/BN-free inference latency",
    "export": "TFLite and onnxruntime latency and size, unfolded/folded/BN-free",
    "sync": "synchronized BN on two replicas: keras_bn vs Keras' synchronized=True",
    "memory": "peak memory of `keras-bn export --format all` vs loading and one batch",
    "qat": "digits MobileNet: float, PTQ and QAT int8 accuracy on TFLite/ONNX files",
}
