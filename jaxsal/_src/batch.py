"""Batch jobs that survive interruption: attribution maps streamed to a ``.npy`` on disk.

:func:`explain_to_file` runs any jaxsal method over a large input array in fixed-size chunks
(the last one padded, so one compiled program serves every chunk), writes each chunk's maps into
a memory-mapped ``.npy`` as soon as it is done, and records progress in a JSON sidecar. A job
that is stopped or fails (a NaN in chunk 7, a killed process) keeps every finished chunk; run the
same call again and it resumes where it stopped.

A job is identified by a signature: a hash of a stable description of the method (a function
of one's own also by the settings it reads: its closure's numbers, strings, arrays and
tuples, and the module-level values it reads; a callable object's or a bound method's
attributes alike), the model
(its class, head, output selection, backward rule, the Keras backend it follows, architecture
and a hash of every weight),
the inputs' count, shape and dtype (not their values, which are checked chunk by chunk: the
sidecar keeps a hash of each finished chunk's inputs, and a chunk whose inputs changed since,
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

While it runs, a job holds an advisory lock (``fcntl.flock``) on ``path + ".lock"``: a second
process (or thread) that starts the same job, or any job writing ``path``, fails at once with
a :class:`BlockingIOError` naming the process that holds it. The kernel releases the lock when
the process ends, however it ends; a job that ends removes the file, one that is killed leaves
it (not held: the next job takes it). Where there is no ``fcntl`` (Windows) or the file system
refuses ``flock`` (some network file systems), jobs run unlocked, as before.
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
from jaxsal._src.base import ModelLike
from jaxsal._src.per_example import check_per_example
from jaxsal._src.targets import Targets
from jaxsal._src.validate import _fits, check_flag

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
                batch_size: int) -> tuple[str, str]:
    """The job's signature and its family's: the same job at any batch size."""
    n = len(inputs)
    job = {
        "method": _method_description(method), "model": model_fingerprint(model),
        "n": n, "input": [list(np.shape(inputs)[1:]), str(getattr(inputs, "dtype", ""))],
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


def shared_options(method: Callable) -> tuple[str, ...]:
    """The options ``method`` declares as the same for every chunk, never sliced with the
    inputs (its ``shared_options`` attribute; e.g. :func:`jaxsal.gradient_shap`'s
    ``baselines``, a distribution of ``B`` reference inputs, which may have ``N`` rows)."""
    return tuple(getattr(_unwrap(method), "shared_options", ()))


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
                   shared: tuple[str, ...] = ()) -> None:
    """Refuse an array option of the inputs' rank whose leading axis is neither the inputs'
    count nor 1: it cannot be split into chunks with the inputs."""
    for k, v in options.items():
        name = f"{where}[{k!r}]" if where else k
        if k in shared and not where:
            continue
        if isinstance(v, dict):
            _check_options(v, n, ndim, name)
        elif (isinstance(v, (np.ndarray, jax.Array)) and v.ndim == ndim and v.ndim >= 1
              and v.shape[0] not in (1, n)):
            raise ValueError(f"option {name} has shape {tuple(v.shape)}: an array with the "
                             f"inputs' rank ({ndim}) is read per input and is split into chunks "
                             f"with them, so it needs one row per input ({n}) or a single row "
                             f"(shared by all); got {v.shape[0]} rows")


def _native(a: np.ndarray) -> np.ndarray:
    """``a`` in the machine's byte order: JAX takes no other (a big-endian ``.npy``, from a
    big-endian machine or FITS data, is read as it is stored)."""
    return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))


def _chunk_options(options: dict, n: int, ndim: int, lo: int, hi: int, pad: int,
                   shared: tuple[str, ...] = (), rows: tuple[str, ...] = ()) -> dict:
    out = {}
    for k, v in options.items():
        if k in shared:
            pass
        elif isinstance(v, dict):
            v = _chunk_options(v, n, ndim, lo, hi, pad)
        elif k in rows or _per_input(v, n, ndim):
            v = _native(np.asarray(v)[lo:hi])
            if pad:
                v = np.concatenate([v, np.repeat(v[-1:], pad, axis=0)])
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


def _mapped_sources(inputs: Any, options: dict):
    """``(what, file)`` for the inputs and every option array (also inside dict options)
    read memory-mapped from a file."""
    found = _mapped_file(inputs)
    if found:
        yield "inputs", found
    stack = [("", options)]
    while stack:
        where, d = stack.pop()
        for k, v in d.items():
            name = f"{where}[{k!r}]" if where else f"option {k}"
            if isinstance(v, dict):
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


def _busy(path: str, lock: str, who: str) -> BlockingIOError:
    return BlockingIOError(f"another {who} is writing {path} (it holds the lock {lock}); "
                           "wait for it to end, or write to another path (--out)")


def _flock(path: str, lock: str) -> int | None:
    """Open ``lock`` and take its ``flock``: the descriptor, or None where the file system
    has no ``flock``."""
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
                        "jaxsal process") from None
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
def job_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold the advisory lock of the job writing ``path`` (a ``.npy``): another process or
    thread that takes it meanwhile gets a :class:`BlockingIOError` naming this process. The
    same thread may take it again (the ``jaxsal`` command holds it, then
    :func:`explain_to_file` inside). Without ``fcntl`` (Windows) it holds nothing."""
    path = os.fspath(path)
    _check_folder(path)
    if fcntl is None:
        yield
        return
    lock = _lock_file(path)
    with _held_guard:
        held = _held.get(lock)
        if held is not None and held[1] != threading.get_ident():
            raise _busy(path, lock, f"thread of this process (pid {os.getpid()})")
        if held is None:
            held = _held[lock] = [_flock(path, lock), threading.get_ident(), 0]
        held[2] += 1
    try:
        yield
    finally:
        with _held_guard:
            held[2] -= 1
            if not held[2]:
                del _held[lock]
                _unlock(lock, held[0])


