"""Objectives for activation maximization: small pytrees that score one image's activations.

An :class:`Objective` is a weighted sum of terms. Each term reads either the model output
(``layer=None``) or one named layer's activation and reduces it to a scalar:

- :func:`output_objective` -- one output unit (a class logit through the chosen head),
  as in Erhan et al. 2009 and Simonyan et al. 2014 ("Deep Inside Convolutional Networks");
- :func:`channel_objective` -- the mean activation of one channel (a filter's feature map);
- :func:`neuron_objective` -- one activation at one spatial position;
- :func:`direction_objective` -- the mean projection of a layer's channel vectors onto a
  direction (Olah et al. 2017, "Feature Visualization", Distill), optionally times a power of
  their cosine similarity (``cossim_pow``, Olah et al. 2018, "The Building Blocks of
  Interpretability");
- :func:`direction_neuron_objective` -- the same at one spatial position;
- :func:`interpolate_objectives` / :func:`channel_interpolate` -- ``n`` objectives going from
  one objective to another, one per image (Lucid's ``channel_interpolate``).

Objectives are pytrees whose leaves are arrays (weights, unit indices, directions) and whose
structure (kinds, layer names) is static, so a list of objectives of the same structure stacks
into one batched objective that ``jax.vmap`` maps over: every unit gets its own image. They
combine with ``+``, ``-`` and scalar ``*``::

    obj = channel_objective("conv2d_2", 5) - 0.5 * output_objective(3)

A layer term with ``pre_activation=True`` reads the layer's values before its fused
activation (a ``Conv2D(..., activation="relu")`` before its ReLU; Lucid's ``..._pre_relu``
layers): a channel whose ReLU output is zero on the starting image has no gradient there, its
pre-activation has one.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import base, ints, reals
from jaxsal._src.transforms import check_finite_array, check_real

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

KINDS = ("output", "channel", "neuron", "direction", "direction_neuron")


def _concrete(f: Callable) -> Callable:
    """``f`` run under ``jax.ensure_compile_time_eval()``: the arrays it builds from concrete
    values (Python numbers, NumPy and JAX arrays) are concrete also inside a caller's
    ``jax.jit`` / ``jax.shard_map`` (there, any ``jnp`` operation gives a tracer otherwise,
    even of constants, and :func:`validate_objective` could not read unit indices); a traced
    argument (a traced ``direction``, a traced factor ``c * objective``) still gives a tracer."""
    @functools.wraps(f)
    def eager(*args: Any, **kwargs: Any) -> Any:
        with jax.ensure_compile_time_eval():
            return f(*args, **kwargs)
    return eager


@jax.tree_util.register_pytree_node_class
class Objective:
    """A weighted sum of activation terms; maximized by :func:`jaxsal.maximize`.

    Attributes:
      kinds: one of :data:`KINDS` per term (static).
      layers: the layer each term reads, ``None`` for the model output (static).
      weights: one scalar weight per term (arrays; a leading unit axis when stacked).
      indices: per term, an int unit index (``output``, ``channel``), an int array
        ``(channel, row, col)`` (``neuron``; ``-1`` means the centre), a float direction
        ``(K,)`` (``direction``) or a float array ``(row, col, *direction)``
        (``direction_neuron``; ``-1`` means the centre).
      pre: per term, whether it reads the layer's pre-activation values (static; ``False``
        for every term when not given).
      cossim_pow: per term, the power of the cosine similarity a direction term is
        multiplied by (static; ``0.0``, none, for every term when not given).
    """

    def __init__(self, kinds: Sequence[str], layers: Sequence[str | None],
                 weights: Sequence[Any], indices: Sequence[Any],
                 pre: Sequence[bool] | None = None, cossim_pow: Sequence[float] | None = None):
        self.kinds = tuple(kinds)
        self.layers = tuple(layers)
        self.weights = tuple(weights)
        self.indices = tuple(indices)
        self.pre = (False,) * len(self.kinds) if pre is None else tuple(bool(p) for p in pre)
        self.cossim_pow = ((0.0,) * len(self.kinds) if cossim_pow is None
                           else tuple(float(p) for p in cossim_pow))

    # -- pytree
    def tree_flatten(self):
        return (self.weights, self.indices), (self.kinds, self.layers, self.pre, self.cossim_pow)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(aux[0], aux[1], children[0], children[1], aux[2], aux[3])

    def _replace(self, **changes: Any) -> "Objective":
        """This objective with some fields replaced (``layers=``, ``indices=``, ...)."""
        fields = dict(kinds=self.kinds, layers=self.layers, weights=self.weights,
                      indices=self.indices, pre=self.pre, cossim_pow=self.cossim_pow)
        fields.update(changes)
        return Objective(**fields)

    # -- algebra
    def __add__(self, other: "Objective") -> "Objective":
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective(self.kinds + other.kinds, self.layers + other.layers,
                         self.weights + other.weights, self.indices + other.indices,
                         self.pre + other.pre, self.cossim_pow + other.cossim_pow)

    def __radd__(self, other: Any) -> "Objective":
        # sum(objectives) starts from 0: 0 + o is o (any other number is no objective)
        # (np.int64(0), 0.0 and a 0-d zero array too: sum(..., start) and NumPy reductions)
        if not isinstance(other, Objective) and reals.as_float(other) == 0.0:
            return self
        return NotImplemented

    @_concrete
    def __mul__(self, c: float) -> "Objective":
        if isinstance(c, Objective):
            return NotImplemented
        if not isinstance(c, jax.core.Tracer):  # a weight may be traced (data of the pytree)
            c = reals.check_real(c, "c", where="Objective * c",
                                 kind="a finite number: the factor of every weight")
        return self._replace(weights=tuple(jnp.asarray(c, jnp.float32) * w
                                           for w in self.weights))

    __rmul__ = __mul__

    def __neg__(self) -> "Objective":
        return self * -1.0

    def __sub__(self, other: "Objective") -> "Objective":
        if not isinstance(other, Objective):
            return NotImplemented
        return self + (-other)

    @property
    def needed_layers(self) -> tuple[str, ...]:
        """The named layers whose outputs this objective reads (model output and
        pre-activation terms excluded), in order."""
        return tuple(dict.fromkeys(l for l, p in zip(self.layers, self.pre)
                                   if l is not None and not p))

    @property
    def needed_pre_layers(self) -> tuple[str, ...]:
        """The layers whose pre-activation values this objective reads, in order."""
        return tuple(dict.fromkeys(l for l, p in zip(self.layers, self.pre) if p))

    def __call__(self, outputs: Array, acts: Mapping[str, Array],
                 pre_acts: Mapping[str, Array] | None = None) -> Array:
        """The objective for ONE example.

        Args:
          outputs: the model output without batch axis, ``(units,)`` (or ``(..., units)``).
          acts: ``{layer: activation}`` without batch axis, ``(h, w, K)`` or ``(K,)``.
          pre_acts: ``{layer: pre-activation}`` likewise, for the terms that read them
            (:attr:`needed_pre_layers`; ``model.apply(..., capture_pre=...)``).
        Returns:
          a scalar.
        """
        total = jnp.zeros((), jnp.float32)
        for kind, layer, w, idx, pre, cp in zip(self.kinds, self.layers, self.weights,
                                                self.indices, self.pre, self.cossim_pow):
            a = outputs if layer is None else (pre_acts or {})[layer] if pre else acts[layer]
            total = total + w * _term(kind, a, idx, cp)
        return total

    def __repr__(self) -> str:
        parts = [f"{k}({l or 'output'}{' pre-activation' if p else ''}"
                 f"{f', cossim_pow={c:g}' if c else ''})"
                 for k, l, p, c in zip(self.kinds, self.layers, self.pre, self.cossim_pow)]
        return f"Objective({' + '.join(parts)})"


#: Lucid's ``_dot_cossim``: the epsilon added to both norms, and the floor of the cosine
#: similarity (a vector pointing away from the direction is scaled as one at 0.1)
_COSSIM_EPS = 1e-4
_COSSIM_FLOOR = 0.1


def _safe_norm(x: Array) -> Array:
    """The Euclidean norm of ``x`` ``(..., K)`` over its last axis, ``(...)``, with gradient 0
    at a zero vector (``jnp.sqrt``'s derivative is infinite at 0; times the zero vector, NaN).
    The inner ``where`` keeps the unused branch's ``sqrt`` away from 0 (the double-where)."""
    sq = jnp.sum(x * x, axis=-1)
    nonzero = sq > 0
    return jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, sq, 1.0)), 0.0)


