"""Class activation maps over a split of the model at a named layer.

The model is run once with ``capture=[layer]`` and ``perturb={layer: 0}``: ``jax.vjp`` with
respect to that zero perturbation gives the layer's activations ``A`` ``(N, h, w, K)`` and,
per target, ``G = dS/dA`` in one forward pass and one backward pass per target (the pullback
``vmap``-ed over a chunk of targets). Every CAM is a small function of ``(A, G, S)``; the map
is computed at the layer's resolution, passed through a ReLU, and (``upsample=True``)
resized to the input's ``(H, W)`` on device by bilinear interpolation with
``align_corners=True``, as tf-keras-vis does.

Any number of spatial axes works the same way: signals ``(N, L, C)`` with a 1-D layer
``(N, l, K)``, volumes ``(N, D, H, W, C)`` (trilinear upsampling). The CAM functions see the
spatial positions flattened, ``A (N, P, K)``, ``G (N, T, P, K)``. A channels-first model's
layer outputs ``(N, K, h, w)`` are moved to channels-last first; the maps have no channel
axis, so they are the same for either layout.

Papers:
- Grad-CAM: Selvaraju et al. (2017), "Grad-CAM: Visual Explanations from Deep Networks via
  Gradient-based Localization" (also guided Grad-CAM).
- Grad-CAM++: Chattopadhyay et al. (2018), "Grad-CAM++: Generalized Gradient-based Visual
  Explanations for Deep Convolutional Networks".
- Layer-CAM: Jiang et al. (2021), "LayerCAM: Exploring Hierarchical Class Activation Maps for
  Localization".
- HiResCAM: Draelos & Carin (2020), "Use HiResCAM instead of Grad-CAM for faithful
  explanations of convolutional neural networks".
- XGrad-CAM: Fu et al. (2020), "Axiom-based Grad-CAM: Towards Accurate Visualization and
  Explanation of CNNs".
- Score-CAM: Wang et al. (2020), "Score-CAM: Score-Weighted Visual Explanations for
  Convolutional Neural Networks"; Faster-Score-CAM: top-k channels by variance
  (tabayashi0117, as in tf-keras-vis ``max_N``).
- Eigen-CAM: Muhammad & Yeasin (2020), "Eigen-CAM: Class Activation Map using Principal
  Components".
- Eigen-Grad-CAM and element-wise Grad-CAM: methods of pytorch-grad-cam (Gildenblat and
  contributors, 2021, "PyTorch library for CAM methods"): Eigen-CAM of ``dS/dA * A``, and
  HiResCAM with the ReLU taken before the channel sum.
- Ablation-CAM: Desai & Ramaswamy (2020), "Ablation-CAM: Visual Explanations for Deep
  Convolutional Network via Gradient-free Localization".
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import base, ints, plans
from jaxsal._src.base import Inputs, ModelLike
from jaxsal._src.finite import check_maps, refuses_non_finite_maps
from jaxsal._src.postprocess import _reduce, check_reduce, upsample_linear
from jaxsal._src.targets import (LayerScore, OutputInfo, Targets, layer_pullback,
                                 nan_where_invalid, predicted_ids, resolve_predicted, run_model,
                                 score_matrix, target_pullback)
from jaxsal._src.validate import (NO_CHANNEL_AXIS, Prepared, _float_ids_reader, _layer_info,
                                  cam_rank, check_feeds_output, check_flag, check_spatial,
                                  input_spatial_shape, layer_output, live_inputs, prepare,
                                  to_channels_last)

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

_CONV = ("Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose",
         "Conv3DTranspose", "SeparableConv1D", "SeparableConv2D", "DepthwiseConv1D",
         "DepthwiseConv2D", "Convolution1D", "Convolution2D", "Convolution3D",
         "Convolution1DTranspose", "Convolution2DTranspose", "Convolution3DTranspose",
         "SeparableConvolution1D", "SeparableConvolution2D")


# ---------------------------------------------------------------------- layers
def spatial_layers(model: ModelLike) -> list[str]:
    """Names of the layers usable by the CAMs, in the model's layer order: those whose
    output has the input's spatial axes and a channel axis (``(h, w, channels)`` in an image
    model, ``(l, channels)`` in a 1-D one; channels first in a channels-first model)."""
    model = base.as_model(model)
    if hasattr(model, "layers") and hasattr(model, "graph"):
        shapes = getattr(model, "input_shapes", None) or [model.input_shape]
        dtypes = list(getattr(model.graph, "input_dtypes", None) or [None] * len(shapes))
        # every input's rank; token ids (L,) one more (their embedding's channel axis; an
        # input declared float that only an Embedding reads holds ids too); integer images
        # (H, W, C) (raw uint8 the model casts) their own
        ranks = {(len(s) if s is not None else 3)
                 + (("int" in str(d) or _float_ids_reader(model, i) is not None)
                    and s is not None and len(s) == 1)
                 for i, (s, d) in enumerate(zip(shapes, dtypes))} - {0, 1}
        fmt = getattr(model, "layer_data_format", lambda name: "channels_last")
        return [info.name for info in model.layers
                if isinstance(info.output_shape, tuple) and len(info.output_shape) in ranks
                and all(isinstance(d, (int, type(None)))
                                      for d in info.output_shape)
                and info.class_name != "InputLayer" and fmt(info.name) is not None]
    return list(getattr(model, "layer_names", []) or [])


def default_cam_layer(model: ModelLike) -> str:
    """The layer CAMs use when ``layer=`` is omitted: the last convolution with a spatial
    output (tf-keras-vis's ``seek_penultimate_conv_layer``), else the last spatial layer,
    among the layers the output depends on (``model.used_layers``: of a model with several
    outputs viewed through ``with_output``, not another output's branch). For a model whose
    output is a convolution's (a segmentation model's per-pixel head), the last spatial
    layer before that convolution (also where a separate activation layer follows it).
    A convolution whose output has one position (``(1, 1, K)``: MobileNet's ``conv_preds``
    after its global pooling, whose CAM would be a constant map) is passed over for the
    last one with more, unless every convolution's output has one position.

    Call it to see the choice; pass ``layer=`` to choose another (any of
    :func:`spatial_layers`). Found once per model function and cached (it reads every
    layer's description: half a millisecond per call for VGG16).
    """
    model = base.as_model(model)
    return base._SHAPES.get(("default-cam-layer", base.function_key(model)),
                            lambda: _default_cam_layer(model))


def _positions(model: Any, info: Any) -> bool:
    """Whether layer ``info``'s output has more than one spatial position (or a free size):
    a convolution after a global pooling with ``keepdims`` (MobileNet's ``conv_preds``,
    ``(1, 1, classes)``) has one, and its CAM is a constant map."""
    fmt = getattr(model, "layer_data_format", lambda name: "channels_last")(info.name)
    spatial = info.output_shape[1:] if fmt == "channels_first" else info.output_shape[:-1]
    return any(d is None or d > 1 for d in spatial)


def _output_convolutions(model: Any) -> set[str]:
    """The convolutions whose output is the model's (selected) output: a segmentation
    model's per-pixel head (``Conv2D(classes, 1, activation="softmax")``, or the convolution
    then a separate ``Activation("softmax")`` / ``Softmax`` layer), whose own CAM is only
    the score's channel. Through an activation layer, only a convolution with more than one
    position (MobileNet's ``conv_preds -> Reshape -> Activation`` is a classifier)."""
    graph = model.graph
    refs = list(getattr(graph, "outputs", None) or ())
    index = getattr(model, "output_index", None)
    refs = refs if index is None else refs[index:index + 1]
    found = set()
    for r in refs:
        r, through = graph.position_source(r)
        info = _layer_info(model, r.layer)
        if getattr(info, "class_name", None) in _CONV and (not through
                                                          or _positions(model, info)):
            found.add(r.layer)
    return found


def _default_cam_layer(model: Any, keep: Any = None) -> str:
    """:func:`default_cam_layer`, among the layers ``keep`` only where given (those the
    scores depend on: :func:`_scored_layers`)."""
    names = spatial_layers(model)
    used = getattr(model, "used_layers", None)
    if used is not None:  # not another output's layers (with_output): their gradients are 0
        used = set(used)
        names = [n for n in names if n in used]
    if keep is not None:
        names = [n for n in names if n in keep]
    if hasattr(model, "layers") and hasattr(model, "graph"):
        outputs = _output_convolutions(model)
        head = [n for n in names if n in outputs]
        if head:  # a segmentation model: the last spatial layer before its output convolution
            before = [model.layer(n) for n in names[:names.index(head[0])]]
            wide = [info for info in before if _positions(model, info)]
            if wide or before:
                return (wide or before)[-1].name
        convs = [info for info in model.layers if info.name in names
                 and info.class_name in _CONV]
        wide = [info for info in convs if _positions(model, info)]
        if wide or convs:  # one position everywhere (a tiny input): the last convolution
            return (wide or convs)[-1].name
    if names:
        return names[-1]
    shape = getattr(model, "input_shape", None)  # (H, W): gray images read as a signal
    gray = (isinstance(shape, tuple) and len(shape) == 2
            and not any(isinstance(d, tuple) for d in shape)
            and any(isinstance(info.output_shape, tuple) and len(info.output_shape) == 3
                    for info in getattr(model, "layers", ())))
    raise ValueError("this model has no layer with the input's spatial axes and a channel "
                     "axis ((h, w, channels) in an image model); CAMs need one. For a plain "
                     "function use FunctionModel(features=..., head_fn=...)."
                     + (f" {NO_CHANNEL_AXIS}" if gray else ""))


def _several_outputs(model: Any) -> bool:
    """Whether ``model`` gives several outputs (a ``KerasModel`` of several, none selected
    with ``with_output``)."""
    return (hasattr(model, "with_output") and getattr(model, "output_index", 0) is None
            and len(getattr(model, "output_names", None) or ()) > 1)


def _scored_layers(p: Prepared, model: Any) -> set[str] | None:
    """The spatial layers of ``model`` (``p.model``, or all its outputs' view for scores of a
    layer's unit) that ``p``'s score functions depend on: a change added at the layer's
    output reaches a score. Found from the traced program (``jax.make_jaxpr`` on abstract
    values, nothing computed; once per model function, call and targets): the layers whose
    perturbation is an input the scores use. ``None`` for a model without spatial layers
    (:func:`default_cam_layer` refuses it); raises where the scores read none of them."""
    read = base._SHAPES.get(("scored-layers", base.function_key(model), p.key, p.spec),
                            lambda: _trace_scored_layers(p, model))
    if read is None:
        return None
    if not read:
        raise ValueError(
            "the targets' scores change with no spatial layer of this model (no spatial layer "
            "the scores depend on): a CAM of any of them would be 0 everywhere. Pass layer= "
            "(jaxsal.spatial_layers(model) lists them) and scores that read the outputs it "
            "feeds, or select an output with model.with_output(name)")
    return set(read)


def _trace_scored_layers(p: Prepared, model: Any) -> frozenset[str] | None:
    """:func:`_scored_layers`, traced."""
    used = getattr(model, "used_layers", None)
    names = [n for n in spatial_layers(model) if used is None or n in used]
    if not names:
        return None
    _, caps = base.model_shapes(model, p.x, tuple(names))
    names = [n for n in names if hasattr(caps[n], "shape")]  # (one output each)

    def scores(params, x, deltas):
        y, cap = run_model(model, params, x, p.spec.layers, perturb=deltas)
        return [s(cap[s.layer]) if isinstance(s, LayerScore) else s(y)
                for s in p.spec.scores]

    def abstract(a):
        return jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a))

    deltas = {n: abstract(caps[n]) for n in names}
    closed = jax.make_jaxpr(scores)(jax.tree_util.tree_map(abstract, p.params),
                                    jax.tree_util.tree_map(abstract, p.x), deltas)
    live = live_inputs(closed.jaxpr, [True] * len(closed.jaxpr.outvars))
    order = jax.tree_util.tree_leaves({n: n for n in names})  # the deltas' leaf order
    return frozenset(n for n, read in zip(order, live[len(live) - len(order):]) if read)


