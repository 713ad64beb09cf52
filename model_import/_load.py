"""``load_keras``: a Keras file (and optionally a separate architecture) -> :class:`KerasModel`."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from model_import._errors import KerasImportError, UnsupportedLayerError
from model_import._files import (Keras3Weights, LegacyH5Weights, WeightSource,
                                 config_keras_version, keras_version_of, parse_config, read_h5,
                                 read_keras_dir, read_keras_zip, read_sharded_weights,
                                 recorded_backend, sniff)
from model_import._graph import MODEL_CLASSES, Graph, GraphBuilder, LayerCallError
from model_import._layers.registry import functional_subclass
from model_import._output_padding import padding_hint
from model_import._model import HEADS, KerasModel
from model_import._heaps import attrs_of
from model_import._version import keras_backend_of, keras_major, parse_version


def _keras_class(spec) -> str:
    """The class a Keras 3 weights file keys layer ``spec`` by, its Python class:
    "LayerScale" for one whose converter is registered under its registered name
    "package>LayerScale"."""
    return spec.keras_class or (spec.class_name.split(">")[-1] if spec.class_name != "Model"
                                else "Functional")


def _layer_order(graph: Graph, prefix: tuple = ()) -> dict[tuple, list]:
    """``{container path: [(layer name, class), ...]}``: the layers of ``graph`` (``()``)
    and of the models nested in it (their paths), in Keras's order, each with the class a
    Keras 3 weights file keys it by (:func:`_keras_class`). Keras 3 operations (``x +
    3.0``) are not layers: they own no entry in the weights file."""
    order = {prefix: [(n, _keras_class(s)) for n, s in graph.layers.items()
                      if not s.class_name.startswith("ops.")]}
    for n, s in graph.layers.items():
        if s.impl.subgraph is not None:
            order.update(_layer_order(s.impl.subgraph, prefix + (n,)))
    return order


def _sublayer_hint(spec, source, lpath: tuple) -> str:
    """For a layer whose converter reads only its own arrays (no ``weight_groups``) from a
    Keras 3 weights file that keeps others below it (a custom layer made of sublayers,
    ``self.proj = Dense(...)``: ``.keras`` stores each under its attribute name): where they
    are and how to read them. ``""`` otherwise."""
    if (spec.impl.weight_groups is not None or not isinstance(source, Keras3Weights)
            or not spec.user_converter):
        return ""  # a built-in converter reads what its Keras layer writes
    groups = source.sublayer_groups(lpath)
    if not groups:
        return ""
    listing = ", ".join(f"{g!r} {shapes}" for g, shapes in groups[:24])
    if len(groups) > 24:
        listing += f", ... ({len(groups)} groups)"
    return (f". A Keras 3 weights file (.keras, .weights.h5) keeps the arrays of the "
            f"layer's sublayers in groups of their own, named by attribute: {listing}. Give "
            "the converter's LayerImpl weight_groups=(...), the names of those it reads in "
            "the layer's layer.weights order (its own weights first, then each sublayer's in "
            "the order its __init__ assigned them); a legacy .h5 keeps them all in the "
            "layer's own group, in that order. The sublayers of a list or dict attribute "
            "are named <attribute>/<class in snake_case>, numbered from the second of a "
            "class on in the list's order, a dict's in insertion order (blocks/dense, "
            "blocks/dense_1), and tf.keras's layer.weights lists a dict's by sorted key")


def _frozen(spec) -> bool:
    return isinstance(spec.config, Mapping) and spec.config.get("trainable") is False


def _legacy_layout(spec, path: tuple, frozen: bool) -> list[tuple[tuple, int, int]] | str:
    """The layers with weights of the nested model ``spec`` (its own nested models'
    layers in their place), in Keras's order, each as ``(path, n_trainable,
    n_non_trainable)``: how a legacy ``.h5`` lists its weights, the trainable ones of every
    layer, then the non-trainable ones (all of a frozen layer's, or of a layer in a frozen
    model). A sentence instead where a layer's counts are not known."""
    out: list[tuple[tuple, int, int]] = []
    for name, sub in spec.impl.subgraph.layers.items():
        if sub.class_name.startswith("ops."):
            continue
        p, f = path + (name,), frozen or _frozen(sub)
        if sub.impl.subgraph is not None:
            inner = _legacy_layout(sub, p, f)
            if isinstance(inner, str):
                return inner
            out += inner
            continue
        n = sub.impl.n_weights
        if n is None:
            return (f"layer {'/'.join(p)!r} ({sub.class_name}) has a number of weights that "
                    "its config does not fix")
        nn = min(sub.impl.n_non_trainable, n)
        if isinstance(sub.config, Mapping) and sub.config.get("lora_rank"):
            n, nn = n + 2, 1  # the frozen kernel; the two LoRA factors are trainable
        if n:
            out.append((p, 0, n) if f else (p, n - nn, nn))
    return out


