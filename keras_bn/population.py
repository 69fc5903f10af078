"""Population statistics for Batch Normalization (Ioffe & Szegedy 2015, Algorithm 2).

A BN network infers with per-channel statistics of its whole training
population, estimated *with the final weights* (Algorithm 2, steps 8–11):

    E[x]   = E_B[μ_B]
    Var[x] = m/(m−1) · E_B[σ²_B]

over mini-batches B of m values per channel, each BN seeing the training-mode
output of the BNs before it. Keras keeps exponential moving averages instead,
gathered while the weights were still moving: they lag (momentum 0.999 after a
short run), go stale after pruning, quantization or fine-tuning, and are wrong
under a domain shift (AdaBN, Li et al. 2016). `population_statistics`
re-estimates them.

How. Each BN layer's `call` is wrapped for the duration of the estimate: it
runs in training mode with `momentum=0` on a zeroed moving mean and variance,
so the layer's own statistics code (masks, ghost batches, the unbiased
variance of `keras_bn.BatchNormalization`) writes the batch mean and variance
into its moving variables, and the wrapper reads them back. Every other layer
runs in inference mode (dropout off). One compiled forward pass gives every
layer's batch statistics, including each call of a shared layer.

Accumulation is in float64 on the host. Batch b of layer l contributes its
count m_b (values per channel: the unmasked ones under a mask) as weight, so
equal batches give Algorithm 2 exactly and a short last batch or a sparse
mask counts for what it holds:

    mean     = Σ_b m_b μ_b / Σ_b m_b
    variance = Σ_b m_b c_b σ²_b / Σ_b m_b,   c_b = m_b/(m_b−1) if unbiased else 1

With ghost batches (`virtual_batch_size`) μ_b and σ²_b are what the layer puts
into its moving statistics, the average of its ghost batches' (each corrected
by its own m/(m−1)). Batch Renormalization layers run without their r/d
corrections in the pass: Algorithm 2 is defined on plain batch statistics.

All or nothing: every variable and attribute touched is restored when the pass
ends, whatever happens; the estimate is assigned only after the last batch. A
batch with NaN/Inf (in the model's input, in a BN's input or in its
statistics) is skipped for every layer and counted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterable, Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_bn.conversion import clone_with_weights
from keras_bn.keras_adapter import batchnorm_layers
from keras_bn.layers import BatchNormalization
from keras_bn.ops import bessel_correction

__all__ = [
    "LayerPopulation",
    "PopulationReport",
    "population_statistics",
    "with_population_statistics",
]

DEFAULT_BATCH_SIZE = 32  # as `model.fit`


@dataclasses.dataclass(frozen=True)
class LayerPopulation:
    """The population estimate of one BN layer, and how far its moving statistics are.

    Attributes:
        name: the layer's name.
        count: values per channel seen over the used batches (all calls of a
            shared layer); 0 if the layer was never reached.
        mean, variance: the population estimate (float64, per channel); NaN
            where `count` is 0.
        moving_mean, moving_variance: the layer's statistics before the
            estimate (float64).
        epsilon: the layer's ε.
    """

    name: str
    count: float
    mean: np.ndarray
    variance: np.ndarray
    moving_mean: np.ndarray
    moving_variance: np.ndarray
    epsilon: float

    @property
    def reached(self) -> bool:
        return self.count > 0

    @property
    def max_mean_shift(self) -> float:
        """max over channels of |moving_mean − mean| / √(variance + ε), in σ."""
        sigma = np.sqrt(self.variance + self.epsilon)
        return float(np.max(np.abs(self.moving_mean - self.mean) / sigma))

    @property
    def variance_ratio_range(self) -> tuple[float, float]:
        """min and max over channels of (moving_variance + ε) / (variance + ε).

        The ratio of the squared denominators inference uses to the ones the
        population calls for; 1 is right, and ε keeps dead channels finite.
        """
        ratio = (self.moving_variance + self.epsilon) / (self.variance + self.epsilon)
        return float(np.min(ratio)), float(np.max(ratio))

    def to_dict(self) -> dict:
        low, high = self.variance_ratio_range if self.reached else (None, None)
        return {
            "name": self.name,
            "count": self.count,
            "channels": int(self.mean.size),
            "max_mean_shift_sigma": self.max_mean_shift if self.reached else None,
            "variance_ratio_min": low,
            "variance_ratio_max": high,
        }


@dataclasses.dataclass(frozen=True)
class PopulationReport:
    """What `population_statistics` estimated, per BN layer.

    Attributes:
        layers: one `LayerPopulation` per BN layer, in `iter_layers` order.
        batches: batches used.
        skipped_batches: batches skipped because they held NaN/Inf.
        unbiased: whether the variance carries the m/(m−1) correction.
        applied: whether the estimate was assigned to the model.
    """

    layers: list[LayerPopulation]
    batches: int
    skipped_batches: int
    unbiased: bool
    applied: bool

    def to_dict(self) -> dict:
        """A JSON-serialisable summary (no per-channel arrays)."""
        return {
            "batches": self.batches,
            "skipped_batches": self.skipped_batches,
            "unbiased": self.unbiased,
            "applied": self.applied,
            "layers": [layer.to_dict() for layer in self.layers],
        }

    def summary(self) -> str:
        """A table: per layer the values seen, mean shift (σ) and variance ratio."""
        head = ("layer", "values/channel", "max |Δmean| (σ)", "variance ratio")
        rows = []
        for layer in self.layers:
            if not layer.reached:
                rows.append((layer.name, "0", "not reached", "kept"))
                continue
            low, high = layer.variance_ratio_range
            rows.append(
                (
                    layer.name,
                    f"{layer.count:.0f}",
                    f"{layer.max_mean_shift:.3g}",
                    f"{low:.3g} – {high:.3g}",
                )
            )
        widths = [max(len(row[i]) for row in [head, *rows]) for i in range(4)]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))
            for r in [head, *rows]
        ]
        verb = "applied" if self.applied else "not applied (apply=False)"
        lines.append(
            f"{self.batches} batches used, {self.skipped_batches} skipped (NaN/Inf); "
            f"{'unbiased' if self.unbiased else 'biased'} variance; {verb}"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


# -- data ---------------------------------------------------------------------


def _is_array(value: Any) -> bool:
    return isinstance(value, (np.ndarray, tf.Tensor))


def _is_array_data(data: Any, num_inputs: int) -> bool:
    """Whether `data` is `x` as arrays (as `fit` takes it) rather than batches.

    A list or tuple of arrays is one array per input when the model has that
    many inputs, as in `fit`; otherwise it is a sequence of batches.
    """
    if _is_array(data):
        return True
    if isinstance(data, dict):
        return all(_is_array(v) for v in data.values())
    if isinstance(data, (list, tuple)):
        return len(data) == num_inputs and all(_is_array(v) for v in data)
    return False


class _Batches:
    """`data` as `model.fit` takes `x`, as an iterator of input batches."""

    def __init__(
        self, data: Any, batch_size: int | None, steps: int | None, num_inputs: int
    ):
        self.steps = steps
        if _is_array_data(data, num_inputs):
            self.arrays = tf.nest.map_structure(np.asarray, data)
            self.batch_size = batch_size or DEFAULT_BATCH_SIZE
            lengths = {len(a) if a.ndim else 0 for a in tf.nest.flatten(self.arrays)}
            if len(lengths) != 1 or 0 in lengths:
                raise ValueError(
                    "`data` must hold at least one example, and every input array "
                    "the same number of them. Received arrays of lengths "
                    f"{sorted(len(a) if a.ndim else 0 for a in tf.nest.flatten(self.arrays))}"
                )
            self.length = lengths.pop()
            self.source = None
            return
        if batch_size is not None:
            raise ValueError(
                "`batch_size` applies to array data only: a dataset or generator "
                f"yields batches already. Received: batch_size={batch_size} with "
                f"data of type {type(data).__name__}"
            )
        if not isinstance(data, (Iterable, keras.utils.PyDataset)):
            raise TypeError(
                "`data` must be a NumPy array (or a list/dict of them), a tf.data."
                "Dataset, a keras.utils.PyDataset or an iterable of batches. "
                f"Received: data of type {type(data).__name__}"
            )
        self.arrays = None
        self.source = data

    @property
    def total(self) -> int | None:
        """The number of batches, when it is known in advance."""
        known = None
        if self.arrays is not None:
            known = math.ceil(self.length / self.batch_size)
        elif isinstance(self.source, tf.data.Dataset):
            cardinality = int(self.source.cardinality())
            known = cardinality if cardinality >= 0 else None
        elif isinstance(self.source, keras.utils.PyDataset):
            known = len(self.source)
        if self.steps is None:
            return known
        return self.steps if known is None else min(known, self.steps)

    def __iter__(self) -> Iterator[Any]:
        total = self.total
        for index, element in enumerate(self._elements()):
            if total is not None and index >= total:
                return
            x, _, _ = keras.utils.unpack_x_y_sample_weight(element)
            yield x

    def _elements(self) -> Iterator[Any]:
        if self.arrays is not None:
            for start in range(0, self.length, self.batch_size):
                yield tf.nest.map_structure(
                    lambda a, s=start: a[s : s + self.batch_size], self.arrays
                )
        elif isinstance(self.source, keras.utils.PyDataset):
            for index in range(len(self.source)):
                yield self.source[index]
        else:
            yield from self.source


def _num_inputs(model: keras.Model) -> int:
    try:
        return len(model.inputs)
    except (AttributeError, ValueError):  # a subclassed model
        return 1


def _check_batch(model: keras.Model, x: Any) -> None:
    """Raises a clear error when a batch cannot be the model's input."""
    try:
        expected = [tuple(t.shape) for t in model.inputs]
    except (AttributeError, ValueError):  # a subclassed model: let it say
        return
    received = [tuple(np.shape(leaf)) for leaf in tf.nest.flatten(x)]
    fits = len(received) == len(expected) and all(
        len(r) == len(e) and all(a is None or a == b for a, b in zip(e, r, strict=True))
        for e, r in zip(expected, received, strict=True)
    )
    if not fits:
        raise ValueError(
            f"The batches of `data` do not fit model '{model.name}', whose inputs "
            f"have shapes {expected} (None: any size). Received a batch of shapes "
            f"{received}"
        )


