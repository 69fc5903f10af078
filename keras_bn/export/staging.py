"""Publish an exported file only once it computes what the Keras model computes.

The staged write itself is `keras_bn.staging` (shared with `.keras` saving);
this module adds the exporters' check between writing and publishing.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import numpy as np

from keras_bn.export import runtimes
from keras_bn.export.op_counts import op_histogram
from keras_bn.export.parity import compare
from keras_bn.export.report import ParityError, ParityReport
from keras_bn.staging import staged_file

__all__ = ["publish_checked"]


def publish_checked(
    path: str,
    write: Callable[[str], None],
    x: np.ndarray,
    reference: np.ndarray,
    tolerance: float,
    *,
    rule: str | None = None,
    not_simulated: str | None = None,
    model_name: str = "",
) -> tuple[ParityReport, dict[str, int], int]:
    """Writes a file next to `path`, checks it, and only then moves it in place.

    Inside `keras_bn.staging.published_together`, the move waits for the
    group's end (an export of several formats publishes all or none).

    Args:
        path: The destination.
        write: Called with the temporary path; writes the file there.
        x: The inputs to run.
        reference: The Keras model's outputs on `x`.
        tolerance: The scale-relative bound the file must meet.
        rule: Where `tolerance` came from (`ParityReport.rule`).
        not_simulated: Why no int8 simulation judges the file instead, if so.
        model_name: The model's name, for the error.

    Returns:
        The `ParityReport`, the file's op histogram and its size in bytes.

    Raises:
        ParityError: The file disagrees with the model; nothing is left behind.
    """
    with staged_file(path) as tmp:
        write(tmp)
        file_format = runtimes.detect_format(tmp)
        outputs = runtimes.run_file(tmp, x)
        parity = compare(path, file_format, x.shape, reference, outputs, tolerance)
        parity = dataclasses.replace(parity, rule=rule, not_simulated=not_simulated)
        if not parity.passed:
            raise ParityError(parity, path, model_name)
        histogram = op_histogram(tmp)
        file_size = os.path.getsize(tmp)
    return parity, histogram, file_size
