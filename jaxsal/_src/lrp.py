"""Layer-wise relevance propagation: the epsilon rule (LRP-epsilon) by default, any rule per
layer (:mod:`jaxsal._src.lrp_rules`).

Bach, Binder, Montavon, Klauschen, Müller & Samek (2015), "On Pixel-Wise Explanations for
Non-Linear Classifier Decisions by Layer-Wise Relevance Propagation"; the epsilon rule as in
Montavon et al. (2019), "Layer-Wise Relevance Propagation: An Overview", and Captum's ``LRP``
with its default ``EpsilonRule``.

Relevance starts as the target's score ``S(x)`` and flows back layer by layer. Through a
layer ``z = f(a)`` that has a rule (every convolution, ``Dense``, ``EinsumDense``,
``BatchNormalization``, every pooling and the ``Add``/``Average`` merges: Captum's rule
layers; also sums of tensors as ``Subtract`` or operations, ``LayerScale``, a wrapped rule
layer in ``TimeDistributed``) it is redistributed to the inputs by the layer's rule, by
default in proportion to their contributions, ``R_a = a * J_f(a)^T (R_z / (z + eps *
sign(z)))`` (``sign(0) = 1``, the epsilon rule; the others in :mod:`jaxsal._src.lrp_rules`);
a product of tensors (``Multiply``, ``x * y``, ``matmul``) gives each of its ``n`` factors
``1/n`` of it (the uniform rule, Achtibat et al. 2024); through an elementwise activation,
or an elementwise operation of one tensor with a constant (``x + 3.0``), it passes unchanged
(Captum's ReLU and Tanh). As a backward pass: a
``jax.custom_vjp`` around each rule layer's call and each activation, installed in the
model's :class:`~model_import.Runtime`, started from the relevance the score puts on the
outputs, ``R_y = dS/dy * y`` (``y_k`` for class ``k``; it sums to ``S`` for any score linear
in the outputs), or for the unit of a one-unit model the class's score itself (``-z`` for
class 0 on a logit head, ``1 - p`` on a probability head, saved sigmoid or
``sigmoid_complement`` alike). One forward pass;
every target's relevance is one vmapped backward pass through it.

On a network of those layers and ReLUs, LRP with ``epsilon -> 0`` is gradient times input
(exactly, biases included); a larger ``epsilon`` absorbs the relevance of weak, noisy
activations. Relevance is conserved (sums to ``S(x)``) only without biases and with
``epsilon -> 0``. Attention and normalization layers are rule layers too, their attention
probabilities and normalization scales held constant in the backward pass (Ali et al. 2022,
"XAI for Transformers: Better Explanations through Conservative Propagation"; the model's
``Runtime.hold``), which makes them linear in their inputs; ``Rescaling`` and
``Normalization`` pass relevance unchanged. Layers of other kinds pass the cotangent through
their gradient: exact for layers that only move values (reshaping, padding, cropping,
concatenation, dropout) or select one (``Maximum``), not for a softmax over features or a
division of two tensors.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxsal._src import base
from jaxsal._src.base import Inputs, Maps, ModelLike
from jaxsal._src.finite import refuses_non_finite_maps
from jaxsal._src.gradients import first_only
from jaxsal._src.lrp_fold import FoldedBatchNorm, check_fold, fold_params, fold_plan
from jaxsal._src.lrp_separable import merge_params, merge_plan
from jaxsal._src.lrp_rules import LRPRule, check_epsilon, layer_rules
from jaxsal._src.postprocess import _reduce_inputs, check_reduce
from jaxsal._src.targets import Targets, pullback_at
from jaxsal._src.validate import prepare, prepare_layer

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


@dataclasses.dataclass(frozen=True)
class PassRelevance:
    """An elementwise activation that passes the relevance on its output unchanged to its
    input, as a ``Runtime.elementwise`` rule (Captum's rule for ReLU and Tanh)."""

    def __call__(self, f: Callable[..., Array], x: Array, *consts: Array) -> Array:
        @jax.custom_vjp
        def rule(z, *c):
            return f(z, *c)

        def fwd(z, *c):
            return f(z, *c), c

        complex_in = jnp.iscomplexobj(x)  # (an STFT's magnitude: relevance passes as 1 + 0j)

        def bwd(c, r):
            return (r.astype(x.dtype) if complex_in else r, *(jnp.zeros_like(ci) for ci in c))

        rule.defvjp(fwd, bwd)
        return rule(x, *consts)


def lrp_model(model: Any, epsilon: float = 1e-9, rule: Any = None,
              folds: tuple = ()) -> Any:
    """``model`` (a ``KerasModel``) with LRP's rules installed (``rule`` as in :func:`lrp`);
    forward values are unchanged."""
    if not hasattr(model, "with_rules"):
        raise TypeError(
            f"LRP needs a model whose layers it can give their rules (a model_import.KerasModel "
            f"from load_keras); got {type(model).__name__}. A plain function has no layers to "
            "find: use gradient_x_input (LRP-0 on a ReLU network) or deeplift")
    fixed = {f.batch_norm_path: FoldedBatchNorm() for f in folds}
    return model.with_rules(elementwise=PassRelevance(),
                            layer_rule=layer_rules(model, rule, epsilon, fixed),
                            hold=jax.lax.stop_gradient)


def _read_layers(model: Any, spec: Any, lt: Any) -> frozenset[str]:
    """The paths of the layers whose outputs the maps read: ``layer=``'s and those the
    target's scores read (``jaxsal.neuron``). Kept from batch-norm folding: folded, a
    convolution's output would be the batch norm's (``s z + t``), and its relevance a
    rescaled score's."""
    return frozenset([model.resolve_layer(name) for name in spec.layers]
                     + ([] if lt is None else [lt.name]))


@refuses_non_finite_maps
def lrp(model: ModelLike, x: Inputs, targets: Targets = None, *, epsilon: float | None = None,
        rule: Any = None, fold_batchnorm: bool = False, reduce: str | None = "sum",
        head: str | None = None,
        chunk_size: int | None = None, memory_budget: int | None = None,
        precision: str | None = None, check_finite: bool = True,
        layer: str | None = None) -> Maps:
    """Layer-wise relevance propagation (Bach et al., 2015; Captum's ``LRP``, zennit's
    composites).

    The target's score ``S(x)`` is redistributed backwards: at every convolution, ``Dense``,
    ``EinsumDense``, ``BatchNormalization``, pooling and sum of tensors by its rule (by
    default the epsilon rule: in proportion to each input's contribution, ``R_a = a * J^T
    (R_z / (z + epsilon * sign(z)))``), at a product of tensors by the uniform rule;
    unchanged through elementwise activations (see the module for the rest,
    :mod:`jaxsal._src.lrp_rules` for the other rules).

    Example: zennit's ``EpsilonGammaBox`` on images in ``[0, 1]``::

        rules = jaxsal.lrp_composite(first=jaxsal.lrp_zbox(0.0, 1.0), conv=jaxsal.lrp_gamma(),
                                     dense=jaxsal.lrp_epsilon(0.25))
        maps = jaxsal.lrp(model, x, targets, rule=rules)   # (N, T, H, W)

    Args:
      model, x, targets, head, chunk_size, memory_budget, precision, check_finite: as in
        :func:`jaxsal.saliency`; ``model`` must come from ``load_keras``. Use the
        ``logits`` head: a softmax output passes its gradient.
      epsilon: the stabilizer (default 1e-9, Captum's; near 0 on a ReLU network this is
        gradient times input); larger values (0.25 of typical activations) keep only the
        strongest contributions. The rule of every rule layer that ``rule`` leaves out (with
        one rule for every layer, ``rule=jaxsal.lrp_zplus()``, none is: another value than
        the rule's own is refused there; the rule takes it, ``lrp_zplus(epsilon=...)``).
      rule: ``None`` (the epsilon rule everywhere), one rule for every rule layer
        (:func:`jaxsal.lrp_gamma`, :func:`jaxsal.lrp_zplus`, ...; the ones that change
        weights give layers without a kernel the epsilon rule), a
        :func:`jaxsal.lrp_composite` (a rule per role: first layer, convolutions, dense
        layers, others), a dict ``{layer name or Keras class name: rule}``, or the name of
        one of zennit's composites: ``"epsilon_plus"`` (convolutions z-plus, dense layers
        the epsilon rule with ``epsilon``), ``"epsilon_plus_flat"`` (and the flat rule on
        the first layer), ``"epsilon_alpha2_beta1"`` (convolutions alpha-beta (2, 1)).
        Products of tensors take :func:`jaxsal.lrp_uniform` unless a rule is named for them
        (:func:`jaxsal.lrp_signal_take_all`: a gated product's signal takes it all);
        recurrent cells take the epsilon rule inside (Arras et al. 2017).
      fold_batchnorm: fold every ``BatchNormalization`` that directly follows a convolution
        or ``Dense`` layer (either or both in ``TimeDistributed``) into it (zennit's
        ``SequentialMergeBatchNorm``; see :mod:`jaxsal._src.lrp_fold`): that layer's rule
        then sees the merged weights and bias, and the batch norm passes relevance on
        unchanged. Forward values are the same.
      reduce: channel reduction (default signed ``"sum"``; ``None`` keeps channels).
      layer: the relevance of this layer's output instead of the input's (Captum's
        ``LayerLRP``); maps have the layer's shape, its channel axis reduced (token models:
        at the embedding, ``x`` may be integer ids).
    Returns:
      Raw relevance maps ``(N, H, W)`` or ``(N, T, H, W)`` (channels kept when
      ``reduce=None``).
    """
    check_reduce(reduce)
    given, epsilon = epsilon, check_epsilon(1e-9 if epsilon is None else epsilon, "lrp")
    if given is not None and isinstance(rule, LRPRule) and epsilon != rule.epsilon:
        raise ValueError(f"lrp: epsilon={given!r} would be unused: rule={rule!r} is every "
                         "rule layer's rule, with its own stabilizer (also that of the "
                         "epsilon rule it gives layers without a kernel); pass the stabilizer "
                         "to the rule, e.g. jaxsal.lrp_zplus(epsilon=1e-6), or leave epsilon "
                         "out")
    p = prepare(model, x, targets, head=head, backprop="standard", check_finite=check_finite,
                allow_int=layer is not None, multi_input=True)
    lt = None if layer is None else prepare_layer(p, layer, reduce)
    folds = (fold_plan(p.model, _read_layers(p.model, p.spec, lt))
             if check_fold(fold_batchnorm) and hasattr(p.model, "with_rules") else ())
    lm = lrp_model(p.model, epsilon, rule, folds)
    merges = merge_plan(p.model, lm.runtime.layer_rule)
    fb = base.forward_bytes(p.model, p.x)
    nb = base.batch_chunk(p.n, fb // p.n, memory_budget)
    chunk = base.chunk_for(p.spec.num, fb * nb // p.n, chunk_size, memory_budget, rows=nb)
    spec, info = p.spec, p.info
    axes = p.map_channel_axes if lt is None else [lt.map_channel_axis]

    def build():
        def run(params, x, ids):
            # the cotangent reaching x (or the layer's output) is its relevance
            params = merge_params(fold_params(params, folds), merges)
            # started from the relevance the score puts on the outputs, dS/dy * y
            _, _, pull = pullback_at(lm, params, x, spec, info, ids, lt, relevance=True)

            def chunk_fn(ts):
                g = jax.vmap(pull, out_axes=1)(ts)  # (N, Tc, ...) per input
                return _reduce_inputs(g, reduce, axes)

            return first_only(base.map_chunks(chunk_fn, spec.num, chunk), spec.class_axis)

        return run

    key = ("lrp", p.key, base.model_key(lm), folds, merges, spec, info, reduce, chunk, nb,
           lt)
    return base.compiled(key, lambda: base.split_batch(build(), nb),
                         precision)(p.params, p.x, p.ids)
