"""Activation maximization: one compiled optax loop, vmapped over every unit asked for.

Erhan, Bengio, Courville & Vincent 2009, "Visualizing Higher-Layer Features of a Deep
Network"; Simonyan, Vedaldi & Zisserman 2014, "Deep Inside Convolutional Networks";
Yosinski et al. 2015, "Understanding Neural Networks Through Deep Visualization"; Olah,
Mordvintsev & Schubert 2017, "Feature Visualization" (Distill).

For every target unit ``t`` an image ``x_t`` is found by gradient ascent on

    objective_t(model(transform_k(x_t))) - sum_r penalty_r(x_t)

with an optax optimizer, ``x_t = parameterization(p_t)`` kept inside ``input_range``. The
update loop is a ``lax.scan`` under ``jax.jit``; ``jax.vmap`` maps it over the units, so each
unit has its own image and optimizer state and T units cost one compiled program.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsal._src import base
from jaxsal._src.base import ModelLike
from jaxsal._src import objectives as _obj
from jaxsal._src import parameterization as _param
from jaxsal._src import regularizers as _reg
from jaxsal._src import ints, reals
from jaxsal._src import transforms as _tf
from jaxsal._src.per_example import check_per_example
from jaxsal._src.targets import OutputInfo, class_scores
from jaxsal._src.validate import _bool_input, check_flag, integer_input, is_channels_first

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

LAYER_OBJECTIVES = ("channel", "neuron")

# Defaults (tuned on the MNIST fixture model, see README "maximize"): Adam on sigmoid pixels
# starting dark, total variation + L1 towards the low end of the range + a blur every 8 steps;
# jitter, scale and rotation.
DEFAULT_LEARNING_RATE = 0.1


class MaximizeResult(NamedTuple):
    """What :func:`maximize` returns.

    Attributes:
      images: ``(T, H, W, C)`` optimized images, inside ``input_range``
        (``(T, K, H, W, C)`` with ``images_per_unit=K > 1``).
      scores: ``(T,)`` the objective of each image, evaluated on the returned image (no
        transform, no regularizer, no diversity penalty; ``(T, K)`` with K images per unit).
      trajectory: ``(T, total_steps)`` the objective at every step (on that step's
        transformed image), for convergence plots (``(T, K, total_steps)``).
      objective: the stacked :class:`~jaxsal.Objective` that was maximized.
    """

    images: Array
    scores: Array
    trajectory: Array
    objective: Any


TARGET_KINDS = ("output", "layer")


def _check_kind(kind: str) -> None:
    if kind not in TARGET_KINDS:
        raise ValueError(f"expected kind in {TARGET_KINDS}, got {kind!r}")


@functools.lru_cache(maxsize=None)
def default_parameterization(kind: str = "output") -> _param.Parameterization:
    """The parameterization used when ``parameterization=None``.

    ``kind="output"`` (objectives with an output term: class visualization): sigmoid pixels
    starting near the low end of the range, ``pixels(init_value=0.1)``; with the L1 prior
    towards ``lo`` the image starts where the prior pulls it and strokes grow.
    ``kind="layer"`` (channels, neurons, directions only): ``pixels()`` from mid-range, so
    that ReLU units are not all silent at the start."""
    _check_kind(kind)
    return _param.pixels(init_value=0.1 if kind == "output" else 0.5)


@functools.lru_cache(maxsize=None)
def default_regularizers(kind: str = "output") -> tuple[_reg.Regularizer, ...]:
    """The regularizers used when ``regularizers=None``.

    ``kind="output"``: ``total_variation(5)``, ``lp_norm(10, p=1)`` (sparse, towards the low
    end of the range) and ``blur_every(8, sigma=0.5)``, tuned on the MNIST fixture (class
    logits of about 10-20; images in [0, 1] with a dark background).
    ``kind="layer"``: ``total_variation(0.5)`` and ``blur_every(8, sigma=0.5)``: channel
    means are often 100x smaller than logits, and a strong prior would win over them."""
    _check_kind(kind)
    if kind == "layer":
        return (_reg.total_variation(0.5), _reg.blur_every(8, 0.5))
    return (_reg.total_variation(5.0), _reg.lp_norm(10.0, p=1.0), _reg.blur_every(8, 0.5))


def default_transforms(image_size: int) -> _tf.Transform:
    """The transforms used when ``transforms=None``: jitter by ``image_size / 14`` pixels
    (at least 1: 2 for MNIST, 16 for 224 pixels), random scale in [0.9, 1.1], random rotation
    within +-10 degrees. ``image_size``: the image's larger side in pixels, an int >= 1. The
    same size gives the same (equal) transform."""
    return _default_transforms(ints.check_int(image_size, "image_size",
                                              where="default_transforms",
                                              kind="the image's side in pixels"))


@functools.lru_cache(maxsize=None)
def _default_transforms(image_size: int) -> _tf.Transform:
    return _tf.compose(_tf.jitter(max(1, int(round(image_size / 14)))),
                       _tf.random_scale(0.9, 1.1), _tf.random_rotate(10.0))


# the functions that build transforms: given as transforms=, they fail while tracing
_TRANSFORM_FACTORIES = (_tf.identity, _tf.jitter, _tf.pad, _tf.random_scale, _tf.random_rotate,
                        _tf.compose, _tf.standard_transforms, default_transforms)


# ---------------------------------------------------------------------------- targets
def _objectives_given(targets: Any) -> bool:
    """Whether ``targets`` are :class:`~jaxsal.Objective` objects (one, or a list of them)."""
    if isinstance(targets, _obj.Objective):
        return True
    return (isinstance(targets, (list, tuple)) and bool(targets)
            and any(isinstance(t, _obj.Objective) for t in targets))


def _as_objective(model: Any, targets: Any, layer: str | None, objective: str,
                  image_shape: tuple | None = None,
                  pre_activation: bool = False) -> _obj.Objective:
    if isinstance(targets, _obj.Objective):
        if targets.weights and np.ndim(targets.weights[0]) == 0:
            return _obj.stack_objectives([targets])
        return targets
    if isinstance(targets, str):
        if targets != "all":
            raise ValueError(f"targets: expected 'all', unit indices or Objectives, got "
                             f"{targets!r}")
        shape = _obj.output_shape_of(model, layer, image_shape)
        # a channels-first output map (K, H, W) has its units on axis 0, as output terms read
        units_axis = 0 if layer is None and _obj.output_channels_first(model, shape) else -1
        if not shape or not isinstance(shape[units_axis], int):
            raise ValueError(f"targets='all': the number of units of "
                             f"{'the output' if layer is None else repr(layer)} is unknown "
                             f"(shape {shape}); pass explicit unit indices")
        binary = layer is None and tuple(shape) == (1,)  # classes 0 and 1
        targets = list(range(2 if binary else shape[units_axis]))
    if isinstance(targets, (int, np.integer)):
        targets = [targets]
    if any(isinstance(t, jax.core.Tracer) for t in jax.tree_util.tree_leaves(targets)):
        raise ValueError(
            "targets: expected concrete unit indices (they decide which units are read and "
            "are checked against the model before compute), got traced ones: an argument of "
            "a jax.jit / jax.shard_map / jax.vmap around maximize, or a value computed from "
            "one. Pass Python ints or a NumPy array, closed over by the jitted function rather "
            "than passed to it, or call maximize outside jax.jit / jax.shard_map; to maximize "
            "other units, split the targets across calls. seed_images and key may be traced")
    if isinstance(targets, (np.ndarray, jax.Array)):
        targets = list(np.asarray(targets).reshape(-1)) if np.ndim(targets) <= 1 else None
        if targets is None:
            raise ValueError("targets: expected a 1-D array of unit indices")
    if not np.iterable(targets) or callable(targets):
        raise TypeError(f"targets: expected unit indices (an int, a list or a 1-D array of "
                        f"ints), 'all' or Objectives (jaxsal.output_objective(k), ...), got "
                        f"{targets!r} ({type(targets).__name__})")
    targets = list(targets)
    if not targets:
        raise ValueError("targets: expected at least one target, got an empty sequence")
    if all(isinstance(t, _obj.Objective) for t in targets):
        return _obj.stack_objectives(targets)
    objs = []
    for t in targets:
        if isinstance(t, _obj.Objective):
            raise TypeError("targets: mix of Objectives and unit indices; pass one kind")
        if layer is None:
            objs.append(_obj.output_objective(t))
        elif objective == "channel":
            objs.append(_obj.channel_objective(layer, t, pre_activation=pre_activation))
        else:
            objs.append(_obj.neuron_objective(layer, t, pre_activation=pre_activation))
    return _obj.stack_objectives(objs)


# ---------------------------------------------------------------------------- the loop
def _round_sizes(hw: tuple[int, int], rounds: int, factor: float) -> list[tuple[int, int]]:
    """``(h, w)`` of every multi-scale round: ``hw / factor ** (rounds - 1 - r)``, at least 2
    pixels per axis in the smaller rounds but never more than ``hw`` (the last round is ``hw``
    itself, also for an axis of 1 pixel)."""
    sizes = []
    for r in range(rounds):
        f = factor ** (rounds - 1 - r)
        sizes.append(tuple(min(n, max(2, int(round(n / f)))) for n in hw))
    return sizes


@functools.lru_cache(maxsize=8)
def _check_round_sizes(model_key: "_ModelKey", image_shape: tuple[int, int, int], rounds: int,
                       factor: float, channels_first: bool) -> None:
    """Trace (``jax.eval_shape``, no compute) the model of ``model_key``, which takes images of
    any size, at every multi-scale round's size (:func:`_round_sizes` of ``image_shape``
    ``(H, W, C)``), the final one first, and re-raise the first ``ValueError`` (a layer that
    refuses too small an input: a ``valid`` convolution with an empty output) with the round
    and maximize's fixes. Such a round would otherwise run on a NaN objective whose gradient
    is zero, and leave no error behind. Cached (keeps up to 8 models alive, as :func:`_build`;
    :func:`jaxsal.clear_caches` frees them): a second call traces nothing."""
    m = model_key.model
    H, W, C = image_shape
    sizes = _round_sizes((H, W), rounds, factor)
    shown = (C, H, W) if channels_first else (H, W, C)
    for r in reversed(range(rounds)):
        h, w = sizes[r]
        try:
            jax.eval_shape(lambda p, x: m.apply(p, x), m.params,
                           jax.ShapeDtypeStruct((1, h, w, C), jnp.float32))
        except ValueError as e:
            if r == rounds - 1:
                raise ValueError(
                    f"maximize: image_shape {shown}: this model, which takes images of any "
                    f"size, fails on {h} x {w} images: {e}. Expected an image size the model "
                    "can process; pass a larger image_shape") from e
            raise ValueError(
                f"maximize: multi-scale round {r + 1} of {rounds} (upscaling_steps={rounds}, "
                f"upscaling_factor={factor}) runs this model, which takes images of any size, "
                f"at its own size, {h} x {w} (image_shape {shown} / {factor} ** "
                f"{rounds - 1 - r}), where it fails: {e}. Expected every round to fit the "
                f"model; pass fewer upscaling_steps ({rounds - 1 - r} or fewer start at "
                f"{sizes[r + 1][0]} x {sizes[r + 1][1]} or larger), a smaller "
                "upscaling_factor or a larger image_shape") from e


class _ModelKey:
    """A model as part of :func:`_build`'s cache key: equal to the key of any model that
    computes the same function of the same params' shapes (:func:`base.function_key`: two
    loads of one file, or the ``channels_last()`` view :func:`_prepare` makes afresh on every
    call for a channels-first model), and holding the model it was made from (the program is
    built from that one; the params are always an argument, taken from the caller's model)."""

    __slots__ = ("model", "key")

    def __init__(self, model: Any):
        self.model = model
        self.key = base.function_key(model)

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, _ModelKey) and self.key == other.key


