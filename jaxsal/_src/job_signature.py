"""What identifies a batch job (:func:`jaxsal.explain_to_file`): its signature.

A job's signature is a hash of a stable description of the method (a function of one's own also
by the settings it reads: its closure's numbers, strings, arrays and tuples, its defaults of
those kinds, the functions and models it closes over, and the module-level values it reads; a
callable object's or a bound method's attributes alike, and its class's that its code reads
through ``self``), the model (its class, head, output selection, backward rule (a ReLU and
rules of one's own by their code), the Keras backend it follows, architecture (with the
converters of one's own) and a hash of every weight), the inputs' count, shape and dtype (each
input's, by its name, for several; not their values, which the job checks chunk by chunk by a
hash of each finished chunk's inputs), the targets (labels per input, ``(N, T)``, by their
rows' shape and dtype, their rows hashed with each chunk's inputs: :func:`per_input_targets`),
every option (arrays by a hash of their bytes, shape and dtype, but those of one row per input,
sliced with the inputs, by their rows' shape and dtype, their rows hashed with each chunk's
inputs: ``job_inputs.per_input_arrays``; PRNG keys by their key data; functions by their code,
constants, defaults, closure values and the module-level values they read; models by
architecture and weights) and the batch size (and JAX's 64-bit mode, when it is on). Its
*family* is the same without the batch size: a run that differs only in the batch size (a
smaller one after running out of memory) is the same job. A value with no description that is
the same in another process (an arbitrary object) raises :class:`_Unstable`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import inspect
import json
import types
from typing import Any, Callable

import jax
import numpy as np

from jaxsal._src import base
from jaxsal._src.job_inputs import (_Several, _unwrap, public_function,
                                    map_several_input_options)

_MAX_DEPTH = 12


class _Unstable(Exception):
    """A value with no description that is the same in another process."""


# ---------------------------------------------------------------------- stable descriptions
def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _array_digest(a: Any) -> dict:
    if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
        a = jax.random.key_data(a)  # a typed PRNG key: its raw key data
    a = np.asarray(a)
    shape = list(a.shape)  # (its own: np.ascontiguousarray makes a 0-d array 1-d)
    a = np.ascontiguousarray(a)
    h = hashlib.blake2b(digest_size=16)
    h.update(_bytes(a))
    return {"array": h.hexdigest(), "shape": shape, "dtype": str(a.dtype)}


def _bytes(a: np.ndarray) -> Any:
    """The bytes of the C-contiguous array ``a``, what its digest hashes (those of rows
    ``i:j`` then ``j:k`` are those of rows ``i:k``)."""
    if a.dtype == object:
        raise _Unstable(f"an object array of shape {a.shape}")
    # through a uint8 view: memoryview refuses dtypes it has no code for (bfloat16)
    return memoryview(a.reshape(-1).view(np.uint8)) if a.size else b""


def _code(code: types.CodeType, depth: int) -> dict:
    return {"code": hashlib.blake2b(code.co_code, digest_size=16).hexdigest(),
            "consts": [_describe(c, depth + 1) for c in code.co_consts],
            "names": list(code.co_names)}


def _describe(v: Any, depth: int = 0) -> Any:
    """A JSON-able description of ``v`` that is the same in every process for equal values,
    or :class:`_Unstable`."""
    if depth > _MAX_DEPTH:
        raise _Unstable("a value nested too deeply")
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return {"float": float(v).hex()}
    if isinstance(v, complex):
        return {"complex": [v.real.hex(), v.imag.hex()]}
    if isinstance(v, (bytes, bytearray)):
        return {"bytes": hashlib.blake2b(bytes(v), digest_size=16).hexdigest()}
    if isinstance(v, (np.ndarray, jax.Array, np.generic)):
        return _array_digest(v)
    if isinstance(v, range):
        return {"range": [v.start, v.stop, v.step]}
    if isinstance(v, types.CodeType):
        return _code(v, depth)
    if isinstance(v, (list, tuple)):
        out = [_describe(x, depth + 1) for x in v]
        return out if type(v) in (list, tuple) else {"type": _qualname(type(v)), "items": out}
    if isinstance(v, (dict, types.MappingProxyType)):
        return {"dict": sorted([str(k), _describe(x, depth + 1)] for k, x in v.items())}
    if isinstance(v, (set, frozenset)):
        return {"set": sorted(json.dumps(_describe(x, depth + 1), sort_keys=True) for x in v)}
    if isinstance(v, type):
        return {"class": _qualname(v)}
    if isinstance(v, functools.partial):
        return {"partial": _describe(v.func, depth + 1), "args": _describe(v.args, depth + 1),
                "kw": _describe(v.keywords, depth + 1)}
    if isinstance(v, types.MethodType):
        return {"method": _describe(v.__func__, depth + 1), "self": _describe(v.__self__,
                                                                                depth + 1)}
    if public_function(v):
        # one of jaxsal's own methods as an option (smoothgrad's method=jaxsal.saliency): by
        # its name and code, as a job's method is (its closure and the module values it reads
        # are jaxsal's own: a decorator's wrapped function, a ContextVar of no stable
        # description, which refused such a job)
        return {"fn": _qualname(v), "body": _code(v.__code__, depth)}
    if isinstance(v, types.FunctionType):
        cells = [c.cell_contents if _filled(c) else None for c in (v.__closure__ or ())]
        out = {"fn": _qualname(v), "body": _code(v.__code__, depth),
               "defaults": _describe(v.__defaults__, depth + 1),
               "kwdefaults": _describe(v.__kwdefaults__, depth + 1),
               "closure": _describe(cells, depth + 1)}
        read = _global_data(v, depth)
        if read:  # (left out when empty: the signatures of jobs written before stay valid)
            out["globals"] = read
        return out
    if isinstance(v, (types.BuiltinFunctionType, np.ufunc)):
        return {"builtin": _qualname(v) if not isinstance(v, np.ufunc) else f"numpy.{v.__name__}"}
    if _is_model(v):  # a model a function closes over
        return {"model": model_fingerprint(v)}  # its weights too, not only its repr
    if dataclasses.is_dataclass(v):  # jaxsal.class_score / jaxsal.neuron and the like
        return {"type": _qualname(type(v)),
                "fields": {f.name: _describe(getattr(v, f.name), depth + 1)
                           for f in dataclasses.fields(v)}}
    wrapped = getattr(v, "__wrapped__", None)  # jax.jit(f), functools.wraps wrappers
    if wrapped is not None and wrapped is not v:
        return {"wrapper": _qualname(type(v)), "of": _describe(wrapped, depth + 1)}
    r = repr(v)
    if " at 0x" in r or " object at " in r:
        raise _Unstable(f"a {_qualname(type(v))} ({r[:80]})")
    return {"type": _qualname(type(v)), "repr": r}


def _is_model(v: Any) -> bool:
    """Whether ``v`` is a model (an object with ``params`` and an ``apply`` function: a
    :class:`jaxsal.FunctionModel`, a ``KerasModel``), described by its fingerprint."""
    return (not isinstance(v, type) and hasattr(v, "params")
            and callable(getattr(v, "apply", None)))


#: Module-level values a function reads that its job signature records (numbers, strings,
#: arrays and containers of them: a notebook's `k = 7` read by a score function).
_DATA = (bool, int, float, complex, str, bytes, np.ndarray, jax.Array, np.generic, range,
         list, tuple, dict)


def _global_data(fn: types.FunctionType, depth: int, seen: tuple = ()) -> dict:
    """``{name: description}`` of the module-level values ``fn`` reads: data values, the
    objects it calls (a model, a Flax module: described like a closure value, or
    :class:`_Unstable`) and, for the functions it calls, what those read in turn (modules
    and classes are left out, as are functions that read nothing)."""
    out = {}
    for name, value in base.global_reads(fn):
        if isinstance(value, _DATA):
            try:
                out[name] = _describe(value, depth + 1)
            except _Unstable:
                continue
        elif isinstance(value, (types.ModuleType, type)):
            continue
        elif isinstance(value, types.FunctionType):
            if value is fn or value in seen or depth >= _MAX_DEPTH:
                continue
            inner = _global_data(value, depth + 1, seen + (fn,))
            if inner:  # (left out when empty: the signatures of jobs written before stay)
                out[name] = {"reads": inner}
        elif not isinstance(value, (types.BuiltinFunctionType, np.ufunc)):
            out[name] = _describe(value, depth + 1)  # a model reassigned: another job
    return out


def _filled(cell) -> bool:
    try:
        cell.cell_contents
        return True
    except ValueError:
        return False


def _params_digest(params: Any) -> str:
    """A hash of every weight: the tree's paths, each array's shape, dtype and bytes."""
    h = hashlib.blake2b(digest_size=16)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    h.update(str(treedef).encode())
    for path, leaf in leaves:
        h.update(jax.tree_util.keystr(path).encode())
        h.update(json.dumps(_array_digest(leaf)).encode())
    return h.hexdigest()


def _user_converters(graph: Any, prefix: str = "", depth: int = 0) -> dict:
    """``{layer path: description}`` of the layers of an imported model's ``graph`` (and of
    the models nested in it) that a converter of the user's computes (``custom_layers=``,
    ``register_layer``: ``LayerSpec.user_converter``): its ``LayerImpl`` (its functions by
    their code, constants and closure values), which a layer's class and config do not
    tell; :class:`_Unstable` where it has no stable description."""
    if depth > _MAX_DEPTH:
        raise _Unstable("a model nested too deeply")
    out = {}
    for name, spec in (getattr(graph, "layers", {}) or {}).items():
        impl = getattr(spec, "impl", None)
        if getattr(spec, "user_converter", False):
            out[f"{prefix}{name}"] = _describe(impl)
        sub = getattr(impl, "subgraph", None)
        if sub is not None:
            out.update(_user_converters(sub, f"{prefix}{name}/", depth + 1))
    return out


def _graph_digest(graph: Any) -> str:
    """A hash of an imported model's architecture: its layers (class and Keras config), the
    calls that connect them, its inputs and outputs, and the converters of the user's that
    compute some of its layers (:func:`_user_converters`)."""
    def default(o):
        return _describe(o)

    layers = getattr(graph, "layers", {}) or {}
    record = {
        "name": getattr(graph, "name", None), "class": getattr(graph, "class_name", None),
        "layers": [[str(k), getattr(s, "class_name", None), getattr(s, "config", None)]
                   for k, s in layers.items()],
        "calls": [repr(c) for c in getattr(graph, "calls", ())],
        "inputs": repr(getattr(graph, "inputs", None)),
        "outputs": repr(getattr(graph, "outputs", None)),
        "input_shapes": repr(getattr(graph, "input_shapes", None)),
        "input_dtypes": repr(getattr(graph, "input_dtypes", None)),
    }
    converters = _user_converters(graph)
    if converters:  # (left out when none: the signatures of jobs before stay valid)
        record["converters"] = converters
    blob = json.dumps(record, sort_keys=True, default=default)
    if " at 0x" in blob:
        raise _Unstable("the model's architecture")
    return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()


def _runtime_rules(runtime: Any, relu_mode: Any) -> dict:
    """``{field: description}`` of the choices of an imported model's ``runtime``
    (``model_import``'s ``Runtime``) other than its defaults: a ReLU of one's own
    (``with_relu``; the one ``relu_mode`` names, ``with_backprop("guided")``, is told by that
    name) and the rules of ``with_rules``, by their code and closure values;
    :class:`_Unstable` where one has no stable description."""
    if runtime is None or not dataclasses.is_dataclass(runtime):
        return {}
    from jaxsal._src.guided import RELU_MODES, relu_for_mode

    named = relu_for_mode(relu_mode) if relu_mode in RELU_MODES[1:] else None
    out = {}
    for field in dataclasses.fields(runtime):
        value = getattr(runtime, field.name)
        if value is field.default or (field.name == "relu" and value is named):
            continue
        out[field.name] = _describe(value)
    return out


def model_fingerprint(model: Any) -> dict:
    """A description of the function ``model`` computes that is the same in every process:
    its class, head, output selection, backward rule and layout, the Keras version and the
    backend it follows (``load_keras(keras_backend=)``), its architecture (an
    imported model's layers and connections, the converters of one's own among them, its
    ReLU of one's own and its rules, ``with_relu``/``with_rules``; a
    :class:`jaxsal.FunctionModel`'s functions by their code, constants and closure values)
    and a hash of all its weights (about 1 s per GB of weights)."""
    m = base.as_model(model)
    desc: dict = {"type": _qualname(type(m))}
    for attr in ("head", "relu_mode", "output_index", "channels_last_view", "data_format",
                 "keras_version", "keras_backend", "input_shape"):
        v = getattr(m, attr, None)
        if v is not None:
            desc[attr] = _describe(v)
    graph = getattr(m, "graph", None)
    if graph is not None:
        desc["graph"] = _graph_digest(graph)
        rules = _runtime_rules(getattr(m, "runtime", None), getattr(m, "relu_mode", None))
        if rules:  # (left out when none: the signatures of jobs before stay valid)
            desc["rules"] = rules
    elif isinstance(m, base.FunctionModel):
        desc.update(fn=_describe(m.fn), features=_describe(m.features),
                    head_fn=_describe(m.head_fn), layer=m.layer_name, relu_kwarg=m.relu_kwarg)
        from jaxsal._src.guided import RELU_MODES, relu_for_mode

        named = relu_for_mode(m.relu_mode) if m.relu_mode in RELU_MODES[1:] else None
        if m.relu is not None and m.relu is not named:  # a ReLU of the user's own
            desc["relu"] = _describe(m.relu)
    else:
        desc["cache_key"] = _describe(base.model_key(m))
    desc["params"] = _params_digest(m.params)
    return desc


#: Closure values of a method function that are settings (``steps`` closed over by a
#: factory), not state (a call log, a counter object): described in its job's signature.
_SETTINGS = (bool, int, float, complex, str, bytes, np.ndarray, jax.Array, np.generic, range,
             tuple, frozenset, type(None))


def _setting(value: Any, seen: tuple) -> Any:
    """The description of a value a method of one's own closes over (or a callable object's
    attribute), or None where it is no setting but state, left out (a list, a call log
    object): numbers, strings, arrays and tuples (None where they have no stable
    description, as before); a model by its fingerprint; a function or other callable (a
    wrapped method, a score function) as a method is (:func:`_method_description`: its code
    and the settings it reads in turn). :class:`_Unstable` for a model or callable of no
    stable description. ``seen``: the functions being described, which a function that
    reads itself (a recursive one) is not described again by."""
    if isinstance(value, _SETTINGS):
        with contextlib.suppress(_Unstable):
            return _describe(value)
        return None
    if _is_model(value):
        return {"model": model_fingerprint(value)}
    if callable(value) and not isinstance(value, type):
        if dataclasses.is_dataclass(value):
            return _describe(value)  # (jaxsal.class_score(3): by its fields)
        if any(value is f for f in seen):
            return {"reads itself": _qualname(value)}
        return _method_description(value, seen)
    return None


def _method_settings(fn: types.FunctionType, seen: tuple = ()) -> dict:
    """The settings a method function of one's own reads: its closure's numbers, strings,
    arrays and tuples, the functions and models it closes over (a wrapper's method or
    model: :func:`_setting`), and the module-level values it (or a function it calls)
    reads, as a score function's (:func:`_global_data`); values with no stable description
    are left out, as the closure's lists and objects, except functions and models
    (:class:`_Unstable`)."""
    if len(seen) > _MAX_DEPTH:
        raise _Unstable("a method nested too deeply")
    seen = (*seen, fn)
    out = {}
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        if _filled(cell):
            value = _setting(cell.cell_contents, seen)
            if value is not None:
                out[f"closure {name}"] = value
    code = fn.__code__
    positional = code.co_varnames[:code.co_argcount]
    defaults = fn.__defaults__ or ()
    for name, value in [*zip(positional[len(positional) - len(defaults):], defaults),
                        *sorted((fn.__kwdefaults__ or {}).items())]:
        if isinstance(value, _SETTINGS):  # def method(model, x, targets, scale=1.0)
            with contextlib.suppress(_Unstable):
                out[f"default {name}"] = _describe(value)
    try:
        read = _global_data(fn, 0)
    except _Unstable:  # an object it reads: its data values only
        read = {}
        for name, value in base.global_reads(fn):
            if isinstance(value, _DATA):
                with contextlib.suppress(_Unstable):
                    read[name] = _describe(value)
    out.update(read)
    return out


def _named(method: Callable, options: dict) -> dict:
    """``options`` with each option that ``method`` takes as one of jaxsal's functions or
    its name (its ``named_options`` attribute: :func:`jaxsal.smoothgrad`'s ``method``) given
    as the function (``jaxsal.integrated_gradients``) replaced by its name: either spelling
    is the same job."""
    names = getattr(_unwrap(method), "named_options", ())
    return {k: v.__name__ if (k in names and public_function(v)) else v
            for k, v in options.items()}


def _method_description(method: Callable, seen: tuple = ()) -> Any:
    """A method's description in its job's signature: its name and code, and for one of
    one's own the settings it reads (:func:`_method_settings`); ``seen``: as there."""
    if len(seen) > _MAX_DEPTH:
        raise _Unstable("a method nested too deeply")
    if isinstance(method, functools.partial):
        return {"partial": _method_description(method.func, seen),
                "args": _describe(method.args),
                "kw": _describe(_named(method, method.keywords))}
    if isinstance(method, types.FunctionType):
        # its name and code; not jaxsal's own defaults (jaxsal.smoothgrad's sentinel) nor
        # its closure's lists and objects (a wrapper's call log); configuration belongs in
        # functools.partial or in options, but a function of one's own may read a setting,
        # or have one as a default (below)
        desc = {"fn": _qualname(method), "body": _code(method.__code__, 0)}
        if not (method.__module__ or "").startswith("jaxsal"):
            settings = _method_settings(method, seen)
            if settings:  # (left out when empty: the signatures of jobs before stay valid)
                desc["settings"] = settings
        return desc
    owner = method if hasattr(method, "__qualname__") else type(method)  # instances: their class
    desc = {"callable": _qualname(owner)}
    # a bound method's or a callable object's settings: its attributes (as a closure's) and
    # what its function reads
    if isinstance(method, types.MethodType):
        obj, fn = method.__self__, method.__func__
    else:
        obj, fn = (None, None) if owner is method else (method, getattr(owner, "__call__", None))
    if any(obj is o for o in seen):  # (an object's attribute that is its own method)
        return desc
    if obj is not None and not type(obj).__module__.startswith("jaxsal"):
        seen = (*seen, obj)
        settings = {}
        for name, value in sorted((getattr(obj, "__dict__", None) or {}).items()):
            value = _setting(value, seen)
            if value is not None:
                settings[f"self.{name}"] = value
        if isinstance(fn, types.FunctionType):
            settings.update(_method_settings(fn, seen))
            # the class's attributes it reads through self (class Scaled: scale = 1.0)
            instance = getattr(obj, "__dict__", None) or {}
            for name in sorted(base.reachable_names(type(obj), fn) - instance.keys()):
                value = inspect.getattr_static(type(obj), name, None)
                if isinstance(value, _SETTINGS):
                    with contextlib.suppress(_Unstable):
                        settings[f"class.{name}"] = _describe(value)
        if settings:  # (left out when empty: the signatures of jobs before stay valid)
            desc["settings"] = settings
    return desc


def _ids(targets: Any) -> Any:
    """Class ids in one form, so that one job's ids written another way (``range(3)``,
    ``[0, 1, 2]``, ``np.arange(3)``, int32 or int64) are the same job: an int64 array of
    their shape (an int and ``[3]`` differ: one map per input against one per class)."""
    if targets is None or callable(targets) or isinstance(targets, (str, bool, np.bool_)):
        return targets
    if isinstance(targets, (list, tuple)) and any(callable(t) for t in targets):
        return targets
    try:
        ids = np.asarray(targets)
    except (TypeError, ValueError):
        return targets
    return ids.astype(np.int64) if np.issubdtype(ids.dtype, np.integer) else targets


def per_input_targets(targets: Any, n: int) -> np.ndarray | None:
    """The class ids of ``targets`` given per input, an ``(N, T)`` integer array (labels),
    as an int64 array (:func:`_ids`: any integer dtype is one job), else None. A job signs
    their rows' shape and dtype and hashes their rows with each chunk's inputs, as an option
    array of one row per input: fixing one label computes its chunk alone."""
    ids = _ids(targets)
    if (isinstance(ids, np.ndarray) and ids.ndim == 2 and len(ids) == n
            and np.issubdtype(ids.dtype, np.integer)):
        return ids
    return None


#: What each part of a job's signature is (:func:`_signatures`' parts), for the error that
#: says how another job at a path differs.
PARTS = {"method": "the method", "model": "the model", "head": "the model's head",
         "n": "the inputs' count",
         "input": "the inputs' shape or dtype", "options": "the options",
         "targets": "the targets", "x64": "JAX's 64-bit mode"}


def _signature(method: Callable, model: Any, inputs: Any, options: dict, targets: Any,
               batch_size: int) -> str:
    """The job's identity (see the module docstring); raises :class:`_Unstable`."""
    return _signatures(method, model, inputs, options, targets, batch_size)[0]


def _in_input_order(method: Callable, options: dict, several: _Several | None) -> dict:
    """``options`` with each option ``method`` takes one value per input
    (:func:`~jaxsal._src.job_inputs.several_input_options`, also a key of a dict option) in
    one form: a list in the model's input order. A job passes them keyed as its inputs (a
    dict for a dict of inputs, else a list), so a list and a dict of the same inputs would
    sign them apart; the list, as a job over a list of inputs has always signed them."""
    if several is None or several.kind is not dict:
        return options

    def in_order(v: Any, label: str) -> Any:
        return ([v[k] for k in several.keys]
                if isinstance(v, dict) and set(v) == set(several.keys) else v)

    return map_several_input_options(method, options, in_order)


def _signatures(method: Callable, model: Any, inputs: Any, options: dict, targets: Any,
                batch_size: int, several: _Several | None = None,
                fingerprint: dict | None = None) -> tuple[str, str, dict[str, str]]:
    """The job's signature, its family's (the same job at any batch size) and a hash of
    each part of it but the batch size (``{part: hash}``, :data:`PARTS`: for the error that
    says how another job differs). For several inputs, each input's name, shape and dtype
    (in the model's order: a list and a dict of the same inputs are the same job, also with
    an option given per input, :func:`_in_input_order`); labels
    per input (:func:`per_input_targets`) by their rows' shape and dtype (their rows are
    hashed with each chunk's inputs). ``fingerprint``: ``model_fingerprint(model)`` where
    the caller has it (it hashes every weight)."""
    if several is None:
        n = len(inputs)
        described: Any = [list(np.shape(inputs)[1:]), str(getattr(inputs, "dtype", ""))]
    else:
        n = len(several.arrays[0])
        described = {"inputs": [[name, list(np.shape(a)[1:]), str(getattr(a, "dtype", ""))]
                                for name, a in zip(several.names, several.arrays)]}
    job = {
        "method": _method_description(method),
        "model": model_fingerprint(model) if fingerprint is None else fingerprint,
        "n": n, "input": described,
        "options": _describe(_named(method, _in_input_order(method, dict(options), several))),
        "targets": _describe(_ids(targets)),
        "b": batch_size,
    }
    labels = per_input_targets(targets, n)
    if labels is not None:
        job["targets"] = {"rows of": [list(labels.shape[1:]), str(labels.dtype)]}
    if jax.config.jax_enable_x64:  # 64-bit mode computes other maps, in other dtypes (left
        job["x64"] = True          # out otherwise: the signatures of jobs before stay valid)
    sig = _digest(job)
    job["b"] = None
    parts = {k: _digest(v) for k, v in job.items() if k not in ("b", "model")}
    model_desc = dict(job["model"])  # (its head apart: --head is a common change)
    parts["head"] = _digest(model_desc.pop("head", None))
    parts["model"] = _digest(model_desc)
    return sig, _digest(job), parts


def target_record(targets: Any, fingerprint: dict) -> dict:
    """What a job's progress file records of its targets, for ``jaxsal evaluate`` to check
    that it scores the classes the maps were made for: ``"targets"``, a hash of their
    description (class ids as ``_ids`` makes them: ``3`` and ``[3]`` differ, ``[3, 5]`` in
    any integer form is one, an ``(N, T)`` array by a hash of its values); ``"target_form"``:
    ``"predicted"`` (``None``), ``"ids"`` (an int or ids for every input), ``"per-input ids"``
    (an ``(N, T)`` array) or ``"scores"`` (score functions), which the job makes ``"any"``
    for a method whose maps are the same for every class (``class_free``: Eigen-CAM);
    ``"target_ids"``, the ids (an
    int or a list) where they are at most 64 for every input, to name them in an error; and
    for ``targets=None`` ``"predictor"``: a hash of the model (``fingerprint``,
    :func:`model_fingerprint`) with its head left out, and ``"predicted_head"``, the head
    (whether another head predicts the same classes depends on the head and the inputs: a
    sigmoid saturated at 1.0 ties classes the logits order, which ``jaxsal evaluate``
    checks on the inputs). Raises :class:`_Unstable` for targets of no stable
    description."""
    ids = _ids(targets)
    record: dict = {"targets": _digest(_describe(ids))}
    if targets is None:
        record["target_form"] = "predicted"
        fp = dict(fingerprint)
        record["predicted_head"] = fp.pop("head", None)
        record["predictor"] = _digest(fp)
    elif isinstance(ids, np.ndarray) and ids.ndim <= 1:
        record["target_form"] = "ids"
        if ids.size <= 64:
            record["target_ids"] = ids.tolist()  # (an int, or a list of them)
    elif isinstance(ids, np.ndarray) and ids.ndim == 2:
        record["target_form"] = "per-input ids"
    else:
        record["target_form"] = "scores"
    return record


def _digest(desc: Any) -> str:
    """A 32-hex-digit hash of a JSON-able description (keys sorted)."""
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:32]