def _legacy_layouts(graph: Graph) -> dict[str, list[tuple[tuple, int, int]] | str]:
    """``{nested model: its _legacy_layout}`` for the nested models at the top of ``graph``
    (a legacy ``.h5`` keeps each in one group)."""
    return {n: _legacy_layout(s, (n,), _frozen(s)) for n, s in graph.layers.items()
            if s.impl.subgraph is not None}


def _param_dtype(v: Any) -> Any:
    """The dtype a stored weight is kept in: float32 for float16, bfloat16 and float32
    weights (every layer computes in float32: README "Dtype policies and precision"), float64
    for float64 ones (a ``float64`` policy's) under ``jax_enable_x64``, as Keras 3 keeps them
    on TensorFlow and on JAX with x64 (without x64 JAX has no float64: float32); ``None``
    (as stored) for integers. A layer with a float64 weight has all its float weights float64
    (Keras on NumPy can save a float64 layer's initial kernel as float32: its variables are
    float64 all the same)."""
    dtype = np.asarray(v).dtype
    if not np.issubdtype(dtype, np.floating):
        return None
    # (canonicalize_dtype follows jax.enable_x64 contexts too, which jax.config does not)
    return (jnp.float64 if dtype == np.float64 and jax.dtypes.canonicalize_dtype(
        np.float64) == np.float64 else jnp.float32)


