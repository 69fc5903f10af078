"""`keras_bn.BatchNormalization`: a drop-in for Keras' layer with an analytic gradient."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import keras
from keras import initializers

from keras_bn import backends, ops

# `ops` is keras_bn's BN mathematics; `Ops`, Keras' backend-neutral operations.
Ops = keras.ops

__all__ = ["BatchNormalization"]


class _Layout(NamedTuple):
    """How an input is viewed for the statistics: runs of merged axes.

    `runs` lists, per collapsed axis, the original axes it merges; `axes` are
    the collapsed axes reduced over; `param_shape` is the keepdims shape of a
    per-channel parameter in the collapsed view.
    """

    runs: list[list[int]]
    axes: list[int]
    param_shape: list[int]

    @classmethod
    def of(
        cls, roles: list[str], broadcast_shape: list[int], *, merge: bool = True
    ) -> _Layout:
        runs: list[list[int]] = []
        for axis, role in enumerate(roles):
            if merge and runs and roles[runs[-1][0]] == role:
                runs[-1].append(axis)
            else:
                runs.append([axis])
        axes = [i for i, run in enumerate(runs) if roles[run[0]] == "reduce"]
        param_shape = [math.prod(broadcast_shape[a] for a in run) for run in runs]
        return cls(runs, axes, param_shape)

    def collapse(self, t):
        if len(self.runs) == t.ndim:
            return t
        shape = Ops.shape(t)
        return Ops.reshape(t, [math.prod(shape[a] for a in run) for run in self.runs])


def _clone_initializer(initializer):
    # A seeded initializer object must not be reused for a second variable.
    if isinstance(initializer, initializers.Initializer):
        return initializer.__class__.from_config(initializer.get_config())
    return initializer


@keras.saving.register_keras_serializable(package="keras_bn")
class BatchNormalization(keras.layers.BatchNormalization):
    """Batch Normalization whose backward pass is the closed-form gradient.

    During training (`training=True`, and the layer trainable) the layer
    normalizes each channel with the mean and variance of the current batch
    and updates `moving_mean` and `moving_variance` as
    `moving = moving * momentum + batch * (1 - momentum)`. During inference
    it normalizes with those moving statistics. This is exactly
    `keras.layers.BatchNormalization`; the weights have the same names, order
    and shapes, so `set_weights(other.get_weights())` works both ways.

    What differs is how the gradient is computed: by the analytic formulas
    of Ioffe & Szegedy (2015) in `keras_bn.ops` instead of autodiff through
    the statistics, which keeps only the input and per-channel vectors for
    the backward pass (`tf.custom_gradient` on TensorFlow, `jax.custom_vjp`
    on JAX; other Keras backends raise a `ValueError` here, see docs/jax.md).
    Beyond Keras' layer it also

    - keeps the variance and the output accurate for inputs whose mean is
      large compared with their spread (shifted two-pass statistics),
    - leaves the moving statistics untouched by a batch that contains NaN or
      Inf (an overflowing float16 step that loss scaling will skip) or whose
      mask hides every element,
    - accepts `axis` as a list of ints,
    - offers ghost batches (`virtual_batch_size`), an unbiased (Bessel
      corrected) moving variance, and `synchronized=True` with an analytic
      backward pass that all-reduces two per-channel vectors.

    Args:
        axis: int or list of ints, the channel axis or axes (those not
            normalized over). For `data_format="channels_first"` use 1.
        momentum: momentum of the moving averages, in [0, 1].
        epsilon: small non-negative float added to the variance. 0 is
            accepted, as Keras accepts it: a channel whose variance is 0 then
            divides by 0 (Inf/NaN), as in Keras.
        center: if True, add the learned offset `beta`.
        scale: if True, multiply by the learned scale `gamma`.
        beta_initializer, gamma_initializer, moving_mean_initializer,
        moving_variance_initializer, beta_regularizer, gamma_regularizer,
        beta_constraint, gamma_constraint: as in Keras.
        renorm: use Batch Renormalization (Ioffe 2017); the corrections `r`
            and `d` are constants in the backward pass, as the paper says.
        renorm_clipping: dict with optional keys `"rmax"`, `"rmin"`, `"dmax"`.
        renorm_momentum: momentum of the renorm moving averages.
        synchronized: on TensorFlow, compute the batch statistics over all
            replicas of a `tf.distribute` strategy (exact parallel moments),
            and all-reduce the two per-channel sums of the backward pass. On
            JAX it is accepted and changes nothing: under
            `keras.distribution` (`DataParallel`) the statistics span the
            whole global batch either way (see docs/jax.md; for per-device
            statistics use `virtual_batch_size` = the per-device batch).
        virtual_batch_size: if set, an int `k`; each group of `k`
            consecutive examples is normalized with its own statistics (ghost
            batch normalization, Hoffer et al. 2017). If the batch size is
            not a multiple of `k` (the last batch of `fit`), the remaining
            `B mod k` examples form one smaller group; a batch smaller than
            `k` is one group. The moving statistics track the groups' mean
            and variance averaged with each group weighted by its size.
        unbiased_moving_variance: if True, the moving variance tracks the
            Bessel-corrected batch variance `m/(m-1)·σ²_B` (PyTorch's
            convention); the batch is still normalized with the biased one.
        use_moving_statistics: if True, the layer normalizes with its moving
            statistics and never updates them, also when called with
            `training=True`; `gamma` and `beta` still train if the layer is
            trainable. This is fine-tuning with frozen statistics but a
            trainable affine part (Flax's `use_running_average`), which
            Keras' `trainable=False` cannot express: it freezes both.
            `keras_bn.freeze_batchnorm(model, train_affine=True)` sets it.
            A compiled training function reads it when traced: set it before
            `compile`/`fit`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a tensor of any rank whose channel dimensions are known.
            Integer and boolean inputs are normalized in float32, as Keras
            does.
        training: whether to normalize with the batch statistics.
        mask: optional tensor of rank `rank(inputs) - 1`, read as booleans;
            as in Keras it gains a trailing axis and must broadcast to the
            input. Masked-out elements do not shape the statistics.

    Reference:
        Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network
        Training by Reducing Internal Covariate Shift", ICML 2015.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((28, 28, 1)),
    ...     keras.layers.Conv2D(8, 3, use_bias=False),
    ...     keras_bn.BatchNormalization(),
    ...     keras.layers.ReLU(),
    ... ])
    """

    def __init__(
        self,
        axis: int | Sequence[int] = -1,
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_variance_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        renorm: bool = False,
        renorm_clipping: dict | None = None,
        renorm_momentum: float = 0.99,
        synchronized: bool = False,
        virtual_batch_size: int | None = None,
        unbiased_moving_variance: bool = False,
        use_moving_statistics: bool = False,
        **kwargs,
    ):
        backend = backends.check_supported()
        axis = ops.validate_axis(axis)
        # Keras validates the shared arguments (renorm clipping) with its own
        # messages; it only accepts an int axis, and `synchronized=True` only
        # on TensorFlow (on JAX it is what happens anyway, see
        # `_synchronized_here`).
        super().__init__(
            axis=axis if isinstance(axis, int) else -1,
            momentum=momentum,
            epsilon=epsilon,
            center=center,
            scale=scale,
            beta_initializer=beta_initializer,
            gamma_initializer=gamma_initializer,
            moving_mean_initializer=moving_mean_initializer,
            moving_variance_initializer=moving_variance_initializer,
            beta_regularizer=beta_regularizer,
            gamma_regularizer=gamma_regularizer,
            beta_constraint=beta_constraint,
            gamma_constraint=gamma_constraint,
            renorm=renorm,
            renorm_clipping=renorm_clipping,
            renorm_momentum=renorm_momentum,
            synchronized=synchronized and backend == "tensorflow",
            **kwargs,
        )
        self.axis = axis
        self.synchronized = bool(synchronized)
        self._check_arguments(
            momentum, epsilon, renorm, renorm_momentum, synchronized, virtual_batch_size
        )
        self.virtual_batch_size = virtual_batch_size
        self.unbiased_moving_variance = bool(unbiased_moving_variance)
        self.use_moving_statistics = bool(use_moving_statistics)

    def _check_arguments(
        self,
        momentum,
        epsilon,
        renorm,
        renorm_momentum,
        synchronized,
        virtual_batch_size,
    ) -> None:
        """Raises a `ValueError` for an argument out of range, quoting it as passed.

        Runs after Keras' constructor, which has already validated what the
        two layers share and stored `momentum` and `epsilon` as floats. Keras
        also accepts a momentum outside [0, 1] and a negative ε, which have
        no meaning (an average that diverges, a square root of a negative
        number): those are refused, naming the layer.
        """
        owner = f"Layer '{self.name}': "
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(
                f"{owner}`momentum` must be in [0, 1] (a moving average's "
                f"weight). Received: momentum={momentum}"
            )
        if not self.epsilon >= 0.0:
            raise ValueError(
                f"{owner}`epsilon` must be >= 0 (it is added to a variance "
                f"under a square root). Received: epsilon={epsilon}"
            )
        if renorm and not 0.0 <= float(renorm_momentum) <= 1.0:
            raise ValueError(
                f"{owner}`renorm_momentum` must be in [0, 1]. "
                f"Received: renorm_momentum={renorm_momentum}"
            )
        if virtual_batch_size is None:
            return
        if (
            isinstance(virtual_batch_size, bool)
            or not isinstance(virtual_batch_size, int)
            or virtual_batch_size < 1
        ):
            raise ValueError(
                "`virtual_batch_size` must be a positive int or None. "
                f"Received: virtual_batch_size={virtual_batch_size!r}"
            )
        if synchronized:
            raise ValueError(
                "`virtual_batch_size` and `synchronized=True` cannot be combined: ghost "
                "batches are groups within one replica's batch, so there is nothing to "
                f"synchronize. Received: virtual_batch_size={virtual_batch_size}, "
                "synchronized=True"
            )

    # -- shapes ---------------------------------------------------------------

    def _channel_axes(self, input_shape) -> list[int]:
        axes = ops.channel_axes(self.axis, input_shape, f"Layer '{self.name}': ")
        if len(axes) == len(input_shape):
            raise ValueError(
                f"Layer '{self.name}': `axis` covers every dimension of input shape "
                f"{tuple(input_shape)}, leaving nothing to normalize over. Received: axis={self.axis}"
            )
        return axes

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        axes = self._channel_axes(input_shape)
        unknown = [a for a in axes if input_shape[a] is None]
        if unknown:
            raise ValueError(
                f"Layer '{self.name}': the channel dimension (axis {unknown[0]}) must be known "
                f"when the layer is built, to size gamma, beta and the moving statistics. "
                f"Received: input_shape={input_shape}"
            )
        if self.virtual_batch_size is not None and 0 in axes:
            raise ValueError(
                f"Layer '{self.name}': `virtual_batch_size` splits the batch axis 0, which "
                f"cannot also be a channel axis. Received: axis={self.axis}"
            )
        shape = tuple(input_shape[a] for a in axes)
        self._build_weights(shape)
        self.input_spec = keras.layers.InputSpec(
            ndim=len(input_shape), axes={a: input_shape[a] for a in axes}
        )
        self._channel_axes_ = axes
        self._broadcast_shape = [
            input_shape[a] if a in axes else 1 for a in range(len(input_shape))
        ]

    def _add_float32_weight(self, name, shape, initializer, **options):
        """One weight as Keras' layer adds it: float32 even under a mixed policy."""
        return self.add_weight(
            shape=shape, name=name, initializer=initializer, autocast=False, **options
        )

    def _build_weights(self, shape):
        # Same names, order, initializers and flags as Keras' layer, so
        # weights transfer both ways and checkpoints line up.
        for flag, name in ((self.scale, "gamma"), (self.center, "beta")):
            if flag:
                weight = self._add_float32_weight(
                    name,
                    shape,
                    getattr(self, f"{name}_initializer"),
                    regularizer=getattr(self, f"{name}_regularizer"),
                    constraint=getattr(self, f"{name}_constraint"),
                    trainable=True,
                )
                setattr(self, name, weight)
        for name in ("moving_mean", "moving_variance"):
            initializer = getattr(self, f"{name}_initializer")
            weight = self._add_float32_weight(name, shape, initializer, trainable=False)
            setattr(self, name, weight)
        if self.renorm:
            self._build_renorm_weights(shape)

    def _build_renorm_weights(self, shape):
        """Keras' three renorm statistics, after the moving mean and variance."""

        # As Keras: the stddevs start at √ of the variance initializer.
        def moving_stddev_initializer(shape, dtype=None):
            fresh = _clone_initializer(self.moving_variance_initializer)
            return keras.ops.sqrt(fresh(shape, dtype=dtype))

        initializers = {
            "moving_stddev": moving_stddev_initializer,
            "renorm_mean": _clone_initializer(self.moving_mean_initializer),
            "renorm_stddev": moving_stddev_initializer,
        }
        for name, initializer in initializers.items():
            weight = self._add_float32_weight(name, shape, initializer, trainable=False)
            setattr(self, name, weight)

    def compute_output_shape(self, input_shape):
        self._channel_axes(input_shape)
        return input_shape

    # -- forward --------------------------------------------------------------

    def _to_broadcast(self, variable, dtype):
        return Ops.reshape(Ops.cast(variable, dtype), self._broadcast_shape)

    def _mask_weights(self, inputs, mask):
        """The mask as per-element weights, as Keras 3.15 reads it.

        Keras gives the mask a trailing axis and broadcasts it to the input,
        whatever `axis` is: behind a `Masking` layer the mask of a (5, 2, 3)
        input with `axis=1` is (5, 2) → (5, 2, 1), so it varies along the
        channel axis. A mask with every channel dimension 1 stays that small;
        otherwise it is broadcast to the input's shape.
        """
        mask = self._check_mask(inputs, mask)
        # Keras tests the mask for truth, so 0.5 counts as 1, not as a weight.
        weights = Ops.cast(Ops.cast(mask, "bool"), ops.statistics_dtype(inputs.dtype))
        weights = Ops.expand_dims(weights, -1)
        expanded = (*mask.shape, 1)
        if any(expanded[a] != 1 for a in self._channel_axes_):
            return Ops.broadcast_to(weights, Ops.shape(inputs))
        # Reduction axes are broadcast so the collapsed view can merge them.
        return Ops.broadcast_to(weights, self._reduction_shape(inputs))

    def _reduction_shape(self, inputs) -> list:
        """The input's (dynamic) shape with every channel dimension set to 1."""
        shape = Ops.shape(inputs)
        return [1 if a in self._channel_axes_ else n for a, n in enumerate(shape)]

    def _check_mask(self, inputs, mask):
        """Raises a `ValueError` for a mask Keras' broadcasting rule rejects."""
        mask = Ops.convert_to_tensor(mask)
        if mask.ndim != inputs.ndim - 1:
            raise ValueError(
                f"Layer '{self.name}': the mask must have one dimension less than the "
                f"inputs (it gains a trailing axis and is broadcast to them, as in "
                f"Keras). Received: mask.shape={tuple(mask.shape)}, "
                f"inputs.shape={tuple(inputs.shape)}"
            )
        expanded = (*mask.shape, 1)
        rule = (
            f"Layer '{self.name}': the mask, with a trailing axis added, cannot "
            "be broadcast to the inputs."
        )
        for m, n in zip(expanded, inputs.shape, strict=True):
            if m is not None and n is not None and m not in (1, n):
                raise ValueError(
                    f"{rule} Received: mask.shape={tuple(mask.shape)}, "
                    f"inputs.shape={tuple(inputs.shape)}"
                )
        if None in expanded or None in inputs.shape:
            # Sizes unknown when traced (only a tf.function has them): the
            # same rule, checked when the function runs.
            checked = backends.current().assert_broadcastable(
                Ops.expand_dims(mask, -1), inputs, rule
            )
            mask = Ops.squeeze(checked, -1)
        return mask

    def call(self, inputs, training=None, mask=None):
        inputs = Ops.convert_to_tensor(inputs)
        if not keras.backend.is_float_dtype(inputs.dtype):
            # As Keras: integer and boolean inputs are normalized in float32
            # (result_type(dtype, "float32")), never in integer arithmetic.
            inputs = Ops.cast(inputs, "float32")
        dtype = ops.statistics_dtype(inputs.dtype)
        ones = Ops.ones(self._broadcast_shape, dtype)
        if training and self.trainable and not self.use_moving_statistics:
            weights = None if mask is None else self._mask_weights(inputs, mask)
            outputs = self._train(inputs, weights, ones)
        else:
            if mask is not None:
                self._check_mask(inputs, mask)
            outputs = ops.batch_norm_inference(
                inputs,
                self._to_broadcast(self.moving_mean, dtype),
                self._to_broadcast(self.moving_variance, dtype),
                self._to_broadcast(self.gamma, dtype) if self.scale else ones,
                self._to_broadcast(self.beta, dtype)
                if self.center
                else Ops.zeros_like(ones),
                epsilon=self.epsilon,
            )
        return Ops.cast(outputs, self.compute_dtype)

    def _train(self, inputs, weights, ones):
        dtype = ones.dtype
        grouped = self.virtual_batch_size is not None
        x, weights, layout = self._statistics_view(inputs, weights, grouped)
        ones = Ops.ones(layout.param_shape, dtype)

        def param(variable):
            return Ops.reshape(Ops.cast(variable, dtype), layout.param_shape)

        gamma = param(self.gamma) if self.scale else ones
        beta = param(self.beta) if self.center else Ops.zeros_like(ones)
        synchronized = self._synchronized_here
        stats = ops.moments(x, layout.axes, weights=weights, synchronized=synchronized)
        r = d = None
        if self.renorm:
            clipping = self.renorm_clipping or {}
            r, d = ops.renorm_corrections(
                stats,
                param(self.renorm_mean),
                param(self.renorm_stddev),
                self.epsilon,
                rmin=clipping.get("rmin"),
                rmax=clipping.get("rmax"),
                dmax=clipping.get("dmax"),
            )
        outputs = ops.batch_norm_train(
            x,
            gamma,
            beta,
            stats,
            axes=layout.axes,
            epsilon=self.epsilon,
            weights=weights,
            r=r,
            d=d,
            synchronized=synchronized,
        )
        self._update_moving_statistics(stats, grouped)
        shape = Ops.shape(inputs)
        if grouped:
            # Drops the rows a partial ghost batch was padded with.
            outputs = Ops.reshape(outputs, [-1, *shape[1:]])
            return outputs[: shape[0]]
        return Ops.reshape(outputs, shape)

    @property
    def _synchronized_here(self) -> bool:
        """Whether the statistics need explicit all-reduces on this backend.

        Only `tf.distribute` runs one program per replica. Under JAX's
        `keras.distribution` the program is global and XLA partitions it, so
        the batch statistics span every device already (`synchronized` or not).
        """
        return self.synchronized and keras.backend.backend() == "tensorflow"

    def _statistics_view(self, inputs, weights, grouped: bool):
        """`inputs` and `weights` as the statistics see them, with their layout.

        Ghost batches become a leading group axis first (`_group`); then the
        axes are collapsed as `_Layout` describes.
        """
        x = inputs
        if grouped:
            x, weights = self._group(inputs, weights)
        # Adjacent axes with the same role are merged (N, H, W, C → N·H·W, C):
        # the math is unchanged and XLA's CPU reductions over the leading axis
        # run ~1.7x faster. With a channel axis before reduced trailing axes
        # (N, C, H, W) merging H·W makes them ~1.6x slower, so it stays 4-D.
        channels_last = inputs.ndim - 1 in self._channel_axes_
        layout = _Layout.of(
            ["group"] * grouped
            + [
                "channel" if a in self._channel_axes_ else "reduce"
                for a in range(inputs.ndim)
            ],
            ([1] * grouped) + self._broadcast_shape,
            merge=channels_last,
        )
        x = layout.collapse(x)
        weights = None if weights is None else layout.collapse(weights)
        return x, weights, layout

    def _group(self, inputs, weights):
        """Reshapes the batch (B, ...) into ghost batches (⌈B/k⌉, k, ...).

        A batch that is not a multiple of `k` (the last batch of `fit`, or
        any batch whose size is unknown when traced) is padded with rows of
        weight 0, so its remainder is normalized as one smaller group of its
        own, with its own statistics; a batch smaller than `k` is one group.
        """
        k = self.virtual_batch_size
        batch = inputs.shape[0]
        if batch is None or batch % k:
            pad = (-Ops.shape(inputs)[0]) % k
            if weights is None:
                weights = Ops.ones(
                    self._reduction_shape(inputs), ops.statistics_dtype(inputs.dtype)
                )
            paddings = [[0, pad]] + [[0, 0]] * (inputs.ndim - 1)
            inputs = Ops.pad(inputs, paddings)
            weights = Ops.pad(weights, paddings)
        x = Ops.reshape(inputs, [-1, k, *Ops.shape(inputs)[1:]])
        if weights is not None:
            weights = Ops.reshape(weights, [-1, k, *Ops.shape(weights)[1:]])
        return x, weights

    def _update_moving_statistics(self, stats: ops.BatchStats, grouped: bool):
        mean, variance = stats.mean, stats.variance
        if self.unbiased_moving_variance:
            variance = ops.bessel_correction(variance, stats.count)
        count = stats.count
        if grouped:
            # Each ghost batch is normalized by its own statistics; inference
            # should expect the average group's, not the whole batch's. Groups
            # are weighted by their (masked) size, so every example counts
            # once and a partial last group counts for what it holds.
            group_count = count
            count = Ops.sum(group_count, 0)
            mean = Ops.divide_no_nan(Ops.sum(group_count * mean, 0), count)
            variance = Ops.divide_no_nan(Ops.sum(group_count * variance, 0), count)
        shape = self.moving_mean.shape
        mean = Ops.reshape(mean, shape)
        variance = Ops.reshape(variance, shape)
        stddev = Ops.sqrt(variance + self.epsilon)
        # A batch with NaN/Inf says nothing about the population (loss
        # scaling will skip the step): keep every statistic as it was. A
        # channel the mask hides entirely (axis=1 behind Masking) keeps its own.
        valid = Ops.logical_and(
            Ops.all(Ops.isfinite(mean)), Ops.all(Ops.isfinite(variance))
        )
        valid = Ops.logical_and(valid, Ops.reshape(count, shape) > 0)

        def ema(variable, value, momentum):
            old = Ops.cast(variable, value.dtype)
            new = old * momentum + value * (1.0 - momentum)
            variable.assign(Ops.cast(Ops.where(valid, new, old), variable.dtype))
            return new

        if not self.renorm:
            ema(self.moving_mean, mean, self.momentum)
            ema(self.moving_variance, variance, self.momentum)
            return
        ema(self.renorm_mean, mean, self.renorm_momentum)
        ema(self.renorm_stddev, stddev, self.renorm_momentum)
        ema(self.moving_mean, mean, self.momentum)
        new_stddev = ema(self.moving_stddev, stddev, self.momentum)
        # As Keras: the variance follows the tracked stddev, floored at zero.
        new_variance = Ops.relu(new_stddev * new_stddev - self.epsilon)
        old_variance = Ops.cast(self.moving_variance, new_variance.dtype)
        self.moving_variance.assign(
            Ops.cast(
                Ops.where(valid, new_variance, old_variance), self.moving_variance.dtype
            )
        )

    # -- config ---------------------------------------------------------------

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "virtual_batch_size": self.virtual_batch_size,
                "unbiased_moving_variance": self.unbiased_moving_variance,
                "use_moving_statistics": self.use_moving_statistics,
            }
        )
        return config
