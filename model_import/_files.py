"""Reading Keras files without Keras: legacy HDF5, ``.keras`` zips (Keras 3 and tf.keras 2.13+),
weights-only files.

Each reader returns the architecture config (a dict) when the file has one, the Keras
version that wrote it, and a :class:`WeightSource` answering "the weight arrays of the layer
at this path, in ``layer.weights`` order".
"""

from __future__ import annotations

import io
import json
import lzma
import os
import re
import uuid
import zipfile
import zlib
from typing import Any, Sequence

import h5py
import numpy as np

from model_import._errors import KerasImportError
from model_import._heaps import attrs_of, register
from model_import._version import is_version_string, keras_backend_of

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"


def _magic(head: bytes) -> str | None:
    """``"h5"`` or ``"zip"`` where ``head``, a file's first 8 bytes, starts an HDF5 file or a
    zip archive (a ``.keras``, an ``.npz``); else ``None``."""
    if head == _HDF5_MAGIC:
        return "h5"
    if head[:4] == _ZIP_MAGIC:
        return "zip"
    return None


def _decode(v):
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.ndarray):
        return [_decode(x) for x in v.tolist()]
    if isinstance(v, list):
        return [_decode(x) for x in v]
    return v


def _list_attr(obj, name: str) -> list[str] | None:
    """A list attribute of a legacy HDF5 group (``weight_names``, ``layer_names``), or None.

    HDF5 keeps attributes in the object header, which holds at most 64 KiB; Keras's legacy
    writers (Keras 2, tf.keras, Keras 3's ``.h5``) split a longer list into consecutive
    chunks ``<name>0``, ``<name>1``, ... (a nested NASNetMobile's ``weight_names`` is three
    chunks). The chunks are concatenated in order.
    """
    attrs = attrs_of(obj)
    if name in attrs:
        return [str(n) for n in _decode(attrs[name])]
    if f"{name}0" not in attrs:
        return None
    out: list[str] = []
    i = 0
    while f"{name}{i}" in attrs:
        out.extend(str(n) for n in _decode(attrs[f"{name}{i}"]))
        i += 1
    return out


def object_keys(class_names: Sequence[str]) -> list[str]:
    """The keys Keras 3 gives a list of saved objects (layers of a model, cells of a
    ``StackedRNNCells``) in its ``.keras``/``.weights.h5`` files: the snake_case class name,
    numbered from the second object of a class on (``lstm_cell``, ``lstm_cell_1``)."""
    used: dict[str, int] = {}
    out = []
    for cls in class_names:
        base = _snake(cls)
        k = used.get(base, 0)
        used[base] = k + 1
        out.append(base if k == 0 else f"{base}_{k}")
    return out


#: Config class names whose Python class (which Keras 3 keys saved objects by) is named
#: otherwise: Keras registers ``GroupedQueryAttention`` as ``GroupQueryAttention``.
_PYTHON_CLASS = {"GroupQueryAttention": "GroupedQueryAttention"}


def _snake(name: str) -> str:
    # Keras 3 keys saved objects by the snake_case of their class name (keras.src.utils.naming).
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    name = re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()
    return name


def merge_lora(names: Sequence[str], arrays: list[np.ndarray], scale: float
               ) -> list[np.ndarray]:
    """A LoRA layer's arrays as Keras computes with them: ``kernel + scale * (a @ b)`` first
    (as without LoRA), the other arrays in their order, ``lora_kernel_a``/``_b`` dropped
    (``embeddings`` and ``lora_embeddings_a``/``_b`` for ``Embedding``); as given where the
    names hold no such triple."""
    short = [n.rsplit("/", 1)[-1].split(":")[0] for n in names]
    for base in ("kernel", "embeddings"):  # Dense, EinsumDense, convolutions; Embedding
        if {base, f"lora_{base}_a", f"lora_{base}_b"} <= set(short):
            break
    else:
        return arrays
    k, a, b = (short.index(n) for n in (base, f"lora_{base}_a", f"lora_{base}_b"))
    merged = arrays[k] + np.asarray(scale, arrays[k].dtype) * np.matmul(arrays[a], arrays[b])
    # enable_lora freezes the kernel, which then comes after the trainable weights: back in
    # front, where the layer without LoRA has it (kernel, bias)
    return [merged] + [w for i, w in enumerate(arrays) if i not in (k, a, b)]


class WeightSource:
    """Where a model's weights live. ``get(path)`` returns a layer's arrays in Keras order."""

    def get(self, path: Sequence[str], class_names: Sequence[str]) -> list[np.ndarray] | None:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__


