"""Transposed convolutions' ``output_padding``, which Keras 3.0-3.14 do not save.

Their ``get_config`` leaves ``output_padding`` out, so a model built with it computes other
sizes and values after ``keras.models.load_model``. The config still records the shapes the
model had when it was saved: a Functional model's calls record each input tensor's shape,
and in ``.keras`` archives every layer records the shape it was built on
(``build_config``). Where those shapes show an output size that only an ``output_padding``
explains, :func:`restore_output_padding` puts that padding back into the layer's config, so
that the importer computes the model as it was saved (not as Keras reloads it), and warns.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

from model_import._layers.conv import _padding, _tuple, transpose_output_size
from model_import._version import parse_version

#: Keras's transposed convolution classes and their spatial rank.
TRANSPOSED = {f"{name}{r}DTranspose": r for r in (1, 2, 3)
              for name in ("Conv", "Convolution")}

#: Layers whose output has their input's shape and that record no ``build_config``: in a
#: Sequential model, the next layer that records one records the shape before them too.
SHAPE_KEEPING = frozenset({
    "Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax", "Dropout", "SpatialDropout1D",
    "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout",
    "ActivityRegularization", "Masking"})


def _spatial(shape, rank: int, channels_first: bool) -> tuple | None:
    """The spatial sizes of a recorded ``[batch, ...]`` shape, ``None`` if any is unknown."""
    if not isinstance(shape, (list, tuple)) or len(shape) != rank + 2:
        return None
    sizes = tuple(shape[2:] if channels_first else shape[1:-1])
    return sizes if all(isinstance(n, int) and n > 0 for n in sizes) else None


def _tensor_shapes(a, out: dict) -> None:
    """Collects ``{(layer, node): [shape, ...]}`` of the first output tensors recorded in a
    Keras 3 call's arguments (``__keras_tensor__`` entries, at any depth)."""
    if isinstance(a, Mapping):
        if a.get("class_name") == "__keras_tensor__":
            c = a.get("config") or {}
            h = c.get("keras_history")
            if isinstance(h, (list, tuple)) and len(h) >= 3 and h[2] == 0:
                out.setdefault((h[0], h[1]), []).append(c.get("shape"))
            return
        for v in a.values():
            _tensor_shapes(v, out)
    elif isinstance(a, (list, tuple)):
        for v in a:
            _tensor_shapes(v, out)


def _first_arg_shape(node) -> Any:
    """The recorded shape of a Keras 3 call's first tensor argument."""
    if not isinstance(node, Mapping):
        return None
    found: dict = {}
    args = node.get("args") or [(node.get("kwargs") or {}).get("inputs")]
    _tensor_shapes(args[:1], found)
    shapes = [s for v in found.values() for s in v]
    return shapes[0] if len(shapes) == 1 else None


def _unsaved(lc) -> tuple[str, Mapping[str, Any], int] | None:
    """The class name and config of the transposed convolution a layer entry is, or wraps in
    ``TimeDistributed`` (at any depth), and how many time axes the wrappers add; ``None``
    unless that convolution's config has no ``output_padding``."""
    depth = 0
    while isinstance(lc, Mapping) and lc.get("class_name") == "TimeDistributed" and \
            isinstance(lc.get("config"), Mapping):
        lc, depth = lc["config"].get("layer"), depth + 1
    if isinstance(lc, Mapping) and lc.get("class_name") in TRANSPOSED and \
            isinstance(lc.get("config"), Mapping) and "output_padding" not in lc["config"]:
        return lc["class_name"], lc["config"], depth
    return None


def _with_padding(lc: Mapping[str, Any], pad: tuple[int, ...]) -> dict:
    """A copy of the entry ``lc`` with ``output_padding`` set in the config of the transposed
    convolution it is or wraps (``config.layer.config`` of a ``TimeDistributed``)."""
    cfg = lc["config"]
    if lc.get("class_name") == "TimeDistributed":
        return {**lc, "config": {**cfg, "layer": _with_padding(cfg["layer"], pad)}}
    return {**lc, "config": {**cfg, "output_padding": list(pad)}}


def _drop_time(shape, depth: int) -> Any:
    """A recorded ``[batch, time..., ...]`` shape without its ``depth`` time axes (what the
    layer inside ``depth`` ``TimeDistributed`` wrappers gets), ``None`` if too short."""
    if not isinstance(shape, (list, tuple)) or len(shape) < depth + 2:
        return None
    return [shape[0], *shape[depth + 1:]]


def _build_input(entry) -> Any:
    """The input shape a Sequential model's layer entry records (``build_config``), or
    ``None``."""
    b = entry.get("build_config") if isinstance(entry, Mapping) else None
    return b.get("input_shape") if isinstance(b, Mapping) else None


def _next_build_input(entries: Sequence[Any], j: int) -> Any:
    """The input shape recorded by the first layer after ``entries[j]`` in a Sequential model
    that records one, past only layers that keep the shape (:data:`SHAPE_KEEPING`); ``None``
    where another layer comes first."""
    for e in entries[j + 1:]:
        shape = _build_input(e)
        if shape is not None:
            return shape
        if not (isinstance(e, Mapping) and e.get("class_name") in SHAPE_KEEPING):
            return None
    return None


