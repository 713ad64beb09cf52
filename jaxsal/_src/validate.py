"""Checks run in Python before anything heavy is traced, compiled or run.

Every public method calls :func:`prepare`: it resolves the model variant (head, backward rule),
checks the input (dtype, shape against the model, NaN/inf), the targets (kind, ids in range)
and, for CAMs, the layer (exists, has spatial axes). Errors say what was expected, what was
given and how to fix it.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import base
from jaxsal._src.per_example import check_per_example
from jaxsal._src.precision import _CALL_PARAMS, _CALLS
from jaxsal._src.targets import (ClassScore, LayerScore, OutputInfo, TargetSpec, parse_targets,
                                 resolve_predicted, run_model, score_matrix)
from model_import._graph import MODEL_CLASSES, _fused_activation
from model_import._layers.activations import activation_name
from model_import._model import softmax_on_one_value

Array = jax.Array


@jax.jit
def _all_finite(x):
    return jnp.isfinite(x).all()


def all_finite(v: Any) -> bool:
    """Whether ``v`` holds no NaN/inf; ``True`` for a tracer (its values are not known
    while the caller's ``jax.jit`` traces). A constant is checked while a trace runs too
    (its check was a tracer there, and ``bool`` of it a TracerBoolConversionError)."""
    if isinstance(v, jax.core.Tracer):
        return True
    if isinstance(v, np.ndarray):
        return bool(np.isfinite(v).all())
    with jax.ensure_compile_time_eval():
        return bool(_all_finite(v))


class TokenInputs(TypeError):
    """The refusal of integer inputs (token ids or other codes) by a method that takes their
    gradient, which is zero: ``.layers``, the layers that read input ``.index`` (its
    Embedding, by name: where to attribute instead, ``layer=``; empty where not known, a
    plain function's), and ``.what``, the input as the message names it. A ``TypeError``;
    ``jaxsal explain`` restates it naming its own flag, ``--layer NAME``."""

    def __init__(self, message: str, layers: list[str], index: int, what: str):
        super().__init__(message)
        self.layers, self.index, self.what = layers, index, what

    def __reduce__(self):  # (pickled whole: across processes)
        return type(self), (str(self), self.layers, self.index, self.what)


def _token_layers(model: Any, i: int = 0) -> list[str]:
    """The layers that read integer input ``i`` (token ids), where to attribute it instead:
    the model's Embedding(s) (also inside a nested model of one input,
    ``"encoder/embedding"``), else the layers that read it directly; ``[]`` where not known
    (a plain function)."""
    deep = _deep_readers(getattr(model, "graph", None), i) or {}
    return ([n for n, c in deep.items() if "Embedding" in c]
            or [n for n in _readers(model, i)
                if getattr(_layer_info(model, n), "class_name", None) not in MODEL_CLASSES])


def _token_error(model: Any, i: int, what: str, message: str) -> TokenInputs:
    """:class:`TokenInputs` for integer input ``i`` (``what``), its ``message`` followed by
    how to explain it (:func:`_at_a_layer`)."""
    names = _token_layers(model, i)
    return TokenInputs(f"{message}{_at_a_layer(names)}", names, i, what)


def _at_a_layer(names: list[str]) -> str:
    """How to explain an integer input (token ids) with the gradient methods: at the layer
    that reads it, ``names[0]`` of :func:`_token_layers` (the model's own embedding, by its
    name; ``'embedding'`` where none is known, a plain function's or a nested model's)."""
    layer = names[0] if names else "embedding"
    return ("Attribute at a layer instead, e.g. the embedding: "
            f"jaxsal.integrated_gradients(model, x, layer={layer!r}) (also saliency, "
            "gradient_x_input, gradient_shap, deeplift, deeplift_shap and lrp). The "
            "gradient CAMs (gradcam, ...), eigencam and ablationcam (at a layer with a token "
            "axis: the embedding, a Conv1D or an RNN's sequences), occlusion, shapley_values, "
            "shapley_value_sampling, kernel_shap, lime (with distance='interpretable') and "
            "rise (absent tokens become a fill id) take token ids as they are.")


def _reader_class(model: Any, i: int = 0) -> str | None:
    """The Keras class of the (first) layer that reads input ``i``, where the model lists it
    (a nested model: its first layer's); ``None`` where not known (a plain function)."""
    for name in _readers(model, i):
        info = _layer_info(model, name)
        cls = getattr(info, "class_name", None)
        if cls is not None and cls not in MODEL_CLASSES:
            return cls
    return None


def _layer_info(model: Any, name: str) -> Any:
    """``model.layer(name)`` of a :class:`model_import.KerasModel`, else ``None``."""
    try:
        return model.layer(name)
    except Exception:  # noqa: BLE001  (a plain function, a name it does not list)
        return None


def _bool_input(model: Any, i: int) -> bool:
    """Whether input ``i`` of a :class:`model_import.KerasModel` has a bool ``InputLayer``
    (a mask or flags: cast to bool as Keras casts it, so without a gradient)."""
    dtypes = getattr(getattr(model, "graph", None), "input_dtypes", None)
    return bool(dtypes) and i < len(dtypes) and str(dtypes[i]) == "bool"


def integer_input(model: Any) -> str | None:
    """The dtype of a model's (first) input when it is an integer one (token ids), else
    ``None``: a :class:`model_import.KerasModel` records it from its ``InputLayer``."""
    dtypes = getattr(getattr(model, "graph", None), "input_dtypes", None)
    return str(dtypes[0]) if dtypes and "int" in str(dtypes[0]) else None


#: The methods that take a model's several inputs (a list, tuple or dict), for the errors of
#: those that do not (each of which says why in its ``one_input`` attribute).
SEVERAL_INPUT_METHODS = (
    "a method that gives a map per input (saliency, gradient_x_input, guided_backprop, "
    "deconvnet, smoothgrad, integrated_gradients, gradient_shap, deeplift, deeplift_shap, "
    "lrp, occlusion, neuron_conductance) or one map at a layer (gradcam, gradcam_plus_plus, "
    "hirescam, layercam, xgradcam, eigencam, eigengradcam, gradcam_elementwise, ablationcam, "
    "layer_conductance, internal_influence)")

# How to explain one input of a several-input model with a method of one input array. The
# method may run the function on a batch of masked copies (Shapley, KernelSHAP, LIME, RISE,
# Score-CAM), not on the N inputs: the other inputs' values are one row, broadcast to it.
WRAP_ONE_INPUT = ("wrap the model so that it takes one array, the other inputs fixed to one "
                  "row of values other (shape (1, ...), shared by every input of the call): "
                  "jaxsal.FunctionModel(lambda p, img: model.apply(p, [img, jnp.broadcast_to("
                  "other, (len(img),) + other.shape[1:])]), model.params); for inputs with "
                  "other values of their own, call once per input")


def model_inputs(model: Any) -> str:
    """The inputs ``model`` takes, by name and shape: ``img (N, 8, 8, 3), vec (N, 5)``."""
    names = list(getattr(model, "input_names", None) or [])
    shapes = list(getattr(model, "input_shapes", None) or [None] * len(names))

    def shape(s):
        return "(N, ...)" if s is None else "(N" + "".join(
            f", {'?' if d is None else d}" for d in s) + ")"

    return ", ".join(f"{n} {shape(s)}" for n, s in zip(names, shapes))


def one_input_error(method: Any, got: str) -> TypeError:
    """The error of ``method``, a method that explains one input array (its ``one_input``
    attribute says why), given several input arrays, ``got`` (``"this job's 2 inputs (img
    (N, 8, 8, 3), vec (N, 5))"``): what its direct call (:func:`prepare`), a batch job
    (:func:`jaxsal.explain_to_file`) and ``jaxsal explain`` say alike. An evaluation of maps
    (a ``maps`` or ``explain`` argument: :func:`jaxsal.deletion`,
    :func:`jaxsal.sensitivity_max`...) says so, and how to evaluate one input's maps."""
    while isinstance(method, functools.partial):
        method = method.func
    name = getattr(method, "__name__", "this method")
    why = getattr(method, "one_input", None)
    why = f" ({why})" if why else ""
    try:
        evaluates = {"maps", "explain"} & set(inspect.signature(method).parameters)
    except (TypeError, ValueError):
        evaluates = set()
    if evaluates:
        return TypeError(f"{name} evaluates the maps of one input array{why}, so it cannot "
                         f"evaluate {got}. To evaluate the maps of one input of a model of "
                         "several, explain and evaluate with a model of that input alone: "
                         + WRAP_ONE_INPUT)
    return TypeError(f"{name} explains one input array{why}, so it cannot explain {got}. Use "
                     f"{SEVERAL_INPUT_METHODS}, or " + WRAP_ONE_INPUT)


def given_inputs(model: Any, x: Any) -> str:
    """What a structure ``x`` of input arrays is, for :func:`one_input_error`: ``"a list of
    2 arrays of shapes (3, 8, 8, 3), (3, 5) (this model's inputs: img (N, 8, 8, 3), vec (N,
    5))"``."""
    keys = [f"{k!r}: " for k in x] if isinstance(x, dict) else [""] * len(x)
    items = x.values() if isinstance(x, dict) else x
    shapes = ", ".join(k + _shape_of(a) for k, a in zip(keys, items))
    listed = model_inputs(model)
    return (f"a {type(x).__name__} of {len(x)} arrays of shapes {shapes}"
            + (f" (this model's inputs: {listed})" if listed else ""))


def arrange_per_input(v: Any, kind: type, keys: tuple, names: tuple, what: str) -> Any:
    """Option value ``v`` of an option a method takes one per input of a model of several
    inputs (its ``several_input_options``: an integrated-gradients ``baseline``), given as a
    dict keyed by the inputs' ``names`` or a list in their order (the model's), in the
    container the method reads it in beside the inputs: a dict keyed as the inputs
    (``keys``) for a dict of inputs (``kind``), else a list. Any other value (one value for
    every input: a number, an array; a tuple, which the method reads as it is: occlusion's
    ``patch`` per spatial axis) comes back as it is. Raises for names other than the inputs'
    and for a list of another count. The one rule of a direct call
    (:meth:`Prepared.per_input`) and of a batch job (``job_inputs._Several.arrange``)."""
    listed = ", ".join(names)
    if isinstance(v, dict):
        given = {str(k): k for k in v}
        unknown = [k for k in given if k not in names]
        missing = [n for n in names if n not in given]
        if unknown or missing:
            got = []
            if unknown:
                got.append(f"{', '.join(map(repr, unknown))}, "
                           + ("not an input" if len(unknown) == 1 else "not inputs")
                           + " of the model")
            if missing:
                got.append(f"no value for {', '.join(map(repr, missing))}")
            raise ValueError(
                f"option {what}: expected one value per input, as a dict keyed by the "
                f"model's input names ({listed}) or a list in that order; got "
                f"{'; '.join(got)}. Give every input its value under its name (or one "
                "number for all of them)")
        values = [v[given[n]] for n in names]
    elif isinstance(v, list):
        if len(v) != len(names):
            raise ValueError(
                f"option {what}: expected one value per input, a list of {len(names)} in "
                f"the order of the model's inputs ({listed}) or a dict keyed by those names; "
                f"got a list of {len(v)}")
        values = list(v)
    else:
        return v
    return dict(zip(keys, values)) if kind is dict else values


def one_of_several(model: Any, x: Any) -> str:
    """What one array ``x`` given to ``model``, a model of several inputs, is, for
    :func:`one_input_error`: ``"this model of 2 inputs (img (N, 8, 8, 3), vec (N, 5)), given
    one ndarray of shape (3, 8, 8, 3)"`` (a method of one input array explains none of them
    as they are: passing them all is refused too)."""
    return (f"this model of {_several_inputs(model)} inputs ({model_inputs(model)}), given one "
            f"{type(x).__name__} of shape {_shape_of(x)}")


def _shape_of(a: Any) -> str:
    """``a``'s shape as ``"(3, 5)"``, for an error (``"(ragged)"`` for nested lists of rows
    of different lengths, which have none)."""
    try:
        return str(tuple(np.shape(a)))
    except ValueError:
        return "(ragged)"


def _several_inputs(model: Any) -> int:
    """How many input arrays ``model`` takes (1 for a plain function: it takes what it is
    given)."""
    return int(getattr(model, "num_inputs", 1) or 1)


def check_input(model: Any, x: Any, *, check_finite: bool = True, spatial: bool = False,
                allow_int: bool = False, multi_input: bool = False,
                method: Any = None) -> Any:
    """``x`` as a floating JAX array of shape ``(N, *model.input_shape)`` (integer token ids
    too with ``allow_int``: methods attributing at a layer or reading no input gradient),
    or a clear error.

    With ``multi_input`` (the methods that attribute to every input of a multi-input model),
    ``x`` may also be a list, tuple or dict of arrays, one per input of the model (a dict
    keyed by :attr:`model_import.KerasModel.input_names`): each is checked against its own
    input, all share the batch size, and the same container comes back. Without it, such a
    structure is refused naming ``method`` (the public method called, whose ``one_input``
    attribute says why it explains one input array), and so is one array for a model of
    several inputs."""
    if isinstance(x, (list, tuple, dict)) and x and (
            isinstance(x, dict) or hasattr(x[0], "shape") or _several_inputs(model) > 1):
        return _check_inputs(model, x, check_finite=check_finite, spatial=spatial,
                             allow_int=allow_int, multi_input=multi_input, method=method)
    if _several_inputs(model) > 1 and not multi_input:  # (all of them: refused too)
        raise one_input_error(method, one_of_several(model, x))
    if _several_inputs(model) > 1:
        raise TypeError(f"this model has {_several_inputs(model)} inputs "
                        f"({getattr(model, 'input_names', '')}); pass x as a list in that order "
                        f"or a dict keyed by those names, got one {type(x).__name__}")
    shape = getattr(model, "input_shape", None)
    ids_dtype = integer_input(model)
    return _check_array(model, x, shape, ids_dtype, check_finite=check_finite, spatial=spatial,
                        allow_int=allow_int and _takes_codes(model, 0), what="x",
                        bool_input=_bool_input(model, 0), gradient=not allow_int)


def input_positions(model: Any, x: Any) -> tuple[int, ...] | None:
    """Each leaf's position among ``model``'s inputs for ``x`` a dict keyed by
    :attr:`model_import.KerasModel.input_names` (its leaves come in its sorted keys' order),
    else ``None`` (a list's leaves are in the model's order): per-input random draws are keyed
    by that position, the same whatever the container."""
    names = list(getattr(model, "input_names", None) or [])
    if isinstance(x, dict) and set(names) == set(x):
        return tuple(names.index(k) for k in sorted(x))
    return None


def _takes_codes(model: Any, i: int) -> bool:
    """Whether input ``i`` of ``model`` may be integer codes (token ids): a
    :class:`model_import.KerasModel` knows (its graph's ``takes_codes``: an integer
    ``InputLayer``, or an ``Embedding`` or another layer reading codes); a plain function
    takes what it is given."""
    graph = getattr(model, "graph", None)
    takes = getattr(graph, "takes_codes", None)
    return True if takes is None else bool(takes(i))


def _check_inputs(model: Any, x: Any, *, check_finite: bool, spatial: bool, allow_int: bool,
                  multi_input: bool, method: Any = None) -> Any:
    """:func:`check_input` for a list, tuple or dict of input arrays."""
    k = _several_inputs(model)
    names = list(getattr(model, "input_names", None) or [])
    if k == 1 and not isinstance(model, base.FunctionModel):
        items = list(x.values()) if isinstance(x, dict) else list(x)
        shapes = [tuple(np.shape(a)) for a in items]
        fix = ("pass the array itself" if len(items) == 1 else
               "a list of examples is one batch only as an array: stack them, np.stack(x) "
               "(examples of different sizes, as a model of free input size takes: one call "
               "per size)")
        raise TypeError(f"this model takes one input array x of shape (N, ...), got a "
                        f"{type(x).__name__} of {len(items)} arrays of shapes "
                        f"{', '.join(map(str, shapes[:4]))}{', ...' if len(shapes) > 4 else ''}"
                        f"; {fix}")
    if not multi_input:
        raise one_input_error(method, given_inputs(model, x))
    if isinstance(x, dict):
        if names and set(x) != set(names):
            raise ValueError(f"expected a dict with the model's input names {names} as keys, "
                             f"got keys {sorted(map(str, x))}")
        order = names or sorted(x)
        items = [(n, x[n]) for n in order]
    else:
        if k > 1 and len(x) != k:
            raise ValueError(f"this model has {k} inputs ({names}); expected a list of {k} "
                             f"arrays in that order (or a dict keyed by those names), got "
                             f"{len(x)}")
        items = [(names[i] if i < len(names) else str(i), a) for i, a in enumerate(x)]
    shapes = list(getattr(model, "input_shapes", None) or [None] * len(items))
    dtypes = list(getattr(getattr(model, "graph", None), "input_dtypes", None)
                  or [None] * len(items))
    out = []
    for i, ((name, a), shape, dt) in enumerate(zip(items, shapes, dtypes)):
        ids_dtype = str(dt) if dt is not None and "int" in str(dt) else None
        out.append(_check_array(model, a, shape, ids_dtype, check_finite=check_finite,
                                spatial=False, allow_int=allow_int and _takes_codes(model, i),
                                what=f"input {name!r}", check_ids=False, index=i,
                                bool_input=str(dt) == "bool", gradient=not allow_int))
    if spatial and not any(cam_rank(a) in (3, 4, 5) for a in out):  # (token ids (N, L): 3)
        raise ValueError(
            "this method needs an input with 1 to 3 spatial axes (signals (N, L, C), images "
            "(N, H, W, C), volumes (N, D, H, W, C)) or of integer token ids (N, L), whose "
            "token axis is the spatial one; got inputs of shapes "
            + ", ".join(f"{tuple(a.shape)} {a.dtype}" for a in out)
            + ". Token ids stored as floats: pass them as integers (ids.astype(np.int32)), "
            "with layer= a layer of their token axis where the default is none (a Conv1D "
            "after the Embedding: jaxsal.spatial_layers(model)). Features (N, D) alone have "
            "no axis to map: explain them with jaxsal.saliency, jaxsal.integrated_gradients "
            "or jaxsal.occlusion")
    sizes = {int(a.shape[0]) for a in out}
    if len(sizes) > 1:
        raise ValueError("expected every input with the same batch size N, got "
                         + ", ".join(f"{n!r}: {int(a.shape[0])}" for (n, _), a in zip(items, out)))
    check_ids = getattr(model, "check_token_ids", None)
    if check_ids is not None:
        check_ids(out)  # ids outside an Embedding's vocabulary: NaN rows, refused here
    if isinstance(x, dict):
        return {n: a for (n, _), a in zip(items, out)}
    return type(x)(out)


def _readers(model: Any, i: int) -> list[str]:
    """The names of the layers that read input ``i`` of a
    :class:`model_import.KerasModel` directly (``[]`` for a plain function)."""
    graph = getattr(model, "graph", None)
    consumers = getattr(graph, "_consumers", None)
    if consumers is None or i >= len(getattr(graph, "inputs", ())):
        return []
    r = graph.inputs[i]
    return sorted({c.layer for c in consumers().get((r.layer, r.node), ())})


#: Layers whose output has no gradient with respect to their input: embeddings (a lookup of
#: ids cast to integers) and comparisons (booleans, e.g. a recorded mask).
_NO_GRADIENT_READERS = frozenset({"Embedding", "ReversibleEmbedding", "ops.NotEqual",
                                  "ops.Equal", "ops.Greater", "ops.GreaterEqual", "ops.Less",
                                  "ops.LessEqual"})


def _deep_readers(graph: Any, i: int, prefix: str = "") -> dict[str, str] | None:
    """``{path: Keras class}`` of the layers that read input ``i`` of ``graph`` (a
    :class:`model_import.KerasModel`'s), looking into the nested models that read it at the
    inputs it feeds (``"encoder/embedding"``, also in an encoder of ``[tokens, features]``)
    and through the layers that only move its values (``ops.split(ids, 2)[1]``, a reshape:
    their readers read it); ``None`` where that is not known (a plain function, a nested
    model given the input otherwise, e.g. as a mask). An input that is itself an output of
    ``graph`` is read as it is, by its ``InputLayer`` (not a reader without a gradient)."""
    if getattr(graph, "_consumers", None) is None or i >= len(getattr(graph, "inputs", ())):
        return None
    return _readers_from(graph, (graph.inputs[i].layer, graph.inputs[i].node), prefix)


def _readers_from(graph: Any, start: tuple[str, int],
                  prefix: str = "") -> dict[str, str] | None:
    """``{path: Keras class}`` of the layers that read the values of tensor ``start``
    (``(layer, node)`` of ``graph``), as :func:`_deep_readers` finds them for an input;
    ``None`` where that is not known."""
    consumers = getattr(graph, "_consumers", None)
    passes = getattr(graph, "passes_values", None)
    if consumers is None:
        return None
    found: dict[str, str] = {}
    outputs = {(r.layer, r.node) for r in getattr(graph, "outputs", ())}
    if start in outputs:  # (the model, or a nested model's caller, reads the values themselves)
        found[prefix + start[0]] = "InputLayer"
    # a nested model is looked into once per tensor that reaches it (the input itself and a
    # reshape of it feed different inputs of an encoder of [tokens, features]); another
    # layer once
    todo, seen = [start], set()
    while todo:
        key = todo.pop()
        for call in consumers().get(key, ()):
            spec = graph.layers.get(call.layer)
            if spec is None:
                return None
            nested = getattr(spec.impl, "subgraph", None) is not None
            visit = (call.layer, call.index, key if nested else None)
            if visit in seen:
                continue
            seen.add(visit)
            if not nested:
                if passes is not None and passes(call) and (call.layer,
                                                            call.index) not in outputs:
                    todo.append((call.layer, call.index))  # (an output: read as it is)
                else:
                    found[prefix + call.layer] = spec.class_name
                continue
            given = {a for a in graph.call_refs(call) if (a.layer, a.node) == key}
            for r in given:
                fed = graph.fed_inputs(call, r)
                if fed is None:
                    return None
                for j in fed:
                    inner = _deep_readers(spec.impl.subgraph, j, f"{prefix}{call.layer}/")
                    if inner is None:
                        return None
                    found.update(inner)
    return found


def _float_ids_reader(model: Any, i: int) -> str | None:
    """The ``Embedding`` that reads input ``i`` where the model declares that input float
    (``keras.Input((L,))``, as many tutorials write it) and only embeddings read it (and
    comparisons, such as the ``not_equal`` a Keras 3 file records for a mask): Keras casts the
    floats to token ids, so their gradient is zero, not an attribution. ``None`` otherwise (an
    integer input, a plain function, or another reader)."""
    dtypes = getattr(getattr(model, "graph", None), "input_dtypes", None)
    if not dtypes or i >= len(dtypes) or "int" in str(dtypes[i]):
        return None
    # (nested encoders are looked into: keras.Sequential([Embedding, ...]), a model of
    # [tokens, features])
    classes = _deep_readers(getattr(model, "graph", None), i) or {}
    embeddings = [n for n, c in classes.items() if c in ("Embedding", "ReversibleEmbedding")]
    if not embeddings or any(c not in _NO_GRADIENT_READERS for c in classes.values()):
        return None
    return embeddings[0]


def _integer_images(model: Any, i: int, dtype: str, shape: tuple, what: str) -> TypeError:
    """The error for raw integer images (or other codes with a channel axis) given to a
    method that needs their gradient or fractions of them (masks, noise)."""
    readers = _readers(model, i)
    at = f"layer={readers[0]!r}" if readers else "layer=<the layer that scales them>"
    return TypeError(
        f"{what}: this model takes raw integer images ({dtype}) or other integer codes, shape "
        f"{shape}, which have no gradient and no fractions (masks, noise); this method needs "
        f"one of them. Attribute at the layer that reads them, {at} (its output is the image "
        "in floats; saliency, gradient_x_input, smoothgrad, integrated_gradients, "
        "gradient_shap, deeplift, deeplift_shap and lrp take layer=), or use a method that "
        "takes the integers as they are: the gradient CAMs, eigencam, ablationcam, occlusion, "
        "shapley_values, shapley_value_sampling, kernel_shap, lime, feature_permutation, "
        "deletion and insertion")


def _check_array(model: Any, x: Any, shape: Any, ids_dtype: str | None, *, check_finite: bool,
                 spatial: bool, allow_int: bool, what: str, check_ids: bool = True,
                 index: int = 0, bool_input: bool = False, gradient: bool = False) -> Array:
    """One input array: dtype, shape against ``shape`` (without the batch axis), a non-empty
    batch, finite values. ``bool_input``: the model's ``InputLayer`` for it is bool, which
    Keras (and the importer) casts it to, so it has no gradient: refused where the method
    needs one (``gradient``), given as float 0/1 elsewhere. An array sharded over
    ``Explicit`` mesh axes is refused (:func:`jaxsal._src.base.refuse_explicit`)."""
    base.refuse_explicit(x, what)
    if not isinstance(x, jax.Array):
        try:
            x = np.asarray(x)
        except Exception as e:  # noqa: BLE001  (ragged lists and other junk)
            raise TypeError(f"expected {what} as an array (N, H, W, C), got "
                            f"{type(x).__name__}: {e}")
        x = base.native(x)  # a big-endian .npy (FITS data): JAX takes native order only
    dtype = x.dtype
    if bool_input and gradient:
        raise TypeError(
            f"{what}: this model's InputLayer for it is bool (a mask or flags), which the "
            f"model casts it to as Keras does: it has no gradient (its map would be 0) and no "
            f"fractions (the path points and noise some methods scale inputs by). Use a "
            f"method that takes it as it is (occlusion, the gradient CAMs, eigencam, "
            f"ablationcam, or this method at a layer, layer=...), or explain the other inputs "
            f"with this one fixed: " + WRAP_ONE_INPUT)
    if bool_input and dtype == np.bool_:
        x, dtype = x.astype(np.float32), np.dtype(np.float32)  # (0/1, cast back to bool)
    if ids_dtype is not None and not allow_int and np.ndim(x) >= 3:
        raise _integer_images(model, index, ids_dtype, tuple(np.shape(x)), what)
    if ids_dtype is not None and not allow_int:  # the ids' gradient would be silently zero
        raise _token_error(model, index, what,
                           f"{what}: this model takes integer inputs ({ids_dtype}: token ids or "
                           f"other codes), which have no gradient and no fractions (the masks "
                           f"and noise some methods scale inputs by). ")
    if ids_dtype is not None and not jnp.issubdtype(dtype, jnp.integer) and np.ndim(x) >= 3:
        raise TypeError(f"{what}: this model takes raw integer images ({ids_dtype}) and scales "
                        f"them itself, got dtype {dtype}; pass the raw pixel values as "
                        f"integers (not preprocessed floats), e.g. x.astype(np.{ids_dtype})")
    if ids_dtype is not None and not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{what}: this model takes integer inputs ({ids_dtype}: token ids or "
                        f"other codes), got dtype {dtype}; pass the ids as integers, e.g. "
                        f"x.astype(np.int32)")
    embedding = None if ids_dtype is not None else _float_ids_reader(model, index)
    if embedding is not None and not allow_int:  # the gradient through the ids' cast: zero
        raise _token_error(model, index, what,
                           f"{what}: this model's input is declared float but read only by "
                           f"Embedding {embedding!r}, which casts it to token ids: their "
                           f"gradient is zero (every map would be 0) and they have no fractions "
                           f"(the masks and noise some methods scale inputs by). ")
    if embedding is not None and np.ndim(x) == 2:
        # token ids of a float-declared input: integers from here on, as for an int32 input
        # (token CAMs, whole-number fills, the vocabulary check), the values Keras looks up
        if jnp.issubdtype(dtype, jnp.floating):
            raw = None if isinstance(x, jax.core.Tracer) else np.asarray(x)
            if raw is not None and not np.array_equal(raw, np.round(raw)):
                bad = float(raw[raw != np.round(raw)].flat[0])
                raise ValueError(f"{what}: expected whole-number token ids (this model's "
                                 f"input is read by Embedding {embedding!r}), got {bad!r}; "
                                 f"Keras would truncate it to another id, and mask_zero would "
                                 f"still see it as a token. Pass ids, e.g. x.astype(np.int32)")
            x, dtype = x.astype(np.int32), np.dtype(np.int32)
        if jnp.issubdtype(dtype, jnp.integer):
            ids_dtype = str(dtype)
    if jnp.issubdtype(dtype, jnp.integer) and not allow_int:
        reader = _reader_class(model, index)
        if reader is not None and "Embedding" not in reader:  # pixels or features, not ids
            fix = ("convert them, x.astype(np.float32): the model scales them itself."
                   if reader in ("Rescaling", "Normalization") else
                   "convert and preprocess them first, e.g. x.astype(np.float32) / 255 (as "
                   "the model was trained).")
            raise TypeError(f"{what}: expected a floating-point input, got integer dtype "
                            f"{dtype}; this model reads its input with a {reader} layer, so "
                            f"these are values such as pixels: {fix}")
        raise _token_error(model, index, what,
                           f"{what}: expected a floating-point input, got integer dtype {dtype}. "
                           "Images: convert and preprocess first, e.g. x.astype(np.float32) / "
                           "255. Token ids (or other integer codes) have no gradient and no "
                           "fractions (the masks and noise some methods scale inputs by): ")
    if not jnp.issubdtype(dtype, jnp.floating) and not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{what}: expected a floating-point input (the model's preprocessed "
                        f"input, e.g. float32 in [0, 1]), got dtype {dtype}. Convert and "
                        "preprocess it first, e.g. x.astype(np.float32) / 255.")
    hint = _shape_hint(tuple(x.shape), shape, model, what)
    if spatial and cam_rank(x) not in (3, 4, 5):
        ids = jnp.issubdtype(x.dtype, jnp.integer)
        raise ValueError(f"expected {what} with 1 to 3 axes besides the batch and channel axes "
                         f"(signals (N, L, C), images (N, H, W, C), volumes (N, D, H, W, C)"
                         + ("; token ids (N, L) with a CAM method" if ids else "")
                         + f"), got shape {tuple(x.shape)}.{hint}"
                         + _raw_signal_hint(model, tuple(x.shape), shape, ids))
    if isinstance(shape, tuple) and all(isinstance(d, (int, type(None))) for d in shape):
        ok = x.ndim == len(shape) + 1 and _fits(x.shape[1:], shape)
        if not ok:
            want = ", ".join("?" if d is None else str(d) for d in shape)
            raise ValueError(f"expected {what} of shape (N, {want}) for this model, got "
                             f"{tuple(x.shape)}.{hint}")
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"expected a batch of at least one input, got {what} of shape "
                         f"{tuple(x.shape)}")
    if isinstance(x, np.ndarray):  # 64-bit values beyond what JAX computes them in, NaN, inf
        x = narrow(x, what, check_finite=check_finite)
    elif check_finite and not all_finite(x):
        raise not_finite(what)
    model_check = getattr(model, "check_token_ids", None)
    if check_ids and ids_dtype is not None and model_check is not None:
        model_check(x)  # ids outside an Embedding's vocabulary: NaN rows, refused here
    if not isinstance(x, jax.Array):
        x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.floating) and x.dtype.itemsize < 4:
        # float16 / bfloat16: widened exactly; params and compute are float32, and a half
        # precision input would round gradients at the layers (Grad-CAM++'s G**3) and break
        # programs whose carries are float32 (occlusion)
        x = x.astype(jnp.float32)
    return x


