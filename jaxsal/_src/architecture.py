"""The layout of a model's layer graph, for the architecture diagram of :mod:`jaxsal.plot`.

Pure Python over ``model.graph`` (a :class:`model_import._graph.Graph`): one node per layer,
one edge per tensor passed between layers (branches and merges included), nodes placed in
ranks by their longest path from an input, and ordered inside a rank so that edges cross
little. No drawing happens here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Mapping

from model_import._layers.activations import activation_name

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
    # the edges of ``edges`` that point to the same or an earlier rank: a layer called on its
    # own output, or a call that closes a cycle through a shared layer
    back_edges: tuple[tuple[str, str], ...] = ()

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
    # the importer's own reading: a name, Keras 3's {"class_name": "function", "config":
    # "pkg>name"} for a registered function, a layer (LeakyReLU(0.2)) by its class
    act = activation_name(config.get("activation"))
    return None if act == "linear" else act


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
      node. A layer called on its own output (``sh(sh(x))``) has a self-edge, and a layer
      called again downstream of a layer it feeds (``A(B(A(x)))``) closes a cycle; such
      edges (``Layout.back_edges``) are left out of the ranking, so every layer is one node
      below its other parents, and :func:`jaxsal.plot.architecture` draws them up a lane
      left of the boxes.
    """
    output_shapes = dict(output_shapes or {})
    names = list(graph.layers)
    edges: list[tuple[str, str]] = []
    for call in graph.calls:
        for r in list(_refs(call.args)) + list(_refs(call.kwargs)):
            e = (r.layer, call.layer)
            if e not in edges and r.layer in graph.layers:
                edges.append(e)
    back = _back_edges(names, edges)
    preds: dict[str, list[str]] = {n: [] for n in names}
    for s, d in edges:
        if (s, d) not in back:
            preds[d].append(s)

    # Longest-path ranks over the forward edges, which form a DAG; iterative (a chain of
    # hundreds of layers would overflow the recursion limit).
    rank: dict[str, int] = {}
    for n0 in names:
        stack = [n0]
        while stack:
            n = stack[-1]
            if n in rank:
                stack.pop()
                continue
            todo = [p for p in preds[n] if p not in rank]
            if todo:
                stack.extend(todo)
            else:
                rank[n] = 1 + max((rank[p] for p in preds[n]), default=-1)
                stack.pop()
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
    return Layout(nodes, tuple(edges), n_ranks, width,
                  tuple(e for e in edges if e in back))


def _back_edges(names: list[str], edges: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """The edges that close a cycle (self-edges included) in a depth-first search from the
    layers without parents, then the rest, in Keras order (so the first call of a shared
    layer is the forward one); without them the graph has no cycle."""
    succ: dict[str, list[str]] = {n: [] for n in names}
    has_pred = set()
    for s, d in edges:
        succ[s].append(d)
        if s != d:
            has_pred.add(d)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    back = set()
    for root in [n for n in names if n not in has_pred] + names:
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(succ[root]))]
        while stack:
            n, it = stack[-1]
            d = next(it, None)
            if d is None:
                state[n] = 2
                stack.pop()
            elif state.get(d) == 1:
                back.add((n, d))
            elif d not in state:
                state[d] = 1
                stack.append((d, iter(succ[d])))
    return back