def _option_key(v: Any) -> Any:
    """A parameterization, regularizer or transform (or a tuple of them) as part of
    :func:`_build`'s key: jaxsal's factories' :class:`~jaxsal._src.transforms.Closure` by
    their function and hyperparameters, the functions of one's own in them (a custom
    ``Regularizer``'s penalty, a transform, ``compose(my_transform)``) by
    :func:`base.callable_key`: their code and the values of the variables they read now, so
    that a function reading a variable reassigned since is traced again (``jax.jit`` would
    reuse the program that baked the old value in), as ``FunctionModel``'s functions are."""
    if isinstance(v, _tf.Closure):
        return (_tf.Closure, v.fn, tuple((k, _option_key(h)) for k, h in v.hyper))
    if isinstance(v, tuple):  # Regularizer, Parameterization (NamedTuples), tuples of them
        return (type(v), tuple(_option_key(e) for e in v))
    if callable(v):
        return base.callable_key(v)
    return _tf.typed(v)


class _OptionKey:
    """An option (parameterization, regularizers, transforms) as part of :func:`_build`'s
    cache key, by :func:`_option_key`, holding the option it was made from (the program is
    built from that one: equal keys compute the same function)."""

    __slots__ = ("value", "key")

    def __init__(self, value: Any):
        self.value = value
        self.key = _option_key(value)

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, _OptionKey) and self.key == other.key


