"""Convolutions: Conv1D/2D/3D (groups, dilation, TF-style SAME padding, causal, channels_first),
DepthwiseConv1D/2D, SeparableConv1D/2D, Conv1D/2D/3DTranspose."""

from __future__ import annotations

import functools
import itertools
import math
from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from model_import._layers.registry import LayerImpl, accepts_bias, register_layer

Array = jax.Array


def _tuple(v, n):
    if isinstance(v, (list, tuple)):
        return tuple(int(i) for i in v)
    return (int(v),) * n


def _padding(config, rank):
    pad = str(config.get("padding", "valid")).upper()
    if pad not in ("VALID", "SAME", "CAUSAL"):
        raise ValueError(
            f"expected padding 'valid', 'same' or 'causal' (Keras's convolution paddings), got "
            f"{config.get('padding')!r}; save the layer with one of them")
    return pad


def _channels_first(config):
    return config.get("data_format") == "channels_first"


def _wrap_channels(fn, channels_first):
    """Flax convolutions are channels-last; move the channel axis around them if needed."""
    if not channels_first:
        return fn

    def wrapped(params, x, *, rt):
        y = fn(params, jnp.moveaxis(x, 1, -1), rt=rt)
        return jnp.moveaxis(y, -1, 1)

    return wrapped


def _conv_module(config, rank, features, groups, kernel_size=None, strides=None, use_bias=None):
    return nn.Conv(
        features=features,
        kernel_size=kernel_size or _tuple(config["kernel_size"], rank),
        strides=strides or _tuple(config.get("strides", 1), rank),
        padding=_padding(config, rank),
        kernel_dilation=_tuple(config.get("dilation_rate", 1), rank),
        feature_group_count=groups,
        use_bias=bool(config.get("use_bias", True)) if use_bias is None else use_bias,
    )


_DIMS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}


def _conv_plain(x, k, strides, pads, dilation):
    rank = k.ndim - 2
    return lax.conv_general_dilated(x, k, strides, pads, rhs_dilation=dilation,
                                    dimension_numbers=_DIMS[rank])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv_canonical_vjp(x, k, strides, pads, dilation):
    """``lax.conv_general_dilated`` (channels-last, ``groups=1``) whose input gradient is a
    convolution with an explicitly flipped and transposed, canonical ``(..., in, out)`` kernel.

    JAX's own transpose rule expresses the input gradient with the kernel's in/out axes
    swapped in the dimension numbers. XLA:CPU normally inserts a copy to fix that layout, but
    not inside a ``while`` loop (``lax.map`` over target chunks, ``fori_loop`` over samples,
    ``lax.scan`` in activation maximization), where the swapped-kernel convolution runs
    about 3x slower. Forward values and both gradients are unchanged (forward-mode
    differentiation is not defined for this function).
    """
    return _conv_plain(x, k, strides, pads, dilation)


def _conv_fwd(x, k, strides, pads, dilation):
    return _conv_plain(x, k, strides, pads, dilation), (x, k)


def _conv_bwd(strides, pads, dilation, res, g):
    x, k = res
    rank = k.ndim - 2
    dk = jax.vjp(lambda kk: _conv_plain(x, kk, strides, pads, dilation), k)[1](g)[0]
    if k.shape[-2] == 1 and set(strides) == {1} and set(dilation) == {1} and \
            all(lo >= 0 and hi >= 0 for lo, hi in pads):
        # One input channel: XLA:CPU runs the transposed convolution (one output channel) as
        # a matrix-vector product (3.9 ms of the MNIST model's 48 ms top-1 gradient). The
        # input gradient of ``conv_patches`` is one matmul and the shifted sums transposing
        # its window slices (that layer's forward and input gradient: 6.8 -> 4.3 ms).
        dx = jax.vjp(lambda xx: conv_patches(xx, k, strides, pads, dilation), x)[1](g)[0]
        return dx.astype(x.dtype), dk.astype(k.dtype)
    kt = jnp.swapaxes(jnp.flip(k, axis=tuple(range(rank))), -1, -2)
    tpads = []
    for i in range(rank):
        k_eff = (k.shape[i] - 1) * dilation[i] + 1
        lo, hi = pads[i]
        rem = (x.shape[1 + i] + lo + hi - k_eff) % strides[i]
        tpads.append((k_eff - 1 - lo, k_eff - 1 - hi + rem))
    dx = lax.conv_general_dilated(g, kt, (1,) * rank, tpads, lhs_dilation=strides,
                                  rhs_dilation=dilation, dimension_numbers=_DIMS[rank])
    return dx.astype(x.dtype), dk.astype(k.dtype)


