"""One scale-relative error, `max|y_new - y| / max|y|`, for folding and export."""

import math

import numpy as np
import pytest

from keras_bn.export.parity import compare
from keras_bn.folding.verification import scale_relative_error


@pytest.mark.parametrize(
    "max_abs_error, scale, expected",
    [
        (1e-6, 2.0, 5e-7),
        (0.0, 2.0, 0.0),
        (0.0, 0.0, 0.0),  # an all-zero output reproduced exactly
        (1e-6, 0.0, math.inf),  # no scale: any difference is unbounded
    ],
)
def test_the_rule(max_abs_error, scale, expected):
    assert scale_relative_error(max_abs_error, scale) == expected


def test_export_parity_applies_the_same_rule_to_an_all_zero_output():
    zeros = np.zeros((2, 3), np.float32)
    off = np.full((2, 3), 1e-6, np.float32)
    report = compare("m.onnx", "onnx", (2, 4), zeros, off, tolerance=1e-3)
    assert report.max_rel_error == math.inf and not report.passed
    report = compare("m.onnx", "onnx", (2, 4), zeros, zeros, tolerance=1e-3)
    assert report.max_rel_error == 0.0 and report.passed
