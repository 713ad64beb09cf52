"""Targets -> scores, and the one-forward / many-backward pullback over them.

What a method explains is a matrix of scores ``S`` of shape ``(N, T)``: score ``t`` of input
``n``. Targets given as class ids pick output units; a score function computes anything
(a regression output, a neuron of an intermediate layer). One ``jax.vjp`` of ``x -> S`` gives
the forward pass once; its pullback, applied to the one-hot cotangent of target ``t``
(``vmap``-ed over a chunk of targets), is the gradient of score ``t`` for every input: T
targets cost one forward and T backward passes.

One-unit (sigmoid) outputs are binary classifiers with two class ids: ``1`` (the unit) and
``0`` (its complement): on a probability head the score of class 0 is ``1 - p`` (the
``sigmoid_complement``), on a logit head it is ``-z`` (the logit of the complement,
``sigmoid(-z) = 1 - p``). With the ``sigmoid_complement`` head the unit already holds
``1 - p``, so class 0 is the unit itself and class 1 is its complement ``p``: class ids keep
their meaning whatever the head.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src.base import callable_key, refuse_explicit_tree, zeros_varying_as
from jaxsal._src.precision import backward_dtype, low_precision

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

#: What the attribution methods' ``targets`` accept: ``None`` (each input's predicted class),
#: a class id (``int``), T class ids (a sequence or a ``(T,)`` array: every input, every id),
#: an ``(N, T)`` int array (T ids per input), a score function ``outputs -> (N,)`` (such as
#: :func:`class_score` or :func:`neuron`), or a sequence of T score functions. Maps keep a
#: target axis ``T`` for sequences and arrays, none for ``None``, an int or one function.
Targets = Union[None, int, Sequence[int], ArrayLike, Callable[..., Any],
                Sequence[Callable[..., Any]]]


# ---------------------------------------------------------------------- score factories
@dataclasses.dataclass(frozen=True)
class ClassScore:
    """``outputs[:, index]``: see :func:`class_score`."""

    index: int

    def __call__(self, outputs: Array) -> Array:
        return outputs[:, self.index]

    def check_shape(self, shape: tuple) -> None:
        """Refuse an index outside the outputs ``shape`` (batch first), which JAX would clamp
        to the last unit."""
        if len(shape) != 2:
            raise ValueError(f"{self!r} reads outputs of shape (N, units); this model's outputs "
                             f"have shape {shape}. Write a score function of the outputs "
                             "instead: targets=lambda outputs: ... -> (N,)")
        k = shape[1]
        if not 0 <= self.index < k:
            extra = (" (class_score reads output units; a one-unit binary model has unit 0 only: "
                     "for its classes 0 (the complement) and 1 (the unit) pass targets=0 or 1)"
                     if k == 1 else "")
            raise ValueError(f"class_score index out of range: expected 0 <= index < {k} (the "
                             f"model's output units){extra}, got {self.index}")


@dataclasses.dataclass(frozen=True)
class LayerScore:
    """A unit of an intermediate layer: see :func:`neuron`."""

    layer: str
    index: Any
    channels_first: bool = False  # set by the methods from the layer's layout

    def __call__(self, activation: Array) -> Array:
        if isinstance(self.index, tuple):
            return activation[(slice(None),) + self.index]
        a = activation[:, self.index] if self.channels_first else activation[..., self.index]
        return a.reshape(a.shape[0], -1).mean(axis=1)

    def __repr__(self) -> str:
        return f"neuron({self.layer!r}, {self.index!r})"

    def check_shape(self, shape: tuple) -> None:
        """Refuse an index that does not name one unit (a tuple) or one channel (an int) of
        the layer's output ``shape`` (batch first); JAX would clamp it to another unit."""
        per = tuple(shape[1:])
        what = f"neuron({self.layer!r}, {self.index!r})"
        if isinstance(self.index, tuple):
            if len(self.index) != len(per):
                raise ValueError(f"{what}: a tuple index names one unit of the layer's "
                                 f"per-example output, shape {per}: expected {len(per)} "
                                 f"indices, got {len(self.index)}. An int index selects a "
                                 "channel (last axis), averaged over the other axes.")
            for ax, (i, d) in enumerate(zip(self.index, per)):
                if not 0 <= i < d:
                    raise ValueError(f"{what}: index {i} out of range on axis {ax} of layer "
                                     f"{self.layer!r}'s per-example output, shape {per}: "
                                     f"expected 0 <= index < {d}")
            return
        if not per:
            raise ValueError(f"{what}: layer {self.layer!r} has output shape {tuple(shape)} "
                             "(batch first) and no channel axis to select from")
        k = per[0] if self.channels_first else per[-1]
        if not 0 <= self.index < k:
            axis = "axis 1, channels-first" if self.channels_first else "the last axis"
            raise ValueError(f"{what}: channel {self.index} out of range: layer "
                             f"{self.layer!r} has {k} channels ({axis} of its output, shape "
                             f"{tuple(shape)}); expected 0 <= index < {k}")