X64_FIX = "enable x64, jax.config.update('jax_enable_x64', True)"  # the 64-bit errors' fix


def narrowed_dtype(dtype: np.dtype) -> np.dtype | None:
    """The 32-bit dtype JAX computes a NumPy array of ``dtype`` in without
    ``jax_enable_x64``: float32 for float64, int32 for int64, uint32 for uint64, cast without
    a word (a float64 beyond float32's range becomes inf, an int64 beyond int32's wraps
    around). ``None`` where JAX keeps ``dtype`` (every dtype under x64, and the others). The
    callers choose what to do about values beyond that range: :func:`narrow` refuses them,
    post-processing scales float maps or makes integer ones float32."""
    if dtype.itemsize != 8 or dtype.kind not in "fiu":
        return None
    # (x64 asked of JAX, as model_import's _param_dtype: canonicalize_dtype follows
    # jax.enable_x64 contexts, which jax.config did not in every version)
    if jax.dtypes.canonicalize_dtype(np.float64) == np.float64:
        return None
    return np.dtype({"f": np.float32, "i": np.int32, "u": np.uint32}[dtype.kind])


#: :func:`narrow`'s fix for integers beyond int32 whose values are maps (relevances)
MAPS_INT_FIX = "pass them as floats (maps.astype(np.float64): ranked at float32's resolution)"