class LegacyH5Weights(WeightSource):
    """``model_weights/<layer>`` groups with a ``weight_names`` attribute (Keras 2, tf.keras,
    and Keras 3's legacy ``.h5`` writer); also the root of a legacy ``save_weights`` file.

    A nested model (a layer that is itself a model) stores the weights of all its layers in
    one group, in the legacy order of the nested model's weights: the trainable weights of
    every layer, then the non-trainable ones (a frozen layer's all non-trainable). Keras
    loads the group by position in that order, whatever the names. Each array is assigned
    to its layer by name where the names identify every layer: a weight named
    ``.../<layer>/<var>`` belongs to the layer with the longest such name suffix (layer names
    may contain ``/``, as in tf.keras's MobileNetV3), which for the files Keras writes is the
    same assignment. Where they do not (layers renamed, or an architecture rebuilt in code
    whose layers Keras named on), by position, as Keras does, from the architecture's
    ``layouts`` (:meth:`bind`).
    """

    def __init__(self, group: h5py.Group, path: str):
        self.group = group
        self.path = path
        self.layer_order: dict | None = None
        self._nested: dict[str, dict[tuple, list[str]]] = {}
        self.used: set[str] = set()
        self._fetched: set[tuple] = set()
        self._unassigned: list[str] = []
        self.alias: dict[str, str] = {}  # architecture layer name -> the file's (align)
        self.layouts: dict[str, list[tuple[tuple, int, int]] | str] = {}
        #: ``{layer path: [(name, shape), ...]}``: the arrays of each layer read
        #: ``by_sublayer``, in the order given to its converter
        self.regrouped: dict[str, list[tuple[str, tuple]]] = {}

    def bind(self, layer_order: dict, layouts: dict | None = None) -> "LegacyH5Weights":
        """Tell the source the architecture: ``layer_order`` ``{container path: [(name,
        class), ...]}``; ``layouts`` ``{nested model: [(layer path, n_trainable,
        n_non_trainable), ...]}``, the layers with weights of each nested model at the top
        in Keras's order with how many of their legacy weights are trainable, or a sentence
        saying which layer's counts are not known."""
        self.layer_order = layer_order
        self.layouts = dict(layouts or {})
        return self

    def align(self, weighted: Sequence[str]) -> None:
        """Match the architecture's top-level layers with weights (``weighted``, in order)
        to the file's by position where the file does not hold them by name: Keras loads a
        legacy file's weights so (``load_weights(by_name=False)``), into an architecture
        rebuilt in code whose layers Keras named on (``dense_3`` for ``dense``). Nothing
        changes where every such layer is in the file by name or the counts differ (then the
        file belongs to another architecture, which the weight checks report)."""
        names = [n for n in _list_attr(self.group, "layer_names") or []
                 if n in self.group and self._names(self.group[n])]
        if all(w in self.group for w in weighted) or len(names) != len(weighted):
            return
        self.alias = {w: n for w, n in zip(weighted, names) if w != n}

    def unused(self) -> list[str]:
        """The weights no layer asked for: layers of ``layer_names`` with weights, arrays of
        a nested model that belong to none of its layers or to one without weights (Keras 2
        refuses such a file: "a weight file containing N layers into a model with M")."""
        names = _list_attr(self.group, "layer_names") or []
        return [n for n in names if n not in self.used and n in self.group
                and self._names(self.group[n])] + self._unassigned + [
            "/".join(p) for nested in self._nested.values() for p, ws in nested.items()
            if ws and p not in self._fetched]

    def _names(self, g) -> list[str]:
        return _list_attr(g, "weight_names") or []

    def unmatched_owners(self, path: Sequence[str]) -> list[str]:
        """The layer names (``owner`` of ``owner/var``) of the weights of the nested model
        holding ``path`` that none of its layers took: the file's names for layers that the
        architecture names otherwise."""
        top = self.alias.get(path[0], path[0])
        return sorted({u.split(": ", 1)[1].rsplit("/", 1)[0] for u in self._unassigned
                       if u.startswith(top + ": ") and "/" in u.split(": ", 1)[1]})

    def name_nested_sequentials(self, cfg: dict) -> dict:
        """``cfg`` with names for the unnamed nested models of a Sequential model.

        Keras 2.1 writes a Sequential's config as the bare list of its layers, so a
        Sequential nested in a Sequential has no name in the architecture. Its weights group
        has one, and the file's ``layer_names`` lists the outer model's layers in order:
        such an entry takes the name at its position (when the counts agree)."""
        names = _list_attr(self.group, "layer_names")
        entries = cfg.get("config") if cfg.get("class_name") == "Sequential" else None
        if not names or not isinstance(entries, list) or len(entries) != len(names):
            return cfg
        return dict(cfg, config=[
            dict(e, name=n) if isinstance(e, dict) and isinstance(e.get("config"), list)
            and not e.get("name") else e for e, n in zip(entries, names)])

    def _assign_nested(self, model: str, top: str) -> dict[tuple, list[str]]:
        """``{layer path: weight names}`` of the nested model ``model`` of the architecture,
        whose weights the file holds in its group ``top``: by name where the names give
        every layer with weights some and every weight a layer, else by position (Keras's
        way) where the layout is known."""
        if top in self._nested:
            return self._nested[top]
        layers = [c + (n,) for c, ls in (self.layer_order or {}).items()
                  if c[:1] == (model,) for n, _ in ls]
        containers = set(self.layer_order or {})  # the nested models: no weights of their own
        names = self._names(self.group[top])
        out: dict[tuple, list[str]] = {}
        unassigned = []
        for wname in names:
            owner = wname.rsplit("/", 1)[0] if "/" in wname else ""
            best = self._owner_layer(owner, layers, containers)
            if best is not None:
                out.setdefault(best, []).append(wname)
            else:
                unassigned.append(wname)
        layout = self.layouts.get(model)
        # names that leave a layer without weights, or weights without a layer where the
        # counts agree (tf.keras's adapted Normalization names its weights "mean:0"); a
        # name for every layer and more weights: weights of layers the architecture lacks
        if isinstance(layout, list) and (any(p not in out for p, _, _ in layout) or (
                unassigned and len(names) == sum(t + n for _, t, n in layout))):
            out, unassigned = self._by_position(model, top, names, layout), []
        self._unassigned += [f"{top}: {w}" for w in unassigned]
        self._nested[top] = out
        return out

    def _by_position(self, model: str, top: str, names: list[str],
                     layout: list[tuple[tuple, int, int]]) -> dict[tuple, list[str]]:
        """The weight names of the group ``top`` given to the layers of the nested model
        ``model`` as Keras's ``load_weights`` gives them: the first ``n_trainable`` of the
        group's trainable part and the first ``n_non_trainable`` of its non-trainable part
        (after all the trainable ones) to the first layer, and so on."""
        def listing(pairs):
            pairs = list(pairs)
            text = ", ".join(f"{a}: {b}" for a, b in pairs[:10])
            return text + (f", ... ({len(pairs)} layers)" if len(pairs) > 10 else "")

        want = sum(t + n for _, t, n in layout)
        owners: dict[str, int] = {}
        for w in names:
            o = w.rsplit("/", 1)[0] if "/" in w else w
            owners[o] = owners.get(o, 0) + 1
        if want != len(names):
            raise KerasImportError(
                f"the nested model {model!r}: its layers with weights take "
                f"{want} arrays ({listing(('/'.join(p[1:]), t + n) for p, t, n in layout)}), "
                f"the file's group {top!r} holds {len(names)} "
                f"({listing(owners.items())}), and their names are not the layers' (Keras "
                "loads a legacy .h5's nested weights by position, and refuses this file as "
                "well: 'Weight count mismatch'). The weights belong to another architecture: "
                "load the file with the architecture it was saved with", path=self.path)
        out: dict[tuple, list[str]] = {}
        t_at, n_at = 0, sum(t for _, t, _ in layout)
        for p, t, n in layout:
            out[p] = names[t_at:t_at + t] + names[n_at:n_at + n]
            t_at, n_at = t_at + t, n_at + n
        # Keras does not look at the names; where one layer of the file would give its
        # weights to two layers of the architecture, the two do not line up (another
        # architecture, or counts the importer has wrong): refused, not guessed
        took: dict[str, list[tuple]] = {}
        for p, ws in out.items():
            for w in ws:
                if "/" in w and p not in took.setdefault(w.rsplit("/", 1)[0], []):
                    took[w.rsplit("/", 1)[0]].append(p)
        split = {o: ps for o, ps in took.items() if len(ps) > 1}
        if split:
            o, ps = next(iter(split.items()))
            raise KerasImportError(
                f"the nested model {model!r}: the file names its layers otherwise than the "
                f"architecture ({listing(owners.items())}), and in Keras's order (the "
                "trainable weights of every layer, then the non-trainable ones) the weights "
                f"of the file's {o!r} would go to {len(ps)} layers "
                f"({', '.join(repr('/'.join(q[1:])) for q in ps)}): the layers do not line up. "
                "The weights belong to another architecture (or its layers were frozen "
                "otherwise than when saved): load the file with the architecture it was "
                "saved with", path=self.path)
        return out

    @staticmethod
    def _owner_layer(owner: str, layers: list[tuple],
                     containers: frozenset | set = frozenset()) -> tuple | None:
        """The layer (path) of a nested model that owns weights named ``owner/<var>``.

        ``owner`` is the layer's name, after the scopes of the models holding it (``seq/``
        in Keras 3's legacy ``.h5`` of a Sequential, the nested models' names in tf.keras's)
        and before those of its own sublayers: a layer wrapping others or made of sublayers
        names its weights after itself and its inner layers (``td/dense/kernel`` for
        ``TimeDistributed(Dense)`` named ``td``, ``lstm/lstm_cell/kernel``,
        ``bidi/forward_gru/gru_cell/kernel``, ``block/proj/kernel`` for a custom layer's
        ``self.proj``). The owner is the layer (not a nested model: ``containers``) whose
        name is a run of ``owner``'s segments (layer names may hold ``/``, as tf.keras's
        MobileNetV3's) starting earliest, then the longest, then the least deeply nested:
        ``block/proj`` is ``block``'s even where the nested model has a layer named
        ``proj`` too."""
        segs = owner.split("/") if owner else []
        best, best_key = None, None
        for lpath in layers:
            if lpath in containers:
                continue
            n = lpath[-1].count("/") + 1
            for start in range(len(segs) - n + 1):
                if "/".join(segs[start:start + n]) == lpath[-1]:
                    key = (start, -n, len(lpath))
                    if best_key is None or key < best_key:
                        best, best_key = lpath, key
                    break
        return best

    def get(self, path, class_names, lora_scale: float | None = None,
            by_sublayer: bool = False):
        """``lora_scale``: for a layer with LoRA enabled (``lora_rank`` in its config), the
        ``lora_alpha / lora_rank`` by which its ``lora_kernel_a @ lora_kernel_b`` is added
        to its kernel (the legacy writer stores the three apart; ``.keras`` files the sum).
        ``by_sublayer``: the arrays of a layer made of sublayers in the order of a ``.keras``
        archive (its converter names ``weight_groups``): :func:`by_sublayer_order`."""
        top = self.alias.get(path[0], path[0])
        if top not in self.group:
            return None
        g = self.group[top]
        self.used.add(top)
        if len(path) == 1:
            names = self._names(g)
        elif self.layer_order is not None:
            names = self._assign_nested(path[0], top).get(tuple(path), [])
            self._fetched.add(tuple(path))
        else:  # no architecture to disambiguate: match the leaf name as a path segment
            leaf = path[-1]
            names = [n for n in self._names(g) if leaf in n.split("/")[:-1]]
        if by_sublayer:
            names = by_sublayer_order(names, path[-1])
        arrays = [self._read(g, n, path) for n in names]
        if by_sublayer:  # for an error of the converter: what it was given, in which order
            self.regrouped["/".join(path)] = [(n, np.shape(a)) for n, a in zip(names, arrays)]
        return arrays if lora_scale is None else merge_lora(names, arrays, lora_scale)

    def _read(self, g: h5py.Group, name: str, path) -> np.ndarray:
        # ``weight_names`` is an attribute, the arrays are datasets: a damaged or edited file
        # may list an array that is not there (h5py would say only KeyError(name))
        d = g.get(name)
        if not isinstance(d, h5py.Dataset):
            held = []
            g.visit(lambda n: held.append(n) if isinstance(g[n], h5py.Dataset) else None)
            raise KerasImportError(
                f"layer {'/'.join(path)!r}: the weight_names attribute of group {g.name!r} "
                f"lists {name!r}, which is {'a group' if d is not None else 'not there'}; "
                f"expected a dataset (the group holds the datasets {held[:12]}). The file is "
                "damaged or was edited: save the model again", path=self.path)
        return np.asarray(d)


