"""The rules of layer-wise relevance propagation, and which layer gets which.

Montavon, Binder, Lapuschkin, Samek & Müller (2019), "Layer-Wise Relevance Propagation: An
Overview" (epsilon, gamma, z-beta (``zbox``), w^2, flat rules; composites: one rule for the
upper, middle and lower layers); Bach et al. (2015) (alpha-beta); Montavon et al. (2017),
"Explaining nonlinear classification decisions with deep Taylor decomposition" (z-plus,
z-beta); Lapuschkin et al. (2019), "Unmasking Clever Hans predictors" (flat). The
definitions are zennit's (the LRP authors' PyTorch library), which extend the gamma, alpha-beta
and z-plus rules to inputs of either sign.

A rule maps the relevance ``R`` on a layer's output ``z = f(a)`` to its input. Every rule
here is one formula: a weighted sum of *terms*, each the layer evaluated with modified
inputs ``a_t`` and modified weights ``theta_t``, grouped so that each group shares a
denominator::

    z_g = sum_t s_t f(a_t; theta_t)                       (one per group)
    R_a = sum_g c_g sum_t s_t a_t * J_{f(.; theta_t)}^T (m_g(z) R / stab(z_g))

with ``stab(z) = z + epsilon * sign(z)`` (``sign(0) = 1``), term signs ``s_t``, group
weights ``c_g`` and masks ``m_g`` on the true output. A rule layer's call is then a
``jax.custom_vjp`` whose forward pass is the layer's own and whose backward pass is that
formula (:class:`LayerRules`, installed as the model's ``Runtime.layer_rule``).

Weights are the layer's kernels (the parameters named ``kernel``, ``depthwise_kernel``,
``pointwise_kernel``: convolutions of every kind, ``Dense``, ``EinsumDense``) and its
``bias``. The rules that change weights (:func:`lrp_gamma`, :func:`lrp_alpha_beta`,
:func:`lrp_zplus`, :func:`lrp_zbox`, :func:`lrp_wsquare`, :func:`lrp_flat`) apply the epsilon
rule, with their own ``epsilon``, to rule layers that have no kernel (``BatchNormalization``,
poolings, ``Add``/``Average``), as Captum's weight-changing rules do on modules without a
``weight``. Products of tensors (``Multiply``, ``x * y``, ``matmul``) take
:func:`lrp_uniform` whatever rule reaches them unnamed (Achtibat et al. 2024).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import base, reals
from jaxsal._src.backward import with_backward
from jaxsal._src.validate import check_not_per_channel

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


# ----------------------------------------------------------------------------- weights
def _is_kernel(key: str) -> bool:
    return key.endswith("kernel")


def _leaf_name(path) -> str:
    last = path[-1] if path else None
    return str(getattr(last, "key", getattr(last, "name", "")))


def has_kernel(params: Any) -> bool:
    """Whether a layer's parameters hold a kernel (the weights the rules change)."""
    return any(_is_kernel(_leaf_name(p))
               for p, _ in jax.tree_util.tree_flatten_with_path(params)[0])


def _modify(params: Any, kernel: Callable | None, bias: Callable | None) -> Any:
    """``params`` with every kernel mapped by ``kernel`` and every bias by ``bias``
    (``None``: unchanged)."""
    def one(path, v):
        name = _leaf_name(path)
        if kernel is not None and _is_kernel(name):
            return kernel(v)
        if bias is not None and name == "bias":
            return bias(v)
        return v

    return jax.tree_util.tree_map_with_path(one, params)


def _pos(v):
    return jnp.maximum(v, 0)


def _neg(v):
    return jnp.minimum(v, 0)


def _ones(v):
    return jnp.ones_like(v)


def _zeros(v):
    return jnp.zeros_like(v)


def _square(v):
    return v * v


@dataclasses.dataclass(frozen=True)
class _Term:
    inputs: Callable[[Array], Array] | None  # each input array -> a_t (None: unchanged)
    kernel: Callable | None = None  # kernel -> its modified value (None: unchanged)
    bias: Callable | None = None
    sign: float = 1.0


@dataclasses.dataclass(frozen=True)
class _Group:
    terms: tuple[_Term, ...]
    weight: float = 1.0
    mask: Callable[[Array], Array] | None = None  # the true output z -> where it applies


def stabilize(z: Array, epsilon: float) -> Array:
    """``z + epsilon * sign(z)`` with ``sign(0) = 1``."""
    return z + epsilon * jnp.where(z >= 0, 1.0, -1.0).astype(z.dtype)