def _check_path(path: str, inputs: Any, options: dict) -> None:
    """Refuse, before any chunk is computed, an output path that cannot be written (a folder,
    a missing folder) or that is the file the inputs or an option are read from: writing the
    maps there would overwrite them while the job still reads them."""
    _check_folder(path)
    if not os.path.exists(path):
        return
    for what, source in _mapped_sources(inputs, options):
        if os.path.exists(source) and os.path.samefile(source, path):
            raise ValueError(f"path {path} is the file {what} is read from (memory-mapped); "
                             "writing the maps there would overwrite it while the job reads "
                             "it. Write the maps to another path")


def unfinished(path: str | os.PathLike) -> tuple[int, int, str] | None:
    """``(done, chunks, progress_path)`` when the ``.npy`` at ``path`` is the output of an
    :func:`explain_to_file` job that has not finished (its sidecar lists fewer chunks than
    the job has: the rows of the others are still zeros), else None."""
    progress_path = os.fspath(path) + ".progress.json"
    try:
        with open(progress_path) as fh:
            prog = json.load(fh)
        done, chunks = len(set(prog["done"])), int(prog["chunks"])
    except (OSError, ValueError, TypeError, KeyError):
        return None  # no sidecar (or none of this format): nothing says the file is partial
    return (done, chunks, progress_path) if done < chunks else None


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


