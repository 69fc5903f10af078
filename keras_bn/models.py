"""The models keras_bn builds: the digits CNN and stand-in keras.applications.

One home for each, used by the demo, the recipes in `export/`, the
benchmarks and the tests, so that "digits_cnn" or "MobileNetV2 with stand-in
statistics" is the same network everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from keras_bn.layers import BatchNormalization
from keras_bn.stand_in_statistics import DEFAULT_SPREAD, set_stand_in_statistics

__all__ = ["application_names", "digits_cnn", "stand_in_application"]


def digits_cnn(
    input_shape: Sequence[int] = (8, 8, 1),
    num_classes: int = 10,
    name: str = "digits_cnn",
) -> keras.Model:
    """A small CNN with three `keras_bn.BatchNormalization` layers.

    Conv(16)–BN–ReLU, Conv(32)–BN–ReLU, max-pool, Dense(64)–BN–ReLU and a
    softmax Dense: the network of `keras-bn demo` and `export/digits.py`.
    The convolutions have no bias (the BN's β replaces it); the hidden Dense
    keeps Keras' default bias, which folding absorbs. The moving statistics
    use `momentum=0.9`, so that a short run on the digits (45 steps an
    epoch) leaves trained moving averages rather than the initial values.

    Args:
        input_shape: One image's shape, `(height, width, channels)`.
        num_classes: Outputs of the softmax layer.
        name: The model's name.

    Returns:
        An uncompiled `keras.Sequential` model.

    Example:

    >>> model = digits_cnn((8, 8, 1), 10)  # doctest: +SKIP
    >>> model.compile("adam", "sparse_categorical_crossentropy")  # doctest: +SKIP
    """
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(tuple(input_shape)),
            layers.Conv2D(16, 3, padding="same", use_bias=False),
            BatchNormalization(momentum=0.9),
            layers.ReLU(),
            layers.Conv2D(32, 3, padding="same", use_bias=False),
            BatchNormalization(momentum=0.9),
            layers.ReLU(),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(64),
            BatchNormalization(momentum=0.9),
            layers.ReLU(),
            layers.Dense(num_classes, activation="softmax"),
        ],
        name=name,
    )


def application_names() -> list[str]:
    """The `keras.applications` model names `stand_in_application` takes."""
    return sorted(
        name
        for name in dir(keras.applications)
        if name[:1].isupper() and callable(getattr(keras.applications, name))
    )


def stand_in_application(
    name: str,
    input_shape: Sequence[int] = (224, 224, 3),
    *,
    seed: int = 0,
    spread: float = DEFAULT_SPREAD,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
) -> keras.Model:
    """A `keras.applications` model with `weights=None` and stand-in BN statistics.

    Untrained, the BN layers would keep their default statistics, which fold
    trivially and which converters may drop as identities; every BN gets
    seeded, trained-looking ones instead (`keras_bn.stand_in_statistics`).
    The other weights come from Keras' initialisers: call
    `keras.utils.set_random_seed` first for a reproducible model. For the
    trained network, build it with `weights="imagenet"` instead.

    Args:
        name: A `keras.applications` model, e.g. `"ResNet50"`,
            `"MobileNetV2"`, `"EfficientNetB0"` (see `application_names`).
        input_shape: One image's shape; the applications need at least 32×32.
        seed: Seed of the stand-in statistics.
        spread: Standard deviation of β and the moving means.
        classes: Outputs of the classifier.
        classifier_activation: `"softmax"`, or `None` for logits (parity
            checks: probabilities would hide differences).

    Returns:
        The model, built for `input_shape`.

    Raises:
        ValueError: `name` is not a `keras.applications` model.

    Example:

    >>> model = stand_in_application("MobileNetV2", (96, 96, 3))  # doctest: +SKIP
    """
    if name not in application_names():
        raise ValueError(
            "`name` must be a keras.applications model, one of "
            f"{application_names()}. Received: name={name!r}"
        )
    model = getattr(keras.applications, name)(
        weights=None,
        input_shape=tuple(input_shape),
        classes=classes,
        classifier_activation=classifier_activation,
    )
    set_stand_in_statistics(model, seed=seed, spread=spread)
    return model
