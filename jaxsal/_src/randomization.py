"""The model parameter randomization test (Adebayo et al., 2018, "Sanity Checks for Saliency
Maps").

A map that explains the *model* must change when the model's learned parameters are
destroyed. The test randomizes the layers' parameters one layer at a time, from the output
towards the input (cascading: each step keeps the layers randomized before it; or each layer
alone), re-explains the same inputs with the randomized model and measures how similar the
maps stay to the original ones (Spearman rank correlation per map). A method whose maps stay
alike (an edge detector) fails the check.

Parameters are randomized by shuffling each array's values (``mode="permute"``: the values'
distribution is kept, so batch-norm variances stay positive and activations keep their
scale) or by Gaussian draws with each array's mean and standard deviation
(``mode="gaussian"``). The randomized models are the same model with other parameters
(``model.with_params``): a jaxsal method compiles once and reuses its program for all of them.
"""

from __future__ import annotations

import warnings
import zlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import base
from jaxsal._src.base import ModelLike
from jaxsal._src.validate import MAPS_INT_FIX, at_least_float32, check_flag, narrowed_maps

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

MODES = ("permute", "gaussian")


def _average_ranks(v: Array) -> Array:
    """Ranks ``0..P-1`` along the last axis, ties sharing their average rank."""
    p = v.shape[-1]
    order = jnp.argsort(v, axis=-1)
    s = jnp.take_along_axis(v, order, axis=-1)
    pos = jnp.broadcast_to(jnp.arange(p), v.shape)
    new = jnp.concatenate([jnp.ones(v.shape[:-1] + (1,), bool), s[..., 1:] != s[..., :-1]], -1)
    last = jnp.concatenate([s[..., 1:] != s[..., :-1], jnp.ones(v.shape[:-1] + (1,), bool)], -1)
    start = jax.lax.cummax(jnp.where(new, pos, 0), axis=v.ndim - 1)
    end = jax.lax.cummin(jnp.where(last, pos, p - 1), axis=v.ndim - 1, reverse=True)
    avg = (start + end).astype(jnp.float32) / 2
    inverse = jnp.argsort(order, axis=-1)
    return jnp.take_along_axis(avg, inverse, axis=-1)


def _ranks_correlation(ra: Array, rb: Array, finite: Array) -> Array:
    """Pearson's correlation of the ranks ``ra`` and ``rb`` (``(..., P)``, each row a
    permutation of ``0..P-1`` with ties sharing their average, whose mean is ``(P - 1) / 2``
    exactly), NaN where a row is constant or ``finite`` (``(...)``) is False; shape
    ``(...)``. The two sums of squares are about ``P**3 / 12`` each: beyond ``P`` of about
    6.1 million their product overflowed float32 (every correlation 0). The centred ranks
    are scaled by ``2**-k`` first, ``2**k >= P``, so the sums by ``4**-k`` (exact: the ratio
    is the plain formula's bit for bit, ``+-1`` for equal or reversed maps), to between
    ``1/32`` (a map of one value apart) and ``P / 12``, whose product fits float32. (Not the
    sums after summing: XLA reassociates ``(ssa * s) * (ssb * s)`` into ``(ssa * ssb) * s**2``.)"""
    p = ra.shape[-1]
    mid = (p - 1) / 2  # (exact in float32 for P <= 2**23: the ranks are too)
    s = 2.0 ** -(p - 1).bit_length()
    ra, rb = (ra - mid) * s, (rb - mid) * s
    den = jnp.sqrt((ra * ra).sum(-1) * (rb * rb).sum(-1))
    ok = (den > 0) & finite
    # (in [-1, 1], which the sums, reduced apart and rounded apart, left by 1e-7 at P = 1e5)
    r = jnp.clip((ra * rb).sum(-1) / jnp.where(ok, den, 1.0), -1.0, 1.0)
    return jnp.where(ok, r, jnp.nan)


