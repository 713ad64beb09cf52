"""GradientSHAP: expected gradients over a distribution of baselines.

Lundberg & Lee (2017), "A Unified Approach to Interpreting Model Predictions" (SHAP values,
approximated with gradients as Captum's ``GradientShap``); Erion et al. (2021), "Improving
performance of deep learning models with axiomatic attribution priors and expected gradients".

For each of ``n`` samples and each input ``x``: a baseline ``b`` is drawn uniformly from the
given ``baselines`` ``(B, ...)``, a point ``a ~ U(0, 1)`` on the straight path, and (with
``noise_std``) Gaussian noise ``e``; with ``x~ = x + e`` the sample's attribution is
``(x~ - b) * dS/dx (b + a (x~ - b))`` and the map is their mean. Its expectation is integrated
gradients averaged over the baselines, so ``sum(map) ~= S(x) - E_b[S(b)]`` in expectation
(without noise). One forward and one backward pass per sample; every target's pullback shares
the sample's forward pass, and samples are batched into one pass under the memory budget.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxsal._src import base, reals
from jaxsal._src.base import Inputs, Maps, ModelLike
from jaxsal._src.finite import refuses_non_finite_maps
from jaxsal._src.gradients import first_only, raw_gradients
from jaxsal._src.integrated import _Shifted, checked_per_input
from jaxsal._src.postprocess import _reduce_inputs, check_reduce
from jaxsal._src.targets import Targets, layer_pullback, resolve_predicted, run_model
from jaxsal._src.validate import (all_finite, check_flag, check_reference_ids, check_whole,
                                  input_positions, prepare, prepare_layer)

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


def check_baselines(baselines: Any, x: Any) -> Any:
    """``baselines`` as a distribution ``(B, *x.shape[1:])`` of reference inputs (per input of
    a multi-input model, in ``x``'s structure, one ``B`` for all): ``None`` is one baseline of
    zeros, a number or one example's shape one baseline. Baselines sharded over
    ``Explicit`` mesh axes are refused (:func:`jaxsal._src.base.refuse_explicit_tree`)."""
    base.refuse_explicit_tree(baselines, "baselines")
    if not isinstance(x, jax.Array):  # several inputs
        out = jax.tree_util.tree_structure(x).unflatten(
            checked_per_input(check_baselines, baselines, x, "baselines"))
        sizes = {a.shape[0] for a in jax.tree_util.tree_leaves(out)}
        if len(sizes) > 1:
            raise ValueError(f"every input's baselines must hold the same number of reference "
                             f"examples (the draw picks one index for all inputs); got "
                             f"{sorted(sizes)}")
        return out
    one = tuple(x.shape[1:])
    if baselines is None:
        return jnp.zeros((1,) + one, x.dtype)
    check_whole(baselines, x, "baselines")
    try:
        b = jnp.asarray(baselines, dtype=x.dtype)
    except (TypeError, ValueError) as e:
        raise TypeError(f"expected baselines as a number or an array, got "
                        f"{type(baselines).__name__} ({e})") from None
    if b.ndim == len(one):  # one reference; per-channel values (1, 1, C) broadcast
        b = b[None]
    if b.ndim == 0:
        b = jnp.full((1,) + one, b, x.dtype)
    elif b.ndim != x.ndim or not _broadcasts(b.shape[1:], one) or b.shape[0] < 1:
        raise ValueError(f"expected baselines of shape (B, *{one}) (a distribution of B "
                         f"reference inputs, e.g. a sample of training images) or {one} (one "
                         "reference; either may have size-1 axes that broadcast, such as one "
                         f"value per channel), got shape {tuple(b.shape)}")
    else:
        b = jnp.broadcast_to(b, (b.shape[0],) + one)
    if not all_finite(b):
        raise ValueError("baselines contain NaN or infinite values; the maps would be NaN. "
                         "Pass finite baselines (e.g. np.nan_to_num(baselines))")
    return b


def _broadcasts(shape: tuple, to: tuple) -> bool:
    """Whether ``shape`` broadcasts to ``to`` (same rank) without changing ``to``."""
    return all(a in (1, b) for a, b in zip(shape, to))


@refuses_non_finite_maps
def gradient_shap(model: ModelLike, x: Inputs, targets: Targets = None, *,
                  key: jax.Array | int | None = None, baselines: Inputs | None = None,
                  n: int = 5, noise_std: float = 0.0, multiply_by_inputs: bool = True,
                  reduce: str | None = "sum", batch_samples: int | None = None,
                  head: str | None = None, chunk_size: int | None = None,
                  memory_budget: int | None = None, precision: str | None = None,
                  check_finite: bool = True, index_offset: int = 0,
                  layer: str | None = None) -> Maps:
    """GradientSHAP (Lundberg & Lee, 2017; Captum's ``GradientShap``), also known as expected
    gradients (Erion et al., 2021).

    Each of ``n`` samples draws, per input, a baseline ``b`` from ``baselines``, ``a ~ U(0,
    1)`` and (with ``noise_std > 0``) noise ``e ~ N(0, noise_std^2)``; with ``x~ = x + e``
    its attribution is ``(x~ - b) * dS/dx`` at ``b + a (x~ - b)``, and the map is the mean
    over the samples. In expectation (no noise) it is integrated gradients averaged over the
    baselines: the map sums to about ``S(x) - mean_b S(b)``, the more closely the more
    samples.

    Args:
      model, x, targets, head, chunk_size, memory_budget, precision, check_finite: as in
        :func:`jaxsal.saliency`. ``targets=None`` fixes each input's predicted class on ``x``.
      key: a ``jax.random`` key or an int seed (required: the same key gives the same map).
      baselines: the reference distribution, ``(B, H, W, C)`` (any ``(B, *x.shape[1:])``; a
        structure of such arrays for a multi-input model); one reference ``(H, W, C)``, a
        number, or ``None`` (zeros) for a single baseline; size-1 axes broadcast (``(1, 1, C)``
        per-channel values, ``(B, 1, 1, C)`` B of them). SHAP's expectation is over a
        sample of the data, e.g. a few dozen training images.
      n: samples per input (Captum's ``n_samples``, default 5). The estimate's noise falls
        as ``1/sqrt(n)``; tens to hundreds of samples give stable maps.
      noise_std: standard deviation of the Gaussian noise added to ``x`` (Captum's
        ``stdevs``, default 0).
      multiply_by_inputs: ``True`` (default): ``(x~ - b) * gradient`` (global attribution);
        ``False``: the mean gradient alone (Captum's ``multiply_by_inputs=False``).
      reduce: channel reduction (default signed ``"sum"``; ``None`` keeps channels).
      batch_samples: samples evaluated together in one batched pass (default: as many as fit
        in ``memory_budget``).
      index_offset: the position of ``x[0]`` in a larger batch: the draws of input ``i`` are
        keyed by ``index_offset + i``, so rows ``a:b`` of one call over all of ``x`` equal a
        call on ``x[a:b]`` with ``index_offset=a`` (:func:`jaxsal.explain_to_file` passes it).
      layer: attribute to that layer's output ``A`` (expected gradients at a layer): each
        sample's point is ``A(b) + a (A(x) - A(b))`` on the straight path *in the layer's
        space*, as :func:`jaxsal.integrated_gradients` with ``layer=`` (run as ``x`` with
        the layer's output replaced), and its attribution ``(A(x) - A(b)) * dS/dA`` there;
        in expectation it is ``integrated_gradients(layer=)`` averaged over the baselines
        and sums to ``S(x) - mean_b S(b)``. ``x`` and ``baselines`` may then be token ids
        (e.g. ``layer="embedding"``). ``noise_std`` must be 0.
    Returns:
      Raw maps ``(N, H, W)`` or ``(N, T, H, W)`` (channels kept when ``reduce=None``); with
      ``layer``, the layer's shape with its channel axis reduced.
    """
    check_reduce(reduce)
    key = base.check_key(key, "gradient_shap")
    index_offset = base.check_index_offset(index_offset)
    n = base.check_n(n, "samples")
    noise_std = reals.check_real(noise_std, "noise_std", low=0, example="0.1",
                                 kind="a finite number: the standard deviation of the noise "
                                 "added to x; 0 adds none")
    multiply_by_inputs = check_flag(multiply_by_inputs, "multiply_by_inputs")
    if layer is not None and noise_std > 0:
        raise ValueError("gradient_shap: noise_std adds noise to the input, which a layer's "
                         "path (layer=) does not start from; pass noise_std=0 with layer=, or "
                         "attribute to the input")
    p = prepare(model, x, targets, head=head, check_finite=check_finite,
                allow_int=layer is not None, multi_input=True)
    lt = None if layer is None else prepare_layer(p, layer, reduce)
    dist = check_baselines(p.per_input(baselines, "baselines"), p.x)
    if lt is not None:  # ids outside the vocabulary: NaN rows
        check_reference_ids(p.model, dist)
    nb, batch_samples, chunk = base.sampling_plan(p.model, p.x, p.n, p.spec.num, n,
                                                  batch_samples, "batch_samples", chunk_size,
                                                  memory_budget)
    m, spec, info = p.model, p.spec, p.info
    axes = p.map_channel_axes if lt is None else [lt.map_channel_axis]
    formats = p.formats
    positions = input_positions(p.model, p.x)  # input j's noise: keyed by j, dict or list

    def build():
        def run(params, x, ids, key, dist, index):
            sp, ids_ = resolve_predicted(m, params, x, spec, info, ids)
            grads = raw_gradients(m, sp, info)
            leaves, tree = jax.tree_util.tree_flatten(x)
            refs = tree.flatten_up_to(dist)
            n_ref = refs[0].shape[0]

            def draw(k, i):
                """Sample ``k`` of input ``i``: key -> fold_in(k) -> fold_in(i), split into
                the baseline index, the path point and (per model input j, fold_in(j)) the
                noise; independent of how the batch is split."""
                kb, ka, kn = jax.random.split(jax.random.fold_in(jax.random.fold_in(key, k), i),
                                              3)
                return jax.random.randint(kb, (), 0, n_ref), jax.random.uniform(ka), kn

            def noise(kn, a, cf, j):
                shape = a.shape[2:] + a.shape[1:2] if cf else a.shape[1:]
                j = j if positions is None else positions[j]
                eps = jax.random.normal(jax.random.fold_in(kn, j) if len(leaves) > 1 else kn,
                                        shape, a.dtype)
                return jnp.moveaxis(eps, -1, 0) if cf else eps  # drawn channels-last

            if lt is not None:
                A = run_model(m, params, x, (lt.name,))[1][lt.name]  # (N, *A)
                A_ref = run_model(m, params, dist, (lt.name,))[1][lt.name]  # (B, *A)

            def layer_group(ts, ks, valid):
                idx, alpha, _ = jax.vmap(lambda k: jax.vmap(lambda i: draw(k, i))(index))(ks)
                bs = len(ks)
                start, end = A_ref[idx], A[None]  # (B, N, *A)
                al = alpha.reshape(alpha.shape + (1,) * (A.ndim - 1)).astype(A.dtype)
                # input-major (base.stack_rows): a batch sharded over its inputs stays so
                z = base.stack_rows(start + al * (end - start))
                shifted = _Shifted(m, lt.name, z - base.repeat_rows(A, bs))
                _, _, pull = layer_pullback(shifted, params, base.repeat_rows(x, bs), lt.name,
                                            z.shape, sp, info, base.repeat_rows(ids_, bs))
                g = jax.vmap(pull, out_axes=1)(ts)
                g = base.unstack_rows(g, bs)  # (B, N, Tc, *A)
                if multiply_by_inputs:
                    g = g * (end - start)[:, :, None]
                v = valid.reshape((-1,) + (1,) * (g.ndim - 1))
                return jnp.sum(jnp.where(v, g, 0.0), axis=0)

            def chunk_fn(ts):
                if lt is not None:
                    total = base.sum_groups(lambda ks, valid: layer_group(ts, ks, valid), n,
                                            batch_samples)
                    return _reduce_inputs(total / n, reduce, axes)

                def group(ks, valid):
                    idx, alpha, kn = jax.vmap(lambda k: jax.vmap(lambda i: draw(k, i))(index))(ks)
                    bs = len(ks)
                    diffs, points = [], []
                    for j, (a, r, cf) in enumerate(zip(leaves, refs, formats)):
                        end = jnp.broadcast_to(a[None], (bs,) + a.shape)  # (B, N, ...)
                        if noise_std > 0:
                            eps = jax.vmap(jax.vmap(lambda kk, a=a, cf=cf, j=j:
                                                    noise(kk, a, cf, j)))(kn)
                            end = end + noise_std * eps
                        start = r[idx]  # (B, N, ...)
                        al = alpha.reshape(alpha.shape + (1,) * (a.ndim - 1)).astype(a.dtype)
                        diffs.append(end - start)
                        points.append(base.stack_rows(start + al * (end - start)))
                    g = grads(params, tree.unflatten(points), base.repeat_rows(ids_, bs), ts)
                    out = []
                    for gi, d in zip(tree.flatten_up_to(g), diffs):
                        gi = base.unstack_rows(gi, bs)  # (B, N, Tc, ...)
                        if multiply_by_inputs:
                            gi = gi * d[:, :, None]
                        v = valid.reshape((-1,) + (1,) * (gi.ndim - 1))
                        out.append(jnp.sum(jnp.where(v, gi, 0.0), axis=0))
                    return tuple(out)

                sums = base.sum_groups(group, n, batch_samples)
                return _reduce_inputs(tree.unflatten([s / n for s in sums]), reduce, axes)

            return first_only(base.map_chunks(chunk_fn, spec.num, chunk), spec.class_axis)

        return run

    ck = ("gradient_shap", p.key, spec, info, n, noise_std, multiply_by_inputs, reduce,
          batch_samples, chunk, nb, lt, positions)
    return base.compiled(ck, lambda: base.split_batch(build(), nb, (1, 2, 5)),
                         precision)(p.params, p.x, p.ids, key, dist,
                                    base.input_indices(index_offset, p.n))


#: explain_to_file passes ``baselines`` whole to every chunk (a distribution, not per input).
gradient_shap.shared_options = ("baselines",)
#: explain_to_file takes these one per input of a model of several inputs, by name or position.
gradient_shap.several_input_options = ("baselines",)
