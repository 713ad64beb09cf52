"""BatchNormalization folded into the layer before it, for LRP (zennit's
``SequentialMergeBatchNorm`` canonizer).

A ``BatchNormalization`` at inference is the affine map ``y = s z + t`` per channel (``s =
gamma / sqrt(var + eps)``, ``t = beta - mean * s``). Where it directly follows a convolution
or ``Dense`` layer ``z = W x + b`` (no activation between them, and nothing else reading
``z``), the two are one layer ``y = (s W) x + (s b + t)``. LRP's rules are defined on such
layers: on the pair as written, the rule of the convolution sees ``W`` and ``b`` and the
batch norm gets a rule of its own (the epsilon rule), whose shift ``t`` absorbs or
amplifies relevance; folded, the convolution's rule sees the merged weights and bias, and
the batch norm passes relevance on unchanged. Forward values are the same (up to float
rounding).

Folding is a params transform applied inside the compiled program (the params stay
arguments) and one rule: :class:`FoldedBatchNorm` makes the folded batch norm's call the
identity. A kernel layer without a bias takes the merged bias through
``model_import._layers.registry.accepts_bias``.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable, ClassVar, Mapping

import jax

from jaxsal._src.lrp_rules import LRPRule
from model_import._graph import Ref

Array = jax.Array

BATCH_NORMS = ("BatchNormalization", "SyncBatchNormalization")


def _kernel_slot(class_name: str) -> tuple[str, int] | None:
    """(the kernel whose output-channel axis ``s`` scales, that axis) for the layers that a
    batch norm can fold into; ``None`` for others."""
    if "Transpose" in class_name and ("Conv" in class_name):
        return "kernel", -2  # Keras's transposed kernels are (..., out, in)
    if class_name.startswith(("DepthwiseConv", "DepthwiseConvolution")):
        return "depthwise_kernel", -1  # stored (..., 1, in * multiplier)
    if class_name.startswith(("SeparableConv", "SeparableConvolution")):
        return "pointwise_kernel", -1
    if class_name in ("Dense", "Conv1D", "Conv2D", "Conv3D", "Convolution1D", "Convolution2D",
                      "Convolution3D"):
        return "kernel", -1
    return None


@dataclasses.dataclass(frozen=True)
class Fold:
    """One batch norm folded into the layer before it: their param paths (chains of layer
    names from the model's params), the kernel and axis ``s`` scales, and the batch norm's
    configuration."""

    layer: tuple[str, ...]
    batch_norm: tuple[str, ...]
    kernel: str
    axis: int
    epsilon: float
    scale: bool
    center: bool

    @property
    def layer_path(self) -> str:
        return "/".join(self.layer)

    @property
    def batch_norm_path(self) -> str:
        return "/".join(self.batch_norm)


def _unwrapped(spec: Any) -> tuple[str, Mapping[str, Any], int]:
    """The class name and config of the layer that ``spec`` (a ``LayerSpec``) is or wraps in
    ``TimeDistributed`` (whose params are the wrapped layer's), and how many wrappers."""
    depth, lc = 0, {"class_name": spec.class_name, "config": spec.config or {}}
    while lc.get("class_name") == "TimeDistributed" and isinstance(
            (lc.get("config") or {}).get("layer"), Mapping):
        depth, lc = depth + 1, lc["config"]["layer"]
    return lc.get("class_name", spec.class_name), lc.get("config") or {}, depth


def fold_plan(model: Any, keep: frozenset[str] = frozenset()) -> tuple[Fold, ...]:
    """Every ``BatchNormalization`` of ``model`` (a ``KerasModel``) that directly follows a
    convolution or ``Dense`` layer, normalizes that layer's channel axis, and is the only
    reader of its output: each called once, the layer without a fused activation, its output
    not a model output, and neither named in ``keep`` (a layer whose output the caller
    reads). Either or both may be wrapped in ``TimeDistributed`` (its params are the wrapped
    layer's; the axes count as the wrapped layer sees them). Nested models' pairs are found
    inside each nested model."""
    folds: list[Fold] = []

    def walk(graph, chain: tuple[str, ...]):
        counts = collections.Counter(call.layer for call in graph.calls)
        consumers = graph._consumers()
        outputs = {(r.layer, r.node) for r in graph.outputs}
        for call in graph.calls:
            spec = graph.layers[call.layer]
            if spec.impl.subgraph is not None:
                walk(spec.impl.subgraph, chain + (call.layer,))
            cls_b, cfg, depth_b = _unwrapped(spec)
            if (cls_b not in BATCH_NORMS or counts[call.layer] != 1
                    or not spec.impl.relevance):
                continue
            refs = [a for a in call.args if isinstance(a, Ref)]
            if len(call.args) != 1 or len(refs) != 1:
                continue
            src = graph.layers.get(refs[0].layer)
            cls_l, _, depth_l = _unwrapped(src) if src is not None else (None, None, 0)
            slot = None if src is None else _kernel_slot(cls_l)
            # (a wrapped layer's named activation is the wrapper's; with another, the wrapper
            # is no rule layer: relevance is False)
            if (slot is None or counts.get(src.name, 0) != 1 or refs[0].node != 0
                    or src.impl.activation not in (None, "linear") or not src.impl.relevance
                    or (refs[0].layer, 0) in outputs
                    or [c.layer for c in consumers.get((refs[0].layer, 0), [])] != [call.layer]
                    or cfg.get("virtual_batch_size") is not None or cfg.get("renorm")):
                continue
            path_l = "/".join(chain + (src.name,))
            path_b = "/".join(chain + (call.layer,))
            if path_l in keep or path_b in keep:
                continue
            axis = cfg.get("axis", -1)
            if isinstance(axis, (list, tuple)):
                if len(axis) != 1:
                    continue
                axis = axis[0]
            shape = model.layer(path_l).output_shape
            if not isinstance(shape, tuple):
                continue
            rank = len(shape) + 1
            # channels-first inside TimeDistributed: after the batch and the time axes
            channel = 1 + depth_l if src.impl.data_format == "channels_first" else rank - 1
            # a wrapped batch norm's axis counts in the tensor it sees, whose first axis is
            # the batch and time axes merged
            inner = rank - depth_b
            if not (-inner <= int(axis) < inner) or int(axis) % inner == 0 \
                    or int(axis) % inner + depth_b != channel:
                continue
            folds.append(Fold(chain + (src.name,), chain + (call.layer,), slot[0], slot[1],
                              float(cfg.get("epsilon", 1e-3)), bool(cfg.get("scale", True)),
                              bool(cfg.get("center", True))))

    walk(model.graph, ())
    return tuple(folds)


def get_params(params: Any, chain: tuple[str, ...]) -> Any:
    """The params of the layer at ``chain`` (layer names, outer to inner)."""
    for name in chain:
        params = params[name]
    return params


def set_params(params: Any, chain: tuple[str, ...], value: Any) -> Any:
    """``params`` with the layer at ``chain`` given ``value`` (new dicts along the way)."""
    if not chain:
        return value
    out = dict(params)
    out[chain[0]] = set_params(params.get(chain[0], {}), chain[1:], value)
    return out


def fold_params(params: Any, plan: tuple[Fold, ...]) -> Any:
    """``params`` with each planned batch norm's scale and shift merged into the layer
    before it (traceable: call it inside the compiled program)."""
    for f in plan:
        bn = get_params(params, f.batch_norm)
        s = jax.lax.rsqrt(bn["moving_variance"] + f.epsilon)
        if f.scale:
            s = s * bn["gamma"]
        t = -bn["moving_mean"] * s
        if f.center:
            t = t + bn["beta"]
        layer = dict(get_params(params, f.layer))
        k = layer[f.kernel]
        shape = [1] * k.ndim
        shape[f.axis] = -1
        layer[f.kernel] = k * s.reshape(shape).astype(k.dtype)
        b = layer.get("bias")
        layer["bias"] = (t if b is None else b * s + t).astype(k.dtype)
        params = set_params(params, f.layer, layer)
    return params


@dataclasses.dataclass(frozen=True)
class FoldedBatchNorm(LRPRule):
    """The rule of a batch norm folded into the layer before it: the identity (its scale
    and shift are in that layer's params), relevance passed on unchanged."""

    changes_weights: ClassVar[bool] = False

    def forward(self, f: Callable, params: Any, args: tuple) -> Array:
        return args[0]

    def relevance(self, f, params, args, z, r):
        return (r,)


def check_fold(fold_batchnorm: Any) -> bool:
    if not isinstance(fold_batchnorm, bool):
        raise TypeError(f"fold_batchnorm: expected True or False, got {fold_batchnorm!r}")
    return fold_batchnorm

