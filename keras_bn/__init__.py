"""keras_bn: Batch Normalization for Keras 3 with an analytic backward pass.

- `keras_bn.BatchNormalization`: drop-in for `keras.layers.BatchNormalization`.
- `keras_bn.fold_batchnorm`: an inference model with every BN folded away.
- `keras_bn.population_statistics`: re-estimates the BN statistics (Algorithm 2);
  `convert_batchnorm` puts our layer into any model, `freeze_batchnorm` freezes
  BN for fine-tuning.
- `keras_bn.export`: TFLite and ONNX files of the folded model, parity-checked.
- `keras_bn.quantization`: quantization-aware training with BN folded in, for
  int8 files judged exactly against the model (docs/quantization.md).

The names are imported on first use (PEP 562), so `import keras_bn` and the
`keras-bn` command line's help and usage errors do not import TensorFlow.
Keras can still load a `.keras` file holding our layer in a process that only
did `import keras_bn`: the layer registers itself for deserialization when
`keras_bn.layers` is imported, and that happens as soon as Keras is (now, if
Keras already is).

Importing keras_bn before TensorFlow sets `keras_bn.defaults.TENSORFLOW_ENVIRONMENT`
(oneDNN on, so `channels_first` convolutions run on every CPU), except the
variables the user set; once TensorFlow is loaded it is left alone.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import sys

from keras_bn.defaults import TENSORFLOW_ENVIRONMENT

__version__ = "0.1.0"

if "tensorflow" not in sys.modules:
    for _name, _value in TENSORFLOW_ENVIRONMENT.items():
        os.environ.setdefault(_name, _value)

# Public name -> the module that owns it.
PUBLIC_NAMES = {
    "BatchNormalization": "keras_bn.layers",
    "FoldReport": "keras_bn.folding",
    "PopulationReport": "keras_bn.population",
    "convert_batchnorm": "keras_bn.conversion",
    "fold_batchnorm": "keras_bn.folding",
    "freeze_batchnorm": "keras_bn.freezing",
    "population_statistics": "keras_bn.population",
    "with_population_statistics": "keras_bn.population",
}
SUBMODULES = ("export", "quantization")

__all__ = ["__version__", *SUBMODULES, *sorted(PUBLIC_NAMES)]


def __getattr__(name: str):
    if name in PUBLIC_NAMES:
        value = getattr(importlib.import_module(PUBLIC_NAMES[name]), name)
        globals()[name] = value
        return value
    if name in SUBMODULES:
        return importlib.import_module(f"keras_bn.{name}")
    raise AttributeError(f"module 'keras_bn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class RegisterLayerWithKeras(importlib.abc.MetaPathFinder):
    """Imports `keras_bn.layers` right after Keras, so that the layer is registered.

    `keras.saving.load_model` finds custom layers in Keras' registry, which
    `keras_bn.layers` fills at import; with lazy names nothing else would
    import it before a user loads a model. The finder only wraps Keras' own
    loader, once, and removes itself.
    """

    def find_spec(self, fullname, path, target=None):
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_keras = spec.loader.exec_module

        def exec_module(module):
            exec_keras(module)
            importlib.import_module("keras_bn.layers")

        spec.loader.exec_module = exec_module
        return spec


if "keras" in sys.modules:
    importlib.import_module("keras_bn.layers")
elif not any(isinstance(f, RegisterLayerWithKeras) for f in sys.meta_path):
    sys.meta_path.insert(0, RegisterLayerWithKeras())