def _raised_by_h5py(e: BaseException) -> bool:
    """Whether ``e`` was raised inside h5py (HDF5 reading a damaged file: OSError,
    RuntimeError, KeyError, ValueError... by the damage), not by the importer's own code."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and "h5py" in tb.tb_frame.f_code.co_filename


def _as_numeric(w, where: str, path: str | None) -> np.ndarray:
    """A stored weight as a NumPy array; bfloat16, which HDF5 files hold as opaque 2-byte
    values (``|V2``), is widened to float32 exactly."""
    a = np.asarray(w)
    if a.dtype.kind == "V":
        if a.dtype.itemsize != 2:
            raise KerasImportError(
                f"layer {where!r}: a weight is stored as opaque {a.dtype.itemsize}-byte values "
                f"(dtype {a.dtype}), expected a float or integer dtype or bfloat16 (2 bytes); "
                "re-save the model in float32", path=path)
        a = (a.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    elif a.dtype.kind not in "biuf":
        raise KerasImportError(
            f"layer {where!r}: a weight of shape {a.shape} is stored as {a.dtype} values "
            f"({a.dtype.kind!r}: not numbers), expected a float or integer dtype. The file is "
            "damaged or was edited: save the model again", path=path)
    return a


def _non_finite(a: np.ndarray) -> int:
    """How many values of a float array are NaN or infinite. Their sum is finite when they
    all are, unless it overflows, and costs a fraction of a count (no allocation): the count
    is taken only when the sum is not finite."""
    if a.dtype.kind != "f" or a.size == 0:
        return 0
    if a.size < 4096:  # counted at once: cheaper than entering errstate
        return int(a.size - np.count_nonzero(np.isfinite(a)))
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.sum(a, dtype=np.float32 if a.itemsize < 4 else None)):
            return 0
    return int(a.size - np.count_nonzero(np.isfinite(a)))


def _has_weights(spec) -> bool:
    """Whether a layer (a nested model: one of its layers) takes weights; a layer whose
    count depends on its config (``n_weights=None``) counts as one that does."""
    if spec.impl.subgraph is not None:
        return any(_has_weights(s) for s in spec.impl.subgraph.layers.values())
    return spec.impl.n_weights != 0


def _weighted_layers(graph: Graph, prefix: tuple = ()) -> list[str]:
    """``"path/to/layer (Class)"`` for every layer of ``graph`` (nested models' layers by
    their path) that takes weights, as :func:`_has_weights` reads them."""
    found = []
    for name, spec in graph.layers.items():
        if spec.impl.subgraph is not None:
            found += _weighted_layers(spec.impl.subgraph, prefix + (name,))
        elif _has_weights(spec):
            found.append(f"{'/'.join(prefix + (name,))!r} ({spec.class_name})")
    return found


def _refuse_weighted_layers(graph: Graph, path: str | None) -> None:
    """``build_model(config, None)`` on an architecture with weighted layers: refused,
    naming them (their weights would be looked up in an empty params tree when called)."""
    weighted = _weighted_layers(graph)
    if weighted:
        more = f" and {len(weighted) - 6} more" if len(weighted) > 6 else ""
        raise KerasImportError(
            "build_model(config, None) builds a model without weights, but the architecture "
            f"has layers that take weights: {', '.join(weighted[:6])}{more}. Pass their "
            "weights: load_keras(weights_file, config=config) reads a weights file (.keras, "
            ".weights.h5, legacy .h5) for this architecture, or give build_model a "
            "WeightSource (model_import._files) or a function graph -> WeightSource",
            path=path)


def _shared_hint(source: WeightSource, lpath: tuple, spec) -> str:
    """Why a Keras 3 archive may lack a layer's weights: one layer object in two models (a
    nested model and the model around it, or two nested models). Keras 3's ``.keras`` writes
    its weights once, under the first model that holds it, and Keras's own ``load_model``
    then fails on the file too ("expected 2 variables, but received 0"); a legacy ``.h5``
    stores them in both places."""
    if not isinstance(source, Keras3Weights):
        return ""
    order, cls = source.layer_order, _keras_class(spec)

    def paths(prefix: tuple) -> list[tuple]:  # the layers (not models) of that name and class
        found = []
        for n, c in order.get(prefix, ()):
            if prefix + (n,) in order:  # a nested model: its layers, in place
                found += paths(prefix + (n,))
            elif n == lpath[-1] and c == cls:
                found.append(prefix + (n,))
        return found

    others = ["/".join(p) for p in paths(()) if p != lpath]
    if not others:
        return ""
    return (f". A {spec.class_name} layer named {lpath[-1]!r} is also at {others}: where one "
            "layer object belongs to two models (a nested model and the model around it, "
            "two nested models), "
            "Keras 3's .keras format stores its weights once, and Keras's own load_model "
            "cannot load this file either. Save the model as a legacy .h5 "
            "(model.save('m.h5')), which stores them for each model, or build it without "
            "sharing the layer across models")


def _collect_params(graph: Graph, source: WeightSource, path: str | None,
                    prefix: tuple = ()) -> dict:
    params: dict[str, Any] = {}
    if not prefix and isinstance(source, LegacyH5Weights):
        source.align([n for n, spec in graph.layers.items() if _has_weights(spec)])
    for name, spec in graph.layers.items():
        lpath = prefix + (name,)
        if spec.impl.subgraph is not None:
            sub = _collect_params(spec.impl.subgraph, source, path, lpath)
            if sub:
                params[name] = sub
            continue
        if spec.impl.n_weights == 0:
            continue
        rank = spec.config.get("lora_rank")
        if spec.impl.weight_groups is not None and isinstance(source, Keras3Weights):
            ws = source.get(lpath, [spec.class_name], groups=spec.impl.weight_groups)
        elif (spec.impl.weight_groups is not None and spec.user_converter
              and isinstance(source, LegacyH5Weights)):
            # the converter reads its sublayers' arrays in its archive's order: a tf.keras
            # .h5 lists every sublayer's non-trainable ones last (by_sublayer_order)
            ws = source.get(lpath, [spec.class_name], by_sublayer=True)
        elif rank and isinstance(source, LegacyH5Weights):  # kernel + alpha / rank * a @ b
            ws = source.get(lpath, [spec.class_name],
                            lora_scale=float(spec.config.get("lora_alpha") or rank) / rank)
        else:
            ws = source.get(lpath, [spec.class_name])
        where = "/".join(lpath)
        if ws is None:
            raise KerasImportError(
                f"no weights found for layer {where!r} ({spec.class_name}); the weights file "
                "does not match the architecture" + _shared_hint(source, lpath, spec),
                path=path)
        if spec.impl.n_weights is not None and len(ws) != spec.impl.n_weights:
            if any(np.issubdtype(np.asarray(w).dtype, np.integer) for w in ws):
                raise KerasImportError(
                    f"layer {where!r} ({spec.class_name}) expects {spec.impl.n_weights} "
                    f"float weight arrays, the file has {len(ws)} with integer ones among "
                    f"them ({[(w.shape, str(w.dtype)) for w in ws]}): a quantized model "
                    "(model.quantize(...)). jaxsal computes in floating point, where "
                    "attributions are defined: load the model saved before quantization",
                    path=path)
            hint = ""
            if not ws and len(lpath) > 1 and isinstance(source, LegacyH5Weights):
                owners = source.unmatched_owners(lpath)
                why = source.layouts.get(lpath[0])
                if owners and isinstance(why, str):
                    hint = (
                        f". The file holds the weights of {lpath[0]!r} under other layer "
                        f"names ({owners[:6]}) than the architecture's ({lpath[-1]!r}): "
                        "Keras's load_weights then gives them to the layers by position, "
                        "the trainable weights of every layer first, which jaxsal follows "
                        f"where it knows each layer's counts; {why}. Load the file with the "
                        "architecture it holds (no config=), or load the weights into the "
                        "model in Keras and save it as .keras or .weights.h5")
            raise KerasImportError(
                f"layer {where!r} ({spec.class_name}) expects {spec.impl.n_weights} weight "
                f"arrays, the file has {len(ws)} (shapes {[w.shape for w in ws]})"
                f"{hint or _sublayer_hint(spec, source, lpath)}", path=path)
        arrays = [_as_numeric(w, where, path) for w in ws]
        for i, a in enumerate(arrays):
            bad = _non_finite(a)
            if bad:
                raise KerasImportError(
                    f"layer {where!r} ({spec.class_name}): its weight {i} (of "
                    f"{len(arrays)}, shape {a.shape}) holds {bad} NaN or infinite values "
                    f"of {a.size}; expected finite numbers (the model would compute NaN "
                    "outputs and attributions). The file is damaged, or the model was saved "
                    "after its training diverged: save a model whose weights are finite",
                    path=path)
        try:
            converted = spec.impl.convert_weights(arrays)
        except KerasImportError:  # the converter's own refusal
            raise
        except Exception as e:  # arrays of the right number but not of the expected shapes
            hint = (_sublayer_hint(spec, source, lpath)
                    or _regrouped_hint(graph, source, where, spec) or (
                        ". The weights belong to another architecture or the file is damaged "
                        "(load them with the config they were saved with)"))
            raise KerasImportError(
                f"layer {where!r} ({spec.class_name}): its weights do not fit its config "
                f"({type(e).__name__}: {e}); the file has arrays of shapes "
                f"{[a.shape for a in arrays]}{hint}", path=path) from e
        scalar_biases = [k for k, v in converted.items()
                         if (k == "bias" or k.endswith("_bias")) and np.ndim(v) == 0]
        if scalar_biases:  # it would broadcast: a layer with one bias for every unit
            raise KerasImportError(
                f"layer {where!r} ({spec.class_name}): its {scalar_biases[0]} is a single number "
                "(0-d), expected a vector (one value per unit). The file is damaged or was "
                "edited: save the model again", path=path)
        for k, want in (spec.impl.param_shapes or {}).items():
            got = np.shape(converted.get(k)) if k in converted else None
            if got is not None and (len(got) != len(want) or any(
                    w is not None and w != g for w, g in zip(want, got))):
                raise KerasImportError(
                    f"layer {where!r} ({spec.class_name}): its config implies a {k} of shape "
                    f"{tuple('?' if w is None else w for w in want)}, the weights file has "
                    f"{got}" + (_regrouped_hint(graph, source, where, spec) or
                                "; the weights belong to another architecture (load them "
                                "with the config they were saved with)"), path=path)
        dtypes = {k: _param_dtype(v) for k, v in converted.items()}  # (None: an int weight)
        wide = jnp.float64 in dtypes.values()
        params[name] = {k: jnp.asarray(v, dtype=jnp.float64 if wide and dtypes[k] else dtypes[k])
                        for k, v in converted.items()}
    extra = source.unused() if not prefix and hasattr(source, "unused") else []
    # a legacy .h5 names an unregistered class of the user's by its bare class name
    own = [n for n in extra if n in graph.layers and _weightless_builtin(graph.layers[n])
           and isinstance(source, LegacyH5Weights)]
    if own:
        spec = graph.layers[own[0]]
        shapes = [np.shape(w) for w in source.get((own[0],), [spec.class_name]) or []]
        raise UnsupportedLayerError(
            own[0], spec.class_name, path=path,
            detail=f"the weights file holds weights for {extra[:8]}, which no layer of the "
            f"architecture takes: for this one {len(shapes)} array(s) (shapes {shapes}), "
            f"where Keras's {spec.class_name}, whose converter the importer gave it, has "
            f"none. Either it is a class of the model's own code named like Keras's "
            f"{spec.class_name}, saved unregistered, which a legacy .h5 records by its bare "
            "name only (tf.keras too then builds its own layer of that name): where the "
            f"model holds no Keras {spec.class_name}, give it its converter under that name "
            f"(custom_layers={{{spec.class_name!r}: converter}}, which serves every "
            f"{spec.class_name} layer of the model), else decorate the class with "
            "@keras.saving.register_keras_serializable(package='mypkg'), save the model "
            f"again and pass custom_layers={{'mypkg>{spec.class_name}': converter}}; or the "
            "weights belong to another architecture or the file was edited: load them with "
            "the config they were saved with")
    if extra:
        raise KerasImportError(
            f"the weights file holds weights for {extra[:8]}, which no layer of the "
            "architecture takes (it has no layer of that name, or one without weights: another "
            "class). The weights belong to another architecture or the file was edited: load "
            "them with the config they were saved with", path=path)
    return params


def _regrouped_hint(graph: Graph, source: Any, layer: str | None, spec: Any = None) -> str:
    """What to add to the error of a user's converter that failed on arrays a legacy
    ``.h5`` gave it regrouped by sublayer (``""`` if none): which, in which order, and how
    tf.keras orders a frozen sublayer's and a dict's. ``spec``: the layer's, where known
    (else found in ``graph`` by its path ``layer``)."""
    got = getattr(source, "regrouped", {}).get(layer) if layer else None
    if not got:
        return ""
    sub = graph
    for name in layer.split("/") if spec is None else ():  # inside nested models too
        spec = sub.layers.get(name) if sub is not None else None
        if spec is None:  # a layer name with "/" in it
            break
        sub = spec.impl.subgraph
    groups = f"={spec.impl.weight_groups}" if spec is not None else ""
    listed = ", ".join(f"{n} {tuple(shape)}" for n, shape in got)
    return (f". Its converter names weight_groups{groups}, and its arrays came from a legacy "
            f".h5, regrouped by sublayer as a .keras archive keeps them: the layer's own, "
            f"then each sublayer's in the order its first array comes in the file: {listed}. "
            "tf.keras's .h5 lists the arrays of a sublayer whose weights are all "
            "non-trainable (made with trainable=False, or set so before saving) after those "
            "of every sublayer with trainable ones, and a dict attribute's sublayers by "
            "sorted key (its layer.weights order; the archive numbers them in insertion "
            "order, heads/dense the dict's first value): name weight_groups in that order "
            "(the order of their first arrays in the file); a .keras archive is read in the "
            "order the converter names, so one converter then reads both")


def _weightless_builtin(spec) -> bool:
    """Whether a layer got a built-in converter of a Keras layer without weights."""
    return (not spec.user_converter and spec.impl.subgraph is None and spec.impl.n_weights == 0)


def _fingerprint(config: Mapping[str, Any], keras_version: str,
                 keras_backend: str | None) -> str | None:
    """A digest of an architecture config (arrays in it by value), the Keras version and
    the backend: :attr:`Graph.fingerprint` (``None`` for a config JSON cannot write)."""
    def plain(o):
        if isinstance(o, (np.ndarray, np.generic)):
            return np.asarray(o).tolist()
        raise TypeError(type(o).__name__)

    try:
        text = json.dumps([config, keras_version, keras_backend], sort_keys=True, default=plain)
    except (TypeError, ValueError):  # keys of mixed types, objects other than arrays
        return None
    return hashlib.sha256(text.encode()).hexdigest()


def _check_custom_layers(custom_layers: Any) -> dict | None:
    """``custom_layers=`` as a dict of Keras class names to converters, or a ``TypeError``."""
    if custom_layers is None:
        return None
    bad = ([f"a {type(custom_layers).__name__}"] if not isinstance(custom_layers, Mapping) else
           [f"{k!r}: {type(v).__name__}" for k, v in custom_layers.items()
            if not (isinstance(k, str) and k) or not callable(v)])
    if bad:
        raise TypeError(f"expected custom_layers as {{class_name: converter}}, a dict of Keras "
                        f"class names (str) to converter functions (config, ctx) -> LayerImpl, "
                        f"e.g. {{'ChannelScale': channel_scale}}; got {', '.join(bad)}")
    return dict(custom_layers)


def _declared_batch_sizes(config: Any) -> list[int]:
    """The batch sizes the inputs of an architecture declare (``keras.Input(batch_size=3)``:
    ``batch_shape`` / ``batch_input_shape`` starting with a number), nested models' too."""
    found: list[int] = []

    def walk(o):
        if isinstance(o, Mapping):
            for key in ("batch_shape", "batch_input_shape"):
                shp = o.get(key)
                if isinstance(shp, list) and shp and type(shp[0]) is int:
                    found.append(shp[0])
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(config)
    return sorted(set(found))