def _propagate(f: Callable, params: Any, args: tuple, z: Array, r: Array,
               groups: Sequence[_Group], epsilon: float) -> tuple:
    total = None
    for group in groups:
        runs = []
        for t in group.terms:
            a_t = args if t.inputs is None else jax.tree_util.tree_map(t.inputs, args)
            p_t = _modify(params, t.kernel, t.bias)
            runs.append((t, a_t, lambda *a, p_t=p_t: f(p_t, *a)))
        z_g = sum(t.sign * g(*a_t) for t, a_t, g in runs)
        s = r / stabilize(z_g, epsilon)
        if group.mask is not None:
            s = jnp.where(group.mask(z), s, 0).astype(s.dtype)
        s = group.weight * s
        for t, a_t, g in runs:
            grads = jax.vjp(g, *a_t)[1](s)
            share = jax.tree_util.tree_map(lambda a, d, c=t.sign: c * a * d, a_t, grads)
            total = share if total is None else jax.tree_util.tree_map(jnp.add, total, share)
    return total


# ----------------------------------------------------------------------------- rules
@dataclasses.dataclass(frozen=True)
class LRPRule:
    """One LRP rule (made by :func:`lrp_epsilon`, :func:`lrp_gamma`, ...): a frozen value,
    compared by its fields, that maps the relevance on a layer's output to its inputs.

    Every rule's ``epsilon`` (a float > 0, default 1e-9) is the stabilizer of its
    denominators, ``stab(z) = z + epsilon * sign(z)``; a rule that changes weights (gamma,
    alpha-beta, z-plus, z-box, w^2, flat) applies the epsilon rule with it to the rule layers
    that have no kernel (see the module)."""

    epsilon: float = 1e-9
    #: rules that change weights fall back to the epsilon rule on layers without a kernel
    changes_weights: ClassVar[bool] = True

    def _groups(self, args: tuple) -> tuple[_Group, ...]:
        raise NotImplementedError

    def forward(self, f: Callable, params: Any, args: tuple) -> Array:
        """The layer's output ``f(params, *args)``: its own call (a rule changes only the
        backward pass)."""
        return f(params, *args)

    def relevance(self, f: Callable, params: Any, args: tuple, z: Array, r: Array) -> tuple:
        """The relevance of each of ``args`` (a tuple, structured as ``args``) given the
        relevance ``r`` on ``z = f(params, *args)``."""
        if self.changes_weights and not has_kernel(params):
            return Epsilon(self.epsilon).relevance(f, params, args, z, r)
        return _propagate(f, params, args, z, r, self._groups(args), self.epsilon)


_EPSILON_GROUPS = (_Group((_Term(None),)),)


@dataclasses.dataclass(frozen=True)
class Epsilon(LRPRule):
    changes_weights: ClassVar[bool] = False

    def _groups(self, args):
        return _EPSILON_GROUPS


@dataclasses.dataclass(frozen=True)
class Gamma(LRPRule):
    gamma: float = 0.25

    def _groups(self, args):
        g = self.gamma

        def up(v):  # the weights of the contributions that have the output's sign, boosted
            return v + g * _pos(v)

        def down(v):
            return v + g * _neg(v)

        return (_Group((_Term(_pos, up, up), _Term(_neg, down, _zeros)), mask=lambda z: z > 0),
                _Group((_Term(_pos, down, down), _Term(_neg, up, _zeros)),
                       mask=lambda z: z < 0))


@dataclasses.dataclass(frozen=True)
class AlphaBeta(LRPRule):
    alpha: float = 2.0
    beta: float = 1.0

    def _groups(self, args):
        positive = _Group((_Term(_pos, _pos, _pos), _Term(_neg, _neg, _zeros)), self.alpha)
        if self.beta == 0:
            return (positive,)
        return (positive,
                _Group((_Term(_pos, _neg, _neg), _Term(_neg, _pos, _zeros)), -self.beta))


def _as_tuple(v: Any) -> Any:
    v = np.asarray(v, np.float32)
    return float(v) if v.ndim == 0 else tuple(_as_tuple(e) for e in v)