# -- the recording pass ---------------------------------------------------------


class _Recorder:
    """Temporarily makes every BN layer record its training-mode batch statistics."""

    def __init__(self, layers: list[keras.layers.Layer], unbiased: bool):
        self.layers = layers
        self.unbiased = unbiased
        self.records: list[list[tuple]] = []

    def _settings(self, layer) -> dict[str, Any]:
        settings = {"momentum": 0.0, "trainable": True, "renorm": False}
        if isinstance(layer, BatchNormalization):
            # Our layer applies m/(m−1) itself, per ghost batch when it has them.
            settings["unbiased_moving_variance"] = self.unbiased
            settings["use_moving_statistics"] = False
        return settings

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        saved = []
        try:
            for index, layer in enumerate(self.layers):
                settings = self._settings(layer)
                saved.append(
                    (
                        layer,
                        {name: getattr(layer, name) for name in settings},
                        [(v, v.numpy(), v.trainable) for v in layer.variables],
                    )
                )
                for name, value in settings.items():
                    setattr(layer, name, value)
                object.__setattr__(layer, "call", self._recording_call(index, layer))
            yield
        finally:
            for layer, attributes, variables in reversed(saved):
                if "call" in vars(layer):
                    object.__delattr__(layer, "call")
                for name, value in attributes.items():
                    setattr(layer, name, value)
                for variable, value, trainable in variables:
                    variable.assign(value)
                    variable.trainable = trainable

    def _recording_call(self, index: int, layer):
        original_call = type(layer).call.__get__(layer)
        channels = math.prod(layer.moving_mean.shape)

        def call(inputs, training=None, mask=None):
            # A zero start makes `0·momentum-term + batch` exact, and keeps a
            # NaN from an earlier (skipped) batch out of this one.
            layer.moving_mean.assign(tf.zeros_like(layer.moving_mean))
            layer.moving_variance.assign(tf.zeros_like(layer.moving_variance))
            outputs = original_call(inputs, training=True, mask=mask)
            mean = tf.identity(layer.moving_mean.value)
            variance = tf.identity(layer.moving_variance.value)
            if mask is None:
                count = tf.cast(tf.size(inputs), tf.float64) / channels
            else:
                count = tf.reduce_sum(tf.cast(mask, tf.float64))
            finite = tf.reduce_all(tf.math.is_finite(tf.cast(inputs, tf.float32)))
            self.records[index].append((mean, variance, count, finite))
            return outputs

        return call

    def step_function(self, model: keras.Model):
        def step(x):
            self.records = [[] for _ in self.layers]
            finite = [
                tf.reduce_all(tf.math.is_finite(tf.cast(leaf, tf.float32)))
                for leaf in tf.nest.flatten(x)
                if tf.as_dtype(leaf.dtype).is_floating
            ]
            model(x, training=False)
            return tf.reduce_all(tf.stack([tf.constant(True), *finite])), self.records

        return step