def _finished_chunks(inputs: Any, n: int, old_b: int, old_done: set, kept: dict | None,
                     b: int) -> dict[int, str]:
    """``{chunk: hash of its inputs}`` for the chunks of batch size ``b`` whose inputs all
    finished, unchanged, in a job's chunks ``old_done`` of batch size ``old_b`` (unchanged:
    their hash is the one ``kept`` records by chunk; a sidecar without hashes, ``kept=None``,
    is trusted). Each finished input is read once: at another batch size its bytes are hashed
    in both chunkings at once (the old chunk's hash to check, the new one's to record)."""
    new: dict[int, list] = {}  # chunk of b -> [its hash so far, rows hashed, all unchanged]
    for c in sorted(c for c in old_done if isinstance(c, int)):
        lo, hi = c * old_b, min(n, (c + 1) * old_b)
        if not 0 <= lo < hi:
            continue
        h = hashlib.blake2b(digest_size=16)
        cuts = [lo, *range((lo // b + 1) * b, hi, b), hi]  # where the chunks of b start
        parts = []
        for start, stop in zip(cuts, cuts[1:]):
            k = start // b
            rows = _bytes(np.ascontiguousarray(np.asarray(inputs[start:stop])))
            h.update(rows)
            if (start, stop) == (lo, hi) == (k * b, min(n, (k + 1) * b)):
                new[k] = entry = [h, stop - start, True]  # one chunk in both: one hash
            else:
                entry = new.setdefault(k, [hashlib.blake2b(digest_size=16), 0, True])
                entry[0].update(rows)
                entry[1] += stop - start
            parts.append(entry)
        if kept is not None and kept.get(str(c)) != h.hexdigest():
            for entry in parts:
                entry[2] = False
    return {k: h.hexdigest() for k, (h, rows, same) in new.items()
            if same and rows == min(n, (k + 1) * b) - k * b}


def _fresh(path: str, progress_path: str) -> str:
    return (f"delete {path} and {progress_path} (or pass resume=False / write to another "
            "path) to start the job over")


def explain_to_file(method: Callable, /, model: ModelLike, inputs: np.ndarray,
                    path: str | os.PathLike, *, targets: Targets = None, batch_size: int = 64,
                    resume: bool = True, on_chunk: Callable[[int, int], None] | None = None,
                    **options: Any) -> np.ndarray:
    """Compute ``method(model, inputs[i:i+batch_size], targets, **options)`` chunk by chunk
    into the ``.npy`` file ``path``.

    Args:
      method: any jaxsal attribution function, e.g. :func:`jaxsal.saliency`.
      model: the model (``model_import.KerasModel`` or a wrapped JAX function).
      inputs: ``(N, ...)`` array; a ``np.load(..., mmap_mode="r")`` array works, so inputs larger
        than memory stream from disk.
      path: output ``.npy``; ``path + ".progress.json"`` records finished chunks.
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
        ``return_groups=True`` becomes the column count of all the inputs' masks).
    Returns:
      The maps as a read-only memory map of ``path`` (shape ``(N, ...)`` as ``method`` returns).
    Raises:
      ValueError: from ``method`` for a bad chunk (e.g. NaN inputs), naming the chunk; every
        chunk finished before it stays on disk and is not recomputed on the next run. Also for
        options that cannot be split with the inputs, and when the file at ``path`` does not
        hold this job's maps although its progress file says so.
      Exception: any other error of ``method`` in a chunk (a ``TypeError``, a JAX runtime
        error such as running out of memory) propagates as it is, with a note (``__notes__``)
        naming the chunk and saying what is saved; the finished chunks stay, as above.
      TypeError: when ``resume=True`` and an option, a target or the model cannot be described
        the same way in another process (an object without a stable description): the job
        could not be told apart from another one on resume.
      BlockingIOError: when another process (or thread) runs a job writing ``path``: it
        holds the job's lock, ``path + ".lock"`` (see the module docstring).
    """
    path = os.fspath(path)
    resume = check_flag(resume, "resume")  # "False" would resume: refused before the lock
    with job_lock(path):  # before the sidecar is read, until the job has returned
        return _explain_to_file(method, model, inputs, path, targets=targets,
                                batch_size=batch_size, resume=resume, on_chunk=on_chunk,
                                **options)


def _check_rows(model: Any, inputs: np.ndarray, batch_size: int) -> None:
    """The methods' check that the model keeps the inputs of a batch apart
    (:func:`jaxsal._src.per_example.check_per_example`), once before the first chunk: such a
    model is refused as what it is, not as chunk 0's failure with "fix the inputs of this
    chunk". Anything else that keeps the model from running is left to the method."""
    try:
        m = base.as_model(model)
        dtype = getattr(inputs, "dtype", None)  # (not a row read: jobs count their reads)
        dtype = np.dtype(np.asarray(inputs[:1]).dtype if dtype is None else dtype)
        xs = jax.ShapeDtypeStruct((batch_size, *np.shape(inputs)[1:]),
                                  np.float32 if dtype.kind == "f" else dtype)
        y = base.model_shapes(m, xs)[0]
    except Exception:  # the method says what is wrong, for the chunk it fails on
        return
    check_per_example(m, xs, y)


def _explain_to_file(method: Callable, model: Any, inputs: np.ndarray, path: str, /, *,
                     targets: Any, batch_size: int, resume: bool,
                     on_chunk: Callable[[int, int], None] | None, **options: Any) -> np.ndarray:
    """:func:`explain_to_file`, its lock held."""
    batch_size = base.check_count(batch_size, "batch_size")
    if batch_size is None:
        raise ValueError("expected batch_size as a positive int, got None")
    if isinstance(inputs, dict) or (isinstance(inputs, (list, tuple)) and inputs
                                    and hasattr(inputs[0], "shape")):
        raise TypeError("explain_to_file takes one input array (N, ...) and writes one .npy "
                        f"of maps; got a {type(inputs).__name__} of input arrays (a "
                        "multi-input model), which it does not split. Call the method on "
                        "slices of every input yourself (maps = method(model, [a[i:j] for a "
                        "in inputs])) and save each chunk's maps")
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
    ndim = len(np.shape(inputs))
    shape = getattr(model, "input_shape", None)
    if ndim == 0 or (isinstance(shape, tuple) and _fits(tuple(np.shape(inputs)), shape)):
        raise ValueError(f"expected inputs as a batch (N, ...) with the examples along axis 0, "
                         f"got shape {np.shape(inputs)}"
                         + (" (one example: pass inputs[None])" if ndim else ""))
    n = len(inputs)
    if n == 0:
        raise ValueError("inputs is empty: expected at least one example along axis 0")
    # fewer inputs than a batch: one chunk of them all, not padded with copies (which cost a
    # full batch: 64 inputs' work for 2 with the default)
    batch_size = min(batch_size, n)
    _check_targets(targets, n)
    shared = shared_options(method)
    options = job_options(method, model, tuple(np.shape(inputs)), options)
    _check_options(options, n, ndim, shared=shared)
    rows = per_input_options(method, model, tuple(np.shape(inputs)), options)
    offset = options.pop("index_offset", 0) if _takes_offset(method) else None
    if offset is not None:
        offset = base.check_index_offset(offset)
    _check_path(path, inputs, options)
    _check_rows(model, inputs, batch_size)
    progress_path = path + ".progress.json"
    try:
        sig, family = _signatures(
            method, model, inputs,
            options if offset is None else {**options, "index_offset": offset}, targets,
            batch_size)
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
    out = None

    recorded = [None]  # how many chunks the progress file lists, once this run wrote it

    def save_progress():
        tmp = progress_path + ".tmp"
        try:
            with open(tmp, "w") as fh:
                json.dump({"format": _FORMAT, "signature": sig, "family": family,
                           "done": sorted(done), "chunks": n_chunks, "batch_size": batch_size,
                           "n": n, "input_shape": list(np.shape(inputs)[1:]),
                           "inputs": {str(c): d for c, d in sorted(digests.items())}}, fh)
            os.replace(tmp, progress_path)  # atomic: a crash never leaves a torn progress file
        except OSError as e:  # a full disk, a folder made read-only meanwhile
            with contextlib.suppress(OSError):
                os.remove(tmp)
            kept = (f"{recorded[0]} of {n_chunks} chunks are finished and recorded in it"
                    if recorded[0] is not None else "it is unchanged")
            fix = write_fix(e)
            raise type(e)(e.errno, f"cannot write the progress file {progress_path} "
                          f"({e.strerror or e}); {kept}: {fix} and run the same call again to "
                          "resume") from None
        recorded[0] = len(done)

    if resume and sig is not None and os.path.exists(progress_path) and os.path.exists(path):
        with open(progress_path, "rb") as fh:
            try:
                prog = json.load(fh)
                why = f"expected a JSON object, got a {type(prog).__name__}"
            except ValueError as e:  # not JSON, not UTF-8 text
                prog, why = None, str(e)
        if not isinstance(prog, dict):
            raise ValueError(f"cannot read the progress file {progress_path} ({why}); "
                             f"{_fresh(path, progress_path)}")
        same = prog.get("signature") == sig
        old_b = batch_size if same else prog.get("batch_size")
        # or the same job at another batch size (a smaller one after running out of memory)
        rebatch = (not same and prog.get("family") == family and isinstance(old_b, int)
                   and old_b >= 1)
        # (a job that finished no chunk has nothing to keep, and its .npy may be torn: one
        # stopped while writing the header starts again)
        if prog.get("format") == _FORMAT and (same or rebatch) and prog.get("done"):
            try:
                out = np.lib.format.open_memmap(path, mode="r+")
            except (OSError, ValueError) as e:
                raise ValueError(f"cannot reopen {path} to resume this job ({e}); "
                                 f"{_fresh(path, progress_path)}") from None
            if out.ndim < 1 or out.shape[0] != n:
                raise ValueError(f"{path} holds an array of shape {out.shape}, but this job "
                                 f"writes maps for {n} inputs; the file was replaced after the "
                                 f"job started. {_fresh(path, progress_path)}")
            _allocate(path)  # (a file of a jaxsal before the reservation may be sparse)
            kept = prog.get("inputs")
            # a finished chunk whose inputs changed since (fixed, or another data set of the
            # same shape) is computed again, never kept from the old values (a sidecar written
            # before the hashes is trusted, and gets them)
            digests.update(_finished_chunks(inputs, n, old_b, set(prog.get("done", [])),
                                            kept if isinstance(kept, dict) else None,
                                            batch_size))
            done.update(digests)
            if rebatch:
                save_progress()  # the job's progress at this batch size from now on
    resumed = out is not None

    for c in range(n_chunks):
        if c in done:
            continue
        lo, hi = c * batch_size, min(n, (c + 1) * batch_size)
        xb = np.asarray(inputs[lo:hi])
        digest = _array_digest(xb)["array"]
        xb = _native(xb)
        pad = batch_size - (hi - lo)
        if pad:
            xb = np.concatenate([xb, np.repeat(xb[-1:], pad, axis=0)])
        opts = _chunk_options(options, n, ndim, lo, hi, pad, shared, rows)
        if offset is not None:
            opts["index_offset"] = int(offset) + lo
        try:
            # np.asarray inside: a JAX runtime error (out of memory...) surfaces there
            maps = np.asarray(method(model, xb, _chunk_targets(targets, lo, hi, pad),
                                     **opts))[: hi - lo]
        except Exception as e:
            padded = f", padded to {batch_size} by repeating the last" if pad else ""
            saved = (f"The {len(done)} chunk(s) finished so far are saved in {path}" if done
                     else f"No chunk had finished ({path} was not written)")
            again = "run the same call again to resume" if done else "run the call again"
            if not isinstance(e, ValueError):  # its own type kept, the chunk said in a note
                e.add_note(f"explain_to_file: chunk {c} (inputs {lo}:{hi}{padded}) failed. "
                           f"{saved}; {again}.")
                raise
            raise ValueError(f"chunk {c} (inputs {lo}:{hi}{padded}) failed: "
                             f"{str(e).rstrip('.')}. {saved}; fix the cause (the inputs of "
                             f"this chunk or an option) and {again}.") from e
        if out is None:
            # starting over: this job's progress (no chunk finished) replaces the sidecar of
            # the job that wrote `path` before, first, so that it can never vouch for the new
            # file's chunks, and the new file reads as unfinished (batch.unfinished) from the
            # moment it exists
            save_progress()
            out = np.lib.format.open_memmap(path, mode="w+", dtype=maps.dtype,
                                            shape=(n, *maps.shape[1:]))
            try:
                _allocate(path)
            except OSError:
                del out
                os.remove(path)  # this job's new file, nothing in it yet
                raise
        elif resumed and (out.shape[1:] != maps.shape[1:] or out.dtype != maps.dtype):
            raise ValueError(f"{path} holds maps of shape {out.shape[1:]} ({out.dtype}) per "
                             f"input, but this job computes {maps.shape[1:]} ({maps.dtype}); "
                             "its progress file says it is the same job, so the file was "
                             f"replaced after the job started. {_fresh(path, progress_path)}")
        out[lo:hi] = maps
        out.flush()
        done.add(c)
        digests[c] = digest
        save_progress()
        if on_chunk is not None:
            on_chunk(len(done), n_chunks)
    del out
    return np.load(path, mmap_mode="r")
