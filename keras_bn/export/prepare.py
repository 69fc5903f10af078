"""Checks a Keras model can be exported and folds its BatchNormalization layers.

Both converters need one float32 input whose every dimension but the batch is
known: the TFLite converter bakes shapes into the flatbuffer and tf2onnx needs
them to pick kernels. These checks run before anything is converted so that a
bad model fails in milliseconds with a message naming the problem, not minutes
later inside a converter.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import tree

from keras_bn.defaults import DEFAULT_INPUT_BATCH, DEFAULT_INPUT_SEED
from keras_bn.folding.fold import recalibrate_and_fold
from keras_bn.folding.verification import random_batch
from keras_bn.keras_adapter import iter_layers
from keras_bn.keras_objects import check_model
from keras_bn.population import with_population_statistics
from keras_bn.quantization import is_quantized_model

# int8 parity is judged on samples the calibration did not see
# (`keras_bn.export.parity_bounds`); without a separate evaluation set, one
# sample in `HELD_OUT_EVERY` of the data is held out for it.
HELD_OUT_EVERY = 5


def input_spec(model: keras.Model) -> tf.TensorSpec:
    """The `tf.TensorSpec` (batch dimension free) of `model`'s single input.

    Raises:
        TypeError: If `model` is not a built `keras.Model`.
        ValueError: If the model has several inputs or outputs, a non-float32
            input or compute dtype, or an unknown non-batch input dimension.
    """
    check_model(model)
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError) as e:
        raise ValueError(
            "`model` must be built with known inputs (a Functional or Sequential "
            f"model with an Input). Received: model={model.name!r}"
        ) from e
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            "Export supports models with exactly one input and one output. "
            f"Received: {len(inputs)} inputs and {len(outputs)} outputs "
            f"for model={model.name!r}"
        )
    shape, dtype = tuple(inputs[0].shape), inputs[0].dtype
    if dtype != "float32":
        raise ValueError(
            "Export supports float32 inputs (quantize with `quantize=` instead). "
            f"Received: input dtype={dtype} for model={model.name!r}"
        )
    # An InputLayer computes nothing (the input's dtype is checked above);
    # loaded while the global policy is mixed, it takes that policy's name.
    policies = {
        layer.dtype_policy.name
        for layer in iter_layers(model)
        if not isinstance(layer, keras.layers.InputLayer)
    }
    if policies != {"float32"}:
        raise ValueError(
            "Export supports models computed in float32; a mixed-precision model "
            "would be compared against its own rounding. Rebuild it under the "
            "'float32' dtype policy and copy the weights. Received: dtype "
            f"policies={sorted(policies)} for model={model.name!r}"
        )
    if len(shape) < 1 or any(dim is None for dim in shape[1:]):
        raise ValueError(
            "Every input dimension except the batch must be known for export. "
            f"Received: input shape={shape} for model={model.name!r}"
        )
    return tf.TensorSpec((None, *shape[1:]), tf.float32, name="input")


@dataclasses.dataclass(frozen=True)
class PreparedModel:
    """What every file of one export is converted from and checked against.

    Attributes:
        reference: The model the files must reproduce: the caller's, or its
            copy with re-estimated population statistics.
        exported: The model to convert: `reference` folded, or `reference`
            itself with `fold=False`.
        fold_report: The `FoldReport`, `None` with `fold=False`.
        population: The `PopulationReport` of the re-estimate, or `None`.
    """

    reference: keras.Model
    exported: keras.Model
    fold_report: Any = None
    population: Any = None


def prepare_model(
    model: keras.Model, *, fold: bool, population_data: Any = None
) -> PreparedModel:
    """Recalibrates (with `population_data`) and folds (with `fold`) once.

    Every format of an `export_files` call is converted from the same result,
    so the statistics are estimated and the model folded once per call. The
    caller's model is never modified.

    Raises:
        TypeError: `fold` is not a bool, or the errors of `fold_batchnorm`.
    """
    if not isinstance(fold, bool):
        raise TypeError(f"`fold` must be True or False. Received: fold={fold!r}")
    if is_quantized_model(model):
        if population_data is not None:
            raise ValueError(
                f"Model '{model.name}' is quantization-aware: its BN statistics "
                "are folded into its int8 simulation; re-estimate them with "
                "`keras_bn.population_statistics` before freezing, not at export. "
                "Received: population_data"
            )
        # Its inference path holds no BN: the model is its own file's simulation.
        return PreparedModel(model, model)
    if fold:
        reference, folded, report = recalibrate_and_fold(model, population_data)
        return PreparedModel(reference, folded, report, report.population)
    population = None
    if population_data is not None:
        model, population = with_population_statistics(
            model, population_data, verbose=0
        )
    return PreparedModel(model, model, None, population)


def as_inputs(model: keras.Model, inputs) -> np.ndarray:
    """`inputs` as float32, checked against `model`'s input shape.

    Args:
        model: The model the inputs are for (see `input_spec`).
        inputs: A floating-point array, batch first.

    Returns:
        The inputs as a float32 array.

    Raises:
        ValueError: If `inputs` is not floating point, is empty or does not
            match the model's input shape.
    """
    spec = input_spec(model)
    x = np.asarray(inputs)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"`inputs` must be floating point. Received: inputs of dtype {x.dtype}"
        )
    if tuple(x.shape[1:]) != tuple(spec.shape[1:]) or x.shape[0] == 0:
        raise ValueError(
            f"`inputs` must have shape (batch, {', '.join(map(str, spec.shape[1:]))}) "
            f"with batch ≥ 1. Received: inputs of shape {x.shape}"
        )
    return x.astype(np.float32)


def default_inputs(
    model: keras.Model,
    batch: int = DEFAULT_INPUT_BATCH,
    seed: int = DEFAULT_INPUT_SEED,
) -> np.ndarray:
    """Seeded standard-normal float32 inputs of `model`'s input shape.

    The one default-input rule (`keras_bn.folding.verification.random_batch`),
    for a model `input_spec` accepts.
    """
    input_spec(model)
    return tree.flatten(random_batch(model, seed=seed, batch=batch))[0]


def parity_inputs(model: keras.Model, inputs=None) -> np.ndarray:
    """`as_inputs(model, inputs)`, or `default_inputs(model)` for `None`."""
    return default_inputs(model) if inputs is None else as_inputs(model, inputs)


@dataclasses.dataclass(frozen=True)
class Int8Data:
    """Which samples calibrate an int8 file and which judge its parity.

    Attributes:
        calibration: Float32 inputs whose ranges the converter records.
        held_out: Float32 inputs the calibration never saw, for the parity check.
    """

    calibration: np.ndarray
    held_out: np.ndarray


def split_int8_data(model: keras.Model, data, inputs=None) -> Int8Data:
    """The one rule for which samples calibrate int8 and which judge it.

    An int8 file is exact on the ranges it was calibrated on and saturates
    beyond them, so its parity means something only on data calibration did
    not see (`keras_bn.export.parity_bounds`, "int8"). `to_tflite` and
    `check_parity` both call this, so an export and a later check of the same
    file on the same data judge the same samples and give one verdict.

    Args:
        model: The model the data is for (see `input_spec`).
        data: Typical inputs, batch first (`representative_data`, `x_train`).
        inputs: Evaluation inputs (`x_test`), or `None`. Inputs that are the
            same array as `data` (an `.npy` read once for both) count as
            `None`.

    Returns:
        An `Int8Data`: `data` calibrates and `inputs` judge; without separate
        inputs every fifth sample of `data` (counting from the second) is held
        out and the rest calibrates.

    Raises:
        ValueError: `data` or `inputs` is misshapen, or `data` has a single
            sample and there are no separate inputs to judge on.
    """
    separate = inputs is not None and not np.may_share_memory(
        np.asarray(data), np.asarray(inputs)
    )
    x = as_inputs(model, data)
    if separate:
        return Int8Data(calibration=x, held_out=as_inputs(model, inputs))
    if len(x) < 2:
        raise ValueError(
            "int8 parity is judged on samples the calibration did not see: give "
            "at least 2 samples (one is held out) or separate `inputs`. "
            f"Received: data of shape {x.shape} and inputs=None"
        )
    held = np.zeros(len(x), dtype=bool)
    held[1::HELD_OUT_EVERY] = True
    return Int8Data(calibration=x[~held], held_out=x[held])
