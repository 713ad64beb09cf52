"""Batch jobs that survive interruption: attribution maps streamed to a ``.npy`` on disk.

:func:`explain_to_file` runs any jaxsal method over a large input array in fixed-size chunks
(the last one padded, so one compiled program serves every chunk), writes each chunk's maps into
a memory-mapped ``.npy`` as soon as it is done, and records progress in a JSON sidecar. A job
that is stopped or fails (a NaN in chunk 7, a killed process) keeps every finished chunk; run the
same call again and it resumes where it stopped. A chunk whose inputs or maps hold NaN or inf
values (a model whose scores are not finite for some inputs) fails, naming those inputs: such
maps are never written as finished results. With ``keep_going=True`` such a chunk is left out
and the job goes on, raising :class:`IncompleteJob` after its last chunk.

For a model of several inputs, the inputs are a list or dict of arrays (each read chunk by
chunk), and a method that gives a map per input writes each input's maps to a file of its own
beside ``path`` (``maps.img.npy``, ``maps.vec.npy``; :func:`input_paths`); the job still has
one sidecar, which lists those files, and a chunk is recorded as finished only after every
file holds its rows (a job stopped between two files' writes computes the chunk again). An
option the method takes one value per input (its ``several_input_options`` attribute: an
integrated-gradients ``baseline``) is a dict keyed by the model's input names or a list in
their order, whatever container the inputs come in, passed to the job or bound in a
``functools.partial`` of the method (taken out of it as if passed to the job).

A job is identified by a signature: a hash of a stable description of the method (a function
of one's own also by the settings it reads: its closure's numbers, strings, arrays and
tuples, and the module-level values it reads; a callable object's or a bound method's
attributes alike), the model
(its class, head, output selection, backward rule, the Keras backend it follows, architecture
and a hash of every weight),
the inputs' count, shape and dtype (each input's, by its name, for several; not their
values, which are checked chunk by chunk: the sidecar keeps a hash of each finished chunk's
inputs (of every input), and a chunk whose inputs changed since,
fixed or replaced by another data set of the same shape, is computed again; fixing a bad input
and running again resumes), the targets, every option (arrays by a hash of their bytes, shape
and dtype; PRNG keys by their key data; functions by their code, constants, defaults,
closure values and the module-level values they read; models by architecture and weights)
and the batch size (and JAX's 64-bit mode, when it is on). A run that differs
only in the batch size (a smaller one after running out of memory) is the same job: it keeps
the inputs already finished and computes the chunks of the others. A run whose signature
differs otherwise starts over, and replaces that sidecar with its own (no chunk finished)
before it rewrites the ``.npy`` (a run stopped between the two never leaves an old job's
progress over another job's chunks, and the new file reads as unfinished).

While it runs, a job holds an advisory lock (``fcntl.flock``) on ``path + ".lock"``, and a job
over several inputs also on that of each file its inputs' maps may go to (``maps.img.npy.lock``:
whether its method writes them or one map to ``path``): a second process (or thread) that
starts the same job, or any job writing one of those files (as its path, or as the maps of an
input of its own), fails at once with a :class:`BlockingIOError` naming the process that holds
it. The kernel releases the lock when the process ends, however it ends; a job that ends
removes the file, one that is killed leaves it (not held: the next job takes it). Where there
is no ``fcntl`` (Windows) or the file system refuses ``flock`` (some network file systems),
jobs run unlocked, as before.

A file that another job's sidecar lists as its output (the path of a job over one input array,
the file of an input's maps of a job over several), finished or to be resumed, is never
written: a job that would write it fails with a :class:`FileExistsError` naming the file and
that sidecar, before its first chunk is computed. For several inputs that is every file the
job may write, as for its locks: its path and the file of each input's maps
(:func:`input_paths`, which follow from the path and the model's input names), whether its
method writes them or one map to ``path``. A job's own path and the files its own sidecar
lists are its own: a run of another job with the same path starts over, as above.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import hashlib
import inspect
import json
import os
import threading
import types
from typing import Any, Callable, Iterator

import jax
import numpy as np

from jaxsal._src import base
from jaxsal._src.base import Inputs, ModelLike
from jaxsal._src.finite import NonFiniteMaps, listed, non_finite_rows
from jaxsal._src.per_example import check_per_example
from jaxsal._src.targets import Targets
from jaxsal._src.validate import SEVERAL_INPUT_METHODS, WRAP_ONE_INPUT, _fits, check_flag

try:
    import fcntl
except ImportError:  # Windows: jobs run unlocked (see the module docstring)
    fcntl = None

_FORMAT = 2  # 1: signatures without the model (jaxsal before the model fingerprint)
_MAX_DEPTH = 12


class _Unstable(Exception):
    """A value with no description that is the same in another process."""


# ---------------------------------------------------------------------- stable descriptions
def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _array_digest(a: Any) -> dict:
    if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
        a = jax.random.key_data(a)  # a typed PRNG key: its raw key data
    a = np.ascontiguousarray(np.asarray(a))
    h = hashlib.blake2b(digest_size=16)
    h.update(_bytes(a))
    return {"array": h.hexdigest(), "shape": list(a.shape), "dtype": str(a.dtype)}


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
    if (not isinstance(v, type) and hasattr(v, "params")
            and callable(getattr(v, "apply", None))):  # a model a function closes over
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


def _graph_digest(graph: Any) -> str:
    """A hash of an imported model's architecture: its layers (class and Keras config), the
    calls that connect them, its inputs and outputs."""
    def default(o):
        return _describe(o)

    layers = getattr(graph, "layers", {}) or {}
    blob = json.dumps({
        "name": getattr(graph, "name", None), "class": getattr(graph, "class_name", None),
        "layers": [[str(k), getattr(s, "class_name", None), getattr(s, "config", None)]
                   for k, s in layers.items()],
        "calls": [repr(c) for c in getattr(graph, "calls", ())],
        "inputs": repr(getattr(graph, "inputs", None)),
        "outputs": repr(getattr(graph, "outputs", None)),
        "input_shapes": repr(getattr(graph, "input_shapes", None)),
        "input_dtypes": repr(getattr(graph, "input_dtypes", None)),
    }, sort_keys=True, default=default)
    if " at 0x" in blob:
        raise _Unstable("the model's architecture")
    return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()


def model_fingerprint(model: Any) -> dict:
    """A description of the function ``model`` computes that is the same in every process:
    its class, head, output selection, backward rule and layout, the Keras version and the
    backend it follows (``load_keras(keras_backend=)``), its architecture (an
    imported model's layers and connections; a :class:`jaxsal.FunctionModel`'s functions by
    their code, constants and closure values) and a hash of all its weights (about 1 s per GB
    of weights)."""
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


def _method_settings(fn: types.FunctionType) -> dict:
    """The settings a method function of one's own reads: its closure's numbers, strings,
    arrays and tuples, and the module-level values it (or a function it calls) reads, as a
    score function's (:func:`_global_data`); values with no stable description are left
    out, as the closure's lists and objects."""
    out = {}
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        if _filled(cell) and isinstance(cell.cell_contents, _SETTINGS):
            with contextlib.suppress(_Unstable):
                out[f"closure {name}"] = _describe(cell.cell_contents)
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


def _method_description(method: Callable) -> Any:
    if isinstance(method, functools.partial):
        return {"partial": _method_description(method.func), "args": _describe(method.args),
                "kw": _describe(method.keywords)}
    if isinstance(method, types.FunctionType):
        # its name and code, not its defaults (jaxsal.smoothgrad's sentinel) or its closure's
        # lists and objects (a wrapper's call log); configuration belongs in functools.partial
        # or in options, but a function of one's own may read a setting (below)
        desc = {"fn": _qualname(method), "body": _code(method.__code__, 0)}
        if not (method.__module__ or "").startswith("jaxsal"):
            settings = _method_settings(method)
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
    if obj is not None and not type(obj).__module__.startswith("jaxsal"):
        settings = {}
        for name, value in sorted((getattr(obj, "__dict__", None) or {}).items()):
            if isinstance(value, _SETTINGS):
                with contextlib.suppress(_Unstable):
                    settings[f"self.{name}"] = _describe(value)
        if isinstance(fn, types.FunctionType):
            settings.update(_method_settings(fn))
        if settings:  # (left out when empty: the signatures of jobs before stay valid)
            desc["settings"] = settings
    return desc


def _signature(method: Callable, model: Any, inputs: Any, options: dict, targets: Any,
               batch_size: int) -> str:
    """The job's identity (see the module docstring); raises :class:`_Unstable`."""
    return _signatures(method, model, inputs, options, targets, batch_size)[0]


def _signatures(method: Callable, model: Any, inputs: Any, options: dict, targets: Any,
                batch_size: int, several: _Several | None = None) -> tuple[str, str]:
    """The job's signature and its family's: the same job at any batch size. For several
    inputs, each input's name, shape and dtype (in the model's order: a list and a dict of
    the same inputs are the same job)."""
    if several is None:
        n = len(inputs)
        described: Any = [list(np.shape(inputs)[1:]), str(getattr(inputs, "dtype", ""))]
    else:
        n = len(several.arrays[0])
        described = {"inputs": [[name, list(np.shape(a)[1:]), str(getattr(a, "dtype", ""))]
                                for name, a in zip(several.names, several.arrays)]}
    job = {
        "method": _method_description(method), "model": model_fingerprint(model),
        "n": n, "input": described,
        "options": _describe(dict(options)), "targets": _describe(targets), "b": batch_size,
    }
    if jax.config.jax_enable_x64:  # 64-bit mode computes other maps, in other dtypes (left
        job["x64"] = True          # out otherwise: the signatures of jobs before stay valid)
    sig = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()[:32]
    job["b"] = None
    return sig, hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()[:32]


