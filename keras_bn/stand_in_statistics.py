"""Seeded, trained-looking BatchNormalization statistics for untrained models.

An untrained network keeps the default statistics (moving mean 0, moving
variance 1, γ 1, β 0), which fold trivially and which a converter may drop as
an identity. Tests, benchmarks and the recipes give every BN the kind of
statistics training leaves instead: γ and the variance uniform in [0.5, 2], β
and the mean normal with standard deviation `spread` (docs/population.md says
why the default spread is 0.1). This is the one home of that rule;
`keras_bn.models.stand_in_application` applies it to keras.applications.
"""

from __future__ import annotations

import keras
import numpy as np

from keras_bn.keras_adapter import batchnorm_layers

# Deep networks need a small spread to stay scale-preserving (docs/population.md).
DEFAULT_SPREAD = 0.1


def stand_in_values(
    layer: keras.layers.Layer, rng: np.random.Generator, spread: float = DEFAULT_SPREAD
) -> list[np.ndarray]:
    """Values for every weight of one BN layer, in `layer.weights` order.

    Covers `center=False` / `scale=False` and the extra weights of Batch
    Renormalization (`moving_stddev` is drawn like a variance, the renorm
    mean like a mean), so `layer.set_weights(stand_in_values(layer, rng))`
    works for any BatchNormalization.

    Args:
        layer: A built BatchNormalization layer.
        rng: The generator to draw from.
        spread: Standard deviation of β and of the means.

    Returns:
        One array per weight, in the layer's weight dtype.
    """
    values = []
    for weight in layer.weights:
        shape = tuple(weight.shape)
        name = weight.name.rsplit("/", 1)[-1]
        if "variance" in name or "stddev" in name or name == "gamma":
            value = rng.uniform(0.5, 2.0, shape)
        else:  # beta and the means
            value = rng.normal(0.0, spread, shape)
        values.append(value.astype(weight.dtype))
    return values


def set_stand_in_statistics(
    model: keras.layers.Layer, seed: int = 0, spread: float = DEFAULT_SPREAD
) -> int:
    """Gives every BN inside `model` seeded, far-from-default statistics.

    Nested models and shared layers are included (each BN once); the model is
    changed in place.

    Args:
        model: A built Keras model (or layer).
        seed: Seed of the generator; the same seed gives the same values.
        spread: Standard deviation of β and the moving mean.

    Returns:
        The number of BN layers changed.

    Example:

    >>> model = keras.applications.ResNet50(weights=None)  # doctest: +SKIP
    >>> set_stand_in_statistics(model, seed=0)  # doctest: +SKIP
    53
    """
    rng = np.random.default_rng(seed)
    layers = batchnorm_layers(model)
    for layer in layers:
        layer.set_weights(stand_in_values(layer, rng, spread))
    return len(layers)