@functools.lru_cache(maxsize=8)  # keeps models (and params) alive; _build.cache_clear() frees
def _build(model_key: _ModelKey, head: str | None, needed: tuple, needed_pre: tuple,
           need_output: bool, image_shape: tuple, rng: tuple, steps: int, rounds: int,
           factor: float, upscale_blur: float, param_key: _OptionKey, optimizer: Any,
           learning_rate: float, regularizers_key: _OptionKey, transforms_key: _OptionKey,
           unit_chunk: int, has_seed: bool, images: int, div: _obj.Diversity | None):
    """A jitted ``run(params, objective, key, seed) -> (images, scores, trajectory)``.

    Every argument is part of the cache key: the model by :class:`_ModelKey`, the
    parameterization, regularizers and transforms by :class:`_OptionKey` (jaxsal's
    factories by hyperparameters, functions of one's own by their code and the values they
    read), the other options by equality (optax transformations by identity). ``needed`` and
    ``needed_pre``:
    the layers whose outputs and pre-activation values the objectives (and ``div``) read.
    ``images``: images per unit (optimized together, ``div`` penalizing their similarity);
    with more than one, every per-image function below is vmapped over them and the results
    gain an image axis after the unit axis."""
    model = model_key.model
    param, regularizers = param_key.value, regularizers_key.value
    transforms = transforms_key.value
    m = model.with_head(head) if head is not None and hasattr(model, "with_head") else model
    lo, hi = rng
    H, W, C = image_shape
    in_shape = getattr(m, "input_shape", None)
    fixed_hw = (tuple(in_shape[:2]) if in_shape is not None and len(in_shape) == 3
                and None not in in_shape[:2] else None)
    sizes = _round_sizes((H, W), rounds, factor)
    # the step's loss, its gradient and the loss as a function of the variables go to every
    # update (as extra arguments, which other transformations ignore): L-BFGS's line search,
    # Polyak's step size and reduce_on_plateau read them
    opt = optax.with_extra_args_support(
        optimizer if optimizer is not None else optax.adam(learning_rate))
    par = param if param is not None else default_parameterization(
        "output" if need_output else "layer")
    # the default transforms are sized to each round's image (a 30-pixel first round of a
    # 224-pixel image is jittered by 2 pixels, not by the 16 of the last round)
    tfms = [transforms if transforms is not None else default_transforms(max(hw))
            for hw in sizes]
    penalties = [r.penalty for r in regularizers if r.penalty is not None]
    stepped = [r for r in regularizers if r.step is not None]
    # a one-unit (sigmoid) output has two classes, as for the attribution methods:
    # output unit 1 is the unit and 0 its complement (targets.class_scores)
    binary = need_output and _obj.binary_output(
        m, tuple(in_shape) if in_shape is not None and None not in in_shape else image_shape)
    binary_info = OutputInfo(1, *base.output_kind(m))
    out_first = need_output and _obj.output_channels_first(m, _obj.output_shape_of(
        m, None, tuple(in_shape) if in_shape is not None and None not in in_shape
        else image_shape))

    def fit(x):
        return _tf.resize(x, fixed_hw) if fixed_hw is not None else x

    def forward(params, x):
        # pre-activation values are asked for only where an objective reads them: the
        # other programs are traced as before
        pre: dict = {}
        if needed_pre:
            y, acts, pre = m.apply(params, x[None], capture=needed, capture_pre=needed_pre)
        else:
            y, acts = m.apply(params, x[None], capture=needed) if needed else (
                m.apply(params, x[None]), {})
        if isinstance(y, (list, tuple)):
            y = y[0]
        y = y[0]
        if out_first:  # a channels-first map (K, H, W): its units last, as output terms read
            y = jnp.moveaxis(y, 0, -1)
        if binary:  # (1,) -> (2,): the scores of classes 0 and 1
            y = class_scores(y[None], jnp.array([[0, 1]]), binary_info)[0]
        return y, {k: v[0] for k, v in acts.items()}, {k: v[0] for k, v in pre.items()}

    def map_shapes(acts, pre):  # a layer's pre-activation has the shape of its output
        return {**{k: v.shape for k, v in pre.items()}, **{k: v.shape for k, v in acts.items()}}

    # neuron positions are given for the maps of the returned image (untransformed, final
    # size). A model without a fixed input size runs the smaller multi-scale rounds at their
    # own size, where a layer's maps are smaller, and a transform that pads the image grows
    # them: a position is moved to the same place of the image's content in every round's
    # (transformed) maps, instead of being clamped to their edge or read in the padding
    maps_at: dict = {}

    def maps_of(hw):  # {layer: shape} of the maps of an untransformed (hw) image
        if hw not in maps_at:
            maps_at[hw] = map_shapes(*jax.eval_shape(
                lambda p, x: forward(p, fit(x))[1:], m.params,
                jax.ShapeDtypeStruct((*hw, C), jnp.float32)))
        return maps_at[hw]

    def placed(obj, acts, pre, hw, tfm):
        """``obj`` with its positions moved to these maps (``acts``, ``pre``) of the
        round's image of size ``hw`` under ``tfm`` (``None``: untransformed)."""
        if not _obj.has_positions(obj):
            return obj
        zoom = (1.0, 1.0)
        if fixed_hw is not None and tfm is not None:
            # the transformed image is resized to the model's input: a padded one's content
            # shrinks about the centre by its share of the padded image
            th, tw = jax.eval_shape(lambda x: tfm(jax.random.key(0), x),
                                    jax.ShapeDtypeStruct((*hw, C), jnp.float32)).shape[:2]
            zoom = (hw[0] / th, hw[1] / tw)
        return _obj.positions_for(obj, map_shapes(acts, pre), maps_of((H, W)),
                                  maps_of(hw), zoom)

    def score(params, obj, x):
        return score_feats(params, obj, x, (H, W), None)[0]

    def score_feats(params, obj, x, hw, tfm):  # the objective and the diversity layer's values
        y, acts, pre = forward(params, x)
        obj = placed(obj, acts, pre, hw, tfm)
        feats = None if div is None else (pre if div.pre_activation else acts)[div.layer]
        return obj(y, acts, pre), feats

    # one image per unit: the functions of one image; several: vmapped over the unit's images
    # (which share the unit's random transform at every step, as Lucid's batch does)
    each = (lambda f: f) if images == 1 else jax.vmap

    def unit(x):
        return (x - lo) / (hi - lo)

    def loss_fn(p, params, obj, key, *, tfm, hw):  # several images: (K, ...) variables
        img = each(lambda q: par.to_image(q, rng))(p)
        s, feats = each(lambda x: score_feats(params, obj, fit(tfm(key, x)), hw, tfm))(img)
        pen = sum((each(f)(unit(img)) for f in penalties), jnp.zeros_like(s))
        # several images: the mean over them, as Lucid's reduce_mean over its batch (a
        # diversity weight then means what Lucid's does, whatever K)
        loss = jnp.mean(pen - s)
        if div is not None:  # (only with several images)
            loss = loss + div.weight * _obj.diversity_penalty(feats)
        return loss, s

    def apply_steps(p, i):
        for r in stepped:
            def do(p, r=r):
                img = unit(to_image(p))
                return from_image(lo + (hi - lo) * each(r.step)(img))
            p = jax.lax.cond((i + 1) % r.every == 0, do, lambda p: p, p)
        return p

    # a seed pixel at an end of the range would start where a sigmoid is flat and barely move
    # (50 Adam steps: 2.5% of a linear model's optimum); it starts START_MARGIN inside
    margin = 0.0 if _param.reaches_ends(par) else _param.START_MARGIN * (hi - lo)

    def to_image(p):
        return each(lambda q: par.to_image(q, rng))(p)

    def from_image(img):
        return each(lambda x: par.from_image(x, rng))(img)

    def project(p):
        return each(lambda q: par.project(q, rng))(p)

    def init(key, hw):
        if images == 1:
            return par.init(key, (*hw, C), rng)
        return jax.vmap(lambda k: par.init(k, (*hw, C), rng))(jax.random.split(key, images))

    def one_unit(params, obj, key, seed):
        k_init, k_steps = jax.random.split(key)
        trajectory, p, start = [], None, 0
        for r, hw in enumerate(sizes):
            if r == 0:
                p = project(from_image(jnp.clip(each(lambda x, hw=hw: _tf.resize(x, hw))(seed),
                                                lo + margin, hi - margin))
                            if has_seed else init(k_init, hw))  # start feasible
            else:
                img = each(lambda x, hw=hw: _tf.resize(x, hw))(to_image(p))
                if upscale_blur > 0:
                    img = each(lambda x: _tf.gaussian_blur(x, upscale_blur))(img)
                p = from_image(img)

            def step(carry, i, tfm=tfms[r], hw=hw):
                p, state = carry
                def loss_of(p, k=jax.random.fold_in(k_steps, i)):
                    return loss_fn(p, params, obj, k, tfm=tfm, hw=hw)

                (loss, s), g = jax.value_and_grad(loss_of, has_aux=True)(p)
                updates, state = opt.update(g, state, p, value=loss, grad=g,
                                            value_fn=lambda q: loss_of(q)[0])
                p = project(optax.apply_updates(p, updates))
                return (apply_steps(p, i), state), s

            (p, state), traj = jax.lax.scan(step, (p, opt.init(p)),
                                            jnp.arange(start, start + steps))
            p = project(_evaluation_point(state, p))
            trajectory.append(traj)  # (steps,), or (steps, K) images
            start += steps
        img = jnp.clip(to_image(p), lo, hi)
        scores = each(lambda x: score(params, obj, fit(x)))(img)
        return img, scores, jnp.moveaxis(jnp.concatenate(trajectory), 0, -1)

    def run(params, obj, key, seed):
        many = jax.vmap(one_unit, in_axes=(None, 0, None, 0 if has_seed else None))
        T = jax.tree_util.tree_leaves(obj)[0].shape[0]
        if unit_chunk >= T:
            return many(params, obj, key, seed)
        n = -(-T // unit_chunk)
        pad_to = n * unit_chunk

        def chunked(a):
            a = jnp.concatenate([a, jnp.repeat(a[-1:], pad_to - T, axis=0)])
            return a.reshape(n, unit_chunk, *a.shape[1:])

        xs = (jax.tree_util.tree_map(chunked, obj), chunked(seed) if has_seed else None)
        out = jax.lax.map(lambda c: many(params, c[0], key, c[1]), xs)
        return jax.tree_util.tree_map(lambda a: a.reshape(pad_to, *a.shape[2:])[:T], out)

    return base.Program(run, base.compiler_options())


def _evaluation_point(state: Any, p: Any) -> Any:
    """The variables an optimizer's result is read at: a schedule-free optimizer's
    (``optax.contrib.schedule_free_adamw`` / ``_sgd`` / ``schedule_free``, also inside a
    chain) are an average that its state keeps apart from the iterate ``p`` it steps
    (``optax.contrib.schedule_free_eval_params``); any other optimizer's are ``p``."""
    free = getattr(optax.contrib, "ScheduleFreeState", None)
    found = [s for s in jax.tree_util.tree_leaves(
        state, is_leaf=lambda s: free is not None and isinstance(s, free))
        if free is not None and isinstance(s, free)]
    if len(found) != 1:  # none, or several (nested ones: no one evaluation point)
        return p
    return optax.contrib.schedule_free_eval_params(found[0], p)


def _call_it(f: Any, before: str, after: str = "") -> str:
    """The hint for a jaxsal factory given where what it builds is expected."""
    name = _tf.factory_name(f)
    if name:
        sep = "" if before.endswith("(") else "="
        return f" (the factory jaxsal.{name}; call it: {before}{sep}jaxsal.{name}(...){after})"
    return ""


def maximize(model: ModelLike, targets: Any, *, layer: str | None = None, steps: int = 200,
             input_range: Sequence[float] = (0.0, 1.0), key: ArrayLike | int = 0,
             objective: str | None = None, head: str | None = "logits",
             parameterization: _param.Parameterization | None = None,
             optimizer: optax.GradientTransformation | None = None,
             learning_rate: float = DEFAULT_LEARNING_RATE,
             regularizers: Sequence[_reg.Regularizer] | None = None,
             transforms: _tf.Transform | None = None, upscaling_steps: int = 1,
             upscaling_factor: float = 1.2, upscale_blur: float = 0.0,
             image_shape: Sequence[int] | None = None, seed_images: ArrayLike | None = None,
             unit_chunk: int | None = None, memory_budget: int | None = None,
             check_finite: bool = True, pre_activation: bool = False,
             images_per_unit: int = 1,
             diversity: _obj.Diversity | None = None) -> MaximizeResult:
    """Find, for every target unit, an input that maximizes it.

    One ``jax.jit``-compiled program: the optax update loop runs in ``lax.scan`` and is
    ``vmap``-ed over the units, each with its own image and optimizer state. Every unit sees
    the same starting noise and the same random transforms (both from ``key``), so a unit's
    image does not depend on which other units are in the call.

    A second call with the same options and shapes compiles nothing. jaxsal's
    parameterizations, regularizers and transforms compare equal when built with equal
    hyperparameters, so building them inline in every call is free; functions of your own
    among them are matched by their code and the values of the variables they read now (one
    reading a reassigned notebook variable is traced again); optimizers are matched by
    identity: build one once and reuse it.

    A channels-first model (``model.data_format``) is optimized through its
    ``channels_last()`` view; ``image_shape``, ``seed_images`` and the returned images are
    then in its own layout, ``(C, H, W)`` (draw them with
    ``jaxsal.plot.image_grid(res.images, channels_first=True)``); transforms, regularizers
    and the parameterization see ``(H, W, C)`` images.

    Args:
      model: a :class:`model_import.KerasModel` (anything with ``apply(params, x,
        capture=...)``, ``params``, ``input_shape``, ``layer(name)`` works).
      targets: unit indices (an int, a list, a 1-D array), ``"all"`` (every unit of the
        output or of ``layer``), or :class:`~jaxsal.Objective` instances of one structure
        (combinations such as ``channel_objective(l, 3) - 0.5 * output_objective(1)``).
      layer: ``None``: unit indices are output units (classes) of the model's ``head``;
        a layer name: unit indices are that layer's channels. A one-unit (sigmoid) output
        has two classes, as in the attribution methods: ``1`` is the unit and ``0`` its
        complement (``-z`` on the logits head, ``1 - p`` on a probability head), so
        ``targets="all"`` gives two images and ``scores`` are those class scores.
      steps: optimizer steps per scale (``steps * upscaling_steps`` in all).
      input_range: ``(lo, hi)``; images are kept inside it and returned inside it.
      key: a PRNG key or an int seed; the same key gives the same images.
      objective: for unit indices of ``layer``, ``"channel"`` (the default: mean of the
        feature map) or ``"neuron"`` (its centre activation); refused without ``layer`` (an
        output unit is one number) and with Objectives as targets (each names its own).
      head: the head the output units go through; ``"logits"`` by default (maximizing a
        softmax mostly minimizes the other classes); ``None`` uses the model as given.
      parameterization: :func:`~jaxsal.pixels` (default: :func:`default_parameterization`,
        which depends on whether the objective has an output term) or
        :func:`~jaxsal.fourier` (Fourier space; ImageNet's colour decorrelation for RGB, the
        identity or a ``color_matrix`` of yours for other channel counts), or custom (checked
        with ``jax.eval_shape`` before compute).
      optimizer: any ``optax.GradientTransformation``; default ``optax.adam(learning_rate)``.
        Every update gets the step's loss (``penalties - objective``, minimized) as the extra
        arguments ``value``, ``grad`` and ``value_fn`` (``optax.lbfgs()``'s line search and
        ``reduce_on_plateau`` read them; others ignore them).
        The compiled program is found again by the optimizer object's identity (optax
        transformations are fresh closures that never compare equal): build it once and pass
        the same object to every call (``opt = optax.adam(0.05)``); an
        ``optimizer=optax.adam(0.05)`` written in the call compiles the whole program again
        on every call (and, the cache holding 8 programs, evicts others). For Adam,
        ``learning_rate=`` alone needs neither.
      learning_rate: used by the default optimizer.
      regularizers: a sequence of :class:`~jaxsal.Regularizer` (``total_variation``,
        ``lp_norm``, ``l2_decay``, ``blur_every``); ``None`` -> :func:`default_regularizers`
        (``"output"`` or ``"layer"``, as for the parameterization);
        ``()`` for none.
      transforms: ``(key, image) -> image`` (``jitter``, ``random_scale``, ``random_rotate``,
        ``pad``, ``compose``, ``standard_transforms``); ``None`` ->
        :func:`default_transforms` of each multi-scale round's image size;
        ``jaxsal.identity()`` for none.
      upscaling_steps: number of scales; the first is ``image size / upscaling_factor **
        (upscaling_steps - 1)``, the last is the final size. A model without a fixed input
        size runs each at its own size: one it refuses (a ``valid`` convolution larger than
        its maps there) is refused before compute, with the round and the fixes.
      upscaling_factor: size ratio between consecutive scales.
      upscale_blur: Gaussian sigma (pixels) applied after each upscaling (0: none).
      image_shape: ``(H, W, C)`` of the images; default the model's input shape (needed when
        the model accepts any size). Images whose size differs from a fixed model input are
        resized (bilinear) before the forward pass.
      seed_images: ``(H, W, C)`` or ``(T, H, W, C)`` starting images instead of noise, of
        the images' size (``image_shape``; a seed of another size is refused), clipped into
        ``input_range``; with a parameterization that reaches its ends only at infinity (all
        but ``pixels(squash="clip")``) 1% of the range inside it, where the squash is not flat.
        With ``images_per_unit=K > 1``: ``(T, K, H, W, C)``, one start for every image (K
        equal starts would stay equal, the diversity penalty included, whose gradient is
        zero there: give each image its own, e.g. one seed plus a little noise each).

      unit_chunk: optimize at most this many units at a time (``lax.map`` over chunks),
        a positive int; the size used is the one up to it that pads the last chunk least
        (as ``chunk_size`` of the attribution methods). ``None`` (default): as many as fit
        in ``memory_budget``, each unit charged for one forward pass of one image.
      memory_budget: bytes one chunk of units may use, a positive number (default: as the
        attribution methods', a quarter of the accelerator's memory; on CPU 256 MiB,
        widened to 32 units within 2 GiB). VGG16 at 224x224, charged 340 MiB per unit,
        runs 6 units per chunk on CPU (64 of them peaked at 1.4 GB of RSS, all at once
        above 4.9 GB).
      check_finite: ``True`` (default): raise a ``ValueError`` naming the units whose image
        or score is not finite, after the run, with the step at which each one's objective
        first was not finite and the cause (a non-finite image: the ascent diverged, too
        large a learning rate, say; a finite image with a non-finite score: the model gives
        NaN there); the error keeps every unit's result as ``error.result``. ``False``:
        return them as they are (NaN rows beside the finite ones).
      pre_activation: with ``layer``, maximize the unit's values before the layer's fused
        activation (a ``Conv2D(..., activation="relu")`` before its ReLU, as Lucid's
        ``..._pre_relu`` layers): a channel whose ReLU output is zero on the starting image
        has no gradient and stays at the starting noise, its pre-activation has one. For a
        layer without a fused activation these are its outputs; a separate ``ReLU`` or
        ``Activation`` layer is refused (name the layer before it). Refused without
        ``layer`` and with Objectives as targets (``channel_objective(l, k,
        pre_activation=True)``). ``scores`` are then pre-activation values.
      images_per_unit: K, the number of images optimized for every unit (an int >= 1; Lucid's
        ``batch``). With K > 1 each unit's K images start from their own noise (from
        ``key``) and share the unit's random transforms; ``images`` are then ``(T, K, H, W,
        C)``, ``scores`` ``(T, K)`` and ``trajectory`` ``(T, K, steps * upscaling_steps)``.
        Without ``diversity`` they differ only by their start; ``seed_images`` then give one
        start per image, ``(T, K, H, W, C)``.
      diversity: :func:`~jaxsal.diversity` ``(layer, weight=...)``: a penalty on the
        similarity of each unit's K images (the cosine similarity of their Gram matrices at
        ``layer``, Lucid's ``diversity``), subtracted from the mean of their objectives
        (with K images the loss is the mean over them of ``penalties - objective``, as
        Lucid's objectives are means over its batch); needs ``images_per_unit >= 2``.

    Returns:
      :class:`MaximizeResult` with ``images (T, H, W, C)``, ``scores (T,)`` (on the returned
      images) and ``trajectory (T, steps * upscaling_steps)``.

    Example::

        m = load_keras("mnist_cnn.h5")
        res = maximize(m, range(10), input_range=(0.0, 1.0), key=0)   # one image per digit
        res = maximize(m, "all", layer="conv2d_2", steps=128)       # every filter of a layer
    """
    check_finite = check_flag(check_finite, "check_finite")  # before any compute
    run, args = _prepare(
        model, targets, layer=layer, steps=steps, input_range=input_range, key=key,
        objective=objective, head=head, parameterization=parameterization,
        optimizer=optimizer, learning_rate=learning_rate, regularizers=regularizers,
        transforms=transforms, upscaling_steps=upscaling_steps,
        upscaling_factor=upscaling_factor, upscale_blur=upscale_blur,
        image_shape=image_shape, seed_images=seed_images, unit_chunk=unit_chunk,
        memory_budget=memory_budget, pre_activation=pre_activation,
        images_per_unit=images_per_unit, diversity=diversity)
    images, scores, trajectory = run(*args)
    if is_channels_first(model, 4):  # back to the model's own layout
        images = jnp.moveaxis(images, -1, -3)
    result = MaximizeResult(images, scores, trajectory, args[1])
    if check_finite and not isinstance(images, jax.core.Tracer):  # (a caller's jit: unread)
        _check_converged(result, targets)
    return result


def _check_converged(result: MaximizeResult, targets: Any) -> None:
    """Raise if a unit's image or score is not finite, saying for each such unit at which
    step its objective first was not finite and whether its image is finite (the model or
    objective gives NaN there) or not (the ascent diverged). The error keeps every unit's
    result as ``error.result`` (the finite rows are not lost: nothing need run again)."""
    images, scores, trajectory = result.images, result.scores, result.trajectory
    finite_image = np.asarray(jnp.isfinite(images.reshape(len(images), -1)).all(1))
    # with images_per_unit > 1: a unit fails when one of its images does
    ok = np.asarray(jnp.isfinite(scores.reshape(len(scores), -1)).all(1)) & finite_image
    if ok.all():
        return
    bad = np.flatnonzero(~ok)
    shown = ", ".join(str(int(i)) for i in bad[:10]) + (", ..." if len(bad) > 10 else "")
    ids = list(targets) if isinstance(targets, (list, tuple, range)) else None
    labels = (f" (units {[int(ids[i]) for i in bad[:10]]})" if ids is not None
              and len(ids) == len(ok) and all(isinstance(t, (int, np.integer)) for t in ids)
              else "")
    steps = trajectory.shape[-1]
    nonfinite = (~np.isfinite(np.asarray(trajectory))).reshape(len(ok), -1, steps).any(1)

    def listed(rows):
        return ", ".join(str(int(i)) for i in rows[:10]) + (", ..." if len(rows) > 10 else "")

    first = "; ".join(f"position {int(i)} at step {int(np.argmax(nonfinite[i]))}"
                      if nonfinite[i].any() else f"position {int(i)} on the returned image only"
                      for i in bad[:10]) + ("; ..." if len(bad) > 10 else "")
    diverged, nan_model = bad[~finite_image[bad]], bad[finite_image[bad]]
    cause = []
    if len(diverged):
        cause.append(f"Positions {listed(diverged)} have non-finite images: the ascent "
                     "diverged; lower the learning_rate (or the optimizer's step size).")
    if len(nan_model):
        cause.append(f"Positions {listed(nan_model)} have finite images on which the objective "
                     "is not finite: the model or the objective gives NaN or infinity there, "
                     "which no learning rate fixes; check the model on such inputs.")
    error = ValueError(
        f"maximize: the ascent failed for {len(bad)} of {len(ok)} units: positions {shown}"
        f"{labels} have non-finite images or scores. Their objective was first non-finite "
        f"(of {steps} steps, counted from 0): {first}. {' '.join(cause)} "
        "Expected finite images and scores. Every unit's result is kept as this error's "
        ".result (the other rows are finite); check_finite=False returns it instead of "
        "raising")
    error.result = result
    raise error


def maximize_program(model: Any, targets: Any, **options):
    """The compiled-program form of :func:`maximize` (same arguments and defaults): returns
    ``(run, args)`` where ``run(*args)`` gives ``(images, scores, trajectory)``; ``run`` is
    jitted (a ``base.Program``), so ``run.lower(*args).compile()`` separates compilation from
    execution (used by the benchmarks)."""
    bound = inspect.signature(maximize).bind(model, targets, **options)
    bound.apply_defaults()
    bound.arguments.pop("check_finite")  # checked on the results, by maximize
    return _prepare(**bound.arguments)


def _prepare(model: Any, targets: Any, *, layer, steps, input_range, key, objective, head,
             parameterization, optimizer, learning_rate, regularizers, transforms,
             upscaling_steps, upscaling_factor, upscale_blur, image_shape, seed_images,
             unit_chunk, memory_budget, pre_activation, images_per_unit, diversity):
    """Validate the arguments of :func:`maximize` (every one given: the defaults live in
    :func:`maximize`'s signature only); return its jitted program and arguments
    ``(run, (params, objective, key, seed))``."""
    # ---- validation, before any compute
    model = base.as_model(model)  # (fn, params) too; refuses what is not a model
    if getattr(model, "num_inputs", 1) != 1:
        raise ValueError(f"maximize optimizes one input image; this model has "
                         f"{model.num_inputs} inputs ({model.input_names}). Hold the others "
                         "fixed in a wrapper, e.g. for one example meta of shape (1, D): "
                         "jaxsal.FunctionModel(lambda p, img: model.with_head('logits')"
                         ".apply(p, [img, jnp.broadcast_to(meta, (len(img), D))]), "
                         "model.params, input_shape=(H, W, C)) (a FunctionModel's outputs are "
                         "taken as logits: give it the model's logits head)")
    if _bool_input(model, 0):  # cast to bool by the model, as by Keras: a zero gradient
        name = (list(getattr(model, "input_names", None) or []) or ["its input"])[0]
        raise ValueError(
            f"maximize optimizes a float input by gradient ascent; this model's input "
            f"{name!r} is a bool InputLayer (a mask or flags), which the model casts what it "
            "is given to, as Keras does: its gradient is zero everywhere, so the images would "
            "stay at their starting noise. To maximize a float relaxation of it, save the "
            "model with a float32 keras.Input in its place (the layers after the cast then "
            "take the floats) and load that; to see which flags raise a score, use "
            "jaxsal.occlusion")
    ids_dtype = integer_input(model)
    if ids_dtype is not None:
        shape = getattr(model, "input_shape", None)
        if shape is not None and len(shape) == 3:  # integer images (raw uint8 pixels)
            try:
                info = np.iinfo(ids_dtype)
                span = f"({int(info.min)}, {int(info.max)})"
            except (TypeError, ValueError):
                span = "(lo, hi)"
            raise ValueError(
                f"maximize optimizes continuous inputs; this model takes integer images "
                f"({ids_dtype}, shape {tuple(shape)}), which it casts: no gradient. To "
                "optimize float images in the integer range, give it the model as a "
                "function of floats (its layers then compute in float, so integer "
                "arithmetic such as uint8 wrap-around is not reproduced): "
                "jaxsal.maximize(jaxsal.FunctionModel(lambda p, x: model.with_head('logits')"
                ".apply(p, x), model.params, input_shape=model.input_shape), targets, "
                f"input_range={span})")
        raise ValueError(f"maximize optimizes continuous inputs; this model takes integer "
                         f"inputs ({ids_dtype}: token ids or other codes)")
    channels_first = is_channels_first(model, 4)
    base.refuse_explicit_tree(seed_images, "seed_images")  # (vmapped over the units: JAX
    # raised "Mapped away dimension ... should be sharded the same")
    seed_shape = None if seed_images is None else tuple(np.shape(seed_images))  # as given
    if channels_first:  # optimize channels-last images; see maximize()
        if not hasattr(model, "channels_last"):
            raise ValueError("maximize optimizes channels-last images, and this "
                             f"{type(model).__name__} is channels-first: give it a function "
                             "of (N, H, W, C) images (move the axis inside it) and "
                             "data_format='channels_last'")
        model = model.channels_last()  # (image_shape is moved to (H, W, C) once checked)
        if seed_images is not None and np.ndim(seed_images) >= 3:
            seed_images = jnp.moveaxis(jnp.asarray(seed_images), -3, -1)
    rng = reals.check_interval(input_range, "input_range", where="maximize",
                               kind="the values the model's inputs take")
    steps = ints.check_int(steps, "steps", where="maximize", kind="optimizer steps")
    upscaling_steps = ints.check_int(upscaling_steps, "upscaling_steps", where="maximize")
    for name, v, above in (("upscaling_factor", upscaling_factor, True),
                           ("upscale_blur", upscale_blur, False),
                           ("learning_rate", learning_rate, True)):
        reals.check_real(v, name, low=0, above=above, where="maximize")
    if upscaling_steps > 1 and not float(upscaling_factor) > 1.0:
        raise ValueError(f"upscaling_factor: expected > 1, got {upscaling_factor}")
    if objective is not None and objective not in LAYER_OBJECTIVES:
        raise ValueError(f"objective: expected one of {LAYER_OBJECTIVES}, got {objective!r}")
    given = _objectives_given(targets)
    if given and (layer is not None or objective is not None):
        what = "layer=" if layer is not None else "objective="
        raise ValueError(f"{what} applies to unit indices; these targets are Objectives, which "
                         "name their own layer and kind (jaxsal.channel_objective(layer, k), "
                         "jaxsal.neuron_objective(layer, k)...): drop " + what)
    if layer is None and objective is not None:
        raise ValueError(f"objective={objective!r} chooses how a unit of layer= is maximized; "
                         "without layer= the targets are output units (one number each). Pass "
                         "layer=NAME to maximize a layer's channels or neurons")
    if not isinstance(pre_activation, (bool, np.bool_)):
        raise TypeError(f"pre_activation: expected a bool, got {pre_activation!r}")
    if pre_activation and given:
        raise ValueError("pre_activation=True applies to unit indices of layer=; these targets "
                         "are Objectives, which say it themselves: "
                         "jaxsal.channel_objective(layer, k, pre_activation=True)")
    if pre_activation and layer is None:
        raise ValueError("pre_activation=True maximizes a layer's values before its fused "
                         "activation; without layer= the targets are output units (the "
                         "logits head already removes the output activation). Pass "
                         "layer=NAME with the unit indices")
    objective = "channel" if objective is None else objective
    images_per_unit = ints.check_int(images_per_unit, "images_per_unit", where="maximize",
                                     kind="images optimized for every unit")
    if diversity is not None and not isinstance(diversity, _obj.Diversity):
        raise TypeError(f"diversity: expected None or jaxsal.diversity(layer, weight=...), got "
                        f"{type(diversity).__name__}"
                        + (" (the factory jaxsal.diversity; call it: diversity=jaxsal."
                           "diversity(layer, weight=...))" if diversity is _obj.diversity
                           else ""))
    if diversity is not None and images_per_unit < 2:
        raise ValueError(f"diversity compares the images of one unit; expected "
                         f"images_per_unit >= 2 with it, got images_per_unit="
                         f"{images_per_unit}. Pass images_per_unit=4 (say), or drop diversity")
    unit_chunk = ints.check_int(unit_chunk, "unit_chunk", where="maximize", allow_none=True,
                                kind="units per chunk; None: as many as fit in memory_budget")
    memory_budget = base.check_budget(memory_budget)
    if optimizer is not None and not isinstance(optimizer, optax.GradientTransformation):
        # optax.MultiSteps is a class with the transformation as a method; a factory such as
        # optax.adam or optax.contrib.reduce_on_plateau named by its public module
        name, module = getattr(optimizer, "__name__", ""), getattr(optimizer, "__module__", "")
        public = ".".join(p for p in module.split(".")[:2] if not p.startswith("_"))
        hint = ("; pass it as one: optimizer=opt.gradient_transformation() (built once and "
                "reused)" if callable(getattr(optimizer, "gradient_transformation", None))
                else f" (the factory {public}.{name}; call it: optimizer={public}.{name}(...), "
                "built once and reused)" if callable(optimizer) and name
                and module.split(".")[0] == "optax" else "")
        raise TypeError(f"optimizer: expected an optax.GradientTransformation (e.g. "
                        f"optax.adam(0.05)), got {type(optimizer).__name__}{hint}")
    if parameterization is not None and not isinstance(parameterization,
                                                       _param.Parameterization):
        raise TypeError("parameterization: expected jaxsal.pixels(...), jaxsal.fourier(...) "
                        f"or a Parameterization, got {type(parameterization).__name__}"
                        + _call_it(parameterization, "parameterization"))
    if isinstance(regularizers, _reg.Regularizer):  # a NamedTuple: tuple() gives its fields
        raise TypeError(f"regularizers: expected a sequence of Regularizers, got one "
                        f"Regularizer ({regularizers.name}); put it in a tuple: "
                        f"regularizers=({regularizers.name},)")
    regs = None if regularizers is None else tuple(regularizers)
    for r in regs or ():
        if not isinstance(r, _reg.Regularizer):
            raise TypeError(f"regularizers: expected Regularizer objects (total_variation(...), "
                            f"lp_norm(...), ...), got {type(r).__name__}"
                            + _call_it(r, "regularizers=(", ",)"))
    if transforms is not None and not callable(transforms):
        raise TypeError(f"transforms: expected a function (key, image) -> image, got "
                        f"{type(transforms).__name__}"
                        + ("; chain several with jaxsal.compose(t1, t2, ...)"
                           if isinstance(transforms, (list, tuple)) else ""))
    if any(transforms is f for f in _TRANSFORM_FACTORIES):
        raise TypeError(f"transforms: expected a transform (key, image) -> image, got the "
                        f"factory jaxsal.{transforms.__name__}; call it: "
                        f"transforms=jaxsal.{transforms.__name__}(...)")
    if layer is not None and not isinstance(layer, str):
        raise TypeError(f"layer: expected a layer name (str) or None for the output, got "
                        f"{layer!r} ({type(layer).__name__})")
    if layer is not None and hasattr(model, "resolve_layer"):
        model.resolve_layer(layer)
    if head is not None and hasattr(model, "with_head"):
        mh = model.with_head(head)  # validates the head name
    else:
        mh = model

    in_shape = getattr(model, "input_shape", None)
    if in_shape is not None and len(in_shape) != 3:
        gray = ("" if len(in_shape) != 2 else
                ". If its input is a grayscale image without a channel axis (H, W) "
                "(Input((28, 28)) and Flatten), give it one: jaxsal.FunctionModel(lambda p, x: "
                "model.with_head('logits').apply(p, x[..., 0]), model.params, "
                f"input_shape=({in_shape[0]}, {in_shape[1]}, 1)); the images then come back "
                "(T, H, W, 1). If it is a signal (L, C) (a Conv1D model), make it a one-row "
                "image: jaxsal.FunctionModel(lambda p, x: model.with_head('logits').apply(p, "
                f"x[:, 0]), model.params, input_shape=(1, {in_shape[0]}, {in_shape[1]})); the "
                "signals then come back (T, 1, L, C), jittered and penalized along L only")
        raise ValueError(f"maximize optimizes images (H, W, C); this model's input is "
                         f"{tuple(in_shape)} (signals, volumes and tabular inputs are not "
                         f"supported: its transforms and regularizers are 2-D){gray}")
    # image_shape is given in the model's own layout, and said so in messages
    dims = "(C, H, W)" if channels_first else "(H, W, C)"
    layout = f"{dims} for this channels-first model" if channels_first else dims
    if image_shape is None:
        if in_shape is None or len(in_shape) != 3 or None in in_shape:
            own = (None if in_shape is None or not channels_first or len(in_shape) != 3
                   else (in_shape[2], *in_shape[:2]))  # the channels-last view's, moved back
            raise ValueError(f"image_shape: the model's input shape is "
                             f"{in_shape if own is None else own}; pass image_shape={dims} for "
                             "the images to optimize")
        image_shape = tuple(int(d) for d in in_shape)
    else:
        given, image_shape = image_shape, base.int_sizes(image_shape)
        if image_shape is None:
            ints_hint = ("(int(C), int(H), int(W))" if channels_first
                         else "(int(H), int(W), int(C))")
            raise ValueError(f"image_shape: expected {layout} as three ints, got {given!r}"
                             f"{base.not_sizes(given, ints_hint)}")
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"image_shape: expected {layout}, got {image_shape}")
        shown = image_shape
        if channels_first:  # optimized channels-last
            image_shape = (*image_shape[1:], image_shape[0])
        if in_shape is not None and len(in_shape) == 3 and in_shape[2] is not None \
                and in_shape[2] != image_shape[2]:
            raise ValueError(f"image_shape: the model expects {in_shape[2]} channels, got "
                             f"image_shape={shown}; expected {layout}")

    if parameterization is not None:  # a colour matrix for other channels, a custom one's bug
        _param.check_parameterization(parameterization, image_shape, rng)

    fit_shape = image_shape
    if in_shape is not None and len(in_shape) == 3 and None not in in_shape:
        fit_shape = tuple(in_shape)  # images are resized to a fixed model input
    else:  # every multi-scale round runs the model at its own size: each must fit it
        _check_round_sizes(_ModelKey(mh), image_shape, int(upscaling_steps),
                           float(upscaling_factor), bool(channels_first))
    obj = _as_objective(mh, targets, layer, objective, fit_shape, bool(pre_activation))
    if any(l is None for l in obj.layers):  # output units: the outputs need a batch axis
        check_per_example(mh, jax.ShapeDtypeStruct((1, *fit_shape), jnp.float32),
                          mixing=False)
    _obj.validate_objective(obj, mh, fit_shape)
    if hasattr(mh, "resolve_layer"):  # one name per layer: its path ("conv" and "inner/conv"
        # are one layer of a nested model, captured once under one name)
        obj = obj._replace(layers=tuple(l if l is None else mh.resolve_layer(l)
                                        for l in obj.layers))
    T = int(jax.tree_util.tree_leaves(obj)[0].shape[0])
    needed, needed_pre = obj.needed_layers, obj.needed_pre_layers
    if diversity is not None:  # its layer, by the name the model resolves, is captured too
        d_layer = diversity.layer
        if hasattr(mh, "resolve_layer"):
            d_layer = mh.resolve_layer(d_layer)
        _obj.validate_objective(_obj.stack_objectives([_obj.channel_objective(
            d_layer, 0, pre_activation=diversity.pre_activation)]), mh, fit_shape)
        diversity = diversity._replace(layer=d_layer)
        if diversity.pre_activation:
            needed_pre = tuple(dict.fromkeys((*needed_pre, d_layer)))
        else:
            needed = tuple(dict.fromkeys((*needed, d_layer)))

    key = base.check_key(key, "maximize")
    has_seed = seed_images is not None
    seed = None
    if has_seed:
        seed = jnp.asarray(seed_images, jnp.float32)
        # (traced inside a caller's jit / shard_map: not checked, as the results are not)
        if not isinstance(seed, jax.core.Tracer) and not bool(jnp.isfinite(seed).all()):
            raise ValueError("seed_images contains NaN or infinite values; the images would be "
                             "NaN. Pass finite starting images (np.nan_to_num)")
        h, w, c = image_shape
        one = (c, h, w) if channels_first else (h, w, c)
        K = images_per_unit
        if K > 1 and (seed.ndim != 5 or tuple(seed.shape[:2]) != (T, K)
                      or tuple(seed.shape[2:]) != image_shape):
            raise ValueError(
                f"seed_images: with images_per_unit={K} expected one start per image, "
                f"{(T, K, *one)} (units x images_per_unit x image), got {seed_shape}. Equal "
                f"starts would stay equal (the diversity penalty's gradient is zero there): "
                f"give each image its own, e.g. from one seed x, jnp.clip(x + 0.05 * "
                f"jax.random.normal(key, {(T, K, *one)}), lo, hi)")
        if seed.ndim == 3:
            seed = jnp.broadcast_to(seed, (T, *seed.shape))
        if K == 1 and (seed.ndim != 4 or seed.shape[0] != T
                       or tuple(seed.shape[1:]) != image_shape):
            raise ValueError(f"seed_images: expected {one} (one start for every unit) or "
                             f"{(T, *one)} (one per unit: {T}), got {seed_shape}. A seed of "
                             f"another size is not resized: resize it first, e.g. "
                             f"jax.image.resize(seed, seed.shape[:-3] + {one}, 'linear') "
                             "(its leading axes kept), or pass image_shape= for images of "
                             "the seed's size")
        seed = jnp.clip(seed, *rng)

    if regs is None:
        regs = default_regularizers("output" if any(l is None for l in obj.layers) else "layer")
    # every unit optimizes its own image: charged one forward pass of one image (its VJP's
    # residuals on an accelerator), as a target of the attribution methods is
    per_unit = 1 if unit_chunk is not None else images_per_unit * base.forward_bytes(
        mh, jax.ShapeDtypeStruct((1, *fit_shape), jnp.float32))
    unit_chunk = base.chunk_for(T, per_unit, unit_chunk, memory_budget, rows=1)
    run = _build(_ModelKey(model), head if hasattr(model, "with_head") else None,
                 needed, needed_pre,
                 any(l is None for l in obj.layers), image_shape, rng, int(steps),
                 int(upscaling_steps), float(upscaling_factor), float(upscale_blur),
                 _OptionKey(parameterization), optimizer, float(learning_rate),
                 _OptionKey(regs), _OptionKey(transforms), int(unit_chunk), has_seed,
                 images_per_unit, diversity)
    # the params of this call's model (the cached program may come from an equal model)
    return run, (mh.params, obj, key, seed)