conv_canonical_vjp.defvjp(_conv_fwd, _conv_bwd)


#: Convolutions whose output has at most this many positions per image (8x8 in 2-D) are
#: computed as one matmul over gathered patches (:func:`conv_patches`). XLA:CPU's
#: convolution kernels are pathologically slow when the window covers most of a small input:
#: a 3x3 SAME convolution 512 -> 512 on (10, 2, 2, 512) took 87 ms (its input gradient 174
#: ms) against 1.7 ms (3.6 ms) as patches x kernel; on 4x4 and 8x8 inputs the matmul was
#: still faster or equal, on 16x16 and larger slower. VGG16 at 32x32 input runs its whole
#: block 5 at 2x2.
SMALL_CONV_POSITIONS = 64


def _window_taps(x, window, strides, pads, dilation):
    """``[(tap, slice)]`` for every position ``tap`` of a convolution window, in row-major
    order: ``slice`` is the part of the padded channels-last ``x`` that the window's ``tap``
    element meets at every output position (strided, dilated)."""
    rank = len(window)
    x = jnp.pad(x, ((0, 0), *[(int(lo), int(hi)) for lo, hi in pads], (0, 0)))
    k_eff = [(w - 1) * d + 1 for w, d in zip(window, dilation)]
    out = [(x.shape[1 + i] - k_eff[i]) // strides[i] + 1 for i in range(rank)]
    taps = []
    for tap in itertools.product(*[range(w) for w in window]):
        sl = tuple(slice(t * d, t * d + (o - 1) * s + 1, s)
                   for t, d, o, s in zip(tap, dilation, out, strides))
        taps.append((tap, x[(slice(None), *sl, slice(None))]))
    return taps


def conv_patches(x, k, strides, pads, dilation):
    """Channels-last convolution (``groups=1``) as ``patches @ kernel``: the window's taps
    are gathered as strided slices of the padded input and concatenated along channels, in
    the row-major order of ``k.reshape(-1, out)``. Equal to ``lax.conv_general_dilated``
    (up to summation order); differentiable by JAX's own rules (slices, a pad, a dot)."""
    taps = [xs for _, xs in _window_taps(x, k.shape[:-2], strides, pads, dilation)]
    patches = jnp.concatenate(taps, axis=-1) if len(taps) > 1 else taps[0]
    return jnp.dot(patches, k.reshape(-1, k.shape[-1]))


def dense_conv(x: Array, k: Array, strides: Sequence[int], padding: str,
               dilation: Sequence[int]) -> Array:
    """A channels-last convolution of ``x`` with a full kernel ``(*window, in, out)``
    (``padding``: ``"VALID"``, ``"SAME"`` or ``"CAUSAL"``, the last left-padding the one
    spatial axis), as patches @ kernel on few output positions (:func:`conv_patches`) and
    through :func:`conv_canonical_vjp` otherwise."""
    rank = k.ndim - 2
    dtype = jnp.result_type(x, k)
    k_eff = [(d - 1) * r + 1 for d, r in zip(k.shape[:rank], dilation)]
    if padding == "CAUSAL":
        pads = tuple((e - 1, 0) for e in k_eff)
    else:
        pads = tuple(tuple(int(v) for v in p) for p in
                     lax.padtype_to_pads(x.shape[1:1 + rank], k_eff, strides, padding))
    out = [(x.shape[1 + i] + sum(pads[i]) - k_eff[i]) // strides[i] + 1 for i in range(rank)]
    conv = conv_patches if math.prod(out) <= SMALL_CONV_POSITIONS else conv_canonical_vjp
    return conv(x.astype(dtype), k.astype(dtype), tuple(strides), pads, tuple(dilation))


def refuse_empty_output(call, ctx, config, rank: int):
    """``call`` (a layer's call, in the layer's own layout) refusing, while tracing, an input
    on which a convolution's output has a spatial axis of size 0 (a ``valid`` window larger
    than the input), as Keras 3 refuses it ("The convolution operation resulted in an empty
    output"): not the empty maps that a global pooling after it would turn into NaN. An
    already empty input (an empty batch) passes, as in Keras. ``config``: the layer's config
    (``kernel_size``, ``dilation_rate``, ``padding``, ``data_format``)."""
    window = _tuple(config["kernel_size"], rank)
    dilation = _tuple(config.get("dilation_rate", 1), rank)
    first = 2 if _channels_first(config) else 1
    if _padding(config, rank) != "VALID":
        return call  # 'same' and 'causal': an output position for every input position

    def checked(params, x, *, rt):
        if math.prod(x.shape) == 0:
            return call(params, x, rt=rt)
        for i in range(rank):
            n, k_eff = x.shape[first + i], (window[i] - 1) * dilation[i] + 1
            if n < k_eff:
                raise ValueError(
                    f"{ctx.class_name} layer '{ctx.layer_name}' of an input of shape "
                    f"{tuple(x.shape)}: expected at least {k_eff} positions on spatial axis "
                    f"{first + i} (its 'valid' window: kernel {window[i]}, dilation "
                    f"{dilation[i]}), got {n}, which gives an empty output (size 0 on that "
                    "spatial axis; Keras refuses it too: 'The convolution operation resulted "
                    "in an empty output'); give the model a larger input")
        return call(params, x, rt=rt)
    return checked


def _make_conv(rank):
    def convert(config, ctx):
        filters = int(config["filters"])
        groups = int(config.get("groups", 1) or 1)
        use_bias = bool(config.get("use_bias", True))
        module = _conv_module(config, rank, filters, groups)
        padding = _padding(config, rank)
        strides = _tuple(config.get("strides", 1), rank)
        dilation = _tuple(config.get("dilation_rate", 1), rank)

        def call(params, x, *, rt):
            if groups != 1 or padding == "CAUSAL":
                return module.apply({"params": params}, x)
            y = dense_conv(x, params["kernel"], strides, padding, dilation)
            return y + params["bias"] if use_bias else y

        names = ("kernel", "bias") if use_bias else ("kernel",)
        shapes = {"kernel": (*_tuple(config["kernel_size"], rank), None, filters),
                  "bias": (filters,)}
        return LayerImpl(call=refuse_empty_output(
                             _wrap_channels(accepts_bias(call, use_bias),
                                            _channels_first(config)), ctx, config, rank),
                         activation=config.get("activation"),
                         convert_weights=lambda w: dict(zip(names, w)),
                         n_weights=len(names), param_shapes=shapes, affine=use_bias,
                         relevance=True,
                         data_format=("channels_first" if _channels_first(config)
                                      else "channels_last"))
    return convert


register_layer("Conv1D", "Convolution1D")(_make_conv(1))
register_layer("Conv2D", "Convolution2D")(_make_conv(2))
register_layer("Conv3D", "Convolution3D")(_make_conv(3))


def _depthwise_kernel(k: np.ndarray) -> np.ndarray:
    # Keras (..., in, multiplier) -> Flax grouped conv (..., 1, in * multiplier); output
    # channel c * multiplier + m, as Keras orders it.
    *spatial, cin, mult = k.shape
    return np.reshape(k, (*spatial, 1, cin * mult))


def depthwise_shifted(x, k, strides, padding, dilation):
    """Depthwise convolution as a sum of shifted, per-channel-scaled slices of ``x``.

    ``k`` is ``(*window, 1, C * multiplier)`` (output channel ``c * multiplier + m`` reads input
    channel ``c``, as Keras orders it); ``padding`` is ``"VALID"`` or ``"SAME"``. Equal to the
    grouped convolution (``feature_group_count=C``), which XLA:CPU runs 4x slower forward
    and over 10x slower backward; the slices and products vectorize and fuse.
    """
    rank = k.ndim - 2
    dtype = jnp.result_type(x, k)
    x, k = x.astype(dtype), k.astype(dtype)
    mult = k.shape[-1] // x.shape[-1]
    if mult > 1:
        x = jnp.repeat(x, mult, axis=-1)
    window = k.shape[:rank]
    k_eff = [(w - 1) * d + 1 for w, d in zip(window, dilation)]
    pads = lax.padtype_to_pads(x.shape[1:1 + rank], k_eff, strides, padding)
    y = None
    for tap, xs in _window_taps(x, window, strides, pads, dilation):
        term = xs * k[tap + (0,)]
        y = term if y is None else y + term
    return y


def _depthwise_call(config, rank, kernel_key="depthwise_kernel", bias_key="bias",
                    use_bias=None, strides=None):
    padding = _padding(config, rank)
    dilation = _tuple(config.get("dilation_rate", 1), rank)
    conv_strides = strides or _tuple(config.get("strides", 1), rank)

    def call(params, x, *, rt):
        k = params[kernel_key]
        cin = x.shape[-1]
        if padding != "CAUSAL" and k.shape[-2] == 1:
            y = depthwise_shifted(x, k, conv_strides, padding, dilation)
        else:
            module = _conv_module(config, rank, k.shape[-1], cin, kernel_size=k.shape[:rank],
                                  strides=strides, use_bias=False)
            y = module.apply({"params": {"kernel": k}}, x)
        if use_bias and bias_key in params:
            y = y + params[bias_key]
        return y
    return call


def _make_depthwise(rank):
    def convert(config, ctx):
        use_bias = bool(config.get("use_bias", True))

        def weights(w: Sequence[np.ndarray]):
            out = {"depthwise_kernel": _depthwise_kernel(np.asarray(w[0]))}
            if use_bias:
                out["bias"] = w[1]
            return out

        call = _depthwise_call(config, rank, use_bias=use_bias)
        return LayerImpl(call=_wrap_channels(accepts_bias(call, use_bias),
                                             _channels_first(config)),
                         activation=config.get("activation"), convert_weights=weights,
                         n_weights=2 if use_bias else 1, affine=use_bias, relevance=True,
                         data_format=("channels_first" if _channels_first(config)
                                      else "channels_last"))
    return convert


register_layer("DepthwiseConv1D")(_make_depthwise(1))
register_layer("DepthwiseConv2D")(_make_depthwise(2))


def merge_separable(params: Mapping[str, Array], multiplier: int) -> dict[str, Array]:
    """A separable convolution's params (``depthwise_kernel`` ``(*window, 1, C * M)``,
    ``pointwise_kernel`` ``(1..., C * M, F)``, ``M`` the depth multiplier) with the one
    convolution kernel they compose added, ``"kernel"`` ``(*window, C, F)``: the layer's call
    then runs that convolution (the two kernels stay, unused, so the params keep the
    model's keys). LRP's rules that change weights are defined on that kernel."""
    dk, pk = params["depthwise_kernel"], params["pointwise_kernel"]
    *window, _, cm = dk.shape
    c = cm // multiplier
    kernel = jnp.einsum("...cm,cmf->...cf", dk.reshape(*window, c, multiplier),
                        pk.reshape(c, multiplier, pk.shape[-1]))
    return {**params, "kernel": kernel}


def _make_separable(rank):
    def convert(config, ctx):
        use_bias = bool(config.get("use_bias", True))
        depthwise = _depthwise_call(config, rank, use_bias=False)
        padding = _padding(config, rank)
        strides = _tuple(config.get("strides", 1), rank)
        dilation = _tuple(config.get("dilation_rate", 1), rank)

        def call(params, x, *, rt):
            if "kernel" in params:  # one merged kernel (merge_separable)
                y = dense_conv(x, params["kernel"], strides, padding, dilation)
            else:
                y = depthwise(params, x, rt=rt)
                pk = params["pointwise_kernel"]
                y = jnp.tensordot(y, pk.reshape(pk.shape[-2], pk.shape[-1]), axes=1)
            if use_bias:
                y = y + params["bias"]
            return y

        def weights(w):
            out = {"depthwise_kernel": _depthwise_kernel(np.asarray(w[0])),
                   "pointwise_kernel": np.asarray(w[1])}
            if use_bias:
                out["bias"] = w[2]
            return out

        return LayerImpl(call=_wrap_channels(accepts_bias(call, use_bias),
                                             _channels_first(config)),
                         activation=config.get("activation"), convert_weights=weights,
                         n_weights=3 if use_bias else 2, affine=use_bias, relevance=True,
                         data_format=("channels_first" if _channels_first(config)
                                      else "channels_last"))
    return convert


register_layer("SeparableConv1D", "SeparableConvolution1D")(_make_separable(1))
register_layer("SeparableConv2D", "SeparableConvolution2D")(_make_separable(2))


def transpose_output_size(n_in, window, stride, padding, output_padding, dilation):
    """Length of one spatial axis after a Keras transposed convolution.

    ``valid``: ``(n_in - 1) * stride + k`` plus ``output_padding`` (by default
    ``max(k, stride) - k``); ``same``: ``n_in * stride``, or ``(n_in - 1) * stride + k % 2 +
    output_padding`` when ``output_padding`` is given; ``k`` is the dilated window. Keras 2
    (``conv_utils.deconv_output_length``) and Keras 3 agree.
    """
    k = (window - 1) * dilation + 1
    if padding == "VALID":
        extra = max(k, stride) - k if output_padding is None else output_padding
        return (n_in - 1) * stride + k + extra
    if output_padding is None:
        return n_in * stride
    return (n_in - 1) * stride + k % 2 + output_padding


def transpose_pads(n_in, window, stride, padding, output_padding, dilation):
    """``(lo, hi)`` padding of the stride-dilated input for a transposed convolution.

    A transposed convolution is the input gradient of the forward convolution that maps the
    output size (:func:`transpose_output_size`) back to ``n_in``, as TensorFlow defines
    ``conv_transpose``: that forward convolution pads ``before`` zeros on the left (none for
    ``valid``; half the TF ``SAME`` total, rounded down, for ``same``). Written as a
    convolution of the input dilated by ``stride`` with the flipped kernel, the left padding
    is ``k - 1 - before`` and the right padding makes the output ``transpose_output_size``
    long. Keras 3's JAX and NumPy backends compute the same paddings.
    """
    k = (window - 1) * dilation + 1
    n_out = transpose_output_size(n_in, window, stride, padding, output_padding, dilation)
    before = 0 if padding == "VALID" else max((n_in - 1) * stride + k - n_out, 0) // 2
    lo = k - 1 - before
    hi = n_out - ((n_in - 1) * stride + 1) - lo + k - 1
    return lo, hi


@jax.custom_vjp
def _barrier(x):
    """``lax.optimization_barrier`` of ``x``, differentiable (jax before 0.5 has no AD rule
    for it): the cotangent passes through a barrier too."""
    return lax.optimization_barrier(x)


_barrier.defvjp(lambda x: (lax.optimization_barrier(x), None),
                lambda _, g: (lax.optimization_barrier(g),))


def conv_transpose(x, k, strides, padding, output_padding, dilation):
    """Channels-last transposed convolution with a Keras kernel ``(*window, out, in)``.

    ``padding`` is ``"VALID"`` or ``"SAME"``; ``output_padding`` is ``None`` or one int per
    spatial axis. Computed as a convolution of the stride-dilated input with the spatially
    flipped kernel, its in/out axes swapped: ``jax.grad`` through it is a strided convolution.
    """
    rank = k.ndim - 2
    dtype = jnp.result_type(x, k)
    window = k.shape[:rank]
    out_pad = output_padding or (None,) * rank
    pads = [transpose_pads(x.shape[1 + i], window[i], strides[i], padding, out_pad[i],
                           dilation[i]) for i in range(rank)]
    kt = jnp.swapaxes(jnp.flip(k, axis=tuple(range(rank))), -1, -2).astype(dtype)
    x = x.astype(dtype)
    if any(x.shape[1 + i] < window[i] for i in range(rank)):
        # XLA (jax 0.10.2) aborts the process ("Window dimensions do not match RHS shape",
        # algebraic_simplifier) on some input-dilated convolutions whose window is larger
        # than the input along an axis, e.g. a (2, 4) kernel, strides (2, 2), on a 3 x 3
        # image. Then the input is dilated and padded explicitly, behind a barrier that
        # keeps XLA from folding that back into the convolution (a tiny input: cheap).
        config = [(0, 0, 0)] + [(lo, hi, s - 1) for (lo, hi), s in zip(pads, strides)]
        x = _barrier(lax.pad(x, jnp.zeros((), dtype), config + [(0, 0, 0)]))
        pads, strides = [(0, 0)] * rank, (1,) * rank
    return lax.conv_general_dilated(x, kt, (1,) * rank, pads, lhs_dilation=strides,
                                    rhs_dilation=dilation, dimension_numbers=_DIMS[rank])


def _make_conv_transpose(rank):
    def convert(config, ctx):
        padding = _padding(config, rank)
        if padding not in ("VALID", "SAME"):
            raise ctx.error(f"transposed convolutions take padding 'valid' or 'same', got "
                            f"{config.get('padding')!r}")
        if int(config.get("groups", 1) or 1) != 1:
            raise ctx.error(f"groups={config['groups']} is not supported for transposed "
                            "convolutions")
        strides = _tuple(config.get("strides", 1), rank)
        dilation = _tuple(config.get("dilation_rate", 1), rank)
        op = config.get("output_padding")
        output_padding = None if op is None else _tuple(op, rank)
        use_bias = bool(config.get("use_bias", True))
        cf = _channels_first(config)

        def call(params, x, *, rt):
            y = conv_transpose(x, params["kernel"], strides, padding, output_padding, dilation)
            return y + params["bias"] if use_bias else y

        names = ("kernel", "bias") if use_bias else ("kernel",)
        return LayerImpl(call=_wrap_channels(accepts_bias(call, use_bias), cf),
                         activation=config.get("activation"),
                         convert_weights=lambda w: dict(zip(names, w)), n_weights=len(names),
                         affine=use_bias, relevance=True,
                         data_format="channels_first" if cf else "channels_last")
    return convert


for _rank in (1, 2, 3):
    register_layer(f"Conv{_rank}DTranspose", f"Convolution{_rank}DTranspose")(
        _make_conv_transpose(_rank))
