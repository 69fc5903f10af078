"""`fine_tune`: quantization-aware fine-tuning of a float-trained model, one policy for API and CLI."""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from keras_bn.folding.report import FoldReport
from keras_bn.quantization.model import quantize_model, sync_input_steps

__all__ = ["DEFAULT_LEARNING_RATE", "QatResult", "bn_freeze_epoch", "fine_tune"]

#: Adam's learning rate for fine-tuning a trained model: at 5e-4 the first
#: steps of a fresh Adam moved the digits MobileNet off its minimum (99.2% →
#: 95.8% held out after three epochs); at 1e-4 it stayed (docs/quantization.md).
DEFAULT_LEARNING_RATE = 1e-4
DEFAULT_BATCH_SIZE = 32
#: Samples whose min/max start the activation ranges.
CALIBRATION_SAMPLES = 512


@dataclasses.dataclass
class QatResult:
    """A fine-tuned quantization-aware model and what happened."""

    model: keras.Model
    report: FoldReport
    history: dict[str, list[float]]
    frozen_after_steps: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "fold_report": self.report.to_dict(),
            "history": self.history,
            "frozen_after_steps": self.frozen_after_steps,
        }


def fine_tune(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int = 3,
    freeze_bn_after_epochs: int | None = None,
    weights: str = "per_channel",
    loss: Any = "sparse_categorical_crossentropy",
    batch_size: int = DEFAULT_BATCH_SIZE,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    validation_data: tuple | None = None,
    callbacks: list | None = None,
    jit_compile: bool | str = "auto",
) -> QatResult:
    """Quantization-aware fine-tuning of `model` (untouched) on `(x, y)`.

    The policy: `quantize_model` with ranges started from the min/max of the
    first 512 training images, Adam at a fine-tuning learning rate, the BN
    statistics learning for the first epochs and frozen after them, by
    default for the last epoch only (Jacob et al. 2018 freeze them for the
    end of QAT, so the last updates see exactly the inference map).

    Args:
        model: a float-trained Functional or Sequential model.
        x, y: training inputs and labels.
        epochs: fine-tuning epochs (at least 1).
        freeze_bn_after_epochs: epochs after which the BN statistics freeze,
            in `[0, epochs]`; `None` (default) is `epochs - 1`, frozen for
            the last epoch. Freezing earlier leaves more epochs that train
            on exactly the inference map (docs/quantization.md measures it).
        weights: `"per_channel"` or `"per_tensor"`.
        loss: a Keras loss (name, object or function).
        batch_size: batch size.
        learning_rate: Adam's learning rate.
        validation_data: `(x, y)` evaluated after each epoch.
        callbacks: Keras callbacks for `fit` (progress).
        jit_compile: as `Model.compile`.

    Returns:
        A `QatResult`.

    Raises:
        ValueError: `epochs` below 1, `freeze_bn_after_epochs` outside
            `[0, epochs]`, or as `quantize_model`.

    Example:

    >>> result = fine_tune(model, x_train, y_train, epochs=10,
    ...                    freeze_bn_after_epochs=3)  # doctest: +SKIP
    >>> keras_bn.export.to_tflite(result.model, "m.tflite", quantize="int8")  # doctest: +SKIP
    """
    steps_per_epoch = -(-len(x) // batch_size)
    frozen_after = bn_freeze_epoch(epochs, freeze_bn_after_epochs) * steps_per_epoch
    qat, report = quantize_model(
        model,
        weights=weights,
        calibration_data=x[:CALIBRATION_SAMPLES],
        freeze_bn_after_steps=frozen_after,
        return_report=True,
    )
    qat.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=loss,
        metrics=["accuracy"] if np.ndim(y) == 1 else None,
        jit_compile=jit_compile,
    )
    history = qat.fit(
        x,
        y,
        batch_size=batch_size,
        epochs=epochs,
        validation_data=validation_data,
        callbacks=callbacks,
        verbose=0,
    )
    sync_input_steps(qat)
    return QatResult(qat, report, dict(history.history), frozen_after)


def bn_freeze_epoch(epochs: int, freeze_bn_after_epochs: int | None = None) -> int:
    """The epoch after which `fine_tune` freezes the BN statistics, checked.

    Callers that train before fine-tuning (the QAT benchmark) check their
    settings with it first, so a bad value fails before any training.

    Args:
        epochs: fine-tuning epochs (at least 1).
        freeze_bn_after_epochs: as `fine_tune`; `None` is `epochs - 1`.

    Returns:
        The number of epochs that train with BN statistics learning.

    Raises:
        ValueError: `epochs` below 1 or `freeze_bn_after_epochs` outside
            `[0, epochs]`.

    Example:

    >>> bn_freeze_epoch(3)
    2
    """
    if not _is_int(epochs) or epochs < 1:
        raise ValueError(f"`epochs` must be an int ≥ 1. Received: epochs={epochs!r}")
    if freeze_bn_after_epochs is None:
        return epochs - 1
    if not _is_int(freeze_bn_after_epochs) or not 0 <= freeze_bn_after_epochs <= epochs:
        raise ValueError(
            f"`freeze_bn_after_epochs` must be None or an int in [0, epochs={epochs}]. "
            f"Received: freeze_bn_after_epochs={freeze_bn_after_epochs!r}"
        )
    return freeze_bn_after_epochs


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