def _batch_hint(config: Any, error: str = "") -> str:
    """What to add to a load error (``error``, its message) of a model whose inputs declare
    a batch size: the importer traces it on a batch of one, then of two where an output's
    first axis is not 1 (and runs any batch size), which operations given that batch size
    (``ops.reshape(x, (3, 8))``) cannot take. Where ``error`` already says what to write
    (``ops.slice``, ``ops.broadcast_to``), the reshape advice is left out."""
    sizes = _declared_batch_sizes(config)
    if not sizes:
        return ""
    hint = (f". The model's inputs declare batch_size={', '.join(map(str, sizes))} "
            "(keras.Input(batch_size=...)), which jaxsal does not keep: it runs every batch "
            "size and traces the model on a batch of one, then of two where an output's "
            "first axis is not 1, where an operation given the declared batch size fails")
    if "save the model again" in error:
        return hint
    return hint + (". If this layer is one, write its batch axis as -1 or None "
                   "(keras.ops.reshape(x, (-1, 8)), or layers.Reshape), save the model again "
                   "and load that")


def build_model(config: Mapping[str, Any], source: WeightSource | Callable | None, *,
                keras_version: str = "3", path: str | None = None, head: str = "saved",
                custom_layers: Mapping[str, Callable] | None = None,
                keras_backend: str | None = None) -> KerasModel:
    """Build a :class:`KerasModel` from an architecture config and a weight source.

    The lower-level half of :func:`load_keras`, for architectures that come from elsewhere.

    Args:
      config: ``{"class_name": "Functional" | "Sequential", "config": {...}}`` as
        ``model.to_json()`` writes it.
      source: a :class:`~model_import._files.WeightSource`, a function ``graph -> source``
        (for Keras 3 weight files, whose keys depend on the architecture), or ``None`` for a
        model without weights (an architecture with layers that take weights is then
        refused, naming them: load its weights file with ``load_keras(file, config=...)``).
      keras_version: the version that wrote the config (activation semantics differ).
      path: the file name, used in error messages.
      head: see :meth:`KerasModel.with_head`.
      custom_layers: ``{class_name: converter}``, see :func:`register_layer`.
      keras_backend: see :func:`load_keras`.
    """
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; expected one of {HEADS}")
    custom_layers = _check_custom_layers(custom_layers)
    if not isinstance(config, Mapping) or "class_name" not in config:
        raise KerasImportError("the architecture config must be a dict with 'class_name' and "
                               "'config' (what model.to_json() writes)", path=path)
    if functional_subclass(config):  # MyModel(inputs, outputs): its recorded graph
        config = {**config, "class_name": "Functional"}
    inner = config.get("config")
    if config["class_name"] not in MODEL_CLASSES and isinstance(inner, Mapping) and \
            isinstance(inner.get("layers"), list) and "input_layers" not in inner:
        # a subclass of keras.Sequential: Keras's get_config records its layers
        raise KerasImportError(
            f"expected a Sequential or Functional model, got class {config['class_name']!r}, "
            "a subclass of keras.Sequential: its config records its layers, but its Python "
            "code (an overridden call(), which the file does not record) may compute other "
            "than those layers one after another, so it is not read as a Sequential. Where it "
            "does run them in order, save keras.Model(model.inputs, model.outputs) (or "
            "keras.Sequential(model.layers)), a plain model with the same layers and weights, "
            "and load that; otherwise rebuild what "
            "call() computes as keras.Model(inputs, outputs), copy the weights "
            "(new.set_weights(old.get_weights())) and save that.", path=path)
    if config["class_name"] not in MODEL_CLASSES:
        raise KerasImportError(
            f"expected a Sequential or Functional model, got class {config['class_name']!r}, "
            "whose config records no graph ('layers', 'input_layers' and 'output_layers'). A "
            "keras.Model subclass that makes its layers in __init__ saves none that can be "
            "read without its Python code; one built the "
            "Functional way, MyModel(inputs, outputs), loads as its graph. If the subclass "
            "builds a Functional graph inside its own __init__ (super().__init__(inputs, "
            "outputs)), Keras saves only its constructor's arguments: save "
            "keras.Model(model.inputs, model.outputs), a plain Functional model with the same "
            "layers and weights. Otherwise rebuild the model as keras.Model(inputs, outputs) "
            "or keras.Sequential, copy the weights (new.set_weights(old.get_weights())) and "
            "save that.", path=path)
    if keras_backend is not None:
        keras_backend = keras_backend_of(keras_backend, "keras_backend")
    if keras_major(keras_version) < 3:  # computed as TensorFlow (ConvertContext.backend)
        if keras_backend not in (None, "tensorflow"):
            warnings.warn(
                f"{path or 'the model'}: keras_backend={keras_backend!r} is ignored: a Keras 2 "
                f"file (Keras {keras_version}) is always computed as tf.keras computes it, on "
                "TensorFlow, and model.keras_backend says 'tensorflow'. Leave keras_backend "
                "out for Keras 2 files", UserWarning, stacklevel=2)
        keras_backend = "tensorflow"
    builder = GraphBuilder(keras_version=keras_version, path=path, custom_layers=custom_layers,
                           keras_backend=keras_backend)
    graph = builder.build(config)
    if builder.builtin_only:
        graph = dataclasses.replace(graph, fingerprint=_fingerprint(
            config, keras_version, keras_backend))
    if source is None:
        _refuse_weighted_layers(graph, path)
    if callable(source):
        source = source(graph)
    params = _collect_params(graph, source, path) if source is not None else {}
    model = KerasModel(graph, params, head=head, keras_version=keras_version, source=path,
                       keras_backend=keras_backend)
    try:  # check the whole forward once, abstractly: shapes, weights and wiring
        model._output_shapes()
    except LayerCallError as e:
        hint = (padding_hint(graph, keras_version) + _batch_hint(config, str(e))
                + _regrouped_hint(graph, source, e.layer))
        raise KerasImportError(str(e).rstrip(".") + hint if hint else str(e), path=path) from e
    return model


