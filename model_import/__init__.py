"""Keras model files -> pure JAX functions, without TensorFlow or Keras.

``load_keras(path)`` reads legacy ``.h5`` files (Keras 2, tf.keras, Keras 3), ``.keras``
archives (Keras 3, tf.keras 2.13+) and weights-only files, and returns a
:class:`KerasModel`: a pure ``apply(params, x)`` over an explicit params pytree, with a
configurable head, named-layer outputs and gradients, and swappable ReLU backward rules.
"""

from model_import import _layers  # noqa: F401  (fills the converter registry)
from model_import._errors import KerasImportError, UnsupportedLayerError
from model_import._graph import LayerCallError
from model_import._layers.activations import ACTIVATION_NAMES, register_activation
from model_import._layers.registry import (BackendWarning, CellImpl, ConvertContext, LayerImpl,
                                           Runtime, register_layer, registered_classes)
from model_import._load import build_model, load_keras
from model_import._model import HEADS, KerasModel, LayerInfo
from model_import._version import KERAS_BACKENDS

__all__ = [
    "ACTIVATION_NAMES",
    "BackendWarning",
    "CellImpl",
    "ConvertContext",
    "HEADS",
    "KERAS_BACKENDS",
    "KerasImportError",
    "KerasModel",
    "LayerCallError",
    "LayerImpl",
    "LayerInfo",
    "Runtime",
    "UnsupportedLayerError",
    "build_model",
    "load_keras",
    "register_activation",
    "register_layer",
    "registered_classes",
]
