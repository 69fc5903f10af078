"""TFLite and ONNX export of BN-folded Keras models, checked for parity.

`to_tflite` and `to_onnx` fold every BatchNormalization layer, convert, run the
file in its runtime (LiteRT, onnxruntime), compare it with the original Keras
model against the bound of `keras_bn.export.error_model`, and only then move the
file into place. `check_parity` measures any TFLite or ONNX file against a
Keras model.
"""

from keras_bn.export.error_model import parity_tolerance
from keras_bn.export.onnx_export import to_onnx
from keras_bn.export.parity import check_parity, op_histogram
from keras_bn.export.reference_models import without_batchnorm
from keras_bn.export.report import ExportReport, ParityError, ParityReport
from keras_bn.export.tflite import to_tflite

__all__ = [
    "ExportReport",
    "ParityError",
    "ParityReport",
    "check_parity",
    "op_histogram",
    "parity_tolerance",
    "to_onnx",
    "to_tflite",
    "without_batchnorm",
]