def _index(value: Any, what: str, several: str) -> int:
    """``value`` as a Python int: an int, a NumPy integer or a 0-d integer array; a bool, a
    float (even a whole one, as class ids are) or anything else raises a ``TypeError``
    (``several``: what to do instead with an array of indices)."""
    try:
        a = None if isinstance(value, (bool, np.bool_, str)) else np.asarray(value)
    except (TypeError, ValueError):  # an unconvertible object
        a = None
    if a is not None and a.ndim > 0:
        raise TypeError(f"{what}: expected an integer index (an int or a NumPy integer), got "
                        f"an array of shape {a.shape}; {several}")
    if a is None or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{what}: expected an integer index (an int or a NumPy integer), got "
                        f"{value!r} ({type(value).__name__}); convert it with int(...)")
    return int(a)


def class_score(index: int) -> ClassScore:
    """Score function ``outputs -> outputs[:, index]`` (shape ``(N,)``).

    Equal to passing ``targets=index`` for a multi-class model; useful as a building block for
    custom scores. ``index`` is an output unit: ``0 <= index < units``, checked by the methods
    before tracing (an index out of range raises a ``ValueError``; JAX would clamp it). On a
    one-unit binary model use ``targets=0`` / ``1`` for its two classes. Score objects made
    by the factories compare equal when their arguments do, so repeated calls reuse the
    compiled program (as does a fresh ``lambda`` made by the same line with the same values;
    tests/test_function_model_paths.py).
    """
    return ClassScore(_index(index, f"class_score({index!r})",
                             "for several units make one score function each: "
                             "[jaxsal.class_score(i) for i in ids]"))


def neuron(layer: str, index: int | Sequence[int]) -> LayerScore:
    """Score function reading the output of an intermediate ``layer``.

    Args:
      layer: a layer name of the model.
      index: an int selects a channel (the last axis; axis 1 of a channels-first layer),
        averaged over any spatial axes (a "filter" score, ``(N,)``); a tuple (or list, or 1-D
        integer array: ``np.array([i, j, k])``) indexes one unit of the per-example output in
        the layer's own layout (e.g. ``(i, j, k)`` for a channels-last conv layer, ``(k,)``
        for a Dense layer).

    The methods check the index against the layer's output shape before tracing and raise a
    ``ValueError`` when it is out of range (JAX itself would clamp it to another unit).
    """
    what = f"neuron({layer!r}, {index!r})"
    several = ("one unit is a tuple of indices into the layer's per-example output, "
               "(i, j, k), or a 1-D integer array; a channel is one int")
    if isinstance(index, (np.ndarray, jax.Array)) and np.ndim(index) == 1:
        if not jnp.issubdtype(index.dtype, jnp.integer):  # a bool or float array
            raise TypeError(f"{what}: expected a 1-D array of integer indices, got dtype "
                            f"{index.dtype}; convert it with .astype(int)")
        index = list(index)  # one unit, as a tuple
    idx = (tuple(_index(i, what, several) for i in index) if isinstance(index, (tuple, list))
           else _index(index, what, several))
    return LayerScore(str(layer), idx)