@dataclasses.dataclass(frozen=True)
class ZBox(LRPRule):
    low: Any = 0.0  # a float or nested tuples (hashable), see lrp_zbox
    high: Any = 1.0
    # whether the layer's input is channels-first (set by layer_rules, per layer): there a
    # (C,) bound that NumPy would use per column is refused (check_not_per_channel)
    channels_first: bool = False

    def _groups(self, args):
        low, high = np.asarray(self.low, np.float32), np.asarray(self.high, np.float32)

        def bound(b, name):
            def fill(a):
                if self.channels_first:
                    try:
                        check_not_per_channel(tuple(b.shape), tuple(a.shape), name,
                                              "the layer's input",
                                              layout="the layer's data_format")
                    except ValueError as e:
                        raise ValueError(f"lrp_zbox: {e}") from None
                try:
                    # (plus zeros of a: varying over the mesh axes a varies over under
                    # jax.shard_map, as the rule's VJP expects of its output)
                    return jnp.broadcast_to(jnp.asarray(b, a.dtype), a.shape) + jnp.zeros_like(a)
                except ValueError:
                    raise ValueError(
                        f"lrp_zbox: expected low and high broadcastable to the layer's input "
                        f"{a.shape[1:]} without the batch axis (a float, or one value per "
                        f"channel shaped to broadcast, e.g. (C,) channels-last or (C, 1, 1) "
                        f"channels-first), got shape {b.shape}") from None
            return fill

        return (_Group((_Term(None), _Term(bound(low, "low"), _pos, _pos, -1.0),
                        _Term(bound(high, "high"), _neg, _neg, -1.0))),)


@dataclasses.dataclass(frozen=True)
class WSquare(LRPRule):
    def _groups(self, args):
        return (_Group((_Term(_ones, _square, _zeros),)),)


@dataclasses.dataclass(frozen=True)
class Flat(LRPRule):
    def _groups(self, args):
        return (_Group((_Term(_ones, _ones, _zeros),)),)


@dataclasses.dataclass(frozen=True)
class Pass(LRPRule):
    changes_weights: ClassVar[bool] = False

    def relevance(self, f, params, args, z, r):
        if len(args) != 1 or not hasattr(args[0], "shape") or args[0].shape != z.shape:
            shapes = jax.tree_util.tree_map(lambda a: getattr(a, "shape", a), args)
            raise ValueError(
                f"lrp_pass: expected a layer with one input of its output's shape {z.shape} "
                f"(BatchNormalization, a same-size pooling), got inputs {shapes}; give this "
                "layer another rule")
        return (r,)


@dataclasses.dataclass(frozen=True)
class Uniform(LRPRule):
    changes_weights: ClassVar[bool] = False

    def _groups(self, args):
        return (_Group((_Term(None),), weight=1.0 / len(jax.tree_util.tree_leaves(args))),)


@dataclasses.dataclass(frozen=True)
class SignalTakeAll(LRPRule):
    signal: int = 0
    changes_weights: ClassVar[bool] = False

    def relevance(self, f, params, args, z, r):
        leaves, tree = jax.tree_util.tree_flatten(args)
        if not -len(leaves) <= self.signal < len(leaves):
            raise ValueError(f"lrp_signal_take_all: signal={self.signal} names no factor of a "
                             f"product of {len(leaves)} tensors; expected 0 to "
                             f"{len(leaves) - 1}, in the layer's argument order")
        i = self.signal % len(leaves)

        def g(v):  # the product as a function of its signal, the gates held
            return f(params, *jax.tree_util.tree_unflatten(
                tree, [v if j == i else leaf for j, leaf in enumerate(leaves)]))

        share = _propagate(lambda p, v: g(v), params, (leaves[i],), z, r, _EPSILON_GROUPS,
                           self.epsilon)[0]
        return jax.tree_util.tree_unflatten(
            tree, [share if j == i else jnp.zeros_like(leaf) for j, leaf in enumerate(leaves)])


def _check(where: str, name: str, value: Any, what: str, above: bool = False) -> float:
    return reals.check_real(value, name, low=0, above=above, where=where,
                            kind="a finite number" + (f": {what}" if what else ""))


def check_epsilon(epsilon: Any, who: str) -> float:
    """``epsilon`` as a float, or a ``ValueError`` naming ``who`` (a rule or ``lrp``)."""
    return _check(who, "epsilon", epsilon, "the stabilizer added to each output that is "
                  "divided by, which keeps a zero output from dividing by zero: 1e-9 is "
                  "Captum's default, 1e-6 zennit's; values of the order of the activations, "
                  "such as 0.25, absorb weak contributions", above=True)


def lrp_epsilon(epsilon: float = 1e-9) -> LRPRule:
    """The epsilon rule (LRP-epsilon; LRP-0 as ``epsilon -> 0``): ``R_a = a * J^T (R / stab(z))``.
    ``epsilon`` of the order of the activations (0.25) absorbs weak, contradictory
    contributions: Montavon et al.'s rule for the middle layers."""
    return Epsilon(check_epsilon(epsilon, "lrp_epsilon"))


