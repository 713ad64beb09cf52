"""Checks run in Python before anything heavy is traced, compiled or run.

Every public method calls :func:`prepare`: it resolves the model variant (head, backward rule),
checks the input (dtype, shape against the model, NaN/inf), the targets (kind, ids in range)
and, for CAMs, the layer (exists, has spatial axes). Errors say what was expected, what was
given and how to fix it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import base
from jaxsal._src.targets import ClassScore, LayerScore, OutputInfo, TargetSpec, parse_targets

Array = jax.Array


@jax.jit
def _all_finite(x):
    return jnp.isfinite(x).all()


_AT_A_LAYER = ("Attribute at a layer instead, e.g. the embedding: "
               "jaxsal.integrated_gradients(model, x, layer='embedding') (also saliency and "
               "gradient_x_input).")


def integer_input(model: Any) -> str | None:
    """The dtype of a model's (first) input when it is an integer one (token ids), else
    ``None``: a :class:`model_import.KerasModel` records it from its ``InputLayer``."""
    dtypes = getattr(getattr(model, "graph", None), "input_dtypes", None)
    return str(dtypes[0]) if dtypes and "int" in str(dtypes[0]) else None


def check_input(model: Any, x: Any, *, check_finite: bool = True, spatial: bool = False,
                allow_int: bool = False) -> Array:
    """``x`` as a floating JAX array of shape ``(N, *model.input_shape)`` (integer token ids
    too with ``allow_int``: methods attributing at a layer), or a clear error."""
    if isinstance(x, (list, tuple)) and x and hasattr(x[0], "shape"):
        raise TypeError("expected one input array x of shape (N, H, W, C), got a list; "
                        "multi-input models are not supported by the attribution methods")
    if not isinstance(x, jax.Array):
        try:
            x = np.asarray(x)
        except Exception as e:  # noqa: BLE001  (ragged lists and other junk)
            raise TypeError(f"expected x as an array (N, H, W, C), got {type(x).__name__}: {e}")
    dtype = x.dtype
    ids_dtype = integer_input(model)
    if ids_dtype is not None and not allow_int:  # the ids' gradient would be silently zero
        raise TypeError(f"this model takes integer inputs ({ids_dtype}: token ids or other "
                        f"codes), which have no gradient. {_AT_A_LAYER}")
    if jnp.issubdtype(dtype, jnp.integer) and not allow_int:
        raise TypeError(f"expected a floating-point input, got integer dtype {dtype}. Images: "
                        "convert and preprocess first, e.g. x.astype(np.float32) / 255. Token "
                        f"ids (or other integer codes) have no gradient: {_AT_A_LAYER}")
    if not jnp.issubdtype(dtype, jnp.floating) and not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"expected a floating-point input (the model's preprocessed input, e.g. "
                        f"float32 in [0, 1]), got dtype {dtype}. Convert and preprocess it "
                        "first, e.g. x.astype(np.float32) / 255.")
    shape = getattr(model, "input_shape", None)
    if spatial and x.ndim not in (3, 4, 5):
        missing_batch = isinstance(shape, tuple) and x.ndim == len(shape)
        raise ValueError(f"expected x with 1 to 3 axes besides the batch and channel axes "
                         f"(signals (N, L, C), images (N, H, W, C), volumes (N, D, H, W, C)), "
                         f"got shape {tuple(x.shape)}"
                         + (" (add a batch axis: x[None])" if missing_batch else ""))
    if isinstance(shape, tuple) and all(isinstance(d, (int, type(None))) for d in shape):
        ok = x.ndim == len(shape) + 1 and all(d is None or d == s
                                              for d, s in zip(shape, x.shape[1:]))
        if not ok:
            want = ", ".join("?" if d is None else str(d) for d in shape)
            hint = " Add a batch axis for one example: x[None]." if x.ndim == len(shape) else ""
            raise ValueError(f"expected x of shape (N, {want}) for this model, got "
                             f"{tuple(x.shape)}.{hint}")
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"expected a batch of at least one input, got shape {tuple(x.shape)}")
    check_ids = getattr(model, "check_token_ids", None)
    if ids_dtype is not None and check_ids is not None:
        check_ids(x)  # ids outside an Embedding's vocabulary: NaN rows, refused here
    if check_finite and not isinstance(x, jax.core.Tracer):
        finite = np.isfinite(x).all() if isinstance(x, np.ndarray) else bool(_all_finite(x))
        if not finite:
            raise ValueError("x contains NaN or infinite values; attribution maps of such inputs "
                             "are meaningless. Clean the input (np.nan_to_num) or pass "
                             "check_finite=False.")
    return jnp.asarray(x)


def check_layer(model: Any, layer: str) -> str:
    """The layer name as the model resolves it, or a ``ValueError`` listing valid names."""
    if not isinstance(layer, str):
        raise TypeError(f"expected layer= as a layer name (str), got {type(layer).__name__}")
    names = list(getattr(model, "layer_names", []) or [])
    resolve = getattr(model, "resolve_layer", None)
    if resolve is not None:
        return resolve(layer)  # raises ValueError listing the valid names
    if layer not in names:
        raise ValueError(f"unknown layer {layer!r}; valid layer names: "
                         f"{', '.join(names) if names else '(none)'}")
    return layer


def check_spatial(layer: str, shape: tuple, x_ndim: int, data_format: str | None) -> None:
    """A CAM layer must have the input's spatial axes and a channel axis: ``(N, h, w, K)``
    for images (``(N, K, h, w)`` channels-first), ``(N, l, K)`` for signals..."""
    if len(shape) != x_ndim or data_format is None:
        raise ValueError(f"layer {layer!r} has output shape {tuple(shape)} (batch first); a CAM "
                         f"needs a layer with the input's {x_ndim - 2} spatial axes and a "
                         "channel axis, e.g. the last convolution (see "
                         "jaxsal.default_cam_layer(model) and jaxsal.spatial_layers(model))")


def layer_format(model: Any, layer: str) -> str | None:
    """The layout of ``layer``'s output (``"channels_last"`` for a plain function)."""
    fmt = getattr(model, "layer_data_format", None)
    return "channels_last" if fmt is None else fmt(layer)


