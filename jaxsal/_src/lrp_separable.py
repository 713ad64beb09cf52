"""Separable convolutions as the one convolution they compose, for LRP's weight rules.

A ``SeparableConv`` layer is a depthwise convolution ``D`` followed by a pointwise one ``P``,
with nothing between them: one linear map ``x -> x * W + b`` whose kernel is ``W[..., c, f]
= sum_m D[..., c, m] P[c, m, f]``. LRP's rules are defined on a layer's weights: z-plus
spreads relevance over the positive ``x w`` of that map, gamma boosts them. Applied to ``D``
and ``P`` apart, the rules would take ``D+ P+`` for ``W+`` and drop every weight that is
positive as a product of two negative ones: relevance lost or made up, where the same
layer written as a ``Conv2D`` conserves it. So, for the separable layers whose rule changes
weights, the params are merged (:func:`model_import._layers.conv.merge_separable`, a params
transform inside the compiled program, as batch-norm folding is) and the layer runs as that
one convolution; forward values are the same up to rounding. The epsilon rule, which
changes no weight, keeps the cheaper two-step form.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxsal._src.lrp_fold import get_params, set_params
from jaxsal._src.lrp_rules import wrapped_layer
from model_import._layers.conv import merge_separable

SEPARABLE = ("SeparableConv1D", "SeparableConv2D", "SeparableConvolution1D",
             "SeparableConvolution2D")


@dataclasses.dataclass(frozen=True)
class Merge:
    """One separable layer to merge: its param path (a chain of layer names from the
    model's params) and depth multiplier."""

    layer: tuple[str, ...]
    multiplier: int


def merge_plan(model: Any, rules: Any) -> tuple[Merge, ...]:
    """The separable layers of ``model`` (a ``KerasModel``; nested models' included) whose
    rule in ``rules`` (the installed ``LayerRules``) changes weights, wrapped in
    ``TimeDistributed`` too (whose params are the wrapped layer's)."""
    merges: list[Merge] = []

    def walk(graph, chain: tuple[str, ...]):
        for name, spec in graph.layers.items():
            cls, cfg = wrapped_layer(spec)
            if spec.impl.subgraph is not None:
                walk(spec.impl.subgraph, chain + (name,))
            elif (cls in SEPARABLE
                  and rules.rule_for("/".join(chain + (name,))).changes_weights):
                merges.append(Merge(chain + (name,), int(cfg.get("depth_multiplier", 1) or 1)))

    walk(model.graph, ())
    return tuple(merges)


def merge_params(params: Any, plan: tuple[Merge, ...]) -> Any:
    """``params`` with each planned layer's two kernels merged into one (traceable: call it
    inside the compiled program, after any batch-norm folding)."""
    for m in plan:
        params = set_params(params, m.layer, merge_separable(get_params(params, m.layer),
                                                             m.multiplier))
    return params