def lrp_gamma(gamma: float = 0.25, epsilon: float = 1e-9) -> LRPRule:
    """The gamma rule (Montavon et al. 2019, lower layers): positive contributions weighted
    ``1 + gamma`` (weights and bias ``theta + gamma * max(theta, 0)``), as zennit's ``Gamma``:
    where the output is negative the negative contributions are the boosted ones, and a
    negative input's contributions count with its sign. On non-negative inputs (after a
    ReLU) and a positive output this is the rule of the paper; ``gamma -> inf`` tends to
    z-plus, ``gamma = 0`` is LRP-0. ``epsilon``: the stabilizer (:class:`LRPRule`)."""
    return Gamma(check_epsilon(epsilon, "lrp_gamma"),
                 _check("lrp_gamma", "gamma", gamma, "0.25 is the usual value; 0 gives the "
                        "epsilon rule"))


def lrp_alpha_beta(alpha: float = 2.0, beta: float = 1.0, epsilon: float = 1e-9) -> LRPRule:
    """The alpha-beta rule (Bach et al. 2015): the positive contributions ``(a w)^+`` (bias
    ``b^+``) share ``alpha R``, the negative ones ``(a w)^-`` (bias ``b^-``) take
    ``-beta R``, each in proportion to its size. ``alpha - beta = 1`` keeps the relevance's
    total (zennit requires it; so does jaxsal, to float32's rounding: float32 values such as
    ``np.float32(1.1), np.float32(0.1)`` pass). ``alpha=1, beta=0`` is :func:`lrp_zplus`.
    ``epsilon``: the stabilizer (:class:`LRPRule`)."""
    a = _check("lrp_alpha_beta", "alpha", alpha, "")
    b = _check("lrp_alpha_beta", "beta", beta, "")
    # within float32's rounding: np.float32(1.1) - np.float32(0.1) is 1 in float32, 2.2e-8
    # from it once widened to float64
    if abs(a - b - 1) > 4 * float(np.finfo(np.float32).eps) * max(1.0, a):
        raise ValueError(f"lrp_alpha_beta: expected alpha - beta = 1 (the relevance's total is "
                         f"kept; the usual choices are (1, 0) and (2, 1)), got alpha={alpha!r}, "
                         f"beta={beta!r}")
    return AlphaBeta(check_epsilon(epsilon, "lrp_alpha_beta"), a, b)


def lrp_zplus(epsilon: float = 1e-9) -> LRPRule:
    """The z-plus rule (deep Taylor decomposition; Captum's ``Alpha1_Beta0_Rule``): only
    positive contributions, ``R_a = (a w)^+ / sum (a w)^+ * R`` (the bias's positive part in
    the sum); ``lrp_alpha_beta(1, 0)``. ``epsilon``: the stabilizer (:class:`LRPRule`)."""
    return AlphaBeta(check_epsilon(epsilon, "lrp_zplus"), 1.0, 0.0)


def lrp_zbox(low: ArrayLike, high: ArrayLike, epsilon: float = 1e-9) -> LRPRule:
    """The z-beta rule for the first layer, on inputs bounded by ``low <= x <= high``
    (Montavon et al. 2017): ``R_x = (x w - l w^+ - h w^-) / sum (x w - l w^+ - h w^-) * R``.

    Args:
      low, high: the smallest and largest values the input can take: floats, or per-channel
        values shaped to broadcast against one example (``(C,)`` channels-last,
        ``(C, 1, 1)`` channels-first): for images normalized per channel, ``(0 - mean) /
        std`` and ``(1 - mean) / std``. At a channels-first layer, ``(C,)`` where the
        input's last axis also has ``C`` elements is refused as ambiguous (NumPy would use
        it per column).
      epsilon: the stabilizer (:class:`LRPRule`).
    """
    base.refuse_explicit_tree(low, "low")
    base.refuse_explicit_tree(high, "high")
    lo, hi = np.asarray(low, np.float32), np.asarray(high, np.float32)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ValueError(f"lrp_zbox: expected finite low and high, got {low!r}, {high!r}")
    try:
        bad = np.any(np.broadcast_arrays(lo, hi)[0] > np.broadcast_arrays(lo, hi)[1])
    except ValueError:
        raise ValueError(f"lrp_zbox: low {lo.shape} and high {hi.shape} do not broadcast "
                         "together") from None
    if bad:
        raise ValueError("lrp_zbox: expected low <= high everywhere (the input's bounds)")
    return ZBox(check_epsilon(epsilon, "lrp_zbox"), _as_tuple(lo), _as_tuple(hi))