@dataclasses.dataclass
class _CamCall:
    p: Prepared
    layer: str
    a_shape: tuple
    chunk: int
    nb: int
    layer_cf: bool  # the layer's output is channels-first (N, K, ...)
    size: tuple | None  # the spatial size maps are upsampled to (None: not upsampled)


def _spatial(combine: Callable) -> Callable:
    """A CAM function of flattened positions, ``A (N, P, K)``, ``G (N, T, P, K)`` ->
    ``(N, T, P)``, applied to ``A (N, *s, K)``, ``G (N, T, *s, K)`` -> ``(N, T, *s)``."""
    def f(A, G, s):
        n, *sp, k = A.shape
        cam = combine(A.reshape(n, -1, k), G.reshape(G.shape[:2] + (-1, k)), s)
        return cam.reshape(cam.shape[:2] + tuple(sp))

    return f


def _cam_layer(p: Prepared, layer: str | None, upsample: bool = True
               ) -> tuple[str, tuple, bool, tuple | None]:
    """``(name, output shape, channels-first?, upsampled size)`` of the CAM layer (default
    :func:`default_cam_layer`), checked to have the input's spatial axes. With several model
    inputs, maps are upsampled to the input(s) with the layer's number of spatial axes, which
    must then share one spatial size (else ``upsample=False``)."""
    if layer is None:
        # scores of a layer's unit (jaxsal.neuron) read no output: any output's branches,
        # not the selected output's only (with_output)
        reads_layers = p.spec.layers and hasattr(p.model, "with_output")
        model = p.model.with_output(None) if reads_layers else p.model
        # Eigen-CAM's targets=None stands for a score that reads nothing (_no_score): no
        # layer feeds it, and the maps read no score, so any output's last convolution does
        reads_nothing = p.spec.scores == (_no_score,)
        if reads_layers or (_several_outputs(p.model) and p.spec.kind == "scores"
                            and not reads_nothing):
            # the last convolution among the layers the scores depend on: a score of one
            # output (or a unit) is not changed by another branch's layers (maps of 0)
            layer = _default_cam_layer(model, _scored_layers(p, model))
        else:
            layer = default_cam_layer(model)
    name, shape, fmt = layer_output(p, layer)
    if not p.multi:
        check_spatial(name, shape, cam_rank(p.x), fmt)
        return name, shape, fmt == "channels_first", (p.spatial_shape if upsample else None)
    leaves = jax.tree_util.tree_leaves(p.x)
    sizes = {input_spatial_shape(a, cf) for a, cf in zip(leaves, p.formats)
             if cam_rank(a) == len(shape)}
    if not sizes:
        raise ValueError(f"layer {name!r} has output shape {tuple(shape)} (batch first) and no "
                         "input of this model has its number of axes; a CAM needs a layer with "
                         "an input's spatial axes and a channel axis (see "
                         "jaxsal.spatial_layers(model))")
    check_spatial(name, shape, len(shape), fmt)
    if len(sizes) > 1 and upsample:
        raise ValueError(f"layer {name!r} has {len(shape) - 2} spatial axes, as several inputs "
                         f"of this model with different sizes ({sorted(sizes)}): the map has no "
                         "one input size to be upsampled to. Pass upsample=False (maps at the "
                         "layer's resolution) and resize them with jaxsal.resize")
    return name, shape, fmt == "channels_first", (sizes.pop() if upsample else None)