# ---------------------------------------------------------------------- parsed targets
@dataclasses.dataclass(frozen=True)
class OutputInfo:
    """What the model's outputs hold: ``units`` (K of ``(N, K)`` outputs, else ``None``),
    ``kind`` (``"prob"``/``"logit"``) and ``complement`` (the unit holds ``1 - p``)."""

    units: int | None
    kind: str = "logit"
    complement: bool = False
    #: for errors where ``units`` is ``None``: what the outputs are, and the way to a score
    not_classes: str = dataclasses.field(default="", compare=False)

    @property
    def num_classes(self) -> int | None:
        if self.units is None:
            return None
        return 2 if self.units == 1 else self.units


@dataclasses.dataclass(frozen=True)
class TargetSpec:
    """The static part of ``targets``: ``kind`` (``"ids"``, ``"predicted"``, ``"scores"``),
    ``num`` (T), whether the output keeps the class axis, and the score functions."""

    kind: str
    num: int
    class_axis: bool
    scores: tuple = dataclasses.field(default=(), compare=False)
    #: whether the class ids were checked against the classes before tracing; ``False`` for
    #: ids traced under the caller's ``jax.jit``/``vmap`` (:func:`_traced_ids`), whose scores
    #: are NaN, and the maps with them, where an id is out of range
    checked: bool = True
    #: how the spec compares (it is part of compiled programs' keys): the score functions
    #: with the values their closures hold now (:func:`jaxsal._src.base.callable_key`)
    score_keys: tuple = dataclasses.field(default=(), init=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "score_keys", tuple(callable_key(s) for s in self.scores))

    @property
    def layers(self) -> tuple[str, ...]:
        out: list[str] = []
        for s in self.scores:
            if isinstance(s, LayerScore) and s.layer not in out:
                out.append(s.layer)
        return tuple(out)


def _first_bool(targets: Any) -> Any:
    """The first bool of ``targets`` (itself, or an item of its nested lists and tuples),
    ``None`` if none: NumPy reads ``[True, 0]`` as the ids 1 and 0."""
    if isinstance(targets, (bool, np.bool_)):
        return targets
    if isinstance(targets, (list, tuple)):
        for t in targets:
            found = _first_bool(t)
            if found is not None:
                return found
    return None


def _beyond_int64(targets: Any) -> list[int]:
    """The Python ints of ``targets`` (an int or nested lists and tuples of them) outside
    int64, sorted, which NumPy holds in an object array; ``[]`` when anything else is in it."""
    leaves = jax.tree_util.tree_leaves(targets)
    if not leaves or not all(isinstance(t, (int, np.integer)) for t in leaves):
        return []
    info = np.iinfo(np.int64)
    return sorted({int(t) for t in leaves if not info.min <= int(t) <= info.max})