def by_sublayer_order(names: Sequence[str], layer: str) -> list[str]:
    """The weight names of a layer made of sublayers, in a legacy ``.h5``, put in the order
    its ``.keras`` archive keeps them: the layer's own first (``<layer>/g:0``, and names
    without a scope, ``h:0``, which tf.keras gives a weight made in the layer's
    ``__init__``), in the file's order, then each sublayer's together
    (``<layer>/batch_normalization/gamma:0``...), sublayers in the order their first array
    comes. tf.keras lists a layer's weights (``layer.weights``, the ``.h5``'s order) as the
    trainable ones of the layer and all its sublayers, then the non-trainable ones: a
    ``BatchNormalization`` sublayer's moving statistics come after every other sublayer's
    kernels, where its archive keeps them with its gamma and beta, and a sublayer whose
    weights are all non-trainable (frozen) comes after every sublayer with trainable ones.
    Keras 3 lists them so too (``layer.trainable_weights + layer.non_trainable_weights``);
    layers without non-trainable weights keep their order (nothing moves).

    The layer's own scope is its name after the scopes of the models holding it
    (``seq/own/c:0`` is layer ``own``'s own ``c`` in Keras 3's legacy ``.h5`` of a nested
    Sequential ``seq``, ``seq/own/bn/...`` its sublayer ``bn``'s): the first run of the
    name's segments equal to ``layer`` ends it, as :meth:`LegacyH5Weights._owner_layer`
    finds the layer. Where no name holds ``layer`` (the file's name of a layer saved
    without one in its config differs from the one Keras gives it on reloading, which the
    architecture has), the scope the names share."""
    k = layer.count("/") + 1
    scoped = [n.split("/")[:-1] for n in names if "/" in n]
    own = None
    for segs in scoped:  # the scope up to the first run of the layer's name in a name
        start = next((i for i in range(len(segs) - k + 1)
                      if "/".join(segs[i:i + k]) == layer), None)
        if start is not None:
            own = "/".join(segs[:start + k])
            break
    if own is None:  # (commonprefix compares lists item by item)
        own = "/".join(os.path.commonprefix(scoped)) or layer
    owners: dict[str, list[str]] = {own: []}
    for n in names:
        owners.setdefault(n.rsplit("/", 1)[0] if "/" in n else own, []).append(n)
    return [n for o in owners for n in owners[o]]


#: Where tf.keras 2.13's ``.keras`` archive and the ``.weights.h5`` of tf.keras 2.12 and 2.13
#: keep a model's layers; tf.keras 2.15 (2.14 not tried), tf_keras and Keras 3 write ``layers``
OLD_LAYERS = "_layer_checkpoint_dependencies"