# ---------------------------------------------------------------------- chunks
def _score_functions(targets: Any) -> bool:
    return callable(targets) or (isinstance(targets, (list, tuple)) and bool(targets)
                                 and all(callable(t) for t in targets))


def _check_targets(targets: Any, n: int) -> None:
    if targets is None or _score_functions(targets) or isinstance(targets, str):
        return
    try:
        shape = np.shape(targets)
    except (TypeError, ValueError):  # [[1, 2], [3]]
        raise ValueError("expected targets as an int, a 1-D sequence of ints or an (N, T) int "
                         "array with T ids for every input; got a ragged sequence (rows of "
                         "different lengths)") from None
    if len(shape) == 2 and shape[0] != n:
        raise ValueError(f"2-D targets are per-input class ids (N, T) and need one row per "
                         f"input: expected {n} rows, got shape {shape}. A 1-D sequence "
                         "explains every listed class for every input.")


def _chunk_targets(targets, lo, hi, pad):
    if targets is None or isinstance(targets, (int, np.integer)) or _score_functions(targets):
        return targets
    t = np.asarray(targets)
    if t.ndim == 2:  # per-input class ids: slice with the inputs
        t = t[lo:hi]
        if pad:
            t = np.concatenate([t, np.repeat(t[-1:], pad, axis=0)])
    return t


def _per_input(v: Any, n: int, ndim: int) -> bool:
    """Whether option value ``v`` holds one row per input: an array of the inputs' rank whose
    leading axis is the inputs' (``(N, H, W, C)`` IG baselines, occlusion fills)."""
    return (isinstance(v, (np.ndarray, jax.Array)) and v.ndim == ndim and v.ndim >= 1
            and v.shape[0] == n and n > 1)


def _unwrap(method: Callable) -> Callable:
    """The function under any ``functools.partial`` layers (where its attributes are)."""
    while isinstance(method, functools.partial):
        method = method.func
    return method


# ---------------------------------------------------------------------- several inputs
def _is_structure(inputs: Any) -> bool:
    """Whether ``inputs`` is a list, tuple or dict of input arrays (a model of several
    inputs), not one array (nor nested lists of numbers, one array too)."""
    return isinstance(inputs, dict) or (isinstance(inputs, (list, tuple)) and bool(inputs)
                                        and hasattr(inputs[0], "shape"))


def model_inputs(model: Any) -> str:
    """The inputs ``model`` takes, by name and shape: ``img (N, 8, 8, 3), vec (N, 5)``."""
    names = list(getattr(model, "input_names", None) or [])
    shapes = list(getattr(model, "input_shapes", None) or [None] * len(names))

    def shape(s):
        return "(N, ...)" if s is None else "(N" + "".join(
            f", {'?' if d is None else d}" for d in s) + ")"

    return ", ".join(f"{n} {shape(s)}" for n, s in zip(names, shapes))


#: A name that may end a file's name as it is: letters, digits, ``_``, ``-``, ``.``.
_SAFE_NAME = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def _file_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """The part of each input's maps file's name that names its input: the input names, or
    their positions where one is not usable in a file name (empty, a ``/``, a leading
    ``.``) or two differ only in case (one file on macOS's and Windows's file systems)."""
    usable = all(n and set(n) <= _SAFE_NAME and not n.startswith(".") for n in names)
    if usable and len({n.lower() for n in names}) == len(names):
        return names
    return tuple(str(i) for i in range(len(names)))


def input_paths(path: str, names: Any) -> list[str]:
    """The files a job writing ``path`` puts each input's maps in, for inputs ``names`` (in
    the model's order): ``maps.npy`` -> ``maps.img.npy``, ``maps.vec.npy`` (see
    :func:`explain_to_file`)."""
    stem = path[:-len(".npy")] if path.endswith(".npy") else path
    return [f"{stem}.{name}.npy" for name in _file_names(tuple(names))]


@dataclasses.dataclass(frozen=True)
class _Several:
    """The inputs of a job over a model of several inputs, in the model's order."""

    kind: type  # list, tuple or dict: the container each chunk (and the result) comes in
    keys: tuple  # dict keys, or positions
    names: tuple[str, ...]  # the inputs' names (the model's, the dict's keys, else positions)
    arrays: tuple  # each (N, ...), as given (memory-mapped ones are read chunk by chunk)

    def pack(self, parts: list) -> Any:
        """``parts`` (one per input, in order) in the container the inputs came in."""
        return dict(zip(self.keys, parts)) if self.kind is dict else self.kind(parts)

    def arrange(self, v: Any, what: str) -> Any:
        """Option value ``v`` of an option the method takes one per input
        (:func:`several_input_options`), given as a dict keyed by the inputs' names or a
        list in their order, in the container the method gets it in beside the inputs: a
        dict keyed as the inputs for a dict of inputs, else a list. Any other value (one
        value for every input: a number, an array; a tuple, which the method reads as it
        is: occlusion's ``patch`` per spatial axis) comes back as it is. Raises for names
        other than the inputs' and for a list of another count."""
        names = ", ".join(self.names)
        if isinstance(v, dict):
            given = {str(k): k for k in v}
            unknown = [k for k in given if k not in self.names]
            missing = [n for n in self.names if n not in given]
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
                    f"model's input names ({names}) or a list in that order; got "
                    f"{'; '.join(got)}. Give every input its value under its name (or one "
                    "number for all of them)")
            values = [v[given[n]] for n in self.names]
        elif isinstance(v, list):
            if len(v) != len(self.names):
                raise ValueError(
                    f"option {what}: expected one value per input, a list of "
                    f"{len(self.names)} in the order of the model's inputs ({names}) or a "
                    f"dict keyed by those names; got a list of {len(v)}")
            values = list(v)
        else:
            return v
        return dict(zip(self.keys, values)) if self.kind is dict else values

    def by_input(self, v: Any) -> list[tuple[Any, int]] | None:
        """``[(key, input index)]`` when option value ``v`` holds one value per input: a
        list or tuple of one per input, or a dict keyed by the inputs' names; else None."""
        if isinstance(v, dict) and v and set(map(str, v)) == set(self.names):
            index = {name: i for i, name in enumerate(self.names)}
            return [(k, index[str(k)]) for k in v]
        if isinstance(v, (list, tuple)) and len(v) == len(self.arrays):
            return list(zip(range(len(v)), range(len(v))))
        return None


def _one_input_error(method: Callable, inputs: str) -> TypeError:
    """The error for a method that explains one input array given a job's ``inputs``
    (``"2 inputs (img (N, 8, 8, 3), vec (N, 5))"``)."""
    fn = _unwrap(method)
    name = getattr(fn, "__name__", "this method")
    return TypeError(
        f"{name} explains one input array ({fn.one_input}), so it cannot explain this job's "
        f"{inputs}. Use {SEVERAL_INPUT_METHODS}, or " + WRAP_ONE_INPUT)


def _several(method: Callable, model: Any, inputs: Any) -> _Several | None:
    """The inputs of a job given a list, tuple or dict of input arrays, checked (one per
    input of the model, the same count N along axis 0, each a batch), or None for one
    array (refused for a model of several inputs). Raises before any work."""
    k_model = getattr(model, "num_inputs", None)  # None: a plain function takes any
    names_model = list(getattr(model, "input_names", None) or [])
    listed = f" ({model_inputs(model)})" if names_model else ""
    if not _is_structure(inputs):
        if isinstance(k_model, int) and k_model > 1:
            raise TypeError(f"this model has {k_model} inputs{listed}; expected inputs as a "
                            f"list of {k_model} arrays in that order (or a dict keyed by "
                            f"those names), each (N, ...), got one {type(inputs).__name__}")
        return None
    if isinstance(inputs, dict) and not inputs:
        raise ValueError("inputs is an empty dict: expected one (N, ...) array per input of "
                         "the model, keyed by its input names")
    given = (f"a dict of {len(inputs)} ({', '.join(map(str, inputs))})"
             if isinstance(inputs, dict) else f"a {type(inputs).__name__} of {len(inputs)}")
    if k_model == 1:
        raise TypeError(f"this model takes one input array (N, ...), got {given} arrays; "
                        "pass the array itself")
    if getattr(_unwrap(method), "one_input", None):
        listed = (model_inputs(model) if names_model else ", ".join(map(str, inputs))
                  if isinstance(inputs, dict) else "")
        raise _one_input_error(method, f"{len(inputs)} inputs" + (f" ({listed})" if listed
                                                                    else ""))
    if isinstance(inputs, dict):
        if names_model and set(inputs) != set(names_model):
            raise ValueError(f"expected inputs as a dict keyed by the model's input names: "
                             f"{model_inputs(model)}; got keys {sorted(map(str, inputs))}")
        keys = tuple(names_model) if names_model else tuple(sorted(inputs, key=str))
        names = tuple(map(str, keys))
    else:
        if isinstance(k_model, int) and len(inputs) != k_model:
            raise ValueError(f"this model has {k_model} inputs: {model_inputs(model)}; "
                             f"expected a list of {k_model} arrays in that order (or a dict "
                             f"keyed by those names), got {len(inputs)}")
        keys = tuple(range(len(inputs)))
        names = (tuple(names_model) if len(names_model) == len(inputs)
                 else tuple(map(str, keys)))
    arrays = tuple(inputs[key] for key in keys)
    # (a plain function of one declared input_shape: a list of its examples is no batch)
    shapes = list(getattr(model, "input_shapes", None)
                  or [getattr(model, "input_shape", None)] * len(arrays))
    counts = []
    for name, a, shape in zip(names, arrays, shapes):
        got = tuple(np.shape(a))
        if not got or (isinstance(shape, tuple) and _fits(got, shape)):
            raise ValueError(f"expected input {name!r} as a batch (N, ...) with the examples "
                             f"along axis 0, got shape {got}"
                             + (" (one example: pass it [None]; for a list of the examples "
                                "of a model of one input, pass np.stack(inputs))"
                                if got else ""))
        counts.append(got[0])
    if len(set(counts)) > 1:
        raise ValueError("expected every input with the same count N along axis 0, got "
                         + ", ".join(f"{name!r}: {c}" for name, c in zip(names, counts)))
    if counts[0] == 0:
        raise ValueError("inputs are empty: expected at least one example along axis 0")
    kind = dict if isinstance(inputs, dict) else tuple if isinstance(inputs, tuple) else list
    return _Several(kind, keys, names, arrays)