def parse_targets(targets: Any, n: int,
                  info: OutputInfo) -> tuple[TargetSpec, np.ndarray | Array | None]:
    """Validate ``targets`` and split them into a static :class:`TargetSpec` and an
    ``(N, T)`` int32 id array (``None`` unless class ids were given). Ids sharded over
    ``Explicit`` mesh axes are refused (:func:`jaxsal._src.base.refuse_explicit_tree`)."""
    refuse_explicit_tree(targets, "targets")
    if targets is None:
        if info.units is None:
            raise ValueError("targets=None explains the predicted class, which needs outputs of "
                             "shape (N, classes); " + (
                                 info.not_classes or "this model's outputs are not. Pass a "
                                 "score function: targets=lambda outputs: ... -> (N,)"))
        return TargetSpec("predicted", 1, False), None
    if callable(targets):
        return TargetSpec("scores", 1, False, (targets,)), None
    if isinstance(targets, (list, tuple)) and targets and all(callable(t) for t in targets):
        return TargetSpec("scores", len(targets), True, tuple(targets)), None
    flag = _first_bool(targets)
    if flag is not None:
        raise TypeError(f"expected targets as class ids (int), got a bool ({flag!r})"
                        + ("" if flag is targets else " among them"))
    if isinstance(targets, (list, tuple)) and any(callable(t) for t in targets):
        raise TypeError("expected targets as class ids or as score functions, not both in one "
                        "list: write each class as a score function, jaxsal.class_score(k)")
    if any(isinstance(t, jax.core.Tracer) for t in jax.tree_util.tree_leaves(targets)):
        return _traced_ids(targets, n, info)
    try:
        arr = np.asarray(targets)
    except (TypeError, ValueError):  # ragged: [[1, 2], [3]]
        raise ValueError("expected targets as an int, a 1-D sequence of ints or an (N, T) "
                         "int array with T ids for every input; got a ragged sequence (rows of "
                         "different lengths). Give every input the same number of targets, "
                         "or call once per group of inputs") from None
    if arr.size == 0:
        raise ValueError("expected at least one target, got an empty sequence")
    huge = _beyond_int64(targets) if arr.dtype == object else []
    if not huge and not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0):
            raise TypeError(f"expected integer class ids, got a float array ({arr.dtype}); "
                            "convert with .astype(int)")
        raise TypeError(f"expected targets as an int, a sequence of ints, an (N, T) int array, "
                        f"None or a score function; got {type(targets).__name__} of dtype "
                        f"{arr.dtype}")
    if info.units is None:
        raise ValueError("class-id targets need outputs of shape (N, classes); "
                         + (info.not_classes or "this model's outputs are not. Pass a score "
                            "function instead."))
    k = info.num_classes
    bad = huge or sorted(set(arr[(arr < 0) | (arr >= k)].tolist()))
    if bad:
        extra = " (a one-unit output is a binary classifier: ids 0 and 1)" if info.units == 1 \
            else ""
        raise ValueError(f"target ids out of range: expected 0 <= id < {k}{extra}, got "
                         f"{bad[:10]}")
    if arr.ndim == 0:
        return TargetSpec("ids", 1, False), np.full((n, 1), int(arr), np.int32)
    if arr.ndim == 1:
        ids, counts = np.unique(arr, return_counts=True)
        if (counts > 1).any():  # labels passed where classes are listed (Captum's per-input
            # 1-D target) give (N, N, ...) maps of which no slice is one class per input
            labels = (" For one class per input (labels y), pass an (N, 1) array: "
                      "targets=np.asarray(y)[:, None]." if arr.shape[0] == n else "")
            raise ValueError(
                f"expected distinct class ids in a 1-D targets sequence (each listed class is "
                f"explained for every input: maps (N, T, ...)), got {arr.shape[0]} ids that "
                f"repeat {ids[counts > 1].tolist()[:10]}.{labels} Otherwise drop the repeats: "
                f"np.unique(targets)")
        return (TargetSpec("ids", arr.shape[0], True),
                np.broadcast_to(arr.astype(np.int32)[None], (n, arr.shape[0])).copy())
    if arr.ndim == 2:
        if arr.shape[0] != n:
            raise ValueError(f"2-D targets must be (N, T) with N = {n} inputs, got shape "
                             f"{arr.shape}. A 1-D sequence explains every class for every input.")
        return TargetSpec("ids", arr.shape[1], True), arr.astype(np.int32)
    raise ValueError(f"expected targets of at most 2 dimensions (N, T), got shape {arr.shape}")


# ---------------------------------------------------------------------- traced ids
def _traced_ids(targets: Any, n: int, info: OutputInfo) -> tuple[TargetSpec, Array]:
    """Class ids traced under the caller's ``jax.jit`` or ``vmap`` (labels passed to a jitted
    training step): an ``(N, T)`` array, or one id for every input. Their count is the
    array's shape; their range cannot be checked before tracing, so an id out of range gets
    a NaN score (:func:`_score_matrix`) and NaN maps rather than JAX's clamped or filled
    index. A traced 1-D sequence is refused: it would list classes for every input, where
    labels ``y`` of shape ``(N,)`` are meant as one class per input (``y[:, None]``)."""
    ids = jnp.asarray(targets)
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(f"expected integer class ids, got traced targets of dtype {ids.dtype}; "
                        "convert with .astype(jnp.int32)")
    if info.units is None:
        raise ValueError("class-id targets need outputs of shape (N, classes); "
                         + (info.not_classes or "this model's outputs are not. Pass a score "
                            "function instead."))
    if ids.ndim == 0:
        return (TargetSpec("ids", 1, False, checked=False),
                jnp.broadcast_to(ids.astype(jnp.int32), (n, 1)))
    if ids.ndim == 2 and ids.shape[0] == n:
        return TargetSpec("ids", ids.shape[1], True, checked=False), ids.astype(jnp.int32)
    raise ValueError(
        f"expected traced class ids (an argument of a function under jax.jit or vmap) as an "
        f"(N, T) array with N = {n} inputs, or one id for every input; got shape "
        f"{tuple(ids.shape)}. For one label per input pass y[:, None]; classes listed for "
        "every input (a 1-D sequence) must be concrete: close over them (jax.jit(lambda x: "
        "jaxsal.saliency(model, x, [1, 2]))) or make them static (jax.jit(f, "
        "static_argnums=...))")