def lrp_wsquare(epsilon: float = 1e-9) -> LRPRule:
    """The w^2 rule (first layer, unbounded inputs): ``R_x`` proportional to ``w^2``,
    independent of the input's value (bias ignored).
    ``epsilon``: the stabilizer (:class:`LRPRule`)."""
    return WSquare(check_epsilon(epsilon, "lrp_wsquare"))


def lrp_flat(epsilon: float = 1e-9) -> LRPRule:
    """The flat rule: the relevance spread evenly over each output's receptive field,
    independent of input and weights (bias ignored).
    ``epsilon``: the stabilizer (:class:`LRPRule`)."""
    return Flat(check_epsilon(epsilon, "lrp_flat"))


def lrp_uniform(epsilon: float = 1e-9) -> LRPRule:
    """The uniform rule for a product of ``n`` tensors (Achtibat et al. 2024, "AttnLRP:
    Attention-Aware Layer-Wise Relevance Propagation for Transformers"): each factor gets
    ``1/n`` of the relevance, spread over its elements by the epsilon rule (``a * J^T (R /
    (n stab(z)))``: for ``z = x * y``, ``R_x = R_y = R / 2``; for a matrix product, each
    term of each sum its share). The rule every product of tensors gets by default
    (``Multiply``, ``Dot``, ``x * y`` and ``matmul`` operations): a product is homogeneous
    of degree one in each factor, so the epsilon rule would give every factor the whole
    relevance. ``epsilon``: the stabilizer (:class:`LRPRule`)."""
    return Uniform(check_epsilon(epsilon, "lrp_uniform"))


def lrp_signal_take_all(signal: int = 0, epsilon: float = 1e-9) -> LRPRule:
    """The signal-take-all rule for a product ``signal * gate`` (Arras et al. 2017,
    "Explaining Recurrent Neural Network Predictions in Sentiment Analysis"): the signal (the
    factor at position ``signal`` in the layer's arguments, ``Multiply()([x, gate])``: 0)
    receives the whole relevance, the gates none, as if they were constants (a
    squeeze-excitation's gate, a GLU's sigmoid half). For products only, named per layer or
    class: ``rule={"block_se_excite": jaxsal.lrp_signal_take_all(0)}``.
    ``epsilon``: the stabilizer (:class:`LRPRule`)."""
    if isinstance(signal, bool) or not isinstance(signal, (int, np.integer)):
        raise ValueError(f"lrp_signal_take_all: expected signal an int (the position of the "
                         f"signal among the product's factors), got {signal!r}")
    return SignalTakeAll(check_epsilon(epsilon, "lrp_signal_take_all"), int(signal))


def lrp_pass() -> LRPRule:
    """Relevance passed on unchanged, for a one-input layer that keeps its input's shape
    (``BatchNormalization``: as if it were folded into the layer before it)."""
    return Pass()


# ----------------------------------------------------------------------------- which layer
CONV_CLASSES = ("Conv", "Convolution")  # every class name containing these
DENSE_CLASSES = ("Dense", "EinsumDense")


def wrapped_layer(spec: Any) -> tuple[str, Mapping[str, Any]]:
    """The class name and config of the layer whose rule ``spec`` (a ``LayerSpec`` or
    ``LayerInfo``) takes: its own, or for a ``TimeDistributed`` layer the wrapped layer's
    (the wrapper applies that layer's call to every step, its params are that layer's)."""
    cls, cfg = spec.class_name, spec.config or {}
    while cls == "TimeDistributed" and isinstance(cfg.get("layer"), Mapping):
        cls, cfg = cfg["layer"].get("class_name", cls), cfg["layer"].get("config") or {}
    return cls, cfg


def effective_class(spec: Any) -> str:
    """The class name that sets a layer's (``spec``: a ``LayerSpec`` or ``LayerInfo``) role,
    default rule and class key: ``Conv2D`` for ``TimeDistributed(Conv2D)``
    (:func:`wrapped_layer`)."""
    return wrapped_layer(spec)[0]


@dataclasses.dataclass(frozen=True)
class LRPComposite:
    """Which rule each rule layer gets (made by :func:`lrp_composite`)."""

    first: LRPRule | None = None
    conv: LRPRule | None = None
    dense: LRPRule | None = None
    other: LRPRule | None = None
    layers: tuple[tuple[str, LRPRule], ...] = ()


