"""Converters from Keras layer classes to JAX functions, one small function per class.

Importing this package fills the registry (:mod:`model_import._layers.registry`).
"""

from model_import._layers import activations as _activations  # noqa: F401
from model_import._layers import core as _core  # noqa: F401
from model_import._layers import conv as _conv  # noqa: F401
from model_import._layers import pooling as _pooling  # noqa: F401