def _prepare_cam(model, x, targets, layer, head, chunk_size, memory_budget, check_finite,
                 backprop=None, upsample=True, multi_input=True, tokens=True,
                 layer_charge=False, reads_output=True, method=None) -> _CamCall:
    """``tokens``: integer inputs (token ids) are accepted, the CAM reading no input
    gradient (a token axis ``L`` of ``(N, L)`` is the spatial axis). ``layer_charge``: a
    chunk of targets is charged for pullbacks to the layer only
    (:func:`~jaxsal._src.base.layer_pullback_bytes`; the gradient CAMs), else for whole
    backward passes. ``reads_output``: the CAM reads how the output depends on the layer
    (gradients, ablations), so a layer the output does not depend on is refused. ``method``:
    the public method called, named (with its ``one_input``) where ``multi_input`` is
    False and several inputs are given."""
    check_flag(upsample, "upsample")
    p = prepare(model, x, targets, head=head, backprop=backprop, check_finite=check_finite,
                spatial=True, allow_int=tokens, multi_input=multi_input, method=method)
    layer, a_shape, layer_cf, size = _cam_layer(p, layer, upsample)
    if reads_output:
        check_feeds_output(p.model, layer, p.spec)
    fb = base.forward_bytes(p.model, p.x)
    nb = base.batch_chunk(p.n, fb // p.n, memory_budget)
    # A CAM's pullback runs only through the layers after `layer`: cheap per target. On CPU
    # the small default budget of the input-gradient methods made narrow chunks here (VGG16
    # 112x112, 2 images, 10 classes at block5_conv3: 261 ms vs 125 ms in one chunk).
    budget = base.default_wide_budget() if memory_budget is None else memory_budget
    per_target = base.target_bytes(p.model, p.x, nb, layer if layer_charge else None,
                                   a_shape)
    chunk = base.chunk_for(p.spec.num, per_target, chunk_size, budget)
    return _CamCall(p, layer, a_shape, chunk, nb, layer_cf, size)


def _finish(cam: Array, size: tuple[int, ...], upsample: bool) -> Array:
    """ReLU, then (``upsample``) align-corners linear resize of the trailing spatial axes of
    ``cam`` to the input's spatial ``size``."""
    cam = jax.nn.relu(cam)
    if not upsample:
        return cam
    return upsample_linear(cam, size, tuple(range(-len(size), 0)))


# ---------------------------------------------------------------------- gradient CAMs
# A (N, P, K) activations at P positions, G (N, T, P, K) gradients, s (N, T) scores.
@_spatial
def _gradcam_weights(A, G, s):
    return jnp.einsum("npk,ntk->ntp", A, G.mean(axis=2))


@_spatial
def _hirescam(A, G, s):
    return jnp.einsum("npk,ntpk->ntp", A, G)


@_spatial
def _layercam(A, G, s):
    return jnp.einsum("npk,ntpk->ntp", A, jax.nn.relu(G))


@_spatial
def _xgradcam(A, G, s):
    w = jnp.einsum("npk,ntpk->ntk", A, G) / (A.sum(axis=1)[:, None, :] + 1e-7)
    return jnp.einsum("npk,ntk->ntp", A, w)


@_spatial
def _gradcampp_tfkv(A, G, s):
    # tf-keras-vis: first/second/third-order terms times exp(S). exp(S) cancels in alpha and
    # factors out of the ReLU'd weights, so it is applied once at the end (same values,
    # without forming exp(S) * G**3).
    # Its alpha guards G = 0 only: where 2 G^2 + G^3 sum(A) cancels with G != 0 (a
    # channel of negative gradients) tf-keras-vis divides by 0; alpha is 0 there, as the
    # paper's variants have it. exp(S) is clipped to exp(+-50), where a map times it stays
    # a normal float32: tf-keras-vis's maps overflow to inf (NaN where the map is 0) for
    # scores above 88 and vanish (flushed to 0) below about -80.
    g2 = G * G
    denom = 2.0 * g2 + g2 * G * A.sum(axis=1)[:, None, None, :]
    ok = (g2 != 0) & (denom != 0)
    alpha = jnp.where(ok, g2 / jnp.where(ok, denom, 1.0), 0.0)
    norm = alpha.sum(axis=2, keepdims=True)
    alpha = alpha / (norm + (norm == 0).astype(G.dtype))
    w = (jax.nn.relu(G) * alpha).sum(axis=2)
    return jnp.einsum("npk,ntk->ntp", A, w) * jnp.exp(jnp.clip(s, -50.0, 50.0))[:, :, None]


def _gradcampp_weights(A, G, eps):
    """``sum_ij ReLU(G) alpha`` with the paper's ``alpha``, ``eps`` added to its denominator;
    ``alpha`` is 0 where ``G = 0`` or where the denominator ``2 G^2 + G^3 sum(A) + eps`` is
    exactly 0 (``G sum(A) = -2`` with ``eps = 0``). A (N, P, K), G (N, T, P, K) -> (N, T, K)."""
    g2 = G * G
    denom = 2.0 * g2 + g2 * G * A.sum(axis=1)[:, None, None, :] + eps
    ok = (g2 != 0) & (denom != 0)
    alpha = jnp.where(ok, g2 / jnp.where(ok, denom, 1.0), 0.0)
    return (jax.nn.relu(G) * alpha).sum(axis=2)


@_spatial
def _gradcampp_paper(A, G, s):
    return jnp.einsum("npk,ntk->ntp", A, _gradcampp_weights(A, G, 0.0))


@_spatial
def _gradcampp_pgc(A, G, s):
    # pytorch-grad-cam's GradCAMPlusPlus: the paper's weights, 1e-6 added to the denominator
    return jnp.einsum("npk,ntk->ntp", A, _gradcampp_weights(A, G, 1e-6))


@_spatial
def _gradcam_elementwise(A, G, s):
    return jax.nn.relu(G * A[:, None]).sum(axis=-1)


@_spatial
def _eigengradcam(A, G, s):
    # one principal component per (input, target): the T targets are a batch of N*T SVDs
    n, t, P, k = G.shape
    return _first_component((G * A[:, None]).reshape(n * t, P, k)).reshape(n, t, P)


def _gradient_cam(name: str, combine: Callable, model, x, targets, *, layer, upsample, head,
                  chunk_size, memory_budget, precision, check_finite) -> Array:
    """A gradient CAM (``combine`` of ``A`` and the targets' ``dS/dA``), planned once per
    static description of the call (:mod:`jaxsal._src.plans`); NaN/inf maps of finite
    inputs refused (:func:`~jaxsal._src.finite.check_maps`)."""
    m0 = base.with_options(model, head)
    options = (layer, upsample, chunk_size, memory_budget, precision, check_finite)
    cams = plans.cached(plans.key(name, m0, x, targets, options), m0, x, lambda: _plan_cam(
        name, combine, model, x, targets, layer=layer, upsample=upsample, head=head,
        chunk_size=chunk_size, memory_budget=memory_budget, precision=precision,
        check_finite=check_finite))
    check_maps(name, cams, check_finite)
    return cams


def _plan_cam(name: str, combine: Callable, model, x, targets, *, layer, upsample, head,
              chunk_size, memory_budget, precision, check_finite) -> tuple[Array, plans.Plan]:
    """:func:`_gradient_cam`'s full path: ``(maps, its plan)``."""
    c = _prepare_cam(model, x, targets, layer, head, chunk_size, memory_budget, check_finite,
                     upsample=upsample, layer_charge=True)
    p, L, a_shape, chunk, lcf = c.p, c.layer, c.a_shape, c.chunk, c.layer_cf
    m, spec, info, size = p.model, p.spec, p.info, c.size

    # tf-keras-vis's Grad-CAM++ scales its maps by exp(BinaryScore) on a one-unit
    # probability output: -output for the class jaxsal scores 1 - output (class 0; class 1
    # under the sigmoid_complement head), whose factor is then exp(s - 1)
    binary = (name == "gradcam++/tf-keras-vis" and info.units == 1 and info.kind == "prob"
              and spec.kind in ("ids", "predicted"))

    def build():
        def run(params, x, ids):
            sp, ids_ = spec, ids
            if binary:  # (the predicted class as ids: which class each score is of)
                sp, ids_ = resolve_predicted(m, params, x, spec, info, ids)
            s, A, pull = layer_pullback(m, params, x, L, a_shape, sp, info, ids_)
            A = to_channels_last(A, lcf)
            factor = s - (ids_ == int(info.complement)).astype(s.dtype) if binary else s

            def chunk_fn(ts):
                G = to_channels_last(jax.vmap(pull, out_axes=1)(ts), lcf, 2)  # (N, Tc, h, w, K)
                cam = _finish(combine(A, G, factor[:, ts]), size, upsample)
                # traced ids out of range: NaN maps (their scores' gradients are 0)
                return cam if sp.checked else nan_where_invalid(cam, ids_[:, ts], info)

            out = base.map_chunks(chunk_fn, spec.num, chunk)
            return out if spec.class_axis else out[:, 0]

        return run

    key = (name, p.key, spec, info, L, a_shape, bool(upsample), chunk, c.nb)
    fn = base.compiled(key, lambda: base.split_batch(build(), c.nb), precision)
    check = dict(check_finite=check_flag(check_finite, "check_finite"), spatial=True,
                 allow_int=True, multi_input=True)
    return fn(p.params, p.x, p.ids), plans.Plan(fn, p.ids, check)


_CAM_DOC_ARGS = """
    Args:
      model, x, targets, head, chunk_size, memory_budget, precision, check_finite: as in
        :func:`jaxsal.saliency`; ``x`` is ``(N, H, W, C)`` (``(N, C, H, W)`` for a
        channels-first model; signals ``(N, L, C)`` and volumes ``(N, D, H, W, C)`` work
        alike, with a layer of the same number of spatial axes).
      layer: the layer to explain (default :func:`jaxsal.default_cam_layer`: the last
        convolution). ``A`` is its output including its fused activation.
      upsample: ``True`` resizes to ``(H, W)`` (bilinear, ``align_corners=True``, on device;
        linear or trilinear for 1 or 3 spatial axes); ``False`` returns the map at the
        layer's resolution ``(h, w)``.
    Returns:
      Raw (un-normalized) maps ``(N, H, W)`` or ``(N, T, H, W)`` with a class axis.
"""


def gradcam(model: ModelLike, x: Inputs, targets: Targets = None, *, layer: str | None = None,
            upsample: bool = True, head: str | None = None, chunk_size: int | None = None,
            memory_budget: int | None = None, precision: str | None = None,
            check_finite: bool = True) -> Array:
    return _gradient_cam("gradcam", _gradcam_weights, model, x, targets, layer=layer,
                         upsample=upsample, head=head, chunk_size=chunk_size,
                         memory_budget=memory_budget, precision=precision,
                         check_finite=check_finite)


gradcam.__doc__ = """Grad-CAM (Selvaraju et al., 2017): ``ReLU(sum_k w_k A_k)`` with
    ``w_k = mean_ij dS/dA_ijk``.
""" + _CAM_DOC_ARGS


def hirescam(model: ModelLike, x: Inputs, targets: Targets = None, *, layer: str | None = None,
             upsample: bool = True, head: str | None = None, chunk_size: int | None = None,
             memory_budget: int | None = None, precision: str | None = None,
             check_finite: bool = True) -> Array:
    return _gradient_cam("hirescam", _hirescam, model, x, targets, layer=layer,
                         upsample=upsample, head=head, chunk_size=chunk_size,
                         memory_budget=memory_budget, precision=precision,
                         check_finite=check_finite)


hirescam.__doc__ = """HiResCAM (Draelos & Carin, 2020): ``ReLU(sum_k dS/dA_k * A_k)``
    (element-wise, no spatial averaging of the gradient).
""" + _CAM_DOC_ARGS


def layercam(model: ModelLike, x: Inputs, targets: Targets = None, *, layer: str | None = None,
             upsample: bool = True, head: str | None = None, chunk_size: int | None = None,
             memory_budget: int | None = None, precision: str | None = None,
             check_finite: bool = True) -> Array:
    return _gradient_cam("layercam", _layercam, model, x, targets, layer=layer,
                         upsample=upsample, head=head, chunk_size=chunk_size,
                         memory_budget=memory_budget, precision=precision,
                         check_finite=check_finite)


layercam.__doc__ = """Layer-CAM (Jiang et al., 2021): ``ReLU(sum_k ReLU(dS/dA_k) * A_k)``,
    as tf-keras-vis's ``Layercam``.
""" + _CAM_DOC_ARGS


def xgradcam(model: ModelLike, x: Inputs, targets: Targets = None, *, layer: str | None = None,
             upsample: bool = True, head: str | None = None, chunk_size: int | None = None,
             memory_budget: int | None = None, precision: str | None = None,
             check_finite: bool = True) -> Array:
    return _gradient_cam("xgradcam", _xgradcam, model, x, targets, layer=layer,
                         upsample=upsample, head=head, chunk_size=chunk_size,
                         memory_budget=memory_budget, precision=precision,
                         check_finite=check_finite)


xgradcam.__doc__ = """XGrad-CAM (Fu et al., 2020): ``ReLU(sum_k w_k A_k)`` with
    ``w_k = sum_ij (A_ijk dS/dA_ijk) / (sum_ij A_ijk + 1e-7)``.
""" + _CAM_DOC_ARGS

GRADCAMPP_VARIANTS = ("tf-keras-vis", "paper", "pytorch-grad-cam")


def gradcam_plus_plus(model: ModelLike, x: Inputs, targets: Targets = None, *,
                      layer: str | None = None, upsample: bool = True,
                      variant: str = "tf-keras-vis", head: str | None = None,
                      chunk_size: int | None = None, memory_budget: int | None = None,
                      precision: str | None = None, check_finite: bool = True) -> Array:
    if variant == "tf-keras-vis":
        combine = _gradcampp_tfkv
    elif variant == "paper":
        combine = _gradcampp_paper
    elif variant == "pytorch-grad-cam":
        combine = _gradcampp_pgc
    else:
        raise ValueError(f"unknown Grad-CAM++ variant {variant!r}; expected one of "
                         f"{GRADCAMPP_VARIANTS}")
    return _gradient_cam(f"gradcam++/{variant}", combine, model, x, targets, layer=layer,
                         upsample=upsample, head=head, chunk_size=chunk_size,
                         memory_budget=memory_budget, precision=precision,
                         check_finite=check_finite)


gradcam_plus_plus.__doc__ = """Grad-CAM++ (Chattopadhyay et al., 2018).

    With ``G = dS/dA``: ``alpha = G^2 / (2 G^2 + G^3 sum_ij A)`` (0 where ``G = 0``),
    ``w_k = sum_ij ReLU(G) alpha``, map ``ReLU(sum_k w_k A_k)``.

    ``variant="tf-keras-vis"`` (default) is tf-keras-vis's ``GradcamPlusPlus``: ``alpha`` is
    renormalized to sum to 1 per channel, and the terms carry the factor ``exp(S)`` of the
    paper's exponential score, so raw maps scale with ``exp(score)`` (on a one-unit
    probability output tf-keras-vis's ``BinaryScore``: ``exp(-p)`` for class 0; compare
    normalized maps; the factor is clipped to ``exp(clip(score, -50, 50))``, so that the map stays
    finite and non-zero in float32). ``variant="paper"`` drops the renormalization and the
    ``exp(S)`` factor;
    ``variant="pytorch-grad-cam"`` is the paper's with pytorch-grad-cam's ``1e-6`` added to
    the denominator of ``alpha`` (which matters where gradients are small).
""" + _CAM_DOC_ARGS


def gradcam_elementwise(model: ModelLike, x: Inputs, targets: Targets = None, *,
                        layer: str | None = None, upsample: bool = True,
                        head: str | None = None, chunk_size: int | None = None,
                        memory_budget: int | None = None, precision: str | None = None,
                        check_finite: bool = True) -> Array:
    return _gradient_cam("gradcam_elementwise", _gradcam_elementwise, model, x, targets,
                         layer=layer, upsample=upsample, head=head, chunk_size=chunk_size,
                         memory_budget=memory_budget, precision=precision,
                         check_finite=check_finite)


gradcam_elementwise.__doc__ = """Element-wise Grad-CAM, pytorch-grad-cam's ``GradCAMElementWise``
    (Gildenblat and contributors, 2021): ``sum_k ReLU(dS/dA_k * A_k)``, the ReLU taken per
    position and channel before the channel sum (HiResCAM, Draelos & Carin 2020, takes it
    after).
""" + _CAM_DOC_ARGS


def eigengradcam(model: ModelLike, x: Inputs, targets: Targets = None, *,
                 layer: str | None = None, upsample: bool = True, head: str | None = None,
                 chunk_size: int | None = None, memory_budget: int | None = None,
                 precision: str | None = None, check_finite: bool = True) -> Array:
    return _gradient_cam("eigengradcam", _eigengradcam, model, x, targets, layer=layer,
                         upsample=upsample, head=head, chunk_size=chunk_size,
                         memory_budget=memory_budget, precision=precision,
                         check_finite=check_finite)


eigengradcam.__doc__ = """Eigen-Grad-CAM, pytorch-grad-cam's ``EigenGradCAM`` (Gildenblat and
    contributors, 2021; Eigen-CAM: Muhammad & Yeasin, 2020): per input and target, the
    projection of ``X = dS/dA * A`` (element-wise; positions x channels, each channel
    centred over the positions) on its first principal component, ReLU'd. Unlike
    :func:`eigencam` it is class-specific.

    The sign of a principal component is arbitrary. jaxsal orients it to correlate
    positively with the channel sum of ``X`` (the HiResCAM map ``sum_k dS/dA_k * A_k``), as
    :func:`eigencam` does with ``A``; pytorch-grad-cam keeps the sign its SVD (LAPACK)
    returns, so on some inputs its map is the ReLU of the opposite projection.
""" + _CAM_DOC_ARGS


# ---------------------------------------------------------------------- Score-CAM
SCORECAM_VARIANTS = ("tf-keras-vis", "pytorch-grad-cam")


@refuses_non_finite_maps
def scorecam(model: ModelLike, x: ArrayLike, targets: Targets = None, *, layer: str | None = None,
             upsample: bool = True, top_k: int | None = None, top_k_mode: str = "union",
             softmax: bool | None = None, variant: str = "tf-keras-vis",
             batch_size: int | None = None, head: str | None = None,
             memory_budget: int | None = None, precision: str | None = None,
             check_finite: bool = True) -> Array:
    """Score-CAM (Wang et al., 2020) and Faster-Score-CAM (``top_k``).

    Each channel ``A_k`` of the layer, upsampled (align-corners bilinear) and min-max
    normalized to [0, 1], masks the input: ``x * mask_k``. ``beta_k`` = the target's score on
    ``softmax(model(x * mask_k))`` and the map is ``ReLU(sum_k beta_k A_k)``, as tf-keras-vis
    computes it (its own softmax on top of whatever head is used, no baseline subtraction).
    With ``variant="pytorch-grad-cam"``, as pytorch-grad-cam's ``ScoreCAM``: ``beta`` is the
    softmax *over the channels* of the target's score on ``model(x * mask_k)`` (the head's
    own outputs: logits on the ``logits`` head), and the masks' min-max normalization adds
    ``1e-8`` instead of ``1e-7``.
    The masked forward passes are shared by all targets (every class's ``beta`` comes from
    the same outputs) and run in batches of at most ``batch_size`` masked inputs.

    Args:
      model, x, targets, layer, upsample, head, memory_budget, precision, check_finite: as
        in :func:`gradcam`.
      top_k: Faster-Score-CAM: use only the ``top_k`` channels with the largest spatial
        standard deviation (tf-keras-vis ``max_N``); ``None`` uses all channels.
      top_k_mode: ``"union"`` (tf-keras-vis: the union of every input's top-k channels is
        used for all inputs of the batch) or ``"per_sample"`` (each input its own top-k;
        results do not depend on the batch).
      softmax: apply a softmax to the outputs before scoring (default: ``True`` for
        ``variant="tf-keras-vis"``, ``False`` for ``"pytorch-grad-cam"``). For a one-unit
        output (where a softmax is constant) jaxsal uses the unit's probability instead
        (``sigmoid`` of a logit): ``p`` for class 1, ``1 - p`` for class 0. A model whose
        output is not a single array (a list, tuple or dict of outputs) raises a
        ``ValueError`` (which output is the classifier is not known): pass ``softmax=False``
        and apply the softmax inside the score function,
        ``targets=lambda outs: jax.nn.softmax(outs[0])[:, k]`` (``outs['cls']``...).
      variant: ``"tf-keras-vis"`` (default) or ``"pytorch-grad-cam"`` (see above; with
        ``top_k`` the softmax runs over the channels used).
      batch_size: masked inputs per forward pass, at most (default: from
        ``memory_budget``); with ``top_k_mode="union"`` at least one per input of the batch
        (the union is the batch's, not that of a part ``batch_size`` would split off).
    Returns:
      Raw maps ``(N, H, W)`` / ``(N, T, H, W)`` (``(h, w)`` with ``upsample=False``).
    """
    if top_k_mode not in ("union", "per_sample"):
        raise ValueError(f"unknown top_k_mode {top_k_mode!r}; expected 'union' or 'per_sample'")
    check_flag(upsample, "upsample")
    if variant not in SCORECAM_VARIANTS:
        raise ValueError(f"unknown Score-CAM variant {variant!r}; expected one of "
                         f"{SCORECAM_VARIANTS}")
    channel_softmax = variant == "pytorch-grad-cam"
    if softmax is None:
        softmax = not channel_softmax
    check_flag(softmax, "softmax")
    mask_eps = 1e-8 if channel_softmax else 1e-7
    p = prepare(model, x, targets, head=head, check_finite=check_finite, spatial=True,
                method=scorecam)
    L, a_shape, lcf, _ = _cam_layer(p, layer)
    xcf, size = p.channels_first, p.spatial_shape
    K = a_shape[1] if lcf else a_shape[-1]
    sp_axes = tuple(range(1, 1 + len(size)))  # spatial axes of a channels-last (N, *s, K)
    per_image = base.forward_bytes(p.model, p.x) // p.n
    nb = base.batch_chunk(p.n, per_image, memory_budget)
    if top_k is not None:
        top_k = ints.check_int(top_k, "top_k", high=K,
                               kind=f"channels kept; layer {L!r} has {K}")
    batch_size = base.check_count(batch_size, "batch_size")
    use_all = top_k is None or top_k == K
    if use_all or top_k_mode != "union":  # (the union's inputs are not split by batch_size:
        # the channels it picks would depend on it)
        nb = base.masked_inputs(p.n, nb, batch_size)
    n = nb
    if use_all:
        n_sel = K
    else:
        n_sel = min(K, n * top_k) if top_k_mode == "union" else top_k
    kc = base.masked_chunk(n_sel, per_image, n, batch_size, memory_budget)
    m, spec, info = p.model, p.spec, p.info
    y_shape, _ = base.model_shapes(m, p.x)
    if softmax and not jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(y_shape)):
        # a list, tuple or dict of outputs (even of one): not a single array to softmax
        outs = jax.tree_util.tree_leaves_with_path(y_shape)
        first = next((k for k, v in outs if len(v.shape) == 2), outs[0][0] if outs else ())
        raise ValueError(
            f"scorecam(softmax=True) applies a softmax to the model's output before scoring; "
            f"expected a single array, but this model returns a {type(y_shape).__name__} of "
            f"{len(outs)} outputs ({base.describe_shapes(y_shape)}) and jaxsal does not "
            "guess which one is the classifier. Pass softmax=False (your score function then "
            "sees the raw outputs; apply the softmax to the one it reads: targets=lambda "
            f"outs: jax.nn.softmax(outs{jax.tree_util.keystr(first)})[:, k]), or explain one "
            "output of a single-output model.")
    if softmax:
        out_info = OutputInfo(info.units, "prob",
                              info.complement if info.kind == "prob" else False)
    else:
        out_info = info

    def to_scores(y):
        if not softmax:
            return y
        if info.units == 1:
            return y if info.kind == "prob" else jax.nn.sigmoid(y)
        return jax.nn.softmax(y, axis=-1)

    def build():
        def run(params, x, ids):
            n = x.shape[0]
            y0, caps0 = run_model(m, params, x, (L,))
            A = to_channels_last(caps0[L], lcf)  # (N, *s, K)
            ids_ = predicted_ids(y0, info)[:, None] if spec.kind == "predicted" else ids
            if use_all:
                idx = jnp.broadcast_to(jnp.arange(K), (n, K))
                valid = jnp.ones((n, K), x.dtype)
            else:
                std = jnp.std(A, axis=sp_axes)  # (N, K)
                top = jax.lax.top_k(std, top_k)[1]  # (N, k)
                if top_k_mode == "per_sample":
                    idx, valid = top, jnp.ones((n, top_k), x.dtype)
                else:
                    chosen = jnp.zeros((K,), bool).at[top.reshape(-1)].set(True)
                    order = jnp.argsort(~chosen, stable=True)[:n_sel]
                    idx = jnp.broadcast_to(order, (n, n_sel))
                    valid = jnp.broadcast_to(chosen[order].astype(x.dtype), (n, n_sel))
            sel = jnp.take_along_axis(A, idx.reshape((n,) + (1,) * len(size) + (-1,)),
                                      axis=A.ndim - 1)  # (N, *s, K')

            def chunk_fn(js):
                a = sel[..., js]  # (N, *s, kc)
                up = upsample_linear(a, size, sp_axes)
                lo = up.min(axis=sp_axes, keepdims=True)
                hi = up.max(axis=sp_axes, keepdims=True)
                mask = jnp.moveaxis((up - lo) / (hi - lo + mask_eps), -1, 1)  # (N, kc, *S)
                mask = mask[:, :, None] if xcf else mask[..., None]  # x's layout, 1 channel
                xm = (x[:, None] * mask).reshape((n * len_js,) + x.shape[1:])
                y, cap = run_model(m, params, xm, spec.layers)
                y = jax.tree_util.tree_map(
                    lambda a: a.reshape((n, len_js) + a.shape[1:]), to_scores(y))
                cap = {k: v.reshape((n, len_js) + v.shape[1:]) for k, v in cap.items()}
                return jax.vmap(lambda yk, ck: score_matrix(sp_ids, out_info, yk, ck, ids_),
                                in_axes=1, out_axes=1)(y, cap)  # (N, kc, T)

            sp_ids = spec if spec.kind != "predicted" else dataclasses.replace(spec, kind="ids")
            len_js = min(kc, n_sel)
            beta = base.map_chunks(chunk_fn, n_sel, kc)  # (N, K', T)
            if channel_softmax:  # over the channels used (``valid``)
                beta = jax.nn.softmax(jnp.where(valid[..., None] > 0, beta, -jnp.inf), axis=1)
            beta = beta * valid[..., None]
            cam = jnp.moveaxis(jnp.einsum("n...k,nkt->n...t", sel, beta), -1, 1)  # (N, T, *s)
            out = _finish(cam, size, upsample)
            return out if spec.class_axis else out[:, 0]

        return run

    key = ("scorecam", p.key, spec, info, L, a_shape, bool(upsample), top_k, top_k_mode,
           bool(softmax), variant, n_sel, kc, nb)
    # (the union of a pass's channels: its inputs stay those of contiguous passes)
    union = not use_all and top_k_mode == "union"
    return base.compiled(key, lambda: base.split_batch(build(), nb, strided=not union),
                         precision, forward_only=True)(p.params, p.x, p.ids)


