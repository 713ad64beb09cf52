"""The layout of a model's layer graph, for the architecture diagram of :mod:`jaxsal.plot`.

Pure Python over ``model.graph`` (a :class:`model_import._graph.Graph`): one node per layer,
one edge per tensor passed between layers (branches and merges included), nodes placed in
ranks by their longest path from an input, and ordered inside a rank so that edges cross
little. No drawing happens here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Mapping

__all__ = ["Node", "Layout", "layout_graph"]


@dataclasses.dataclass(frozen=True)
class Node:
    """One layer of the diagram.

    Attributes:
      name: the layer's name (as in ``model.layer_names``).
      class_name: Keras class (``"Functional"``/``"Sequential"`` for a nested model).
      output_shape: output shape without the batch axis, or ``None`` when unknown.
      activation: name of the fused activation, or ``None``.
      rank: distance (longest path) from the model inputs; inputs have rank 0.
      order: position inside the rank, from 0.
      x, y: centre in layout units (``x`` across a rank, ``y`` = rank).
    """

    name: str
    class_name: str
    output_shape: Any
    activation: str | None
    rank: int
    order: int
    x: float
    y: float


@dataclasses.dataclass(frozen=True)
class Layout:
    """Nodes with positions and the edges ``(src, dst)`` between layer names."""

    nodes: dict[str, Node]
    edges: tuple[tuple[str, str], ...]
    n_ranks: int
    width: int  # the most nodes in one rank

    def rank_nodes(self, rank: int) -> list[Node]:
        return sorted((n for n in self.nodes.values() if n.rank == rank), key=lambda n: n.order)


def _refs(a) -> Iterator[Any]:
    # A Ref is any object with .layer/.node/.tensor; calls nest them in lists and dicts.
    if hasattr(a, "layer") and hasattr(a, "node") and hasattr(a, "tensor"):
        yield a
    elif isinstance(a, (list, tuple)):
        for b in a:
            yield from _refs(b)
    elif isinstance(a, Mapping):
        for b in a.values():
            yield from _refs(b)


def _activation(config: Mapping[str, Any]) -> str | None:
    act = config.get("activation")
    if isinstance(act, Mapping):  # Keras 3 may serialize activations as objects
        act = act.get("config", {}).get("name") or act.get("class_name")
    return None if act in (None, "linear") else str(act)


def layout_graph(graph, output_shapes: Mapping[str, Any] | None = None) -> Layout:
    """Ranks and positions for the layers of ``graph``.

    Args:
      graph: ``model.graph`` of a :class:`model_import.KerasModel`.
      output_shapes: ``{layer_name: shape}`` (without batch axis) to show; missing names show
        no shape.
    Returns:
      a :class:`Layout`. Edges follow the calls of the graph: a layer called on the outputs
      of two layers (a merge) has two incoming edges, a layer whose output feeds two layers
      (a branch) has two outgoing ones. A layer called several times (shared weights) is one
      node.
    """
    output_shapes = dict(output_shapes or {})
    names = list(graph.layers)
    edges: list[tuple[str, str]] = []
    for call in graph.calls:
        for r in list(_refs(call.args)) + list(_refs(call.kwargs)):
            e = (r.layer, call.layer)
            if e not in edges and r.layer in graph.layers:
                edges.append(e)
    preds: dict[str, list[str]] = {n: [] for n in names}
    for s, d in edges:
        preds[d].append(s)

    # Longest-path ranks (the call list is topologically ordered; inputs have no calls).
    rank: dict[str, int] = {}

    def rank_of(n: str, seen=()) -> int:
        if n in rank:
            return rank[n]
        if n in seen:  # defensive: the importer rejects cycles
            return 0
        r = 0 if not preds[n] else 1 + max(rank_of(p, seen + (n,)) for p in preds[n])
        rank[n] = r
        return r

    for n in names:
        rank_of(n)
    n_ranks = 1 + max(rank.values(), default=0)
    by_rank: list[list[str]] = [[] for _ in range(n_ranks)]
    for n in names:  # Keras order inside a rank to start with
        by_rank[rank[n]].append(n)
    # One downward barycentre pass: order each rank by the mean position of its parents.
    pos: dict[str, float] = {}
    for r, members in enumerate(by_rank):
        if r > 0:
            members.sort(key=lambda n: (sum(pos[p] for p in preds[n]) / len(preds[n])
                                        if preds[n] else 0.0))
        for i, n in enumerate(members):
            pos[n] = i - (len(members) - 1) / 2
    width = max(len(m) for m in by_rank)
    nodes = {}
    for r, members in enumerate(by_rank):
        for i, n in enumerate(members):
            spec = graph.layers[n]
            cls = spec.class_name if spec.class_name != "Model" else "Functional"
            nodes[n] = Node(n, cls, output_shapes.get(n), _activation(spec.config), r, i,
                            pos[n], float(r))
    return Layout(nodes, tuple(edges), n_ranks, width)