def to_channels_last(a: Array, channels_first: bool, axis: int = 1) -> Array:
    """``a`` with its channel axis (``axis`` when ``channels_first``) moved last."""
    return jnp.moveaxis(a, axis, -1) if channels_first else a


@dataclasses.dataclass
class Prepared:
    """A validated call: the model variant, its cache key, params, input and targets."""

    model: Any
    key: Any
    params: Any
    x: Array
    spec: TargetSpec
    ids: Array | None
    info: OutputInfo
    channels_first: bool = False

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The input's spatial size: ``(H, W)`` of ``(N, H, W, C)`` or ``(N, C, H, W)``."""
        return spatial_shape(self.x.shape, self.channels_first)

    @property
    def map_channel_axis(self) -> int:
        """The channel axis of an ``(N, T, *x.shape[1:])`` array of per-target gradients."""
        return 2 if self.channels_first else -1


def is_channels_first(model: Any, ndim: int) -> bool:
    """Whether ``model`` takes ``ndim``-dimensional inputs channels-first, ``(N, C, ...)``:
    a :class:`model_import.KerasModel` says so by its ``data_format`` (a plain function is
    channels-last)."""
    return ndim >= 3 and getattr(model, "data_format", "channels_last") == "channels_first"


def spatial_shape(shape: tuple, channels_first: bool) -> tuple[int, ...]:
    """The spatial axes' sizes of a batched ``shape``."""
    return tuple(shape[2:]) if channels_first else tuple(shape[1:-1])


def _score_functions(targets: Any) -> bool:
    return callable(targets) or (isinstance(targets, (list, tuple)) and bool(targets)
                                 and all(callable(t) for t in targets))


def check_scores(model: Any, spec: TargetSpec, y: Any, caps: dict) -> None:
    """Static checks of the score functions made by :func:`jaxsal.class_score` and
    :func:`jaxsal.neuron` against the shapes they read (``y``: the model's abstract outputs,
    ``caps``: the captured layers'): an index out of range raises here, where JAX would
    clamp it and silently explain another unit."""
    for fn in spec.scores:
        if isinstance(fn, ClassScore):
            if isinstance(y, (list, tuple)):
                listing, first = base.several_outputs(model, [o.shape for o in y])
                raise ValueError(f"{fn!r} reads one output array, but this model has {len(y)} "
                                 f"outputs ({listing}). {base.pick_output_hint(model, first)}, "
                                 "or write a score function of the list of outputs: "
                                 "targets=lambda outs: outs[0][:, k]")
            fn.check_shape(tuple(y.shape))
        elif isinstance(fn, LayerScore):
            fn.check_shape(tuple(caps[fn.layer].shape))


