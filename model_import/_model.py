"""The ported model: a pure forward function over an explicit params pytree, plus structure."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from model_import._errors import forward_mode_error
from model_import._graph import (_EMBEDDINGS, Graph, LayerCallError, LayerSpec, _refs,
                                 pre_activation_refusal, probing_free_sizes)
from model_import._layers.activations import activation_name
from model_import._layers.registry import Runtime
from model_import._version import keras_major

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

#: What a model takes as ``x`` (and jaxsal's methods too, as ``jaxsal.Inputs``): one array
#: ``(N, ...)``, or for a model of several inputs one array per input, in a list or tuple in
#: the model's input order or in a dict keyed by its input names.
Inputs = Union[ArrayLike, Sequence[ArrayLike], Mapping[str, ArrayLike]]

HEADS = ("saved", "logits", "softmax", "sigmoid", "sigmoid_complement")

#: Integer input dtypes computed as declared (64-bit ones run as int32).
_NARROW_INTS = frozenset({"int8", "uint8", "int16", "uint16", "int32", "uint32"})

#: How many jitted programs of ``__call__``/``intermediates`` a model and its variants keep
#: (:meth:`KerasModel._program`); the oldest is dropped beyond.
_PROGRAM_MEMO_SIZE = 32

#: Layers whose ``data_format`` comes from a normalization axis, a weaker sign of the layout
#: than a convolution's or pooling's ``data_format`` (:meth:`KerasModel._formats`).
_WEAK_FORMAT = frozenset({"BatchNormalization", "SyncBatchNormalization"})


def _complement(z: Array) -> Array:
    return jax.nn.sigmoid(-z)  # == 1 - sigmoid(z), without cancellation


def apply_head(head: str, z: Array, rt: Runtime | None = None) -> Array:
    """Apply an output head to the pre-activation outputs ``z`` (``saved``/``logits``: as is);
    ``softmax`` normalizes over the last axis (a model's own softmax outputs are kept as the
    model computes them instead: :meth:`Graph.softmax_heads`), through ``rt``'s softmax
    rule; the sigmoid heads are elementwise activations, through its ``elementwise`` rule
    (DeepLIFT installs both)."""
    if head in ("saved", "logits"):
        return z
    rt = rt or Runtime()  # a plain Runtime applies the functions as they are
    if head == "softmax":
        return rt.softmax_of(z, -1)  # through the runtime's softmax rule (DeepLIFT's)
    act = rt.act
    if head == "sigmoid":
        return act(jax.nn.sigmoid, z)
    if head == "sigmoid_complement":
        return act(_complement, z)
    raise ValueError(f"unknown head {head!r}; expected one of {HEADS}")


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """One layer of a ported model.

    Attributes:
      name: path of the layer (``"outer/inner"`` inside a nested model).
      class_name: Keras class.
      output_shape: output shape without the batch axis, a tuple of shapes for multi-output
        layers; ``None`` for a dimension that depends on a free input size, as in
        :attr:`KerasModel.output_shape` (``(None, None, 4)`` for a 4-filter ``Conv2D`` on
        ``Input((None, None, 3))``); ``None`` in its place when an input of the model records
        no shape at all (a config without its input's shape).
      config: the Keras config dict of the layer.
      params: the layer's arrays (``{}`` for layers without weights).
      data_format: ``"channels_last"``/``"channels_first"`` for spatial layers, else ``None``.
      activation: the name of the fused activation, if any.
    """

    name: str
    class_name: str
    output_shape: Any
    config: Mapping[str, Any]
    params: Mapping[str, Any]
    data_format: str | None
    activation: str | None

    @property
    def is_spatial(self) -> bool:
        """True when the output has at least one spatial axis besides batch and channels."""
        s = self.output_shape
        return isinstance(s, tuple) and len(s) >= 2 and all(
            isinstance(d, (int, type(None))) for d in s) and len(s) in (2, 3, 4)


@dataclasses.dataclass(frozen=True)
class _Unresolved:
    """The layout of model input ``index`` while it is not yet known."""

    index: int


#: Keras operations whose output axes may be any arrangement of their inputs' (an einsum
#: can put the channel axis anywhere): the layout after them is unknown
_AXIS_MOVING_OPS = frozenset({"ops.Einsum", "ops.Tensordot", "ops.Rot90", "ops.Dot",
                              "ops.Kron", "ops.Outer", "ops.Inner"})


def _rearranges(spec: LayerSpec) -> bool:
    """Whether a layer may move axes around (its output's layout is not its input's)."""
    if spec.class_name in _AXIS_MOVING_OPS:
        return True
    words = ("permute", "reshape", "transpose", "swapaxes", "moveaxis", "rearrange")
    text = (spec.class_name + " " + str(spec.config.get("function", ""))).lower()
    return any(w in text for w in words)


def _last(shape: tuple) -> tuple:
    """A channels-first shape (without batch) written channels-last."""
    return tuple(shape[1:]) + tuple(shape[:1])


def _int_input_dtype(declared: str) -> np.dtype:
    """The dtype an integer ``InputLayer`` of dtype ``declared`` computes in: its own, 64-bit
    ones as int32 (JAX's default without x64), under ``jax_enable_x64`` as their own."""
    if declared in _NARROW_INTS:
        return np.dtype(declared)
    if declared in ("int64", "uint64") and jax.dtypes.canonicalize_dtype(
            np.dtype(declared)) == np.dtype(declared):  # (follows jax.enable_x64 contexts)
        return np.dtype(declared)
    return np.dtype(np.int32)


def _check_int_codes(a: Any, to: np.dtype, i: int, declared: str) -> None:
    """Refuse integers given to an ``InputLayer`` of dtype ``declared`` (input ``i``) that
    ``to``, the dtype it is computed in, cannot hold where ``to`` is not ``declared`` (an
    ``int64`` input computed in int32 without x64): cast, they would wrap around
    (``3_000_000_000`` to ``-1294967296``) where Keras keeps them. Within a declared dtype
    Keras's backends wrap alike (300 given to ``uint8`` reads 44), as the model does.
    ``a``: a concrete integer array."""
    v = np.asarray(a)
    if not v.size or to == np.dtype(declared) or not np.issubdtype(v.dtype, np.integer):
        return
    info = np.iinfo(to)
    lo, hi = v.min(), v.max()
    if lo < info.min or hi > info.max:
        bad = lo if lo < info.min else hi
        raise ValueError(
            f"input {i}: this model's InputLayer is {declared}, which JAX computes in {to} "
            f"without jax_enable_x64, got {v.dtype} values such as {int(bad)} beyond {to}'s "
            f"range [{info.min}, {info.max}] (they would wrap around to "
            f"{int(np.asarray(bad).astype(to))}, where Keras keeps them). Pass values in that "
            "range, or enable x64, jax.config.update('jax_enable_x64', True), under which "
            f"the input is computed as {declared}")


def _check_float_codes(a: Array, to: np.dtype, i: int, declared: str) -> None:
    """Refuse floats given to an integer ``InputLayer`` (input ``i``, declared ``declared``,
    computed as ``to``) that its dtype cannot hold: NaN, inf, or beyond ``to``'s range after
    truncation. Keras casts such values differently per backend (NumPy wraps 300.0 to 44 in
    uint8 and -1.0 to 255; JAX's ``predict`` saturates them to 255 and 0). Whole numbers in
    range are cast exactly and fractions truncated toward zero, as Keras does. ``a``: a
    concrete float array."""
    if not np.size(a):
        return
    v = np.asarray(a)
    info = np.iinfo(to)
    with np.errstate(invalid="ignore"):
        t = np.trunc(v.astype(np.float64))
        bad = ~np.isfinite(t) | (t < info.min) | (t > info.max)
    if bad.any():
        raise ValueError(
            f"input {i}: this model's InputLayer is {declared}, which Keras casts its input "
            f"to, got {v.dtype} values such as {float(v[bad].flat[0])!r} that {to} cannot hold "
            f"(range [{info.min}, {info.max}]; Keras's backends cast them differently, "
            f"wrapping or saturating). Pass {declared} values in that range, e.g. "
            f"x.astype(np.{declared}) after clipping or rescaling them as the model expects")


def native(a: Any) -> Any:
    """``a`` with every NumPy array in it (a pytree: params, several inputs) in the machine's
    byte order; anything else as it is. JAX takes no other order: ``jnp.asarray`` of a
    big-endian array (a ``.npy`` saved on a big-endian machine, FITS data) raises, and a
    ``jax.jit`` function already compiled for the shape reads its bytes as native ones
    (``[0, 1, 2, 3]`` as ``[0, 4.6e-41, 9e-44, 2.3e-41]``), silently."""
    def one(v):
        if isinstance(v, np.ndarray) and not v.dtype.isnative:
            return v.astype(v.dtype.newbyteorder("="))
        return v

    if isinstance(a, np.ndarray):
        return one(a)
    leaves = jax.tree_util.tree_leaves(a)
    if all(v.dtype.isnative for v in leaves if isinstance(v, np.ndarray)):
        return a  # (the same object: nothing rebuilt)
    return jax.tree_util.tree_map(one, a)


def softmax_on_one_value(shape: tuple) -> str:
    """The refusal of the ``softmax`` head on an output whose last axis, which it normalizes,
    has one value (``shape``, per example: ``(1,)``, a one-channel map ``(H, W, 1)``):
    constant (1.0), zero gradients. Made here and by ``jaxsal``'s methods."""
    if tuple(shape) == (1,):
        return ("head='softmax' on a one-unit output is constant (1.0) and has zero "
                "gradients; use head='sigmoid', 'sigmoid_complement' or 'logits'")
    return (f"head='softmax' normalizes the output's last axis, of one value here (shape "
            f"{tuple(shape)} per example): constant (1.0), zero gradients; use "
            "head='sigmoid', 'sigmoid_complement' or 'logits'")


class KerasModel:
    """A Keras model ported to JAX. Immutable: every ``with_*`` returns a new model.

    The forward function is pure over explicit params::

        m = load_keras("model.h5")
        y = m(x)                               # (N, H, W, C) -> (N, classes), jit-compiled
        y = m.apply(m.params, x)               # same, pure: params are an argument
        y, acts = m.apply(m.params, x, capture=["conv2d_2"])
        lm = m.with_head("logits")             # pre-activation output of the last layer

    Attributes:
      params: the weights as a pytree ``{layer_name: {"kernel": ..., ...}}``.
      head: ``"saved"`` (as in the file), ``"logits"``, ``"softmax"``, ``"sigmoid"`` or
        ``"sigmoid_complement"``.
      graph: the static structure (see :mod:`model_import._graph`).
      keras_version: the Keras version that wrote the file.
      keras_backend: the Keras 3 backend whose computation is followed where backends
        differ (``None``: unknown, as on JAX/NumPy); see ``load_keras(keras_backend=)``.
    """

    def __init__(self, graph: Graph, params: Any, *, head: str = "saved",
                 runtime: Runtime | None = None, keras_version: str = "3",
                 source: str | None = None, relu_mode: str = "standard",
                 output: int | None = None, channels_last_view: bool = False,
                 keras_backend: str | None = None, _memos: Mapping[str, Any] | None = None):
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; expected one of {HEADS}")
        # what _replace shares with a variant (traced shapes, jitted programs), there before
        # the checks below use them
        self.__dict__.update(_memos or {})
        self.graph = graph
        self.params = params
        self.head = head
        self.runtime = runtime or Runtime()
        self.keras_version = keras_version
        self.keras_backend = keras_backend
        self.source = source
        self.relu_mode = relu_mode
        self.output_index = output
        self.channels_last_view = channels_last_view
        self._paths = graph.layer_paths()
        # Keras 3 operation nodes are not listed as layers but can be captured by name.
        self._all_paths = graph.layer_paths(include_ops=True)
        self._keras_major = keras_major(keras_version)
        self._param_keys = _keys_of(params)  # what apply's params must hold (_check_params)
        if head != "saved" and (output is not None or len(graph.outputs) == 1):
            # refuse a head the output cannot have now, not at its first call (a model with
            # several outputs is checked when they run: with_output may select one first)
            graph._head_keys((0 if output is None else output,), head == "softmax", head)
        if head == "softmax" and params is not None and (
                output is not None or len(graph.outputs) == 1):
            self._refuse_one_unit_softmax()

    def _refuse_one_unit_softmax(self) -> None:
        """Refuse the ``softmax`` head on a one-unit output ``(N, 1)``, or any output whose
        last axis, which it normalizes, has one value (a one-channel map ``(N, H, W, 1)``):
        constant (1.0), its gradients zero (as ``jaxsal``'s methods refuse it). An output
        that is the model's own softmax, which the head keeps, is not normalized again. A
        model whose forward pass fails here is left to :func:`build_model`'s check, which
        says why with the file's hints."""
        try:
            shape = self.output_shape
        except LayerCallError:
            return
        index = self.output_index or 0
        own = self.graph.softmax_heads()
        if not isinstance(shape, tuple) or not shape or shape[-1] != 1 or (
                index < len(own) and own[index]):
            return
        raise ValueError(softmax_on_one_value(shape))

    # ------------------------------------------------------------------ variants
    def _replace(self, **kw) -> "KerasModel":
        args = dict(head=self.head, runtime=self.runtime, keras_version=self.keras_version,
                    keras_backend=self.keras_backend, source=self.source,
                    relu_mode=self.relu_mode, output=self.output_index,
                    channels_last_view=self.channels_last_view)
        params = kw.pop("params", self.params)
        args.update(kw)
        mine = self.__dict__
        memos = {
            "_shape_cache": mine.get("_shape_cache"),
            # output shapes, per output selection: the same for every head, weights of the
            # same shapes and view (shared, so that a variant made on every call is traced
            # once)
            "_output_shape_memo": mine.setdefault("_output_shape_memo", {}),
            # the layers each output depends on: a function of the graph alone (_used_paths)
            "_used_memo": mine.setdefault("_used_memo", {}),
            # the jitted programs of __call__ and intermediates, keyed by what else they
            # depend on (_program)
            "_program_memo": mine.setdefault("_program_memo", {}),
        }
        if "_formats" in mine:  # a function of the graph alone
            memos["_formats"] = mine["_formats"]
        new = KerasModel(self.graph, params, **args, _memos=memos)
        new._param_keys = self._param_keys  # (with_params(None) still needs the loaded keys)
        return new

    def with_head(self, head: str) -> "KerasModel":
        """A new model whose output goes through ``head``; this one is unchanged.

        ``"logits"`` replaces the fused activation of the output layer(s) by linear (an
        output ``Activation``/``Softmax`` layer becomes the identity); ``"softmax"``,
        ``"sigmoid"`` and ``"sigmoid_complement"`` (``1 - sigmoid``: the other class of a
        one-unit binary model) apply to those logits (``"softmax"`` keeps an output that is the
        model's own softmax, over its axis, e.g. ``Softmax(axis=1)``, and normalizes other
        outputs over their last axis); ``"saved"`` is the file's own head.

        Raises ``ValueError`` for a head the (selected) output cannot have: ``"softmax"`` on
        a one-unit output ``(N, 1)`` (constant 1.0), ``"logits"`` where the activation feeds
        other layers or the output merges probabilities.
        """
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; expected one of {HEADS}")
        return self._replace(head=head)

    @property
    def output_names(self) -> list[str]:
        """The model's outputs, in Keras order, by the layer that produces each
        (``"layer:k"`` for output ``k`` of a multi-output layer; ``"layer:c:k"`` where
        outputs come from several calls of one layer, ``c`` the call, 0 for the first, as in
        Keras's ``[layer, node, tensor]`` references); for a model built with a dict of
        outputs, its keys in Keras's order (sorted)."""
        if self.graph.output_keys is not None:
            return list(self.graph.output_keys)
        outs = self.graph.outputs

        def name(r) -> str:
            same = [o for o in outs if o.layer == r.layer]
            if len({o.node for o in same}) > 1:  # a shared layer: "shared:0" named both
                return f"{r.layer}:{r.node}:{r.tensor}"
            return r.layer if r.tensor == 0 and len(same) == 1 else f"{r.layer}:{r.tensor}"

        return [name(r) for r in outs]

    def with_output(self, output: int | str | None) -> "KerasModel":
        """A new model that returns one output of a multi-output model: ``output`` is its
        position or its name in :attr:`output_names` (``None``: all outputs, as saved).

        The head (``with_head``) then applies to that output, and the attribution methods
        take the model like any single-output classifier::

            m = load_keras("multitask.keras").with_output("cls").with_head("logits")
        """
        if output is None:
            return self._replace(output=None)
        names = self.output_names
        if isinstance(output, str):
            if output not in names:
                raise ValueError(f"unknown output {output!r}; this model's outputs are "
                                 f"{names} (or their positions 0..{len(names) - 1})")
            index = names.index(output)
        elif isinstance(output, (int, np.integer)) and not isinstance(output, bool):
            index = int(output)
            if not -len(names) <= index < len(names):
                raise ValueError(f"output {index} out of range: this model has {len(names)} "
                                 f"output(s): {names}")
            index %= len(names)
        else:
            raise TypeError(f"expected output= as a position (int) or a name (str), got "
                            f"{type(output).__name__}")
        return self._replace(output=index)

    def with_params(self, params: Any) -> "KerasModel":
        """The same architecture with other weights ``params`` (same tree structure and
        shapes as :attr:`params`). NumPy arrays in big-endian byte order (weights read from a
        big-endian machine's file) are taken to the machine's: JAX reads no other."""
        return self._replace(params=native(params))

    def with_relu(self, relu: Callable[[Array], Array], name: str = "custom") -> "KerasModel":
        """A new model that uses ``relu`` for every ReLU nonlinearity (``relu``/``relu6``
        activations, ``Activation`` and ``ReLU`` layers, ReLU ops). The weights are
        untouched; ``name`` is the rule's name in :attr:`relu_mode` and the ``repr``."""
        return self._replace(runtime=dataclasses.replace(self.runtime, relu=relu),
                             relu_mode=name)

    def with_rules(self, *, elementwise: Callable | None = None,
                   max_pool: Callable | None = None,
                   layer_rule: Callable | None = None,
                   hold: Callable | None = None,
                   pairwise: Callable | None = None,
                   softmax: Callable | None = None,
                   inner_product: Callable | None = None) -> "KerasModel":
        """A new model whose elementwise activations, max poolings, relevance layers, held
        values, elementwise functions of two tensors, softmaxes and attention layers' products
        go through these rules (``Runtime.elementwise`` / ``.max_pool`` / ``.layer_rule`` /
        ``.hold`` / ``.pairwise`` / ``.softmax`` / ``.inner_product``; ``None`` restores the
        plain function): how ``jaxsal.deeplift`` and
        ``jaxsal.lrp`` install theirs. Forward values are unchanged; the weights are
        untouched."""
        return self._replace(runtime=dataclasses.replace(
            self.runtime, elementwise=elementwise, max_pool=max_pool, layer_rule=layer_rule,
            hold=hold, pairwise=pairwise, softmax=softmax, inner_product=inner_product))

    def with_backprop(self, mode: str) -> "KerasModel":
        """A new model whose ReLUs take the backward rule ``mode``: ``"standard"``, ``"guided"``
        (Springenberg et al. 2015) or ``"deconvnet"`` (Zeiler & Fergus 2014), via
        ``jax.custom_vjp``. Forward values are unchanged."""
        from jaxsal._src.guided import relu_for_mode  # the custom VJPs live in the engine

        return self.with_relu(relu_for_mode(mode), name=mode)

    # ------------------------------------------------------------------ running
    @property
    def num_inputs(self) -> int:
        """How many input arrays the model takes (see :attr:`input_names`)."""
        return len(self.graph.inputs)

    @property
    def input_names(self) -> list[str]:
        """The model's inputs in the order :meth:`apply` takes them as a list: the input
        layers' names, or for a model built with a dict of inputs its keys (sorted, Keras's
        order). A dict keyed by these names is accepted too."""
        if self.graph.input_keys is not None:
            return list(self.graph.input_keys)
        return [r.layer for r in self.graph.inputs]

    def check_token_ids(self, x: Inputs) -> None:
        """Refuse token ids outside ``[0, input_dim)`` of an ``Embedding`` that reads a model
        input directly (JAX would give NaN rows, and gradients at the embedding that do not
        depend on its values would still come out finite). ``x`` as for :meth:`apply`;
        traced values are not checked (their values are unknown)."""
        limits = self.graph.token_limits()
        if not limits:
            return
        xs = self._as_list(x)
        for i, (dim, layer) in limits.items():
            a = xs[i] if i < len(xs) else None
            if a is None or isinstance(a, jax.core.Tracer):
                continue
            a = np.asarray(a)
            if a.size and (a.min() < 0 or a.max() >= dim):
                raise ValueError(
                    f"input {i}: token ids must be in [0, {dim}) for Embedding {layer!r} "
                    f"(input_dim={dim}), got ids from {a.min()} to {a.max()}; map unknown "
                    "tokens to an id the model knows (an OOV or padding id)")

    def _keras_cast(self, x: Inputs) -> Inputs:
        """``x`` (as for :meth:`apply`) with the floats given to an integer ``InputLayer``
        cast to its dtype as Keras casts a model's inputs (truncated toward zero), for
        :meth:`__call__` and :meth:`intermediates`; floats the dtype cannot hold (NaN, inf,
        beyond its range) are refused, as are token ids outside an ``Embedding``'s
        vocabulary (:meth:`check_token_ids`). Traced values are left as they are (computed
        as floats, as :meth:`apply` computes them). A model with an integer input gets the
        list of inputs :meth:`apply` reads ``x`` as (:meth:`_as_list`: a dict's keys are
        checked here), any other ``x`` itself."""
        self.check_token_ids(x)
        declared = [str(d) for d in self.graph.input_dtypes]
        if not any("int" in d for d in declared):
            return x

        def one(a, i):
            d = declared[i] if i < len(declared) else ""
            if "int" not in d or isinstance(a, jax.core.Tracer):
                return a
            v = a if hasattr(a, "dtype") else np.asarray(a)  # (a nested list)
            to = _int_input_dtype(d)
            if not jnp.issubdtype(v.dtype, jnp.floating):
                _check_int_codes(v, to, i, d)
                return a
            _check_float_codes(v, to, i, d)
            return v.astype(to)

        return [one(a, i) for i, a in enumerate(self._as_list(x))]

    def _as_list(self, x) -> list:
        if isinstance(x, Mapping):
            names = self.input_names
            if set(x) != set(names):
                raise ValueError(f"expected the inputs {names} (a dict with these keys, or a "
                                 f"list in this order), got a dict with keys {sorted(x)}")
            return [x[n] for n in names]
        return list(x) if isinstance(x, (list, tuple)) else [x]

    @property
    def input_shape(self) -> tuple | None:
        """Shape of the (first) input without the batch axis; ``None`` entries are free."""
        shape = self.graph.input_shapes[0]
        if shape is not None and self._moved(self.graph.inputs[0].layer):
            return _last(shape)
        return shape

    @property
    def input_shapes(self) -> list[tuple | None]:
        """Shapes of every input without the batch axis, in :attr:`input_names` order
        (``None`` entries are free; channels moved last in a :meth:`channels_last` view)."""
        return [_last(shape) if shape is not None and self._moved(r.layer) else shape
                for r, shape in zip(self.graph.inputs, self.graph.input_shapes)]

    @property
    def input_data_formats(self) -> list[str]:
        """Layout of every input, in :attr:`input_names` order (see :attr:`data_format`)."""
        if self.channels_last_view:
            return ["channels_last"] * self.num_inputs
        return [self._formats.get(r.layer) or "channels_last" for r in self.graph.inputs]

    def channels_last(self) -> "KerasModel":
        """The same function taking and giving channels-last arrays: for a channels-first
        model (:attr:`data_format`), a view whose input is ``(N, H, W, C)`` and whose
        channels-first layers' outputs (``capture``, ``perturb``, :meth:`layer` shapes) are
        ``(N, h, w, K)``; the axes are moved around the unchanged graph. Other models
        return themselves."""
        if self.channels_last_view or self.data_format != "channels_first":
            return self
        return self._replace(channels_last_view=True)

    def _moved(self, path: str) -> bool:
        """Whether this view moves the channel axis of ``path``'s output."""
        return self.channels_last_view and self._formats.get(path) == "channels_first"

    def resolve_layer(self, name: str) -> str:
        """The full path of a layer given its path or a bare name unique in the model."""
        if name in self._all_paths:
            return name
        matches = [p for p in self._all_paths if p.endswith("/" + name)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ValueError(f"layer name {name!r} is ambiguous: it matches {matches}; pass the "
                             "full path")
        raise ValueError(f"unknown layer {name!r}; valid layer names: {', '.join(self._paths)}")

    def _prepare(self, x) -> list[Array]:
        xs = self._as_list(x)
        self.check_token_ids(xs)
        if len(xs) != self.num_inputs:
            raise ValueError(f"expected {self.num_inputs} input arrays ({self.input_names}, as "
                             f"a list in this order or a dict), got {len(xs)}")
        out = []
        for i, (a, shape) in enumerate(zip(xs, self.graph.input_shapes)):
            a = jnp.asarray(native(a))  # (JAX reads no big-endian array)
            declared = str(self.graph.input_dtypes[i])
            int_input = "int" in declared  # token ids (Embedding), raw uint8 images
            if int_input and not jnp.issubdtype(a.dtype, jnp.floating):
                # the InputLayer's own dtype, as Keras casts (uint8 arithmetic wraps, a
                # resized uint8 image saturates at 0 and 255); 64-bit ones as int32 (JAX's
                # default without x64). Floats stay floats here, a relaxation to
                # differentiate (maximize's recipe for uint8 image models); __call__ casts
                # them as Keras does (_keras_cast)
                a = a.astype(_int_input_dtype(declared))
            elif declared == "bool":
                # a boolean InputLayer: Keras casts what it is given to bool (non-zero, NaN
                # included, is True), so ops.sum of it is an int32 count, ops.max a bool
                a = a.astype(jnp.bool_)
            elif not jnp.issubdtype(a.dtype, jnp.floating):
                a = a.astype(jnp.float32)
            elif a.dtype.itemsize < 4 and not int_input:
                # float16/bfloat16, widened exactly: Keras casts its inputs to the Input's
                # float32 (the import computes a float16 Input in float32 too); kept, the
                # operations before the first weighted layer ran in half precision, where
                # exp(12) is inf
                a = a.astype(jnp.float32)
            if shape is not None:
                ok = a.ndim == len(shape) + 1 and all(
                    d is None or d == s for d, s in zip(shape, a.shape[1:]))
                if not ok:
                    fits = lambda have, want: len(have) == len(want) and all(  # noqa: E731
                        d is None or d == s for d, s in zip(want, have))
                    fix = ("Add a batch axis for a single example: x[None]."
                           if fits(a.shape, shape) else
                           "x lacks the channel axis (1 channel): add it with x[..., None]."
                           if shape[-1] == 1 and fits(a.shape[1:], shape[:-1]) else
                           "Pass inputs of the shape the model was saved with (resize or "
                           "transpose them as its training data were).")
                    raise ValueError(
                        f"input {i}: expected shape (N, {', '.join(str(d) for d in shape)}) "
                        f"for model {self.graph.name!r}, got {tuple(a.shape)}. {fix}")
            out.append(a)
        return out

    def apply(self, params: Any, x: Inputs, *,
              capture: Iterable[str] = (), perturb: Mapping[str, Array] | None = None,
              perturb_pre: Mapping[str, Array] | None = None,
              capture_pre: Iterable[str] = ()):
        """The forward pass, pure in ``params``.

        Args:
          params: a pytree like :attr:`params`.
          x: ``(N, *input_shape)`` (for multi-input models a list or tuple in
            :attr:`input_names` order, or a dict keyed by those names: the alias
            ``jaxsal.Inputs``).
          capture: layer names whose outputs to return as well.
          perturb: ``{layer: delta}`` added to those layers' outputs (``delta`` shaped like
            the output); ``jax.grad`` with respect to ``delta`` at zero is the gradient with
            respect to that layer's output.
          perturb_pre: the same, added before the layer's fused activation (a ``Conv2D``
            with ``activation="relu"``): the gradient with respect to its pre-activation.
            For a layer without a fused activation it is ``perturb``.
          capture_pre: layer names whose pre-activation values to return: a ``Conv2D(64, 3,
            activation="relu")``'s values before its ReLU (Lucid's ``..._pre_relu``), shaped
            like its output; for a layer without a fused activation (``"linear"``), and for
            an output layer whose activation the ``logits`` head removes, its output. A
            layer that is itself an activation (``Activation``, ``ReLU``, ``Softmax``...)
            is refused: name the layer before it; so is a recurrent layer (its activation
            is inside its steps). See :meth:`pre_activation_layer`.
        Returns:
          ``outputs`` (``(N, ...)``; a list for multi-output models), or
          ``(outputs, {layer: activation})`` when ``capture`` is given, or
          ``(outputs, {layer: activation}, {layer: pre_activation})`` when ``capture_pre``
          is given (the second dict empty without ``capture``)::

              y, _, pre = m.apply(m.params, x, capture_pre=["conv2d_1"])
        """
        return self._run(params, x, capture, perturb, perturb_pre, None, capture_pre)

    def pre_activation_layer(self, name: str) -> str:
        """The path of layer ``name`` (as :meth:`resolve_layer`) where it has a
        pre-activation value to capture (``apply(capture_pre=...)``); raise ``ValueError``
        for a nested model (name a layer inside it), for a layer that is itself an
        activation (``ReLU``, ``Activation``...: name the layer before it) and for one that
        applies its activation inside its own call (``LSTM``, a ``Bidirectional`` RNN)."""
        path = self.resolve_layer(name)
        why = pre_activation_refusal(self._spec(path))
        if why is not None:
            raise ValueError(f"layer {name!r} has no pre-activation value: {why}")
        return path

    def _by_path(self, values: Mapping[str, Any] | None, arg: str) -> dict[str, Any]:
        """``{layer name: value}`` keyed by the layers' paths; two names of one layer (a nested
        layer's path and its own name) are refused rather than one silently dropped."""
        out: dict[str, Any] = {}
        named: dict[str, str] = {}
        for name, v in (values or {}).items():
            path = self.resolve_layer(name)
            if path in out:
                raise ValueError(f"{arg} names layer {path!r} twice ({named[path]!r} and "
                                 f"{name!r}); expected one value per layer: pass one of them")
            out[path], named[path] = v, name
        return out

    def _run(self, params, x, capture, perturb, perturb_pre, bias_sink, capture_pre=()):
        _check_params(params, self._param_keys)
        capture = tuple(capture) if not isinstance(capture, str) else (capture,)
        cap_names = {c: self.resolve_layer(c) for c in capture}  # every name asked (aliases)
        capture_pre = (tuple(capture_pre) if not isinstance(capture_pre, str)
                       else (capture_pre,))
        pre_paths = {c: self.pre_activation_layer(c) for c in capture_pre}  # every name asked
        pre_sink: dict[str, Array] = {}
        pert = self._by_path(perturb, "perturb")
        pre = self._by_path(perturb_pre, "perturb_pre")
        if self.channels_last_view:
            xs = self._as_list(x)
            x = [jnp.moveaxis(jnp.asarray(native(a)), -1, 1) if self._moved(r.layer) else a
                 for r, a in zip(self.graph.inputs, xs)]
            pert, pre = ({k: jnp.moveaxis(v, -1, 1) if self._moved(k) else v
                          for k, v in d.items()} for d in (pert, pre))
        outs, captured = self.graph.run(
            params, self._prepare(x), self.runtime, capture=frozenset(cap_names.values()),
            perturb=pert, perturb_pre=pre, bias_sink=bias_sink,
            capture_pre=frozenset(pre_paths.values()), pre_sink=pre_sink,
            strip_output_activation=(
                self.head != "saved" and (True if self.output_index is None
                                          else (self.output_index,))),
            keep_softmax=self.head == "softmax", head=self.head, keras_major=self._keras_major)
        # the softmax head keeps the model's own softmax outputs, and normalizes the others'
        # logits over their last axis
        heads = [("saved" if own else self.head) for own in (
            self.graph.softmax_heads() if self.head == "softmax" else [False] * len(outs))]
        if self.output_index is not None:
            outs, heads = [outs[self.output_index]], [heads[self.output_index]]
        outs = [apply_head(h, o, rt=self.runtime) for o, h in zip(outs, heads)]
        y = outs[0] if self.graph.single_output or self.output_index is not None else outs
        if not capture and not capture_pre:
            return y

        def viewed(path, v):  # a moved layer's value in the channels-last view
            return jnp.moveaxis(v, 1, -1) if self._moved(path) else v

        acts = {orig: viewed(path, captured[path]) for orig, path in cap_names.items()}
        if not capture_pre:
            return y, acts
        return y, acts, {orig: viewed(path, pre_sink[path]) for orig, path in pre_paths.items()}

    @property
    def affine_layers(self) -> list[str]:
        """Paths of the layers that add a constant term, in call order: convolutions and
        ``Dense``/``EinsumDense`` layers with a bias, ``BatchNormalization`` (FullGrad's
        bias layers; see :meth:`biases`)."""
        return self.graph.affine_paths()

    @property
    def relevance_layers(self) -> list[str]:
        """Paths of the layers that layer-wise relevance propagation gives a rule
        (:attr:`LayerImpl.relevance`: convolutions, ``Dense``, ``EinsumDense``,
        ``BatchNormalization``, poolings, attention and normalization layers,
        ``Rescaling``/``Normalization``, ``LayerScale``, sums and products of tensors as
        merges or operations), in call order."""
        return self.graph.relevance_paths()

    @property
    def input_readers(self) -> list[str]:
        """Paths of the layers that read a model input's values, in Keras order: given it
        directly, or through layers that only move it (reshaping, cropping, slicing,
        inference-time identities) or prepare it (``Rescaling``, ``Normalization``, zero
        padding), which are not listed; inside nested models too. Both convolutions of a
        stem that reads the image twice, the first layer of each input of a two-input
        model (LRP's ``first`` rule, ``jaxsal.lrp_composite``)."""
        readers = self.graph.input_readers()[0]
        return [p for p in self.graph.layer_paths(include_ops=True) if p in readers]

    def biases(self, params: Any, x: Inputs) -> dict[str, Array]:
        """``{layer: b}`` for every :attr:`affine_layers` entry, with weights ``params``: the
        layer's pre-activation output for a zero input, ``(1, *output_shape)`` (its bias
        broadcast over the positions; for BatchNormalization ``beta - mean * gamma /
        sqrt(var + eps)``). ``x`` as for :meth:`apply` (a list or dict of arrays for several
        inputs); only its shapes matter: the rest of the forward pass is dead code under
        ``jit``."""
        sink: dict[str, Array] = {}
        xs = [jnp.asarray(native(a))[:1] for a in self._as_list(x)]
        self._run(params, xs if self.num_inputs > 1 else xs[0], (), None, None, sink)
        return {k: jnp.moveaxis(v, 1, -1) if self._moved(k) else v for k, v in sink.items()}

    def _program(self, capture: tuple[str, ...] | None) -> Callable:
        """The jitted ``(params, x) -> outputs`` (``capture=None``) or ``-> {layer:
        activation}`` of :meth:`apply`, compiled per input shape. Shared by this model and the
        variants ``with_head``/``with_params``/... make of it, keyed by what the program
        depends on besides its arguments (head, runtime, output selection, view, captured
        layers), so that ``m.with_head("logits")(x)`` made on every call compiles once."""
        memo = self.__dict__.setdefault("_program_memo", {})
        key: Any = (capture, self.head, self.runtime, self.output_index,
                    self.channels_last_view)
        try:
            hash(key)
        except TypeError:  # rules that do not hash (Runtime asks for ones that do): kept apart
            memo, key = self.__dict__.setdefault("_own_programs", {}), capture
        fn = memo.get(key)
        if fn is None:
            if capture is None:
                fn = jax.jit(lambda p, x: self.apply(p, x))
            else:
                fn = jax.jit(lambda p, x: self.apply(p, x, capture=capture)[1])
            if len(memo) >= _PROGRAM_MEMO_SIZE:  # the oldest goes (a dict keeps order)
                memo.pop(next(iter(memo)), None)
            memo[key] = fn
        return fn

    def __call__(self, x: Inputs):
        """``apply(self.params, x)``, jit-compiled (cached per model, its ``with_*`` variants
        of the same head, rules, output and view, and input shape); ``x`` as for
        :meth:`apply`, except that floats given to an integer ``InputLayer`` are first cast
        to its dtype as Keras casts them (truncated toward zero; values it cannot hold
        refused), where :meth:`apply` computes them as floats (a relaxation to
        differentiate)."""
        try:
            return self._program(None)(self.params, self._program_inputs(x))
        except TypeError as e:  # jax.jvp of the jitted program met a custom VJP in it
            clear = forward_mode_error(e, "the model's forward pass")
            if clear is None:
                raise
            raise clear from e

    def intermediates(self, x: Inputs, layers: Sequence[str]) -> dict[str, Array]:
        """Outputs of several named layers (or one name) for ``x`` (as for :meth:`apply`) in
        one forward pass, jit-compiled (cached as :meth:`__call__` is, per layer list)."""
        layers = (layers,) if isinstance(layers, str) else tuple(layers)
        return self._program(layers)(self.params, self._program_inputs(x))

    def _program_inputs(self, x: Inputs) -> list:
        """``x`` (as for :meth:`apply`) as the list of input arrays a :meth:`_program` takes:
        cast as Keras casts them (:meth:`_keras_cast`), native byte order (a compiled program
        would read big-endian bytes as native ones), and one structure whatever form ``x``
        came in, as ``jax.jit`` compiles per input structure: a dict, a list and a tuple of
        the same arrays (a single-input model's bare array and ``[x]``) were each compiled."""
        return self._as_list(self._keras_cast(native(x)))

    # ------------------------------------------------------------------ structure
    @property
    def layer_names(self) -> list[str]:
        """Layer names in Keras order (nested models' layers as ``"outer/inner"``)."""
        return list(self._paths)

    @property
    def used_layers(self) -> list[str]:
        """The layers the model's output depends on, in Keras order (as
        :attr:`layer_names`): with :meth:`with_output`, those feeding the selected output,
        not the other outputs' heads; otherwise those feeding any output. A layer missing
        here cannot change the output: its gradients are zero."""
        used = self._used_paths()
        return [p for p in self._paths if p in used]

    def _used_paths(self) -> frozenset[str]:
        """The paths the output depends on (:attr:`used_layers`), Keras 3 operation nodes
        (``ops.relu(x)``, ``x * 2.0``: no layers of :attr:`layer_names`, but names a
        ``layer=`` takes) included."""
        memo = self.__dict__.setdefault("_used_memo", {})
        if self.output_index not in memo:
            used = self.graph.reaching(None if self.output_index is None
                                       else (self.output_index,))
            memo[self.output_index] = frozenset(p for p in self._all_paths if p in used)
        return memo[self.output_index]

    @property
    def name(self) -> str:
        """The Keras model's name."""
        return self.graph.name

    def _probe(self, fn: Callable) -> Any:
        """Shapes (without batch) of ``fn(params, *inputs)``'s array leaves, found abstractly.

        Free input sizes (``None``) are probed with two different sizes; an output dim that
        changes with them is reported as ``None``. The first axis is the batch axis, left
        out, where it depends on the inputs' unknown sizes (the batch's, a free size's), as
        Keras marks it ``None``: the probe's batch is 1, and a value whose first axis is not 1
        is probed again with a batch of 2; one whose first axis changes with neither is
        reported whole (tf.keras's ``tf.shape(x)``, a ``tf.range``: Keras's ``(3,)``; where
        every first axis is 1, all are taken for batch axes). A probe size the model cannot
        take (too small for its strides) moves on to larger ones; the first error is raised
        if all fail.
        """
        specs = self.graph.input_shapes
        if any(s is None for s in specs):
            return None
        probes = [(0, 0)] if all(None not in s for s in specs) else [
            (224, 256), (299, 331), (512, 544)]

        def run(size: int, batch: int = 1):
            xs = [jax.ShapeDtypeStruct((batch, *[size if d is None else d for d in s]),
                                       jnp.int32 if "int" in str(dt) else jnp.float32)
                  for s, dt in zip(specs, self.graph.input_dtypes)]
            if not size:
                return jax.eval_shape(fn, self.params, *xs)
            with probing_free_sizes():  # stand-ins for free sizes pass declared shapes
                return jax.eval_shape(fn, self.params, *xs)

        first_error = None
        for a, b in probes:
            try:
                outs = [run(size) for size in ((a, b) if a else (0,))]
                leaves = [tuple(v.shape) for v in jax.tree_util.tree_leaves(outs[0])]
                # values whose first axis is not the batch of 1: rare (tf.keras TF ops)
                twice = ([tuple(v.shape) for v in jax.tree_util.tree_leaves(run(a, 2))]
                         if any(s[:1] != (1,) for s in leaves) else None)
            except LayerCallError as e:
                first_error = first_error or e
                continue
            other = ([tuple(v.shape) for v in jax.tree_util.tree_leaves(outs[1])]
                     if len(outs) > 1 else leaves)
            shapes = []
            for s, s2, t in zip(leaves, twice or leaves, other):
                batched = (s[:1] == (1,) if twice is None
                           else len(s) > 0 and (s2[0] != s[0] or t[0] != s[0]))
                s, t = (s[1:], t[1:]) if batched else (s, t)
                shapes.append(tuple(d if d == e else None for d, e in zip(s, t)))
            return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(outs[0]), shapes)
        raise first_error

    def _output_shapes(self) -> dict[str, Any]:
        cache = self.__dict__.get("_shape_cache")
        if cache is not None:
            return cache
        fn = lambda p, *xs: self.graph.run(  # noqa: E731
            p, list(xs), self.runtime, capture=frozenset(self._all_paths),
            keras_major=self._keras_major)[1]
        shapes = self._probe(fn) or {}
        self.__dict__["_shape_cache"] = shapes
        return shapes

    @functools.cached_property
    def _formats(self) -> dict[str, str | None]:
        """``{layer path: "channels_last" | "channels_first" | None}``: the layout of each
        layer's output. A layer with a ``data_format`` (convolutions, pooling, a
        BatchNormalization over axis 1...) sets it; any other layer keeps the layout of its
        first input when it keeps that input's rank (activations, merges, normalization over
        the last axis); an ``Embedding`` is channels-last (its vectors on a new last
        axis); a layer that changes the rank (Flatten, global pooling) or may
        rearrange axes (Permute, Reshape, transposes) has none. An input takes the layout of
        the first layer declaring one that it reaches through layout-keeping layers
        (channels-last if none); a BatchNormalization's axis counts only on tensors with
        spatial axes (rank >= 3, not ``(N, features)``) and only where no convolution or
        pooling layer declares a layout."""
        shapes = self._output_shapes()
        out: dict[str, Any] = {}
        resolved: dict[int, str] = {}  # input i -> the layout found for it
        weak: dict[int, str] = {}  # ... found only by a normalization layer's axis

        def rank(path: str) -> int | None:
            s = shapes.get(path)
            return len(s) if isinstance(s, tuple) and all(
                isinstance(d, (int, type(None))) for d in s) else None

        def walk(graph: Graph, prefix: str, input_formats: list) -> None:
            for ref, fmt in zip(graph.inputs, input_formats):
                out[prefix + ref.layer] = fmt
            for call in graph.calls:
                if call.index != 0:
                    continue
                spec = graph.layers[call.layer]
                path = prefix + call.layer
                src = next(iter(_refs(call.args)), None)
                src_path = None if src is None else prefix + src.layer
                src_fmt = None if src_path is None else out.get(src_path)
                sub = spec.impl.subgraph
                if sub is not None:
                    walk(sub, path + "/", [src_fmt] * len(sub.inputs))
                    fmt = out.get(path + "/" + sub.outputs[0].layer)
                elif spec.impl.data_format is not None and not (
                        spec.class_name in _WEAK_FORMAT and (rank(path) or 3) < 3):
                    fmt = spec.impl.data_format
                    if isinstance(src_fmt, _Unresolved):  # the input it came from has it too
                        (weak if spec.class_name in _WEAK_FORMAT else resolved).setdefault(
                            src_fmt.index, fmt)
                elif _rearranges(spec):
                    fmt = None
                elif spec.class_name in _EMBEDDINGS:
                    # Keras appends the embedding axis to the ids' shape: (N, L) ids give
                    # (N, L, E), channels-last with a token axis (the layers after it that
                    # keep its rank keep that: an RNN's sequences, attention, LayerNorm)
                    fmt = "channels_last"
                else:
                    r_in, r_out = (None, None) if src_path is None else (rank(src_path),
                                                                         rank(path))
                    fmt = src_fmt if r_in is not None and r_in == r_out else None
                r = rank(path)
                out[path] = fmt if r is None or r >= 2 else None  # no channel axis

        walk(self.graph, "", [_Unresolved(i) for i in range(len(self.graph.inputs))])
        return {k: resolved.get(v.index, weak.get(v.index, "channels_last"))
                if isinstance(v, _Unresolved) else v for k, v in out.items()}

    @property
    def data_format(self) -> str:
        """Layout of the (first) input: ``"channels_last"`` (``(N, ..., C)``) or
        ``"channels_first"`` (``(N, C, ...)``), as the model's first layer with a
        ``data_format`` declares it (channels-last in a :meth:`channels_last` view)."""
        fmt = self._formats.get(self.graph.inputs[0].layer) or "channels_last"
        return "channels_last" if self.channels_last_view else fmt

    def layer_data_format(self, name: str) -> str | None:
        """Layout of layer ``name``'s output (see :attr:`data_format`), ``None`` when it has no
        channel axis to speak of (Flatten, Dense after Flatten, global pooling...)."""
        path = self.resolve_layer(name)
        return "channels_last" if self._moved(path) else self._formats.get(path)

    @property
    def output_data_format(self) -> str | None:
        """Layout of the output :meth:`apply` returns (the selected one, else the first), as
        :meth:`layer_data_format` says for its layer: ``"channels_first"`` for a
        channels-first segmentation map ``(N, K, H, W)``. Outputs are never moved, also not
        in a :meth:`channels_last` view."""
        return self._formats.get(self.graph.outputs[self.output_index or 0].layer)

    def _spec(self, path: str) -> LayerSpec:
        return self.graph.find(path)[1]

    def layer(self, name: str) -> LayerInfo:
        """Description and weights of one layer (by path or unique bare name)."""
        path = self.resolve_layer(name)
        spec = self._spec(path)
        p: Any = self.params
        for part in self.graph.locate(path):
            p = p.get(part, {}) if isinstance(p, Mapping) else {}
        act = spec.config.get("activation")
        shape = self._output_shapes().get(path)
        if shape is not None and self._moved(path):
            shape = _last(shape)
        return LayerInfo(path, spec.class_name, shape, spec.config, p,
                         "channels_last" if self._moved(path) else spec.impl.data_format,
                         None if act is None else activation_name(act))

    @property
    def layers(self) -> list[LayerInfo]:
        """A :class:`LayerInfo` for every layer, in :attr:`layer_names` order."""
        return [self.layer(p) for p in self._paths]

    @property
    def output_shape(self):
        """Output shape without the batch axis (a list for multi-output models); ``None`` for
        a dimension that depends on a free input size. Traced once for a model and the
        variants ``with_head``/``with_params``/... make of it (jaxsal's methods ask for it on
        every call), per output selection."""
        memo = self.__dict__.setdefault("_output_shape_memo", {})
        if self.output_index not in memo:
            m = self._replace(channels_last_view=False) if self.channels_last_view else self
            memo[self.output_index] = m._probe(  # outputs are never moved
                lambda p, *xs: m.apply(p, list(xs)))
        shape = memo[self.output_index]
        return list(shape) if isinstance(shape, list) else shape

    def count_params(self) -> int:
        """The number of scalars in :attr:`params` (Keras's ``count_params``)."""
        return int(sum(np.size(a) for a in jax.tree_util.tree_leaves(self.params)))

    def summary(self) -> str:
        """A Keras-like table: layer, class, output shape, parameter count."""
        rows = [("Layer (type)", "Output shape", "Param #")]
        for info in self.layers:
            n = sum(int(np.size(a)) for a in jax.tree_util.tree_leaves(info.params))
            rows.append((f"{info.name} ({info.class_name})", str(info.output_shape), str(n)))
        w = [max(len(r[i]) for r in rows) for i in range(3)]
        line = "-" * (sum(w) + 4)
        backend = "" if self.keras_backend is None else f" on {self.keras_backend}"
        out = [f'Model: "{self.graph.name}"  (head: {self.head}, Keras {self.keras_version}'
               f'{backend})', line]
        for i, r in enumerate(rows):
            out.append(f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:>{w[2]}}")
            if i == 0:
                out.append(line)
        out += [line, f"Total params: {self.count_params():,}"]
        return "\n".join(out)

    def __repr__(self) -> str:
        out = "" if self.output_index is None else \
            f", output={self.output_names[self.output_index]!r}"
        out += ", channels_last view" if self.channels_last_view else ""
        return (f"KerasModel(name={self.graph.name!r}, inputs={self.graph.input_shapes}, "
                f"layers={len(self._paths)}, head={self.head!r}, relu={self.relu_mode!r}{out})")


def _keys_of(tree: Any) -> Any:
    """The dict keys of a params tree, nested (``None`` for anything else)."""
    return {k: _keys_of(v) for k, v in tree.items()} if isinstance(tree, Mapping) else None


def _check_params(given: Any, own: Any, where: tuple = ()) -> None:
    """Refuse ``params`` that lack an entry of the loaded ones (``own``, their
    :func:`_keys_of`): a ``None``, one layer's dict given for the whole model, a dict of
    other layers; the layer that read it failed with a bare ``'kernel'`` or ``'NoneType'
    object has no attribute 'get'``. Only the dicts' keys are compared (extra entries are
    allowed; arrays are not looked at), so any pytree of the same keys works, traced or
    not."""
    if not isinstance(own, Mapping):
        return
    at = "".join(f"[{k!r}]" for k in where)
    if not isinstance(given, Mapping):
        raise TypeError(f"params{at}: expected a dict like model.params{at} (keys "
                        f"{sorted(own)[:6]}{'...' if len(own) > 6 else ''}), got "
                        f"{type(given).__name__}. Pass model.params, or a tree of the same "
                        "keys (jax.tree_util.tree_map over model.params)")
    missing = [k for k in own if k not in given]
    if missing:
        raise ValueError(f"params{at} lacks {missing[:6]}{'...' if len(missing) > 6 else ''} "
                         f"(it has {sorted(given)[:6]}{'...' if len(given) > 6 else ''}); "
                         f"expected the keys of model.params{at}: pass model.params, or a "
                         "tree of the same keys (jax.tree_util.tree_map over model.params)")
    for k, v in own.items():
        _check_params(given[k], v, (*where, k))