class Keras3Weights(WeightSource):
    """``model.weights.h5`` of a ``.keras`` archive (or a ``.weights.h5`` file):
    ``layers/<key>/vars/<i>``, nested ``layers/<key>/layers/<key>/vars/<i>``, where ``key``
    is the snake_case class name made unique in layer order (``conv2d``, ``conv2d_1``, ...);
    recent Keras versions also write the layer's name as the ``name`` attribute of ``vars``.

    tf.keras 2.13's archive keeps them as ``_layer_checkpoint_dependencies/<key>/vars/<i>``
    (:data:`OLD_LAYERS`), its keys numbered with gaps, as if its writer counted each layer
    with weights twice: three ``Dense`` layers are ``dense``, ``dense_2``, ``dense_4``. There
    the n-th key of a class's name, in the order of their numbers, is the n-th layer of that
    class."""

    def __init__(self, root: h5py.Group, path: str, layer_order: dict):
        self.root = root
        self.path = path
        self.layers_key = OLD_LAYERS if OLD_LAYERS in root and "layers" not in root else "layers"
        self._name_index: dict[str, dict[str, str]] = {}
        self.used: set[str] = set()
        #: ``{container path tuple: [(layer name, class name), ...]}`` (kept for the
        #: importer's messages: which other paths hold a layer of a name and class)
        self.layer_order = layer_order
        self.keys: dict[tuple[str, ...], str] = {}
        self.names: dict[tuple[str, ...], set[str]] = {}
        for container, layers in layer_order.items():
            keys = object_keys([_PYTHON_CLASS.get(cls, cls) for _, cls in layers])
            for (lname, _), key in zip(layers, keys):
                self.keys[container + (lname,)] = key
            self.names[container] = {lname for lname, _ in layers}

    def _group(self, path):
        g = self.root
        for i in range(len(path)):
            layers = g.get(self.layers_key)
            if layers is None:
                return None
            recorded = self._recorded_names(layers)
            # the recorded names are used when they are the architecture's own; otherwise
            # (an architecture rebuilt in code, its layers named on: "dense_3" for "dense")
            # as Keras itself loads: by the layer's position among those of its class
            key = (recorded.get(path[i])
                   if set(recorded) <= self.names.get(tuple(path[:i]), set()) else None)
            if key is None:
                key = self.keys.get(tuple(path[: i + 1]))
                if key is not None and self.layers_key == OLD_LAYERS:
                    key = nth_key(layers, key)
                if key is None or key not in layers:
                    return None
            g = layers[key]
            self.used.add(g.name)
        return g

    def unused(self) -> list[str]:
        """The ``layers/<key>`` groups (nested ones too) with arrays of their own (``vars``)
        that no layer asked for: weights of a layer the architecture does not have, or has
        without weights."""
        out = []

        def walk(layers, prefix):
            for key in layers if layers is not None else ():
                g = layers[key]
                v = g.get("vars")
                if g.name in self.used:  # a nested model's layers
                    walk(g.get(self.layers_key), f"{prefix}{key}/")
                elif v is not None and len(v):
                    name = _decode(attrs_of(v).get("name", ""))
                    out.append(f"{prefix}{key}" + (f" ({name})" if name and name != key else ""))

        walk(self.root.get(self.layers_key), "")
        return out

    def _recorded_names(self, layers: h5py.Group) -> dict[str, str]:
        """``{layer name: key}`` of one ``layers`` group, from the ``name`` attributes of
        the ``vars`` groups (the recorded name is preferred over the class-name key when
        the writer stored one); read once per group, since a lookup per layer would read
        every attribute again (quadratic: 16 s for DenseNet121)."""
        index = self._name_index.get(layers.name)
        if index is None:
            index = {}
            for key in layers:
                v = layers[key].get("vars")
                name = _decode(attrs_of(v).get("name", "")) if v is not None else ""
                if name:
                    index.setdefault(name, key)  # the first match, as a scan would find
            self._name_index[layers.name] = index
        return index

    def get(self, path, class_names, groups: Sequence[str] | None = None):
        """The layer's arrays; ``groups``: sub-object paths (``"forward_layer/cell"``) whose
        ``vars`` follow the layer's own, for layers made of sublayers (RNN cells, wrappers,
        attention projections), in ``layer.weights`` order."""
        g = self._group(tuple(path))
        if g is None:
            return None
        out = self._vars(g)
        for sub in groups or ():
            h = g.get(sub)
            if h is None and self.layers_key == OLD_LAYERS:
                h = self._old_group(g, sub)
            if h is None:
                raise KerasImportError(
                    f"layer {'/'.join(path)!r}: the weights file has no {sub!r} group (found "
                    f"{sorted(g.keys())}); the file does not match the architecture",
                    path=self.path)
            out += self._vars(h)
        return out

    def _old_group(self, g: h5py.Group, sub: str) -> h5py.Group | None:
        """Group ``sub`` (``"ffn/layers/dense_1"``, as Keras 3 and tf.keras 2.14+ name it)
        below ``g`` in tf.keras 2.13's layout: ``layers/<key>`` is
        ``_layer_checkpoint_dependencies/<its key there>`` (:func:`nth_key`)."""
        parts = sub.split("/")
        i = 0
        while g is not None and i < len(parts):
            if parts[i] == "layers" and i + 1 < len(parts) and OLD_LAYERS in g:
                layers = g[OLD_LAYERS]
                key = nth_key(layers, parts[i + 1])
                g = layers.get(key) if key is not None else None
                i += 2
            else:
                g = g.get(parts[i])
                i += 1
        return g

    def sublayer_groups(self, path) -> list[tuple[str, list[tuple]]]:
        """``(group, shapes)`` of the groups below layer ``path``'s own that hold arrays (a
        custom layer's sublayers, ``proj`` for ``self.proj = Dense(...)``, nested ones as
        ``ffn/layers/dense``; a list's or dict's as ``blocks/dense``, ``blocks/dense_1``),
        in the order of their names with numbers compared as numbers (``blocks/dense_2``
        before ``blocks/dense_10``: the list's order); ``[]`` if none."""
        g = self._group(tuple(path))
        out: list[tuple[str, list[tuple]]] = []

        def walk(h, prefix):
            for key in sorted(h, key=natural_key):
                sub = h[key]
                if key == "vars" or not isinstance(sub, h5py.Group):
                    continue
                v = sub.get("vars")
                if isinstance(v, h5py.Group) and len(v):
                    out.append((prefix + key, [tuple(v[k].shape) for k in
                                               sorted(v, key=lambda k: (len(k), k))]))
                walk(sub, f"{prefix}{key}/")

        if g is not None:
            walk(g, "")
        return out

    def _vars(self, g) -> list[np.ndarray]:
        v = g.get("vars")
        if v is None:
            return []
        keys = list(v.keys())
        if sorted(keys) != sorted(str(i) for i in range(len(keys))) or not all(
                isinstance(v[k], h5py.Dataset) for k in keys):
            raise KerasImportError(
                f"group {v.name!r} holds {sorted(keys)[:12]}; expected datasets named 0, 1, "
                "... (one per weight, as Keras writes them). The file is damaged or was "
                "edited: save the model again", path=self.path)
        return [np.asarray(v[k]) for k in sorted(keys, key=int)]