# ---------------------------------------------------------------------- scores
def predicted_ids(y: Array, info: OutputInfo) -> Array:
    """``(N,)`` predicted class ids (argmax; for one unit: the unit's class test)."""
    y = jax.lax.stop_gradient(y)
    if info.units == 1:
        o = y[:, 0]
        if info.kind == "prob":
            p = 1.0 - o if info.complement else o
            return (p > 0.5).astype(jnp.int32)
        return (o > 0).astype(jnp.int32)
    return jnp.argmax(y, axis=-1).astype(jnp.int32)


def class_scores(y: Array, ids: Array, info: OutputInfo) -> Array:
    """``(N, T)`` scores of the classes ``ids`` (``(N, T)``) in outputs ``y`` ``(N, K)``."""
    if info.units == 1:
        o = y[:, :1]
        if info.kind == "prob":
            pos = 1.0 - o if info.complement else o
            neg = 1.0 - pos
        else:
            pos, neg = o, -o
        return jnp.where(ids == 1, pos, neg)
    return jnp.take_along_axis(y, ids, axis=1)


def score_matrix(spec: TargetSpec, info: OutputInfo, y: Any, captured: dict,
                 ids: Array | None) -> Array:
    """``(N, T)`` scores for the targets: class ids, the predicted class, or score functions;
    float32 for a model computing in bfloat16/float16 (its maps, differences of scores
    included, are float32 like every model's)."""
    s = _score_matrix(spec, info, y, captured, ids)
    if jnp.issubdtype(s.dtype, jnp.floating) and s.dtype.itemsize < 4:
        s = s.astype(jnp.float32)
    return s


def _score_matrix(spec: TargetSpec, info: OutputInfo, y: Any, captured: dict,
                  ids: Array | None) -> Array:
    if spec.kind == "scores":
        cols = []
        for fn in spec.scores:
            # a neuron() score reads its layer; every other function the outputs (a `layer`
            # attribute of a score object of the user's own is its own business)
            s = fn(captured[fn.layer] if isinstance(fn, LayerScore) else y)
            s = jnp.asarray(s)
            if not jnp.issubdtype(s.dtype, jnp.floating):  # int, bool: zero gradients
                raise TypeError(f"a score function must return real floating-point scores; "
                                f"{fn!r} returned dtype {s.dtype}. An integer or boolean "
                                "score (an argmax, a comparison) has a zero gradient, so the "
                                "gradient methods would give zero maps: score a logit or a "
                                "probability; for the perturbation methods a float cast, "
                                ".astype(jnp.float32), is enough")
            n = jax.tree_util.tree_leaves(y)[0].shape[0]
            if s.shape != (n,):
                raise ValueError(f"a score function must return one value per row of the "
                                 f"outputs it is given, shape ({n},) here (a method may "
                                 "stack several points per input: integration steps, noisy "
                                 f"or masked copies); {fn!r} returned shape {s.shape}. Reduce "
                                 "it (e.g. .mean over units) but keep the batch axis.")
            cols.append(s)
        return jnp.stack(cols, axis=1)
    if spec.kind == "predicted":
        ids = predicted_ids(y, info)[:, None]
    if spec.checked:
        return class_scores(y, ids, info)
    # traced ids, unchecked: one out of range scores NaN, where JAX's gather would read
    # another class (clamped) or a NaN (filled). A `where`, not a NaN factor (which would put
    # 0 * NaN into the other targets' cotangents): its gradient is 0, and the methods set its
    # maps to NaN where they pull it back (target_pullback, the CAMs: nan_where_invalid)
    s = class_scores(y, jnp.clip(ids, 0, info.num_classes - 1), info)
    return jnp.where(valid_ids(ids, info), s, jnp.asarray(jnp.nan, s.dtype))