def _dot_cossim(a: Array, d: Array, cossim_pow: float) -> Array:
    """The mean over positions of ``<a, d> * max(0.1, cos(a, d)) ** cossim_pow`` for ``a``
    ``(..., K)`` and ``d`` ``(K,)`` (Lucid's ``_dot_cossim``; ``cossim_pow=0``: the mean dot
    product). At an all-zero vector ``a`` (``<a, d> = 0``) the gradient is
    ``0.1 ** cossim_pow * d`` (over the positions), the formula's central difference, not NaN."""
    dot = jnp.tensordot(a, d, axes=[[-1], [0]])
    if cossim_pow == 0:
        return jnp.mean(dot)
    a_norm = _safe_norm(a)
    d_norm = _safe_norm(d)
    cos = dot / (_COSSIM_EPS + a_norm) / (_COSSIM_EPS + d_norm)
    return jnp.mean(dot * jnp.maximum(_COSSIM_FLOOR, cos) ** cossim_pow)


def _at(a: Array, rows_cols: Sequence[Array]) -> Array:
    """``a`` ``(h, [w, ...,] K)`` at (row, col), ``-1`` meaning the centre (the row alone for
    one spatial axis, ``(L, K)``); ``a`` itself for a map without spatial axes (``(K,)``)."""
    if a.ndim == 1:
        return a
    pos = [jnp.where(p < 0, n // 2, p).astype(jnp.int32)
           for p, n in zip(rows_cols, a.shape[:-1][:2])]
    return a[tuple(pos) + (Ellipsis,)]


def _term(kind: str, a: Array, idx: Array, cossim_pow: float = 0.0) -> Array:
    a = a.astype(jnp.float32)
    if kind == "output":
        flat = a.reshape(-1, a.shape[-1]) if a.ndim > 1 else a[None]
        return jnp.mean(flat[:, idx])
    if kind == "channel":
        return jnp.mean(a[..., idx])
    if kind == "neuron":
        if a.ndim == 1:
            return a[idx[0]]
        spatial = a.shape[:-1]
        pos = []
        for ax, n in enumerate(spatial[:2]):
            p = idx[1 + ax] if idx.shape[0] > 1 + ax else jnp.asarray(-1)
            pos.append(jnp.where(p < 0, n // 2, p))
        v = a[tuple(pos) + (Ellipsis,)]
        return jnp.mean(v[..., idx[0]])
    if kind == "direction":
        return _dot_cossim(a, idx.astype(jnp.float32), cossim_pow)
    if kind == "direction_neuron":
        idx = idx.astype(jnp.float32)
        return _dot_cossim(_at(a, (idx[0], idx[1])), idx[2:], cossim_pow)
    raise ValueError(f"unknown objective kind {kind!r}; expected one of {KINDS}")


#: where a unit's index holds its position (row, col): (channel, row, col) for a neuron,
#: (row, col, *direction) for a direction_neuron
_POSITION_AT = {"neuron": 1, "direction_neuron": 0}


def has_positions(obj: Objective) -> bool:
    """Whether ``obj`` has a term that reads one position of a layer's maps (a neuron)."""
    return any(k in _POSITION_AT for k in obj.kinds)


def positions_for(obj: Objective, shapes: Mapping[str, tuple], final: Mapping[str, tuple],
                  content: Mapping[str, tuple] | None = None,
                  zoom: Sequence[float] = (1.0, 1.0)) -> Objective:
    """``obj`` with its neuron positions, given for maps of the ``final`` shapes
    (``{layer: (h, w, K)}``, or ``(L, K)``: the row alone), moved to the same place of the
    image's content in maps of ``shapes``; centre positions (``-1``) are kept.

    ``content``: the shapes of the maps of the image itself (the untransformed image of a
    multi-scale round), when ``shapes`` are those of a transformed one (padded: larger maps),
    else ``shapes``. A position is first moved to the same relative place of the ``content``
    maps (the centre of the cell it falls in), then into ``shapes``, where the content is
    centred and scaled by ``zoom`` (per spatial axis): ``floor((p + 0.5) * zoom + (n - m *
    zoom) / 2)`` for maps of ``n`` cells and content maps of ``m``. With ``zoom=1`` (a model
    of any size: a pad grows the maps) that is ``p`` shifted by half the growth, exact for a
    symmetric pad of a multiple of the layer's stride; a fixed-size model sees the padded
    image resized to its input, its content scaled by ``zoom = h / h_padded`` about the
    centre of maps of the same size (to the nearest cell). Positions are clipped to the
    maps."""
    content = shapes if content is None else content
    indices = []
    for kind, layer, idx in zip(obj.kinds, obj.layers, obj.indices):
        now, mid, end = shapes.get(layer), content.get(layer), final.get(layer)
        ns = (min(len(now), len(mid), len(end)) - 1
              if now is not None and mid is not None and end is not None else 0)
        ns = min(ns, 2)  # the spatial axes a position reads: rows (and columns)
        z = tuple(float(f) for f in zoom[:ns])
        moves = ns > 0 and (tuple(mid[:ns]) != tuple(end[:ns])
                            or tuple(now[:ns]) != tuple(mid[:ns]) or any(f != 1.0 for f in z))
        if kind in _POSITION_AT and moves:
            at = _POSITION_AT[kind]
            pos = idx[..., at:at + ns]
            n_now = jnp.asarray(now[:ns], jnp.float32)
            n_mid = jnp.asarray(mid[:ns], jnp.float32)
            n_end = jnp.asarray(end[:ns], jnp.float32)
            zf = jnp.asarray(z, jnp.float32)
            # the cell of the content maps the position falls in, then its place in these
            cell = jnp.floor((pos.astype(jnp.float32) + 0.5) * n_mid / n_end)
            cell = jnp.clip(cell, 0, n_mid - 1)
            moved = jnp.floor((cell + 0.5) * zf + (n_now - n_mid * zf) / 2)
            moved = jnp.clip(moved, 0, n_now - 1).astype(idx.dtype)
            idx = jnp.concatenate([idx[..., :at], jnp.where(pos < 0, pos, moved),
                                   idx[..., at + ns:]], axis=-1)
        indices.append(idx)
    return obj._replace(indices=tuple(indices))


@_concrete
def _index(i: Any, what: str) -> Array:
    if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
        if not (isinstance(i, (np.ndarray, jax.Array)) and np.ndim(i) == 0
                and np.issubdtype(np.asarray(i).dtype, np.integer)):
            raise TypeError(f"{what}: expected a non-negative int unit index, got {i!r}")
    if int(i) < 0:
        raise ValueError(f"{what}: expected a non-negative unit index, got {int(i)}")
    return jnp.asarray(int(i), jnp.int32)


def _position(position: Any, what: str) -> tuple[int, int]:
    """A neuron's ``position=(row, col)`` as two non-negative ints; ``None``, the centre of
    the maps, as ``(-1, -1)``."""
    if position is None:
        return (-1, -1)
    expected = f"{what}: expected position=(row, col) as two ints >= 0 or None"
    if not (isinstance(position, (tuple, list)) or (isinstance(position, (np.ndarray, jax.Array))
                                                    and position.ndim == 1)) or len(position) != 2:
        raise ValueError(f"{expected}, got {position!r}")
    out = []
    for axis, p in zip(("row", "col"), position):
        if (isinstance(p, (bool, np.bool_)) or np.ndim(p) != 0
                or not np.issubdtype(np.asarray(p).dtype, np.integer) or int(p) < 0):
            raise ValueError(f"{expected}, got {axis} {p!r} in position={position!r}")
        out.append(int(p))
    return tuple(out)


def output_objective(unit: int, *, weight: float = 1.0) -> Objective:
    """Maximize output unit ``unit`` (a class) of the model's head.

    With the ``logits`` head (the default of :func:`jaxsal.maximize`) this is the class logit:
    maximizing a softmax probability mostly pushes the other classes down. On a one-unit
    (sigmoid) output ``unit`` is a class id as in the attribution methods: ``1`` the unit,
    ``0`` its complement (``-z`` on the logits head, ``1 - p`` on a probability head).
    ``weight``: the term's weight in a sum of objectives (default 1).
    """
    return Objective(("output",), (None,), (_weight(weight, "output_objective"),),
                     (_index(unit, "output_objective"),))


def channel_objective(layer: str, channel: int, *, weight: float = 1.0,
                      pre_activation: bool = False) -> Objective:
    """Maximize the mean over positions of channel ``channel`` of ``layer`` (a filter).

    For a layer without spatial axes (Dense) this is the unit's activation.
    ``pre_activation=True`` reads the values before the layer's fused activation (a
    ``Conv2D(..., activation="relu")`` before its ReLU): a channel whose ReLU output is zero
    everywhere on the starting image still has a gradient. For a layer without a fused
    activation these are its outputs; a separate ``ReLU``/``Activation`` layer is refused
    (name the layer before it). ``weight``: the term's weight in a sum of objectives (default 1).::

        obj = channel_objective("conv2d_1", 7, pre_activation=True)
    """
    _check_layer(layer, "channel_objective")
    return Objective(("channel",), (layer,), (_weight(weight, "channel_objective"),),
                     (_index(channel, "channel_objective"),),
                     (_pre(pre_activation, "channel_objective"),))


@_concrete
def neuron_objective(layer: str, channel: int, position: tuple[int, int] | None = None, *,
                     weight: float = 1.0, pre_activation: bool = False) -> Objective:
    """Maximize one activation: channel ``channel`` of ``layer`` at ``position`` (row, col).

    ``position``: two ints >= 0, ``(row, col)`` of maps ``(h, w, K)``; ``(row, 0)`` of a
    layer of one spatial axis (a Conv1D's ``(L, K)``: rows only); ``None`` takes the centre
    of the feature map (``(h // 2, w // 2)``, row ``L // 2``), and is the only position of a
    layer without spatial axes (Dense). A position outside the maps is refused by
    :func:`jaxsal.maximize` with the valid range. It is one of the maps of the returned
    (untransformed, full-size) image: smaller multi-scale rounds and size-changing transforms
    (``pad``, ``standard_transforms``) read it at the same place of the image's content.
    ``pre_activation=True``: the value before the layer's fused activation (see
    :func:`channel_objective`). ``weight``: the term's weight in a sum of objectives (default 1).
    """
    _check_layer(layer, "neuron_objective")
    c = int(_index(channel, "neuron_objective"))
    pos = _position(position, "neuron_objective")
    return Objective(("neuron",), (layer,), (_weight(weight, "neuron_objective"),),
                     (jnp.asarray((c, *pos), jnp.int32),),
                     (_pre(pre_activation, "neuron_objective"),))


def direction_objective(layer: str, direction: ArrayLike, *, weight: float = 1.0,
                        pre_activation: bool = False, cossim_pow: float = 0.0) -> Objective:
    """Maximize the mean over positions of ``<activation, direction>`` in ``layer``'s
    channel space (Olah et al. 2017). ``direction`` has shape ``(K,)``, K = channels.

    ``cossim_pow=p > 0`` maximizes ``<a, d> * max(0.1, cos(a, d)) ** p`` at every position
    instead (``cos(a, d) = <a, d> / (|a| + 1e-4) / (|d| + 1e-4)``; Lucid's ``direction(...,
    cossim_pow=p)`` and ``_dot_cossim``, the "cossim_pow" of the Building Blocks and Activation
    Atlas notebooks, which use ``p`` of 1 to 4): the image is rewarded for activations that
    point along ``d``, not merely for large ones with a component along it.
    ``pre_activation=True``: of the values before the layer's fused activation (see
    :func:`channel_objective`). ``weight``: the term's weight in a sum of objectives
    (default 1). ``cossim_pow`` is part of the objective's structure (objectives maximized
    in one call share it).::

        obj = direction_objective("mixed4d", v, cossim_pow=2.0)
    """
    _check_layer(layer, "direction_objective")
    d = _direction(direction, "direction_objective")
    return Objective(("direction",), (layer,), (_weight(weight, "direction_objective"),), (d,),
                     (_pre(pre_activation, "direction_objective"),),
                     (_cossim_pow(cossim_pow, "direction_objective"),))


@_concrete
def direction_neuron_objective(layer: str, direction: ArrayLike,
                               position: tuple[int, int] | None = None, *,
                               weight: float = 1.0, pre_activation: bool = False,
                               cossim_pow: float = 0.0) -> Objective:
    """Maximize ``<activation, direction>`` at one position (row, col) of ``layer``'s maps
    (Lucid's ``direction_neuron``): :func:`direction_objective` at one position, as
    :func:`neuron_objective` is :func:`channel_objective` at one position.

    ``direction``: ``(K,)``, K = channels. ``position``: as in :func:`neuron_objective`,
    ``(row, col)``, ``(row, 0)`` for maps ``(L, K)`` of one spatial axis; ``None``: the
    centre of the maps (``(h // 2, w // 2)``, row ``L // 2``); a layer without spatial axes
    (Dense) needs ``position=None``.
    ``cossim_pow``, ``pre_activation``, ``weight``: as in :func:`direction_objective`.
    Directions and positions may differ between the objectives of one call.::

        objs = [direction_neuron_objective("conv2d_2", v, (3, 4)) for v in directions]
    """
    _check_layer(layer, "direction_neuron_objective")
    d = _direction(direction, "direction_neuron_objective")
    pos = _position(position, "direction_neuron_objective")
    idx = jnp.concatenate([jnp.asarray(pos, jnp.float32), d])
    return Objective(("direction_neuron",), (layer,),
                     (_weight(weight, "direction_neuron_objective"),), (idx,),
                     (_pre(pre_activation, "direction_neuron_objective"),),
                     (_cossim_pow(cossim_pow, "direction_neuron_objective"),))


def interpolate_objectives(start: Objective, end: Objective, n: int) -> list[Objective]:
    """``n`` objectives going from ``start`` to ``end``: the i-th is ``(1 - t_i) * start +
    t_i * end`` with ``t_i = i / (n - 1)`` (Lucid's ``channel_interpolate``, there over the
    images of a batch). Give them as targets: every one gets its own image, ``images[i]``,
    and the sequence shows one feature turning into the other. ``start`` and ``end`` are
    single (unstacked) objectives; ``n >= 2``.

    Lucid optimizes the batch with a shared parameterization and an ``alignment`` penalty
    that pulls neighbouring images together; here the images are independent (every unit
    is, in :func:`jaxsal.maximize`), from the same starting noise and transforms (the same
    ``key``), which keeps them alike where the objectives do not pull them apart.::

        objs = interpolate_objectives(channel_objective("conv2d_2", 3),
                                      channel_objective("conv2d_2", 7), 6)
        res = jaxsal.maximize(model, objs)  # res.images: (6, H, W, C)
    """
    for o, what in ((start, "start"), (end, "end")):
        if not isinstance(o, Objective):
            raise TypeError(f"interpolate_objectives: expected {what} as an Objective "
                            f"(jaxsal.channel_objective(...), ...), got {type(o).__name__}")
        if o.weights and np.ndim(o.weights[0]) != 0:
            raise ValueError(f"interpolate_objectives: expected a single objective as {what}, "
                             f"got a stacked one ({o!r}, weights of shape "
                             f"{np.shape(o.weights[0])}); pass one of the objectives you "
                             "stacked")
    n = _count(n, "interpolate_objectives", low=2)
    return [(1.0 - i / (n - 1)) * start + (i / (n - 1)) * end for i in range(n)]


def channel_interpolate(layer1: str, channel1: int, layer2: str, channel2: int, n: int, *,
                        pre_activation: bool = False) -> list[Objective]:
    """Lucid's ``channel_interpolate(layer1, channel1, layer2, channel2)`` over ``n`` images:
    :func:`interpolate_objectives` from ``channel_objective(layer1, channel1)`` to
    ``channel_objective(layer2, channel2)``; image i maximizes ``(1 - t_i) * mean(channel1)
    + t_i * mean(channel2)``, ``t_i = i / (n - 1)``. ``pre_activation=True``: both channels'
    values before their layers' fused activation (see :func:`channel_objective`).::

        res = jaxsal.maximize(model, channel_interpolate("conv2d_1", 3, "conv2d_2", 5, 6))
    """
    return interpolate_objectives(
        channel_objective(layer1, channel1, pre_activation=pre_activation),
        channel_objective(layer2, channel2, pre_activation=pre_activation), n)


@_concrete
def _direction(direction: Any, what: str) -> Array:
    base.refuse_explicit_tree(direction, "direction")
    if not isinstance(direction, jax.core.Tracer):
        check_finite_array(direction, what, "direction")
    d = jnp.asarray(direction, jnp.float32)
    if d.ndim != 1:
        raise ValueError(f"{what}: expected a direction of shape (channels,), got "
                         f"shape {tuple(d.shape)}")
    return d


def _cossim_pow(p: Any, what: str) -> float:
    return float(check_real(p, what, "cossim_pow", low=0))


def _count(n: Any, what: str, *, low: int) -> int:
    return ints.check_int(n, "n", low=low, where=what, kind="the number of objectives")


class Diversity(NamedTuple):
    """A diversity penalty over the images of one unit (Lucid's ``objectives.diversity``);
    made by :func:`diversity`, given to :func:`jaxsal.maximize` as ``diversity=``.

    Attributes:
      layer: the layer whose activations are compared.
      weight: the penalty's weight (a float ``>= 0``).
      pre_activation: compare the layer's values before its fused activation.
    """

    layer: str
    weight: float = 1.0
    pre_activation: bool = False


def diversity(layer: str, *, weight: float = 1.0, pre_activation: bool = False) -> Diversity:
    """Penalize similar styles among the ``images_per_unit`` images of each unit.

    Olah, Mordvintsev & Schubert 2017 ("Feature Visualization", Distill, section
    "Diversity"), as Lucid's ``objectives.diversity``: for the K images of one unit, the Gram
    matrix ``G_k = A_k^T A_k`` of ``layer``'s activations ``A_k`` (positions x channels) is
    normalized to unit Frobenius norm, and the penalty is ``weight * sum_{i != j} <G_i, G_j> /
    K``, the mean over images of the summed cosine similarities to the others (0 for
    orthogonal styles, ``K - 1`` for equal ones). It is subtracted from the mean of the K
    images' objectives (Lucid's objectives are means over its batch), which is maximized:
    Lucid's ``channel(l, n) - 1e2 * diversity(l)`` with ``batch=4`` is ``maximize(m, [n],
    layer=l, images_per_unit=4, diversity=jaxsal.diversity(l, weight=1e2), regularizers=())``
    (its parameterization and transforms aside).

    Args:
      layer: the layer whose activations are compared (an early layer compares textures, a
        late one contents).
      weight: the penalty's weight, ``>= 0``.
      pre_activation: compare the values before the layer's fused activation (see
        :func:`channel_objective`).

    Example::

        res = jaxsal.maximize(model, [5], layer="conv2d_2", images_per_unit=4,
                              diversity=jaxsal.diversity("conv2d_1", weight=10.0))
        res.images  # (1, 4, H, W, C): four different images of channel 5
    """
    _check_layer(layer, "diversity")
    weight = check_real(weight, "diversity", "weight", low=0)
    return Diversity(layer, float(weight), _pre(pre_activation, "diversity"))


def diversity_penalty(acts: Array) -> Array:
    """The unweighted :func:`diversity` penalty of ``acts`` ``(K, ..., C)``, the activations
    of the K images of one unit: ``sum_{i != j} <G_i, G_j> / K`` with ``G_k`` the Gram matrix
    of image k's activations (positions x channels), normalized to unit Frobenius norm."""
    k = acts.shape[0]
    flat = acts.astype(jnp.float32).reshape(k, -1, acts.shape[-1])  # (K, positions, C)
    grams = jnp.einsum("kpc,kpd->kcd", flat, flat)
    # Lucid's tf.nn.l2_normalize(grams, axis=[1, 2], epsilon=1e-10)
    norm = jnp.sqrt(jnp.maximum(jnp.sum(grams ** 2, axis=(1, 2), keepdims=True), 1e-10))
    grams = (grams / norm).reshape(k, -1)
    sims = grams @ grams.T  # (K, K) cosine similarities
    return (jnp.sum(sims) - jnp.sum(jnp.diagonal(sims))) / k


def _pre(pre_activation: Any, what: str) -> bool:
    if not isinstance(pre_activation, (bool, np.bool_)):
        raise TypeError(f"{what}: expected pre_activation as a bool, got {pre_activation!r}")
    return bool(pre_activation)


@_concrete
def _weight(weight: Any, what: str) -> Array:
    """``weight`` as a float32 scalar; a finite number (a traced one is taken as it is)."""
    if not isinstance(weight, jax.core.Tracer):
        weight = check_real(weight, what, "weight")
    return jnp.asarray(weight, jnp.float32)


def _check_layer(layer: Any, what: str) -> None:
    if not isinstance(layer, str) or not layer:
        raise TypeError(f"{what}: expected a layer name (str), got {layer!r}")


@_concrete
def stack_objectives(objectives: Sequence[Objective]) -> Objective:
    """Stack objectives of identical structure along a new leading unit axis (for vmap)."""
    objectives = list(objectives)
    if not objectives:
        raise ValueError("expected at least one objective, got none")
    for o in objectives:
        if not isinstance(o, Objective):
            raise TypeError(f"expected Objective instances, got {type(o).__name__}")
    s0 = jax.tree_util.tree_structure(objectives[0])
    shapes0 = [jnp.shape(x) for x in jax.tree_util.tree_leaves(objectives[0])]
    for i, o in enumerate(objectives[1:], 1):
        if (jax.tree_util.tree_structure(o) != s0
                or [jnp.shape(x) for x in jax.tree_util.tree_leaves(o)] != shapes0):
            raise ValueError(
                f"objective {i} ({o!r}) does not have the structure of objective 0 "
                f"({objectives[0]!r}); objectives maximized in one call must have the same "
                "terms (kinds, layers, shapes) and differ only in units, weights and "
                "directions. Call maximize once per structure.")
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *objectives)


def _one_output(model: Any, shape: Any) -> Any:
    """``shape`` of a single-output model; an output objective on a model with several
    outputs is ambiguous: raise, naming them."""
    if not isinstance(shape, list):
        return shape
    if len(shape) == 1:
        return shape[0]
    listing, first = base.several_outputs(model, shape)
    raise ValueError(f"this model has {len(shape)} outputs ({listing}); output units need one. "
                     f"{base.pick_output_hint(model, first)}.")


def output_shape_of(model: Any, layer: str | None, image_shape: tuple | None = None):
    """Shape without batch of the model output (``layer=None``) or of a named layer.

    Uses ``model.output_shape`` / ``model.layer(name).output_shape`` when the model has them
    (:class:`model_import.KerasModel`), else ``jax.eval_shape`` of ``model.apply`` on one
    image of ``image_shape`` (e.g. :class:`jaxsal.FunctionModel`). ``None`` if unknown."""
    try:
        if layer is None and hasattr(model, "output_shape"):
            return _one_output(model, model.output_shape)
        if layer is not None and hasattr(model, "layer"):
            return model.layer(layer).output_shape
    except (AttributeError, TypeError):
        pass
    shape = image_shape or getattr(model, "input_shape", None)
    if shape is None or None in tuple(shape):
        return None
    x = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
    if layer is None:
        out = jax.eval_shape(lambda p, x: model.apply(p, x), model.params, x)
        if isinstance(out, (list, tuple)):
            _one_output(model, [tuple(o.shape[1:]) for o in out])
            out = out[0]
    else:
        out = jax.eval_shape(lambda p, x: model.apply(p, x, capture=[layer])[1][layer],
                             model.params, x)
    return tuple(out.shape[1:])


def output_channels_first(model: Any, shape: tuple | None) -> bool:
    """Whether ``model``'s output of ``shape`` (without the batch axis) has its units on its
    first axis: a channels-first map ``(K, H, W)`` of a model that says so
    (:attr:`model_import.KerasModel.output_data_format`). Output objectives read units on
    that axis, as they read the last axis of a channels-last map."""
    return (shape is not None and len(shape) >= 2
            and getattr(model, "output_data_format", None) == "channels_first")


def binary_output(model: Any, image_shape: tuple | None = None) -> bool:
    """Whether ``model``'s output is one unit per example, ``(1,)``: a binary classifier
    whose class ids are ``1`` (the unit) and ``0`` (its complement), as in the attribution
    methods."""
    try:
        shape = output_shape_of(model, None, image_shape)
    except ValueError:  # several outputs: refused where output terms are validated
        return False
    return shape is not None and tuple(shape) == (1,)


#: the number of axes of one unit's index, per kind (a stacked objective has one more)
_INDEX_NDIM = {"output": 0, "channel": 0, "neuron": 1, "direction": 1, "direction_neuron": 1}


def check_stacked(obj: Objective) -> int:
    """The number of units ``T`` of a stacked objective; raise unless every weight is
    ``(T,)`` and every index has that same leading unit axis (one ``T`` for all terms)."""
    ws = [tuple(np.shape(w)) for w in obj.weights]
    ids = [tuple(np.shape(i)) for i in obj.indices]
    lead = {s[0] for s in ws + ids if s}
    if (len(lead) != 1 or any(len(s) != 1 for s in ws)
            or any(len(s) != _INDEX_NDIM.get(k, len(s) - 1) + 1 for k, s in zip(obj.kinds, ids))):
        raise ValueError(
            f"targets: expected an objective whose terms are all stacked over one unit axis, "
            f"got {obj!r} with weight shapes {ws} and index shapes {ids}. Combine single "
            "objectives, then stack: stack_objectives([o1 + o0, o2 + o0]) rather than "
            "stack_objectives([o1, o2]) + o0; scale by a number (2.0 * o), not an array; "
            "pass a stacked objective itself as targets, not inside a list")
    return lead.pop()


def validate_objective(obj: Objective, model: Any, image_shape: tuple | None = None) -> None:
    """Check layer names and unit bounds of a (stacked) objective against ``model``."""
    check_stacked(obj)
    for kind, layer, idx, pre in zip(obj.kinds, obj.layers, obj.indices, obj.pre):
        traced = isinstance(idx, jax.core.Tracer)
        if traced and kind != "direction":  # (a direction's values are data: its shape is read)
            what = ("unit indices" if kind in ("output", "channel") else
                    "unit indices and positions" if kind == "neuron" else "positions")
            raise ValueError(
                f"targets: expected concrete {what} (which unit is read is checked against the "
                f"model before compute), got traced ones in a {kind!r} term ({idx!r}): "
                "arguments of a jax.jit / jax.shard_map / jax.vmap around maximize, or values "
                "computed from them. Build the targets from Python ints or NumPy arrays (closed "
                "over by the jitted function, not passed to it), or call maximize outside "
                "jax.jit / jax.shard_map; to maximize other units, split the targets across "
                "calls. seed_images, key and a direction may be traced")
        if layer is not None and hasattr(model, "resolve_layer"):
            model.resolve_layer(layer)  # raises with the list of valid names
        elif layer is not None and layer not in getattr(model, "layer_names", [layer]):
            raise ValueError(f"unknown layer {layer!r}; valid layer names: "
                             f"{getattr(model, 'layer_names', [])}")
        if pre:
            if not hasattr(model, "pre_activation_layer"):
                raise ValueError(
                    f"a pre-activation objective of layer {layer!r} needs a model that "
                    f"captures pre-activation values (model_import.KerasModel: "
                    f"apply(..., capture_pre=...)); this {type(model).__name__} does not. "
                    "Name a layer whose output is the value to maximize instead")
            model.pre_activation_layer(layer)  # refuses activation layers, nested models
        shape = output_shape_of(model, layer, image_shape)
        if not shape or isinstance(shape[0], tuple):
            continue
        if layer is None and tuple(shape) == (1,):  # a binary classifier: classes 0 and 1
            if np.any(np.asarray(idx) >= 2):
                raise ValueError(f"class {int(np.max(np.asarray(idx)))} out of range: the "
                                 "model output is one (sigmoid) unit, a binary classifier "
                                 "with classes 0 (the complement) and 1 (the unit)")
            continue
        first = layer is None and output_channels_first(model, shape)  # units on axis 0
        k = shape[0] if first else shape[-1]
        where = ("the model output" + (" (channels-first)" if first else "") if layer is None
                 else f"layer {layer!r}")
        # a layer's maps in words: the shape seen here is channels-last also for the layer of
        # a channels-first model (maximize optimizes its channels_last() view), whose own
        # shape puts the channels first
        maps = (f"maps of {shape[0]} rows x {shape[1]} columns, {k} channels"
                if layer is not None and len(shape) == 3 and None not in shape[:2]
                else f"maps of {shape[0]} rows, {k} channels"
                if layer is not None and len(shape) == 2 and shape[0] is not None
                else f"shape {tuple(shape)}")
        idx = idx if traced else np.asarray(idx)  # (traced: a direction, its shape read)
        if kind in ("output", "channel", "neuron"):
            ch = idx if kind != "neuron" else idx[..., 0]
            if k is not None and np.any(ch >= k):
                raise ValueError(f"unit index {int(np.max(ch))} out of range: {where} has {k} "
                                 f"units/channels ({maps}); use 0..{k - 1}")
        n_dir = idx.shape[-1] - (2 if kind == "direction_neuron" else 0)
        if kind in ("direction", "direction_neuron") and k is not None and n_dir != k:
            raise ValueError(f"direction has {n_dir} entries but {where} has {k} "
                             f"channels (shape {tuple(shape)}); pass a vector of length {k}")
        if kind in _POSITION_AT:
            at = _POSITION_AT[kind]
            _check_position(kind, idx[..., at:at + 2], shape, where, maps)


def _check_position(kind: str, pos: np.ndarray, shape: tuple, where: str, maps: str) -> None:
    """Refuse the positions ``pos`` ``(..., 2)`` (row, col; ``-1`` the centre) of ``kind``
    terms outside maps of ``shape`` (``(h, w, K)``; ``(L, K)`` of one spatial axis, a
    Conv1D's, has rows only: its column is 0) or given for a layer without spatial axes
    (``(K,)``); ``where`` and ``maps`` name the layer and its maps in the message."""
    if len(shape) < 2:
        if np.any(pos >= 0):
            raise ValueError(f"{kind} position given but {where} has no spatial axes (shape "
                             f"{tuple(shape)}); pass position=None")
        return
    form = "position=(row, column)" if len(shape) >= 3 else "position=(row, 0)"
    for ax, axis in enumerate(("row", "column")[:len(shape) - 1]):
        p = pos[..., ax]
        if shape[ax] is not None and np.any(p >= shape[ax]):
            raise ValueError(f"{kind} position out of range: {axis} {int(np.max(p))} of "
                             f"{where}, which has {maps}; use a {axis} in "
                             f"0..{shape[ax] - 1} ({form})")
    if len(shape) == 2 and np.any(pos[..., 1] > 0):
        raise ValueError(f"{kind} position out of range: column {int(np.max(pos[..., 1]))} "
                         f"of {where}, which has {maps}: one spatial axis, no columns; use "
                         "position=(row, 0) (or None: the centre row)")