def _open_batch_spec(array) -> tf.TensorSpec:
    array = tf.convert_to_tensor(array)
    return tf.TensorSpec((None, *array.shape[1:]), array.dtype)


class _Accumulator:
    """Σ m·μ, Σ m·c·σ², Σ m per layer, in float64."""

    def __init__(self, layers: list[keras.layers.Layer], unbiased: bool):
        self.unbiased = unbiased
        self.corrects = [not isinstance(layer, BatchNormalization) for layer in layers]
        shapes = [tuple(layer.moving_mean.shape) for layer in layers]
        self.weighted_mean = [np.zeros(s) for s in shapes]
        self.weighted_variance = [np.zeros(s) for s in shapes]
        self.count = [0.0 for _ in shapes]

    @staticmethod
    def batch_is_valid(input_finite, records) -> bool:
        if not bool(input_finite):
            return False
        return all(
            bool(finite) and np.isfinite(mean).all() and np.isfinite(variance).all()
            for calls in records
            for mean, variance, _, finite in calls
        )

    def add(self, records) -> None:
        for index, calls in enumerate(records):
            for mean, variance, count, _ in calls:
                m = float(count)
                if m <= 0:
                    continue  # a fully masked call holds nothing
                variance = np.asarray(variance, np.float64)
                if self.unbiased and self.corrects[index]:
                    variance = bessel_correction(variance, m)
                self.weighted_mean[index] += m * np.asarray(mean, np.float64)
                self.weighted_variance[index] += m * variance
                self.count[index] += m

    def estimate(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        m = self.count[index]
        if m == 0:
            nan = np.full_like(self.weighted_mean[index], np.nan)
            return nan, nan
        return self.weighted_mean[index] / m, self.weighted_variance[index] / m


def _progress(verbose, total: int | None) -> keras.utils.Progbar:
    if verbose == "auto":
        verbose = 1  # as `model.fit` on one device
    if verbose not in (0, 1, 2):
        raise ValueError(
            f'`verbose` must be "auto", 0, 1 or 2. Received: verbose={verbose!r}'
        )
    return keras.utils.Progbar(
        total, verbose=verbose, stateful_metrics=["skipped"], unit_name="batch"
    )


# -- the public functions -------------------------------------------------------


def _validate(model, steps, batch_size, unbiased) -> list[keras.layers.Layer]:
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`model` must be a keras.Model. Received: model={model!r} of type "
            f"{type(model).__name__}"
        )
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(
                f"`{name}` must be a positive int or None. Received: {name}={value!r}"
            )
    if not isinstance(unbiased, bool):
        raise TypeError(f"`unbiased` must be a bool. Received: unbiased={unbiased!r}")
    layers = batchnorm_layers(model)
    if not layers:
        raise ValueError(
            f"Model '{model.name}' has no BatchNormalization layer: there are no "
            "statistics to estimate."
        )
    unbuilt = [layer.name for layer in layers if not layer.built]
    if unbuilt:
        raise ValueError(
            f"Model '{model.name}' must be built (called once, or created with an "
            f"Input) before its statistics can be estimated. Unbuilt BN layers: {unbuilt}"
        )
    return layers