def valid_ids(ids: Array, info: OutputInfo) -> Array:
    """Which of the class ``ids`` name one of the model's classes."""
    return (ids >= 0) & (ids < info.num_classes)


def nan_where_invalid(maps: Any, ids: Array, info: OutputInfo) -> Any:
    """``maps`` (arrays whose leading axes are those of ``ids``: ``(N,)`` or ``(N, T)``) NaN
    where an id is out of range: the maps of unchecked (traced) ids, whose scores are NaN and
    their gradients 0. (A NaN gradient would not do: a guided ReLU, or a ReLU that XLA:CPU
    fuses into a dot, LayerCAM's ``A . ReLU(G)``, turns NaN into 0.)"""
    bad = ~valid_ids(ids, info)

    def mark(a):
        if not jnp.issubdtype(a.dtype, jnp.inexact):
            return a
        where = bad.reshape(bad.shape + (1,) * (a.ndim - bad.ndim))
        return jnp.where(where, jnp.asarray(jnp.nan, a.dtype), a)

    return jax.tree_util.tree_map(mark, maps)


def run_model(model: Any, params: Any, x: Array, layers: Sequence[str] = (),
              perturb: dict | None = None, perturb_pre: dict | None = None) -> tuple[Any, dict]:
    """``(outputs, {layer: activation})`` whatever was asked (``perturb_pre``: a
    ``KerasModel``'s perturbations before fused activations, FullGrad's)."""
    layers = tuple(layers)
    if perturb_pre:
        out = model.apply(params, x, capture=list(layers), perturb=perturb,
                          perturb_pre=perturb_pre)
        return out if layers else (out, {})
    if layers or perturb:
        out = model.apply(params, x, capture=list(layers), perturb=perturb)
        return out if layers else (out, {})
    return model.apply(params, x), {}


def target_pullback(fwd: Callable, primal: Any, spec: TargetSpec, info: OutputInfo,
                    ids: Array | None, relevance: bool = False):
    """One forward pass through ``fwd(primal) -> (outputs, captured, aux)``.

    Returns ``(scores (N, T), aux, pull)`` where ``pull(t)`` is the gradient of score ``t``
    (summed over inputs, which are independent) with respect to ``primal``: one backward pass.
    ``pull`` is ``vmap``-able over ``t``.

    With ``relevance`` (LRP), the backward pass through ``fwd`` starts from the relevance the
    score puts on the outputs (and the captured layers a score reads), ``dS_t/dy * y``,
    instead of ``dS_t/dy``: the score itself is differentiated plainly (it is no rule layer).

    While jaxsal traces a ``precision="bfloat16"`` program
    (:func:`jaxsal._src.precision.backward_dtype`), the backward pass's matmuls and
    convolutions take bfloat16 operands (float32 accumulation); the forward pass stays float32.
    """
    if not relevance:
        def scored(p):
            y, captured, aux = fwd(p)
            return score_matrix(spec, info, y, captured, ids), aux

        s, pullback, aux = jax.vjp(scored, primal, has_aux=True)

        def backward(ct):
            return pullback(ct)[0]
    else:
        def outputs(p):
            y, captured, aux = fwd(p)
            return (y, captured), aux

        out, pullback, aux = jax.vjp(outputs, primal, has_aux=True)
        s, score_vjp = jax.vjp(lambda yy, cc: score_matrix(spec, info, yy, cc, ids), *out)

        def relevance_of(g, v):  # an integer output (an argmax's indices): no relevance,
            # its float0 cotangent as it is
            inexact = jnp.issubdtype(jnp.result_type(v), jnp.inexact)
            return (g * v).astype(v.dtype) if inexact else g

        def backward(ct):
            seed = jax.tree_util.tree_map(relevance_of, score_vjp(ct), out)
            return pullback(_unit_relevance(seed, ct, s, spec, info))[0]

    dtype = backward_dtype()
    if dtype is not None:
        backward = low_precision(backward, dtype, pullback=True)

    def pull(t):
        # zeros_like(s) + one-hot: the cotangent has the scores' type, which under
        # jax.shard_map includes the mesh axes they vary over (a plain broadcast one-hot
        # is refused there by the VJP: "got float32[N,T], but expected float32[N,T]{V:..}")
        ct = jnp.zeros_like(s) + (jnp.arange(spec.num) == t).astype(s.dtype)
        g = backward(ct)
        if spec.checked or ids is None:
            return g
        # an unchecked (traced) id out of range: its score is NaN, its gradient 0; NaN rows
        return nan_where_invalid(g, jnp.take(ids, t, axis=1), info)

    return s, aux, pull