def _order_key(v: Array) -> Array:
    """``v`` (any shape) as values of the same order and ties: ints as they are, floats as
    the signed integers of their bits (sign and magnitude; ``-0`` and ``0`` alike). XLA:CPU
    flushes float subnormals to 0 where it compares them, so a float32 map below ``2**-126``
    (``1e-39``) sorted as a constant one; integers order them exactly. (NaN keys are
    arbitrary: such maps' correlations are NaN.)"""
    if not jnp.issubdtype(v.dtype, jnp.floating):
        return v
    itype = jnp.dtype(f"int{8 * v.dtype.itemsize}")
    bits = jax.lax.bitcast_convert_type(v, itype)
    mag = bits & jnp.iinfo(itype).max
    return jnp.where(bits < 0, -mag, mag)


@jax.jit
def _spearman(a: Array, b: Array) -> Array:
    # NaN for a constant map and, as scipy's, for a map holding NaN or inf (whose ranks
    # would otherwise be made up: NaN != NaN ranks every NaN as a distinct value)
    finite = jnp.isfinite(a).all(-1) & jnp.isfinite(b).all(-1)
    return _ranks_correlation(_average_ranks(_order_key(a)), _average_ranks(_order_key(b)),
                              finite)


def rank_correlation(a: ArrayLike, b: ArrayLike, *, batch_dims: int = 1) -> Array:
    """Spearman rank correlation of maps ``a`` and ``b`` (same shape), one value per map: the
    first ``batch_dims`` axes index the maps (``(N, H, W)``: 1; ``(N, T, H, W)``: 2), the
    rest are ranked (ties share their average rank, as ``scipy.stats.spearmanr``). NaN for
    a constant map and for a map with NaN or infinite values (as scipy's). Each map is ranked
    in its own dtype: ints as ints, floats in float32 at least (float64 under
    ``jax_enable_x64``; floats ordered by their bits, subnormals included); without x64,
    NumPy float64 maps beyond float32's range, or below its normal range (a peak under
    ``2**-126``), are scaled by a power of two per map (exact) and int64 maps beyond int32's
    range refused."""
    a = _rankable(a, "rank_correlation: the maps a", batch_dims)
    b = _rankable(b, "rank_correlation: the maps b", batch_dims)
    if a.shape != b.shape:
        raise ValueError(f"rank_correlation: expected maps of the same shape, got {a.shape} "
                         f"and {b.shape}")
    batch_dims = base.check_count(batch_dims, "batch_dims", required=True)
    if a.ndim <= batch_dims:
        raise ValueError(f"rank_correlation: maps of shape {a.shape} have no axes to rank "
                         f"after batch_dims={batch_dims}")
    lead = a.shape[:batch_dims]
    return _spearman(a.reshape(lead + (-1,)), b.reshape(lead + (-1,)))


def _rankable(v: ArrayLike, what: str, batch_dims: Any, int_fix: str = MAPS_INT_FIX) -> Array:
    """Map ``v`` as an array ranked in its own dtype: ints as given (float32 would tie ints 1
    apart beyond ``2**24``), floats in float32 at least (float64 as given under
    ``jax_enable_x64``; half precision widened exactly), bools as float32. NumPy arrays (and
    lists) first as :func:`check_maps` takes them without ``jax_enable_x64``: float64 maps
    with finite values beyond float32's range, or a peak below its normal range, scaled per
    map by a power of two (exact; they would become inf, or subnormal and 0), int64
    (uint64) maps beyond int32's (uint32's) range refused (they would wrap around)."""
    lead = batch_dims if isinstance(batch_dims, int) else 1  # (checked later)
    a = jnp.asarray(narrowed_maps(v, lead, what, what, 100, "", int_fix, lift=True))
    if jnp.issubdtype(a.dtype, jnp.integer):
        return a
    return at_least_float32(a)


def _shuffled(key: Array, a: Array) -> Array:
    """``a``'s values in a uniformly random order drawn from ``key``: NumPy's Fisher-Yates
    shuffle (``Generator.shuffle``, seeded with 128 bits drawn from the key) of one host copy
    of the array, in place. ``jax.random.permutation`` sorts random keys in several rounds:
    on XLA:CPU VGG16's ``fc1`` kernel (392 MiB) took 317 s and peaked at 5.6 GB of RSS."""
    seed = np.asarray(jax.random.bits(key, (4,), jnp.uint32))
    flat = np.array(a).reshape(-1)  # a copy: the shuffle is in place
    np.random.default_rng(seed).shuffle(flat)
    return jnp.asarray(flat.reshape(a.shape))