def narrow(v: np.ndarray, what: str, *, check_finite: bool = True,
           holds: str = "holds", int_fix: str = "pass values in that range (ids, codes)"
           ) -> np.ndarray:
    """``v`` (a NumPy array) in the dtype JAX computes it in (:func:`narrowed_dtype`), with
    the values beyond that dtype's range, which JAX would make inf or wrap around, refused
    naming the range (``what``: the array, for the message; a float NaN or inf is refused as
    :func:`not_finite` when ``check_finite``, whose pass over the narrowed floats this is, so
    that an input costs one pass as before; without ``check_finite`` floats are not checked).
    Any shape; dtypes JAX keeps are returned as they are. ``holds``: the verb after ``what``
    ("hold" for a plural); ``int_fix``: the fix offered for integers beyond int32 besides x64
    (:data:`MAPS_INT_FIX` for maps)."""
    to = narrowed_dtype(v.dtype)
    if to is None:
        if check_finite and not all_finite(v):  # (bfloat16 too, whose kind is "V")
            raise not_finite(what)
        return v
    if to.kind == "f":
        with np.errstate(over="ignore"):
            v32 = v.astype(to)
        if check_finite and not all_finite(v32):
            if not all_finite(v):
                raise not_finite(what)
            peak = float(np.max(np.abs(v)))
            top = float(np.finfo(np.float32).max)
            raise ValueError(f"{what} {holds} values up to {peak:.3g} in magnitude, beyond "
                             f"float32's range ({top:.2g}) that JAX computes float64 in without "
                             f"jax_enable_x64 (they would become inf); rescale the input or "
                             f"{X64_FIX}")
        return v32
    info = np.iinfo(to)
    if v.size:
        lo, hi = v.min(), v.max()
        if lo < info.min or hi > info.max:
            bad = lo if lo < info.min else hi
            raise ValueError(f"{what} {holds} {bad}, beyond {to}'s range [{info.min}, "
                             f"{info.max}] that JAX computes {v.dtype} in without "
                             f"jax_enable_x64 (it would wrap around to "
                             f"{np.asarray(bad).astype(to)}); {int_fix} or {X64_FIX}")
    return v.astype(to)