def shared_options(method: Callable) -> tuple[str, ...]:
    """The options ``method`` declares as the same for every chunk, never sliced with the
    inputs (its ``shared_options`` attribute; e.g. :func:`jaxsal.gradient_shap`'s
    ``baselines``, a distribution of ``B`` reference inputs, which may have ``N`` rows)."""
    return tuple(getattr(_unwrap(method), "shared_options", ()))


def several_input_options(method: Callable) -> tuple[str, ...]:
    """The options ``method`` takes one value per input of a model of several inputs (its
    ``several_input_options`` attribute; e.g. :func:`jaxsal.integrated_gradients`'s
    ``baseline``; ``"method_options.baseline"``: the key ``baseline`` of its dict option
    ``method_options``). :func:`explain_to_file` takes each as a dict keyed by the model's
    input names or a list in their order, whatever container the inputs come in
    (:meth:`_Several.arrange`)."""
    return tuple(getattr(_unwrap(method), "several_input_options", ()))


def _bound_options(method: Callable) -> tuple[Callable, dict]:
    """``(method, bound)``: the options of :func:`several_input_options` that
    ``functools.partial`` layers of ``method`` bind, taken out of them (an outer layer's
    over an inner one's, as the partial's call gives them), and the method without them."""
    if not isinstance(method, functools.partial):
        return method, {}
    func, bound = _bound_options(method.func)
    names = {spec.partition(".")[0] for spec in several_input_options(method)}
    kept = {k: v for k, v in method.keywords.items() if k not in names}
    bound.update((k, v) for k, v in method.keywords.items() if k in names)
    if func is method.func and len(kept) == len(method.keywords):
        return method, bound
    return (functools.partial(func, *method.args, **kept) if method.args or kept
            else func), bound


def _arrange_options(method: Callable, several: _Several, options: dict) -> dict:
    """``options`` with each of :func:`several_input_options` given per input (a dict keyed
    by the input names, a list by position) in the container the method takes beside the
    inputs (:meth:`_Several.arrange`); the others as they are."""
    out = dict(options)
    for spec in several_input_options(method):
        name, _, key = spec.partition(".")
        if name not in out:
            continue
        if not key:
            out[name] = several.arrange(out[name], name)
        elif isinstance(out[name], dict) and key in out[name]:
            out[name] = {**out[name], key: several.arrange(out[name][key],
                                                           f"{name}[{key!r}]")}
    return out


def per_input_options(method: Callable, model: Any, shape: tuple,
                      options: dict) -> tuple[str, ...]:
    """The options ``method`` says hold one row per input although they do not have the
    inputs' rank (its ``per_input_options`` attribute, a function ``(model, inputs_shape,
    options) -> names``; e.g. :func:`jaxsal.shapley_values`'s ``(N, H, W)`` feature_mask for
    ``(N, H, W, C)`` inputs, which only the method can tell from a shared ``(H, W, C)``
    one): they are sliced with the inputs."""
    fn = getattr(_unwrap(method), "per_input_options", None)
    return tuple(fn(model, shape, options)) if fn is not None else ()


def job_options(method: Callable, model: Any, shape: tuple, options: dict) -> dict:
    """The options of the whole job, as ``method`` fixes them before the inputs are cut into
    chunks (its ``job_options`` attribute, a function ``(model, inputs_shape, options) ->
    options``; e.g. the Shapley methods' ``return_groups=True`` becomes the number of
    columns of all the inputs' masks)."""
    fn = getattr(_unwrap(method), "job_options", None)
    return dict(fn(model, shape, options)) if fn is not None else options


def _check_options(options: dict, n: int, ndim: int, where: str = "",
                   shared: tuple[str, ...] = (), several: _Several | None = None) -> None:
    """Refuse an array option of the inputs' rank whose leading axis is neither the inputs'
    count nor 1: it cannot be split into chunks with the inputs. For several inputs, the
    arrays of an option given per input (a list of one per input, a dict keyed by their
    names) are checked against their own input's rank."""
    for k, v in options.items():
        name = f"{where}[{k!r}]" if where else k
        if k in shared and not where:
            continue
        per = several.by_input(v) if several is not None else None
        if per is not None:
            for key, i in per:
                e, rank = v[key], len(np.shape(several.arrays[i]))
                if (isinstance(e, (np.ndarray, jax.Array)) and e.ndim == rank
                        and e.shape[0] not in (1, n)):
                    raise ValueError(
                        f"option {name}[{key!r}] (for input {several.names[i]!r}) has shape "
                        f"{tuple(e.shape)}: an array with its input's rank ({rank}) is read "
                        f"per input and is split into chunks with them, so it needs one row "
                        f"per input ({n}) or a single row (shared by all); got {e.shape[0]} "
                        "rows")
        elif isinstance(v, dict):
            _check_options(v, n, ndim, name, several=several)
        elif (several is None and isinstance(v, (np.ndarray, jax.Array)) and v.ndim == ndim
              and v.ndim >= 1 and v.shape[0] not in (1, n)):
            raise ValueError(f"option {name} has shape {tuple(v.shape)}: an array with the "
                             f"inputs' rank ({ndim}) is read per input and is split into chunks "
                             f"with them, so it needs one row per input ({n}) or a single row "
                             f"(shared by all); got {v.shape[0]} rows")


def _native(a: np.ndarray) -> np.ndarray:
    """``a`` in the machine's byte order: JAX takes no other (a big-endian ``.npy``, from a
    big-endian machine or FITS data, is read as it is stored)."""
    return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))


def _rows(v: Any, lo: int, hi: int, pad: int) -> np.ndarray:
    """Rows ``lo:hi`` of array ``v``, in the machine's byte order, padded with ``pad`` copies
    of the last."""
    v = _native(np.asarray(v)[lo:hi])
    if pad:
        v = np.concatenate([v, np.repeat(v[-1:], pad, axis=0)])
    return v


def _chunk_options(options: dict, n: int, ndim: int, lo: int, hi: int, pad: int,
                   shared: tuple[str, ...] = (), rows: tuple[str, ...] = (),
                   several: _Several | None = None) -> dict:
    out = {}
    for k, v in options.items():
        per = None if k in shared or several is None else several.by_input(v)
        if k in shared:
            pass
        elif per is not None:  # one value per input: each sliced by its own input's rank
            parts = dict(v) if isinstance(v, dict) else list(v)
            for key, i in per:
                e = v[key]
                if ((k in rows and np.ndim(e) >= 1)
                        or _per_input(e, n, len(np.shape(several.arrays[i])))):
                    parts[key] = _rows(e, lo, hi, pad)
            v = parts if isinstance(v, dict) else tuple(parts) if isinstance(v, tuple) else parts
        elif isinstance(v, dict):
            v = _chunk_options(v, n, ndim, lo, hi, pad, several=several)
        elif k in rows or (several is None and _per_input(v, n, ndim)):
            v = _rows(v, lo, hi, pad)
        out[k] = v
    return out


def _takes_offset(method: Callable) -> bool:
    try:
        return "index_offset" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


def _mapped_file(a: Any) -> str | None:
    """The file an array is memory-mapped from (``np.load(..., mmap_mode=...)``, a slice or
    an ``np.asarray`` view of one), else None."""
    while isinstance(a, np.ndarray):
        if isinstance(a, np.memmap) and getattr(a, "filename", None):
            return a.filename
        a = a.base
    return None


def _mapped_sources(inputs: Any, options: dict, several: _Several | None = None):
    """``(what, file)`` for the inputs (each of several) and every option array (also
    inside dict options and per-input lists) read memory-mapped from a file."""
    if several is None:
        found = _mapped_file(inputs)
        if found:
            yield "inputs", found
    else:
        for name, a in zip(several.names, several.arrays):
            if (found := _mapped_file(a)):
                yield f"input {name!r}", found
    stack: list = [("", options)]
    while stack:
        where, d = stack.pop()
        items = d.items() if isinstance(d, dict) else enumerate(d)
        for k, v in items:
            name = f"{where}[{k!r}]" if where else f"option {k}"
            if isinstance(v, (dict, list, tuple)):
                stack.append((name, v))
            elif (found := _mapped_file(v)):
                yield name, found


