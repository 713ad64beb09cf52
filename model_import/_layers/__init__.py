"""Converters from Keras layer classes to JAX functions, one small function per class.

Importing this package fills the registry (:mod:`model_import._layers.registry`).
"""

from model_import._layers import activations as _activations  # noqa: F401
from model_import._layers import core as _core  # noqa: F401
from model_import._layers import conv as _conv  # noqa: F401
from model_import._layers import pooling as _pooling  # noqa: F401
from model_import._layers import convnext as _convnext  # noqa: F401
from model_import._layers import image as _image  # noqa: F401
from model_import._layers import merge as _merge  # noqa: F401
from model_import._layers import normalization as _normalization  # noqa: F401
from model_import._layers import ops as _ops  # noqa: F401
from model_import._layers import reshaping as _reshaping  # noqa: F401
from model_import._layers import tf_ops as _tf_ops  # noqa: F401
from model_import._layers import masking as _masking  # noqa: F401
from model_import._layers import sequence as _sequence  # noqa: F401
from model_import._layers import convlstm as _convlstm  # noqa: F401
from model_import._layers import attention as _attention  # noqa: F401
from model_import._layers import augment as _augment  # noqa: F401
from model_import._layers import audio as _audio  # noqa: F401
from model_import._layers import wrappers as _wrappers  # noqa: F401
from model_import._layers import encoding as _encoding  # noqa: F401
from model_import._layers.registry import _freeze_builtins

_freeze_builtins()  # converters registered from here on are the users'