# ---------------------------------------------------------------------- Ablation-CAM
ABLATIONCAM_VARIANTS = ("paper", "pytorch-grad-cam")
_PGC_ABLATION_OFFSET = 1e7  # pytorch-grad-cam: below the layer's minimum, when that is not 0


@refuses_non_finite_maps
def ablationcam(model: ModelLike, x: Inputs, targets: Targets = None, *,
                layer: str | None = None, upsample: bool = True, variant: str = "paper",
                batch_size: int | None = None, head: str | None = None,
                memory_budget: int | None = None, precision: str | None = None,
                check_finite: bool = True) -> Array:
    """Ablation-CAM (Desai & Ramaswamy, 2020): ``ReLU(sum_k w_k A_k)`` with
    ``w_k = (S - S_k) / S``, where ``S`` is the target's score and ``S_k`` its score with
    channel ``k`` of the layer ablated (every unit of ``A_k`` set to a fill value).

    ``variant="paper"`` (default) ablates to 0. ``variant="pytorch-grad-cam"`` is
    pytorch-grad-cam's ``AblationCAM`` rule: 0 where the layer's minimum over the input's
    activations is exactly 0 (a ReLU output with a dead unit, where the two agree), else that
    minimum minus ``1e7``. Two things of pytorch-grad-cam are not reproduced: its in-place
    loop lowers the fill of the j-th channel of each batch of ``batch_size`` ablated copies
    by a further ``j * 1e7`` (only when the minimum is not 0: jaxsal fills every channel with
    ``min - 1e7``), and ``ratio_channels_to_ablate < 1`` (an experimental pre-selection of
    channels; jaxsal ablates all of them, pytorch-grad-cam's default).

    The weights divide by ``S``: a score near 0 inflates them and a negative one (a logit)
    flips their sign, as in the paper; a score of exactly 0 gives non-finite maps, refused
    with :class:`jaxsal.NonFiniteMaps` naming the inputs (``check_finite=False`` returns
    them).

    Cost: one forward pass, then ``K`` (channels) forward passes of the layers after
    ``layer`` only, run in batches of at most ``batch_size`` ablated activations (inputs x
    channels). Every target's weights come from the same ablated passes: T targets cost no
    more passes than one.

    Args:
      model, x, targets, layer, upsample, head, memory_budget, precision, check_finite: as
        in :func:`gradcam`.
      variant: ``"paper"`` or ``"pytorch-grad-cam"`` (the fill value, above).
      batch_size: ablated activations per forward pass, at most (default: from
        ``memory_budget``).
    Returns:
      Raw maps ``(N, H, W)`` / ``(N, T, H, W)`` (``(h, w)`` with ``upsample=False``).
    """
    if variant not in ABLATIONCAM_VARIANTS:
        raise ValueError(f"unknown Ablation-CAM variant {variant!r}; expected one of "
                         f"{ABLATIONCAM_VARIANTS}")
    batch_size = base.check_count(batch_size, "batch_size")
    c = _prepare_cam(model, x, targets, layer, head, None, memory_budget, check_finite,
                     upsample=upsample)
    p, L, a_shape, lcf, size = c.p, c.layer, c.a_shape, c.layer_cf, c.size
    nb = base.masked_inputs(p.n, c.nb, batch_size)
    m, spec, info = p.model, p.spec, p.info
    K = a_shape[1] if lcf else a_shape[-1]
    cax = 1 if lcf else len(a_shape) - 1  # the channel axis in the layer's own layout
    per_image = base.forward_bytes(m, p.x) // p.n
    kc = base.masked_chunk(K, per_image, nb, batch_size, memory_budget)
    sp_ids = spec if spec.kind != "predicted" else dataclasses.replace(spec, kind="ids")

    def build():
        def run(params, x, ids):
            y0, caps = run_model(m, params, x, (L,) + spec.layers)
            A = caps[L]  # (N, *s, K), or (N, K, *s) for a channels-first layer
            ids_ = predicted_ids(y0, info)[:, None] if spec.kind == "predicted" else ids
            s0 = score_matrix(sp_ids, info, y0, caps, ids_)  # (N, T)
            if variant == "paper":
                fill = jnp.zeros((), A.dtype)
            else:
                lo = A.min(axis=tuple(range(1, A.ndim)), keepdims=True)  # per input
                fill = jnp.where(lo == 0, 0.0, lo - _PGC_ABLATION_OFFSET).astype(A.dtype)
            gap = fill - A  # added at the layer, it sets every unit to `fill`
            chan = jnp.arange(K).reshape([K if i == cax else 1 for i in range(A.ndim)])

            def ablated(k):  # (N, T) scores with channel k ablated
                delta = jnp.where(chan == k, gap, jnp.zeros((), A.dtype))
                y, cap = run_model(m, params, x, spec.layers, perturb={L: delta})
                return score_matrix(sp_ids, info, y, cap, ids_)

            # vmap over the channels of a chunk batches only what depends on `delta`: the
            # layers up to `layer` stay unbatched and run once per program, not once per
            # channel (XLA merges them with the clean pass above and hoists them out of the
            # chunk loop: checked on the optimized HLO in tests/test_cam.py). VGG16 at 64x64,
            # 2 inputs, the 512 channels of block5_conv3, CPU: 2.6 s; Score-CAM, which runs
            # the whole model per channel, 12 s.
            sk = base.map_chunks(lambda ks: jax.vmap(ablated, out_axes=1)(ks), K, kc)
            w = (s0[:, None, :] - sk) / s0[:, None, :]  # (N, K, T)
            cam = jnp.einsum("n...k,nkt->nt...", to_channels_last(A, lcf), w)
            out = _finish(cam, size, upsample)
            return out if spec.class_axis else out[:, 0]

        return run

    key = ("ablationcam", p.key, spec, info, L, a_shape, bool(upsample), variant, kc, nb)
    return base.compiled(key, lambda: base.split_batch(build(), nb),
                         precision, forward_only=True)(p.params, p.x, p.ids)


