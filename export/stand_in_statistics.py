"""Stand-in BatchNormalization statistics for the `weights=None` recipes.

An untrained keras.applications network keeps the default statistics (mean 0,
variance 1, γ 1, β 0): folding them is trivial, and MobileNetV2's activations
even vanish to ~1e-11, so its parity would read an uninformative 0. The
recipes therefore give every BN seeded statistics of the kind training leaves
(γ and variance in [0.5, 2], β and mean of spread 0.1). With real weights
(`weights="imagenet"`) delete the call.
"""

import keras
import numpy as np


def set_stand_in_statistics(model: keras.Model, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 2.0, n),  # gamma
                    rng.normal(0.0, 0.1, n),  # beta
                    rng.normal(0.0, 0.1, n),  # moving_mean
                    rng.uniform(0.5, 2.0, n),  # moving_variance
                ]
            )