def _infer(cfg: Mapping[str, Any], rank: int, pairs) -> tuple[int, ...] | None:
    """The ``output_padding`` that maps each recorded ``(input shape, output shape)`` pair of
    calls, or ``None`` where no pair is known, they disagree, or the default explains them."""
    channels_first = cfg.get("data_format") == "channels_first"
    padding = _padding(cfg, rank)
    axes = list(zip(_tuple(cfg.get("kernel_size", 1), rank), _tuple(cfg.get("strides", 1), rank),
                    _tuple(cfg.get("dilation_rate", 1), rank)))
    found, default = set(), set()  # the paddings the pairs show; the default's equivalent
    for in_shape, out_shape in pairs:
        n_in, n_out = _spatial(in_shape, rank, channels_first), _spatial(out_shape, rank,
                                                                         channels_first)
        if n_in is None or n_out is None:
            continue
        unpadded = [transpose_output_size(i, w, s, padding, 0, d)
                    for i, (w, s, d) in zip(n_in, axes)]
        found.add(tuple(o - u for o, u in zip(n_out, unpadded)))
        default.add(tuple(transpose_output_size(i, w, s, padding, None, d) - u
                          for i, (w, s, d), u in zip(n_in, axes, unpadded)))
    if len(found) != 1:
        return None
    (pad,) = found
    return None if min(pad) < 0 or default == {pad} else pad


def restore_output_padding(layer_cfgs: Sequence[Any], *, sequential: bool, keras_version: str,
                           model_name: str) -> list:
    """``layer_cfgs`` (a model config's ``layers``), with ``output_padding`` put back into the
    configs of transposed convolutions that have none where the recorded shapes show one.

    Args:
      layer_cfgs: the layer entries, as in the file.
      sequential: whether they are a Sequential model's (then the shapes come from the
        layers' ``build_config``; a Functional model's from the recorded call arguments).
      keras_version: the Keras that wrote the file, for the warning.
      model_name: for the warning.
    Returns:
      A new list; the changed entries are copies, the others the same objects. Configs of
      Keras 1 and 2 (which save ``output_padding``) come back unchanged.
    """
    entries = list(layer_cfgs)
    if parse_version(keras_version).major < 3:
        return entries
    todo = [(j, u) for j, lc in enumerate(entries) if (u := _unsaved(lc)) is not None]
    if not todo:
        return entries
    if not sequential:
        produced: dict = {}
        for lc in entries:
            if isinstance(lc, Mapping):
                _tensor_shapes(lc.get("inbound_nodes") or [], produced)
    for j, (cls, conv_cfg, depth) in todo:
        lc = entries[j]
        name = lc.get("name") or lc["config"].get("name")
        if sequential:  # this layer's build shape, and the next recorded one
            b0, b1 = _build_input(lc), _next_build_input(entries, j)
            pairs = [(b0, b1)] if b0 is not None and b1 is not None else []
        else:
            pairs = [(_first_arg_shape(node), out)
                     for i, node in enumerate(lc.get("inbound_nodes") or [])
                     for out in produced.get((name, i), [])]
        pairs = [(_drop_time(a, depth), _drop_time(b, depth)) for a, b in pairs]
        try:
            pad = _infer(conv_cfg, TRANSPOSED[cls], pairs)
        except (TypeError, ValueError, KeyError):  # a damaged config: the converter says so
            pad = None
        if pad is None:
            continue
        entries[j] = _with_padding(lc, pad)
        what = cls if depth == 0 else "TimeDistributed(" * depth + cls + ")" * depth
        warnings.warn(
            f"model {model_name!r}, layer {name!r} ({what}): Keras "
            f"{keras_version} did not save its output_padding; the shapes recorded around "
            f"it show output_padding={pad}, which the layer is computed with (as the model "
            "was when saved). keras.models.load_model computes this file without it, so its "
            "outputs differ from this model's", UserWarning, stacklevel=4)
    return entries


def unsaved_paddings(graph, prefix: str = "") -> list[str]:
    """The paths of a graph's transposed convolutions (nested models' and those inside
    ``TimeDistributed`` too) whose config has no ``output_padding`` (restored ones have
    one), for error messages."""
    found = []
    for name, spec in graph.layers.items():
        if spec.impl.subgraph is not None:
            found += unsaved_paddings(spec.impl.subgraph, f"{prefix}{name}/")
        elif _unsaved({"class_name": spec.class_name, "config": spec.config}) is not None:
            found.append(f"{prefix}{name}")  # a TimeDistributed one too
    return found


def padding_hint(graph, keras_version: str) -> str:
    """What to add to a load error of a Keras 3.0-3.14 file with transposed convolutions
    whose ``output_padding`` was not saved (``""`` if none)."""
    v = parse_version(keras_version)
    if v.major != 3 or not v.before(3, 15, unrecorded=True):
        return ""
    layers = unsaved_paddings(graph)
    if not layers:
        return ""
    return (f". Keras {keras_version} does not save the output_padding of transposed "
            f"convolutions ({', '.join(map(repr, layers[:5]))}) and this file records no "
            "shape that shows it: if the model was built with one, the sizes after that "
            "layer differ from the model's. Save the model with Keras 3.15 or later, or pass "
            "the architecture with output_padding set in the layer's config "
            "(load_keras(..., config=...))")