def natural_key(name: str) -> tuple:
    """A sort key comparing the runs of digits in ``name`` as numbers: ``dense_2`` before
    ``dense_10``, as Keras numbers the objects of a list."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t)
                 for t in re.findall(r"\d+|\D+", name))


def nth_key(layers: h5py.Group, key: str) -> str | None:
    """The key in tf.keras 2.13's numbering (``dense``, ``dense_2``, ``dense_4``: see
    :class:`Keras3Weights`) of the object whose Keras 3 key (numbered without gaps,
    ``dense``, ``dense_1``, ``dense_2``) is ``key``: the n-th of the group's keys of that
    class name, in the order of their numbers; ``None`` if it has fewer."""
    numbered = re.fullmatch(r"(.+)_(\d+)", key)
    base, n = (numbered[1], int(numbered[2])) if numbered else (key, 0)
    if numbered and not any(re.fullmatch(re.escape(base) + r"(_\d+)?", k) and k != key
                            for k in layers) and key in layers:
        return key  # a class whose own name ends in _<digits>
    same = sorted((int(m[1] or 0), k) for k in layers
                  if (m := re.fullmatch(re.escape(base) + r"(?:_(\d+))?", k)))
    return same[n][1] if n < len(same) else None


def _open_h5(path: str, data: bytes | None = None) -> h5py.File:
    try:
        f = h5py.File(io.BytesIO(data) if data is not None else path, "r")
    except OSError as e:
        raise KerasImportError(f"not a readable HDF5 file ({e}); it may be truncated or "
                               "corrupt. Re-save the model with model.save(...).", path=path) from e
    register(f, path, data)  # its string attributes' heaps are checked before they are read
    return f


_TF_CHECKPOINT = re.compile(r"\.(index|data-\d{5}-of-\d{5})$")


def _tf_checkpoint_error(path: str) -> KerasImportError:
    return KerasImportError(
        "a TensorFlow checkpoint (tf.keras's save_weights without an .h5 suffix, or "
        "ModelCheckpoint(save_weights_only=True) so named), whose format is TensorFlow's own "
        "and not read here. In TensorFlow, load the weights into the model "
        "(model.load_weights(prefix)) and save it with model.save('model.h5') or "
        "model.save_weights('weights.h5'), then load that", path=path)


def sniff(path: str) -> str:
    """'h5', 'zip', 'dir' (an unzipped .keras), 'json' (sharded weights) or raise: decided
    by content, not by extension."""
    if _TF_CHECKPOINT.search(path) and os.path.exists(path):
        raise _tf_checkpoint_error(path)
    if os.path.basename(path) == "checkpoint" and os.path.isfile(path):
        with open(path, "rb") as f:
            if f.read(21) == b"model_checkpoint_path":
                raise _tf_checkpoint_error(path)
    if not os.path.exists(path):
        if os.path.isfile(path + ".index"):  # the checkpoint's prefix
            raise _tf_checkpoint_error(path)
        raise KerasImportError("no such file", path=path)
    if os.path.isdir(path):
        held = sorted(os.listdir(path))
        if {"config.json", "model.weights.h5"} & set(held):  # model.save(d, zipped=False)
            return "dir"
        raise KerasImportError(
            f"is a directory holding {held[:10]}, not a Keras model: expected a Keras 3 "
            "unzipped .keras directory (model.save(dir, zipped=False): config.json and "
            "model.weights.h5); a TensorFlow SavedModel directory is not a Keras file. Save "
            "with model.save('model.keras') or 'model.h5'.", path=path)
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        raise KerasImportError("the file is empty (0 bytes)", path=path)
    kind = _magic(head)
    if kind is not None:
        return kind
    if head.lstrip()[:1] == b"{":  # the index of sharded weights, or an architecture config
        return "json"
    raise KerasImportError(
        f"not a Keras file: expected an HDF5 file (.h5) or a .keras zip archive, "
        f"got bytes {head!r}", path=path)


_SHARD_NAME = re.compile(r"^(?P<base>.+)_\d{5}\.weights\.h5$")


def read_sharded_weights(path: str) -> h5py.File:
    """The weights of ``model.save_weights("m.weights.json", max_shard_size=...)`` (Keras 3):
    an index, ``{"metadata": ..., "weight_map": {"/layers/dense/vars": ["m_00000.weights.h5",
    ...]}}``, beside shards in the ``.weights.h5`` layout, each holding part of the groups (a
    layer's arrays may be split over two shards, its ``vars`` attributes in the first).

    Returned as one in-memory HDF5 file of the merged groups and attributes whose datasets
    are external links into the shards (nothing is copied)."""
    try:
        with open(path, "rb") as fh:
            index = json.loads(fh.read())
    except (ValueError, OSError) as e:
        raise KerasImportError(f"not a readable JSON file ({e}); expected the index of sharded "
                               "weights (model.save_weights('m.weights.json', "
                               "max_shard_size=...))", path=path) from e
    if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
        what = (" It looks like an architecture (model.to_json(), a config.json): pass it as "
                "config= together with the weights file" if isinstance(index, dict)
                and ("class_name" in index or "config" in index) else "")
        raise KerasImportError(
            "a JSON file without a 'weight_map': expected a Keras file (.keras, .h5) or the "
            "index of sharded weights (model.save_weights('m.weights.json', max_shard_size=...))."
            + what, path=path)
    shards: list[str] = []
    for where, files in index["weight_map"].items():
        for name in [files] if isinstance(files, str) else files:
            if not isinstance(name, str) or os.path.basename(name) != name:
                raise KerasImportError(
                    f"the weight_map entry {where!r} names {name!r}; expected file names of "
                    "shards beside the index (m_00000.weights.h5). The index is damaged or was "
                    "edited: save the weights again", path=path)
            if name not in shards:
                shards.append(name)
    folder = os.path.dirname(os.path.abspath(path))
    missing = [n for n in shards if not os.path.isfile(os.path.join(folder, n))]
    if missing or not shards:
        raise KerasImportError(
            f"the index lists the shards {shards[:8]}; {missing[:8]} are not beside it in "
            f"{folder}. Keep every shard with the index (or save the weights again)"
            if shards else "the index lists no shards", path=path)
    # an in-memory file, under a name of its own: HDF5 refuses to create ("w") a file of the
    # name of one still open, as another load of the same index (a thread's, an earlier
    # handle not yet closed) holds it. Written, then opened again read-only
    # (_open_image_read_only), whose links open the shards read-only
    name = f"{os.path.abspath(path)}.merged-{uuid.uuid4().hex}"
    merged = h5py.File(name, "w", driver="core", backing_store=False, locking=False)
    try:
        _merge_shards(merged, folder, shards, path, _top_groups(index["weight_map"]))
        merged.flush()
        image = merged.id.get_file_image()
    finally:
        merged.close()
    return _open_image_read_only(name, image)


def _open_image_read_only(name: str, image: bytes) -> h5py.File:
    """The in-memory HDF5 file ``image`` opened read-only (core driver, HDF5's default file
    locking: shared locks, which do not block other readers).

    HDF5 opens the files that external links name in the mode of the file holding the links:
    the merged file of :func:`read_sharded_weights`, made with ``"w"``, opened the shards for
    writing, which was refused to a user who may read but not write them (a shared model
    folder, a read-only mount: "can't open file", reported as a corrupt file) and to anyone
    while a shard was open read-only elsewhere in the process ("file is already open for
    read-only"). Opened read-only, it opens the shards read-only, as Keras does. The links
    keep this file's core driver: a shard is read whole when a link to it is opened."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_fapl_core(backing_store=False)
    fapl.set_file_image(image)
    return h5py.File(h5py.h5f.open(os.fsencode(name), h5py.h5f.ACC_RDONLY, fapl))


def _top_groups(weight_map: dict) -> set[str]:
    """The top-level groups of a ``.weights.h5`` that the index of its shards maps
    (``"/layers/dense/vars"`` -> ``layers``; a compiled model's ``optimizer`` too)."""
    return {str(k).strip("/").split("/")[0] for k in weight_map} - {""}


def _merge_shards(merged: h5py.File, folder: str, shards: list[str], path: str,
                  tops: set[str]) -> None:
    # A shard holds some of the groups its index maps: the layers' and the model's own
    # ("layers", "vars"), and a compiled model's optimizer state, which comes after the
    # layers' weights and fills the last shards alone (Adam: two slots per weight)
    expected = sorted(tops | {"layers", "vars"})
    for name in shards:
        shard_path = os.path.join(folder, name)
        with _open_h5(shard_path) as shard:
            if not set(shard.keys()) & set(expected):
                raise KerasImportError(
                    f"the shard {name} holds none of the groups of a .weights.h5 file that "
                    f"its index maps (expected some of {expected}, found "
                    f"{sorted(shard.keys())}): it is not part of these weights; save the "
                    "weights again", path=path)

            def copy(obj_name, obj, shard_path=shard_path):
                if isinstance(obj, h5py.Dataset):
                    if obj_name in merged:
                        raise KerasImportError(
                            f"{obj_name!r} is stored in two shards; the shards belong to "
                            "different saves: save the weights again", path=path)
                    merged[obj_name] = h5py.ExternalLink(shard_path, "/" + obj_name)
                    return None
                g = merged.require_group(obj_name)
                for k, v in attrs_of(obj).items():
                    if k not in g.attrs:
                        g.attrs[k] = v
                return None

            shard.visititems(copy)


def shard_index_of(path: str) -> str | None:
    """The index (``m.weights.json``) that lists ``path`` as one of its shards, or None."""
    found = _SHARD_NAME.match(os.path.basename(path))
    if found is None:
        return None
    index = os.path.join(os.path.dirname(path), found["base"] + ".weights.json")
    try:
        with open(index, "rb") as fh:
            weight_map = json.loads(fh.read()).get("weight_map") or {}
    except (ValueError, OSError, AttributeError):
        return None
    listed = {n for v in weight_map.values() for n in ([v] if isinstance(v, str) else v)}
    return index if os.path.basename(path) in listed else None


def keras_version_of(value: Any, where: str, path: str | None) -> str:
    """A recorded Keras version, refusing a damaged record: which Keras wrote a file decides
    semantics that differ between releases (``hard_sigmoid``, masks, node numbering)."""
    v = _decode(value)
    if is_version_string(v):
        return str(v)
    raise KerasImportError(
        f"the Keras version recorded in {where} is {v!r}; expected a version string such as "
        "'2.15.0' or '3.4.1'. The file is damaged or was edited: save the model again (or "
        "restore the version it was written with)", path=path)


def recorded_backend(f: h5py.File) -> str | None:
    """The backend recorded in a legacy ``.h5`` (its ``backend`` attribute: Keras 3 and
    tf.keras write it), or ``None`` when absent or not a Keras 3 backend (``"theano"``)."""
    try:
        return keras_backend_of(attrs_of(f).get("backend"), "the backend attribute")
    except ValueError:
        return None


def read_h5(path: str) -> tuple[dict | None, str, WeightSource | None, h5py.File]:
    """Returns ``(config or None, keras_version, legacy weight source or None, file)``; a
    ``None`` source means a Keras 3 weights file, whose keys depend on the architecture
    (:class:`Keras3Weights`)."""
    f = _open_h5(path)
    try:
        return _read_h5(f, path)
    except BaseException:  # nobody else holds the file to close it
        f.close()
        raise


def _read_h5(f: h5py.File, path: str) -> tuple[dict | None, str, WeightSource | None, h5py.File]:
    attrs = attrs_of(f)
    cfg = attrs.get("model_config")
    if cfg is not None:
        try:
            cfg = json.loads(_decode(cfg))
        except (TypeError, ValueError) as e:
            raise KerasImportError(f"the model_config attribute is not valid JSON ({e})",
                                   path=path) from e
    # without the attribute, the config's marks tell a Keras 3 file (as for a .keras archive
    # without metadata.json); none, Keras 2
    version = (keras_version_of(attrs["keras_version"], "the keras_version attribute", path)
               if "keras_version" in attrs else config_keras_version(cfg) or "2")
    if "model_weights" in f:
        return cfg, version, LegacyH5Weights(f["model_weights"], path), f
    if _list_attr(f, "layer_names") is not None:  # legacy save_weights file
        return cfg, version, LegacyH5Weights(f, path), f
    if "layers" in f or "vars" in f or OLD_LAYERS in f:  # Keras 3, tf.keras 2.12+ .weights.h5
        index = shard_index_of(path)
        if index is not None:
            raise KerasImportError(
                f"one shard of sharded weights, which hold only part of the model's weights; "
                f"load their index instead: load_keras({index!r}, config=...)", path=path)
        return cfg, "3", None, f
    raise KerasImportError(
        "HDF5 file without Keras content: expected a 'model_weights' group (model.save), a "
        f"'layer_names' attribute (save_weights) or a 'layers' group (.weights.h5); found "
        f"groups {sorted(f.keys())}", path=path)


def _npz_weights_error(path: str, where: str, misnamed: bool = False) -> KerasImportError:
    """The refusal of a ``.keras`` model saved with ``weights_format="npz"``."""
    who = ("No Keras reads this directory (it reads a model.weights.h5 as HDF5): load the "
           "model that was saved" if misnamed else
           "Keras itself reads them only up to 3.8 (np.load with allow_pickle=True); from "
           "3.9 on, keras.saving.load_model refuses them too. Load the model with a Keras "
           "that reads it")
    return KerasImportError(
        f"a .keras model whose weights are {where}, written by Keras 3's "
        "saving_lib.save_model(..., weights_format='npz') (not model.save): NumPy object "
        "arrays of pickled Keras variables, which only Keras can unpickle, running the "
        f"code the file names, and jaxsal does not unpickle files. {who} and save it with "
        "model.save('model.keras') (weights in model.weights.h5)", path=path)


def read_keras_zip(path: str) -> tuple[dict, str, h5py.File]:
    try:
        z = zipfile.ZipFile(path)
        names = z.namelist()
    # ValueError: undecodable names; NotImplementedError: a version field damaged into one
    # zipfile does not know
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as e:
        raise KerasImportError(f"not a readable zip archive ({e}); a .keras file may be "
                               "truncated or corrupt", path=path) from e
    npz = [n for n in names if n.rsplit("/", 1)[-1] == "model.weights.npz"]
    if npz and not any(n.rsplit("/", 1)[-1] == "model.weights.h5" for n in names):
        raise _npz_weights_error(path, f"{npz[0]} (NumPy's .npz)")
    folders = _archive_folders(names, ("config.json", "model.weights.h5"))
    if "" in folders:
        folder = ""
    elif len(set(folders)) == 1:
        # an unzipped .keras directory zipped again with its folder (zip -r m.zip saved/)
        folder = folders[0]
    else:
        raise KerasImportError(
            f"zip archive is not a .keras file: expected config.json and "
            f"model.weights.h5 (at its top, or in one folder), found {names[:10]}",
            path=path)

    def member(name: str) -> bytes:
        try:
            return z.read(folder + name)
        except _ZIP_MEMBER_ERRORS as e:
            raise KerasImportError(
                f"the archive's contents cannot be read: its member {folder + name} does not "
                f"extract ({type(e).__name__}: {e}); the .keras file is damaged or truncated. "
                "Save the model again", path=path) from e

    def as_json(name: str) -> Any:
        text = member(name)
        try:
            return json.loads(text)
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
            raise KerasImportError(
                f"the archive's contents cannot be read: its {folder + name} is not valid JSON "
                f"({e}); the .keras file is damaged or was edited. Save the model again",
                path=path) from e

    cfg = as_json("config.json")
    meta = as_json("metadata.json") if folder + "metadata.json" in names else {}
    data = member("model.weights.h5")
    return cfg, _archive_version(cfg, meta, path), _open_h5(path, data)


def _archive_folders(names: Sequence[str], members: Sequence[str]) -> list[str]:
    """The folders of a zip archive whose member names are ``names`` that hold each of
    ``members``: ``""`` for its top, ``"saved/"`` for a folder (at any depth): one entry per
    occurrence of ``members[0]`` (an archive may repeat a name), in the archive's order."""
    first, held = members[0], set(names)
    return [n[:-len(first)] for n in names if (n == first or n.endswith("/" + first))
            and all(n[:-len(first)] + m in held for m in members[1:])]


# what zipfile raises for a member it cannot extract: damaged data (a bad CRC, zlib's or
# lzma's errors on a damaged compressed stream, a cut archive), a compression method field
# damaged into one zipfile does not know (NotImplementedError), an encryption flag set by
# damage (RuntimeError: "password required")
_ZIP_MEMBER_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, NotImplementedError,
                      RuntimeError, OSError, EOFError, ValueError)


def read_keras_dir(path: str) -> tuple[dict, str, h5py.File]:
    """An unzipped ``.keras`` archive, the directory Keras 3 writes with
    ``model.save(dir, zipped=False)`` (and on the Hugging Face Hub): the archive's
    ``config.json``, ``metadata.json`` and ``model.weights.h5`` as files."""
    names = sorted(os.listdir(path))
    if "model.weights.npz" in names and "model.weights.h5" not in names:
        raise _npz_weights_error(path, "model.weights.npz (NumPy's .npz)")
    if "model.weights.h5" in names:
        with open(os.path.join(path, "model.weights.h5"), "rb") as fh:
            if _magic(fh.read(8)) == "zip":  # Keras writes a directory's .npz under this name
                raise _npz_weights_error(path, "in NumPy's .npz format (a zip), though the "
                                         "file is named model.weights.h5", misnamed=True)
    if "config.json" not in names or "model.weights.h5" not in names:
        raise KerasImportError(
            f"directory is not an unzipped .keras model: expected config.json and "
            f"model.weights.h5 (model.save(dir, zipped=False)), found {names[:10]}", path=path)
    try:
        with open(os.path.join(path, "config.json"), "rb") as fh:
            cfg = json.loads(fh.read())
        meta = {}
        if "metadata.json" in names:
            with open(os.path.join(path, "metadata.json"), "rb") as fh:
                meta = json.loads(fh.read())
    except (ValueError, OSError) as e:
        raise KerasImportError(f"the directory's config.json or metadata.json cannot be read "
                               f"({e!r})", path=path) from e
    version = _archive_version(cfg, meta, path)
    return cfg, version, _open_h5(os.path.join(path, "model.weights.h5"))


def _archive_version(cfg: Any, meta: Any, path: str) -> str:
    """The Keras version of a ``.keras`` archive (zipped or not) from its metadata.json."""
    if not isinstance(meta, dict):
        raise KerasImportError(
            f"the archive's metadata.json holds a JSON {type(meta).__name__}, expected an "
            "object such as {\"keras_version\": \"3.4.1\"}. The archive is damaged or was "
            "edited: save the model again", path=path)
    # without a recorded version, the config tells a tf.keras archive (Keras 2 semantics)
    return (keras_version_of(meta["keras_version"], "metadata.json", path)
            if meta.get("keras_version") is not None else config_keras_version(cfg) or "3")


_CONFIG_FORMS = ("expected a dict, a model.to_json() string, or the path of a JSON file (a "
                 ".keras archive's config.json), of a .keras archive or of an unzipped "
                 ".keras directory")


def parse_config(config: Any, path: str | None = None) -> dict:
    """Accept a dict, a JSON string (``model.to_json()``), or the path (a str or
    ``os.PathLike``) of a JSON file, of a ``.keras`` archive or of an unzipped ``.keras``
    directory (their ``config.json`` is read). ``path``: the weights file, named in errors."""
    if isinstance(config, dict):
        return config
    if not isinstance(config, (str, os.PathLike)):
        raise TypeError(f"config must be a dict, a JSON string or a path, got "
                        f"{type(config).__name__}")
    text = config if isinstance(config, str) else None
    if text is not None and text.lstrip("\ufeff \t\r\n").startswith(("{", "[")):
        return _json_config(text.lstrip("\ufeff \t\r\n"), "the architecture config", path)
    name = os.fsdecode(os.fspath(config))
    if not os.path.exists(name):
        text_too = ("" if text is None else
                    ", and not JSON text (model.to_json() starts with '{')")
        raise KerasImportError(f"config={name!r}: no such file{text_too}; {_CONFIG_FORMS}",
                               path=path)
    where = f"the config file {name}"
    try:
        if os.path.isdir(name):
            if not os.path.isfile(os.path.join(name, "config.json")):
                raise KerasImportError(
                    f"config={name!r} is a directory without a config.json (it holds "
                    f"{sorted(os.listdir(name))[:10]}); {_CONFIG_FORMS}", path=path)
            name = os.path.join(name, "config.json")
            where = f"the config file {name}"
        with open(name, "rb") as fh:
            head = fh.read(8)
            # the rest only of a text file: an archive's config.json is read from the
            # archive, an HDF5 file is refused (either may be gigabytes of weights)
            kind = _magic(head)
            data = head if kind is not None else head + fh.read()
        if kind == "zip":  # a .keras archive: its config.json
            where = f"the config.json of the archive {name}"
            data = _zip_config(name, path)
    except OSError as e:
        raise KerasImportError(f"config={name!r} cannot be read ({e}); {_CONFIG_FORMS}",
                               path=path) from e
    if data[:8] == _HDF5_MAGIC or h5py.is_hdf5(name):
        raise KerasImportError(
            f"config={name!r} is an HDF5 file (a model or weights file), not an architecture: "
            f"pass it as the first argument, load_keras({name!r}) (the .h5 of model.save holds "
            f"its architecture; weights alone need one as config=); {_CONFIG_FORMS}",
            path=path)
    try:
        text = data.decode("utf-8-sig")  # (a byte-order mark, as Windows editors write)
    except UnicodeDecodeError as e:
        raise KerasImportError(f"{where} is not UTF-8 text ({e}); {_CONFIG_FORMS}",
                               path=path) from e
    return _json_config(text, where, path)


def _json_config(text: str, where: str, path: str | None) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise KerasImportError(f"{where} is not valid JSON ({e})", path=path) from e


def _zip_config(name: str, path: str | None) -> bytes:
    """The ``config.json`` of the ``.keras`` archive ``name`` (at its top, or in its one
    folder); ``path``: the weights file, named in errors."""
    try:
        with zipfile.ZipFile(name) as z:
            found = [f + "config.json" for f in _archive_folders(z.namelist(), ("config.json",))]
            member = ("config.json" if "config.json" in found
                      else found[0] if len(found) == 1 else None)
            data = None if member is None else z.read(member)
    except OSError:
        raise  # the file cannot be read: parse_config says so
    except _ZIP_MEMBER_ERRORS as e:
        raise KerasImportError(f"config={name!r} is a damaged zip archive ({e}); "
                               f"{_CONFIG_FORMS}", path=path) from e
    if data is None:
        raise KerasImportError(
            f"config={name!r} is a zip archive without one config.json (it holds "
            f"{len(found)}: {found[:5]}); {_CONFIG_FORMS}", path=path)
    return data


# Model classes of the .keras archives written by Keras 2.13-2.15 (``keras.src.engine``) and
# tf_keras (``tf_keras.src.engine``); Keras 3 writes ``keras.src.models.functional``.
_KERAS2_MODEL_MODULES = ("keras.src.engine.", "tf_keras.")
_KERAS3_MODEL_MODULES = ("keras.src.models.",)


def config_keras_version(cfg: Any) -> str | None:
    """The Keras version an architecture config records, or ``None``.

    tf.keras's ``model.to_json()`` stores ``keras_version`` beside the config; Keras 3's does
    not. The ``config.json`` of a tf.keras ``.keras`` archive stores none either, but names
    its model classes by their Keras 2 modules: ``"2.13"`` then, the first Keras that wrote
    that format. Weights-only files of the new layout (``.weights.h5``, written by Keras 3
    and by tf.keras 2.13+) record no version, so only the config can tell that it must be
    read with Keras 2's semantics (``hard_sigmoid``, the node numbering of nested models).
    A Keras 3 config is told by its marks: its model class's module (``keras.src.models.``),
    an ``InputLayer``'s ``batch_shape`` (Keras 2: ``batch_input_shape``), a layer's dtype as
    a ``DTypePolicy`` dict: ``"3"`` then (a legacy tf.keras ``.h5`` of weights recording
    2.x must not decide how a Keras 3 architecture computes).
    """
    if not isinstance(cfg, dict):
        return None
    if cfg.get("keras_version"):
        return str(cfg["keras_version"])
    if str(cfg.get("module") or "").startswith(_KERAS2_MODEL_MODULES):
        return "2.13"
    inner = cfg.get("config")
    layers = inner.get("layers") if isinstance(inner, dict) else inner
    layers = [la for la in layers if isinstance(la, dict)] if isinstance(layers, list) else []
    for layer in layers:
        if layer.get("class_name") in ("Functional", "Sequential", "Model"):
            found = config_keras_version(layer)  # a nested model
            if found:
                return found
    if str(cfg.get("module") or "").startswith(_KERAS3_MODEL_MODULES):
        return "3"
    for layer in layers:
        layer_cfg = layer.get("config")
        if not isinstance(layer_cfg, dict):
            continue
        if layer.get("class_name") == "InputLayer" and "batch_shape" in layer_cfg:
            return "3"  # Keras 2 writes batch_input_shape
        dtype = layer_cfg.get("dtype")
        if isinstance(dtype, dict) and str(dtype.get("class_name")).endswith("DTypePolicy"):
            return "3"  # Keras 2's dtype is a string, or a mixed_precision Policy
    return None
