"""`population_statistics` and `with_population_statistics`: the public entry points."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_bn.conversion import clone_with_weights
from keras_bn.population.batches import Batches, num_inputs, relaxed_signature
from keras_bn.population.estimate import Accumulator, assign_estimate
from keras_bn.population.recorder import Recorder
from keras_bn.population.report import LayerPopulation, PopulationReport
from keras_bn.population.validation import (
    check_arguments,
    check_batch,
    check_bool,
    check_collected,
    check_verbose,
)


def progress_bar(verbose: Any, total: int | None) -> keras.utils.Progbar:
    """A `keras.utils.Progbar` over batches, as `model.fit` draws one."""
    return keras.utils.Progbar(
        total,
        verbose=check_verbose(verbose),
        stateful_metrics=["skipped"],
        unit_name="batch",
    )


def collect(
    model: keras.Model,
    layers: list[keras.layers.Layer],
    batches: Batches,
    unbiased: bool,
    progbar: keras.utils.Progbar,
) -> tuple[Accumulator, int, int]:
    """Runs `model` over `batches` recording every BN; `(accumulator, used, skipped)`.

    A batch with NaN/Inf anywhere it matters is skipped and counted; every
    layer is restored when the pass ends, whatever happens.
    """
    accumulator = Accumulator(layers, unbiased)
    used = skipped = 0
    recorder = Recorder(layers, unbiased)
    step = signature = None
    with recorder.installed():
        for x in batches:
            if not all(np.shape(leaf)[0] for leaf in tf.nest.flatten(x)):
                continue  # an empty batch holds nothing (and breaks reshapes)
            check_batch(model, x)
            # One trace for every batch size (the batch axis is left open), and
            # once more for each axis whose size varies between batches.
            wider = relaxed_signature(signature, x)
            if wider is not signature:
                signature = wider
                step = tf.function(
                    recorder.step_function(model), input_signature=[signature]
                )
            input_finite, records = step(x)
            records = [
                [tuple(np.asarray(t) for t in call) for call in calls]
                for calls in records
            ]
            if accumulator.batch_is_valid(input_finite, records):
                accumulator.add(records)
                used += 1
            else:
                skipped += 1
            progbar.update(
                used + skipped, values=[("skipped", skipped)] if skipped else None
            )
    return accumulator, used, skipped


def population_statistics(
    model: keras.Model,
    data: Any,
    *,
    steps: int | None = None,
    batch_size: int | None = None,
    unbiased: bool = True,
    apply: bool = True,
    verbose: str | int = "auto",
) -> PopulationReport:
    """Re-estimates every BN layer's moving statistics over `data` (Algorithm 2).

    Keras infers with exponential moving averages gathered while the weights
    were changing; they lag behind the final network, go stale after
    fine-tuning, pruning or quantization, and do not match data from a shifted
    domain. This runs the model over `data` with every weight fixed, collects
    the batch mean and variance each BN computes in training mode (every other
    layer in inference mode, so dropout is off), and sets the moving mean to
    their count-weighted mean and the moving variance to that of the
    m/(m−1)-corrected batch variances (docs/population.md). Nothing else
    changes: no optimizer step, no other layer's state.

    All or nothing: statistics accumulate in float64 and are assigned only after
    the last batch. A batch with NaN/Inf (in the input, in a BN's input or in
    its statistics) is skipped and counted; if every batch is bad, or anything
    raises, the model is left exactly as it was.

    Args:
        model: a built Keras model with `keras_bn.BatchNormalization` and/or
            `keras.layers.BatchNormalization` layers (nested models and shared
            layers included).
        data: as `model.fit` takes `x`: an array (NumPy, a tensor, or any
            array-like), a list or tuple of them (one per input) or a dict
            keyed by input name, a `tf.data.Dataset`, a
            `keras.utils.PyDataset`, or an iterable of batches. Labels in
            `(x, y)` or `(x, y, w)` elements are ignored. Batches may differ
            in any size the model leaves open (sequence lengths for
            `Input((None, 3))`).
        steps: use at most this many batches (all of them if None).
        batch_size: batch size for array data (default 32, as `fit`); must be
            None for datasets and generators, which batch themselves.
        unbiased: correct the variance by m/(m−1) (Algorithm 2); False keeps
            the mean of the biased batch variances, which is what Keras' own
            moving variance tracks.
        apply: assign the estimate to the model; False only reports.
        verbose: `"auto"` (= 1), 0 (silent), 1 (progress bar) or 2 (one line).

    Returns:
        A `PopulationReport`: per layer the values seen and how far the moving
        statistics were from the estimate (mean shift in σ, variance ratio).

    Raises:
        TypeError: `model` is not a Keras model, `data` is not batches, or
            it holds strings or Python objects for a numeric input.
        ValueError: the model has no BN layer or is not built, `data` is empty
            (or no value reaches a BN) or its batches do not fit the model, an
            argument is out of range, or every batch held NaN/Inf.

    Example:

    >>> report = keras_bn.population_statistics(model, x_train)  # doctest: +SKIP
    >>> print(report.summary())  # doctest: +SKIP
    """
    layers = check_arguments(model, steps, batch_size, unbiased)
    check_bool("apply", apply)
    batches = Batches(data, batch_size, steps, num_inputs(model))
    progbar = progress_bar(verbose, batches.total)
    accumulator, used, skipped = collect(model, layers, batches, unbiased, progbar)
    check_collected(model, data, steps, accumulator.count, used, skipped)
    entries = [
        LayerPopulation.of_layer(layer, *accumulator.estimate(i), accumulator.count[i])
        for i, layer in enumerate(layers)
    ]
    report = PopulationReport(entries, used, skipped, unbiased, apply)
    if apply:
        assign_estimate(layers, report)
    return report


def with_population_statistics(
    model: keras.Model, data: Any, **kwargs
) -> tuple[keras.Model, PopulationReport]:
    """A copy of `model` with population statistics; `model` itself is untouched.

    The step the folding and export pipeline takes before folding: the copy
    has the same architecture and weights (`keras_bn.conversion.clone_with_weights`),
    then `population_statistics(copy, data, **kwargs)` is applied to it.

    Args:
        model: a Sequential or Functional Keras model with BN layers.
        data: batches as `population_statistics` takes them.
        **kwargs: `steps`, `batch_size`, `unbiased`, `verbose`.

    Returns:
        `(copy, report)`.

    Raises:
        TypeError: `apply` was passed (the copy is always updated) or the
            model cannot be copied; as `population_statistics` otherwise.

    Example:

    >>> recalibrated, report = with_population_statistics(model, x_train)  # doctest: +SKIP
    """
    if "apply" in kwargs:
        raise TypeError(
            "`with_population_statistics` always applies the estimate to its copy; "
            f"use `population_statistics(..., apply=False)` for a report only. "
            f"Received: apply={kwargs['apply']!r}"
        )
    check_arguments(
        model,
        kwargs.get("steps"),
        kwargs.get("batch_size"),
        kwargs.get("unbiased", True),
    )
    copy = clone_with_weights(model)
    return copy, population_statistics(copy, data, **kwargs)
