"""TFLite and ONNX export of BN-folded Keras models, checked for parity.

`to_tflite` and `to_onnx` fold every BatchNormalization layer, convert, run the
file in its runtime (LiteRT, onnxruntime), compare it with the original Keras
model against the bound of `keras_bn.export.parity_bounds` (an int8 file: against
its simulation, by the exact gate of `keras_bn.quantization.gate`), and only then
move the file into place. `check_parity` measures any TFLite or ONNX file against a
Keras model; `load_runtime` runs and times one; `bn_ops_left` says how much of
BN an exported graph kept.

Everything other modules of keras_bn use from this package is listed here.
"""

# Export converts TensorFlow graphs: on another backend, a clear ImportError.
import keras_bn.backends.tensorflow_required  # noqa: F401
from keras_bn.export.files import EXPORT_FORMATS, export_files, export_path
from keras_bn.export.onnx_export import to_onnx
from keras_bn.export.op_counts import (
    BATCHNORM_OP_TYPES,
    ELEMENTWISE_OP_TYPES,
    bn_layers_left,
    bn_ops_left,
    op_histogram,
)
from keras_bn.export.parity import check_parity
from keras_bn.export.parity_bounds import parity_tolerance
from keras_bn.export.prepare import as_inputs, input_spec
from keras_bn.export.reference_models import without_batchnorm
from keras_bn.export.report import (
    ExportReport,
    ParityError,
    ParityReport,
    fold_report_to_dict,
)
from keras_bn.export.runtimes import Runtime, detect_format, load_runtime, run_file
from keras_bn.export.tflite import to_tflite

__all__ = [
    "BATCHNORM_OP_TYPES",
    "ELEMENTWISE_OP_TYPES",
    "EXPORT_FORMATS",
    "ExportReport",
    "ParityError",
    "ParityReport",
    "Runtime",
    "as_inputs",
    "bn_layers_left",
    "bn_ops_left",
    "check_parity",
    "detect_format",
    "export_files",
    "export_path",
    "fold_report_to_dict",
    "input_spec",
    "load_runtime",
    "op_histogram",
    "parity_tolerance",
    "run_file",
    "to_onnx",
    "to_tflite",
    "without_batchnorm",
]
