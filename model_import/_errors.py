"""Exceptions raised by :mod:`model_import`."""

from __future__ import annotations


class KerasImportError(ValueError):
    """A Keras file or architecture cannot be read or converted.

    The message always names the file (when there is one) and what was wrong.
    """

    def __init__(self, message: str, *, path: str | None = None):
        self.path = path
        if path is not None:
            message = f"{_shown_path(path)}: {message}"
        super().__init__(message)


def _shown_path(path: str, limit: int = 300) -> str:
    """``path`` as a message shows it: bytes that are no UTF-8 (a name given as bytes,
    decoded with surrogate escapes) as backslash escapes, so that the message can be
    printed and encoded; a path longer than ``limit`` characters cut in the middle."""
    shown = str(path).encode("utf-8", "backslashreplace").decode("utf-8")
    if len(shown) > limit:
        shown = f"{shown[:limit // 2]}...{shown[-limit // 2:]} ({len(shown)} characters)"
    return shown


class UnsupportedLayerError(KerasImportError):
    """A layer class has no converter.

    Attributes:
      layer_name: the layer's name in the Keras model.
      class_name: its Keras class.
      needs: the class whose converter would let the layer load, where the message says
        to supply one: ``class_name``, or the class of a layer it holds or of its activation
        (a layer inside ``TimeDistributed``); ``None`` where a converter cannot help.

    ``own=True`` says that ``needs`` is a class of the model's own code: where Keras has a
    class of that name too, the message leads with registering the class under a package.
    """

    _SAME = object()

    def __init__(self, layer_name: str, class_name: str, *, path: str | None = None,
                 detail: str = "", needs: str | None | object = _SAME, own: bool = False):
        self.layer_name = layer_name
        self.class_name = class_name
        self.needs = class_name if needs is UnsupportedLayerError._SAME else needs
        msg = (f"layer {layer_name!r} of class {class_name!r} cannot be ported to JAX"
               f"{': ' + detail if detail else ''}.")
        if self.needs is not None:
            msg += " " + _converter_advice(self.needs, own)
        if class_name == "Lambda":
            msg += (" Every Lambda layer of a model goes to that one converter with its own "
                    "config: tell them apart by config['name'] (here "
                    f"{layer_name!r}).")
        super().__init__(msg, path=path)


def _converter_advice(needs: str, own: bool = False) -> str:
    """How to supply a converter for class ``needs``: ``register_layer(needs)`` refuses a
    name that already has a converter (model_import's own, as for ``LSTM``) unless told
    ``override=True``, which replaces that converter for every later load; the load's
    ``custom_layers=`` is then offered first. A class of the model's own code (``own``) named
    like a Keras class (an unregistered ``Dense``) shares its name with Keras's layers of the
    model: a converter under that name would serve them too, so the class is to be
    registered under a package, whose ``"package>Dense"`` name its converter is given."""
    from model_import._layers.registry import lookup

    if own and ">" not in needs and lookup(needs) is not None:
        return (f"A converter given under {needs!r} (custom_layers={{{needs!r}: converter}}, "
                f"register_layer({needs!r}, override=True)) serves every {needs} layer of "
                f"the model, Keras's {needs} included, and suits only a model without one. "
                "Give the class a name of its own: decorate it with "
                "@keras.saving.register_keras_serializable(package='mypkg'), build the model "
                f"with it and save it again (the file then records 'mypkg>{needs}'), and "
                f"pass custom_layers={{'mypkg>{needs}': converter}} to load_keras (see "
                "model_import.register_layer's docstring for the converter).")
    if lookup(needs) is None:
        return (f"Supply a JAX implementation with model_import.register_layer({needs!r}) "
                "(see model_import.register_layer's docstring), or pass "
                f"custom_layers={{{needs!r}: converter}} to load_keras.")
    return (f"Supply a JAX implementation for this load with load_keras(..., "
            f"custom_layers={{{needs!r}: converter}}) (see model_import.register_layer's "
            f"docstring for the converter), or globally with model_import.register_layer("
            f"{needs!r}, override=True), which replaces the {needs} converter registered "
            "now (the importer's own) in every later load.")


#: JAX's message when forward-mode differentiation meets a ``jax.custom_vjp`` function.
_JVP_OF_CUSTOM_VJP = "can't apply forward-mode autodiff (jvp) to a custom_vjp function"


def forward_mode_error(error: BaseException, where: str) -> TypeError | None:
    """The clear error to raise instead of ``error`` when it is JAX's refusal of forward
    mode through a ``jax.custom_vjp`` function (else ``None``); ``where`` names the layer."""
    if not isinstance(error, TypeError) or _JVP_OF_CUSTOM_VJP not in str(error):
        return None
    return TypeError(
        f"{where}: forward-mode differentiation (jax.jvp, jax.jacfwd, jax.linearize, "
        "jax.hessian's outer jacfwd) reached a jax.custom_vjp function, which JAX "
        "differentiates in reverse mode "
        "only: an imported model computes its convolutions and non-overlapping max pooling "
        "through custom VJPs (XLA:CPU runs their reverse mode several times faster), and "
        "guided backprop, deconvnet, DeepLIFT and LRP install their backward rules as custom "
        "VJPs. Expected reverse mode through the model's forward values: use jax.grad, "
        "jax.vjp or jax.jacrev (a Hessian as jax.jacrev(jax.jacrev(f))). jax.jvp of an "
        "input-gradient map (saliency, gradient_x_input, integrated_gradients) works: "
        "forward mode over the method's own reverse pass; a CAM's activations and the "
        "forward-only methods' scores need reverse mode (README: 'Differentiating through "
        f"the methods'). JAX's error: {error}")