@jax.jit
def _gaussian(key: Array, a: Array) -> Array:
    draw = a.mean() + a.std() * jax.random.normal(key, a.shape, a.dtype)
    # an array without negative values (a BatchNormalization variance, a scale) stays so:
    # a negative variance would make the model's output NaN
    return jnp.where(jnp.all(a >= 0), jnp.abs(draw), draw)


def _is_flax_variables(params: Any) -> bool:
    """Flax linen's variables, ``{"params": {module: ...}, "batch_stats": {module: ...}}``:
    collections of per-module dicts (the modules, not the collections, are the layers)."""
    return (isinstance(params, dict) and isinstance(params.get("params"), dict)
            and all(isinstance(c, dict) and all(isinstance(m, dict) for m in c.values())
                    for c in params.values()))


def _is_named_tuple(params: Any) -> bool:
    return isinstance(params, tuple) and hasattr(params, "_fields")


def _layer_params(params: Any, name: Any) -> Any:
    """The parameters of layer ``name``: ``params[name]`` (a NamedTuple's field, a list's or
    tuple's entry), or for Flax variables the module's entry in every collection that has
    one."""
    if _is_flax_variables(params):
        return {c: col[name] for c, col in params.items() if name in col}
    if _is_named_tuple(params):
        return getattr(params, name)
    if isinstance(params, dict) and name not in params and isinstance(name, str):
        head, _, rest = name.partition("/")  # a nested model's layer, "outer/inner"
        return _layer_params(params[head], rest)
    return params[name]


def _with_layer(params: Any, name: Any, value: Any) -> Any:
    """``params`` with layer ``name``'s parameters replaced by ``value`` (of the same type)."""
    if _is_flax_variables(params):
        return {c: ({**col, name: value[c]} if c in value else col) for c, col in params.items()}
    if _is_named_tuple(params):
        return params._replace(**{name: value})
    if isinstance(params, (list, tuple)):
        return type(params)(value if i == name else v for i, v in enumerate(params))
    if name not in params and isinstance(name, str):
        head, _, rest = name.partition("/")  # a nested model's layer, "outer/inner"
        return {**params, head: _with_layer(params[head], rest, value)}
    return {**params, name: value}


def _nested_path(params: dict, name: str) -> bool:
    """Whether ``name`` (``"outer/inner"``, a nested model's layer) has parameters."""
    for part in name.split("/"):
        if not isinstance(params, dict) or part not in params:
            return False
        params = params[part]
    return True


def _forward_jaxpr(model: Any, params: Any) -> Any:
    """The model's forward pass traced with abstract ``params`` on one zero input, where the
    model knows its whole input shape (``FunctionModel(input_shape=...)``); else None."""
    shape = getattr(model, "input_shape", None)
    if not isinstance(shape, tuple) or not all(isinstance(d, int) for d in shape):
        return None
    try:
        return jax.make_jaxpr(lambda p: model.apply(p, jnp.zeros((1,) + shape)))(params)
    except Exception:  # noqa: BLE001  (a function of several inputs, another dtype...)
        return None