def _check_rule(where: str, rule: Any) -> None:
    if rule is not None and not isinstance(rule, LRPRule):
        raise TypeError(f"{where}: expected an LRP rule (jaxsal.lrp_epsilon(), lrp_gamma(), "
                        f"lrp_zplus(), ...) or None, got {type(rule).__name__}")


def lrp_composite(*, first: LRPRule | None = None, conv: LRPRule | None = None,
                  dense: LRPRule | None = None, other: LRPRule | None = None,
                  layers: Mapping[str, LRPRule] | None = None) -> LRPComposite:
    """A rule per layer, by role (Montavon et al. 2019's composite LRP; zennit's composites).

    Args:
      first: the layers with a kernel that read a model input, directly or through layers
        that only move or prepare it (reshaping, cropping, ``Rescaling``, ``Normalization``,
        zero padding): every convolution of a stem that reads the image more than once, the
        first layer of each input; and the first layer with a kernel in call order in any
        case (:func:`lrp_zbox`, :func:`lrp_flat` or :func:`lrp_wsquare`).
      conv: the other convolutions (every class whose name contains ``Conv``).
      dense: ``Dense`` and ``EinsumDense`` layers.
      other: the remaining rule layers (``BatchNormalization``, poolings, sums of tensors;
        products of tensors take :func:`lrp_uniform` unless named in ``layers``).
      layers: ``{layer name or Keras class name: rule}``, over all of the above (a layer's
        name before its class).
    Roles left ``None`` get ``lrp``'s ``epsilon`` rule. zennit's composites, for example:
    ``EpsilonGammaBox`` is ``lrp_composite(first=lrp_zbox(low, high), conv=lrp_gamma(),
    dense=lrp_epsilon(1e-6))``; ``EpsilonPlus`` is ``lrp_composite(conv=lrp_zplus(),
    dense=lrp_epsilon(1e-6))``; ``EpsilonPlusFlat`` adds ``first=lrp_flat()``;
    ``EpsilonAlpha2Beta1`` uses ``conv=lrp_alpha_beta(2, 1)``.
    """
    for name, rule in (("first", first), ("conv", conv), ("dense", dense), ("other", other)):
        _check_rule(f"lrp_composite({name}=)", rule)
    items = tuple((layers or {}).items())
    for key, rule in items:
        if not isinstance(key, str):
            raise TypeError(f"lrp_composite(layers=): expected layer or class names as keys, "
                            f"got {key!r}")
        _check_rule(f"lrp_composite(layers={{{key!r}: ...}})", rule)
        if rule is None:
            raise TypeError(f"lrp_composite(layers=): layer {key!r} maps to None; leave it out")
    return LRPComposite(first, conv, dense, other, items)


#: Elementwise preprocessing layers (``x * scale + offset``, ``(x - mean) / std``): relevance
#: passes them unchanged unless a rule names them (their gradient would rescale it).
PREPROCESSING = ("Rescaling", "Normalization")

#: Layers whose kernels also set the weights they mix their inputs with (attention
#: queries and keys): the rules that change weights give them the epsilon rule instead.
ATTENTION = ("MultiHeadAttention", "GroupQueryAttention", "GroupedQueryAttention",
             "Attention", "AdditiveAttention")

#: ``lrp(rule=name)``: zennit's composites that need no input bounds, their dense layers'
#: epsilon being ``lrp``'s ``epsilon``.
PRESETS = ("epsilon_plus", "epsilon_plus_flat", "epsilon_alpha2_beta1")


def preset(name: str, epsilon: float) -> LRPComposite:
    """A composite by name (:data:`PRESETS`): convolutions z-plus (``"epsilon_plus"``; with
    the flat rule on the first layer, ``"epsilon_plus_flat"``) or alpha-beta (2, 1)
    (``"epsilon_alpha2_beta1"``), dense layers the epsilon rule with ``epsilon``."""
    dense = Epsilon(epsilon)
    if name == "epsilon_plus":
        return lrp_composite(conv=lrp_zplus(), dense=dense)
    if name == "epsilon_plus_flat":
        return lrp_composite(first=lrp_flat(), conv=lrp_zplus(), dense=dense)
    if name == "epsilon_alpha2_beta1":
        return lrp_composite(conv=lrp_alpha_beta(2.0, 1.0), dense=dense)
    raise ValueError(f"lrp: unknown rule {name!r}; expected one of {PRESETS} (zennit's "
                     f"composites), an LRP rule (jaxsal.lrp_gamma(), ...), a "
                     f"jaxsal.lrp_composite(...) or a dict of layer or class names to rules")


