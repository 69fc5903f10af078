"""Importing this module raises a clear `ImportError` unless Keras runs on TensorFlow.

`keras_bn.export` imports it first, so that `keras_bn.export.to_tflite` and
`to_onnx` on JAX name the command that works (`keras-bn export`) instead of
failing inside a converter.
"""

from keras_bn.backends import require_tensorflow

require_tensorflow("keras_bn.export (to_tflite, to_onnx)")