def not_finite(what: str = "x") -> ValueError:
    """The error for an input with NaN or infinite values."""
    return ValueError(f"{what} contains NaN or infinite values; attribution maps of such "
                      "inputs are meaningless. Clean the input (np.nan_to_num) or pass "
                      "check_finite=False.")


def _fits(got: tuple, shape: tuple) -> bool:
    """Whether ``got`` matches ``shape`` (``None``: any size), axis by axis."""
    return len(got) == len(shape) and all(d is None or d == s for d, s in zip(shape, got))


def _shape_hint(got: tuple, shape: Any, model: Any, what: str = "x") -> str:
    """How to fix an input of shape ``got`` that a model of input ``shape`` (no batch axis)
    refuses, when the cause is plain: one example without its batch axis, or a batch without
    its channel axis."""
    if not isinstance(shape, tuple) or len(got) != len(shape) or not shape:
        return ""
    if _fits(got, shape):
        return " Add a batch axis for one example: x[None]."
    if len(shape) < 2:
        return ""
    if getattr(model, "data_format", "channels_last") == "channels_first":
        c, rest, fix = shape[0], shape[1:], "x[:, None]"
    else:
        c, rest, fix = shape[-1], shape[:-1], "x[..., None]"
    if _fits(got[1:], rest):
        return (f" {what} lacks the channel axis ({c} channel{'s' if c != 1 else ''})"
                + (f": add it with {fix}." if c == 1 else "."))
    return ""


def _raw_signal_hint(model: Any, got: tuple, shape: Any, ids: bool) -> str:
    """How to give a CAM method a raw waveform ``(N, L)`` (float) of a model that adds the
    channel axis itself (``Input((L,))``, then ``Reshape((L, 1))`` and ``Conv1D``): a
    wrapper model whose input has the channel axis, as for gray images
    (:data:`NO_CHANNEL_AXIS`). Empty for other inputs and models (several inputs, integer
    ids, a model with no signal layer ``(l, K)``)."""
    whole = getattr(model, "input_shape", None)
    if (ids or len(got) != 2 or not isinstance(shape, tuple) or len(shape) != 1
            or whole != shape or not _fits(got[1:], shape)):
        return ""
    if not any(isinstance(info.output_shape, tuple) and len(info.output_shape) == 2
               and all(isinstance(d, (int, type(None))) for d in info.output_shape)
               for info in getattr(model, "layers", ())):
        return ""
    n = got[1]
    return (f" This model reads a signal of {n} steps without a channel axis, (N, L), and "
            f"adds one itself: give it the channel axis, inp = keras.Input(({n}, 1)); "
            f"keras.Model(inp, model(keras.layers.Reshape(({n},))(inp))), save it and load "
            "that, with x[..., None] (its layers are then named 'inner_model_name/layer').")


def check_whole(value: Any, a: Any, name: str, what: str = "x") -> None:
    """For integer ``a`` (ids, codes), refuse a ``value`` (a fill, a baseline) with fractions:
    cast to ``a``'s dtype it would be truncated to another id."""
    if jnp.issubdtype(a.dtype, jnp.integer) and not isinstance(value, jax.core.Tracer):
        raw = np.asarray(value)
        if raw.dtype.kind == "f" and not np.array_equal(raw, np.round(raw)):
            raise ValueError(f"{name} must hold whole numbers for {what}, whose integer "
                             f"values ({a.dtype}) are ids or codes, got {value!r}; pass an id "
                             f"(a padding or unknown-token id, say)")
        info = np.iinfo(np.dtype(a.dtype))
        # (Python ints beyond int64, 2**70: an object array, whose min and max compare them)
        ints = raw.dtype.kind == "O" and all(isinstance(e, (int, np.integer))
                                             and not isinstance(e, bool) for e in raw.flat)
        if (raw.dtype.kind in "fiu" or ints) and raw.size and (raw.min() < info.min
                                                                or raw.max() > info.max):
            # cast to a's dtype it would wrap around (300 -> 44 in uint8) without a word
            bad = raw.min() if raw.min() < info.min else raw.max()
            raise ValueError(f"{name} must lie in {a.dtype}'s range [{info.min}, {info.max}] "
                             f"for {what}, whose values are {a.dtype} (ids, codes or raw "
                             f"pixels); got {bad!r}. Pass a value of that range")


def narrowed_maps(maps: Any, lead: int, what: str, named: str, scale_to: int | None,
              fix: str, int_fix: str = MAPS_INT_FIX, lift: bool = False) -> Any:
    """``maps`` as JAX may take them without ``jax_enable_x64`` (NumPy arrays and lists; a
    JAX array, or a ragged list, as given): float64 maps with finite values beyond float32's
    range scaled or refused (:func:`_maps_in_float32`; ``lead`` axes index the maps,
    ``what`` names the call), int64 (uint64) maps beyond int32's range refused, not wrapped
    (:func:`narrow`; ``named``: the maps, ``int_fix``: the fix offered); ``lift``: maps below
    float32's normal range scaled up too. Shared by :func:`check_maps` and
    ``rank_correlation``."""
    raw = base.native(maps)
    if isinstance(raw, (list, tuple)):  # (a list of floats is float64 to NumPy)
        try:
            raw = np.asarray(raw)
        except (TypeError, ValueError):
            pass  # (ragged: the caller's jnp.asarray refuses it)
    if isinstance(raw, np.ndarray):
        raw = _maps_in_float32(raw, lead, what, scale_to, fix, lift)
        raw = narrow(raw, named, check_finite=False, holds="hold", int_fix=int_fix)
    return raw


def at_least_float32(a: Array) -> Array:
    """``a`` (floats or bools) in float32 where its dtype is narrower (half precision,
    bfloat16, float8, bool: exact), else as it is. Not ``jnp.promote_types`` with float32,
    which JAX refuses for float8 (no implicit promotion path)."""
    return a.astype(jnp.float32) if a.dtype.itemsize < 4 else a


def _check_float_range(value: Any, a: Any, name: str, what: str = "x") -> None:
    """For floating ``a``, refuse a ``value`` (a fill, a baseline) with finite values that
    ``a``'s dtype cannot hold (``1e39``, ``10**39`` for float32): cast to it they would become
    inf and be refused as if not finite, with ``np.nan_to_num`` as the fix. NaN and inf, and
    values that round to the dtype's largest, are left to the caller's checks."""
    if not jnp.issubdtype(a.dtype, jnp.floating) or isinstance(value, jax.core.Tracer):
        return
    given = getattr(value, "dtype", None)
    if given is not None and not (np.dtype(given).kind == "f"
                                  and np.dtype(given).itemsize > np.dtype(a.dtype).itemsize):
        return  # (an array that fits: no host copy of a device array; ints fit float32)
    try:
        raw = np.asarray(value)
        if raw.dtype.kind == "O":  # Python ints beyond int64 (10**39)
            raw = raw.astype(np.float64)
    except (TypeError, ValueError, OverflowError):
        return  # (not numbers, or beyond float64: check_like's own errors)
    if raw.dtype.kind not in "fiu" or not raw.size:
        return
    dtype = np.dtype(a.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        beyond = np.isfinite(raw) & ~np.isfinite(raw.astype(dtype))
    if beyond.any():
        peak = float(np.max(np.abs(raw[beyond].astype(np.float64))))
        top = float(np.finfo(dtype).max)
        wider = ""
        if dtype.itemsize < 8:
            x64 = narrowed_dtype(np.dtype(np.float64)) is None
            wider = f"; or pass {what} as float64" + ("" if x64 else f" and {X64_FIX}")
        raise ValueError(f"{name} holds values up to {peak:.3g} in magnitude, beyond "
                         f"{dtype}'s range ({top:.2g}) of {what}, whose values are {dtype} (they "
                         f"would become inf); rescale {what} and {name} together{wider}")


_SPATIAL_NAMES = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}


def check_not_per_channel(shape: tuple, a_shape: tuple, name: str, what: str = "x", *,
                          layout: str = "the model's data_format") -> None:
    """For a channels-first input of shape ``a_shape``, ``(N, C, *spatial)``, refuse a value
    (a fill, a baseline) of shape ``shape`` that broadcasts by NumPy's rules but reads as one
    value per channel given without its trailing axes: ``(C,)`` where the last axis also has
    ``C`` elements (``(3,)`` for ``(N, 3, 8, 3)``), ``(C, 1)`` where the axis before it has.
    NumPy lines such a value up with the last axes, so it would be used per column (per row),
    silently, while its length says one per channel; the error asks for ``(C, 1, 1)`` or
    ``(1, 1, W)``. Any other shape is left to NumPy's rules (an example's own shape
    ``(C, H, W)`` is that example's, whatever the sizes). ``layout``: what says ``a`` is
    channels-first, for the message."""
    nd, r = len(a_shape), len(shape)
    if nd < 3 or not 1 <= r <= nd - 2:  # no spatial axes, or the value reaches the channels
        return
    c, axis = a_shape[1], nd - r
    if c < 2 or tuple(shape) != (c,) + (1,) * (r - 1) or a_shape[axis] != c:
        return
    letters = _SPATIAL_NAMES.get(nd - 2)
    along = letters[axis - 2] if letters else f"axis {axis}"
    per_channel = (c,) + (1,) * (nd - 2)
    per_position = (1,) * (axis - 1) + tuple(shape)
    raise ValueError(f"{name} of shape {tuple(shape)} is ambiguous for {what} of shape "
                     f"{tuple(a_shape)}, which is channels-first ({layout}): NumPy's broadcasting "
                     f"lines it up with the last axes, one value per {along} (axis {axis}, "
                     f"{c} of them), but {what} also has {c} channels. Expected one value per "
                     f"channel as {per_channel} or one per {along} as {per_position}; got "
                     f"{tuple(shape)}. Reshape it to say which, e.g. "
                     f"np.reshape({name}, {per_channel}) for one per channel")