def _use_order(explain: Callable, model: Any, params: Any,
               names: list) -> tuple[list, str | None]:
    """``names`` (layers of a dict of params) in the order ``explain(model)`` first reads
    their arrays: the forward pass's order, found by tracing it once (``jax.make_jaxpr``,
    into the programs it calls). Where ``explain`` cannot be traced (it converts maps with
    ``np.asarray``), the model's forward pass on a zero input of its ``input_shape``;
    where neither can be, ``names`` as they are. A dict's own order is not the layers'
    (``jax.tree_util.tree_map``, ``jax.jit`` and optimizers return dicts with sorted keys).
    Returns the names and, where neither could be traced, why ``explain`` could not (else
    None)."""
    flat, _ = jax.tree_util.tree_flatten(params)
    position = {id(a): i for i, a in enumerate(flat)}
    layer_of: dict[int, Any] = {}
    for n in names:
        for a in jax.tree_util.tree_leaves(_layer_params(params, n)):
            layer_of.setdefault(position.get(id(a), -1), n)
    try:
        closed = jax.make_jaxpr(lambda p: explain(model.with_params(p)))(params)
    except Exception as e:  # noqa: BLE001  (an explain that needs concrete values)
        closed = _forward_jaxpr(model, params)
        if closed is None:
            first_line = (str(e).strip().splitlines() or [""])[0]
            return names, f"{type(e).__name__}: {first_line[:200]}"
    jaxpr = closed.jaxpr
    first: dict[Any, int] = {}
    clock = [0]

    def walk(jx: Any, env: dict) -> None:
        for eqn in jx.eqns:
            clock[0] += 1
            read = [env[v] for v in eqn.invars if _hashable(v) and v in env]
            if not read:
                continue
            subs = [j for j in _sub_jaxprs(eqn) if len(j.invars) == len(eqn.invars)]
            for sub in subs:  # (a nested program: the order inside it)
                walk(sub, {w: env[v] for v, w in zip(eqn.invars, sub.invars)
                           if _hashable(v) and v in env})
            for i in read:
                first.setdefault(layer_of.get(i), clock[0])

    walk(jaxpr, {v: i for i, v in enumerate(jaxpr.invars)})
    first.pop(None, None)
    unread = [n for n in names if n not in first]  # (reading nothing: changes nothing)
    return sorted((n for n in names if n in first), key=first.__getitem__) + unread, None


def _hashable(v: Any) -> bool:
    return type(v).__name__ != "Literal"


def _sub_jaxprs(eqn: Any) -> list:
    """The jaxprs an equation calls (a nested ``jit``, a ``custom_vjp``'s function)."""
    out = []
    for v in eqn.params.values():
        for j in (v if isinstance(v, (list, tuple)) else (v,)):
            j = getattr(j, "jaxpr", j)
            if hasattr(j, "eqns") and hasattr(j, "invars"):
                out.append(j)
    return out


def _layer_keys(model: Any, params: Any, layers: Any, explain: Callable | None = None) -> list:
    """The randomized units, from the output to the input: ``layers`` as given, or the keys
    of a dict of parameters in the model's layer order (``layer_names``; a nested model's
    layers by their paths, ``"outer/inner"``, the nested model itself not), last first (for
    Flax linen variables and other dicts of a model without layer names, in the order
    ``explain`` reads them, :func:`_use_order`)."""
    if not isinstance(params, (dict, list, tuple)):
        raise TypeError(f"randomization_test needs the model's params as a dict keyed by layer "
                        f"(as load_keras gives, or Flax linen's variables), a NamedTuple of "
                        f"layers or a list/tuple of per-layer params (stax's), got "
                        f"{type(params).__name__}; pass a FunctionModel whose params are such "
                        "a structure")
    untraced = None  # why the order is the dict's own, where it is
    if _is_flax_variables(params):
        names = list(dict.fromkeys(n for col in params.values() for n in col))
        if layers is None and explain is not None:
            names, untraced = _use_order(explain, model, params, names)
    elif _is_named_tuple(params):
        names = list(params._fields)  # in the order the layers are listed
    elif isinstance(params, (list, tuple)):
        names = list(range(len(params)))  # the layers in call order, as stax lists them
    else:
        # a nested model's layers by their paths ("outer/inner": its params nest under
        # the outer name); the nested model itself may be named as one unit too
        names = [n for n in getattr(model, "layer_names", [])
                 if n in params or (isinstance(n, str) and _nested_path(params, n))]
        own = not names  # a plain dict of a model that names no layers: ordered by use
        names += [n for n in params if n not in names]
        if own and layers is None and explain is not None:
            names, untraced = _use_order(explain, model, params, names)
    if layers is None:
        used = getattr(model, "used_layers", None)
        if used is not None:  # not another output's branch (with_output): it changes nothing
            used = set(used)
            names = [n for n in names if n in used]
        with_arrays = [n for n in names
                       if jax.tree_util.tree_leaves(_layer_params(params, n))
                       and not any(isinstance(o, str) and isinstance(n, str)
                                   and o.startswith(n + "/") and o in names for o in names)]
        order = with_arrays[::-1]
        if untraced is not None and len(order) > 1:
            warnings.warn(
                f"randomization_test: explain(model) could not be traced with abstract "
                f"params ({untraced}), so the order of the forward pass is not known; the "
                f"layers are randomized in the params dict's order, last key first: {order}. "
                "If that is not from the output to the input, pass layers= in that order "
                "(output first), return JAX arrays from explain (jnp, not np.asarray) so "
                "that it can be traced, or give the FunctionModel its input_shape= so that "
                "its forward pass can be", UserWarning, stacklevel=3)
        return order
    layers = [layers] if isinstance(layers, (str, int)) else list(layers)
    unknown = [n for n in layers if n not in names]
    if unknown or not layers:
        raise ValueError(f"randomization_test: layers {unknown or layers} have no parameters; "
                         f"expected names among {names}")
    twice = list(dict.fromkeys(n for i, n in enumerate(layers) if n in layers[:i]))
    if twice:  # (the result is keyed by layer: one entry, and a cascade's layer re-drawn)
        raise ValueError(f"randomization_test: layers= names {twice} more than once, "
                         f"got {layers}; name each layer once, in the order to randomize")
    return layers