@dataclasses.dataclass(frozen=True)
class LayerRules:
    """The rules installed as a model's ``Runtime.layer_rule``: ``default`` for every rule
    layer not in ``by_layer`` (``(layer path, rule)`` pairs). Compared by value."""

    default: LRPRule
    by_layer: tuple[tuple[str, LRPRule], ...] = ()

    def rule_for(self, name: str | None, product: bool = False) -> LRPRule:
        if name is None:  # a step inside a layer (Runtime.rule: an RNN cell's)
            return Uniform(self.default.epsilon) if product else Epsilon(self.default.epsilon)
        for path, rule in self.by_layer:
            if path == name:
                return rule
        return self.default

    def __call__(self, f: Callable[..., Array], params: Any, *args: Any, name: str | None,
                 product: bool = False) -> Array:
        rule = self.rule_for(name, product)
        if not isinstance(jax.eval_shape(lambda *a: f(params, *a), *args),
                          jax.ShapeDtypeStruct):  # several outputs (attention scores too)
            return f(params, *args)

        def relevance(p, a, z, r):
            try:
                return rule.relevance(f, p, a, z, r)
            except ValueError as e:  # a rule that does not fit the layer: say which one
                if name is None or str(e).startswith("lrp: layer "):
                    raise
                raise ValueError(f"lrp: layer {name!r}: {e}") from e

        return with_backward(lambda p, *a: rule.forward(f, p, a), relevance, params, args)


def layer_rules(model: Any, rule: Any, epsilon: float,
                fixed: Mapping[str, LRPRule] | None = None) -> LayerRules:
    """``rule`` (``None``, an :class:`LRPRule`, an :class:`LRPComposite` or a dict of layer
    or class names to rules) resolved against ``model``'s rule layers; ``fixed``: ``{path:
    rule}`` that no ``rule`` may name (folded batch norms)."""
    fixed = dict(fixed or {})
    default = Epsilon(epsilon)
    if rule is None or isinstance(rule, LRPRule):
        everywhere = default if rule is None else rule
        for path in model.relevance_layers:
            r = _with_layout(model, path, _unnamed(model._spec(path), everywhere))
            if path not in fixed and r != everywhere:
                fixed[path] = r
        return LayerRules(everywhere, tuple(sorted(fixed.items())))
    if isinstance(rule, str):
        rule = preset(rule, epsilon)
    if isinstance(rule, Mapping):
        rule = lrp_composite(layers=rule)
    if not isinstance(rule, LRPComposite):
        raise TypeError(f"lrp: expected rule= an LRP rule (jaxsal.lrp_gamma(), ...), a "
                        f"jaxsal.lrp_composite(...), a dict of layer or class names to rules "
                        f"or a name in {PRESETS}, got {type(rule).__name__}")
    found = [(path, model.layer(path)) for path in model.relevance_layers]
    # a TimeDistributed layer is known by its wrapped layer's class, and by its own
    keys = {path: (effective_class(info), info.class_name) for path, info in found}
    classes = {c for both in keys.values() for c in both}
    paths = {path for path, _ in found}
    by_name, by_class = {}, {}
    for key, r in rule.layers:
        if key in classes:
            if key in ATTENTION and r.changes_weights:
                raise ValueError(f"lrp: {key} layers hold their attention weights constant "
                                 f"and their query and key kernels set them; a rule that "
                                 f"changes weights ({type(r).__name__}) does not apply to "
                                 f"them: give them lrp_epsilon()")
            for path, _ in found:
                if key in keys[path]:
                    _check_product(path, model._spec(path), r)
            by_class[key] = r
            continue
        try:
            path = model.resolve_layer(key)
        except ValueError as e:
            raise ValueError(f"lrp: rule for {key!r}: {e}; or a class of the rule layers: "
                             f"{sorted(classes)}") from None
        if path not in paths:
            raise ValueError(
                f"lrp: layer {path!r} ({model.layer(path).class_name}) takes no rule (its "
                f"relevance passes by its gradient, or an RNN's by its cells' steps, each "
                f"with the epsilon rule); the rule layers are: "
                f"{', '.join(_describe(found))}")
        _check_product(path, model._spec(path), r)
        if r.changes_weights and effective_class(model._spec(path)) in ATTENTION:
            raise ValueError(f"lrp: {path!r} is an attention layer, whose query and key "
                             f"kernels set the attention weights that LRP holds constant; "
                             f"a rule that changes weights ({type(r).__name__}) does not "
                             f"apply to it: give it lrp_epsilon()")
        if path in fixed:
            raise ValueError(f"lrp: {path!r} is folded into the layer before it "
                             f"(fold_batchnorm=True): it passes relevance on unchanged and "
                             f"takes no rule; leave it out, or pass fold_batchnorm=False")
        by_name[path] = r
    first = _first_layers(model, found, keys)
    chosen = []
    for path, info in found:
        cls, outer = keys[path]
        if path in fixed:
            chosen.append((path, fixed[path]))
            continue
        r = by_name.get(path) or by_class.get(cls) or by_class.get(outer)
        if r is None:
            role = (rule.first if path in first and rule.first is not None
                    else rule.conv if any(c in cls for c in CONV_CLASSES)
                    else rule.dense if cls in DENSE_CLASSES else rule.other)
            r = _unnamed(model._spec(path), default if role is None else role)
        r = _with_layout(model, path, r)
        if r != default:
            chosen.append((path, r))
    return LayerRules(default, tuple(chosen))