def check_like(value: Any, a: Any, name: str, what: str = "x", *, channels_first: bool,
               result: str = "the maps") -> Array:
    """``value`` (an integrated-gradients ``baseline``, an occlusion ``fill``) as an array of
    ``a``'s dtype whose shape broadcasts to ``a``'s without changing it (a scalar, ``(C,)``,
    one example's shape or the batch's), with finite values; else a clear error (``result``:
    what a NaN would make NaN, for it). ``channels_first``: ``a``'s layout (``Prepared``'s
    ``formats``, per input), for a channels-first ``a`` a 1-D value that could be one per
    channel or one per column is refused (:func:`check_not_per_channel`). A value sharded
    over ``Explicit`` mesh axes is refused (:func:`jaxsal._src.base.refuse_explicit_tree`)."""
    base.refuse_explicit_tree(value, name)
    check_whole(value, a, name, what)
    _check_float_range(value, a, name, what)
    try:
        v = jnp.asarray(value, dtype=a.dtype)
    except OverflowError as e:  # a Python int beyond what a's dtype can hold (10**400, float)
        info = np.finfo(np.dtype(a.dtype)) if jnp.issubdtype(a.dtype, jnp.floating) else \
            np.iinfo(np.dtype(a.dtype))
        raise ValueError(f"{name} must lie in {a.dtype}'s range [{info.min}, {info.max}] for "
                         f"{what}, whose values are {a.dtype}; got a number beyond it ({e}). "
                         f"Pass a value of that range") from None
    except (TypeError, ValueError) as e:
        raise TypeError(f"expected {name} as a number or an array for {what}, got "
                        f"{type(value).__name__} ({e})") from None
    try:
        ok = np.broadcast_shapes(v.shape, a.shape) == tuple(a.shape)
    except ValueError:
        ok = False
    if not ok:
        per_channel = ""
        if a.ndim >= 3:  # one value per channel, as a's layout broadcasts it
            form = (a.shape[1],) + (1,) * (a.ndim - 2) if channels_first else (a.shape[-1],)
            layout = "channels-first" if channels_first else "channels-last"
            per_channel = f": one value per channel is {form} for {what}, which is {layout}"
        raise ValueError(f"{name} of shape {v.shape} does not broadcast to {what} of shape "
                         f"{tuple(a.shape)}; expected a scalar, {tuple(a.shape[1:])} or "
                         f"{tuple(a.shape)} (or a shape that broadcasts to it{per_channel})")
    if channels_first:
        check_not_per_channel(tuple(v.shape), tuple(a.shape), name, what)
    if not all_finite(v):
        raise ValueError(f"{name} contains NaN or infinite values; {result} would be NaN. "
                         f"Pass a finite {name} (e.g. np.nan_to_num({name}))")
    return v


def several_arrays(v: Any) -> bool:
    """Whether ``v`` is several arrays (a dict, or a non-empty list or tuple of arrays): one
    per input of a model of several inputs, or per-target maps, which ``np.asarray`` would
    stack list axis first where one array was expected."""
    return isinstance(v, dict) or (isinstance(v, (list, tuple)) and bool(v)
                                   and all(hasattr(a, "shape") for a in v))


def check_maps(maps: Any, p: "Prepared", size: tuple, what: str, *,
               scale_to: int | None = None, fix: str = "",
               keep_int: bool = False) -> tuple[Array, bool]:
    """Attribution ``maps`` given to an evaluation (deletion, infidelity...) for the call
    ``p``: ``(N, [T,] *size)`` (one value per position of the spatial shape ``size``) or
    ``(N, [T,] *x.shape[1:])`` (one per scalar of ``x``), the class axis present exactly when
    ``p``'s targets have one. Returns ``(maps (N, T, ...), whole)``, ``whole`` when the maps
    have ``x``'s own shape; the maps float32, or float64 where given float64 (under
    ``jax_enable_x64``; rounded to float32, values closer than its resolution would tie);
    integer maps as given with ``keep_int`` (an evaluation that reads their order only, which
    float32 would round: ``2**24`` and ``2**24 + 1`` tie), else float32 (float64 under x64 for
    int64).

    Float64 maps (NumPy, lists) with finite values beyond float32's range, which JAX would
    make inf without ``jax_enable_x64``: where the evaluation reads each map up to a positive
    factor (deletion's order, infidelity's ``normalize``), ``scale_to=e`` scales each such map
    (one input's, one target's) by a power of two (exact) to a largest magnitude in
    ``[2**(e-1), 2**e)`` (deletion 100, as :func:`jaxsal.normalize` scales them; 0 where the
    evaluation squares the maps' sums); ``None`` refuses them, saying so (``fix``: the
    evaluation's own way on, before x64's). Maps sharded over ``Explicit`` mesh axes are
    refused (:func:`jaxsal._src.base.refuse_explicit_tree`)."""
    base.refuse_explicit_tree(maps, "maps")
    if several_arrays(maps):
        # np.asarray would stack them list axis first, (T, N, ...): with T == N the shapes
        # pass and every input is paired with another target's map
        raise ValueError(f"{what}: expected maps as one array, got a {type(maps).__name__} of "
                         f"{len(maps)} arrays; stack per-target maps (N, ...) on the class "
                         "axis, np.stack(maps, axis=1) -> (N, T, ...), in the order of the "
                         "targets (a model of several inputs: one input's maps)")
    real = ("one relevance per position: floats, or ints; convert them, e.g. "
            "np.asarray(maps, np.float32)")
    dtype = getattr(maps, "dtype", None)
    kind = getattr(dtype, "kind", None)
    if kind == "V" and jnp.issubdtype(dtype, jnp.floating):
        kind = "f"  # bfloat16 (and ml_dtypes' other floats): NumPy's kind "V", void
    if kind in ("U", "S", "O", "V", "M", "m"):  # (strings, objects, records, dates: that
        # dtype named, not JAX's "cannot interpret" of jnp.asarray)
        raise TypeError(f"{what}: expected maps of real numbers ({real}), got dtype "
                        f"{maps.dtype}")
    raw = narrowed_maps(maps, 2 if p.spec.class_axis else 1, what, f"{what}: the maps",
                    scale_to, fix)
    try:
        a = jnp.asarray(raw)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what}: expected maps as an array, got {type(maps).__name__} "
                        f"({e})") from None
    if not (jnp.issubdtype(a.dtype, jnp.floating) or jnp.issubdtype(a.dtype, jnp.integer)):
        raise TypeError(f"{what}: expected maps of real numbers ({real}), got dtype {a.dtype}")
    if jnp.issubdtype(a.dtype, jnp.integer) and not keep_int:
        # float32, float64 under x64 for int64 (uint64): JAX promotes them with float32 to
        # float32, which reads 2**30 + 1 as 2**30 (as curves' patch sums of int maps)
        wide = a.dtype.itemsize == 8
        a = a.astype(jax.dtypes.canonicalize_dtype(jnp.float64) if wide else jnp.float32)
    elif not jnp.issubdtype(a.dtype, jnp.integer):
        a = at_least_float32(a)
    n, num, lead = p.n, p.spec.num, (p.n, p.spec.num) if p.spec.class_axis else (p.n,)
    per_x = tuple(p.x.shape[1:])
    shapes = [lead + tuple(size)] + ([lead + per_x] if per_x != tuple(size) else [])
    if tuple(a.shape) not in shapes:
        axis = (f"a class axis of T={num} (targets name {num} classes)" if p.spec.class_axis
                else "no class axis (one target per input: targets=None, an int or one "
                     "score function)")
        hint = ""
        if a.ndim >= 2 and a.shape[0] == n and tuple(a.shape[-len(size):]) != tuple(size):
            hint = (f" Maps of another resolution (a CAM with upsample=False) come to the "
                    f"input's size with jaxsal.resize(maps, {tuple(size)}).")
        raise ValueError(f"{what}: expected maps of shape "
                         f"{' or '.join(map(str, shapes))}, with {axis}, for x of shape "
                         f"{tuple(p.x.shape)}; got {tuple(a.shape)}. Pass the maps of the same "
                         f"inputs and targets.{hint}")
    if not all_finite(a):
        raise ValueError(f"{what}: the maps contain NaN or infinite values; their order would "
                         "be arbitrary. Pass finite maps (e.g. np.nan_to_num(maps))")
    whole = tuple(a.shape[len(lead):]) == per_x and per_x != tuple(size)
    return (a if p.spec.class_axis else a[:, None]), whole


def _maps_in_float32(a: np.ndarray, lead: int, what: str, scale_to: int | None,
                     fix: str, lift: bool = False) -> np.ndarray:
    """Float64 maps ``a`` (``lead`` leading axes: ``(N,)`` or ``(N, T)``) whose finite values
    exceed float32's range, which JAX computes them in without ``jax_enable_x64`` (they would
    become inf and be refused as if not finite): with ``scale_to=e`` (the evaluation reads
    each map up to a positive factor) each such map is scaled by a power of two to a largest
    magnitude in ``[2**(e-1), 2**e)`` (exact, but for values that then fall below float32's
    smallest, 2**-149, and round to it or 0), the others kept; with ``None`` they are
    refused, ``fix`` (``"...; "``) saying how on. ``lift`` (with ``scale_to``; for a reading
    of the maps' order alone, ``rank_correlation``'s): maps whose largest magnitude is below
    float32's smallest normal number, ``2**-126``, which would become subnormal or 0 (a map
    read as constant), are scaled so too. Other arrays are returned as they are."""
    to = narrowed_dtype(a.dtype)
    if to is None or to.kind != "f" or not a.size:
        return a
    top = float(np.finfo(np.float32).max)
    mag = np.where(np.isfinite(a), np.abs(a), 0.0)
    axes = tuple(range(min(lead, a.ndim), a.ndim))
    peak = np.max(mag, axis=axes, keepdims=True) if axes else mag
    out = peak > top
    if lift and scale_to is not None:
        out |= (peak > 0) & (peak < float(np.finfo(np.float32).tiny))
    if not out.any():
        return a
    peak_all = float(peak.max())
    if scale_to is None:
        raise ValueError(
            f"{what}: the maps hold finite values up to {peak_all:.3g} in magnitude, beyond "
            f"float32's range ({top:.3g}) that JAX computes {a.dtype} maps in without "
            f"jax_enable_x64 (they would become inf); {fix}or {X64_FIX}")
    _, e = np.frexp(peak)  # peak < 2**e
    scale = np.where(out, np.ldexp(1.0, scale_to - e), 1.0)
    return (a * scale).astype(a.dtype)


def map_peaks(a: Array, batch_dims: int) -> Array:
    """The largest magnitude of each map of ``a`` (the axes after its first ``batch_dims``;
    0 for a map of no values), shape ``a.shape[:batch_dims]``. Traceable."""
    return jnp.abs(a.reshape(a.shape[:batch_dims] + (-1,))).max(-1, initial=0)


