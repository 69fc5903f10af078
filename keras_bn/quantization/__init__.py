"""Quantization-aware training with folded Batch Normalization, for int8 files.

- `quantize_model`: a copy of a model whose `Linear → BN (→ ReLU)` groups
  train as the int8 ops TFLite will run (BN folded, weights rounded, batch
  statistics corrected until frozen), activations rounded where the file
  rounds them. In inference it is the simulation of its int8 file.
- `freeze_bn_statistics`, `calibrate_ranges`: freeze the BN statistics;
  set activation ranges from data (post-training quantization).
- `fine_tune`: the fine-tuning policy `keras-bn qat` runs.
- `QuantizedBlock`, `ActivationQuantizer`: the two layers it is made of.

Inside, `quantizers` (rounding, TensorFlow) and `rules` (one class per
linear family) are used by `blocks`; `graph` plans the copy with folding's
matcher and `plans`' classes, and `keras_bn.folding.engine` rebuilds it.
"""

from keras_bn.quantization.activation_quantizer import ActivationQuantizer
from keras_bn.quantization.blocks import QuantizedBlock
from keras_bn.quantization.model import (
    calibrate_ranges,
    check_tflite_int8,
    freeze_bn_statistics,
    is_quantized_model,
    quantize_model,
    quantized_blocks,
    sync_input_steps,
)
from keras_bn.quantization.training import QatResult, fine_tune

__all__ = [
    "ActivationQuantizer",
    "QuantizedBlock",
    "QatResult",
    "calibrate_ranges",
    "check_tflite_int8",
    "fine_tune",
    "freeze_bn_statistics",
    "is_quantized_model",
    "quantize_model",
    "quantized_blocks",
    "sync_input_steps",
]