def prepare(model: Any, x: Any, targets: Any, *, head: str | None = None,
            backprop: str | None = None, check_finite: bool = True,
            spatial: bool = False, allow_int: bool = False) -> Prepared:
    """Validate everything a method needs (see the module docstring)."""
    m = base.with_options(model, head, backprop)
    xa = check_input(m, x, check_finite=check_finite, spatial=spatial,
                     allow_int=allow_int)
    y, _ = base.model_shapes(m, xa)
    if isinstance(y, (list, tuple)) and not _score_functions(targets):
        listing, first = base.several_outputs(m, [o.shape for o in y])
        raise ValueError(f"this model has {len(y)} outputs ({listing}); class ids and the "
                         f"predicted class need one. {base.pick_output_hint(m, first)}, or "
                         "pass a score function of the list of outputs: "
                         "targets=lambda outs: outs[0][:, k]")
    units = None
    if isinstance(y, jax.ShapeDtypeStruct) and len(y.shape) == 2:
        units = int(y.shape[1])
    kind, complement = base.output_kind(m)
    if units == 1 and getattr(m, "head", None) == "softmax":
        raise ValueError("head='softmax' on a one-unit output is constant (1.0) and has zero "
                         "gradients; use head='sigmoid', 'sigmoid_complement' or 'logits'")
    info = OutputInfo(units, kind, complement)
    spec, ids = parse_targets(targets, int(xa.shape[0]), info)
    caps = {}
    if spec.layers:
        for layer in spec.layers:
            check_layer(m, layer)
        _, caps = base.model_shapes(m, xa, spec.layers)
        # a channel score reads the channel axis of the layer's own layout
        spec = dataclasses.replace(spec, scores=tuple(
            dataclasses.replace(fn, channels_first=layer_format(m, fn.layer) == "channels_first")
            if isinstance(fn, LayerScore) and not isinstance(fn.index, tuple) else fn
            for fn in spec.scores))
    check_scores(m, spec, y, caps)
    return Prepared(m, base.model_key(m), m.params, xa, spec,
                    None if ids is None else jnp.asarray(ids), info,
                    is_channels_first(m, xa.ndim))


@dataclasses.dataclass(frozen=True)
class LayerTarget:
    """The layer a gradient method attributes to (``layer=``): its resolved name, output
    shape (batch first, the model's own layout) and whether that is channels-first."""

    name: str
    shape: tuple
    channels_first: bool

    @property
    def map_channel_axis(self) -> int:
        """The channel axis of an ``(N, T, *shape[1:])`` array of per-target gradients."""
        return 2 if self.channels_first else -1


def layer_output(p: Prepared, layer: str) -> tuple[str, tuple, str | None]:
    """``(name, shape, data_format)`` of a layer's output for the prepared call: its name as
    the model resolves it (or a ``ValueError`` listing the valid ones), its shape (batch
    first, the model's own layout) and layout (:func:`layer_format`)."""
    name = check_layer(p.model, layer)
    _, caps = base.model_shapes(p.model, p.x, (name,))
    if isinstance(caps[name], (list, tuple)):
        raise ValueError(f"layer {layer!r} has {len(caps[name])} outputs (an RNN with "
                         "return_state=True, say); attribution at a layer needs one output: "
                         "pick a layer with a single output (the layer after it)")
    return name, tuple(caps[name].shape), layer_format(p.model, name)


def prepare_layer(p: Prepared, layer: str, reduce: str | None) -> LayerTarget:
    """Validate ``layer=`` of a gradient method: the layer exists, and a channel reduction
    has a channel axis to reduce (the last one, or the first for a channels-first layer:
    an embedding's ``(N, L, E)`` reduces over ``E``)."""
    name, shape, fmt = layer_output(p, layer)
    if reduce is not None and len(shape) < 3:  # (N, units): nothing to reduce over
        raise ValueError(f"layer {layer!r} has output shape {shape} (batch first) and no "
                         f"channel axis for reduce={reduce!r} to collapse; pass reduce=None "
                         "for one attribution per unit")
    return LayerTarget(name, shape, fmt == "channels_first")