def peak_exponent(a: Array, batch_dims: int) -> Array:
    """Per map of ``a`` (the axes after its first ``batch_dims``, float32 or float64): the
    ``e`` whose ``[2**(e-1), 2**e)`` holds the map's largest magnitude (0 for a map of zeros
    or of no values); shape ``a.shape[:batch_dims]``, int32. Traceable: the device-side
    counterpart of :func:`_maps_in_float32`'s scaling, for maps huge (or tiny) but within
    float32's range, whose sums (of squares) would overflow (or underflow) there."""
    peak = map_peaks(a, batch_dims)
    # the biased exponent field of its bits (cheaper to compile than jnp.frexp); a
    # subnormal peak reads as the smallest normal exponent's (its map then scaled to a
    # peak below 0.5: all the same for a sum)
    info = jnp.finfo(peak.dtype)
    itype = jnp.int32 if peak.dtype.itemsize == 4 else jnp.int64
    field = (jax.lax.bitcast_convert_type(peak, itype) >> info.nmant) & (2 * info.maxexp - 1)
    return jnp.where(peak == 0, 0, field - (info.maxexp - 2)).astype(jnp.int32)


def _pow2(k: Array, dtype: Any) -> Array:
    """``2.0**k`` in ``dtype`` (float32 or float64) built from its bits, exact; ``k`` clipped
    to the normal exponents."""
    info = jnp.finfo(dtype)
    itype = jnp.int32 if jnp.dtype(dtype).itemsize == 4 else jnp.int64
    k = jnp.clip(k, info.minexp, info.maxexp - 1).astype(itype)
    return jax.lax.bitcast_convert_type((k + (info.maxexp - 1)) << info.nmant, dtype)


def times_pow2(a: Array, k: Array) -> Array:
    """``a * 2**k`` (``k`` integers broadcast against ``a``, up to twice the dtype's exponent
    range in magnitude): exact but where the result is beyond the dtype's range (inf) or
    below its smallest normal value (rounded). Two multiplications by normal powers of two:
    one by ``2**-128`` (subnormal in float32) could be flushed to 0 by the device."""
    k = jnp.asarray(k, jnp.int32)
    half = k // 2
    return a * _pow2(half, a.dtype) * _pow2(k - half, a.dtype)


def check_fill_ids(model: Any, fill: Any, x: Any, name: str = "fill") -> None:
    """A ``fill`` (in ``x``'s structure) that puts token ids outside an input
    ``Embedding``'s vocabulary into the model (NaN rows) is refused."""
    if getattr(model, "check_token_ids", None) is not None:
        check_reference_ids(
            model, jax.tree_util.tree_map(lambda f, a: jnp.broadcast_to(f, a.shape), fill, x),
            name)


def check_reference_ids(model: Any, refs: Any, name: str = "baselines") -> None:
    """References ``refs`` (in the inputs' structure, any leading axis: baselines ``(R,
    ...)``) that put token ids outside an input ``Embedding``'s vocabulary into the model
    (NaN rows) are refused, naming the argument ``name``."""
    check_ids = getattr(model, "check_token_ids", None)
    if check_ids is None:
        return
    try:
        check_ids(refs)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None