# ---------------------------------------------------------------------- Eigen-CAM
def _first_component(A: Array) -> Array:
    """Projection of each position's activation vector on the first principal component,
    ``(N, h, w)`` for ``A (N, h, w, K)`` (any number of spatial axes), its sign chosen to
    correlate positively with the channel sum."""
    if jnp.issubdtype(A.dtype, jnp.floating) and A.dtype.itemsize < 4:
        A = A.astype(jnp.float32)  # a bfloat16/float16 model's layer: eigh has no such kernel
    n, *sp, k = A.shape
    P = int(np.prod(sp))
    X = A.reshape(n, P, k)
    X = X - X.mean(axis=1, keepdims=True)
    if P <= k:
        _, vecs = jnp.linalg.eigh(jnp.einsum("npk,nqk->npq", X, X))
        u = vecs[..., -1]  # (N, P)
        lam = jnp.einsum("np,npq,nq->n", u, jnp.einsum("npk,nqk->npq", X, X), u)
        proj = u * jnp.sqrt(jnp.maximum(lam, 0.0))[:, None]
    else:
        _, vecs = jnp.linalg.eigh(jnp.einsum("npk,npl->nkl", X, X))
        proj = jnp.einsum("npk,nk->np", X, vecs[..., -1])
    ref = A.reshape(n, P, k).sum(-1)
    ref = ref - ref.mean(axis=1, keepdims=True)
    sign = jnp.where(jnp.sum(proj * ref, axis=1) < 0, -1.0, 1.0).astype(A.dtype)
    return (proj * sign[:, None]).reshape(n, *sp)


