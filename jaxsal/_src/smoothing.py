"""SmoothGrad, SmoothGrad-squared and VarGrad over any gradient method.

- SmoothGrad: Smilkov et al. (2017), "SmoothGrad: removing noise by adding noise".
- SmoothGrad-squared and VarGrad: Hooker et al. (2019), "A Benchmark for Interpretability
  Methods in Deep Neural Networks"; Adebayo et al. (2018), "Local Explanation Methods for Deep
  Neural Networks Lack Sensitivity to Parameter Values".

``n`` noisy copies ``x + eps``, ``eps ~ N(0, sigma_i^2)`` with ``sigma_i = noise_level *
(max(x_i) - min(x_i))`` per input (tf-keras-vis's and the paper's "noise level" relative to
the input range; no clipping) or a given ``noise_std`` (Captum's ``stdevs``), are explained
by the chosen method and combined:
``smoothgrad`` = mean, ``sg_squared`` = mean of squares, ``vargrad`` = variance.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import base, reals
from jaxsal._src.base import Inputs, Maps, ModelLike
from jaxsal._src.finite import refuses_non_finite_maps
from jaxsal._src.gradients import (deconvnet, first_only, gradient_x_input, guided_backprop,
                                   raw_gradients, saliency)
from jaxsal._src.integrated import (RULES, _Shifted, check_baseline, integrated_gradients,
                                    quadrature, raw_integrated)
from jaxsal._src.postprocess import _reduce_inputs, check_reduce
from jaxsal._src.targets import (Targets, layer_pullback, nan_where_invalid, resolve_predicted,
                                 run_model)
from jaxsal._src.validate import check_flag, input_positions, prepare, prepare_layer

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

VARIANTS = ("smoothgrad", "sg_squared", "vargrad")

# method name -> (backprop rule, times input, default channel reduction)
_METHODS = {
    "saliency": (None, False, "max_abs"),
    "gradient_x_input": (None, True, "sum"),
    "guided_backprop": ("guided", False, "max_abs"),
    "deconvnet": ("deconvnet", False, "max_abs"),
    "integrated_gradients": (None, False, "sum"),
}
_BY_FUNCTION = {saliency: "saliency", gradient_x_input: "gradient_x_input",
                guided_backprop: "guided_backprop", deconvnet: "deconvnet",
                integrated_gradients: "integrated_gradients"}

_DEFAULT = object()
#: The channel reductions that keep only magnitudes (of the channels' absolute values):
#: abs_first's default is True for them.
_MAGNITUDES = ("max_abs", "abs_sum", "l2")
#: The keys of ``method_options`` for ``method="integrated_gradients"``.
_IG_OPTIONS = ("baseline", "steps", "rule", "batch_steps")


def _method_name(method: str | Callable) -> str:
    name = _BY_FUNCTION.get(method, method) if callable(method) else method
    if name not in _METHODS:
        raise ValueError(f"smoothgrad: unknown method {method!r}; expected one of "
                         f"{tuple(_METHODS)} (names or the jaxsal functions)")
    return name


@refuses_non_finite_maps
def smoothgrad(model: ModelLike, x: Inputs, targets: Targets = None, *,
               key: jax.Array | int | None = None,
               method: str | Callable = "saliency", n: int = 25,
               noise_level: float | None = None, noise_std: float | None = None,
               variant: str = "smoothgrad", abs_first: bool | None = None,
               reduce: Any = _DEFAULT, method_options: dict | None = None,
               batch_samples: int | None = None, head: str | None = None,
               chunk_size: int | None = None, memory_budget: int | None = None,
               precision: str | None = None, check_finite: bool = True,
               index_offset: int = 0, layer: str | None = None) -> Maps:
    """SmoothGrad (Smilkov et al., 2017) and its variants over any gradient method.

    Args:
      model, x, targets, head, chunk_size, memory_budget, precision, check_finite: as in
        :func:`jaxsal.saliency`. ``targets=None`` fixes the predicted class on the clean ``x``.
      key: a ``jax.random`` key or an int seed (``key=0`` is ``jax.random.key(0)``, as in
        :func:`jaxsal.maximize`); required: the same key gives the same map.
      method: ``"saliency"`` (default), ``"gradient_x_input"``, ``"guided_backprop"``,
        ``"deconvnet"``, ``"integrated_gradients"`` (or those jaxsal functions).
      n: number of noisy samples (default 25).
      noise_level: noise std relative to each input's value range ``max - min``
        (tf-keras-vis's ``smooth_noise``, default 0.2; the paper suggests 0.1-0.2).
      noise_std: the noise std itself, the same for every input (Captum's ``NoiseTunnel``
        ``stdevs``), instead of ``noise_level``.
      variant: ``"smoothgrad"`` (mean), ``"sg_squared"`` (mean of squared maps), ``"vargrad"``
        (variance of the maps).
      abs_first: for ``"smoothgrad"``, average absolute values (tf-keras-vis) instead of
        signed ones (the paper). Default: ``True`` when ``reduce`` discards the sign anyway,
        a function of the channels' absolute values (``"max_abs"``, ``"abs_sum"``,
        ``"l2"``), so that ``smoothgrad(..., method="saliency")`` matches tf-keras-vis's
        ``Saliency(smooth_samples=n)`` (which averages ``|g|`` whatever it reduces); else
        ``False`` (signed reductions and ``reduce=None``: the paper's mean). ``True`` with
        another variant (which squares the maps) is refused.
      reduce: channel reduction of the combined map (default: the method's own: ``"max_abs"``
        for saliency / guided / deconvnet, ``"sum"`` for gradient x input and IG).
      method_options: for ``"integrated_gradients"``: ``baseline``, ``steps`` (default 16),
        ``rule``, ``batch_steps``.
      batch_samples: noisy samples evaluated together in one batched pass (1 = a loop;
        default: as many as fit in ``memory_budget``).
      index_offset: the position of ``x[0]`` in a larger batch. The noise of input ``i`` is
        keyed by its index ``index_offset + i``, so explaining ``x[a:b]`` with
        ``index_offset=a`` gives exactly rows ``a:b`` of one call over all of ``x``
        (:func:`jaxsal.explain_to_file` passes it for each chunk).
      layer: add the noise to this layer's output ``A`` instead of the input and take the
        gradients there (``"saliency"``, ``"gradient_x_input"`` -- times the noisy ``A`` --,
        ``"guided_backprop"``, ``"deconvnet"``): SmoothGrad in an embedding space, for models
        of token ids (``noise_level`` relative to each input's range of ``A``). Maps have
        the layer's shape, its channel axis reduced (``(N, [T,] L)`` for an embedding).
    Returns:
      Raw maps ``(N, H, W)`` / ``(N, T, H, W)`` (channels kept when ``reduce=None``).
    """
    name = _method_name(method)
    backprop, times_input, default_reduce = _METHODS[name]
    reduce = default_reduce if reduce is _DEFAULT else reduce
    check_reduce(reduce)
    key = base.check_key(key, "smoothgrad")
    index_offset = base.check_index_offset(index_offset)
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    n = base.check_n(n, "noisy samples")
    if noise_level is not None and noise_std is not None:
        raise ValueError(f"got noise_level={noise_level!r} and noise_std={noise_std!r}; pass "
                         "one: noise_level is relative to each input's max - min, noise_std "
                         "is the standard deviation itself")
    if noise_std is not None:
        noise_std = reals.check_real(noise_std, "noise_std", low=0, example="0.15",
                                     kind="a finite number: the noise's standard deviation")
    else:
        noise_level = reals.check_real(
            0.2 if noise_level is None else noise_level, "noise_level", low=0, example="0.2",
            kind="a finite number: the noise's standard deviation as a fraction of each "
            "input's max - min")
    if variant == "vargrad" and n < 2:
        raise ValueError("variant='vargrad' is the variance of the n noisy maps: expected n >= "
                         "2, got n=1, whose variance is 0 at every pixel (the map would be 0). "
                         "Pass n >= 2 (the default is 25)")
    if variant == "vargrad" and (noise_std if noise_std is not None else noise_level) == 0:
        given = "noise_std" if noise_std is not None else "noise_level"
        raise ValueError(f"variant='vargrad' is the variance of the maps of noisy copies of x: "
                         f"expected noise, got {given}=0, whose copies are x itself and their "
                         "variance 0 at every pixel (the map would be 0). Pass noise_level > 0 "
                         "(the default is 0.2) or noise_std > 0")
    if abs_first is None:
        abs_first = reduce in _MAGNITUDES
    elif abs_first is True and variant != "smoothgrad":
        raise ValueError(f"abs_first=True averages absolute maps, for variant='smoothgrad'; "
                         f"variant={variant!r} squares the maps (their sign is lost anyway): "
                         "leave abs_first out")
    abs_first = check_flag(abs_first, "abs_first")
    opts = dict(method_options or {})
    if name != "integrated_gradients" and opts:
        raise ValueError(f"method_options are only used by integrated_gradients, got {opts} "
                         f"for {name!r}")
    unknown = set(opts) - set(_IG_OPTIONS)
    if unknown:
        raise ValueError(f"unknown integrated_gradients options {sorted(unknown)} in "
                         f"method_options; expected keys among {_IG_OPTIONS}")
    steps, rule = opts.get("steps", 16), opts.get("rule", "trapezoid")
    batch_steps = opts.get("batch_steps")
    if name == "integrated_gradients":
        if rule not in RULES:
            raise ValueError(f"unknown rule {rule!r}; expected one of {RULES}")
        quadrature(steps, rule)  # refuses steps that are not ints >= 1 (2.5, True...)
        steps = int(steps)

    if layer is not None and name == "integrated_gradients":
        raise ValueError("smoothgrad(layer=...) takes the gradient methods (saliency, "
                         "gradient_x_input, guided_backprop, deconvnet), not "
                         "integrated_gradients; for a path at a layer use "
                         "integrated_gradients(layer=...)")
    p = prepare(model, x, targets, head=head, backprop=backprop, check_finite=check_finite,
                allow_int=layer is not None, multi_input=True)
    lt = None if layer is None else prepare_layer(p, layer, reduce)
    if variant == "vargrad" and noise_std is None and lt is None:
        _check_noisy(p.x)
    b = check_baseline(p.per_input(opts.get("baseline"), "method_options['baseline']"), p.x,
                       formats=p.formats)
    fb = base.forward_bytes(p.model, p.x)
    nb = base.batch_chunk(p.n, fb // p.n, memory_budget)
    fb = fb * nb // p.n
    if name == "integrated_gradients":
        batch_samples = base.auto_batch(n, fb, 1 if batch_samples is None else batch_samples,
                                        memory_budget, "batch_samples")
        batch_steps = base.auto_batch(steps, fb * batch_samples, batch_steps, memory_budget,
                                      "method_options['batch_steps']")
        per_target = fb * batch_samples * batch_steps
    else:
        batch_samples = base.auto_batch(n, fb, batch_samples, memory_budget, "batch_samples")
        per_target = fb * batch_samples
    chunk = base.chunk_for(p.spec.num, per_target, chunk_size, memory_budget)
    m, spec, info = p.model, p.spec, p.info
    # each input's channel axis in (N, T, *x.shape[1:]), or the layer's
    axes = p.map_channel_axes if lt is None else [lt.map_channel_axis]
    formats = p.formats if lt is None else [False]  # noise in the layer's own layout
    positions = input_positions(p.model, p.x)  # input j's noise: keyed by j, dict or list
    two = variant == "vargrad"

    def build():
        def run(params, x, ids, key, baseline, index):
            sp, ids_ = resolve_predicted(m, params, x, spec, info, ids)
            if lt is not None:  # the noisy copies are of the layer's output A
                A = run_model(m, params, x, (lt.name,))[1][lt.name]
                leaves, tree = [A], jax.tree_util.tree_structure(0)
                raw = _layer_raw(m, sp, info, lt, x, A, times_input)
            else:
                leaves, tree = jax.tree_util.tree_flatten(x)
                if name == "integrated_gradients":
                    raw = raw_integrated(m, sp, info, steps, rule, batch_steps)
                else:
                    g = raw_gradients(m, sp, info, times_input)
                    raw = lambda params, xk, ids, ts, _b: g(params, xk, ids, ts)  # noqa: E731
            if noise_std is not None:
                sigma = [jnp.asarray(noise_std, a.dtype) for a in leaves]
            else:
                sigma = [noise_level * (jnp.max(a, axis=tuple(range(1, a.ndim)), keepdims=True)
                                        - jnp.min(a, axis=tuple(range(1, a.ndim)),
                                                  keepdims=True)) for a in leaves]

            ids_b = base.repeat_rows(ids_, batch_samples)  # (input-major: stack_rows)
            vmapped_ig = name == "integrated_gradients"

            def noisy(ks):
                """``(B, N, ...)`` noisy copies of every input for samples ``ks``: the noise
                of sample k for input i is key -> fold_in(k) -> fold_in(i) (and, with
                several model inputs, -> fold_in(j) for input j); independent of how the
                batch is split into sub-batches, and drawn channels-last so that a
                channels-first model gets the same noise, transposed."""
                out = []
                for j, (a, sd, cf) in enumerate(zip(leaves, sigma, formats)):
                    def noise(k, a=a, cf=cf, j=j):
                        kk = jax.random.fold_in(key, k)
                        shape = a.shape[2:] + a.shape[1:2] if cf else a.shape[1:]

                        def one(i):
                            ki = jax.random.fold_in(kk, i)
                            if len(leaves) > 1:
                                ki = jax.random.fold_in(ki, j if positions is None
                                                        else positions[j])
                            return jax.random.normal(ki, shape, a.dtype)

                        eps = jax.vmap(one)(index)
                        return jnp.moveaxis(eps, -1, 1) if cf else eps

                    out.append(a[None] + sd[None] * jax.vmap(noise)(ks))
                return tree.unflatten(out)

            def chunk_fn(ts):
                # VarGrad: the moments of the maps minus those at the clean input (one more
                # pass), so that E[q^2] - E[q]^2 keeps the digits of a variance that is small
                # next to the squared mean (float32 gave rounding noise, 0 or ulps of it)
                clean = tree.unflatten(leaves)  # x, or the layer's output A
                shift = (jax.tree_util.tree_leaves(raw(params, clean, ids_, ts, baseline))
                         if two else None)

                def group(ks, valid):
                    xb = noisy(ks)  # (B, N, ...) per input
                    if vmapped_ig:  # IG's own path batching happens inside
                        mk = jax.vmap(lambda xk: raw(params, xk, ids_, ts, baseline))(xb)
                    else:
                        flat = jax.tree_util.tree_map(base.stack_rows, xb)
                        mk = jax.tree_util.tree_map(
                            lambda a: base.unstack_rows(a, len(ks)),
                            raw(params, flat, ids_b, ts, baseline))

                    def parts(m_, c_):
                        v = valid.reshape((-1,) + (1,) * (m_.ndim - 1))
                        if variant == "sg_squared":
                            qs = (m_ * m_,)
                        elif variant == "vargrad":
                            d = m_ - c_[None]
                            qs = (d, d * d)
                        else:
                            qs = (jnp.abs(m_) if abs_first else m_,)
                        return tuple(jnp.sum(jnp.where(v, q, 0.0), axis=0) for q in qs)

                    leaves_m = jax.tree_util.tree_leaves(mk)
                    per = [parts(m_, c_) for m_, c_ in
                           zip(leaves_m, shift or [None] * len(leaves_m))]
                    return tuple(tuple(q[i] for q in per) for i in range(len(per[0])))

                sums = base.sum_groups(group, n, batch_samples)
                mean = [s_ / n for s_ in sums[0]]
                if two:
                    mean = [jnp.maximum(s2 / n - m_ * m_, 0.0) for s2, m_ in zip(sums[1], mean)]
                out = _reduce_inputs(tree.unflatten(mean), reduce, axes)
                # traced ids out of range: NaN maps (a maximum fused by XLA:CPU drops NaN)
                return out if sp.checked else nan_where_invalid(out, ids_[:, ts], info)

            return first_only(base.map_chunks(chunk_fn, spec.num, chunk), spec.class_axis)

        return run

    ck = ("smoothgrad", name, p.key, spec, info, n, noise_level, noise_std, variant, abs_first,
          reduce, steps, rule, batch_steps, batch_samples, chunk, nb, lt, positions)
    return base.compiled(ck, lambda: base.split_batch(build(), nb, (1, 2, 5), maybe=(4,)),
                         precision)(p.params, p.x, p.ids, key, b,
                                    base.input_indices(index_offset, p.n))


def _check_noisy(x: Any) -> None:
    """VarGrad with ``noise_level`` (relative to each input's max - min): refuse the inputs
    that are constant (every array of them), whose noise is 0 and their map 0. Traced inputs
    (``jax.grad`` or ``jax.jit`` with respect to ``x`` around the method) are not checked:
    their values are unknown. Concrete ones are checked eagerly, also inside a user's
    ``jax.jit`` (where ``jnp`` operations on them would be traced, and ``np.asarray`` of the
    result raised a ``TracerArrayConversionError``)."""
    leaves = jax.tree_util.tree_leaves(x)
    if any(isinstance(a, jax.core.Tracer) for a in leaves):
        return
    with jax.ensure_compile_time_eval():
        flat = [jnp.reshape(a, (a.shape[0], -1)) for a in leaves]
        spans = np.asarray(sum(jnp.max(a, axis=1) - jnp.min(a, axis=1) for a in flat))
    flat_inputs = np.flatnonzero(spans == 0)
    if flat_inputs.size:
        which = (f"input {int(flat_inputs[0])} is constant, so its noise is" if
                 flat_inputs.size == 1 else f"inputs {flat_inputs.tolist()[:10]} are constant, "
                 "so their noise is")
        raise ValueError(
            f"variant='vargrad' with noise_level (relative to each input's max - min): "
            f"{which} 0 and the variance of the noisy maps 0 at every pixel (the map would be "
            "0). Expected inputs that vary; for constant ones pass noise_std (the noise's "
            "standard deviation itself)")


def _layer_raw(m: Any, spec: Any, info: Any, lt: Any, x: Any, A: Array, times_input: bool):
    """``raw(params, z, ids, ts, _) -> (B N, len(ts), *A.shape[1:])``: the gradients with
    respect to the layer's output at ``z`` (``B`` noisy copies of ``A``, stacked input-major
    as :func:`base.stack_rows` stacks them), each copy run as ``x`` with ``z - A`` added at the
    layer (times ``z`` for gradient x input)."""

    def raw(params, z, ids, ts, _baseline):
        b = z.shape[0] // A.shape[0]
        shifted = _Shifted(m, lt.name, z - base.repeat_rows(A, b))
        _, _, pull = layer_pullback(shifted, params, base.repeat_rows(x, b), lt.name, z.shape,
                                    spec, info, ids)
        g = jax.vmap(pull, out_axes=1)(ts)
        return g * z[:, None] if times_input else g

    return raw


#: explain_to_file takes integrated gradients' baseline one per input of a model of
#: several inputs, by name or position.
smoothgrad.several_input_options = ("method_options.baseline",)
#: Options that take one of jaxsal's functions or its name (``method=jaxsal.saliency`` or
#: ``"saliency"``): a batch job signs either as the name, one job (job_signature).
smoothgrad.named_options = ("method",)
