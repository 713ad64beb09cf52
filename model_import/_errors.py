"""Exceptions raised by :mod:`model_import`."""

from __future__ import annotations


class KerasImportError(ValueError):
    """A Keras file or architecture cannot be read or converted.

    The message always names the file (when there is one) and what was wrong.
    """

    def __init__(self, message: str, *, path: str | None = None):
        self.path = path
        if path is not None:
            message = f"{path}: {message}"
        super().__init__(message)


class UnsupportedLayerError(KerasImportError):
    """A layer class has no converter.

    Attributes:
      layer_name: the layer's name in the Keras model.
      class_name: its Keras class.
    """

    def __init__(self, layer_name: str, class_name: str, *, path: str | None = None,
                 detail: str = ""):
        self.layer_name = layer_name
        self.class_name = class_name
        msg = (
            f"layer {layer_name!r} of class {class_name!r} cannot be ported to JAX"
            f"{': ' + detail if detail else ''}. Supply a JAX implementation with "
            f"model_import.register_layer({class_name!r}) (see model_import.register_layer's "
            f"docstring), or pass custom_layers={{{class_name!r}: converter}} to load_keras."
        )
        if class_name == "Lambda":
            msg += (" Every Lambda layer of a model goes to that one converter with its own "
                    "config: tell them apart by config['name'] (here "
                    f"{layer_name!r}).")
        super().__init__(msg, path=path)
