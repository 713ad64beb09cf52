"""Keras architecture configs -> a static graph of layer calls, and its pure interpreter.

A :class:`Graph` is built once from the JSON config (Sequential, Functional, nested models)
and is immutable. :meth:`Graph.run` evaluates it on explicit params; under ``jax.jit`` the
Python loop runs once, at trace time, so the compiled program is the model's dataflow.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import warnings
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from model_import._errors import KerasImportError, UnsupportedLayerError, forward_mode_error
from model_import._layers import masking as _masking
from model_import._layers.activations import (_identity, activation_name, get_activation,
                                              with_own_activation)
from model_import._layers.registry import (MODEL_CLASSES, CellImpl, ConvertContext, LayerImpl,
                                           Runtime, builtin_converters, converter_for,
                                           functional_subclass, lookup, own_class,
                                           returned_layer_impl)
from model_import._output_padding import restore_output_padding
from model_import._version import parse_version

Array = jax.Array


#: Layers that look token ids up in a table of ``input_dim`` rows (see ``token_limits``).
_EMBEDDINGS = ("Embedding", "ReversibleEmbedding")


def pre_activation_refusal(spec: LayerSpec) -> str | None:
    """Why layer ``spec`` has no pre-activation value of its own to capture, or ``None``.

    A layer with a fused activation (``Conv2D(..., activation="relu")``) has one: its value
    before that activation. A layer without one (``"linear"``) has one too: its output. A
    nested model has none (name a layer inside it), and neither has a layer that is itself
    an activation (``Activation``, ``ReLU``, ``Softmax``, ``PReLU``, a softmax or sigmoid
    operation): its pre-activation is the output of the layer before it, so name that one.
    Nor has a layer whose config declares an activation that its own call applies (an
    ``LSTM``'s, a ``Bidirectional`` RNN's: inside its steps) rather than leaving it to the
    interpreter as :attr:`LayerImpl.activation`."""
    impl = spec.impl
    if spec.class_name == "InputLayer":
        return "it is a model input, which no layer computes"
    if impl.subgraph is not None:
        return (f"it is a nested model ({spec.class_name}); name a layer inside it "
                f"(\"{spec.name}/<layer>\")")
    # Softmax by its class too: with masking its call applies the mask (``_masked_softmax``)
    if (impl.call is _identity and impl.activation is not None) or impl.head_op is not None \
            or spec.class_name == "PReLU" \
            or (spec.class_name == "Softmax" and not spec.user_converter):
        return (f"it is an activation layer ({spec.class_name}): its pre-activation is the "
                "output of the layer before it; name that layer (a Conv2D or Dense "
                "followed by this layer) instead")
    inner = spec.config.get("layer")  # TimeDistributed, Bidirectional: the wrapped layer's
    declared = spec.config.get("activation", (inner.get("config") or {}).get("activation")
                               if isinstance(inner, Mapping) else None)
    if impl.activation is None and declared is not None and \
            activation_name(declared) != "linear":
        return (f"its activation ({activation_name(declared)!r}) is computed inside the "
                f"layer's own call ({spec.class_name}: a recurrent layer's, or a wrapped "
                "layer's applied per step), not after it, so it has no pre-activation "
                "tensor; capture its output instead")
    return None


class LayerCallError(ValueError):
    """A ported layer could not be applied to its inputs (wrong shapes, bad weights).
    ``layer``: the path of the layer that failed (``"outer/inner"``), where known."""

    def __init__(self, message: str, layer: str | None = None):
        super().__init__(message)
        self.layer = layer


#: True while a model's shapes are probed at stand-in sizes for its free (``None``) input
#: sizes (``KerasModel._probe``): Keras builds such a model on symbolic tensors whose free
#: sizes are unknown, which its checks of declared shapes let pass.
_PROBING_FREE_SIZES: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "probing_free_sizes", default=False)


@contextlib.contextmanager
def probing_free_sizes():
    """The context in which :func:`check_nested_input_shapes` lets every size pass."""
    token = _PROBING_FREE_SIZES.set(True)
    try:
        yield
    finally:
        _PROBING_FREE_SIZES.reset(token)


def check_nested_input_shapes(path: str, sub: "Graph", inputs: Sequence[Any]) -> None:
    """Refuse, as Keras 3 does, a nested Functional model called on inputs whose sizes are
    not the ones its ``keras.Input`` declared (a model of free size, ``Input((None, None,
    3))``, calling one built on ``Input((32, 32, 3))`` at 48x48).

    Keras 3 checks a Functional model's inputs against their declared shapes whenever it is
    called as a layer (its ``input_spec``: a size given on both sides must agree, a last
    axis of 1 squeezed on either side), and raises "incompatible with the layer" at
    ``predict``; a nested Sequential has no such check, and tf.keras 2 computes either.
    """
    if _PROBING_FREE_SIZES.get():
        return
    for i, (x, declared) in enumerate(zip(inputs, sub.input_shapes)):
        if x is None or declared is None or not hasattr(x, "shape"):
            continue
        want, got = (None, *declared), tuple(x.shape)
        want_cut = want[:-1] if want and want[-1] == 1 else want
        got_cut = got[:-1] if got and got[-1] == 1 else got
        if all(a is None or b is None or a == b for a, b in zip(want_cut, got_cut)):
            continue
        name = sub.inputs[i].layer if i < len(sub.inputs) else str(i)
        # the declared sizes the call contradicts, freed: what the nested model could be
        free = tuple(None if j < len(got) and d is not None and got[j] not in (d, None)
                     else d for j, d in enumerate(want))[1:]
        show = "(N, " + ", ".join("None" if d is None else str(d) for d in declared) + ")"
        raise LayerCallError(
            f"the nested model {path!r} (Functional) was built for inputs of shape {show} "
            f"(its input {name!r}: keras.Input(shape={tuple(declared)})), got {got}; Keras 3 "
            "refuses to call it on them as well ('incompatible with the layer'), whatever "
            "sizes the outer model's inputs take. Give the model inputs of that shape "
            f"(resize them), or rebuild the nested model on keras.Input(shape={free}), set "
            "its weights and save the model again")


def dict_call_rule(version: str) -> str:
    """How the Keras that wrote the config (``version``) reads a dict given to a nested model
    built on a list of inputs (or on one), and the dict of their masks: the tensors by the
    inputs' names, or in ``keras.tree.flatten``'s order (by sorted key).

    ``"names_or_sorted"``: tf.keras 2 (``_flatten_to_reference_inputs``): both by name, and
    the sorted keys' order where a name is missing.
    ``"names"``: Keras 3.0-3.3 (``_flatten_to_reference_inputs``, also for the masks): both
    by name; a missing name raises (``KeyError``).
    ``"sorted"``: Keras 3.4-3.6 (``_flatten_to_reference_inputs``, then
    ``_standardize_inputs``, is ``tree.flatten``; 3.6 warns of the mismatch): both in sorted
    key order, whatever the names.
    ``"names_masks_sorted"``: Keras 3.7 and later (``_standardize_inputs``), also an
    unrecorded minor version: the tensors by name (a missing name raises), the masks in
    sorted key order (``Functional.call``'s ``tree.flatten(mask)``).
    """
    v = parse_version(version)
    if v.major < 3:
        return "names_or_sorted"
    if v.before(3, 4, unrecorded=False):
        return "names"
    return "sorted" if v.before(3, 7, unrecorded=False) else "names_masks_sorted"


def _nested_inputs(path: str, sub: "Graph", arg: Any) -> list:
    """The inputs of nested model ``sub`` (at ``path``) called on ``arg``, one per entry of
    ``sub.inputs``, in that order.

    A dict given to a model built on a list of inputs (or on one) is read as the Keras that
    wrote the file reads it (``sub.dict_call``, :func:`dict_call_rule`): by the inputs' names
    in tf.keras 2, Keras 3.0-3.3 and 3.7+ (``sub({"zz": x, "aa": y})`` of
    ``Model([zz, aa], ...)`` is ``[x, y]``; keys it does not name are left out), in sorted
    key order in Keras 3.4-3.6 (``[y, x]``). Anything else, and a dict given to a model built
    on a dict, in ``keras.tree.flatten``'s order (dicts by sorted key, the order of
    ``sub.input_keys``)."""
    if not isinstance(arg, Mapping) or sub.input_keys is not None or \
            sub.dict_call == "sorted":
        return _flatten(arg)
    names = [r.layer for r in sub.inputs]
    missing = [n for n in names if n not in arg]
    if not missing:
        return [arg[n] for n in names]
    if sub.dict_call == "names_or_sorted":  # tf.keras 2 falls back to the sorted keys' order
        return _flatten(arg)
    raise LayerCallError(
        f"the nested model {path!r} is called on a dict with keys {sorted(arg)}, but takes "
        f"the inputs {names} (a list in this order, or a dict with these names as keys): "
        f"{missing} missing. Keras 3 refuses this call as well; the file is damaged or was "
        "edited: save the model again", layer=path)


def _nested_masks(path: str, sub: "Graph", arg: Any, masks: Any) -> list:
    """The Keras masks of the inputs of nested model ``sub`` (at ``path``) called on ``arg``
    with masks ``masks`` (the structure of ``arg``: a dict, a nested list; the call's
    recorded ``mask=`` or its tensors' masks), one per entry of ``sub.inputs``.

    A dict of masks is read as :func:`_nested_inputs` reads the tensors in tf.keras 2 and
    Keras 3.0-3.6 (by the inputs' names, or in sorted key order in 3.4-3.6). Keras 3.7+'s
    ``Functional.call`` pairs ``keras.tree.flatten(mask)`` (dicts by sorted key) with the
    inputs, which it takes by name, by position: a model built on inputs ``[zz, aa]`` and
    called with ``{"zz": x, "aa": y}`` gets the mask of ``y`` for ``x``, refused where a
    mask is set, which that model would compute with."""
    flat = _flatten(masks)
    if not isinstance(arg, Mapping) or sub.input_keys is not None or \
            not isinstance(masks, Mapping) or sub.dict_call == "sorted":
        return flat
    names = [r.layer for r in sub.inputs]
    if any(n not in masks for n in names):  # (refused by _nested_inputs in Keras 3)
        return flat
    by_name = [masks[n] for n in names]
    if sub.dict_call != "names_masks_sorted" or all(m is None for m in flat) or (
            len(flat) == len(by_name) and all(a is b for a, b in zip(flat, by_name))):
        return by_name
    raise LayerCallError(
        f"the nested model {path!r}, built on the inputs {names}, is called on a dict of "
        f"masked tensors with keys {sorted(masks)}: Keras 3.7+ takes the tensors by these "
        "names but pairs their masks with them in sorted key order, so an input computes "
        "with another's mask, which the importer does not reproduce. Call the nested model "
        f"with a list in the order {names} (or name its inputs in sorted order) and save the "
        "model again", layer=path)


def adjust_input_rank(sub: "Graph", inputs: Sequence[Any]) -> list:
    """The inputs of nested model ``sub`` with a trailing axis of size 1 dropped or added to
    match the rank its ``keras.Input`` declared, as Keras does when such a model is called
    (Keras 3's ``Functional._adjust_input_rank``, tf.keras 2's
    ``_conform_to_reference_input``): an input ``(N, ..., 1)`` of one axis more than
    declared loses its last axis, one of one axis fewer than a declared ``(..., 1)`` gains it
    (``Model(Input((4,)), ...)`` called on ``Reshape((4, 1))(x)``: ``(N, 4, 1)`` ->
    ``(N, 4)``). Other inputs, and those of undeclared shape, are returned as they are (the
    model's layers then refuse a wrong rank, naming themselves)."""
    out = list(inputs)
    for i, (x, declared) in enumerate(zip(inputs, sub.input_shapes)):
        if x is None or declared is None or not hasattr(x, "shape"):
            continue
        rank, want = len(x.shape), len(declared) + 1  # (the batch axis)
        if rank == want + 1 and x.shape[-1] == 1:
            out[i] = jnp.squeeze(x, axis=-1)
        elif rank == want - 1 and declared and declared[-1] == 1:
            out[i] = jnp.expand_dims(x, axis=-1)
    return out


def _add_delta(y: Array, delta: Any, what: str, path: str) -> Array:
    """``y + delta`` for ``apply(perturb=/perturb_pre=)``: a delta may broadcast to the
    layer's output but not change its shape (more rows than inputs, an extra axis)."""
    shape = jnp.shape(y)
    try:
        ok = jnp.broadcast_shapes(shape, jnp.shape(delta)) == shape
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{what}[{path!r}]: expected a delta of the layer's output shape "
                         f"{tuple(shape)} (or one that broadcasts to it), got "
                         f"{tuple(jnp.shape(delta))}")
    return y + delta


@dataclasses.dataclass(frozen=True)
class Ref:
    """A tensor in the graph: output ``tensor`` of call ``node`` of layer ``layer``."""

    layer: str
    node: int = 0
    tensor: int = 0


@dataclasses.dataclass(frozen=True)
class Call:
    """One call of a layer (a Keras "node")."""

    layer: str
    index: int
    args: tuple
    kwargs: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    name: str
    class_name: str
    config: Mapping[str, Any]
    impl: LayerImpl
    #: the Python class a Keras 3 weights file keys the layer by, where it is not
    #: ``class_name`` (a Functional subclass nested as a layer: ``my_model``, not
    #: ``functional``)
    keras_class: str | None = None
    #: whether its converter is the user's (``register_layer``, ``custom_layers=``), not one
    #: of model_import's own, whatever the class is named (``custom_layers={"Attention": f}``)
    user_converter: bool = False


@dataclasses.dataclass(frozen=True, eq=False)
class Graph:
    """A model's static structure: layers in Keras order, calls in topological order."""

    name: str
    class_name: str
    layers: Mapping[str, LayerSpec]
    calls: tuple[Call, ...]
    inputs: tuple[Ref, ...]
    outputs: tuple[Ref, ...]
    input_shapes: tuple[tuple | None, ...]
    input_dtypes: tuple[str, ...]
    single_output: bool = True
    #: The keys of a model built with dicts (``keras.Model({"a": ...}, {"cls": ...})``),
    #: in Keras's flattening order (sorted), which is the order of ``inputs``/``outputs``.
    input_keys: tuple[str, ...] | None = None
    output_keys: tuple[str, ...] | None = None
    #: what a call's recorded ``"mask": null`` means for the Keras that wrote the config
    #: (:func:`model_import._layers.masking.null_mask_rule`): "implicit" (like no key),
    #: "if_unknown" (no mask where the importer cannot know the tensor's, else like no key),
    #: "call" (the call got no mask) or "none" (nor did the output mask's computation)
    null_mask: str = "implicit"
    #: how a dict given to this model, built on a list of inputs, is read by the Keras that
    #: wrote the config (:func:`dict_call_rule`): the tensors and their masks by the inputs'
    #: names or in sorted key order
    dict_call: str = "names_masks_sorted"
    #: A digest of what the graph is a function of (the architecture config, the Keras
    #: version and backend) where only model_import's own converters built it, else
    #: ``None``: two loads of one file have equal fingerprints, so jaxsal reuses a program
    #: compiled for one with the other (``jaxsal._src.base.model_key``).
    fingerprint: str | None = None

    # ------------------------------------------------------------------ running
    def run(self, params: Mapping[str, Any], inputs: Sequence[Array], rt: Runtime, *,
            capture: frozenset[str] = frozenset(), perturb: Mapping[str, Array] | None = None,
            strip_output_activation: bool | Sequence[int] = False, keep_softmax: bool = False,
            head: str = "logits", keras_major: int = 3,
            prefix: str = "", input_masks: Sequence[Any] | None = None,
            mask_sink: list | None = None, perturb_pre: Mapping[str, Array] | None = None,
            bias_sink: dict | None = None, capture_pre: frozenset[str] = frozenset(),
            pre_sink: dict | None = None) -> tuple[list, dict[str, Array]]:
        """Evaluate the graph.

        Args:
          params: ``{layer_name: layer_params}`` (nested models nest).
          inputs: one array per model input, batch first.
          rt: the :class:`Runtime` (which ReLU to use).
          capture: layer paths whose outputs to return (``"outer/inner"`` for nested).
          perturb: ``{layer_path: delta}`` added to those layers' outputs; the gradient with
            respect to a zero ``delta`` is the gradient with respect to the layer's output.
          strip_output_activation: drop the fused activation of the layers producing the
            graph outputs (the ``logits`` head): ``True`` for every output, or the positions
            of the outputs to be returned (the others may then be wrong).
          keep_softmax: with ``strip_output_activation``, keep the activation of the outputs
            whose head is a softmax (the ``softmax`` head, :meth:`softmax_heads`).
          head: the head that strips the activations, named in refusals.
          input_masks: Keras masks of the inputs (a nested model called on masked tensors).
          mask_sink: a list that receives the outputs' Keras masks.
          perturb_pre: ``{layer_path: delta}`` added to those layers' outputs before their
            fused activation (the gradient with respect to the pre-activation).
          bias_sink: a dict that receives ``{layer_path: b}`` for every affine layer
            (:attr:`LayerImpl.affine`): its output for a zero input of batch size 1.
          capture_pre: layer paths whose pre-activation values (before the fused
            activation, after ``perturb_pre``; the output where the layer has none or the
            head strips it) ``pre_sink`` receives, ``{layer_path: value}``, for the layer's
            first call (in a nested model called several times, at its first call). Check
            the paths with :func:`pre_activation_refusal` first: a layer that is itself an
            activation has no pre-activation of its own.
        Returns:
          ``(outputs, captured)``.
        """
        perturb = perturb or {}
        perturb_pre = perturb_pre or {}
        values: dict[tuple[str, int], Any] = {}
        # Keras masks (mask_zero embeddings, Masking) travel beside the values, as Keras
        # attaches them to tensors: see model_import._layers.masking.
        masks: dict[tuple[str, int], Any] = {}
        captured: dict[str, Array] = {}
        if len(inputs) != len(self.inputs):
            raise ValueError(f"model {self.name!r} expects {len(self.inputs)} inputs, got "
                             f"{len(inputs)}")
        for i, (ref, x) in enumerate(zip(self.inputs, inputs)):
            values[(ref.layer, ref.node)] = self._post(ref.layer, x, captured, capture,
                                                       perturb, prefix)
            masks[(ref.layer, ref.node)] = input_masks[i] if input_masks else None
        output_keys = ({} if strip_output_activation is False
                       else self._head_keys(None if strip_output_activation is True
                                            else tuple(strip_output_activation),
                                            keep_softmax, head))

        def pick(a: Ref, where: str) -> Any:
            """Output ``a.tensor`` of the call's value: refused where the call has no such
            output (an edited config's ``[layer, node, 4]`` on a one-output layer), as
            Keras refuses to build the model."""
            v = values[(a.layer, a.node)]
            several = isinstance(v, (list, tuple))
            if several and 0 <= a.tensor < len(v):
                return v[a.tensor]
            if not several and a.tensor == 0:
                return v
            n = len(v) if several else 1
            raise LayerCallError(
                f"model {self.name!r}: {where} tensor {a.tensor} of layer "
                f"{prefix}{a.layer!r} (call #{a.node}: [{a.layer!r}, {a.node}, {a.tensor}]), "
                f"which has {n} output(s), 0..{n - 1}; Keras refuses to build this model as "
                "well. The file is damaged or was edited: save the model again",
                layer=prefix + a.layer)

        current: list[str] = ["an input reads"]  # who reads what resolve() looks up

        def resolve(a):
            if isinstance(a, Ref):
                return pick(a, current[0])
            if isinstance(a, (list, tuple)):
                return type(a)(resolve(b) for b in a)
            if isinstance(a, dict):
                return {k: resolve(b) for k, b in a.items()}
            return a

        def mask_of(a):
            if isinstance(a, Ref):
                m = masks.get((a.layer, a.node))
                if isinstance(m, (list, tuple)):  # (out of range: refused by resolve)
                    return m[a.tensor] if 0 <= a.tensor < len(m) else None
                return m
            if isinstance(a, (list, tuple)):
                return [mask_of(b) for b in a]
            return None

        def masks_of(a):
            """The masks of a structure of tensors, the structure kept (dicts too: a nested
            model's argument)."""
            if isinstance(a, dict):
                return {k: masks_of(b) for k, b in a.items()}
            if isinstance(a, (list, tuple)):
                return [masks_of(b) for b in a]
            return mask_of(a)

        for call in self.calls:
            spec = self.layers[call.layer]
            raw_kwargs = dict(call.kwargs)
            no_mask = (self.null_mask != "implicit" and "mask" in raw_kwargs
                       and raw_kwargs["mask"] is None  # a recorded `mask=None` honoured
                       and (self.null_mask != "if_unknown" or bool(call.args) and
                            _masking.has_unknown(masks_of(call.args[0]))))
            explicit_mask = raw_kwargs.pop("mask", None)
            current[0] = f"layer {prefix}{call.layer!r} (call #{call.index}) reads"
            args = resolve(call.args)
            kwargs = resolve(raw_kwargs)
            if spec.impl.subgraph is None and _float64_params(params.get(call.layer)):
                # a float64 policy's layer (its weights kept float64 under x64) computes in
                # float64: Keras casts its floating inputs to its compute dtype
                args, kwargs = _to_float64((args, kwargs))
            strip = (call.layer, call.index) in output_keys
            impl = spec.impl
            in_mask = (resolve(explicit_mask) if explicit_mask is not None
                       else None if no_mask and self.null_mask == "none"
                       else mask_of(call.args[0]) if call.args else None)
            # the layer's name on its operations (JAX's name stack): what jaxsal's check
            # of a model that mixes the examples of a batch names (jaxsal/_src/per_example)
            with jax.named_scope(call.layer):
                if impl.subgraph is not None:
                    sub_in = _nested_inputs(prefix + call.layer, impl.subgraph, args[0])
                    if keras_major >= 3 and spec.class_name in ("Functional", "Model"):
                        check_nested_input_shapes(prefix + call.layer, impl.subgraph, sub_in)
                    sub_in = adjust_input_rank(impl.subgraph, sub_in)
                    # a nested model called with mask=None runs on unmasked inputs (its output
                    # masks then too, also where Keras computes those from the tensors' masks)
                    sub_masks = ([None] * len(sub_in) if no_mask else _nested_masks(
                        prefix + call.layer, impl.subgraph, args[0],
                        resolve(explicit_mask) if explicit_mask is not None
                        else masks_of(call.args[0])))
                    sub_prefix = f"{prefix}{call.layer}/"
                    sink: list = []
                    # its layers are captured and perturbed at the nested model's first call only,
                    # as a shared layer is (a Siamese encoder: the first branch's)
                    first = call.index == 0
                    outs, sub_captured = impl.subgraph.run(
                        params.get(call.layer, {}), sub_in, rt,
                        capture=capture if first else frozenset(),
                        perturb=perturb if first else {},
                        strip_output_activation=strip and (
                            True if impl.subgraph.single_output
                            else tuple(sorted(output_keys[(call.layer, call.index)]))),
                        head=head, keras_major=keras_major, prefix=sub_prefix,
                        input_masks=sub_masks if len(sub_masks) == len(sub_in) else None,
                        mask_sink=sink, perturb_pre=perturb_pre if first else {},
                        bias_sink=bias_sink, capture_pre=capture_pre, pre_sink=pre_sink)
                    captured.update(sub_captured)
                    y = outs[0] if impl.subgraph.single_output else tuple(outs)
                    y_mask = sink[0] if impl.subgraph.single_output else tuple(sink)
                else:
                    try:
                        arg_masks = {k: mask_of(a) for k, a in
                                     [*enumerate(call.args), *raw_kwargs.items()] if _refs(a)}
                        mask_kw = _masking.call_masks(impl, None if no_mask else in_mask,
                                                      explicit_mask is not None or no_mask,
                                                      arg_masks, f"{prefix}{call.layer}",
                                                      spec.class_name)
                        if strip and impl.head_op is not None:  # logits: its argument
                            y = args[0]
                        elif rt.layer_rule is not None and is_rule_call(impl, call):
                            y = _rule_call(rt, impl.call, params.get(call.layer, {}), args,
                                           kwargs, mask_kw, prefix + call.layer)
                        else:
                            y = impl.call(params.get(call.layer, {}), *args, rt=rt, **kwargs,
                                          **mask_kw)
                        if call.index == 0:
                            path = prefix + call.layer
                            if path in perturb_pre:
                                y = _add_delta(y, perturb_pre[path], "perturb_pre", path)
                            if path in capture_pre and path not in pre_sink:
                                pre_sink[path] = y  # a nested model's first call only
                            if bias_sink is not None and impl.affine:
                                z = jnp.zeros((1,) + args[0].shape[1:], args[0].dtype)
                                bias_sink[path] = impl.call(params.get(call.layer, {}), z, rt=rt,
                                                            **kwargs, **mask_kw)
                        if impl.activation is not None and not strip:
                            y = get_activation(impl.activation, keras_major)(y, rt)
                        y_mask = _masking.output_mask(impl, in_mask, args, kwargs, y,
                                                      _masking.any_mask(list(arg_masks.values())))
                    except LayerCallError:
                        raise
                    except Exception as e:  # trace-time only: name the layer that failed
                        clear = forward_mode_error(
                            e, f"layer {prefix}{call.layer!r} ({spec.class_name})")
                        if clear is not None:  # jax.jvp through a custom VJP: what to use
                            raise clear from e
                        shapes = jax.tree_util.tree_map(lambda a: getattr(a, "shape", a), args)
                        raise LayerCallError(
                            f"layer {prefix}{call.layer!r} ({spec.class_name}) failed on inputs "
                            f"of shape {shapes}: {e}", layer=prefix + call.layer) from e
            if call.index == 0:
                y = self._post(call.layer, y, captured, capture, perturb, prefix)
            values[(call.layer, call.index)] = y
            masks[(call.layer, call.index)] = y_mask
            if impl.clears_input_masks:
                self._clear_masks(call, masks, mask_of, prefix)
        outs = []
        for r in self.outputs:
            outs.append(pick(r, "its output_layers name"))
            if mask_sink is not None:
                mask_sink.append(mask_of(r))
        return outs, captured

    def _clear_masks(self, call: Call, masks: dict, mask_of: Callable, prefix: str) -> None:
        """Keras 3's MultiHeadAttention removes the masks of its input tensors: the calls
        that depend on its output run after it and see none. Other consumers of a masked
        input run before or after it depending on Keras's execution order, so their result
        is not determined by the model: refuse those that a mask would change, except a
        call given its mask explicitly (``layer(x, mask=...)``) and ``Masking``, which
        ignores the incoming mask and computes its output and mask from the values."""
        settled = self._descendants(call) | self._ancestors(call)
        for r in set(self.call_refs(call)):
            if mask_of(r) is None:
                continue
            for other in self._consumers().get((r.layer, r.node), ()):
                if other is call or (other.layer, other.index) in settled or \
                        other.kwargs.get("mask") is not None or \
                        self.layers[other.layer].class_name in _MASK_BLIND:
                    continue  # runs after / before / its own mask / ignores the mask
                impl = self.layers[other.layer].impl
                if impl.mask_call or impl.compute_mask not in ("drop",):
                    raise LayerCallError(
                        f"layer {prefix}{call.layer!r} (MultiHeadAttention) removes the Keras "
                        f"mask of its input {r.layer!r}, which layer {prefix}{other.layer!r} "
                        "also uses, independently of the attention's output: whether that "
                        "layer sees the mask depends on Keras's execution order (a copy of "
                        "the tensor, an Identity layer, passes it on alike; the attention's "
                        "attention_mask= does not keep it). Call the layer that uses the mask "
                        "on this tensor with the mask given explicitly, which Keras records "
                        "(keras.layers.LSTM(...)(x, mask=keras.ops.not_equal(ids, 0)), "
                        f"without layers between {r.layer!r} and it), or put a Masking layer "
                        "before it, which computes its own mask from the values")
            m = masks.get((r.layer, r.node))
            if isinstance(m, tuple):
                masks[(r.layer, r.node)] = tuple(None if i == r.tensor else v
                                                 for i, v in enumerate(m))
            else:
                masks[(r.layer, r.node)] = None

    def _head_source(self, r: Ref) -> tuple[Ref, list[str]]:
        """The tensor whose layer's activation is output ``r``'s head, and the layers
        between them.

        That is ``r`` itself, except where ``r`` comes through layers that only move, select
        or pass values on (``Reshape``, ``Flatten``, ``Permute``, cropping, slicing,
        inference-time identities such as ``Dropout``, :data:`_PASS_THROUGH`;
        ``Activation("linear")``) from a layer with an activation: ``Dense(softmax) ->
        Reshape`` holds probabilities, and its logits are the reshaped pre-softmax values."""
        src, path = self._head_path(r)
        return src, [t.layer for t in path]

    def _head_path(self, r: Ref) -> tuple[Ref, list[Ref]]:
        """:meth:`_head_source` with the tensors between them (``r`` first) rather than their
        layers: the end of :meth:`_walk` from ``r`` where it has an activation to remove and
        the walk moved, else ``(r, [])``."""
        end, path = self._walk(r)
        return (end, path) if path and self._activates(end.layer) else (r, [])

    def _walk(self, r: Ref) -> tuple[Ref, list[Ref]]:
        """The tensor reached from ``r`` back through the layers that only move or pass
        values on (:meth:`_head_source`), and the tensors on the way (``r`` first)."""
        ref, chain = r, []
        while self.layers.get(ref.layer) is not None and \
                self.layers[ref.layer].impl.activation in (None, "linear"):
            values = self._moved_from(ref)
            if values is None:
                break
            chain.append(ref)
            ref = values
        return ref, chain

    def _moved_from(self, r: Ref) -> Ref | None:
        """The tensor whose values the call giving ``r`` only moves (:func:`_passes_through`):
        its first argument, the values; the other tensors are indices or sizes (ids given as
        an input, ``argsort(x)``, ``tf.shape(x)``), which stay as they are. Of a list, the
        one tensor of a merge of one (``Concatenate()([p])``) or ``tf.identity_n``'s at the
        position of ``r``. ``None`` where the call does more, or ``r`` is an input."""
        by_key = self._calls_by_key()
        call = by_key.get((r.layer, r.node))
        if call is None or not _passes_through(self.layers[r.layer], call):
            return None
        values = call.args[0] if call.args else None
        if isinstance(values, (list, tuple)):
            values = values[0] if len(values) == 1 else \
                values[r.tensor] if _kind(self.layers[r.layer]) == "tf.identity_n" else None
        if not isinstance(values, Ref) or (values.layer, values.node) not in by_key:
            return None
        return values

    def position_source(self, r: Ref) -> tuple[Ref, bool]:
        """The tensor output ``r`` shows value by value, and whether an activation lies
        between them: back from ``r`` through layers that only move values
        (:data:`_PASS_THROUGH`; their values, not indices or sizes, as :meth:`_walk` follows
        them) or apply an activation to them (:data:`_ACTIVATIONS`; their first argument). A
        segmentation head ``Conv2D(k, 1) -> Activation("softmax")`` comes from its
        convolution, as ``Conv2D(k, 1, activation="softmax")`` does."""
        by_key = self._calls_by_key()
        ref, through = r, False
        while (ref.layer, ref.node) in by_key:
            spec = self.layers[ref.layer]
            values = self._moved_from(ref)  # as _walk: the values, not indices or sizes
            if values is None and _kind(spec) in _ACTIVATIONS:
                call = by_key[(ref.layer, ref.node)]  # the activated values: its first
                values = call.args[0] if call.args else None
            if not isinstance(values, Ref) or (values.layer, values.node) not in by_key:
                break
            ref, through = values, True
        return ref, through

    def holds_probabilities_at(self, r: Ref) -> bool:
        """Whether tensor ``r`` holds probabilities: a softmax or sigmoid (fused, a layer, an
        op; inside a nested model too), through layers that move values, or an ``Average``,
        ``Maximum``, ``Minimum`` or a mean / max / min pooling of probabilities (an
        ensemble's mean)."""
        src, _ = self._walk(r)
        spec = self.layers.get(src.layer)
        if spec is None or (src.layer, src.node) not in self._calls_by_key():
            return False
        sub = spec.impl.subgraph
        if sub is not None:
            return sub.holds_probabilities_at(
                sub.outputs[src.tensor if len(sub.outputs) > 1 else 0])
        if holds_probabilities(spec):
            return True
        if _kind(spec) in _MEANS or _kind(spec) in _MEAN_POOLS:
            call = self._calls_by_key()[(src.layer, src.node)]
            args = _tensor_refs(call)
            return bool(args) and all(self.holds_probabilities_at(a) for a in args)
        return False

    def _head_keys(self, selected: Sequence[int] | None = None, keep_softmax: bool = False,
                   head: str = "logits") -> dict[tuple[str, int], set[int]]:
        """The calls whose activation the ``logits`` head removes for the outputs at
        positions ``selected`` (all by default; see :meth:`_head_source`), each with the
        tensors of it that are used (the outputs of a nested model to strip in turn).
        ``keep_softmax``: leave the outputs whose head is a softmax as they are (the
        ``softmax`` head keeps the model's own, :meth:`softmax_heads`). ``head``: the head
        asking, named in the refusals (the softmax and sigmoid heads apply to the logits).

        Refused where removing one would change another layer on the way to a selected
        output (a softmax output that also feeds a second output, say: that output needs the
        probabilities), and where a selected output merges activated outputs
        (``Average`` of two softmax classifiers): no single pre-activation exists there."""
        outputs = self.outputs if selected is None else [self.outputs[i] for i in selected]
        by_key = self._calls_by_key()
        needed: set[tuple[str, int]] = set()  # the calls the selected outputs depend on
        for r in outputs:
            key = (r.layer, r.node)
            if key in by_key:
                needed |= self._ancestors(by_key[key]) | {key}
        consumers = self._consumers()
        keys: dict[tuple[str, int], set[int]] = {}
        softmax = self.softmax_heads() if keep_softmax else [False] * len(self.outputs)
        for i, r in zip(range(len(self.outputs)) if selected is None else selected, outputs):
            if softmax[i]:
                continue
            keys.setdefault((r.layer, r.node), set()).add(r.tensor)
            src, path = self._head_path(r)
            chain = [t.layer for t in path]
            key = (src.layer, src.node)
            if not self._activates(src.layer):  # (src is r) r's values may merge probabilities
                self._refuse_merged_probabilities(self._walk(r)[0], head)
                continue
            # every tensor from the activation to the output changes: none may feed another
            # layer on the way to an output (a Reshape of the softmax read by a Dense)
            # of a nested model's outputs, only those computed from the stripped one change
            sub = self.layers[src.layer].impl.subgraph
            changed = None if sub is None or len(sub.outputs) == 1 else \
                sub.stripping_changes(src.tensor)
            others = [c for t in [src, *path] for c in consumers.get((t.layer, t.node), ())
                      if c.layer not in chain and (c.layer, c.index) in needed
                      and _kind(self.layers[c.layer]) != "tf.shape"  # reads no values
                      and (t is not src or changed is None or _reads_tensors(c, t, changed))]
            if others:
                via = f" (it reaches the output through {chain})" if chain else ""
                raise ValueError(
                    f"{_head_phrase(head)} cannot remove the activation of layer "
                    f"{key[0]!r}{via}: "
                    f"its output also feeds other layers ({sorted({c.layer for c in others})}"
                    ") on the way to the outputs, which need it activated. Use head='saved' "
                    "(the model's own output), or select one output first "
                    "(model.with_output(name).with_head('logits')).")
            keys.setdefault(key, set()).add(src.tensor)
        return keys

    def stripping_changes(self, k: int) -> set[int]:
        """The positions of the outputs that removing the activation behind output ``k``
        (:meth:`_head_source`) can change: ``k``, and those computed from the activated layer
        or the tensors between it and output ``k`` (a nested model's outputs ``[probs,
        Dense(probs)]``). A nested model's other outputs that do not read them keep their
        values (``[Dense(softmax), Dense(linear)]``: stripping the first leaves the second)."""
        src, path = self._head_path(self.outputs[k])
        changed = {(t.layer, t.node) for t in [src, *path]}
        by_key = self._calls_by_key()
        out = {k}
        for j, rj in enumerate(self.outputs):
            call = by_key.get((rj.layer, rj.node))  # None: an input of the nested model
            if call is not None and changed & (self._ancestors(call) | {(rj.layer, rj.node)}):
                out.add(j)
        return out

    def _refuse_merged_probabilities(self, src: Ref, head: str = "logits") -> None:
        call = self._calls_by_key().get((src.layer, src.node))
        spec = self.layers.get(src.layer)
        if call is None or not _pools_or_merges(spec, call):
            return
        tensors = _tensor_refs(call)
        activated = [self._walk(a)[0].layer for a in tensors if self.holds_probabilities_at(a)]
        if activated:
            merge = _kind(spec) in _MERGES
            verb, done = ("merges", "merged") if merge else ("pools", "pooled")
            what = f"tf.{spec.config.get('function')}" if spec.class_name == "TFOpLambda" \
                else spec.class_name
            raise ValueError(
                f"{_head_phrase(head)} cannot undo the output {src.layer!r} "
                f"({what}): it {verb} the probabilities of "
                f"{activated}, and no single pre-activation gives it. Use head='saved' (the "
                f"{done} probabilities), or explain a member at its own layer (layer=...).")

    def _activates(self, layer: str) -> bool:
        """Whether ``layer`` has an activation for the logits head to remove."""
        impl = self.layers[layer].impl
        if impl.subgraph is not None:
            return any(impl.subgraph._activates(impl.subgraph._head_source(r)[0].layer)
                       for r in impl.subgraph.outputs if r.layer in impl.subgraph.layers)
        return impl.activation not in (None, "linear") or impl.head_op is not None

    def takes_codes(self, i: int) -> bool:
        """Whether input ``i`` may be given as integers: its ``InputLayer`` is of an integer
        dtype, or a layer that reads integer codes (an ``Embedding``, ``CategoryEncoding``,
        ``IntegerLookup``, a cast, one-hot or gather op; :data:`_CODE_READERS`) reads it,
        directly, through layers that only move values, or as an input of a nested model.
        A float input read by anything else is an image or a signal: an integer array there
        is a forgotten conversion (``x.astype(np.float32) / 255``), which jaxsal refuses.
        Cached: a function of the graph, asked on every method call."""
        cache = self.__dict__.setdefault("_takes_codes", {})
        if i not in cache:
            cache[i] = self._reads_codes_at(i)
        return cache[i]

    def _reads_codes_at(self, i: int) -> bool:
        if "int" in str(self.input_dtypes[i]):
            return True
        consumers = self._consumers()
        # the calls whose outputs carry the input's values, as (layer, node): every output
        # tensor of such a call does (ops.split(ids, 2)[1] as much as [0]). A nested model is
        # looked into once per such tensor that reaches it (the input and a reshape of it
        # feed different inputs of an encoder of [tokens, features]), another layer once.
        todo, seen = [(self.inputs[i].layer, self.inputs[i].node)], set()
        while todo:
            key = todo.pop()
            for c in consumers.get(key, ()):
                spec = self.layers[c.layer]
                sub = spec.impl.subgraph
                visit = (c.layer, c.index, key if sub is not None else None)
                if visit in seen:
                    continue
                seen.add(visit)
                if _reads_codes(spec):
                    return True
                if sub is not None:
                    # any input of the nested model that a tensor of `key` feeds (also where
                    # it goes in otherwise too, e.g. as a mask: one reader of codes is enough)
                    given = {a for a in self.call_refs(c)
                             if (a.layer, a.node) == key}
                    if any(sub.takes_codes(j) for r in given for j in self._feeds(c, r)[0]):
                        return True
                elif _passes_through(spec, c):
                    todo.append((c.layer, c.index))
        return False

    def passes_values(self, call: Call) -> bool:
        """Whether ``call`` only moves or passes on the values it is given (a reshape, a
        ``split``, dropout...: :data:`_PASS_THROUGH`), so that its readers read them too."""
        spec = self.layers[call.layer]
        return spec.impl.subgraph is None and _passes_through(spec, call)

    @staticmethod
    def call_refs(call: Call) -> list[Ref]:
        """The graph tensors ``call`` is given, positional and keyword, at any depth."""
        return _refs(call.args) + _refs(dict(call.kwargs))

    def fed_inputs(self, call: Call, r: Ref) -> list[int] | None:
        """The positions of the inputs of ``call``'s nested model that tensor ``r`` feeds
        (``[0]`` for the tokens of a model called on ``[tokens, features]``, in
        ``keras.tree.flatten``'s order); ``None`` where ``r`` also goes in otherwise (a
        keyword argument such as a mask) or feeds no input of it."""
        fed, only = self._feeds(call, r)
        return fed if fed and only else None

    def _feeds(self, call: Call, r: Ref) -> tuple[list[int], bool]:
        """The positions of the inputs of ``call``'s nested model (none where ``call`` is of
        no nested model) that tensor ``r`` feeds, and whether that is all ``r`` is given as
        to ``call`` (not also a keyword argument, nor a position beyond the model's inputs)."""
        sub = self.layers[call.layer].impl.subgraph
        n = len(sub.inputs) if sub is not None else 0
        flat = _flatten(call.args[0]) if call.args else []
        fed = [j for j, a in enumerate(flat) if a == r and j < n]
        given = [a for a in self.call_refs(call) if a == r]
        return fed, len(fed) == len(given)

    def token_limits(self) -> dict[int, tuple[int, str]]:
        """``{input position: (input_dim, layer)}``: the smallest vocabulary of the
        ``Embedding`` (and ``ReversibleEmbedding``) layers reading each model input directly
        or as an input of a nested model (``"encoder/embedding"``; cached: a function of the
        graph, read on every call of a model)."""
        cache = self.__dict__.get("_token_limits")
        if cache is None:
            cache = {}
            inputs = {(r.layer, r.node): i for i, r in enumerate(self.inputs)}

            def limit(src, dim, layer):
                i = inputs.get((getattr(src, "layer", None), getattr(src, "node", None)))
                if i is not None and dim and (i not in cache or dim < cache[i][0]):
                    cache[i] = (dim, layer)

            for call in self.calls:
                spec = self.layers[call.layer]
                if not call.args:
                    continue
                if spec.impl.subgraph is not None:
                    inner = spec.impl.subgraph.token_limits()
                    for j, src in enumerate(_flatten(call.args[0])):
                        if j in inner:
                            limit(src, inner[j][0], f"{call.layer}/{inner[j][1]}")
                elif spec.class_name in _EMBEDDINGS:
                    limit(call.args[0], int(spec.config.get("input_dim", 0) or 0), call.layer)
            self.__dict__["_token_limits"] = cache
        return cache

    def input_readers(self, inputs: Sequence[int] | None = None,
                      prefix: str = "") -> tuple[set[str], set[int]]:
        """The layers that read a model input's values: those whose call is given a model
        input, directly or through layers that only move its values (:data:`_PASS_THROUGH`
        without an activation: reshaping, cropping, slicing, inference-time identities) or
        prepare them (:data:`_INPUT_PREPARING`: ``Rescaling``, ``Normalization``, zero
        padding), which are not readers themselves; inside a nested model too
        (``"outer/inner"``), and after a nested model that only moves or prepares them.

        Args:
          inputs: the positions in :attr:`inputs` that hold model inputs (``None``: all).
          prefix: put before each path (a nested model's ``"outer/"``).
        Returns:
          ``(paths, outputs)``: the readers' paths, and the positions in :attr:`outputs`
          that are a model input moved or prepared.
        """
        raw_calls: set[tuple[str, int]] = set()  # calls whose every output is an input's
        raw_refs = {r for i, r in enumerate(self.inputs) if inputs is None or i in inputs}

        def is_raw(r: Any) -> bool:
            return isinstance(r, Ref) and (r in raw_refs or (r.layer, r.node) in raw_calls)

        readers: set[str] = set()
        for call in self.calls:
            refs = self.call_refs(call)
            if not any(is_raw(r) for r in refs):
                continue
            spec = self.layers[call.layer]
            sub = spec.impl.subgraph
            if sub is not None:
                flat = _flatten(call.args[0]) if call.args else []
                fed = [j for j, a in enumerate(flat) if j < len(sub.inputs) and is_raw(a)]
                inner, outs = sub.input_readers(fed, prefix + call.layer + "/")
                readers |= inner
                raw_refs |= {Ref(call.layer, call.index, j) for j in outs}
                continue
            values = _refs(call.args[0]) if call.args else []
            moves = ((_passes_through(spec, call) and spec.impl.activation in (None, "linear"))
                     or _kind(spec) in _INPUT_PREPARING)
            if moves and values and is_raw(values[0]):
                raw_calls.add((call.layer, call.index))
            else:
                readers.add(prefix + call.layer)
        return readers, {i for i, r in enumerate(self.outputs) if is_raw(r)}

    def _calls_by_key(self) -> dict[tuple[str, int], Call]:
        cache = self.__dict__.get("_calls_cache")
        if cache is None:
            cache = self.__dict__["_calls_cache"] = {(c.layer, c.index): c for c in self.calls}
        return cache

    def _consumers(self) -> dict[tuple[str, int], list[Call]]:
        cache = self.__dict__.get("_consumer_cache")
        if cache is None:
            cache = {}
            for c in self.calls:
                for r in self.call_refs(c):
                    cache.setdefault((r.layer, r.node), []).append(c)
            self.__dict__["_consumer_cache"] = cache
        return cache

    def _ancestors(self, call: Call) -> set[tuple[str, int]]:
        seen: set[tuple[str, int]] = set()
        todo = [call]
        by_key = self._calls_by_key()
        while todo:
            c = todo.pop()
            for r in self.call_refs(c):
                key = (r.layer, r.node)
                if key not in seen and key in by_key:
                    seen.add(key)
                    todo.append(by_key[key])
        return seen

    def reaching(self, outputs: Sequence[int] | None = None, prefix: str = "") -> set[str]:
        """Paths of the layers whose calls the outputs at positions ``outputs`` of
        :attr:`outputs` (``None``: every output) are computed from; a nested model's own
        layers too, as ``"outer/inner"``, from the outputs of it that are used. Where a
        nested model's output is used, every layer feeding any of its inputs is counted (a
        superset: a layer left out is certainly unused)."""
        refs = [r for i, r in enumerate(self.outputs) if outputs is None or i in outputs]
        by_key = self._calls_by_key()
        tensors: dict[tuple[str, int], set[int]] = {}
        todo = list(refs)
        while todo:
            r = todo.pop()
            key = (r.layer, r.node)
            first = key not in tensors
            tensors.setdefault(key, set()).add(r.tensor)
            if first and key in by_key:
                c = by_key[key]
                todo.extend(self.call_refs(c))
        used = {prefix + layer for layer, _ in tensors}
        for (layer, _), ts in tensors.items():
            sub = self.layers[layer].impl.subgraph if layer in self.layers else None
            if sub is not None:
                picked = None if len(sub.outputs) == 1 else sorted(ts)
                used |= sub.reaching(picked, prefix + layer + "/")
        return used

    def _descendants(self, call: Call) -> set[tuple[str, int]]:
        seen: set[tuple[str, int]] = set()
        todo = [(call.layer, call.index)]
        cons = self._consumers()
        while todo:
            for c in cons.get(todo.pop(), ()):
                key = (c.layer, c.index)
                if key not in seen:
                    seen.add(key)
                    todo.append(key)
        return seen

    @staticmethod
    def _post(layer, y, captured, capture, perturb, prefix):
        path = prefix + layer
        if path in perturb:
            y = _add_delta(y, perturb[path], "perturb", path)
        if path in capture:
            captured[path] = y
        return y

    # ------------------------------------------------------------------ structure
    def layer_paths(self, prefix: str = "", *, include_ops: bool = False) -> list[str]:
        """All layer paths in Keras order, nested models' layers after the model's own.

        Keras 3 operation nodes (``x + 3.0``, class ``ops.*``) are not layers in Keras's
        ``model.layers``; they are listed only with ``include_ops=True``."""
        out = []
        for name, spec in self.layers.items():
            if include_ops or not spec.class_name.startswith("ops."):
                out.append(prefix + name)
            if spec.impl.subgraph is not None:
                out.extend(spec.impl.subgraph.layer_paths(prefix + name + "/",
                                                          include_ops=include_ops))
        return out

    def affine_paths(self, prefix: str = "") -> list[str]:
        """Paths of the affine layers (:attr:`LayerImpl.affine`: a convolution or Dense with a
        bias, BatchNormalization) that are called, in call order, nested models' in place."""
        return self._called_paths(lambda impl, call: impl.affine, prefix)

    def relevance_paths(self, prefix: str = "") -> list[str]:
        """Paths of the layers with :attr:`LayerImpl.relevance` that are called, in call
        order, nested models' in place (merges only where they merge tensors,
        :func:`is_rule_call`)."""
        return self._called_paths(is_rule_call, prefix)

    def _called_paths(self, chosen: Callable[[Any, Call], bool], prefix: str) -> list[str]:
        out = []
        for call in self.calls:
            impl = self.layers[call.layer].impl
            if call.index != 0:
                continue
            if chosen(impl, call):
                out.append(prefix + call.layer)
            elif impl.subgraph is not None:
                out.extend(impl.subgraph._called_paths(chosen, prefix + call.layer + "/"))
        return out

    def locate(self, path: str) -> list[str]:
        """The chain of layer names (outer to inner) of a layer path. Layer names may
        themselves contain ``/`` (tf.keras's ``Conv/BatchNorm``): the longest name that
        matches wins."""
        parts = path.split("/")
        for i in range(len(parts), 0, -1):
            head = "/".join(parts[:i])
            if head not in self.layers:
                continue
            if i == len(parts):
                return [head]
            sub = self.layers[head].impl.subgraph
            if sub is None:
                continue
            try:
                return [head] + sub.locate("/".join(parts[i:]))
            except KeyError:
                continue
        raise KeyError(path)

    def find(self, path: str) -> tuple["Graph", LayerSpec]:
        chain = self.locate(path)
        g = self
        for name in chain[:-1]:
            g = g.layers[name].impl.subgraph
        return g, g.layers[chain[-1]]

    def _head_calls(self) -> list[tuple[LayerSpec, Call | None]]:
        """For each output, the layer whose activation is its head (:meth:`_head_source`;
        inside a nested model, that model's own) and its call."""
        found = []
        for r in self.outputs:
            graph, src = self, self._head_source(r)[0]
            while graph.layers[src.layer].impl.subgraph is not None:
                sub = graph.layers[src.layer].impl.subgraph
                graph, src = sub, sub._head_source(
                    sub.outputs[src.tensor if len(sub.outputs) > 1 else 0])[0]
            found.append((graph.layers[src.layer],
                          graph._calls_by_key().get((src.layer, src.node))))
        return found

    def softmax_heads(self) -> list[bool]:
        """For each output, whether its head (:meth:`_head_calls`) is a softmax: a fused
        ``softmax`` activation, a ``Softmax`` layer or a softmax operation, over any axis. The
        ``softmax`` head keeps those as the model computes them (with their axis and mask,
        and the layers that move their values after them: ``Permute``, ``Flatten``)."""
        out = []
        for spec, _ in self._head_calls():
            act = _fused_activation(spec)
            out.append(spec.class_name in ("Softmax", "ops.Softmax")
                       or spec.impl.head_op == "softmax"
                       or (act is not None and activation_name(act) == "softmax"))
        return out


#: Operations of two operands: they merge two tensors (``p + q``, ``keras.ops.maximum(p, q)``);
#: with a constant operand they compute from one tensor (``2 * p``, ``1 - p``: no merge).
_PAIRWISE = frozenset({"ops.Add", "ops.Subtract", "ops.Multiply", "ops.Maximum",
                       "ops.Minimum", "ops.Append"})

#: Merges whose result of probabilities is a probability (an ensemble's mean).
_MEANS = frozenset({"Average", "Maximum", "Minimum", "ops.Maximum", "ops.Minimum"})

#: Merge layers and the Keras 3 operations that merge tensors as they do (``p + q``,
#: ``keras.ops.concatenate([p, q])``, ``keras.ops.stack``, ``hstack``/``vstack``/``dstack``;
#: tf.keras's ``tf.concat``, ``tf.math.add``... by :data:`_TF_OPS`): an output that merges
#: softmax/sigmoid outputs (an ensemble) has no logits. Of a list of one tensor
#: (``Concatenate()([p])``, ``tf.stack([p])``, ``keras.ops.dstack([p])``) they only move its
#: values (:func:`_merged_parts`).
_MERGES = frozenset({"Add", "Average", "Maximum", "Minimum", "Multiply", "Subtract",
                     "Concatenate", "ops.Concatenate", "ops.Stack", "ops.Hstack", "ops.Vstack",
                     "ops.Dstack", "ops.Append", *_PAIRWISE})


def _float64_params(p: Any) -> bool:
    """Whether a layer's params hold float64 arrays (a ``float64`` policy's weights, kept
    under ``jax_enable_x64``)."""
    return p is not None and any(getattr(a, "dtype", None) == jnp.float64
                                 for a in jax.tree_util.tree_leaves(p))


def _to_float64(tree: Any) -> Any:
    """The floating arrays of ``tree`` cast to float64 (other leaves as they are)."""
    return jax.tree_util.tree_map(
        lambda a: a.astype(jnp.float64) if isinstance(a, jax.Array) and jnp.issubdtype(
            a.dtype, jnp.floating) and a.dtype != jnp.float64 else a, tree)


def _fused_activation(spec: LayerSpec) -> Any:
    """A layer's fused activation as configured: its own ``activation``, else the one its
    converter lifted from a wrapped layer (``TimeDistributed(Dense(3, "softmax"))``)."""
    act = spec.config.get("activation")
    return act if act is not None else spec.impl.activation


def holds_probabilities(spec: LayerSpec) -> bool:
    """Whether a layer's output is a softmax or sigmoid (fused, a ``Softmax`` layer, an op)."""
    act = _fused_activation(spec)
    return (spec.class_name == "Softmax" or spec.impl.head_op is not None
            or (act is not None and activation_name(act) in ("softmax", "sigmoid")))


#: Layers and Keras 3 operations that only move, select or pass values on at inference
#: (``Activation`` when linear): the ``logits`` head looks through them for the activation to
#: remove (:meth:`Graph._head_keys`): the logits of ``Dense(softmax) -> x[:, -1]`` are the
#: last step's pre-softmax values. :meth:`Graph._walk` follows their first argument, the
#: values; other tensors they take are indices or sizes (``keras.ops.take_along_axis(probs,
#: ids)``, ``tf.reshape(probs, [tf.shape(probs)[0], -1])``). Indices computed from the
#: activated values (``argsort(probs)``) read them, and the logits head refuses to change
#: them (:meth:`Graph._head_keys`).
_PASS_THROUGH = frozenset({
    "Reshape", "Flatten", "Permute", "Cropping1D", "Cropping2D", "Cropping3D", "RepeatVector",
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity", "Activation",
    "SlicingOpLambda", "ops.Reshape", "ops.Transpose", "ops.ExpandDims", "ops.Squeeze",
    "ops.GetItem", "ops.Slice", "ops.Take", "ops.TakeAlongAxis", "ops.Flip", "ops.Tile",
    "ops.Repeat", "ops.Roll", "ops.Moveaxis", "ops.Swapaxes", "ops.Rot90", "ops.BroadcastTo",
    "ops.CropImages", "ops.Split", "ops.ArraySplit", "ops.Hsplit", "ops.Vsplit", "ops.Dsplit",
    "ops.Unstack", "ops.Ravel", "ops.Fliplr", "ops.Flipud", "ops.Diagonal",
    "ops.DepthToSpace", "ops.SpaceToDepth", "ops.Copy", "ops.ConvertToTensor",
    "ops.StopGradient", "ops.Cast", "UpSampling1D", "UpSampling2D", "UpSampling3D",
    "Resizing", "ops.Resize", "ops.ExtractPatches", "tf.identity_n",
    "tf.image.resize_nearest_neighbor", "tf.space_to_batch_nd", "tf.batch_to_space_nd",
    "tf.signal.frame"})
#: Layers that prepare a model input for the layers reading it, elementwise or by padding
#: (:meth:`Graph.input_readers`: the layer after them reads the input).
_INPUT_PREPARING = frozenset({"Rescaling", "Normalization", "ZeroPadding1D", "ZeroPadding2D",
                              "ZeroPadding3D"})
#: The tf.keras ``TFOpLambda`` functions (``config["function"]``) that move values (or pool
#: them, :data:`_POOLS`, or merge them, :data:`_MERGES`, or apply an activation to them,
#: :data:`_ACTIVATIONS`) as a Keras 3 operation or layer does, by that operation: the same
#: rules apply to them (:func:`_kind`; ``tf.gather_nd`` takes values by indices as ``take``
#: does, ``tf.math.add_n`` sums a list as ``Add`` does). The functions without a Keras 3
#: counterpart are their own kind, ``"tf.<function>"`` (``"tf.shape"`` reads only its input's
#: shape, ``tf.shape(probs)[0]`` as a size: removing an activation leaves it as it is,
#: :meth:`Graph._head_keys`).
_TF_OPS = {
    **dict.fromkeys(("reshape", "compat.v1.reshape", "keras.backend.batch_flatten"),
                    "ops.Reshape"),
    **dict.fromkeys(("transpose", "compat.v1.transpose", "linalg.matrix_transpose",
                     "linalg.adjoint", "image.transpose"), "ops.Transpose"),
    **dict.fromkeys(("squeeze", "compat.v1.squeeze"), "ops.Squeeze"),
    **dict.fromkeys(("identity", "ensure_shape"), "Identity"),
    **dict.fromkeys(("compat.v1.gather", "compat.v1.gather_nd"), "ops.Take"),
    **dict.fromkeys(("reverse", "reverse_sequence", "image.flip_left_right",
                     "image.flip_up_down"), "ops.Flip"),
    **dict.fromkeys(("roll", "signal.fftshift", "signal.ifftshift"), "ops.Roll"),
    **dict.fromkeys(("image.central_crop", "image.crop_to_bounding_box"), "ops.CropImages"),
    "expand_dims": "ops.ExpandDims", "split": "ops.Split", "unstack": "ops.Unstack",
    "slice": "ops.Slice", "strided_slice": "ops.GetItem", "tile": "ops.Tile",
    "repeat": "ops.Repeat", "broadcast_to": "ops.BroadcastTo", "image.rot90": "ops.Rot90",
    "linalg.diag_part": "ops.Diagonal", "nn.depth_to_space": "ops.DepthToSpace",
    "nn.space_to_depth": "ops.SpaceToDepth", "cast": "ops.Cast",
    "convert_to_tensor": "ops.ConvertToTensor", "stop_gradient": "ops.StopGradient",
    "math.reduce_mean": "ops.Mean", "math.reduce_sum": "ops.Sum", "math.reduce_max": "ops.Max",
    "math.reduce_min": "ops.Min", "math.reduce_prod": "ops.Prod",
    "math.reduce_logsumexp": "ops.Logsumexp",
    **dict.fromkeys(("concat", "compat.v1.concat"), "ops.Concatenate"), "stack": "ops.Stack",
    **dict.fromkeys(("__operators__.add", "math.add"), "ops.Add"), "math.add_n": "Add",
    **dict.fromkeys(("__operators__.sub", "math.subtract"), "ops.Subtract"),
    **dict.fromkeys(("__operators__.mul", "math.multiply", "math.multiply_no_nan"),
                    "ops.Multiply"),
    "math.maximum": "ops.Maximum", "math.minimum": "ops.Minimum",
    **dict.fromkeys(("image.resize", "compat.v1.image.resize_images"), "ops.Resize"),
    "image.extract_patches": "ops.ExtractPatches", "identity_n": "tf.identity_n",
    "compat.v1.image.resize_nearest_neighbor": "tf.image.resize_nearest_neighbor",
    "space_to_batch_nd": "tf.space_to_batch_nd",
    "compat.v1.batch_to_space_nd": "tf.batch_to_space_nd", "signal.frame": "tf.signal.frame",
    "compat.v1.shape": "tf.shape", "nn.relu": "ops.Relu", "nn.relu6": "ops.Relu6",
    **dict.fromkeys(("nn.softmax", "math.softmax"), "ops.Softmax"),
    "nn.log_softmax": "ops.LogSoftmax",
    **dict.fromkeys(("math.sigmoid", "nn.sigmoid"), "ops.Sigmoid"),
    **dict.fromkeys(("math.tanh", "nn.tanh"), "ops.Tanh"), "nn.gelu": "ops.Gelu",
    "nn.silu": "ops.Silu", "nn.swish": "ops.Swish", "nn.elu": "ops.Elu", "nn.selu": "ops.Selu",
    "nn.leaky_relu": "ops.LeakyRelu", "nn.softsign": "ops.Softsign"}
#: Layers and Keras 3 operations that apply an activation to each value on its own (a
#: softmax: over the channels of each position; tf.keras's as these, :data:`_TF_OPS`):
#: :meth:`Graph.position_source` looks through them.
_ACTIVATIONS = frozenset({
    "Activation", "ReLU", "LeakyReLU", "ELU", "ThresholdedReLU", "Softmax", "PReLU",
    *(f"ops.{name}" for name in (
        "Relu", "Relu6", "LeakyRelu", "Elu", "Celu", "Selu", "Gelu", "Sigmoid", "Tanh",
        "Silu", "Swish", "Softplus", "Softsign", "LogSigmoid", "HardSigmoid", "HardSilu",
        "HardSwish", "Softmax", "LogSoftmax"))})

#: Layers and operations that pool or reduce values: an output that pools probabilities
#: (the mean softmax over a sequence) has no logits, as a merge of them has none.
_POOLS = frozenset({
    *(f"{k}Pooling{d}D" for k in ("Average", "Max", "GlobalAverage", "GlobalMax",
                                  "AdaptiveAverage", "AdaptiveMax") for d in (1, 2, 3)),
    "ops.Mean", "ops.Sum", "ops.Max", "ops.Amax", "ops.Min", "ops.Amin", "ops.Prod",
    "ops.Average", "ops.Median", "ops.Logsumexp"})
#: ... those whose result of probabilities is a probability (means, maxima, minima, medians).
_MEAN_POOLS = _POOLS - {"ops.Sum", "ops.Prod", "ops.Logsumexp"}


def _head_phrase(head: str) -> str:
    """How a refusal names the head that strips output activations."""
    return "the logits head" if head == "logits" else \
        f"the {head!r} head (applied to the logits)"


#: Layers and operations that read integer codes (:meth:`Graph.takes_codes`).
_CODE_READERS = frozenset({*_EMBEDDINGS, "CategoryEncoding", "IntegerLookup", "ops.Cast",
                           "ops.OneHot", "ops.Take", "ops.TakeAlongAxis"})
_TF_CODE_READERS = frozenset({"cast", "one_hot", "gather", "compat.v1.gather",
                              "nn.embedding_lookup"})


def _reads_codes(spec: LayerSpec) -> bool:
    if spec.class_name == "TFOpLambda":
        return spec.config.get("function") in _TF_CODE_READERS
    return spec.class_name in _CODE_READERS


def _kind(spec: LayerSpec) -> str | None:
    """A layer's class name; for a tf.keras ``TFOpLambda``, the Keras 3 operation that
    computes the same (:data:`_TF_OPS`), else ``None``."""
    if spec.class_name == "TFOpLambda":
        return _TF_OPS.get(str(spec.config.get("function")))
    return spec.class_name


def _passes_through(spec: LayerSpec, call: Call) -> bool:
    """Whether this call of a layer only moves or passes values on (:data:`_PASS_THROUGH`;
    a tf.keras ``TFOpLambda`` as its Keras 3 operation, :func:`_kind`; a merge of one
    tensor, :func:`_merged_parts`). Not where it mixes values (a bilinear resize) or
    inserts values of its own (padding: a padded value is no logit)."""
    kind = _kind(spec)
    # the options: a TF function's are the arguments of its call
    options = call.kwargs if spec.class_name == "TFOpLambda" else spec.config
    if kind in _MERGES and kind not in _PAIRWISE:
        return len(_merged_parts(spec, call)) == 1
    if kind in ("UpSampling2D", "Resizing", "ops.Resize"):
        # nearest repeats or selects values; "bilinear" and the others mix them; padding
        # to the aspect ratio inserts the fill value (TF's method: a name, or 1 in TF 1)
        method = options.get("interpolation", options.get(
            "method", "nearest" if kind == "UpSampling2D" else "bilinear"))
        return method in ("nearest", 1) and not options.get("pad_to_aspect_ratio")
    if kind == "ops.ExtractPatches":  # "same" pads with zeros
        return str(options.get("padding", "valid")).lower() == "valid"
    if kind == "tf.signal.frame":  # pad_end pads with pad_value
        return not options.get("pad_end", False)
    if kind == "tf.space_to_batch_nd":  # pads with zeros (where the paddings are not 0)
        pads = options.get("paddings")
        try:
            return not _refs(pads) and not np.any(np.asarray(pads, dtype=np.float64))
        except (TypeError, ValueError):  # not numbers: computed, or unknown
            return False
    if kind == "ops.Cast":  # to another float type (not to integers, bool)
        return str(options.get("dtype", "")).startswith(("float", "bfloat"))
    return kind in _PASS_THROUGH


def _merged_parts(spec: LayerSpec, call: Call) -> list:
    """The values a call of a merge (:data:`_MERGES`) merges: the elements of its list (a
    merge layer's, ``keras.ops.concatenate``'s, ``tf.stack``'s; a one-input layer's tensor);
    of a two-operand operation (:data:`_PAIRWISE`), its tensors (``p * 2``: one)."""
    if _kind(spec) in _PAIRWISE:
        return _tensor_refs(call)
    first = call.args[0] if call.args else None
    return list(first) if isinstance(first, (list, tuple)) else [first]


def _pools_or_merges(spec: LayerSpec, call: Call) -> bool:
    """Whether this call of a layer merges tensors (:data:`_MERGES`, two or more:
    :func:`_merged_parts`) or pools values (:data:`_POOLS`; a tf.keras ``TFOpLambda`` as
    its Keras 3 operation, :func:`_kind`)."""
    return (_kind(spec) in _MERGES and len(_merged_parts(spec, call)) > 1) or \
        _kind(spec) in _POOLS


def is_rule_call(impl: LayerImpl, call: Call) -> bool:
    """Whether this call of a layer goes through ``Runtime.layer_rule``: a layer with
    :attr:`LayerImpl.relevance`, and for a merge (:attr:`LayerImpl.merge`) a call on at
    least two tensors (``x * 0.5`` is an elementwise map of ``x``)."""
    if not impl.relevance or impl.merge is None:
        return impl.relevance
    return len(_tensor_refs(call)) >= 2


def _rule_call(rt: Runtime, call: Callable, params: Any, args: Sequence, kwargs: dict,
               mask_kw: dict, name: str) -> Any:
    """``call(params, *args, rt=rt, **kwargs, **mask_kw)`` through ``rt.layer_rule``. The
    rule receives the tensors among ``args`` (constants, ``tf.add(x, y, name=...)``'s
    numbers, are closed over), then the tensors among ``kwargs`` (``mha(query=x,
    value=y)``), so that relevance reaches every tensor and only tensors."""
    pos = [i for i, v in enumerate(args) if _is_tensor_arg(v)]
    arrays = [k for k, v in kwargs.items() if _is_tensor_arg(v)]
    rest = {k: v for k, v in kwargs.items() if k not in arrays}
    n = len(pos)

    def f(p, *a):
        full = list(args)
        for i, v in zip(pos, a[:n]):
            full[i] = v
        return call(p, *full, rt=rt, **rest, **dict(zip(arrays, a[n:])), **mask_kw)

    return rt.layer_rule(f, params, *(args[i] for i in pos), *(kwargs[k] for k in arrays),
                         name=name)


def _is_tensor_arg(v: Any) -> bool:
    """A graph tensor, or a list of them (a merge layer's one argument)."""
    if isinstance(v, (list, tuple)):
        return bool(v) and all(isinstance(e, jax.Array) for e in v)
    return isinstance(v, jax.Array)


def _reads_tensors(call: Call, r: Ref, tensors: set[int]) -> bool:
    """Whether ``call`` takes one of the tensors at positions ``tensors`` of the call that
    gives ``r`` (a nested model's outputs), as an argument or keyword argument."""
    return any(a.layer == r.layer and a.node == r.node and a.tensor in tensors
               for a in Graph.call_refs(call))


def _tensor_refs(call: Call) -> list[Ref]:
    """The tensors a call computes from: those among its arguments and keyword arguments,
    in that order, but its explicit Keras ``mask=`` (which travels beside the values)."""
    return _refs(call.args) + _refs({k: v for k, v in call.kwargs.items() if k != "mask"})


def _refs(a) -> list[Ref]:
    if isinstance(a, Ref):
        return [a]
    if isinstance(a, (list, tuple)):
        return [r for b in a for r in _refs(b)]
    if isinstance(a, dict):
        return [r for b in a.values() for r in _refs(b)]
    return []


# ---------------------------------------------------------------------- parsing configs
def _is_tensor_dict(a):
    return isinstance(a, dict) and a.get("class_name") == "__keras_tensor__"


def decode_constants(a):
    """Replace the constant arrays Keras writes into configs and call arguments
    (``{"class_name": "__numpy__" | "__tensor__", "config": {"value": ..., "dtype": ...}}``,
    e.g. ``Rescaling(scale=np.array(...))`` or ``x - np.array(mean)``) by NumPy arrays."""
    if isinstance(a, dict):
        if a.get("class_name") in ("__numpy__", "__tensor__") and isinstance(
                a.get("config"), dict) and "value" in a["config"]:
            dtype = str(a["config"].get("dtype") or "float32")
            value = np.asarray(a["config"]["value"])
            try:
                return value.astype(np.dtype(dtype))
            except TypeError:  # bfloat16 and other dtypes NumPy lacks: computed in float32
                return value.astype(np.float32)
        return {k: decode_constants(v) for k, v in a.items()}
    if isinstance(a, list):
        return [decode_constants(b) for b in a]
    if isinstance(a, tuple):
        return tuple(decode_constants(b) for b in a)
    return a


def _tensor_ref(h) -> Ref:
    """A tensor reference of a config, ``[layer name, node index, tensor index]``."""
    try:
        if isinstance(h, (list, tuple)) and len(h) >= 3 and isinstance(h[0], str):
            ref = Ref(h[0], int(h[1]), int(h[2]))
            if ref.node >= 0 and ref.tensor >= 0:
                return ref
    except (TypeError, ValueError):
        pass
    raise ValueError(f"a tensor reference is {str(h)[:80]}, expected [layer name, node index, "
                     "tensor index]")


def _quantization(cfg: Mapping[str, Any]) -> str | None:
    """The quantization mode of a layer config (Keras 3's ``model.quantize("int8")`` sets a
    ``QuantizedDTypePolicy`` with ``mode``; newer versions also a ``quantization_config``),
    else ``None``."""
    policy = cfg.get("dtype")
    if isinstance(policy, Mapping):
        inner = policy.get("config") if isinstance(policy.get("config"), Mapping) else {}
        if "Quantized" in str(policy.get("class_name", "")) or inner.get("mode"):
            return str(inner.get("mode") or policy.get("class_name"))
    elif isinstance(policy, str) and "_from_" in policy:  # "int8_from_float32"
        return policy.split("_from_")[0]
    qc = cfg.get("quantization_config")
    if qc:
        return str(qc.get("class_name") if isinstance(qc, Mapping) else qc)
    return None


def _entry_name(lc) -> Any:
    """The layer name of a config entry, for messages (``'?'`` when it has none)."""
    if not isinstance(lc, Mapping):
        return "?"
    c = lc.get("config")
    return lc.get("name") or (c.get("name") if isinstance(c, Mapping) else None) or "?"


#: Config options that are sizes or counts: a zero or negative one is a damaged config.
_POSITIVE_SIZES = ("units", "filters", "kernel_size", "strides", "pool_size", "dilation_rate",
                   "input_dim", "output_dim", "num_heads", "key_dim", "depth_multiplier")
#: ... and the amounts of ZeroPadding and Cropping layers (a negative one is neither).
_PADDINGS = ("padding", "cropping")


def _numbers(v) -> list:
    """The scalars of a config value (nested lists flattened: ``[[1, 1], [2, 0]]``)."""
    if isinstance(v, (list, tuple)):
        return [x for b in v for x in _numbers(b)]
    return [v]


def _k3_arg(a):
    if _is_tensor_dict(a):
        return _tensor_ref(a["config"]["keras_history"])
    if isinstance(a, dict) and a.get("class_name") in ("__numpy__", "__tensor__"):
        return decode_constants(a)
    if isinstance(a, list):
        return [_k3_arg(b) for b in a]
    if isinstance(a, tuple):
        return tuple(_k3_arg(b) for b in a)
    if isinstance(a, dict):
        return {k: _k3_arg(v) for k, v in a.items()}
    return a


# ``mask`` is kept: Keras 3 records a mask passed to a layer (mask_zero embeddings, Masking)
# as a call argument; the interpreter takes it out of the kwargs (model_import._layers.masking).
_IGNORED_KWARGS = ("training",)


def _called_training(node) -> bool:
    """Whether an inbound node records ``training=True`` (Keras 3 ``kwargs``, or the kwargs
    dicts of Keras 2's ``[layer, node, tensor, kwargs]`` entries)."""
    if isinstance(node, dict):
        return (node.get("kwargs") or {}).get("training") is True
    if isinstance(node, list):
        if len(node) > 3 and isinstance(node[0], str) and isinstance(node[3], dict):
            return node[3].get("training") is True
        return any(_called_training(e) for e in node)
    return False


#: Keras preprocessing layers that read strings (or hash the decimal strings of integers):
#: no JAX array holds their inputs.
_STRING_LAYERS = {
    "StringLookup": "maps strings to ids",
    "TextVectorization": "splits strings into tokens and maps them to ids",
    "Hashing": "hashes its inputs as strings (integers by their decimal strings)",
    "HashedCrossing": "hashes crossed features as strings",
}


#: tf.keras 2 layers that keep the structure of their first call argument in the config
#: (``_preserve_input_structure_in_config``): for them a one-element list of entries is a
#: list of one tensor (``tf.add_n([x])``), where for other layers it is the tensor itself.
_PRESERVE_STRUCTURE = frozenset({"TFOpLambda", "SlicingOpLambda", "ClassMethod",
                                 "InstanceMethod", "InstanceProperty"})


#: Compute dtypes of the Keras 3 dtype policies whose layers compute in reduced precision.
_LOW_PRECISION_POLICIES = {"float16": "float16", "mixed_float16": "float16",
                           "bfloat16": "bfloat16", "mixed_bfloat16": "bfloat16"}


def _autocasts(cfg) -> set[str]:
    """The ``Cast`` operations of a Keras 3 Functional config that are Keras's autocasts of
    reduced-precision layers' inputs (Keras 3.6-3.10 record them in the graph): casts to
    float16/bfloat16 that only layers whose dtype policy computes in that dtype use. The
    importer computes those layers in float32, so these casts are read as casts to float32
    (the inputs are not rounded, nor the gradients that flow back through them)."""
    users: dict[str, set] = {}
    for lc in cfg.get("layers", []):
        c = lc.get("config")
        policy = c.get("dtype") if isinstance(c, dict) and "trainable" in c else None  # a layer
        if isinstance(policy, dict):
            policy = (policy.get("config") or {}).get("name")
        for node in lc.get("inbound_nodes") or []:
            for src in _refs(_parse_node(node, lc.get("class_name") in _PRESERVE_STRUCTURE)):
                users.setdefault(src.layer, set()).add(_LOW_PRECISION_POLICIES.get(str(policy)))
    outputs = {r.layer for r in _io_refs(cfg.get("output_layers"))[0]}
    found = set()
    for lc in cfg.get("layers", []):
        c, name = lc.get("config"), lc.get("name")
        if lc.get("class_name") != "Cast" or not isinstance(c, dict) or "trainable" in c:
            continue
        dtype = c.get("dtype")
        if isinstance(dtype, dict):
            dtype = (dtype.get("config") or {}).get("name")
        if dtype in ("float16", "bfloat16") and users.get(name) == {dtype} and (
                name not in outputs):
            found.add(name)
    return found


#: The first parameter of ``call`` in Keras's layer classes (``inputs`` for most; ``data``
#: for image preprocessing layers, ``sequences`` for RNNs, ``query`` for attention).
_FIRST_PARAMS = ("inputs", "data", "sequences", "query", "x", "sequence")


def _parse_node(node, preserve_structure: bool = False) -> tuple[tuple, dict]:
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        if "args" not in node and "kwargs" not in node:
            raise ValueError(f"an inbound node is {str(node)[:80]}, expected "
                             '{"args": [...], "kwargs": {...}} (Keras 3) or a list of '
                             "[layer name, node index, tensor index, kwargs] (Keras 2)")
        args = tuple(_k3_arg(a) for a in node.get("args", []))
        kwargs = {k: _k3_arg(v) for k, v in (node.get("kwargs") or {}).items()
                  if k not in _IGNORED_KWARGS}
        if not args:  # `layer(inputs=x)`: Keras takes the first parameter, by any name,
            # as the call's main input (its mask is the input mask); converters take it
            # positionally
            first = next((k for k in _FIRST_PARAMS if _refs(kwargs.get(k))), None)
            if first is not None:
                args = (kwargs.pop(first),)
        return args, kwargs
    # Keras 2: [[layer, node_index, tensor_index, kwargs], ...]; a TFOpLambda called on one
    # tensor stores the bare entry [layer, node_index, tensor_index, kwargs], and a constant
    # first argument is ["_CONSTANT_VALUE", -1, value, kwargs].
    bare = bool(node) and isinstance(node[0], str)
    if bare:
        node = [node]
    kwargs: dict = {}

    def entry_ref(entry):
        # a nested list of entries: tf.keras 2 records a layer called on [x, [h, c], g] (a
        # stack of RNN cells given its initial states per cell) with the nesting kept
        if entry and isinstance(entry[0], list):
            return [entry_ref(e) for e in entry]
        if len(entry) > 3 and entry[3]:
            kwargs.update({k: _k2_kwarg(v) for k, v in entry[3].items()
                           if k not in _IGNORED_KWARGS})
        if entry[0] == "_CONSTANT_VALUE":
            return entry[2]
        return _tensor_ref(entry)

    refs = [entry_ref(entry) for entry in node]
    arg = refs[0] if len(refs) == 1 and (bare or not preserve_structure) else refs
    return (arg,), kwargs


def _k2_kwarg(v):
    # tf.keras serializes a KerasTensor inside call kwargs as [layer, node, tensor], also
    # nested in lists (`tf.reshape(x, [tf.shape(x)[0], -1, 8])` records its shape as
    # [["tf.__operators__.getitem", 0, 0], -1, 8]); its loader reads any such list so.
    if (isinstance(v, list) and len(v) in (3, 4) and isinstance(v[0], str)
            and isinstance(v[1], int) and isinstance(v[2], int)):
        return Ref(v[0], v[1], v[2])
    if isinstance(v, list):
        return [_k2_kwarg(b) for b in v]
    return v


def _shift_refs(a, layers: set[str]):
    if isinstance(a, Ref):
        return Ref(a.layer, a.node - 1, a.tensor) if a.layer in layers else a
    if isinstance(a, list):
        return [_shift_refs(b, layers) for b in a]
    if isinstance(a, tuple):
        return tuple(_shift_refs(b, layers) for b in a)
    if isinstance(a, dict):
        return {k: _shift_refs(v, layers) for k, v in a.items()}
    return a


def _io_refs(spec) -> tuple[list[Ref], tuple[str, ...] | None]:
    """The refs of ``input_layers``/``output_layers`` and, for a dict of tensors, its keys.
    Keras (3 and tf.keras 2) flattens a dict of inputs or outputs in sorted key order,
    whatever the order of the saved config: ``model.inputs`` of ``Model({"b": ib, "a": ia},
    ...)`` is [ia, ib]; nested structures (``Model(a, [d1, [d2, d3]])``, a dict of lists)
    are flattened the same way (``keras.tree.flatten``), and have no keys."""
    if not spec:
        return [], None
    keys = None
    if isinstance(spec, dict) and not any(isinstance(v, dict) or (
            isinstance(v, list) and v and not _is_ref(v)) for v in spec.values()):
        keys = tuple(sorted(spec))
    if not isinstance(spec, (list, dict)):
        raise ValueError(f"{str(spec)[:60]!r} is not a list of tensor references")
    return [_tensor_ref(s) for s in _flatten(spec, _is_ref)], keys


def _flatten(a, is_leaf=lambda v: False) -> list:
    """The leaves of a nested structure in ``keras.tree.flatten``'s order (lists and tuples
    in order, dicts by sorted key): the inputs of a nested model called on ``[[x, y]]``, or
    with :func:`_is_ref` the tensor references of ``input_layers``/``output_layers``."""
    if is_leaf(a):
        return [a]
    if isinstance(a, dict):
        return [v for k in sorted(a) for v in _flatten(a[k], is_leaf)]
    if isinstance(a, (list, tuple)):
        return [v for b in a for v in _flatten(b, is_leaf)]
    return [a]  # a leaf (not a reference where one is expected: _tensor_ref refuses it)


def _is_ref(v) -> bool:
    """Whether a config value is one tensor reference, ``[layer name, node, tensor]``."""
    return isinstance(v, list) and bool(v) and isinstance(v[0], str)


def _input_shape(cfg) -> tuple | None:
    shp = cfg.get("batch_shape") or cfg.get("batch_input_shape")
    if shp is None and cfg.get("shape") is not None:
        shape = tuple(cfg["shape"])
    else:
        shape = None if shp is None else tuple(shp[1:])
    if shape is not None and not all(d is None or (type(d) is int and d >= 0) for d in shape):
        raise ValueError(f"an input shape is {shp or cfg.get('shape')}, expected sizes "
                         "(integers, or null for a free size)")
    return shape


def _first_input_shape(layer_cfg) -> tuple | None:
    """The input shape recorded by the first layer of a Sequential model without an
    ``InputLayer``. A nested model there records none of its own: its own first layer's
    (Keras 2.1 writes a Sequential's config as the bare list of its layers)."""
    cfg = layer_cfg.get("config") or {}
    if isinstance(cfg, list):
        cfg = {"layers": cfg}
    shape = _input_shape(cfg)
    if shape is None and layer_cfg.get("class_name") in MODEL_CLASSES and cfg.get("layers"):
        return _first_input_shape(cfg["layers"][0])
    return shape


def _auto_named(entries: Sequence[Any], taken: set[str]) -> list:
    """A Sequential's layer entries, those without a name given the one Keras gives them
    when it reloads the model: the snake_case class name, numbered on where taken
    (``my_block``, ``my_block_1``). Keras 3 saves no name for a layer of the user's own
    whose ``__init__`` takes ``**kw`` (not ``**kwargs``) and that defines no
    ``get_config`` (its automatic config keeps only the arguments it can name), and a
    Sequential's entry has none beside it (a Functional's has)."""
    from model_import._files import _snake

    names = taken | {str(n) for e in entries if isinstance(e, Mapping)
                     for n in ((e.get("config") or {}).get("name")
                               if isinstance(e.get("config"), Mapping) else None,
                               e.get("name")) if n}
    out = []
    for e in entries:
        if (isinstance(e, Mapping) and isinstance(e.get("class_name"), str)
                and isinstance(e.get("config"), Mapping) and e["class_name"] not in MODEL_CLASSES
                and not e["config"].get("name") and not e.get("name")):
            base = _snake(e["class_name"].split(">")[-1]) or "layer"
            k, auto = 0, base
            while auto in names:
                k += 1
                auto = f"{base}_{k}"
            names.add(auto)
            e = {**e, "config": {**e["config"], "name": auto}}
        out.append(e)
    return out


#: Layers whose output and output mask do not depend on the Keras mask of their input
#: (``Masking`` computes both from the values): a consumer of a tensor whose mask
#: MultiHeadAttention removes that computes the same whichever runs first.
_MASK_BLIND = frozenset({"Masking"})


class GraphBuilder:
    """Builds :class:`Graph` objects from configs, converting each layer with the registry."""

    def __init__(self, *, keras_version: str, path: str | None,
                 custom_layers: Mapping[str, Callable] | None = None,
                 keras_backend: str | None = None):
        self.keras_version = keras_version
        self.keras_backend = keras_backend
        self.path = path
        self.custom = dict(custom_layers or {})
        #: whether every layer was converted by model_import's own converters (then the
        #: graph is a function of the config, the Keras version and the backend alone)
        self.builtin_only = True

    def _err(self, msg):
        return KerasImportError(msg, path=self.path)

    @contextlib.contextmanager
    def _reading(self, where: str):
        """Names ``where`` (a model, a layer entry) when its config makes the parsing code
        fail: a damaged or edited config otherwise surfaces as a bare KeyError or TypeError
        from deep inside (the original is chained)."""
        try:
            yield
        except (KerasImportError, LayerCallError):
            raise
        except (KeyError, TypeError, IndexError, AttributeError, ValueError) as e:
            raise self._err(
                f"{where}: the config is malformed ({type(e).__name__}: {e}); expected what "
                "Keras writes there. The file is damaged or was edited: save the model "
                "again") from e

    def build(self, model_cfg: Mapping[str, Any]) -> Graph:
        cls = model_cfg.get("class_name")
        cfg = model_cfg.get("config")
        name = (cfg.get("name") if isinstance(cfg, dict) else None) or model_cfg.get("name")
        # Keras 2.1 writes a Sequential's config as the bare list of its layers
        layers = cfg.get("layers") if isinstance(cfg, dict) else (
            cfg if cls == "Sequential" else None)
        if cls in MODEL_CLASSES and not isinstance(layers, list):
            raise self._err(
                f"{cls} model {name!r}: its config has {type(cfg).__name__} {str(cfg)[:60]!r}"
                f"{'' if not isinstance(cfg, dict) else ' whose layers are ' + repr(layers)[:40]}"
                "; expected an object whose 'layers' is a list of layer entries (what "
                "model.to_json() writes). The file is damaged or was edited: save the model "
                "again")
        if cls == "Sequential":
            with self._reading(f"Sequential model {name!r}"):
                return self._sequential(cfg)
        if cls in ("Functional", "Model") or (isinstance(cfg, dict) and "input_layers" in cfg):
            with self._reading(f"model {name!r}"):
                return self._functional(cfg, cls or "Functional")
        raise self._err(f"expected a Sequential or Functional model config, got class "
                        f"{cls!r}. Subclassed Keras models store no architecture; rebuild it "
                        "as a Functional model or pass the architecture config explicitly.")

    def convert_layer(self, layer_cfg: Mapping[str, Any]) -> LayerSpec:
        if not isinstance(layer_cfg, Mapping):
            raise self._err(f"a layer entry is a {type(layer_cfg).__name__} "
                            f"({str(layer_cfg)[:60]}), expected an object with 'class_name' "
                            "and 'config'. The file is damaged or was edited: save the model "
                            "again")
        cls = layer_cfg.get("class_name")
        if not isinstance(cls, str):
            raise self._err(f"a layer entry has no class_name: {str(layer_cfg)[:200]}")
        keras_class = None
        if functional_subclass(layer_cfg) and all(
                lookup(c, self.custom) is None
                for c in (cls, cls.split(">")[-1], layer_cfg.get("registered_name") or cls)):
            # a nested Functional subclass (no converter registered for its class) is the
            # graph its config records, as Keras reloads it
            keras_class, cls = cls.split(">")[-1], "Functional"
            layer_cfg = {**layer_cfg, "class_name": cls}
        raw_cfg = layer_cfg.get("config")
        if not isinstance(raw_cfg, (Mapping, list)):
            # Keras writes every layer's options: defaults would build another layer
            raise self._err(
                f"the entry of layer {layer_cfg.get('name', '?')!r} ({cls}) has config "
                f"{str(raw_cfg)[:60]}, expected an object of the layer's options. The file "
                "is damaged or was edited: save the model again")
        # Keras 2.1 writes a Sequential's config as the bare list of its layers
        cfg = {"layers": raw_cfg} if isinstance(raw_cfg, list) else dict(raw_cfg)
        if cls not in MODEL_CLASSES:
            cfg = decode_constants(cfg)
        name = cfg.get("name") or layer_cfg.get("name")
        if not isinstance(name, str) and not (cls in MODEL_CLASSES and isinstance(raw_cfg, list)):
            raise self._err(f"a layer entry of class {cls!r} has name {name!r}, expected a "
                            "string. The file is damaged or was edited: save the model again")
        for key in _POSITIVE_SIZES + _PADDINGS if cls not in MODEL_CLASSES else ():
            v = cfg.get(key)
            low = 0 if key in _PADDINGS else 1
            if any(isinstance(x, (int, float)) and not isinstance(x, bool) and x < low
                   for x in _numbers(v)):
                raise self._err(f"layer {name!r} ({cls}): its config sets {key}={v!r}, "
                                f"expected {'sizes >= 0' if low == 0 else 'positive sizes'}. "
                                "The file is damaged or was edited: save the model again")
        quantized = _quantization(cfg) if cls not in MODEL_CLASSES else None
        if quantized:  # checked before any converter is looked up: none can help
            raise UnsupportedLayerError(
                name, cls, path=self.path, needs=None,
                detail=f"its weights are quantized ({quantized}: model.quantize(...)), and "
                "jaxsal computes in floating point, where attributions are defined; load the "
                "model saved before quantization (the float weights)")
        registered = layer_cfg.get("registered_name")
        own = own_class(layer_cfg)
        if ">" in cls:  # Keras 3's legacy .h5 writes registered classes as "package>Class"
            registered, cls = cls, cls.split(">")[-1]
        # a converter registered under the full "package>Class" name is that class's
        cls, conv = converter_for(cls, registered, own, self.custom)
        if cls in MODEL_CLASSES:
            sub = self.build(layer_cfg)
            return LayerSpec(name, cls, cfg, LayerImpl(call=None, subgraph=sub, n_weights=None),
                             keras_class=keras_class)
        module = str(layer_cfg.get("module") or "")
        if not cls.startswith("ops.") and (
                module.startswith(("keras.src.ops", "keras.ops"))
                or (not module and not own and "trainable" not in cfg
                    and not isinstance(cfg.get("dtype"), dict)
                    and lookup(f"ops.{cls}", self.custom) is not None)):
            # A Keras 3 operation on symbolic tensors (``x + 3.0``), not a layer: its class
            # name (Add, Multiply, ...) collides with layer classes. ``.keras`` configs say so
            # by the module; Keras 3's legacy .h5 writer drops the module, but an operation's
            # config lacks the ``trainable`` entry and the dtype policy every layer config has
            # (``zeros_like(x, dtype="bool")`` has a plain dtype). A class of the model's own
            # code (``own``) is no operation, whatever its config holds (a get_config that
            # leaves out super()'s entries).
            cls = f"ops.{cls}"
            conv = lookup(cls, self.custom)
        if conv is None and own and lookup(cls) in builtin_converters():
            name_to_register = registered or cls
            evidence = (f"the file names it {registered!r}, a class registered with "
                        "keras.saving.register_keras_serializable" if "module" not in layer_cfg
                        else f"the file records {_module_of(layer_cfg)} and "
                        f"registered name {name_to_register!r}, where Keras's layers record "
                        "a Keras module")
            raise UnsupportedLayerError(
                name, name_to_register, path=self.path, own=True,
                detail=f"it is a class of the model's own code named like Keras's {cls} "
                f"({evidence}), and "
                "Keras loads it only from that code, never as its own layer of that name; "
                f"the importer's {cls} converter does not apply to it")
        if conv is None:
            if cls == "Lambda":
                fn = _lambda_function_name(cfg)
                stored = ("a Lambda layer stores Python bytecode, which cannot be ported"
                          if fn is None else
                          f"a Lambda layer runs Python code; this one calls {fn!r}, which the "
                          "file records by its name only (no code), so it cannot be ported"
                          + ("; a keras.applications preprocess_input loads when called "
                             "on the Keras tensor itself, x = preprocess_input(inputs) without "
                             "a Lambda (Keras records the operations it runs), or apply it to "
                             "the inputs before the model" if "preprocess_input" in fn
                             else ""))
                raise UnsupportedLayerError(
                    name, cls, path=self.path,
                    detail=f"{stored}. Write its computation in JAX; the converter receives "
                    "the layer's config, so one 'Lambda' converter can dispatch on "
                    "config['name']")
            if cls in _STRING_LAYERS:
                raise UnsupportedLayerError(
                    name, cls, path=self.path,
                    detail=f"it {_STRING_LAYERS[cls]}, which JAX arrays cannot hold, so "
                    "there is no JAX form of it. Explain the model after it, which takes "
                    "the ids (or vectors) it outputs: in Keras, build "
                    f"keras.Model(model.get_layer({name!r}).output, model.output), save "
                    "that and load it (this layer's preprocessing stays in Keras)")
            where = f" (module {module!r})" if module else ""
            raise UnsupportedLayerError(
                name, cls, path=self.path,
                detail=f"no converter is registered for this class{where}")
        ctx = ConvertContext(layer_name=name, class_name=cls, keras_version=self.keras_version,
                             path=self.path, build_subgraph=None,
                             custom_layers=self.custom or None,
                             keras_backend=self.keras_backend, user_converted=[])
        try:
            impl = conv(cfg, ctx)
        except (UnsupportedLayerError, KerasImportError):
            raise
        except Exception as e:  # a converter choked on an unexpected config
            raise UnsupportedLayerError(
                name, cls, path=self.path,
                detail=f"its config could not be converted ({type(e).__name__}: {e}; found "
                f"the options {sorted(cfg)[:20]}): the config is malformed (a damaged or "
                "edited file: save the model again) or of a form this converter does not "
                "know") from e
        if isinstance(impl, CellImpl):
            raise UnsupportedLayerError(
                name, cls, path=self.path, needs=None,
                detail="its converter returns a CellImpl, a recurrent cell's step, which runs "
                "inside an RNN layer (keras.layers.RNN(cell)); a cell called on its own as a "
                "layer of the model is not supported. Wrap the cell in keras.layers.RNN, or "
                "register a converter returning a LayerImpl for this use")
        impl = with_own_activation(returned_layer_impl(impl, conv, ctx), ctx)
        impl = _masking.with_builtin_rules(impl, cls, cfg, ctx,
                                           builtin=conv in builtin_converters())
        builtin = conv in builtin_converters()
        # a built-in wrapper or RNN around a layer or cell converted by the user's converter
        self.builtin_only = self.builtin_only and builtin and not ctx.user_converted
        return LayerSpec(name, cls, cfg, impl, user_converter=not builtin)

    def _sequential(self, cfg) -> Graph:
        layer_cfgs = cfg if isinstance(cfg, list) else cfg.get("layers", [])
        name = "sequential" if isinstance(cfg, list) else cfg.get("name", "sequential")
        specs: dict[str, LayerSpec] = {}
        calls = []
        input_shape, input_dtype = None, "float32"
        prev: Ref | None = None
        if not layer_cfgs:
            raise self._err(f"Sequential model {name!r} has no layers")
        layer_cfgs = restore_output_padding(layer_cfgs, sequential=True, model_name=name,
                                            keras_version=self.keras_version)
        first = layer_cfgs[0]
        if not isinstance(first, Mapping):
            self.convert_layer(first)  # refuses it
        if first.get("class_name") == "InputLayer":
            input_name = first["config"].get("name", f"{name}_input")
            input_shape = _input_shape(first["config"])
            input_dtype = first["config"].get("dtype", "float32")
            specs[input_name] = self.convert_layer(first)
            layer_cfgs = layer_cfgs[1:]
        else:
            input_name = f"{name}_input"
            input_shape = _first_input_shape(first)
            if input_shape is None and isinstance(cfg, dict) and cfg.get("build_input_shape"):
                input_shape = tuple(cfg["build_input_shape"][1:])
            specs[input_name] = LayerSpec(input_name, "InputLayer", {},
                                          self.convert_layer({"class_name": "InputLayer",
                                                              "config": {"name": input_name}}).impl)
        prev = Ref(input_name)
        layer_cfgs = _auto_named(layer_cfgs, set(specs))
        for lc in layer_cfgs:
            with self._reading(f"Sequential model {name!r}, layer {_entry_name(lc)!r}"):
                spec = self.convert_layer(lc)
            if spec.class_name == "InputLayer":
                raise self._err(f"Sequential model {name!r}: layer {spec.name!r} is an "
                                "InputLayer after its first layer; an InputLayer starts a "
                                "model. The file is damaged or was edited: save the model again")
            if spec.name is None and spec.impl.subgraph is not None:
                # a nested Sequential of Keras 2.1 (a bare list) records no name; the
                # loader names those of a model's top level after the weights file
                k = 1
                while f"sequential_{k}" in specs or any(
                        f"sequential_{k}" == (c.get("config") or {}).get("name")
                        for c in layer_cfgs if isinstance(c.get("config"), dict)):
                    k += 1
                spec = dataclasses.replace(spec, name=f"sequential_{k}")
            if spec.name in specs:
                raise self._err(f"duplicate layer name {spec.name!r} in {name!r}")
            specs[spec.name] = spec
            calls.append(Call(spec.name, 0, (prev,), {}))
            prev = Ref(spec.name)
        if isinstance(input_dtype, dict):
            input_dtype = input_dtype.get("config", {}).get("name", "float32")
        return Graph(name, "Sequential", specs, tuple(calls), (Ref(input_name),), (prev,),
                     (input_shape,), (str(input_dtype),), True,
                     dict_call=dict_call_rule(self.keras_version))

    def _keras2_node_shift(self, specs, raw_calls, outputs) -> set[str]:
        """Nested models whose node references are off by one.

        tf.keras numbers the calls of a nested Functional model from 1 in its configs (its
        node 0 is the one made when the nested model itself was built, which the outer
        config omits), so a reference ``[base, 1, 0]`` means the first listed call.
        """
        if parse_version(self.keras_version).major >= 3:
            return set()
        refs: dict[str, set[int]] = {}

        def collect(a):
            if isinstance(a, Ref):
                refs.setdefault(a.layer, set()).add(a.node)
            elif isinstance(a, (list, tuple)):
                for b in a:
                    collect(b)
            elif isinstance(a, dict):
                for b in a.values():
                    collect(b)

        for c in raw_calls.values():
            collect(c.args)
            collect(c.kwargs)
        collect(list(outputs))
        out = set()
        for lname, spec in specs.items():
            if spec.impl.subgraph is None or lname not in refs:
                continue
            n_calls = sum(1 for (ln, _) in raw_calls if ln == lname)
            if min(refs[lname]) >= 1 and max(refs[lname]) == n_calls:
                out.add(lname)
        return out

    def _functional(self, cfg, cls) -> Graph:
        name = cfg.get("name", "model")
        specs: dict[str, LayerSpec] = {}
        raw_calls: dict[tuple[str, int], Call] = {}
        # the entries and references, checked before any use of them (_autocasts)
        for lc in cfg["layers"]:
            if not isinstance(lc, Mapping):
                self.convert_layer(lc)  # refuses it
            with self._reading(f"model {name!r}, layer {_entry_name(lc)!r} "
                               f"({lc.get('class_name')})"):
                for node in lc.get("inbound_nodes") or []:
                    _parse_node(node, lc.get("class_name") in _PRESERVE_STRUCTURE)
        with self._reading(f"model {name!r}, its input_layers"):
            inputs, in_dict_keys = _io_refs(cfg.get("input_layers"))
        outputs_spec = cfg.get("output_layers")
        with self._reading(f"model {name!r}, its output_layers"):
            outputs, out_dict_keys = _io_refs(outputs_spec)
        autocasts = _autocasts(cfg)
        layer_cfgs = restore_output_padding(cfg["layers"], sequential=False, model_name=name,
                                            keras_version=self.keras_version)
        trained: list[str] = []  # layers called with training=True
        for lc in layer_cfgs:
            if lc.get("name") in autocasts:  # computed in float32, like the layers using it
                lc = {**lc, "config": {**lc["config"], "dtype": "float32"}}
            with self._reading(f"model {name!r}, layer {_entry_name(lc)!r} "
                               f"({lc.get('class_name')})"):
                spec = self.convert_layer(lc)
                lname = lc.get("name") or spec.name
                if lname != spec.name:
                    spec = dataclasses.replace(spec, name=lname)
                if spec.class_name == "InputLayer" and lc.get("inbound_nodes"):
                    raise self._err(f"model {name!r}: layer {lname!r} is an InputLayer called on "
                                    "other tensors; an InputLayer starts a model. The file is "
                                    "damaged or was edited: save the model again")
                if lname in specs:
                    raise self._err(f"model {name!r} has two layers named {lname!r}; Keras "
                                    "names the layers of a model uniquely. The file is damaged "
                                    "or was edited: save the model again")
                specs[lname] = spec
                for i, node in enumerate(lc.get("inbound_nodes") or []):
                    args, kwargs = _parse_node(node,
                                               lc.get("class_name") in _PRESERVE_STRUCTURE)
                    raw_calls[(lname, i)] = Call(lname, i, args, kwargs)
                    if _called_training(node) and not (
                            spec.class_name in ("BatchNormalization", "SyncBatchNormalization")
                            and spec.config.get("trainable") is False and not
                            parse_version(self.keras_version).before(2, 4, unrecorded=True)):
                        # (tf.keras 2.4+, TensorFlow 2, runs a frozen batch norm at inference
                        # whatever `training` says; older Keras 2 used the batch statistics)
                        trained.append(f"{lname!r} ({spec.class_name})")
        if trained and parse_version(self.keras_version).major < 3:
            # Keras 3's predict (and model(x, training=False)) overrides a recorded training
            # argument; tf.keras 2 keeps it
            warnings.warn(
                f"model {name!r}: layer {', '.join(sorted(set(trained)))} was called with "
                f"training=True, which Keras {self.keras_version} keeps at inference: in its "
                "predict a BatchNormalization normalizes with each batch's statistics and "
                "dropout, noise and augmentation layers are random (a nested model passes "
                "training=True to its layers). jaxsal computes the inference model (moving "
                "statistics; dropout, noise and augmentation the identity), as Keras 3's "
                "predict does, so its outputs differ from this tf.keras model's predict. To "
                "silence this, call the layer without training=True and save the model again",
                UserWarning, stacklevel=2)
        inputs, outputs = tuple(inputs), tuple(outputs)
        if not inputs or not outputs:
            raise self._err(
                f"model {name!r} has {len(inputs)} inputs and {len(outputs)} outputs "
                f"(input_layers {str(cfg.get('input_layers'))[:60]}, output_layers "
                f"{str(outputs_spec)[:60]}); expected at least one of each, as "
                "[layer name, node index, tensor index]. The file is damaged or was edited: "
                "save the model again")
        if parse_version(self.keras_version).major >= 3:
            # Keras 3 numbers a nested Functional model's calls from 1 in `output_layers`
            # (its node 0 is the one built with the model; Keras's loader subtracts 1) but
            # from 0 in the inbound nodes (seen in files of 3.1 and 3.15)
            outputs = tuple(_shift_refs(list(outputs), {
                n for n, sp in specs.items() if sp.class_name == "Functional"}))
        shift = self._keras2_node_shift(specs, raw_calls, outputs)
        if shift:
            raw_calls = {k: dataclasses.replace(c, args=_shift_refs(c.args, shift),
                                                kwargs=_shift_refs(dict(c.kwargs), shift))
                         for k, c in raw_calls.items()}
            outputs = tuple(_shift_refs(list(outputs), shift))
        # one output tensor, however nested (`Model(i, [d])`, `{"k": d}`): the model returns
        # an array; several (`[a, b]`, also `[[a, b]]` or `{"k": [a, b]}`, whose one entry
        # holds two) a list, flattened as keras.tree.flatten orders them
        single = len(outputs) == 1
        for r in inputs + outputs:
            if r.layer not in specs:
                raise self._err(f"model {name!r} names {r.layer!r} as an input/output, but has "
                                "no such layer")
        # Topological order of the calls (configs are usually ordered, shared layers not always).
        order: list[Call] = []
        state: dict[tuple[str, int], int] = {}
        input_keys = {(r.layer, r.node) for r in inputs}

        def refs_in(a):
            if isinstance(a, Ref):
                yield a
            elif isinstance(a, (list, tuple)):
                for b in a:
                    yield from refs_in(b)
            elif isinstance(a, dict):
                for b in a.values():
                    yield from refs_in(b)

        def visit(key, chain=()):
            if key in input_keys or state.get(key) == 2:
                return
            if state.get(key) == 1:
                raise self._err(f"cycle in model {name!r} at layer {key[0]!r}")
            call = raw_calls.get(key)
            if call is None:
                raise self._err(f"model {name!r}: layer {key[0]!r} call #{key[1]} is used but "
                                "not defined in the config")
            state[key] = 1
            for r in list(refs_in(call.args)) + list(refs_in(call.kwargs)):
                visit((r.layer, r.node))
            state[key] = 2
            order.append(call)

        for r in outputs:
            visit((r.layer, r.node))
        # Calls not on a path to an output are still run (their outputs may be captured).
        for key in raw_calls:
            if key not in input_keys:
                visit(key)
        in_shapes, in_dtypes = [], []
        for r in inputs:
            c = specs[r.layer].config
            with self._reading(f"model {name!r}, input layer {r.layer!r}"):
                in_shapes.append(_input_shape(c))
            dt = c.get("dtype", "float32")
            if isinstance(dt, dict):
                dt = dt.get("config", {}).get("name", "float32")
            in_dtypes.append(str(dt))
        return Graph(name, cls, specs, tuple(order), inputs, outputs, tuple(in_shapes),
                     tuple(in_dtypes), single, in_dict_keys, out_dict_keys,
                     null_mask=_masking.null_mask_rule(self.keras_version),
                     dict_call=dict_call_rule(self.keras_version))


def _lambda_function_name(cfg: Mapping[str, Any]) -> str | None:
    """The function a Lambda layer's config records by name (a ``def``, not a ``lambda``,
    whose bytecode is stored instead): Keras 3 writes ``{"class_name": "function", "config":
    "preprocess_input", "module": "builtins"}``, tf.keras ``function_type: "function"`` with
    the name and its ``module``; ``None`` for bytecode."""
    fn = cfg.get("function")
    if isinstance(fn, Mapping) and fn.get("class_name") == "function":
        name, module = fn.get("config"), fn.get("module")
    elif cfg.get("function_type") == "function":
        name, module = fn, cfg.get("module")
    else:
        return None
    if not isinstance(name, str):
        return None
    return f"{module}.{name}" if isinstance(module, str) and module not in ("builtins",
                                                                           "__main__") else name


def _module_of(layer_cfg: Mapping[str, Any]) -> str:
    """How a message names the ``module`` a config entry records: ``null`` is what Keras 3
    and tf.keras write for a class defined in the script that saved the model."""
    module = layer_cfg.get("module")
    if module is None:
        return "module null (a class of the script that saved the model, its __main__)"
    return f"module {module!r}"