def _check_folder(path: str) -> None:
    """Refuse an output path that is a folder, names no file, or is in a folder that does
    not exist."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"path {path} is a folder; expected the path of the .npy file "
                                "to write the maps to, e.g. os.path.join(folder, 'maps.npy')")
    if os.path.basename(path) in ("", ".", ".."):  # "", "out/": open() fails on them late
        raise ValueError(f"expected path as the name of the .npy file to write the maps to, "
                         f"got {path!r}, which names no file; add the file's name (e.g. "
                         "maps.npy)")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path}: the folder {folder} does not exist; "
                                "create it first (os.makedirs / mkdir -p) or write elsewhere")


def _lock_file(path: str | os.PathLike) -> str:
    """The lock file of the job writing ``path``: beside the file ``path`` names (its
    symbolic links resolved), so that every name of one output is one lock."""
    return os.path.realpath(path) + ".lock"


#: The locks this process holds: lock file -> [file descriptor, thread, depth].
_held: dict[str, list] = {}
_held_guard = threading.Lock()


def _busy(path: str, lock: str, who: str, role: str = "") -> BlockingIOError:
    return BlockingIOError(f"another {who} is writing {path}{role} (it holds the lock "
                           f"{lock}); wait for it to end, or write to another path (--out)")


def _flock(path: str, lock: str, role: str = "") -> int | None:
    """Open ``lock`` and take its ``flock``: the descriptor, or None where the file system
    has no ``flock``. ``role``: what ``path`` is to this job, for the error when another
    job holds it."""
    while True:
        writable = True
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            writable = False
            if not (isinstance(e, PermissionError) and os.path.exists(lock)):
                raise type(e)(e.errno, f"cannot create {lock} ({e.strerror}): the job writes "
                              "its maps, their progress file and this lock in "
                              f"{os.path.dirname(lock)}; make the folder writable or write "
                              "to another path (--out)") from None
            try:  # another user's file (a killed job's): its flock needs no write access
                fd = os.open(lock, os.O_RDONLY)
            except FileNotFoundError:
                continue  # (removed meanwhile: made anew on the next try)
            except OSError as e:
                raise type(e)(e.errno, f"cannot open {lock} ({e.strerror}): the lock of the "
                              f"job writing {path}; make it readable or write to another path "
                              "(--out)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                pid = os.read(fd, 32).decode("ascii", "replace").strip()
            finally:
                os.close(fd)
            raise _busy(path, lock, f"jaxsal process (pid {pid})" if pid.isdigit() else
                        "jaxsal process", role) from None
        except OSError:  # ENOLCK, EOPNOTSUPP...: a file system without flock; unlocked
            os.close(fd)
            with contextlib.suppress(OSError):  # (no job can hold it there)
                os.remove(lock)
            return None
        # the job that held it may have removed the file (and another job made a new one)
        # between our open and our flock: then ours locks nothing; take the file now there
        try:
            current = os.stat(lock)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(fd), current):
            if writable:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                return fd
            try:  # another user's file, not held: replaced by one of ours (removed while
                os.remove(lock)  # we hold its flock, as a job that ends removes its own)
            except OSError:
                return fd  # (held through it, without our pid)
        os.close(fd)


def _unlock(lock: str, fd: int | None) -> None:
    if fd is None:
        return
    try:  # removed while still held: a job waiting on this file then sees it gone
        if os.path.samestat(os.fstat(fd), os.stat(lock)):
            os.remove(lock)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _file_lock(path: str, role: str = "") -> Iterator[None]:
    """Hold the advisory lock of the file ``path`` (``path + ".lock"``, see
    :func:`job_lock`)."""
    lock = _lock_file(path)
    with _held_guard:
        held = _held.get(lock)
        if held is not None and held[1] != threading.get_ident():
            raise _busy(path, lock, f"thread of this process (pid {os.getpid()})", role)
        if held is None:
            held = _held[lock] = [_flock(path, lock, role), threading.get_ident(), 0]
        held[2] += 1
    try:
        yield
    finally:
        with _held_guard:
            held[2] -= 1
            if not held[2]:
                del _held[lock]
                _unlock(lock, held[0])


@contextlib.contextmanager
def job_lock(path: str | os.PathLike, input_names: Any = (),
             others: dict[str, str] | None = None) -> Iterator[None]:
    """Hold the advisory lock of the job writing ``path`` (a ``.npy``): another process or
    thread that takes it meanwhile gets a :class:`BlockingIOError` naming this process. The
    same thread may take it again (the ``jaxsal`` command holds it, then
    :func:`explain_to_file` inside). Without ``fcntl`` (Windows) it holds nothing.

    With ``input_names`` (a job over several inputs), also the locks of the files their maps
    go to (:func:`input_paths`: ``maps.img.npy``...), and with ``others`` (``{file: what
    the job puts there}``: ``jaxsal evaluate``'s ``{"d.auc.npy": "the areas under its
    curves"}``) those of the files it names, each as the lock of a job writing that file: a
    job whose path is one of them, or whose inputs' maps go to one of them, cannot run at
    the same time. The locks are taken in order, each without waiting; when one is held
    elsewhere, those taken are released and nothing else is done."""
    path = os.fspath(path)
    _check_folder(path)
    if fcntl is None:
        yield
        return
    names = tuple(input_names)
    puts = [(file, f"the maps of input {name!r}")
            for name, file in zip(names, input_paths(path, names))]
    with contextlib.ExitStack() as stack:
        stack.enter_context(_file_lock(path))
        for file, what in [*puts, *(others or {}).items()]:
            stack.enter_context(_file_lock(
                os.fspath(file), f", where this job (writing {path}) puts {what}"))
        yield


def _input_roles(path: str, several: _Several | None) -> dict[str, str]:
    """``{file: what it is to the job writing path}`` of the files of the inputs' maps of a
    job over ``several`` inputs (none for one input array), for its errors."""
    if several is None:
        return {}
    return {file: f" (where path {path} puts the maps of input {name!r})"
            for name, file in zip(several.names, input_paths(path, several.names))}


def _check_path(path: str, inputs: Any, options: dict, several: _Several | None = None
                ) -> None:
    """Refuse, before any chunk is computed, an output path that cannot be written (a folder,
    a missing folder) or that is the file the inputs or an option are read from: writing the
    maps there would overwrite them while the job still reads them. For several inputs, the
    files of their maps too (:func:`input_paths`: the job writes them or ``path``, as the
    method gives a map per input or one map)."""
    _check_folder(path)
    outputs = [(path, f"path {path}")]
    if several is not None:
        for file, role in _input_roles(path, several).items():
            what = f"{file}{role}"
            if os.path.isdir(file):
                raise IsADirectoryError(f"{what} is a folder; remove it or write the maps to "
                                        "another path")
            outputs.append((file, what))
    for file, what_out in outputs:
        if not os.path.exists(file):
            continue
        for what, source in _mapped_sources(inputs, options, several):
            if os.path.exists(source) and os.path.samefile(source, file):
                raise ValueError(f"{what_out} is the file {what} is read from "
                                 "(memory-mapped); writing the maps there would overwrite it "
                                 "while the job reads it. Write the maps to another path")


def _sidecars(path: str) -> Iterator[tuple[str, bool]]:
    """``(progress file, whether it is path's own)`` of the jobs that may have written the
    ``.npy`` at ``path``: its own, then for ``maps.img.npy`` (the maps of input ``img`` of a
    job writing ``maps.npy``) that job's."""
    yield path + ".progress.json", True
    folder, base = os.path.split(path)
    if not base.endswith(".npy"):
        return
    stem = base[:-len(".npy")]
    for i, c in enumerate(stem):
        if c == "." and i:
            for job in (stem[:i] + ".npy", stem[:i]):
                yield os.path.join(folder, job + ".progress.json"), False


def _read_progress(progress_path: str, also: list | None = None
                   ) -> tuple[int, int, list | None] | None:
    """``(done, chunks, outputs)`` of a job's progress file (``outputs``: the files it
    lists, a job over several inputs), or None where there is none readable. ``also``, a
    list, gets the files :func:`record_job_file` added."""
    prog = _record(progress_path)[0]
    if prog is None:
        return None  # no sidecar (or none of this format)
    if also is not None and isinstance(prog.get("also"), list):
        also.extend(prog["also"])
    return _state(prog)


def _state(prog: Any) -> tuple[int, int, list | None] | None:
    """``(done, chunks, outputs)`` of a progress file's record, None where it is not one."""
    try:
        return len(set(prog["done"])), int(prog["chunks"]), prog.get("outputs")
    except (TypeError, KeyError, ValueError, AttributeError):
        return None


def record_job_file(path: str, file: str) -> None:
    """Add ``file`` (beside ``path``), which the job writing ``path`` wrote besides its maps
    (``jaxsal evaluate``'s areas, ``d.auc.npy``), to that job's progress file: another job
    is then refused to write it (:func:`check_not_another_jobs`) as it is ``path``. Nothing
    is done where the job left no progress file."""
    progress_path = path + ".progress.json"
    try:
        with open(progress_path) as fh:
            prog = json.load(fh)
    except (OSError, ValueError):
        return
    if not isinstance(prog, dict):
        return
    also = prog.get("also") if isinstance(prog.get("also"), list) else []
    if os.path.basename(file) in also:
        return
    prog["also"] = [*also, os.path.basename(file)]
    with contextlib.suppress(OSError):  # (a full disk: the file is written, only this
        _replace_json(progress_path, prog)  # protection is missing)


def _replace_json(path: str, record: dict) -> None:
    """Write ``record`` as the JSON file ``path`` atomically (:func:`replace_file`; the maps
    it vouches for were synced before, by :func:`_write`)."""
    replace_file(path, lambda fh: fh.write(json.dumps(record).encode()))


def replace_file(path: str, write: Callable[[Any], Any]) -> None:
    """Write the file ``path`` atomically: ``write(fh)`` fills a temporary binary file, which
    is synced to the disk (``os.fsync``) before ``os.replace`` puts it in place, and the
    folder is synced after, so neither a killed process nor a crash of the machine leaves a
    torn or empty file (a file system may otherwise write the rename before the data). On an
    ``OSError`` the temporary file is removed, ``path`` is left as it was, and the error is
    raised. A symbolic link at ``path`` stays one: the file it points to is replaced."""
    path = os.path.realpath(path)
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _sync_folder(os.path.dirname(path))  # (path is absolute: realpath)


def _sync_folder(folder: str) -> None:
    """Sync a folder's entries (a rename in it) to the disk, where the system allows
    opening a folder for that (not on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # a file system that cannot sync folders
        pass
    finally:
        os.close(fd)


def job_unfinished(path: str | os.PathLike) -> tuple[int, int, str] | None:
    """``(done, chunks, progress_path)`` when the job writing ``path`` (whose progress file
    is ``path + ".progress.json"``, whatever files it writes) has not finished, else
    None."""
    progress_path = os.fspath(path) + ".progress.json"
    state = _read_progress(progress_path)
    return (*state[:2], progress_path) if state and state[0] < state[1] else None


def _owners(path: str) -> Iterator[tuple[str, int, int]]:
    """``(progress_path, done, chunks)`` of each job whose progress file lists the ``.npy``
    at ``path`` as its output (its path, or the file of one of its inputs' maps), in the
    order of :func:`_sidecars`: its own progress file first."""
    for progress_path, own in _sidecars(path):
        also: list = []  # (files it wrote besides its maps: record_job_file)
        state = _read_progress(progress_path, also)
        if state is None:
            continue  # nothing says the file is a job's
        done, chunks, outputs = state
        if outputs is None and own:  # (a job over one input array: its file is path)
            listed = True
        else:
            listed = os.path.basename(path) in [
                *(outputs if isinstance(outputs, list) else ()), *also]
        if listed:
            yield progress_path, done, chunks


def unfinished(path: str | os.PathLike) -> tuple[int, int, str] | None:
    """``(done, chunks, progress_path)`` when the ``.npy`` at ``path`` is the output of an
    :func:`explain_to_file` job that has not finished (its sidecar lists fewer chunks than
    the job has: the rows of the others are still zeros), else None. The file of one input's
    maps (``maps.img.npy`` of a job writing ``maps.npy``) is the output of the job whose
    sidecar lists it (``maps.npy.progress.json``). A ``ValueError`` where ``path``'s own
    progress file exists but cannot be read: nothing then says whether its rows are
    finished."""
    path = os.fspath(path)
    own = path + ".progress.json"
    why = _record(own)[1]
    if why is not None:
        raise ValueError(
            f"cannot read the progress file {own} ({why}), so whether the job that wrote "
            f"{path} finished is unknown (the rows of its unfinished chunks are zeros). Run "
            "the command that wrote it again (it will say what to delete to start over); if "
            f"{path} was written otherwise, delete {own}")
    for progress_path, done, chunks in _owners(path):
        return (done, chunks, progress_path) if done < chunks else None
    return None


def _record(progress_path: str) -> tuple[dict | None, str | None]:
    """``(record, None)`` of a readable progress file, ``(None, None)`` where there is none,
    and ``(None, why)`` where it exists but is no job's record (not JSON, not a JSON object
    with the finished chunks and their count: a file torn or written by something else)."""
    try:
        with open(progress_path, "rb") as fh:
            prog = json.load(fh)
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as e:  # unreadable; not JSON, not UTF-8 text
        return None, str(e) or type(e).__name__
    if not isinstance(prog, dict):
        return None, f"expected a JSON object, got a {type(prog).__name__}"
    if _state(prog) is None:
        return None, "it lists no finished chunks and their count ('done', 'chunks')"
    return prog, None


def _other_job(file: str, progress_path: str) -> tuple[str, int, int] | None:
    """``(progress_path, done, chunks)`` of a job other than the one whose progress file
    is ``progress_path`` that lists ``file`` as its output, else None."""
    own = os.path.realpath(progress_path)
    return next((o for o in _owners(file) if os.path.realpath(o[0]) != own), None)


def check_not_another_jobs(files: list[str], progress_path: str,
                           roles: dict[str, str] | None = None) -> None:
    """Refuse, before any chunk is computed, to write a file that another job's progress file
    lists as its output (a job whose path it is, or whose inputs' maps go to it): this job
    would overwrite that job's maps, finished or to be resumed, and its progress file would
    vouch for this job's rows. A job's own files (those its progress file ``progress_path``
    lists) are its own to rewrite. ``roles``: ``{file: what it is to this job}``, said after
    the file's name (``" (where --out d.npy puts the areas under its curves)"``)."""
    roles = roles or {}
    for f in files:
        other = _other_job(f, progress_path)
        if other is None:
            continue
        sidecar, done, chunks = other
        state = "finished" if done >= chunks else f"{done} of {chunks} chunks done"
        by_path = os.path.realpath(sidecar) == os.path.realpath(f + ".progress.json")
        raise FileExistsError(
            f"{f}{roles.get(f, '')} is the output of another job ({state}, says its progress "
            f"file {sidecar}); this job would overwrite its maps. Write to another path "
            f"(--out), or, if that job's maps are no longer needed, delete "
            + (f"{f} and {sidecar}" if by_path else
               f"{sidecar} (and the files it lists)") + " first")


def job_files(path: str | os.PathLike) -> list[str]:
    """The files the job writing ``path`` keeps its maps in: those its progress file lists
    (a job over several inputs: ``maps.img.npy``, ``maps.vec.npy``), else ``[path]``."""
    path = os.fspath(path)
    state = _read_progress(path + ".progress.json")
    outputs = state[2] if state else None
    if not (isinstance(outputs, list) and outputs and all(isinstance(f, str) for f in outputs)):
        return [path]
    return [os.path.join(os.path.dirname(path), f) for f in outputs]


#: The errnos of a write that found no room: a full disk, a quota, a file too large for it.
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def write_fix(e: OSError) -> str:
    """What to do about a failed write ``e``: free space where the disk had no room, else
    (a folder made read-only...) make the folder writable."""
    return "free some space" if e.errno in _NO_ROOM else "make its folder writable"


def _allocate(path: str) -> None:
    """Reserve the disk space of the whole ``.npy`` at ``path`` (``open_memmap`` leaves it
    sparse): on a disk that cannot hold it, the job fails now with a clear error rather than
    dies of SIGBUS (a "Bus error", no message) when a later chunk writes to the memory map."""
    if not hasattr(os, "posix_fallocate"):  # (macOS, Windows: left sparse, as before)
        return
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno in _NO_ROOM:
            raise OSError(e.errno, f"cannot reserve the {size:,} bytes of {path} on its disk "
                          f"({e.strerror}): the maps of the whole job need them; free some "
                          "space or write to another disk") from None
        # EOPNOTSUPP, EINVAL...: a file system that cannot reserve space; left sparse
    finally:
        os.close(fd)


def _chunk_digest(parts: list) -> str:
    """The hash of a chunk's inputs (``parts``: its rows of each input, as read): one
    input's digest, or for several the digests of each joined by ``+``."""
    return "+".join(_array_digest(p)["array"] for p in parts)


def _finished_chunks(arrays: tuple, n: int, old_b: int, old_done: set, kept: dict | None,
                     b: int) -> dict[int, str]:
    """``{chunk: hash of its inputs}`` for the chunks of batch size ``b`` whose inputs all
    finished, unchanged, in a job's chunks ``old_done`` of batch size ``old_b`` (unchanged:
    their hash is the one ``kept`` records by chunk; a sidecar without hashes, ``kept=None``,
    is trusted). ``arrays``: the job's inputs (one, or each of several: a chunk's hash is
    theirs joined, :func:`_chunk_digest`). Each finished input is read once: at another
    batch size its bytes are hashed in both chunkings at once (the old chunk's hash to
    check, the new one's to record)."""
    def hashers():
        return [hashlib.blake2b(digest_size=16) for _ in arrays]

    def digest(hs):
        return "+".join(h.hexdigest() for h in hs)

    # chunk of b -> [its hashes so far (one per input), rows hashed, all unchanged]
    new: dict[int, list] = {}
    for c in sorted(c for c in old_done if isinstance(c, int)):
        lo, hi = c * old_b, min(n, (c + 1) * old_b)
        if not 0 <= lo < hi:
            continue
        h = hashers()
        cuts = [lo, *range((lo // b + 1) * b, hi, b), hi]  # where the chunks of b start
        parts = []
        for start, stop in zip(cuts, cuts[1:]):
            k = start // b
            rows = [_bytes(np.ascontiguousarray(np.asarray(a[start:stop]))) for a in arrays]
            for hi_, r in zip(h, rows):
                hi_.update(r)
            if (start, stop) == (lo, hi) == (k * b, min(n, (k + 1) * b)):
                new[k] = entry = [h, stop - start, True]  # one chunk in both: one hash
            else:
                entry = new.setdefault(k, [hashers(), 0, True])
                for hk, r in zip(entry[0], rows):
                    hk.update(r)
                entry[1] += stop - start
            parts.append(entry)
        if kept is not None and kept.get(str(c)) != digest(h):
            for entry in parts:
                entry[2] = False
    return {k: digest(hs) for k, (hs, rows, same) in new.items()
            if same and rows == min(n, (k + 1) * b) - k * b}


def _fresh(path: str | list[str], progress_path: str) -> str:
    files = " and ".join([path] if isinstance(path, str) else path)
    return (f"delete {files} and {progress_path} (or pass resume=False / write to another "
            "path) to start the job over")


def _recorded_files(prog: dict, path: str, per_input: list[str]) -> list[str] | None:
    """The files a job over several inputs recorded in its progress file ``prog`` as its
    outputs: ``[path]`` (one map), ``per_input`` (a map per input), else None."""
    outputs = prog.get("outputs")
    for files in ([path], per_input):
        if outputs == [os.path.basename(f) for f in files]:
            return files
    return None


def _maps_by_file(result: Any, several: _Several | None, path: str, per_input: list[str],
                  count: int) -> dict[str, np.ndarray]:
    """``{file: its rows}`` of a chunk's maps ``result`` (its first ``count`` rows): one
    array to ``path``; for several inputs, a map per input (in their container, or a list
    or tuple of one per input) to each input's file."""
    if several is None:
        return {path: np.asarray(result)[:count]}
    by_input = several.by_input(result) if isinstance(result, (list, tuple, dict)) else None
    if by_input is None:
        if isinstance(result, (list, tuple, dict)):
            raise ValueError(f"expected the method to return one map per input "
                             f"({', '.join(several.names)}), in a list in that order or a "
                             f"dict keyed by their names, or one array; got a "
                             f"{type(result).__name__} of {len(result)}")
        return {path: np.asarray(result)[:count]}
    return {per_input[i]: np.asarray(result[key])[:count] for key, i in
            sorted(by_input, key=lambda ki: ki[1])}


def _non_finite_maps(maps: dict[str, np.ndarray], lo: int) -> tuple[list[int], str]:
    """The inputs (by index in the job; row 0 of ``maps`` = input ``lo``) whose maps in a
    chunk's ``{file: rows}`` hold NaN or inf values (written, they would read as finished
    results: a model whose scores are not finite for some inputs, a method dividing by
    zero), and the file, for a job writing several; ``([], "")`` where all are finite."""
    bad = {f: non_finite_rows(m) for f, m in maps.items()}
    rows = sorted({lo + r for f in bad for r in bad[f]})
    where = ", ".join(f for f in bad if bad[f])
    return rows, f" (for {where})" if rows and len(maps) > 1 else ""


def _not_finite(rows: list[int], where: str) -> str:
    """The error of a chunk whose maps of inputs ``rows`` (their index in the job) are not
    finite (``where``: the file, for a job writing several)."""
    return (f"the maps of {listed(rows)}{where} are not finite (NaN or inf): the model's "
            "scores or gradients for them are not finite numbers, or the method divided by "
            "zero; nothing of this chunk was written. Check the model's outputs for these "
            "inputs (model(x[i:i+1])); maps that may be NaN by design need a method that "
            "replaces them (jnp.nan_to_num)")


def _checks_inputs(method: Callable, options: dict) -> bool:
    """Whether a job checks each chunk's inputs for NaN/inf itself, to name them: for a
    method that refuses such inputs (a jaxsal method: its ``check_finite`` option, passed or
    bound in a ``functools.partial``, not ``False``); never for a method of one's own."""
    flag, fn = options.get("check_finite"), method
    while isinstance(fn, functools.partial):
        flag = fn.keywords.get("check_finite") if flag is None else flag
        fn = fn.func
    try:
        param = inspect.signature(fn).parameters.get("check_finite")
    except (TypeError, ValueError):  # (a callable without a signature)
        return False
    if param is None:
        return False
    flag = param.default if flag is None else flag
    return isinstance(flag, (bool, np.bool_, int, np.integer)) and bool(flag)


def _chunk_failed(e: Exception, c: int, lo: int, hi: int, batch_size: int, done: set,
                  files: list[str], path: str, several: _Several | None) -> Exception:
    """The error to raise for chunk ``c`` (inputs ``lo:hi``) failing with ``e``: a
    ``ValueError`` (bad data, a bad option) restated naming the chunk and what is saved;
    any other error as it is, with that said in a note."""
    padded = f", padded to {batch_size} by repeating the last" if hi - lo < batch_size else ""
    saved = (f"The {len(done)} chunk(s) finished so far are saved in "
             f"{', '.join(files)}" if done
             else f"No chunk had finished ({path} was not written)" if several is None
             else "No chunk had finished (no maps were written)")
    again = "run the same call again to resume" if done else "run the call again"
    if not isinstance(e, ValueError):  # its own type kept, the chunk said in a note
        e.add_note(f"explain_to_file: chunk {c} (inputs {lo}:{hi}{padded}) failed. "
                   f"{saved}; {again}.")
        return e
    error = ValueError(f"chunk {c} (inputs {lo}:{hi}{padded}) failed: "
                       f"{str(e).rstrip('.')}. {saved}; fix the cause (the inputs of "
                       f"this chunk or an option) and {again}.")
    error.__cause__ = e
    return error


class IncompleteJob(ValueError):
    """Raised by :func:`jaxsal.explain_to_file` with ``keep_going=True`` after its last
    chunk, where chunks were left out because their inputs or maps are not finite; a
    ``ValueError``. The other chunks are written and recorded as finished.

    Args:
      message: what was left out, what is saved and what to do.
      rows: the inputs (their index in the job) whose values or maps are not finite, kept
        as ``.rows``.
      chunks: the ``(start, stop)`` rows of each chunk left out (unwritten), kept as
        ``.chunks``.
    """

    def __init__(self, message: str, rows: list[int], chunks: list[tuple[int, int]]):
        super().__init__(message)
        self.rows = rows
        self.chunks = chunks

    def __reduce__(self):  # (pickled whole: across processes)
        return type(self), (str(self), self.rows, self.chunks)


def _incomplete(skipped: dict[int, str], rows: list[int], n: int, n_chunks: int,
                batch_size: int, files: list[str], done: set) -> IncompleteJob:
    """The end of a ``keep_going`` job that left out chunks ``skipped`` (chunk -> why)."""
    chunks = [(c * batch_size, min(n, (c + 1) * batch_size)) for c in sorted(skipped)]
    said = "; ".join(f"chunk {c} (inputs {lo}:{hi}): {skipped[c]}"
                     for c, (lo, hi) in zip(sorted(skipped)[:5], chunks))
    if len(chunks) > 5:
        said += f"; and {len(chunks) - 5} more (at fault in all: {listed(sorted(rows))})"
    saved = (f"The other {len(done)} chunk{'s are' if len(done) > 1 else ' is'} saved in "
             f"{', '.join(files)} (which reads as unfinished until every chunk is)" if done
             else "No chunk was written")
    isolate = (" (at a batch size of 1, the inputs one by one, so that only those at fault "
               "stay out)" if batch_size > 1 else "")
    return IncompleteJob(
        f"{len(chunks)} of {n_chunks} chunks were left out: {said}. {saved}. Fix those "
        "inputs (np.nan_to_num) or the model (the scores of an input whose maps are not "
        "finite: model(x[i:i+1])) and run the same job again: it computes only the chunks "
        f"left out{isolate}.", sorted(rows), chunks)


def _write(out: np.memmap, lo: int, hi: int, maps: np.ndarray) -> None:
    """Rows ``lo:hi`` of one output file, flushed to it (``mmap.flush``: ``msync``, on the
    disk before the progress file records the chunk)."""
    out[lo:hi] = maps
    out.flush()


def explain_to_file(method: Callable, /, model: ModelLike, inputs: Inputs,
                    path: str | os.PathLike, *, targets: Targets = None, batch_size: int = 64,
                    resume: bool = True, on_chunk: Callable[[int, int], None] | None = None,
                    keep_going: bool = False, **options: Any) -> Any:
    """Compute ``method(model, inputs[i:i+batch_size], targets, **options)`` chunk by chunk
    into the ``.npy`` file ``path``.

    For a model of several inputs, ``inputs`` is a list (or tuple) of arrays in
    ``model.input_names`` order or a dict keyed by those names, as the methods take them:
    every chunk gets rows ``i:i+batch_size`` of each. A method that gives a map per input
    (:func:`jaxsal.saliency`, :func:`jaxsal.occlusion`...) has each input's maps written to a
    file of its own, named after ``path`` and the input: ``maps.npy`` -> ``maps.img.npy``,
    ``maps.vec.npy`` (:func:`input_paths`; positions, ``maps.0.npy``, where the model names
    no inputs or a name cannot end a file's name); one that gives one map (the gradient CAMs)
    writes ``path``. The job keeps one progress file and one lock, ``path + ".progress.json"``
    and ``path + ".lock"``, and a chunk is finished only once every file holds its rows.

    Args:
      method: any jaxsal attribution function, e.g. :func:`jaxsal.saliency`.
      model: the model (``model_import.KerasModel`` or a wrapped JAX function).
      inputs: ``(N, ...)`` array; a ``np.load(..., mmap_mode="r")`` array works, so inputs larger
        than memory stream from disk. For several inputs, a list, tuple or dict of such
        arrays, each with the same ``N``.
      path: output ``.npy``; ``path + ".progress.json"`` records finished chunks. For several
        inputs, the maps of each may go to its own file beside it (above): those files, too,
        are never a file the job reads.
      targets: as for ``method`` (class ids, ``None``, score functions such as
        :func:`jaxsal.class_score` / :func:`jaxsal.neuron` or your own functions); a 2-D
        ``(N, T)`` array is sliced along with the inputs.
      batch_size: inputs per compiled call. The last chunk is padded to this size so a single
        compilation serves the whole job. At most ``len(inputs)``: fewer inputs are one chunk,
        not padded.
      resume: reuse the finished chunks of an earlier run of the *same* job: same method, model
        (class, head, output, backward rule, architecture and weights), inputs count, shape
        and dtype, targets and options (see the module docstring); otherwise start over. At
        another batch size the inputs already finished are kept and the chunks of the others
        computed. A finished chunk whose inputs changed since is computed again (resuming
        reads the finished chunks' inputs once to check them). ``False`` always starts over.
      on_chunk: called as ``on_chunk(done, total)`` after each chunk is written.
      keep_going: where a chunk's inputs or maps are not finite (NaN or inf), leave that
        chunk unwritten and go on with the others, then raise :class:`IncompleteJob` naming
        every such input (``False``: stop at the first, raising a ``ValueError``). Only this
        failure, of some inputs' data, is skipped: any other error still stops the job. The
        chunks left out stay unfinished (rows of zeros, not listed in the progress file;
        ``jaxsal`` refuses the file as inputs or maps), and running the job again
        computes only them; again at ``batch_size=1``, only the inputs at fault stay out.
      **options: passed to ``method`` (``method=`` too: ``explain_to_file``'s own ``method``
        is positional, so ``explain_to_file(jaxsal.smoothgrad, ...,
        method="integrated_gradients")`` reaches SmoothGrad). An array option of the inputs'
        rank whose leading axis is the inputs' count (an ``(N, H, W, C)``
        integrated-gradients ``baseline`` or occlusion ``fill``, also inside
        ``method_options``) is sliced with the inputs; a
        method with an ``index_offset`` parameter (:func:`jaxsal.smoothgrad`) gets each
        chunk's position, so its noise, keyed by the global input index, does not depend on
        ``batch_size`` and the file equals one call over all inputs. Options a method lists
        in its ``shared_options`` attribute (:func:`jaxsal.gradient_shap`'s ``baselines``)
        are passed whole to every chunk; those its ``per_input_options`` names
        (:func:`jaxsal.shapley_values`'s ``(N, H, W)`` ``feature_mask``) are sliced; its
        ``job_options`` fixes options for the whole job first (the Shapley methods'
        ``return_groups=True`` becomes the column count of all the inputs' masks). For several
        inputs, an option given per input (a list of one value per input, a dict keyed by
        their names: an integrated-gradients ``baseline``) has each array of its input's
        rank with ``N`` rows sliced with that input; the options a method lists in its
        ``several_input_options`` attribute (:func:`several_input_options`) are taken in
        either form whatever container ``inputs`` is, and passed on as a dict keyed as
        ``inputs`` for a dict of inputs, else as a list; bound in a ``functools.partial`` of
        ``method`` (``functools.partial(jaxsal.integrated_gradients, baseline={...})``),
        they are taken as if passed here (arranged, sliced, checked; the same job), an
        option passed here over the partial's.
    Returns:
      The maps as a read-only memory map of ``path`` (shape ``(N, ...)`` as ``method`` returns);
      for several inputs and a map per input, the memory maps of their files in the
      container ``inputs`` came in (a list, tuple or dict).
    Raises:
      IncompleteJob: with ``keep_going=True``, after the last chunk, where some chunks were
        left out because their inputs or maps are not finite (a ``ValueError``; ``.rows``
        names those inputs, ``.chunks`` the rows left unwritten).
      ValueError: from ``method`` for a bad chunk (e.g. NaN inputs), naming the chunk; every
        chunk finished before it stays on disk and is not recomputed on the next run. Also for
        options that cannot be split with the inputs, for an option of one value per input
        given with names other than the inputs' (misspelt, missing) or as a list of another
        count (both before any work), and when the file at ``path`` does not hold this job's
        maps although its progress file says so.
      Exception: any other error of ``method`` in a chunk (a ``TypeError``, a JAX runtime
        error such as running out of memory) propagates as it is, with a note (``__notes__``)
        naming the chunk and saying what is saved; the finished chunks stay, as above.
      TypeError: when ``resume=True`` and an option, a target or the model cannot be described
        the same way in another process (an object without a stable description): the job
        could not be told apart from another one on resume. Also, before any work, for a
        structure of inputs given to a model of one input or to a method that explains one
        input array (:func:`jaxsal.scorecam`, the Shapley methods, LIME...: its
        ``one_input`` attribute says why), and for one array given to a model of several.
      BlockingIOError: when another process (or thread) runs a job writing ``path`` (or, for
        several inputs, one of the files of their maps): it holds that file's lock,
        ``path + ".lock"`` (see the module docstring).
      FileExistsError: when a file the job may write is another job's output (its progress
        file lists it), before any chunk: ``path`` and, for several inputs, the file of each
        input's maps (:func:`input_paths`), whether the method writes them or one map.
    """
    path = os.fspath(path)
    resume = check_flag(resume, "resume")  # "False" would resume: refused before the lock
    keep_going = check_flag(keep_going, "keep_going")
    batch_size = base.check_count(batch_size, "batch_size")
    if batch_size is None:
        raise ValueError("expected batch_size as a positive int, got None")
    if not callable(method):
        raise TypeError(f"expected method as a jaxsal attribution function (e.g. "
                        f"jaxsal.saliency), got {method!r}")
    whole = getattr(_unwrap(method), "whole_batch", None)
    if whole:
        name = getattr(_unwrap(method), "__name__", "this method")
        raise ValueError(f"{name} {whole}: its values depend on the "
                         "batch, so chunks (and the last one, padded with copies of its last "
                         "input) would not equal one call. Call it on the whole batch "
                         "(method(model, inputs, ...)) and save the result")
    several = _several(method, model, inputs)  # None: one input array
    # before the sidecar is read, until the job has returned: the lock of path and, for
    # several inputs, those of the files their maps may go to (another job may write one of
    # them as its path, or as the maps of an input of its own)
    with job_lock(path, several.names if several is not None else ()):
        return _explain_to_file(method, model, inputs, path, several, targets=targets,
                                batch_size=batch_size, resume=resume, on_chunk=on_chunk,
                                keep_going=keep_going, **options)


def _check_rows(model: Any, inputs: Any, batch_size: int) -> None:
    """The methods' check that the model keeps the inputs of a batch apart
    (:func:`jaxsal._src.per_example.check_per_example`), once before the first chunk: such a
    model is refused as what it is, not as chunk 0's failure with "fix the inputs of this
    chunk". Anything else that keeps the model from running is left to the method."""
    try:
        m = base.as_model(model)

        def chunk(a):  # one chunk's shapes (the dtype: not a row read, jobs count their reads)
            dtype = getattr(a, "dtype", None)
            dtype = np.dtype(np.asarray(a[:1]).dtype if dtype is None else dtype)
            return jax.ShapeDtypeStruct((batch_size, *np.shape(a)[1:]),
                                        np.float32 if dtype.kind == "f" else dtype)

        xs = jax.tree_util.tree_map(chunk, inputs)  # a list/tuple/dict: one per input
        y = base.model_shapes(m, xs)[0]
    except Exception:  # the method says what is wrong, for the chunk it fails on
        return
    check_per_example(m, xs, y)


def _explain_to_file(method: Callable, model: Any, inputs: Any, path: str,
                     several: _Several | None, /, *, targets: Any, batch_size: int,
                     resume: bool, on_chunk: Callable[[int, int], None] | None,
                     keep_going: bool, **options: Any) -> Any:
    """:func:`explain_to_file`, its arguments checked (``several``: its inputs, for a
    model of several) and its lock held."""
    if several is None:
        ndim = len(np.shape(inputs))
        shape = getattr(model, "input_shape", None)
        if ndim == 0 or (isinstance(shape, tuple) and _fits(tuple(np.shape(inputs)), shape)):
            raise ValueError(f"expected inputs as a batch (N, ...) with the examples along "
                             f"axis 0, got shape {np.shape(inputs)}"
                             + (" (one example: pass inputs[None])" if ndim else ""))
        n = len(inputs)
        if n == 0:
            raise ValueError("inputs is empty: expected at least one example along axis 0")
        arrays: tuple = (inputs,)
        shapes: Any = tuple(np.shape(inputs))
        per_input: list[str] = []
    else:
        ndim = -1  # (options are split per input, by each input's rank)
        arrays = several.arrays
        n = len(arrays[0])
        shapes = several.pack([tuple(np.shape(a)) for a in arrays])
        per_input = input_paths(path, several.names)
        # an option of one value per input bound in a functools.partial of the method: taken
        # as passed here (arranged, sliced with its input, checked; the same job), the
        # call's over the partial's
        method, bound = _bound_options(method)
        options = {**bound, **options}
        # an option of one value per input as a dict by name or a list by position: passed
        # on keyed as the inputs (a dict of them), else as a list
        options = _arrange_options(method, several, options)
    # fewer inputs than a batch: one chunk of them all, not padded with copies (which cost a
    # full batch: 64 inputs' work for 2 with the default)
    batch_size = min(batch_size, n)
    _check_targets(targets, n)
    shared = shared_options(method)
    options = job_options(method, model, shapes, options)
    _check_options(options, n, ndim, shared=shared, several=several)
    rows = per_input_options(method, model, shapes, options)
    offset = options.pop("index_offset", 0) if _takes_offset(method) else None
    if offset is not None:
        offset = base.check_index_offset(offset)
    _check_path(path, inputs, options, several)
    progress_path = path + ".progress.json"
    # never another job's output, before any chunk: every file the job may write (path and,
    # for several inputs, the files of their maps, whether its method writes them or one
    # map to path, as the files it holds the locks of)
    check_not_another_jobs([path, *per_input], progress_path, _input_roles(path, several))
    _check_rows(model, inputs, batch_size)
    try:
        sig, family = _signatures(
            method, model, inputs,
            options if offset is None else {**options, "index_offset": offset}, targets,
            batch_size, several)
    except _Unstable as e:
        if resume:
            raise TypeError(
                f"explain_to_file records the method, model, targets and options in the job's "
                f"signature to tell a resumed job from another, and cannot describe {e} the "
                "same way in another process. Pass a value with a stable description (arrays, "
                "numbers, strings, plain functions, jaxsal.class_score / jaxsal.neuron), or "
                "resume=False (the job then starts over on every run).") from None
        sig = family = None  # never resumed
    n_chunks = -(-n // batch_size)
    done: set[int] = set()
    digests: dict[int, str] = {}  # finished chunk -> the hash of its inputs
    out: dict[str, np.memmap] | None = None  # output file -> its memory map
    files: list[str] = [path]  # the files the maps go to: path, or one per input

    recorded = [None]  # how many chunks the progress file lists, once this run wrote it
    also: list = []  # files an earlier job at path wrote besides its maps (record_job_file):
    _read_progress(progress_path, also)  # still its own, listed on

    def save_progress():
        record = {"format": _FORMAT, "signature": sig, "family": family,
                  "done": sorted(done), "chunks": n_chunks, "batch_size": batch_size,
                  "n": n, "inputs": {str(c): d for c, d in sorted(digests.items())}}
        if also:
            record["also"] = also
        if several is None:
            record["input_shape"] = list(np.shape(inputs)[1:])
        else:  # the files it vouches for (batch.unfinished finds it from theirs)
            record["input_shapes"] = {name: list(np.shape(a)[1:])
                                      for name, a in zip(several.names, arrays)}
            record["outputs"] = [os.path.basename(f) for f in files]
        try:
            _replace_json(progress_path, record)
        except OSError as e:  # a full disk, a folder made read-only meanwhile
            kept = (f"{recorded[0]} of {n_chunks} chunks are finished and recorded in it"
                    if recorded[0] is not None else "it is unchanged")
            fix = write_fix(e)
            raise type(e)(e.errno, f"cannot write the progress file {progress_path} "
                          f"({e.strerror or e}); {kept}: {fix} and run the same call again to "
                          "resume") from None
        recorded[0] = len(done)

    if (resume and sig is not None and os.path.exists(progress_path)
            and (several is not None or os.path.exists(path))):
        prog, why = _record(progress_path)
        if prog is None:  # (it exists: None only with a reason)
            raise ValueError(f"cannot read the progress file {progress_path} ({why}); "
                             f"{_fresh(path, progress_path)}")
        same = prog.get("signature") == sig
        old_b = batch_size if same else prog.get("batch_size")
        # or the same job at another batch size (a smaller one after running out of memory)
        rebatch = (not same and prog.get("family") == family and isinstance(old_b, int)
                   and old_b >= 1)
        # the files of a job over several inputs: as its progress file lists them (every one
        # there, else the job starts over, as one whose .npy is missing; none another job's
        # output: checked above)
        kept_files = [path] if several is None else _recorded_files(prog, path, per_input)
        # (a job that finished no chunk has nothing to keep, and its .npy may be torn: one
        # stopped while writing the header starts again)
        if (prog.get("format") == _FORMAT and (same or rebatch) and prog.get("done")
                and kept_files and all(os.path.exists(f) for f in kept_files)):
            files = kept_files
            out = {}
            for f in files:
                try:
                    out[f] = np.lib.format.open_memmap(f, mode="r+")
                except (OSError, ValueError) as e:
                    raise ValueError(f"cannot reopen {f} to resume this job ({e}); "
                                     f"{_fresh(files, progress_path)}") from None
                if out[f].ndim < 1 or out[f].shape[0] != n:
                    raise ValueError(f"{f} holds an array of shape {out[f].shape}, but this "
                                     f"job writes maps for {n} inputs; the file was replaced "
                                     f"after the job started. {_fresh(files, progress_path)}")
                _allocate(f)  # (a file of a jaxsal before the reservation may be sparse)
            kept = prog.get("inputs")
            # a finished chunk whose inputs changed since (fixed, or another data set of the
            # same shape) is computed again, never kept from the old values (a sidecar written
            # before the hashes is trusted, and gets them)
            digests.update(_finished_chunks(arrays, n, old_b, set(prog.get("done", [])),
                                            kept if isinstance(kept, dict) else None,
                                            batch_size))
            done.update(digests)
            if rebatch:
                save_progress()  # the job's progress at this batch size from now on
    resumed = out is not None

    check_inputs = _checks_inputs(method, options)
    skipped: dict[int, str] = {}  # keep_going: chunk left out -> why (its inputs at fault)
    bad_rows: list[int] = []
    for c in range(n_chunks):
        if c in done:
            continue
        lo, hi = c * batch_size, min(n, (c + 1) * batch_size)
        parts = [np.asarray(a[lo:hi]) for a in arrays]
        digest = _chunk_digest(parts)
        # (NaN/inf inputs, named here: the method's own check cannot say which)
        bad = non_finite_rows(parts) if check_inputs else []
        if bad:
            rows_bad = [lo + r for r in bad]
            why = (f"{listed(rows_bad)} contain{'' if len(bad) > 1 else 's'} NaN or infinite "
                   "values: attribution maps of such inputs are meaningless. Clean "
                   f"{'them' if len(bad) > 1 else 'it'} (np.nan_to_num) or leave "
                   f"{'them' if len(bad) > 1 else 'it'} out")
            short = f"{listed(rows_bad)} contain{'' if len(bad) > 1 else 's'} NaN or inf"
        else:
            pad = batch_size - (hi - lo)
            padded = [_rows(p, 0, hi - lo, pad) for p in parts]
            xb = padded[0] if several is None else several.pack(padded)
            opts = _chunk_options(options, n, ndim, lo, hi, pad, shared, rows, several)
            if offset is not None:
                opts["index_offset"] = int(offset) + lo
            try:
                # np.asarray inside: a JAX runtime error (out of memory...) surfaces there
                maps = _maps_by_file(method(model, xb, _chunk_targets(targets, lo, hi, pad),
                                            **opts), several, path, per_input, hi - lo)
            except NonFiniteMaps as e:  # named by their index in the job, not the chunk
                rows_bad, where = [lo + r for r in e.rows if r < hi - lo] or [hi - 1], ""
            except Exception as e:
                raise _chunk_failed(e, c, lo, hi, batch_size, done, files, path, several)
            else:
                rows_bad, where = _non_finite_maps(maps, lo)
            why = _not_finite(rows_bad, where) if rows_bad else None
            short = f"the maps of {listed(rows_bad)}{where} are not finite"
        if why is not None:
            if keep_going:
                skipped[c] = short
                bad_rows += rows_bad
                continue
            raise _chunk_failed(ValueError(why), c, lo, hi, batch_size, done, files, path,
                                several)
        if out is None:
            # starting over: this job's progress (no chunk finished) replaces the sidecar of
            # the job that wrote `path` before, first, so that it can never vouch for the new
            # files' chunks, and the new files read as unfinished (batch.unfinished) from the
            # moment they exist
            files = list(maps)
            save_progress()
            out = {}
            try:
                for f, m in maps.items():
                    out[f] = np.lib.format.open_memmap(f, mode="w+", dtype=m.dtype,
                                                       shape=(n, *m.shape[1:]))
                    _allocate(f)
            except OSError:
                made = list(out)
                out = None  # (their memory maps closed)
                for f in made:  # this job's new files, nothing in them yet
                    with contextlib.suppress(OSError):
                        os.remove(f)
                raise
        elif resumed and (list(out) != list(maps) or any(
                out[f].shape[1:] != m.shape[1:] or out[f].dtype != m.dtype
                for f, m in maps.items())):
            have = "; ".join(f"{f} holds maps of shape {out[f].shape[1:]} ({out[f].dtype})"
                             for f in out)
            want = "; ".join(f"{m.shape[1:]} ({m.dtype})" + (f" for {f}" if several else "")
                             for f, m in maps.items())
            raise ValueError(f"{have} per input, but this job computes {want}; its progress "
                             "file says it is the same job, so the file was replaced after "
                             f"the job started. {_fresh(list(out), progress_path)}")
        for f, m in maps.items():
            _write(out[f], lo, hi, m)
        done.add(c)
        digests[c] = digest
        save_progress()
        if on_chunk is not None:
            on_chunk(len(done), n_chunks)
    del out
    if skipped:
        raise _incomplete(skipped, bad_rows, n, n_chunks, batch_size, files, done)
    loaded = [np.load(f, mmap_mode="r") for f in files]
    return loaded[0] if files == [path] else several.pack(loaded)