def _layer_key(key: Array, name: Any) -> Array:
    """The key of layer ``name`` (a str, or an int index): ``key`` folded with the CRC-32 of
    the name's ``repr`` (``"'d1'"``, ``"0"``), so that a layer draws the same values in any
    ``layers=`` and in either mode, not ones set by its position in the order randomized."""
    return jax.random.fold_in(key, zlib.crc32(repr(name).encode()))


def randomization_test(explain: Callable[[Any], ArrayLike], model: ModelLike, *,
                       key: jax.Array | int | None = None, layers: Any = None,
                       cascade: bool = True, mode: str = "permute",
                       absolute: bool = False, batch_dims: int = 1) -> dict:
    """The model parameter randomization test (Adebayo et al., 2018): how similar a
    method's maps stay as the model's layers are randomized, from the output down.

    Args:
      explain: ``explain(model) -> maps`` for the inputs being checked, e.g.
        ``lambda m: jaxsal.saliency(m, x, targets=t)`` (fix the targets as ids: the
        randomized model predicts other classes).
      model: a :class:`model_import.KerasModel` (the layers of a nested model are units
        of their own, named by their paths, ``"base/block5_conv3"``; the nested model's
        name, ``"base"``, randomizes all of them at once), or a ``FunctionModel`` whose
        params are a dict keyed by layer, Flax linen's variables ``{"params": {module:
        ...}, "batch_stats": ...}``, randomized module by module across the collections, a
        NamedTuple of layers (its fields, last first) or a list/tuple of per-layer params as
        stax makes them (its entries by index, last first). A dict's layers (Flax's modules)
        are ordered by the forward pass: ``explain`` is traced once more, with abstract
        params (``jax.make_jaxpr``), to see in which order it reads them (dicts returned by
        ``tree_map``, ``jax.jit`` or an optimizer have sorted keys). Where it cannot be
        traced (it returns ``np.asarray(...)``), the model's forward pass is, on a zero
        input, if the model knows its whole ``input_shape``; else the dict's order is used
        (last key first) with a ``UserWarning`` saying so: pass ``layers=`` from the output
        to the input, or return JAX arrays from ``explain``.
      (Several inputs: ``explain`` returns one input's maps, ``jaxsal.saliency(m, x, t)[0]``.)
      key: a ``jax.random`` key or an int seed (required). Each layer draws from ``key``
        folded with a hash of its name (CRC-32 of its ``repr``), so a layer gets the same
        values in any ``layers=`` and in both modes.
      layers: the layers to randomize, in order (default: every layer with parameters
        that the output depends on, from the output to the input; of a model with several
        outputs viewed through ``with_output``, not the other outputs' branches, which
        cannot change the maps): names, or indices for a list/tuple of params, each once.
      cascade: ``True`` (default): step ``k`` randomizes layers ``0..k`` (Adebayo et al.'s
        cascading randomization); ``False``: each layer alone (independent randomization).
      mode: ``"permute"`` (each array's values shuffled) or ``"gaussian"`` (drawn with each
        array's mean and standard deviation; an array without negative values, such as a
        BatchNormalization variance, gets the draws' absolute values); integer arrays
        (lookup tables) stay, and so does a constant array (a zero bias) in both modes.
      absolute: compare the maps' absolute values (the paper reports both).
      batch_dims: leading axes of the maps kept apart (2 for ``(N, T, H, W)``).
    Returns:
      ``{layer: rank correlations}``, in the order randomized; each value ``(N,)`` (the
      maps' first ``batch_dims`` axes): the Spearman correlation between the map of the
      randomized model and the original map. Near 0 at the first layers: the maps depend
      on the parameters, as they should. NaN where either map is constant or not finite.

    Example::

        corr = jaxsal.randomization_test(lambda m: jaxsal.saliency(m, x, t), model, key=0)
        {name: float(c.mean()) for name, c in corr.items()}
    """
    key = base.check_key(key, "randomization_test")
    if mode not in MODES:
        raise ValueError(f"randomization_test: unknown mode {mode!r}; expected one of {MODES}")
    if not callable(explain):
        raise TypeError(f"randomization_test: expected explain as a function model -> maps, "
                        f"got {type(explain).__name__}")
    if base.is_function_pair(model):
        model = base.as_model(model)  # (fn, params), as every method takes it
    if not hasattr(model, "with_params"):
        raise TypeError(f"randomization_test: expected a model with with_params (load_keras, "
                        f"jaxsal.FunctionModel or (fn, params)), got {type(model).__name__}")
    cascade, absolute = check_flag(cascade, "cascade"), check_flag(absolute, "absolute")
    params = model.params
    order = _layer_keys(model, params, layers, explain)
    draw = _shuffled if mode == "permute" else _gaussian

    def prepare(m):
        maps = explain(m)
        if isinstance(maps, (list, tuple, dict)):  # several inputs' maps: not one array
            raise ValueError(
                f"randomization_test: explain returned {type(maps).__name__} of "
                f"{len(maps)} maps (a model of several inputs), where it compares one array "
                "of maps (N, ...) per example; pick one input's maps, e.g. explain=lambda m: "
                "jaxsal.saliency(m, x, 3)[0], and test each input so")
        # NumPy maps checked as rank_correlation checks them (float64 beyond float32's
        # range, int64 beyond int32's), where jnp.asarray made them inf or wrapped them
        a = _rankable(maps, "randomization_test: the maps explain returned", batch_dims,
                      "return them as floats from explain (.astype(np.float64): ranked at "
                      "float32's resolution)")
        return abs(a) if absolute else a

    original = prepare(model)
    current = params
    out = {}
    for name in order:
        base_params = current if cascade else params
        leaves, tree = jax.tree_util.tree_flatten(_layer_params(params, name))
        keys = jax.random.split(_layer_key(key, name), max(1, len(leaves)))
        randomized = tree.unflatten([  # learned values only: integer tables stay
            draw(k, jnp.asarray(a)) if jnp.issubdtype(jnp.result_type(a), jnp.floating)
            else a for k, a in zip(keys, leaves)])
        base_params = _with_layer(base_params, name, randomized)
        if cascade:
            current = base_params
        maps = prepare(model.with_params(base_params))
        if maps.shape != original.shape:
            raise ValueError(f"randomization_test: explain returned maps of shape {maps.shape} "
                             f"for the randomized model but {original.shape} for the model; "
                             "fix the targets as class ids")
        out[name] = rank_correlation(original, maps, batch_dims=batch_dims)
    return out
