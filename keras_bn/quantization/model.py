"""`quantize_model`: a quantization-aware copy of a Keras model, and what to do with it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_bn.defaults import WEIGHT_GRANULARITIES
from keras_bn.folding.engine import rebuild
from keras_bn.folding.graph import GraphView
from keras_bn.folding.report import FoldReport
from keras_bn.keras_adapter import functional_graph, iter_layers
from keras_bn.quantization.activation_quantizer import ActivationQuantizer, calibrating
from keras_bn.quantization.blocks import QuantizedBlock
from keras_bn.quantization.graph import plan_quantization
from keras_bn.quantization.plans import BlockOptions
from keras_bn.quantization.quantizers import activation_scale

__all__ = [
    "calibrate_ranges",
    "check_tflite_int8",
    "sync_input_steps",
    "freeze_bn_statistics",
    "is_quantized_model",
    "quantize_model",
    "quantized_blocks",
]

DEFAULT_CALIBRATION_BATCH = 64


def quantize_model(
    model: keras.Model,
    *,
    weights: str = "per_channel",
    freeze_bn_after_steps: int | None = None,
    calibration_data: Any = None,
    range_momentum: float = 0.99,
    return_report: bool = False,
) -> keras.Model | tuple[keras.Model, FoldReport]:
    """A new model that trains with the int8 rounding its TFLite file will do.

    Every `Linear → BN` pair `fold_batchnorm` would fold becomes one
    `QuantizedBlock` (a following ReLU/ReLU6 included, as TFLite fuses it):
    its weights are the BN-folded kernel rounded to int8, and its BN keeps
    training on batch statistics, corrected to the moving ones (Jacob et al.
    2018), until frozen. A BN that cannot be folded becomes a quantized
    per-channel affine, reported with its reason. Activations are rounded
    where the TFLite file stores them in int8: the input, each block's output,
    additions, concatenations, average pooling, activations. In inference the
    model *is* the simulation of its int8 file: `keras_bn.export.to_tflite(...,
    quantize="int8")` needs no representative data, and its outputs match
    the model's to within one quantization step.

    The new model starts from `model`'s weights and moving statistics, so a
    float-trained model is fine-tuned from where it is (what other libraries
    call `prepare_qat`); `model` itself is never modified. With
    `calibration_data` and no training, the ranges are those of post-training
    quantization, and the model is the simulation of the post-training file.

    The new model computes in float32 even when `model` (or the global
    policy) is mixed precision: the simulation rounds onto int8 grids that
    float16 cannot hold, and its files are judged against it.

    Args:
        model: a built Functional or Sequential Keras model, channels_last.
        weights: `"per_channel"` (a scale per output channel, TFLite's
            default) or `"per_tensor"` (one scale per kernel).
        freeze_bn_after_steps: training steps after which every block uses
            its moving statistics and stops updating them; `None` (default)
            until `freeze_bn_statistics(model)` is called.
        calibration_data: inputs (an array, batch first, or an iterable of
            batches) whose min/max set the activation ranges to start from;
            `None` lets the first training batch set them.
        range_momentum: momentum of the activation ranges' moving average.
        return_report: also return a `FoldReport` of what became of each BN.

    Returns:
        The quantization-aware model (not compiled), or `(model, report)`.

    Raises:
        TypeError: `model` is not a Functional or Sequential model.
        ValueError: `weights` is unknown, a layer has no int8 simulation
            (the error names it), or nothing in the model can be quantized.

    Example:

    >>> qat = quantize_model(model, calibration_data=x_train[:256])  # doctest: +SKIP
    >>> qat.compile("adam", "sparse_categorical_crossentropy")  # doctest: +SKIP
    >>> qat.fit(x_train, y_train, epochs=2)  # doctest: +SKIP
    >>> keras_bn.export.to_tflite(qat, "model.tflite", quantize="int8")  # doctest: +SKIP
    """
    if weights not in WEIGHT_GRANULARITIES:
        raise ValueError(
            f"`weights` must be one of {WEIGHT_GRANULARITIES}. Received: weights={weights!r}"
        )
    options = BlockOptions(weights, freeze_bn_after_steps, float(range_momentum))
    planned = plan_quantization(model, options)
    graph = functional_graph(model)
    steps = [(call, planned.plans[id(call)]) for call in planned.view.calls]
    with _simulation_global_policy():
        quantized = rebuild(model, graph, steps)
    if calibration_data is not None:
        calibrate_ranges(quantized, calibration_data)
    else:
        sync_input_steps(quantized)
    report = FoldReport(entries=planned.entries)
    return (quantized, report) if return_report else quantized


@contextlib.contextmanager
def _simulation_global_policy() -> Iterator[None]:
    # Under a mixed global policy, the layers Keras makes with no dtype of
    # their own (the new inputs, the model) compute in float32 too.
    previous = keras.mixed_precision.global_policy()
    if previous.compute_dtype == previous.variable_dtype:
        yield
        return
    keras.mixed_precision.set_global_policy(previous.variable_dtype)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def producing_quantizer(view: GraphView, tensor) -> ActivationQuantizer | None:
    """The quantizer whose grid `tensor` lies on, through layers that only move values."""
    while (call := view.producer(tensor)) is not None:
        layer = call.layer
        if isinstance(layer, ActivationQuantizer):
            return layer
        if isinstance(layer, QuantizedBlock):
            return layer.output_quantizer
        if len(call.input_tensors) != 1:
            return None
        tensor = call.input_tensors[0]
    return None


def quantized_blocks(model: keras.Model) -> list[QuantizedBlock]:
    """Every `QuantizedBlock` in `model`."""
    return [layer for layer in iter_layers(model) if isinstance(layer, QuantizedBlock)]


def is_quantized_model(model: keras.Model) -> bool:
    """Whether `model` came from `quantize_model` (holds activation quantizers)."""
    return any(isinstance(layer, ActivationQuantizer) for layer in iter_layers(model))


def check_tflite_int8(model: keras.Model) -> None:
    """Checks every block of a QAT model has an int8 TFLite kernel.

    TF 2.21's TFLite converter keeps `CONV_3D` and `CONV_3D_TRANSPOSE` in
    float32 (TFLite has no int8 kernel for them), so a model with a Conv3D
    or Conv3DTranspose has no fully integer TFLite file. Its QDQ ONNX file
    runs them in int8 (`keras_bn.export.to_onnx`).

    Raises:
        ValueError: naming the first such layer and its TFLite op.

    Example:

    >>> check_tflite_int8(quantize_model(conv3d_model))  # doctest: +SKIP
    ValueError: Layer 'conv3d' (Conv3D) has no int8 TFLite kernel: ...
    """
    for block in quantized_blocks(model):
        op = None if block.linear is None else block.rule.tflite_float_op(block.linear)
        if op is not None:
            raise ValueError(
                f"Layer '{block.name}' ({type(block.linear).__name__}) has no "
                f"int8 TFLite kernel: TFLite runs {op} in float32 only, so "
                f"model '{model.name}' has no fully integer TFLite file. Its "
                "QDQ ONNX file (to_onnx) runs it in int8."
            )


def freeze_bn_statistics(model: keras.Model, frozen: bool = True) -> int:
    """Makes every block of a QAT model train with its moving statistics from now on.

    Jacob et al. freeze the statistics for the last part of QAT, so that
    training sees exactly the inference map. Takes effect in a compiled
    training function too (it sets a variable).

    Args:
        model: a model from `quantize_model`.
        frozen: `False` unfreezes (blocks past `freeze_bn_after_steps` stay
            frozen).

    Returns:
        The number of blocks with a BN.
    """
    blocks = [b for b in quantized_blocks(model) if b.batchnorm is not None]
    for block in blocks:
        block.bn_frozen.assign(1.0 if frozen else 0.0)
    return len(blocks)


def calibrate_ranges(
    model: keras.Model, data: Any, batch_size: int = DEFAULT_CALIBRATION_BATCH
) -> int:
    """Sets every tracked activation range to its min/max over `data`.

    What TFLite's post-training calibration records, computed by the model in
    inference mode (BN with its moving statistics), batch by batch.

    Args:
        model: a model from `quantize_model`.
        data: an array of inputs (batch first) or an iterable of input batches.
        batch_size: batch size for an array.

    Returns:
        The number of samples seen.

    Raises:
        ValueError: `data` holds no sample.
    """
    if isinstance(data, np.ndarray) or tf.is_tensor(data):
        batches = (data[i : i + batch_size] for i in range(0, len(data), batch_size))
    else:
        batches = iter(data)
    seen = 0
    with calibrating(model):
        for batch in batches:
            model(batch, training=False)
            seen += len(batch)
    if seen == 0:
        raise ValueError(
            "`data` holds no sample to calibrate the ranges on. Received: 0 samples"
        )
    sync_input_steps(model)
    return seen


def sync_input_steps(model: keras.Model) -> int:
    """Gives every block the step of its input's int8 grid (for its bias grid).

    A block's bias is rounded in the file on the grid `s_in·s_w`; `s_in`
    belongs to the quantizer that rounds the block's input, which the block
    does not own. This reads it through the graph and stores it in the
    block's `input_step`. `quantize_model`, `calibrate_ranges`, `fine_tune`
    and the exporters call it; call it after your own `fit` before using
    the model as the simulation of its file.

    Returns:
        The number of blocks given a step.
    """
    view = GraphView(functional_graph(model))
    synced = 0
    for call in view.calls:
        block = call.layer
        if not isinstance(block, QuantizedBlock) or block.between_quantizer is not None:
            continue
        quantizer = producing_quantizer(view, call.input_tensors[0])
        if quantizer is not None:
            block.input_step.assign(
                activation_scale(
                    quantizer.range_min.numpy(), quantizer.range_max.numpy()
                )
            )
            synced += 1
    return synced