_KERAS_OPTIONS = {
    "custom_objects": (
        "jaxsal runs no Keras classes or functions: a layer class of your own needs a converter, "
        "custom_layers={'MyLayer': converter} (model_import.register_layer), and an activation "
        "function of your own model_import.register_activation(name, fn); losses, metrics and "
        "optimizers are not read (README, 'Custom layers')"),
    "compile": (
        "the training configuration (optimizer, loss, metrics) is never read or compiled, so "
        "there is nothing to turn off: drop compile="),
    "safe_mode": (
        "jaxsal never runs code stored in a file: a Lambda layer's Python function is refused "
        "whatever the mode, so there is nothing to turn off: drop safe_mode= (a preprocessing "
        "function called on the Keras tensor itself, without a Lambda, is recorded as "
        "operations and loads)"),
}


def _architecture_version(recorded: str, in_file: str, file_records: bool,
                          path: str) -> str:
    """The Keras version to read a file with when ``config=`` records ``recorded`` and the
    file ``in_file`` (``file_records``: the file itself says so; weights-only files of the
    new layout do not). The architecture's major version wins, with a warning where the
    file records another; of the same major, a bare ``"3"`` (a Keras 3 config's marks, no
    number) keeps the file's full version (its minor version's semantics)."""
    if keras_major(recorded) != keras_major(in_file):
        if file_records:
            warnings.warn(
                f"{path}: the weights file records Keras {in_file}, the architecture given as "
                f"config= is Keras {recorded}'s: read as Keras {keras_major(recorded)} "
                f"computes it (hard_sigmoid and other semantics differ between Keras 2 and "
                "3), as that Keras loading these weights into the architecture does. If the "
                "model was built with the file's Keras, pass that Keras's model.to_json()",
                UserWarning, stacklevel=3)
        return recorded
    return in_file if recorded == "3" else recorded