def check_flag(value: Any, name: str) -> bool:
    """A boolean option (``upsample``, ``softmax``, ``check_finite``...) as a ``bool``:
    ``True``/``False`` (NumPy bools, and the ints 0 and 1, too); anything else, a string
    such as ``"False"`` (which Python reads as true) above all, is refused."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    raise TypeError(f"expected {name} as a bool (True or False), got {value!r} "
                    f"({type(value).__name__})")


def check_layer(model: Any, layer: str) -> str:
    """The layer name as the model resolves it, or a ``ValueError`` listing valid names."""
    if not isinstance(layer, str):
        index = (" A layer index (tf-keras-vis's penultimate_layer=-1): name the layer, "
                 "model.layer_names[i], or for a CAM its default, "
                 "jaxsal.default_cam_layer(model)." if isinstance(layer, (int, np.integer))
                 and not isinstance(layer, bool) else "")
        raise TypeError(f"expected layer= as a layer name (str), got "
                        f"{type(layer).__name__}.{index}")
    names = list(getattr(model, "layer_names", []) or [])
    resolve = getattr(model, "resolve_layer", None)
    if resolve is not None:
        return resolve(layer)  # raises ValueError listing the valid names
    if layer not in names:
        raise ValueError(f"unknown layer {layer!r}; valid layer names: "
                         f"{', '.join(names) if names else '(none)'}")
    return layer


def check_feeds_output(model: Any, layer: str, spec: TargetSpec | None = None) -> None:
    """A method that reads how the output changes with a layer (a gradient at it, an
    ablation of its channels) refuses a layer the output does not depend on (of a model with
    several outputs viewed through ``with_output``, another output's branch): its maps would
    be 0 everywhere. Models that do not list :attr:`~model_import.KerasModel.used_layers`
    are not checked, nor targets ``spec`` whose scores read a layer (:func:`jaxsal.neuron`:
    the score is that layer's unit, on any output's branch, not the output)."""
    used = getattr(model, "used_layers", None)
    if used is None or (spec is not None and spec.layers):
        return
    # a KerasModel's Keras 3 operation nodes (ops.relu(x), x * 2.0) are no layers of
    # used_layers, but a layer= may name one
    paths = getattr(model, "_used_paths", None)
    if layer in (paths() if callable(paths) else used):
        return
    names = getattr(model, "output_names", None) or []
    index = getattr(model, "output_index", None)
    which = (f"output {names[index]!r} (selected with with_output)"
             if index is not None and index < len(names) else "outputs")
    raise ValueError(f"layer {layer!r} does not feed the model's {which}: the output does not "
                     "depend on it, so its gradients are 0 and every map at it would be 0. "
                     "Pick a layer the output depends on (model.used_layers lists them; "
                     "jaxsal.default_cam_layer(model) picks the last convolution among "
                     "them), or select the output this layer feeds with "
                     "model.with_output(name)")


#: For a CAM of an image model whose input has no channel axis (gray ``(N, H, W)``, read as
#: a signal): how to give it one.
NO_CHANNEL_AXIS = (
    "Images without a channel axis, (N, H, W), are read as signals (N, L, C), with one "
    "spatial axis: give the model a channel axis, inp = keras.Input((H, W, 1)); "
    "keras.Model(inp, model(keras.layers.Reshape((H, W))(inp))), save it and load that, "
    "with x[..., None] (its layers are then named 'inner_model_name/layer')")


def check_spatial(layer: str, shape: tuple, x_ndim: int, data_format: str | None) -> None:
    """A CAM layer must have the input's spatial axes and a channel axis: ``(N, h, w, K)``
    for images (``(N, K, h, w)`` channels-first), ``(N, l, K)`` for signals..."""
    if len(shape) == x_ndim and data_format is None:
        raise ValueError(f"layer {layer!r} has output shape {tuple(shape)} (batch first), as "
                         "many axes as the input, but no known layout: which axis holds its "
                         "channels is not known (a Permute, a Reshape or an operation that "
                         "moves axes sets none). A CAM needs a layer whose layout is known: "
                         "a convolution, or a layer after one that keeps its layout (see "
                         "jaxsal.spatial_layers(model))")
    if len(shape) != x_ndim:
        gray = x_ndim == 3 and len(shape) == 4 and data_format is not None
        raise ValueError(f"layer {layer!r} has output shape {tuple(shape)} (batch first); a CAM "
                         f"needs a layer with the input's {x_ndim - 2} spatial axes and a "
                         "channel axis, e.g. the last convolution (see "
                         "jaxsal.default_cam_layer(model) and jaxsal.spatial_layers(model))"
                         + (f". {NO_CHANNEL_AXIS}" if gray else ""))


def layer_format(model: Any, layer: str) -> str | None:
    """The layout of ``layer``'s output (``"channels_last"`` for a plain function)."""
    fmt = getattr(model, "layer_data_format", None)
    return "channels_last" if fmt is None else fmt(layer)


def to_channels_last(a: Array, channels_first: bool, axis: int = 1) -> Array:
    """``a`` with its channel axis (``axis`` when ``channels_first``) moved last."""
    return jnp.moveaxis(a, axis, -1) if channels_first else a


@dataclasses.dataclass
class Prepared:
    """A validated call: the model variant, its cache key (the model's function, its params'
    shapes and the inputs' structure, per-example shapes, dtypes and layouts), params, input
    and targets.

    ``x`` is one array, or for a multi-input model the list, tuple or dict of arrays the
    caller gave (methods that accept several inputs only: ``prepare(multi_input=True)``)."""

    model: Any
    key: Any
    params: Any
    x: Any
    spec: TargetSpec
    ids: Array | None
    info: OutputInfo
    formats: tuple = (False,)  # per input (leaf order of x): channels-first?

    @property
    def channels_first(self) -> bool:
        """Whether the (first) input is channels-first, ``(N, C, ...)``."""
        return self.formats[0]

    def per_input(self, v: Any, what: str) -> Any:
        """Option value ``v`` of an option the method takes one per input (its
        ``several_input_options``), a dict keyed by the model's input names or a list in its
        input order (for a plain function given a dict: its keys' sorted order), in the
        container ``x`` came in (a dict keyed as ``x``, else a list), as
        :func:`jaxsal.explain_to_file` takes it (:func:`arrange_per_input`); any value for
        one input array."""
        if not self.multi:
            return v
        if isinstance(self.x, dict):  # (keyed in the model's order: check_input)
            keys = tuple(self.x)
            return arrange_per_input(v, dict, keys, tuple(map(str, keys)), what)
        keys = tuple(range(len(self.x)))
        names = list(getattr(self.model, "input_names", None) or [])
        names = tuple(names) if len(names) == len(keys) else tuple(map(str, keys))
        return arrange_per_input(v, list, keys, names, what)

    @property
    def n(self) -> int:
        return int(jax.tree_util.tree_leaves(self.x)[0].shape[0])

    @property
    def multi(self) -> bool:
        """Whether ``x`` is a structure of several input arrays."""
        return not isinstance(self.x, jax.Array)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The input's spatial size: ``(H, W)`` of ``(N, H, W, C)`` or ``(N, C, H, W)``;
        ``(L,)`` of token ids ``(N, L)``."""
        return input_spatial_shape(self.x, self.channels_first)

    @property
    def map_channel_axis(self) -> int:
        """The channel axis of an ``(N, T, *x.shape[1:])`` array of per-target gradients."""
        return 2 if self.channels_first else -1

    @property
    def map_channel_axes(self) -> list[int | None]:
        """Per input (leaf order of ``x``): the channel axis of its ``(N, T, *shape[1:])``
        per-target gradients, ``None`` for an input without one (``(N, D)`` features, whose
        maps keep every feature, each reduced as a channel of its own)."""
        leaves = jax.tree_util.tree_leaves(self.x)
        return [None if a.ndim < 3 else (2 if cf else -1)
                for a, cf in zip(leaves, self.formats)]


def is_channels_first(model: Any, ndim: int) -> bool:
    """Whether ``model`` takes ``ndim``-dimensional inputs channels-first, ``(N, C, ...)``:
    a :class:`model_import.KerasModel` says so by its ``data_format`` (a plain function is
    channels-last)."""
    return ndim >= 3 and getattr(model, "data_format", "channels_last") == "channels_first"


def spatial_shape(shape: tuple, channels_first: bool) -> tuple[int, ...]:
    """The spatial axes' sizes of a batched ``shape``."""
    return tuple(shape[2:]) if channels_first else tuple(shape[1:-1])


def input_rank(x: Any) -> int | None:
    """The number of axes of one input array, before it is checked (``None`` for a structure
    of arrays, several inputs, which :func:`prepare` accepts or refuses with its own
    message: a dict, or a list or tuple of arrays, whatever their shapes; NumPy would read
    arrays of one shape as one array of one more axis, and a dict as a scalar)."""
    if hasattr(x, "ndim"):
        return int(x.ndim)
    if isinstance(x, dict) or (isinstance(x, (list, tuple))
                               and any(hasattr(a, "ndim") for a in x)):
        return None
    try:
        return int(np.ndim(x))
    except ValueError:  # ragged: a list of input arrays
        return None


def _token_ids(x: Any) -> bool:
    """Whether ``x`` holds token ids ``(N, L)``: integers without a channel axis (an integer
    array of higher rank is images of codes, a raw uint8 image that the model casts)."""
    return jnp.issubdtype(x.dtype, jnp.integer) and x.ndim == 2


def cam_rank(x: Any) -> int:
    """The rank of a CAM layer's output for the input ``x``: ``x``'s own (``(N, H, W, C)``
    images), or one more for integer token ids ``(N, L)``, which an embedding gives their
    channel axis."""
    return x.ndim + 1 if _token_ids(x) else x.ndim


def input_spatial_shape(x: Any, channels_first: bool) -> tuple[int, ...]:
    """The spatial size of the input ``x`` (every axis after the batch of token ids)."""
    if _token_ids(x):
        return tuple(x.shape[1:])
    return spatial_shape(x.shape, channels_first)


def _not_class_outputs(y: Any, channels_first: bool = False) -> str:
    """For the error on class ids (or ``targets=None``) with outputs that are not
    ``(N, K)``: what the model returned and the score function that reads it (units on axis
    1 of a ``channels_first`` output map)."""
    if isinstance(y, Mapping):
        got = "a dict of outputs {" + ", ".join(
            f"{k!r}: {tuple(getattr(v, 'shape', ()))}" for k, v in y.items()) + "}"
        # the (N, classes) output: an (N, K > 1) one before an (N, 1) one (an auxiliary
        # score, whose [:, k] JAX would clamp to column 0 without a word)
        two = [k for k, v in y.items() if len(getattr(v, "shape", ())) == 2]
        first = next((k for k in two if y[k].shape[1] > 1), next(iter(two), None))
        first = first if first is not None else next(iter(y), "logits")
        fix = (f"make the function return one (N, classes) array (FunctionModel(lambda p, x: "
               f"f(p, x)[{first!r}], params)), or pass a score function: "
               f"targets=lambda outs: outs[{first!r}][:, k]")
    else:
        shape = tuple(getattr(y, "shape", ()))
        got = f"outputs of shape {shape}"
        fix = ("pass a score function, e.g. targets=lambda out: out (one value per input)"
               if len(shape) == 1 else
               "pass a score function reading one value per input, e.g. targets=lambda out: "
               f"out[{':, k' if channels_first else '..., k'}].reshape(len(out), -1)"
               ".mean(1) (unit k averaged), or make the model return (N, classes)")
    return f"got {got}: {fix}"


def _score_functions(targets: Any) -> bool:
    return callable(targets) or (isinstance(targets, (list, tuple)) and bool(targets)
                                 and all(callable(t) for t in targets))


def check_scores(model: Any, spec: TargetSpec, y: Any, caps: dict) -> None:
    """Static checks of the score functions made by :func:`jaxsal.class_score` and
    :func:`jaxsal.neuron` against the shapes they read (``y``: the model's abstract outputs,
    ``caps``: the captured layers'): an index out of range raises here, where JAX would
    clamp it and silently explain another unit."""
    for fn in spec.scores:
        if isinstance(fn, ClassScore):
            if isinstance(y, (list, tuple)):
                listing, first = base.several_outputs(model, [o.shape for o in y])
                raise ValueError(f"{fn!r} reads one output array, but this model has {len(y)} "
                                 f"outputs ({listing}). {base.pick_output_hint(model, first)}, "
                                 "or write a score function of the list of outputs: "
                                 "targets=lambda outs: outs[0][:, k]")
            fn.check_shape(tuple(y.shape))
        elif isinstance(fn, LayerScore):
            fn.check_shape(tuple(caps[fn.layer].shape))


def prepare(model: Any, x: Any, targets: Any, *, head: str | None = None,
            backprop: str | None = None, check_finite: bool = True,
            spatial: bool = False, allow_int: bool = False,
            multi_input: bool = False, method: Any = None) -> Prepared:
    """Validate everything a method needs (see the module docstring). ``multi_input``: the
    method accepts a structure of several input arrays for a multi-input model; else
    ``method``, the public method called (its ``one_input`` attribute), names itself and
    says why it does not when it is given one (:func:`one_input_error`)."""
    m = base.with_options(model, head, backprop)
    check_finite = check_flag(check_finite, "check_finite")
    xa = check_input(m, x, check_finite=check_finite, spatial=spatial,
                     allow_int=allow_int, multi_input=multi_input, method=method)
    leaves = jax.tree_util.tree_leaves(xa)
    n = int(leaves[0].shape[0])
    y, _ = base.model_shapes(m, xa)
    check_per_example(m, xa, y)
    if isinstance(y, (list, tuple)) and not _score_functions(targets):
        listing, first = base.several_outputs(m, [o.shape for o in y])
        raise ValueError(f"this model has {len(y)} outputs ({listing}); class ids and the "
                         f"predicted class need one. {base.pick_output_hint(m, first)}, or "
                         "pass a score function of the list of outputs: "
                         "targets=lambda outs: outs[0][:, k]")
    units = None
    if isinstance(y, jax.ShapeDtypeStruct) and len(y.shape) == 2:
        units = int(y.shape[1])
    kind, complement = base.output_kind(m)
    if isinstance(y, jax.ShapeDtypeStruct):
        why = _constant_output(m, y.shape, getattr(m, "output_index", None) or 0)
        if why:
            raise ValueError(why)
    info = OutputInfo(units, kind, complement,
                      not_classes="" if units is not None else _not_class_outputs(
                          y, getattr(m, "output_data_format", None) == "channels_first"))
    spec, ids = parse_targets(targets, n, info)
    if isinstance(y, (list, tuple)):
        _check_constant_outputs(m, y, spec)
    caps = {}
    if spec.layers:
        for layer in spec.layers:
            check_layer(m, layer)
        _, caps = base.model_shapes(m, xa, spec.layers)
        # a channel score reads the channel axis of the layer's own layout
        spec = dataclasses.replace(spec, scores=tuple(
            dataclasses.replace(fn, channels_first=layer_format(m, fn.layer) == "channels_first")
            if isinstance(fn, LayerScore) and not isinstance(fn.index, tuple) else fn
            for fn in spec.scores))
    check_scores(m, spec, y, caps)
    fmts = list(getattr(m, "input_data_formats", None) or [])
    positions = input_positions(m, xa)
    if positions is not None and len(fmts) == len(positions):
        # the layouts are in the model's input order, a dict's leaves in its sorted keys'
        # (a channels-first input given in a dict was read channels-last)
        fmts = [fmts[i] for i in positions]
    if len(fmts) != len(leaves):  # a plain function: one layout for every input
        fmts = [getattr(m, "data_format", "channels_last")] * len(leaves)
    formats = tuple(a.ndim >= 3 and f == "channels_first" for a, f in zip(leaves, fmts))
    # the programs built for this call close over what the input's structure, ranks and
    # layouts decide (channel axes, map sizes): key them by it, not by the model alone (one
    # FunctionModel may take (N, D) and (N, H, W, C) inputs)
    signature = (jax.tree_util.tree_structure(xa),
                 tuple((tuple(a.shape[1:]), str(a.dtype)) for a in leaves), formats)
    return Prepared(m, (base.function_key(m), signature), m.params, xa, spec,
                    None if ids is None else jnp.asarray(ids), info, formats)


#: The refusal of a one-unit output saved as a softmax over one unit: constant (1.0) (under
#: the softmax head: model_import's softmax_on_one_value).
_SAVED_SOFTMAX_ON_ONE = ("this model's saved output is a softmax over one unit: constant "
                         "(1.0) for every input, so its gradients and score changes are zero "
                         "and every map would be 0 (a binary classifier wants a sigmoid). "
                         "Explain the unit's logit, head='logits' (or its sigmoid, "
                         "head='sigmoid'): model.with_head('logits')")


def _constant_output(model: Any, shape: tuple, index: int) -> str | None:
    """Why output ``index`` of ``model``, of ``shape`` (batch first), is constant (1.0)
    under the model's head, its gradients and score changes zero (every map 0); ``None``
    where it is not. A softmax the model saved over axes of one value
    (:func:`_constant_softmax`: ``Dense(1, activation="softmax")``, a one-channel
    segmentation head ``Conv2D(1, 1, activation="softmax")``), under the saved head or the
    softmax one (which keeps it); the softmax head on another output whose last axis, which
    it normalizes, has one value (``(N, 1)``, a one-channel map ``(N, H, W, 1)``)."""
    head = getattr(model, "head", None)
    graph = getattr(model, "graph", None)
    own = graph.softmax_heads() if hasattr(graph, "softmax_heads") else []
    if index < len(own) and own[index]:
        if head in ("saved", "softmax") and _constant_softmax(model, index):
            if len(shape) == 2:
                return _SAVED_SOFTMAX_ON_ONE
            return (f"this model's saved output (shape {tuple(shape[1:])} per example) is a "
                    "softmax over an axis of one value: constant (1.0) for every input, so "
                    "its gradients and score changes are zero and every map would be 0 (a "
                    "one-channel map of probabilities wants a sigmoid). Explain its logits, "
                    "head='logits' (or their sigmoid, head='sigmoid'): "
                    "model.with_head('logits')")
        return None
    if head == "softmax" and len(shape) >= 2 and shape[-1] == 1:
        return softmax_on_one_value(shape[1:])
    return None


def _check_constant_outputs(model: Any, y: Sequence[Any], spec: TargetSpec) -> None:
    """Of a :class:`model_import.KerasModel` of several outputs ``y`` (abstract, none
    selected), refuse the outputs that are constant (1.0) under the model's head
    (:func:`_constant_output`: a one-unit output ``(N, 1)`` or a one-channel map under the
    softmax head, a softmax saved over one value) when the targets' score functions read them
    (their maps would be 0 where they do). Which outputs the scores read is found from their
    traced program (``jax.make_jaxpr`` on the abstract outputs, nothing computed), only
    where such an output exists."""
    graph = getattr(model, "graph", None)
    head = getattr(model, "head", None)
    if head not in ("saved", "softmax") or not hasattr(graph, "softmax_heads"):
        return
    why = {}
    for i, o in enumerate(y):
        reason = _constant_output(model, tuple(getattr(o, "shape", ())), i)
        if reason:
            why[i] = reason
    fns = [fn for fn in spec.scores if not isinstance(fn, LayerScore)]
    if not why or not fns:
        return
    leaves, tree = jax.tree_util.tree_flatten(list(y))

    def scores(*outs):
        ys = jax.tree_util.tree_unflatten(tree, outs)
        return [fn(ys) for fn in fns]

    try:
        closed = jax.make_jaxpr(scores)(*leaves)
    except Exception:  # noqa: BLE001 -- the method traces the scores again and says why
        return
    read = live_inputs(closed.jaxpr, [True] * len(closed.jaxpr.outvars))
    for i, r in enumerate(read):
        if r and i in why:
            names = getattr(model, "output_names", None) or [str(k) for k in range(len(y))]
            shape = ("N",) + tuple(y[i].shape[1:])
            raise ValueError(f"the targets' scores read output {names[i]!r} "
                             f"({', '.join(map(str, shape))}) of this "
                             f"model's {len(y)}: {why[i]} (or scores that read only the other "
                             "outputs)")


def live_inputs(jaxpr: Any, live_out: list[bool]) -> list[bool]:
    """Per input of ``jaxpr``, whether the outputs marked in ``live_out`` depend on it (a
    backward walk; an equation's every input counts where any of its outputs does, except
    inside the sub-program of a call, ``precision._CALLS``: a model's apply is one jit call)."""
    live = {v for v, keep in zip(jaxpr.outvars, live_out) if keep and not hasattr(v, "val")}
    for eqn in reversed(jaxpr.eqns):
        outs = [v in live for v in eqn.outvars]
        if not any(outs):
            continue
        ins = [True] * len(eqn.invars)
        if eqn.primitive.name in _CALLS:
            sub = next((v for k, v in eqn.params.items() if k in _CALL_PARAMS), None)
            sub = getattr(sub, "jaxpr", sub)
            if (sub is not None and len(sub.invars) == len(eqn.invars)
                    and len(sub.outvars) == len(eqn.outvars)):
                ins = live_inputs(sub, outs)
        live.update(v for v, keep in zip(eqn.invars, ins) if keep and not hasattr(v, "val"))
    return [v in live for v in jaxpr.invars]


def _constant_softmax(model: Any, index: int) -> bool:
    """Whether output ``index`` of a :class:`model_import.KerasModel` is a softmax the model
    saved over axes of one value (1.0 whatever the input): its head layer's output has one
    element per example (``Dense(1, activation="softmax")``), or one value along the
    softmax's axes (a fused ``softmax`` activation or an ``Activation``: the last axis, as
    Keras's; a ``Softmax`` layer or ``keras.ops.softmax``: its ``axis``; a tf.keras
    ``tf.nn.softmax``: its call's ``axis`` keyword, the last axis without it), say the
    one-channel map of ``Conv2D(1, 1, activation="softmax")``, ``(H, W, 1)``. A softmax over
    several values of which the output keeps one (``probs[:, -1]``) is not; neither is a
    softmax over axes not known here (a TensorFlow operation's axis given by position):
    those are not refused."""
    graph = getattr(model, "graph", None)
    if not hasattr(graph, "softmax_heads"):
        return False
    heads = graph.softmax_heads()
    if index >= len(heads) or not heads[index]:
        return False
    spec = graph._head_calls()[index][0]
    try:
        shape = model.layer(spec.name).output_shape
    except (KeyError, ValueError):  # a name several nested models use: not checked
        return False
    if not isinstance(shape, tuple) or not all(isinstance(d, int) for d in shape):
        return False
    if int(np.prod(shape)) == 1:
        return True
    act = _fused_activation(spec)
    if "function" in spec.config:  # (a tf.keras TFOpLambda: its axis is a call argument)
        call = graph._head_calls()[index][1]
        if call is None or len(call.args) > 1:  # (an axis given by position: not read here)
            return False
        axis = call.kwargs.get("axis")
        axis = -1 if axis is None else axis  # (TensorFlow's default: the last axis)
    elif spec.class_name in ("Softmax", "ops.Softmax"):
        axis = spec.config.get("axis", -1)
    elif act is not None and activation_name(act) == "softmax":
        axis = -1  # (keras.activations.softmax's default, which a fused activation takes)
    else:
        return False
    axes = tuple(axis) if isinstance(axis, (list, tuple)) else (axis,)
    rank = len(shape) + 1  # (the batch axis first)
    if not all(isinstance(a, int) and -rank <= a < rank for a in axes):
        return False
    axes = {a % rank for a in axes}
    return 0 not in axes and all(shape[a - 1] == 1 for a in axes)


@dataclasses.dataclass(frozen=True)
class LayerTarget:
    """The layer a gradient method attributes to (``layer=``): its resolved name, output
    shape (batch first, the model's own layout) and whether that is channels-first."""

    name: str
    shape: tuple
    channels_first: bool

    @property
    def map_channel_axis(self) -> int:
        """The channel axis of an ``(N, T, *shape[1:])`` array of per-target gradients."""
        return 2 if self.channels_first else -1


def layer_output(p: Prepared, layer: str) -> tuple[str, tuple, str | None]:
    """``(name, shape, data_format)`` of a layer's output for the prepared call: its name as
    the model resolves it (or a ``ValueError`` listing the valid ones), its shape (batch
    first, the model's own layout) and layout (:func:`layer_format`)."""
    name = check_layer(p.model, layer)
    _, caps = base.model_shapes(p.model, p.x, (name,))
    if isinstance(caps[name], (list, tuple)):
        raise ValueError(f"layer {layer!r} has {len(caps[name])} outputs (an RNN with "
                         "return_state=True, say); attribution at a layer needs one output: "
                         "pick a layer with a single output (the layer after it)")
    return name, tuple(caps[name].shape), layer_format(p.model, name)


def _ids_layer_readers(model: Any, name: str) -> list[str] | None:
    """The ``Embedding`` layers through which alone layer ``name``'s values (of a
    :class:`model_import.KerasModel`'s own graph) reach the model: where only embeddings (as
    their ids) and comparisons (a recorded mask's ``not_equal``) read them, through layers
    that only move values (a reshape, a slice), also inside nested models; their gradient
    there is zero. ``None`` otherwise, or where not known (a plain function, a layer inside
    a nested model)."""
    graph = getattr(model, "graph", None)
    if getattr(graph, "_consumers", None) is None:
        return None
    starts = [(r.layer, r.node) for r in getattr(graph, "inputs", ()) if r.layer == name]
    starts += sorted(((c.layer, c.index) for c in getattr(graph, "calls", ())
                      if c.layer == name), key=lambda k: k[1])[:1]  # (its first call: captured)
    if not starts:
        return None
    classes = _readers_from(graph, starts[0]) or {}
    embeddings = [n for n, c in classes.items() if c in ("Embedding", "ReversibleEmbedding")]
    if not embeddings or any(c not in _NO_GRADIENT_READERS for c in classes.values()):
        return None
    return embeddings


def _ids_layer_error(p: Prepared, layer: str, name: str, dtype: Any) -> TokenInputs | None:
    """:class:`TokenInputs` for ``layer=`` naming a layer that holds token ids (or other
    integer codes): its output is of an integer ``dtype``, or its values reach the model only
    as an Embedding's ids (:func:`_ids_layer_readers`: an id input declared float, a reshape
    of the ids). Their gradient is zero: every map would be 0. ``None`` for any other layer."""
    embeddings = _ids_layer_readers(p.model, name)
    integer = jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.bool_)
    if embeddings is None and not integer:
        return None
    n_inputs = len(getattr(getattr(p.model, "graph", None), "inputs", ()) or ()) or 1
    index = next((i for i in range(n_inputs) if embeddings
                  and set(embeddings) & set(_token_layers(p.model, i))),
                 next((i for i in range(n_inputs) if _token_layers(p.model, i)), 0))
    names = embeddings or _token_layers(p.model, index)
    held = (f"is read only by Embedding {embeddings[0]!r}, as token ids" if embeddings else
            f"holds integers ({dtype}: token ids or other codes)")
    return TokenInputs(f"layer={layer!r}: this layer {held}, which have no gradient (every "
                       f"map at it would be 0) and no fractions (the paths and noise some "
                       f"methods scale them by). {_at_a_layer(names)}", names, index,
                       f"layer {layer!r}")