def _collect(model, layers, batches: _Batches, unbiased, progbar) -> tuple:
    accumulator = _Accumulator(layers, unbiased)
    used = skipped = 0
    recorder = _Recorder(layers, unbiased)
    step = None
    with recorder.installed():
        for x in batches:
            if not all(np.shape(leaf)[0] for leaf in tf.nest.flatten(x)):
                continue  # an empty batch holds nothing (and breaks reshapes)
            _check_batch(model, x)
            if step is None:
                # One trace for every batch size: the batch axis is left open.
                step = tf.function(
                    recorder.step_function(model),
                    input_signature=[tf.nest.map_structure(_open_batch_spec, x)],
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


def _assign(layers, report: PopulationReport) -> None:
    saved = [(v, v.numpy()) for layer in layers for v in layer.variables]
    try:
        for layer, entry in zip(layers, report.layers, strict=True):
            if not entry.reached:
                continue
            layer.moving_mean.assign(entry.mean.astype(layer.moving_mean.dtype))
            layer.moving_variance.assign(
                entry.variance.astype(layer.moving_variance.dtype)
            )
            if getattr(layer, "renorm", False):
                # Inference reads moving_variance; training's renorm corrections
                # track moving_stddev = √(variance + ε): keep them consistent.
                stddev = np.sqrt(entry.variance + layer.epsilon)
                layer.moving_stddev.assign(stddev.astype(layer.moving_stddev.dtype))
    except BaseException:
        for variable, value in saved:
            variable.assign(value)
        raise


def _layer_entry(layer, mean, variance, count) -> LayerPopulation:
    return LayerPopulation(
        name=layer.name,
        count=count,
        mean=mean,
        variance=variance,
        moving_mean=np.asarray(layer.moving_mean, np.float64),
        moving_variance=np.asarray(layer.moving_variance, np.float64),
        epsilon=float(layer.epsilon),
    )


def _check_collected(model, data, steps, accumulator, used, skipped) -> None:
    """Raises a `ValueError` unless the batches gave an estimate to assign."""
    if used + skipped == 0:
        raise ValueError(
            f"`data` gave no batches, so model '{model.name}' was not changed. "
            f"Received: data of type {type(data).__name__}, steps={steps}"
        )
    if used == 0:
        raise ValueError(
            f"Every batch of `data` held NaN or Inf ({skipped} of {skipped} skipped), "
            f"so model '{model.name}' was not changed."
        )
    if not any(accumulator.count):
        raise ValueError(
            f"No value reached a BN layer of model '{model.name}' (empty batches, or "
            f"masks that hide everything), so it was not changed. Received: {used} "
            "batches"
        )


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
    m/(m−1)-corrected batch variances (module docstring). Nothing else
    changes: no optimizer step, no other layer's state.

    All or nothing: statistics accumulate in float64 and are assigned only after
    the last batch. A batch with NaN/Inf is skipped and counted; if every batch
    is bad, or anything raises, the model is left exactly as it was.

    Args:
        model: a built Keras model with `keras_bn.BatchNormalization` and/or
            `keras.layers.BatchNormalization` layers (nested models and shared
            layers included).
        data: as `model.fit` takes `x`: a NumPy array (or a list/dict of them
            for several inputs), a `tf.data.Dataset`, a `keras.utils.PyDataset`,
            or an iterable of batches. Labels in `(x, y)` or `(x, y, w)`
            elements are ignored.
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
        TypeError: `model` is not a Keras model, or `data` is not batches.
        ValueError: the model has no BN layer or is not built, `data` is empty
            (or no value reaches a BN) or its batches do not fit the model, an
            argument is out of range, or every batch held NaN/Inf.

    Example:

    >>> report = keras_bn.population_statistics(model, x_train)  # doctest: +SKIP
    >>> print(report.summary())  # doctest: +SKIP
    """
    layers = _validate(model, steps, batch_size, unbiased)
    if not isinstance(apply, bool):
        raise TypeError(f"`apply` must be a bool. Received: apply={apply!r}")
    batches = _Batches(data, batch_size, steps, _num_inputs(model))
    progbar = _progress(verbose, batches.total)
    accumulator, used, skipped = _collect(model, layers, batches, unbiased, progbar)
    _check_collected(model, data, steps, accumulator, used, skipped)
    entries = [
        _layer_entry(layer, *accumulator.estimate(i), accumulator.count[i])
        for i, layer in enumerate(layers)
    ]
    report = PopulationReport(entries, used, skipped, unbiased, apply)
    if apply:
        _assign(layers, report)
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
    _validate(
        model,
        kwargs.get("steps"),
        kwargs.get("batch_size"),
        kwargs.get("unbiased", True),
    )
    copy = clone_with_weights(model)
    return copy, population_statistics(copy, data, **kwargs)