def _first_layers(model: Any, found: Sequence[tuple[str, Any]],
                  keys: Mapping[str, tuple[str, str]]) -> set[str]:
    """The rule layers ``lrp_composite(first=)`` reaches: those with a kernel (attention
    layers aside) that read a model input (``model.input_readers``: directly, or through
    layers that only move or prepare it), and the first with a kernel in call order."""
    kernel = [path for path, info in found
              if has_kernel(info.params) and keys[path][0] not in ATTENTION]
    readers = set(getattr(model, "input_readers", ()))
    return {path for i, path in enumerate(kernel) if i == 0 or path in readers}


#: The rules of products of tensors (their factors share, or one takes, the relevance).
_PRODUCT_RULES = (Uniform, SignalTakeAll)


def is_product(spec: Any) -> bool:
    """Whether a layer (its ``LayerSpec``) multiplies tensors (``LayerImpl.merge``)."""
    return getattr(spec.impl, "merge", None) == "product"


def _with_layout(model: Any, path: str, r: LRPRule) -> LRPRule:
    """``r`` for the layer ``path``: a z-box rule told whether the layer's input is
    channels-first, where its ``(C,)`` bounds would line up with the last axis (``W``)."""
    fmt = getattr(model, "layer_data_format", None)
    if isinstance(r, ZBox) and fmt is not None and fmt(path) == "channels_first":
        return dataclasses.replace(r, channels_first=True)
    return r


def _unnamed(spec: Any, r: LRPRule) -> LRPRule:
    """The rule a layer (its ``LayerSpec``) gets where ``r`` reaches it without naming it
    (by role or as everyone's): products of tensors take the uniform rule, preprocessing
    layers pass relevance on, attention layers take the epsilon rule instead of one that
    changes weights (their query and key kernels set the attention weights that LRP holds
    constant), and other layers the epsilon rule instead of the uniform one."""
    if is_product(spec):
        return r if isinstance(r, _PRODUCT_RULES) else Uniform(r.epsilon)
    if isinstance(r, _PRODUCT_RULES):
        return Epsilon(r.epsilon)
    cls = effective_class(spec)
    if cls in PREPROCESSING:
        return Pass()
    if cls in ATTENTION and r.changes_weights:
        return Epsilon(r.epsilon)
    return r


def _check_product(path: str, spec: Any, r: LRPRule) -> None:
    """A rule named for a layer: the uniform and signal-take-all rules are for products of
    tensors only, and a product takes no rule that changes weights (it has none)."""
    if isinstance(r, _PRODUCT_RULES) and not is_product(spec):
        name = "lrp_uniform()" if isinstance(r, Uniform) else "lrp_signal_take_all()"
        raise ValueError(f"lrp: {name} is a rule of products of tensors (Multiply, Dot, "
                         f"x * y, matmul); {path!r} ({spec.class_name}) is not one: give it "
                         f"another rule")
    if is_product(spec) and r.changes_weights:
        raise ValueError(f"lrp: {path!r} ({spec.class_name}) multiplies tensors and has no "
                         f"weights for {type(r).__name__} to change: give it lrp_uniform() "
                         f"(its default), lrp_signal_take_all(i) or lrp_epsilon() (every "
                         f"factor then receives the whole relevance)")


def _describe(found: Sequence[tuple[str, Any]]) -> list[str]:
    return [f"{path} ({info.class_name})" if effective_class(info) == info.class_name
            else f"{path} ({info.class_name}({effective_class(info)}))" for path, info in found]
