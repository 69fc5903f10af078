"""keras.applications networks fold completely and still agree.

ResNet50, MobileNetV2 and EfficientNetB0 with `weights=None` and seeded
stand-in BN statistics (`keras_bn.models.stand_in_application`, with the
default spread for deep networks), built at small input sizes to keep the suite
fast (the graph, and so every fold, is the same at 224x224). Every BN must be folded into a
convolution — these networks have no BN that lacks a linear neighbour — and
the folded network must match the original within FOLD_APPLICATIONS_RTOL.
"""

import keras
import numpy as np
import pytest

from keras_bn.folding import fold_batchnorm
from keras_bn.models import stand_in_application
from keras_bn.stand_in_statistics import set_stand_in_statistics
from tests.helpers.folding import (
    count_affine,
    count_batchnorm,
    relative_error,
)
from tests.tolerances import FOLD_APPLICATIONS_RTOL

pytestmark = pytest.mark.slow

APPLICATIONS = {"ResNet50": 64, "MobileNetV2": 96, "EfficientNetB0": 64}


@pytest.fixture(scope="module", params=sorted(APPLICATIONS))
def application(request):
    size = APPLICATIONS[request.param]
    # Logits, not softmax: probabilities would hide differences.
    return stand_in_application(
        request.param,
        (size, size, 3),
        seed=7,
        classes=10,
        classifier_activation=None,
    )


def test_application_folds_completely_and_agrees(application):
    rng = np.random.default_rng(11)
    x = rng.uniform(0.0, 255.0, size=(2, *application.inputs[0].shape[1:]))
    x = x.astype("float32")
    folded, report = fold_batchnorm(application, data=x, return_report=True)
    assert count_batchnorm(folded) == 0 and count_affine(folded) == 0
    assert len(report.folded) == len(report) == count_batchnorm(application)
    error = relative_error(folded(x), application(x, training=False))
    assert error <= FOLD_APPLICATIONS_RTOL, f"{error:.3g}"


def test_backbone_inside_a_sequential_classifier():
    backbone = keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(96, 96, 3)
    )
    model = keras.Sequential(
        [
            keras.Input((96, 96, 3)),
            backbone,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.BatchNormalization(name="head_bn"),
            keras.layers.Dense(5, name="head"),
        ]
    )
    rng = np.random.default_rng(3)
    set_stand_in_statistics(model, seed=3)
    x = rng.normal(size=(2, 96, 96, 3)).astype("float32")
    folded, report = fold_batchnorm(model, data=x, return_report=True)
    assert count_batchnorm(folded) == count_affine(folded) == 0
    assert report.entry("head_bn").into == "head"
    assert all(e.batchnorm.startswith(backbone.name + "/") for e in report.entries[:-1])
    assert relative_error(folded(x), model(x, training=False)) <= FOLD_APPLICATIONS_RTOL