def _unit_relevance(seed: tuple, ct: Array, s: Array, spec: TargetSpec,
                    info: OutputInfo) -> tuple:
    """LRP's relevance of the outputs, ``seed = (R_y, R_captured)``, with the one unit of a
    one-unit model given the class's score itself, ``R_y = S`` (class 0 of a probability
    head: ``1 - p``, which ``dS/dy * y = -p`` is not; ``-z`` on a logit head, the same
    either way), so class ids keep their meaning whatever the head. Other outputs and score
    functions keep ``dS/dy * y``."""
    y_seed, captured = seed
    if info.units != 1 or spec.kind == "scores" or not hasattr(y_seed, "shape"):
        return seed
    # (N, 1): the target's score. A `where`, not `ct * s`: an unchecked (traced) id out of
    # range scores NaN (_score_matrix), and 0 * NaN would put it into the other targets' seeds
    score = jnp.sum(jnp.where(ct != 0, ct * s, 0), axis=1, keepdims=True)
    return jnp.broadcast_to(score, y_seed.shape).astype(y_seed.dtype), captured


def layer_pullback(m: Any, params: Any, x: Array, layer: str, a_shape: tuple, spec, info,
                   ids, relevance: bool = False):
    """``(S (N, T), A (N, h, w, K), pull)`` with ``pull(t) = dS_t/dA``: one forward pass
    (``A`` and ``dS_t/dA`` in the layer's own layout)."""
    def fwd(delta):
        y, caps = run_model(m, params, x, (layer,) + spec.layers, perturb={layer: delta})
        return y, caps, caps[layer]

    leaves = jax.tree_util.tree_leaves(x)  # one input array, or several
    floats = [a.dtype for a in leaves if jnp.issubdtype(a.dtype, jnp.floating)]
    dtype = floats[0] if floats else jnp.float32  # token ids
    zeros = zeros_varying_as(leaves[0], (leaves[0].shape[0],) + tuple(a_shape[1:]),
                             dtype)
    return target_pullback(fwd, zeros, spec, info, ids, relevance)


def pullback_at(m: Any, params: Any, x: Any, spec, info, ids, lt=None,
                relevance: bool = False):
    """``(S (N, T), primal, pull)``: one forward pass of ``m``; ``pull(t)`` is target
    ``t``'s gradient with respect to ``x`` (``primal = x``), or with ``lt`` (a
    :class:`~jaxsal._src.validate.LayerTarget`) with respect to that layer's output
    (``primal = A``), through whatever backward rules ``m``'s runtime installs
    (``relevance``: see :func:`target_pullback`)."""
    if lt is None:
        fwd = lambda xx: (*run_model(m, params, xx, spec.layers), None)  # noqa: E731
        scores, _, pull = target_pullback(fwd, x, spec, info, ids, relevance)
        return scores, x, pull
    return layer_pullback(m, params, x, lt.name, lt.shape, spec, info, ids, relevance)


def resolve_predicted(model: Any, params: Any, x: Array, spec: TargetSpec, info: OutputInfo,
                      ids: Array | None) -> tuple[TargetSpec, Array | None]:
    """For methods that evaluate the model away from ``x`` (noise, paths, masks): fix the
    predicted class on the clean input once (one forward), as explicit ids."""
    if spec.kind != "predicted":
        return spec, ids
    y, _ = run_model(model, params, x)
    return dataclasses.replace(spec, kind="ids"), predicted_ids(y, info)[:, None]