def _no_score(outputs: Any) -> Array:
    """The score Eigen-CAM's ``targets=None`` stands for: none is read (zeros, one per
    input), so that no output has to hold classes."""
    return jnp.zeros(jax.tree_util.tree_leaves(outputs)[0].shape[:1], jnp.float32)


@refuses_non_finite_maps
def eigencam(model: ModelLike, x: Inputs, targets: Targets = None, *, layer: str | None = None,
             upsample: bool = True, head: str | None = None,
             memory_budget: int | None = None, precision: str | None = None,
             check_finite: bool = True) -> Array:
    """Eigen-CAM (Muhammad & Yeasin, 2020): the projection of the layer's activations on their
    first principal component (over spatial positions, channels centred), ReLU'd.

    Class-agnostic: no gradients, one forward pass. The sign of a principal component is
    arbitrary; jaxsal picks the one that correlates positively with the channel sum of
    ``A``. ``targets`` only shapes the output: with a class axis the same map is repeated
    for every target; ``targets=None`` (no class axis) reads no output, so a model of
    several outputs or of no class output (a detector, a segmentation) needs none; a class
    id traced under ``jax.jit`` and out of range gets NaN maps, as in the other methods.
    Arguments as in :func:`gradcam`; ``memory_budget`` bounds the inputs of one forward
    pass (the batch runs in passes of as many as fit).
    """
    c = _prepare_cam(model, x, _no_score if targets is None else targets, layer, head, None,
                     memory_budget, check_finite, upsample=upsample, reads_output=False)
    p, L, lcf = c.p, c.layer, c.layer_cf
    m, spec, info, size = p.model, p.spec, p.info, c.size
    # traced class ids (under the caller's jax.jit), unchecked: an id out of range gets NaN
    # maps, as in the other methods, though no class is read
    traced = spec.kind == "ids" and not spec.checked

    def build():
        def run(params, x, ids):
            _, caps = run_model(m, params, x, (L,))
            cam = _finish(_first_component(to_channels_last(caps[L], lcf))[:, None], size,
                          upsample)  # (N, 1, ...)
            cam = jnp.broadcast_to(cam, (cam.shape[0], spec.num) + cam.shape[2:])
            if traced:  # ids (N, T)
                cam = nan_where_invalid(cam, ids, info)
            return cam if spec.class_axis else cam[:, 0]

        return run

    key = ("eigencam", p.key, spec.class_axis, spec.num, traced, L, bool(upsample), c.nb)
    return base.compiled(key, lambda: base.split_batch(build(), c.nb),
                         precision, forward_only=True)(p.params, p.x,
                                                       p.ids if traced else None)


