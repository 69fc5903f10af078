"""`fold_batchnorm`: a new inference model with every Batch Normalization folded."""

from __future__ import annotations

import keras

from keras_bn.folding.graph import check_foldable_model, fold_graph
from keras_bn.folding.report import FoldReport
from keras_bn.folding.verification import (
    check_tolerances,
    compare_models,
    random_batch,
)
from keras_bn.population import with_population_statistics
from keras_bn.rounding_bounds import rounding_tolerance

__all__ = ["fold_batchnorm", "recalibrate_and_fold"]


def fold_batchnorm(
    model: keras.Model,
    *,
    verify: bool = True,
    rtol: float | None = None,
    atol: float | None = None,
    data=None,
    population_data=None,
    return_report: bool = False,
) -> keras.Model | tuple[keras.Model, FoldReport]:
    """Returns a copy of `model` for inference with Batch Normalization folded.

    In inference a BN layer is a fixed per-channel affine map
    `x * gamma / sqrt(moving_variance + epsilon) + (beta - moving_mean * ...)`.
    Next to a linear layer that map can be merged into the layer's kernel and
    bias, so the network does the same work without the BN's multiply and add
    (and without the memory traffic of a separate op). This function does
    that for every `keras.layers.BatchNormalization` and
    `keras_bn.BatchNormalization` in the model, nested models included:

    - `Linear -> BN` for `Dense`, `Conv1D/2D/3D`, `DepthwiseConv1D/2D`
      (any `depth_multiplier`), `SeparableConv1D/2D` (into the pointwise
      kernel) and `Conv1D/2D/3DTranspose`, with or without bias,
      `channels_last` or `channels_first`;
    - `BN -> Linear` for `Dense` and unpadded (`padding="valid"`)
      convolutions, when the BN cannot fold into the layer before it.

    A BN that cannot be folded (its neighbour has an activation, is shared,
    feeds other layers, uses zero padding, or is not linear at all, e.g. an
    `Add`) becomes one `ChannelAffine` layer computing the same map, so the
    result holds no Batch Normalization. The report says which BN went
    where and why the others did not. Weights are computed in float64 and
    cast to each variable's dtype. The caller's model is never modified; the
    new model is not compiled.

    Args:
        model: a built Functional or Sequential `keras.Model`.
        verify: run both models in inference mode on `data` and raise if the
            outputs differ by more than `atol + rtol * max|output|`.
        rtol: tolerance relative to each output's largest magnitude;
            `None` (default) takes `keras_bn.rounding_bounds.rounding_tolerance`
            of `model`, which follows its dtype policies (float32,
            `mixed_float16`, `mixed_bfloat16`): a correct fold of a
            mixed-precision model differs by its compute dtype's rounding.
        atol: absolute tolerance; `None` (default) is 0, the bound being
            relative to the output's scale.
        data: the verification batch, in the structure `model` takes;
            `None` draws 8 seeded standard-normal samples
            (`keras_bn.folding.verification.random_batch`).
        population_data: if given, batches (as `keras_bn.population_statistics`
            takes them: an array, a `tf.data.Dataset` or an iterable) on which
            the population statistics of Algorithm 2 are re-estimated on a copy
            of `model` before folding, so the folded model carries them instead
            of the moving averages. Verification then compares against that
            recalibrated copy. The caller's model is untouched either way.
        return_report: also return a `FoldReport`.

    Returns:
        The folded `keras.Model` (a `keras.Sequential` for a Sequential
        input), or `(model, report)` when `return_report=True`.

    Raises:
        TypeError: `model` is not a Keras model, is a subclassed model whose
            graph cannot be traced, or holds a layer that cannot be rebuilt
            from its config.
        ValueError: `model` was never built, or `rtol`/`atol` is negative.
        FoldVerificationError: (a `ValueError`) `verify=True` and the folded
            model differs from the original beyond tolerance.

    Example:

    ```python
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(16, 3, use_bias=False)(inputs)
    x = keras_bn.BatchNormalization()(x)
    outputs = keras.layers.ReLU()(x)
    model = keras.Model(inputs, outputs)
    folded, report = fold_batchnorm(model, return_report=True)
    print(report)  # batch_normalization: folded after 'conv2d'
    ```
    """
    _, folded, report = recalibrate_and_fold(
        model,
        population_data,
        verify=verify,
        rtol=rtol,
        atol=atol,
        data=data,
    )
    return (folded, report) if return_report else folded


def recalibrate_and_fold(
    model: keras.Model,
    population_data=None,
    *,
    verify: bool = True,
    rtol: float | None = None,
    atol: float | None = None,
    data=None,
) -> tuple[keras.Model, keras.Model, FoldReport]:
    """`fold_batchnorm`'s steps, also returning the model the fold reproduces.

    The one "recalibrate, then fold" sequence: re-estimate the population
    statistics on a copy (with `population_data`), fold that, verify the
    fold against it. An exporter needs the recalibrated copy too, as the
    reference its files must match.

    Args:
        model: as `fold_batchnorm`'s.
        population_data: as `fold_batchnorm`'s; `None` folds `model` as it is.
        verify: as `fold_batchnorm`'s.
        rtol: as `fold_batchnorm`'s.
        atol: as `fold_batchnorm`'s.
        data: as `fold_batchnorm`'s.

    Returns:
        `(reference, folded, report)`: `model`, or its recalibrated copy; the
        folded model; the `FoldReport` (with `population` set when
        recalibrated).

    Raises:
        TypeError, ValueError, FoldVerificationError: as `fold_batchnorm`.
    """
    check_foldable_model(model)
    rtol = rounding_tolerance(model) if rtol is None else rtol
    atol = 0.0 if atol is None else atol
    check_tolerances(rtol=rtol, atol=atol)
    population = None
    if population_data is not None:
        model, population = with_population_statistics(
            model, population_data, verbose=0
        )
    folded, entries = fold_graph(model)
    report = FoldReport(entries=entries, population=population)
    if verify:
        batch = random_batch(model) if data is None else data
        report.max_error = compare_models(model, folded, batch, rtol=rtol, atol=atol)
    return model, folded, report