def prepare_layer(p: Prepared, layer: str, reduce: str | None) -> LayerTarget:
    """Validate ``layer=`` of a gradient method: the layer exists, feeds the output other
    than as token ids (:func:`_ids_layer_error`), and a channel reduction has a channel
    axis to reduce (the last one, or the first for a channels-first layer: an embedding's
    ``(N, L, E)`` reduces over ``E``)."""
    name, shape, fmt = layer_output(p, layer)
    check_feeds_output(p.model, name, p.spec)
    ids = _ids_layer_error(p, layer, name, base.model_shapes(p.model, p.x, (name,))[1][name].dtype)
    if ids is not None:
        raise ids
    if reduce is not None and len(shape) < 3:  # (N, units): nothing to reduce over
        raise ValueError(f"layer {layer!r} has output shape {shape} (batch first) and no "
                         f"channel axis for reduce={reduce!r} to collapse; pass reduce=None "
                         "for one attribution per unit")
    return LayerTarget(name, shape, fmt == "channels_first")


def _fill_scores(p: Prepared, fill: Any) -> np.ndarray:
    """The scores ``(N, T)`` of ``p``'s targets (a predicted class: ``x``'s) on the input
    filled everywhere with ``fill``."""
    m, spec, info = p.model, p.spec, p.info

    def scores(params, x, fill, ids):
        sp, ids_ = resolve_predicted(m, params, x, spec, info, ids)
        y, cap = run_model(m, params, jnp.broadcast_to(fill, x.shape).astype(x.dtype),
                           sp.layers)
        return score_matrix(sp, info, y, cap, ids_)

    return np.asarray(jax.jit(scores)(p.params, p.x, fill, p.ids))


def check_fill_score(method: str, p: Prepared, fill: Any, maps: Any,
                     check_finite: bool = True) -> None:
    """Refuse maps that a non-finite reference made non-finite: where ``maps`` (of a
    method that scores the input filled with ``fill``, its reference: ``v(empty)`` of the
    coalition methods, a RISE mask that keeps nothing) are not all finite and the model's
    score on the input filled everywhere is NaN/inf (all padding of a ``mask_zero``
    attention model: a mean over no token). Costs one check of the maps; the fill is scored
    only when they are not finite. Nothing is checked under the caller's ``jax.jit`` (no
    values) or with ``check_finite=False``."""
    leaves = jax.tree_util.tree_leaves((maps, p.x, fill, p.params))
    if (not check_finite or any(isinstance(v, jax.core.Tracer) for v in leaves)
            or all(all_finite(v) for v in jax.tree_util.tree_leaves(maps))):
        return
    bad = np.flatnonzero(~np.isfinite(_fill_scores(p, fill)).all(axis=-1))
    if not bad.size:
        return
    values = np.unique(np.asarray(fill))  # one value: fill=0 (broadcast or not)
    given = f"fill={values[0]:g}" if values.size == 1 else "the fill given"
    which = f"input {int(bad[0])}" + ("" if bad.size == 1 else f" (and {bad.size - 1} more)")
    kind = "id" if jnp.issubdtype(p.x.dtype, jnp.integer) else "value"
    raise ValueError(
        f"{method}: expected a finite score of the model on its reference, x with every "
        f"feature replaced by {given} (what an absent feature becomes); the model's output "
        f"there is NaN/inf (for {which}), so every map would be NaN. An input of padding "
        f"only does that (a mask_zero embedding masks every token: attention and a mean over "
        f"no token are 0/0). Pass fill= another {kind} whose input the model scores, "
        f"e.g. a non-padding token id (an unknown-word or [MASK] token) for token ids")