# ---------------------------------------------------------------------- guided Grad-CAM
@refuses_non_finite_maps
def guided_gradcam(model: ModelLike, x: ArrayLike, targets: Targets = None, *,
                   layer: str | None = None, reduce: str | None = "max_abs",
                   head: str | None = None, chunk_size: int | None = None,
                   memory_budget: int | None = None, precision: str | None = None,
                   check_finite: bool = True) -> Array:
    """Guided Grad-CAM (Selvaraju et al., 2017): the upsampled Grad-CAM map times the guided
    backpropagation gradient, ``cam[..., None] * dS/dx`` (guided ReLUs), then the channel
    ``reduce`` (default ``"max_abs"``; ``None`` keeps the paper's per-channel product).

    Two forward passes (the standard model for Grad-CAM, the guided one for the input
    gradient). Arguments as in :func:`gradcam` and :func:`jaxsal.guided_backprop`.
    """
    check_reduce(reduce)
    c = _prepare_cam(model, x, targets, layer, head, chunk_size, memory_budget, check_finite,
                     backprop="standard", multi_input=False, tokens=False,
                     method=guided_gradcam)
    p, L, a_shape, lcf = c.p, c.layer, c.a_shape, c.layer_cf
    mg = base.with_options(p.model, None, "guided")
    chunk = max(1, c.chunk // 2)
    m, spec, info, size = p.model, p.spec, p.info, p.spatial_shape
    cax = p.map_channel_axis

    def build():
        def run(params, x, ids):
            s, A, pull_a = layer_pullback(m, params, x, L, a_shape, spec, info, ids)
            A = to_channels_last(A, lcf)
            fwd = lambda xx: (*run_model(mg, params, xx, spec.layers), None)  # noqa: E731
            _, _, pull_x = target_pullback(fwd, x, spec, info, ids)

            def chunk_fn(ts):
                G = to_channels_last(jax.vmap(pull_a, out_axes=1)(ts), lcf, 2)
                cam = _finish(_gradcam_weights(A, G, None), size, True)  # (N, Tc, H, W)
                gb = jax.vmap(pull_x, out_axes=1)(ts)  # (N, Tc, H, W, C)
                return _reduce(jnp.expand_dims(cam, cax) * gb, reduce, cax)

            out = base.map_chunks(chunk_fn, spec.num, chunk)
            return out if spec.class_axis else out[:, 0]

        return run

    key = ("guided_gradcam", p.key, base.model_key(mg), spec, info, L, a_shape, reduce, chunk,
           c.nb)
    return base.compiled(key, lambda: base.split_batch(build(), c.nb),
                         precision)(p.params, p.x, p.ids)


#: explain_to_file refuses a job over several inputs before any work (see job_inputs.py).
scorecam.one_input = "its activation masks would need a rule for which input they multiply"


def _scorecam_whole_batch(options: dict) -> str | None:
    """Why Score-CAM's maps depend on the batch with ``options`` (a job's, those bound in a
    ``functools.partial`` under those passed), or None: with ``top_k`` and
    ``top_k_mode="union"`` every input's channels are the union of the batch's top-k, so a
    job's chunks would each pick their own (``explain_to_file`` refuses it)."""
    if options.get("top_k") is None or options.get("top_k_mode", "union") != "union":
        return None
    return (f"with top_k={options['top_k']!r} and top_k_mode=\"union\" (the default) uses the "
            "union of the batch's top-k channels for every input")


#: explain_to_file refuses a job of Faster-Score-CAM's union (see _scorecam_whole_batch).
scorecam.whole_batch = _scorecam_whole_batch
scorecam.whole_batch_fix = ("Pass top_k_mode=\"per_sample\" (each input its own top-k "
                            "channels: the maps do not depend on the batch), or call it")
#: Its maps do not depend on the targets (the layer's first principal component, the same map
#: for every class): a job's progress file records them as made for any class, and
#: ``jaxsal evaluate`` scores them at any --targets (``jaxsal._src.maps_job``).
eigencam.class_free = True
guided_gradcam.one_input = ("it multiplies Grad-CAM by guided backpropagation's map of one "
                            "image")