def _refuse_keras_options(options: Mapping[str, Any]) -> None:
    for key in options:
        if key in _KERAS_OPTIONS:
            raise TypeError(f"load_keras() has no {key}= option (it is keras.models.load_model's):"
                            f" {_KERAS_OPTIONS[key]}")
    key = next(iter(options))
    raise TypeError(f"load_keras() got an unexpected keyword argument {key!r}; its options are "
                    "head=, config=, custom_layers= and keras_backend=")


def _file_contents(data: bytes) -> bool:
    """Whether ``data``, given as a path, is rather a file's contents (``open(f,
    "rb").read()``): a zip's or HDF5's signature, a NUL byte (no path holds one), or more
    bytes than a path takes (4096, Linux's PATH_MAX)."""
    return data.startswith((b"PK", b"\x89HDF")) or b"\0" in data or len(data) > 4096


def load_keras(path: str | os.PathLike, *, head: str = "saved", config: Any = None,
               custom_layers: Mapping[str, Callable] | None = None,
               keras_backend: str | None = None, **keras_options: Any) -> KerasModel:
    """Load a Keras model file into a pure JAX :class:`KerasModel`, without TensorFlow.

    Args:
      path: a legacy HDF5 file (``model.save("m.h5")`` of Keras 2/tf.keras or Keras 3), a
        ``.keras`` archive (Keras 3, or tf.keras 2.13+) or the directory of an unzipped one
        (``model.save(dir, zipped=False)``), or a weights-only file
        (``m.weights.h5`` of Keras 3 or tf.keras 2.12+, the ``m.weights.json`` index of
        Keras 3's sharded weights, or a legacy ``save_weights`` HDF5) together with
        ``config``.
      head: ``"saved"`` (default), ``"logits"``, ``"softmax"``, ``"sigmoid"`` or
        ``"sigmoid_complement"``; see :meth:`KerasModel.with_head`.
      config: the architecture, for weights-only files (or to override the file's): a dict,
        a ``model.to_json()`` string, or the path of a JSON file (e.g. a ``.keras``
        archive's ``config.json``), of a ``.keras`` archive or of an unzipped ``.keras``
        directory (their ``config.json`` is read).
      custom_layers: ``{class_name: converter}`` for layers without a built-in converter
        (see :func:`model_import.register_layer`).
      keras_backend: the backend Keras 3 ran the model on: ``"jax"``, ``"numpy"``,
        ``"tensorflow"`` or ``"torch"``. A few layers compute differently on them (bicubic
        resizing on TensorFlow and PyTorch, unrolled RNNs with ``zero_output_for_mask`` on
        masked inputs on TensorFlow and PyTorch, masked RNNs with an ``initial_state`` or a
        cell of the user's own whose output is not its first state, and on PyTorch
        layer/RMS normalization over
        axes other than the last, asymmetric "same" average pooling, "symmetric" padding;
        README, "The backend Keras ran on"). ``None``
        (default): the backend a Keras 3 ``.h5`` records, else (a ``.keras`` archive, which
        records none) as on JAX/NumPy, with a :class:`BackendWarning` for each such layer
        (``argpartition`` warns on NumPy too: the order inside its partitions is JAX's).
        A Keras 2 file computes as TensorFlow, whatever is given (with a warning where
        another backend is), and ``model.keras_backend`` is then ``"tensorflow"``.
      **keras_options: none is accepted; ``keras.models.load_model``'s ``custom_objects``,
        ``compile`` and ``safe_mode`` are refused with what to do instead.
    Raises:
      KerasImportError: unreadable, corrupt or non-Keras files, mismatched weights.
      UnsupportedLayerError: a layer class without converter (names the layer and class).
      ValueError: an unknown ``head`` or ``keras_backend``; a head the output cannot have
        (``"softmax"`` on a one-unit output, constant; ``"logits"`` where the activation
        cannot be removed).
      TypeError: a path that is no ``str``, ``bytes`` or ``os.PathLike`` (an
        ``io.BytesIO``), or bytes that are a file's contents rather than its name (the
        error says to write them to a file first); ``custom_layers`` that is not a dict
        of class names to converters; an
        option of ``keras.models.load_model`` (``custom_objects``, ``compile``,
        ``safe_mode``), which has no meaning here (the error says what to use instead), or
        any other unknown keyword.
    """
    if keras_options:
        _refuse_keras_options(keras_options)
    name = getattr(path, "name", None)
    if hasattr(path, "read") and isinstance(name, (str, os.PathLike)) and os.path.isfile(name):
        path = name  # an open file: read from its path (h5py and zipfile reopen it)
    if not isinstance(path, (str, bytes, os.PathLike)) or (
            isinstance(path, bytes) and _file_contents(path)):
        raise TypeError(
            f"load_keras takes a path (a str or os.PathLike) of a Keras file or directory, "
            f"got {type(path).__name__}"
            + (f" of {len(path)} bytes that are a file's contents, not its name"
               if isinstance(path, bytes) else "")
            + ". For a model held in memory (bytes, io.BytesIO), "
            "write it to a file first (tempfile.NamedTemporaryFile(suffix='.keras')) and pass "
            "that file's name")
    path = os.fsdecode(os.fspath(path))
    if keras_backend is not None:
        keras_backend = keras_backend_of(keras_backend, "keras_backend")
    custom_layers = _check_custom_layers(custom_layers)
    kind = sniff(path)
    try:
        if kind in ("zip", "dir"):
            cfg, version, h5 = (read_keras_zip if kind == "zip" else read_keras_dir)(path)
            legacy = None
        elif kind == "json":  # sharded weights: no architecture, no version (as .weights.h5)
            cfg, version, legacy, h5 = None, "3", None, read_sharded_weights(path)
        else:
            cfg, version, legacy, h5 = read_h5(path)
    except KerasImportError:
        raise
    except Exception as e:
        if not _raised_by_h5py(e):
            raise
        raise KerasImportError(f"the file's HDF5 structure cannot be read ({type(e).__name__}: "
                               f"{e}); the file is corrupt or truncated. Save the model again",
                               path=path) from e
    try:  # the file is closed however this ends (an error here, a model built)
        if config is not None:
            cfg = parse_config(config, path)
            if "class_name" not in cfg and "config" not in cfg and "layers" in cfg:
                # model.get_config(): a Functional model's names its inputs and outputs, a
                # Sequential model's only its layers
                functional = "input_layers" in cfg or "output_layers" in cfg
                cfg = {"class_name": "Functional" if functional else "Sequential", "config": cfg}
            # the architecture's record of the Keras that wrote it wins: a tf.keras to_json()
            # with a .weights.h5 (which records no version) is Keras 2, not 3; a Keras 3
            # to_json() with tf.keras's weights (.h5, recording 2.x) is Keras 3, as Keras 3
            # loading them computes
            recorded = config_keras_version(cfg)
            if recorded:
                version = _architecture_version(
                    keras_version_of(recorded, "the architecture's keras_version", path),
                    version, kind in ("zip", "dir") or (
                        legacy is not None and "keras_version" in attrs_of(h5)), path)
        if cfg is None:
            raise KerasImportError(
                "the file holds weights but no architecture (a save_weights / .weights.h5 file); "
                "pass the architecture as config= (model.to_json() or a config.json; jaxsal: "
                "--config model.json)", path=path)
        if not isinstance(cfg, dict):
            raise KerasImportError(
                f"the architecture config is a JSON {type(cfg).__name__} ({str(cfg)[:60]}), "
                "expected an object with 'class_name' and 'config' (what model.to_json() writes). "
                "The file is damaged or was edited: save the model again", path=path)
        if parse_version(version).major < 2:
            raise KerasImportError(
                f"written by Keras {version}: Keras 1 files are not supported (Keras 1 names its "
                "layers' options and weights differently). Load the model with Keras 2 (e.g. "
                "standalone keras 2.2.4, which reads Keras 1 files) and save it again with "
                "model.save('model.h5')", path=path)
        if legacy is not None:
            source: Any = lambda graph: legacy.bind(_layer_order(graph),  # noqa: E731
                                                    _legacy_layouts(graph))
        else:
            source = lambda graph: Keras3Weights(h5, path, _layer_order(graph))  # noqa: E731
        try:
            if legacy is not None:  # reads the file's layer_names
                cfg = legacy.name_nested_sequentials(cfg)
            if keras_backend is None and kind == "h5":  # a legacy .h5 records it
                keras_backend = recorded_backend(h5)
            return build_model(cfg, source, keras_version=version, path=path, head=head,
                               custom_layers=custom_layers, keras_backend=keras_backend)
        except KerasImportError:
            raise
        except Exception as e:
            if isinstance(e, OSError) or _raised_by_h5py(e):  # damaged or truncated data
                raise KerasImportError(f"the weights cannot be read ({type(e).__name__}: {e}); "
                                       "the file may be corrupt or truncated", path=path) from e
            if isinstance(e, (KeyError, AttributeError, TypeError, IndexError)):
                raise KerasImportError(f"malformed Keras file: {e!r}", path=path) from e
            raise
    finally:
        h5.close()
