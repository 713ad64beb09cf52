"""What each chunk of a batch job (:func:`jaxsal.explain_to_file`) gets: its inputs, targets and
options.

Targets of one row per input (``(N, T)`` class ids) and array options of the inputs' rank with
one row per input (an ``(N, H, W, C)`` integrated-gradients ``baseline``) are sliced with the
inputs, the last chunk padded by repeating its last row; a method's ``shared_options`` pass
whole, its ``per_input_options`` are sliced, its ``job_options`` are fixed for the whole job.

For a model of several inputs (:class:`_Several`), the inputs are a list, tuple or dict of
arrays (each read chunk by chunk), a method that gives a map per input writes each input's
maps to a file of its own beside the job's path (``maps.img.npy``: :func:`input_paths`), and
an option the method takes one value per input (its ``several_input_options`` attribute: an
integrated-gradients ``baseline``) is a dict keyed by the model's input names or a list in
their order, whatever container the inputs come in, passed to the job or bound in a
``functools.partial`` of the method.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
from typing import Any, Callable

import jax
import numpy as np

from model_import._model import native
from jaxsal._src.targets import OutputInfo
from jaxsal._src.validate import (_fits, arrange_per_input, model_inputs, one_input_error,
                                  one_of_several)

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


def _check_ids(targets: Any, units: int) -> None:
    """Class ids ``targets`` (an int, a 1-D list, ``(N, T)`` per-input labels) within the
    classes of the model's ``(N, units)`` output (two for one unit: a binary classifier),
    the first bad ones named by their input."""
    if targets is None or _score_functions(targets) or isinstance(targets, str):
        return
    try:
        ids = np.asarray(targets)
    except (TypeError, ValueError):
        return
    if not np.issubdtype(ids.dtype, np.integer) or ids.ndim > 2:
        return  # (the method refuses these)
    k = OutputInfo(units).num_classes
    out = (ids < 0) | (ids >= k)
    if not out.any():
        return
    binary = " (a one-unit output is a binary classifier: ids 0 and 1)" if units == 1 else ""
    if ids.ndim == 2:
        rows = np.flatnonzero(out.any(axis=1)).tolist()
        where = ", ".join(f"input {i}: {ids[i].tolist()}" for i in rows[:5])
        where += f" and {len(rows) - 5} more inputs" if len(rows) > 5 else ""
    else:
        where = f"{sorted({int(v) for v in ids[out]})}"
    raise ValueError(f"target ids out of range: expected 0 <= id < {k}{binary}, got {where}; "
                     "checked before the job's first chunk (nothing computed): fix the ids "
                     "(on the command line, the --targets file) and run it again")


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


def class_free(method: Callable) -> bool:
    """Whether ``method``'s maps are the same for every class (:func:`jaxsal.eigencam`'s):
    its own ``class_free`` attribute (a callable object's: its class's), the first found
    from the outside in through the layers that say what they wrap (``functools.partial``'s
    ``func``, ``__wrapped__``: a ``functools.wraps`` / ``functools.update_wrapper``
    wrapper's, which may not copy the attribute), False where none says. A function of
    one's own cannot be told apart from one that adds a class's own term (or picks the
    layer by the class) without running it for every class, so it declares it:
    ``my_cam.class_free = True`` (a ``functools.wraps`` wrapper of Eigen-CAM that adds such
    a term: ``class_free = False``)."""
    seen = 0
    while method is not None and seen < 32:  # (a cycle of __wrapped__ ends too)
        said = getattr(method, "class_free", None)
        if isinstance(said, bool):
            return said
        method = (method.func if isinstance(method, functools.partial)
                  else getattr(method, "__wrapped__", None))
        seen += 1
    return False


# ---------------------------------------------------------------------- several inputs
def _is_structure(inputs: Any) -> bool:
    """Whether ``inputs`` is a list, tuple or dict of input arrays (a model of several
    inputs), not one array (nor nested lists of numbers, one array too)."""
    return isinstance(inputs, dict) or (isinstance(inputs, (list, tuple)) and bool(inputs)
                                        and hasattr(inputs[0], "shape"))


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
        (:func:`several_input_options`) in the container the method gets it in beside the
        inputs: :func:`~jaxsal._src.validate.arrange_per_input`, as a direct call does."""
        return arrange_per_input(v, self.kind, self.keys, self.names, what)

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
    (``"2 inputs (img (N, 8, 8, 3), vec (N, 5))"``): :func:`one_input_error`'s."""
    return one_input_error(method, f"this job's {inputs}")


def _several(method: Callable, model: Any, inputs: Any) -> _Several | None:
    """The inputs of a job given a list, tuple or dict of input arrays, checked (one per
    input of the model, the same count N along axis 0, each a batch), or None for one
    array (refused for a model of several inputs). Raises before any work."""
    k_model = getattr(model, "num_inputs", None)  # None: a plain function takes any
    names_model = list(getattr(model, "input_names", None) or [])
    listed = f" ({model_inputs(model)})" if names_model else ""
    if not _is_structure(inputs):
        if isinstance(k_model, int) and k_model > 1 and getattr(_unwrap(method), "one_input",
                                                                 None):
            raise one_input_error(method, one_of_several(model, inputs))  # (all: refused)
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


def _bound_options(method: Callable, names: Any = None) -> tuple[Callable, dict]:
    """``(method, bound)``: the options ``names`` (default: those of
    :func:`several_input_options`) that ``functools.partial`` layers of ``method`` bind,
    taken out of them (an outer layer's over an inner one's, as the partial's call gives
    them), and the method without them."""
    if not isinstance(method, functools.partial):
        return method, {}
    if names is None:
        names = {spec.partition(".")[0] for spec in several_input_options(method)}
    func, bound = _bound_options(method.func, names)
    kept = {k: v for k, v in method.keywords.items() if k not in names}
    bound.update((k, v) for k, v in method.keywords.items() if k in names)
    if func is method.func and len(kept) == len(method.keywords):
        return method, bound
    return (functools.partial(func, *method.args, **kept) if method.args or kept
            else func), bound


def map_several_input_options(method: Callable, options: dict,
                              fn: Callable[[Any, str], Any]) -> dict:
    """``options`` with ``fn(value, label)`` applied to each of :func:`several_input_options`
    present (``"baseline"``, or a dict option's key, ``"method_options.baseline"``, labelled
    ``method_options['baseline']``); the others as they are."""
    out = dict(options)
    for spec in several_input_options(method):
        name, _, key = spec.partition(".")
        if name not in out:
            continue
        if not key:
            out[name] = fn(out[name], name)
        elif isinstance(out[name], dict) and key in out[name]:
            out[name] = {**out[name], key: fn(out[name][key], f"{name}[{key!r}]")}
    return out


def _arrange_options(method: Callable, several: _Several, options: dict) -> dict:
    """``options`` with each of :func:`several_input_options` given per input (a dict keyed
    by the input names, a list by position) in the container the method takes beside the
    inputs (:meth:`_Several.arrange`); the others as they are."""
    return map_several_input_options(method, options, several.arrange)


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
                   shared: tuple[str, ...] = (), several: _Several | None = None,
                   rows: tuple[str, ...] = ()) -> None:
    """Refuse an array option of the inputs' rank whose leading axis is neither the inputs'
    count nor 1: it cannot be split into chunks with the inputs. For several inputs, the
    arrays of an option given per input (a list of one per input, a dict keyed by their
    names) are checked against their own input's rank. For one input, nested Python lists
    of the inputs' rank and count (:func:`_nested_rows`) are refused: a job slices arrays
    only (``rows``: the options the method says hold one row per input, sliced whatever
    they are)."""
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
        elif several is None and k not in rows and _nested_rows(v, n, ndim):
            raise ValueError(
                f"option {name} is nested Python lists of shape {np.shape(v)}: one row per "
                f"input ({n}, with the inputs' rank {ndim}) as a direct call reads it, but a "
                "job splits only arrays into chunks with the inputs (a list of several values "
                "for every input, XRAI's baselines, is passed whole). Pass it as a NumPy array, "
                f"np.asarray({name}), to have its rows sliced with the inputs; a list of "
                "values each for every input, as a list of arrays")


def _nested_rows(v: Any, n: int, ndim: int) -> bool:
    """Whether option value ``v`` is nested Python lists (or tuples) of numbers, no array in
    them, that read as an array of the inputs' rank ``ndim`` (2 or more) with their count
    ``n`` (more than 1) of rows: what a direct call reads as one row per input, which a job
    would pass whole to every chunk (it slices arrays only; a list of values, XRAI's
    ``baselines``, is passed whole)."""
    if not isinstance(v, (list, tuple)) or n < 2 or ndim < 2:
        return False
    stack = list(v)
    while stack:
        e = stack.pop()
        if isinstance(e, (list, tuple)):
            stack.extend(e)
        elif hasattr(e, "shape") and np.ndim(e) > 0:
            return False  # (an array in it: XRAI's baselines=[rows, 0.0], sliced entry-wise)
    try:
        a = np.asarray(v)
    except (TypeError, ValueError):  # (ragged)
        return False
    return a.dtype.kind in "biuf" and a.ndim == ndim and a.shape[0] == n


def _rows(v: Any, lo: int, hi: int, pad: int) -> np.ndarray:
    """Rows ``lo:hi`` of array ``v``, in the machine's byte order, padded with ``pad`` copies
    of the last."""
    v = native(np.asarray(v)[lo:hi])  # (JAX reads no big-endian array)
    if pad:
        v = np.concatenate([v, np.repeat(v[-1:], pad, axis=0)])
    return v


def _map_rows(options: dict, n: int, ndim: int, fn: Callable[[str, Any], Any],
              shared: tuple[str, ...] = (), rows: tuple[str, ...] = (),
              several: _Several | None = None, where: str | None = None) -> dict:
    """``options`` with every value of one row per input, which a job slices with its inputs,
    replaced by ``fn(name, value)`` (``name``: the option, ``"fill['img']"`` for one input's
    of several or an entry of a dict option): an array of the inputs' rank and count (also an
    entry of a list option of one input array: XRAI's ``baselines``), one that ``rows`` names
    (:func:`per_input_options`), each input's own of an option given per input (a list, or a
    dict by name), not those of ``shared``. The one rule of what is
    sliced (:func:`_chunk_options`) and hashed (:func:`per_input_arrays`)."""
    out = {}
    for k, v in options.items():
        name = k if where is None else f"{where}[{k!r}]"
        per = None if k in shared or several is None else several.by_input(v)
        if k in shared:
            pass
        elif per is not None:  # one value per input: each by its own input's rank
            parts = dict(v) if isinstance(v, dict) else list(v)
            for key, i in per:
                e = v[key]
                if ((k in rows and np.ndim(e) >= 1)
                        or _per_input(e, n, len(np.shape(several.arrays[i])))):
                    parts[key] = fn(f"{name}[{key!r}]", e)
            v = parts if isinstance(v, dict) else tuple(parts) if isinstance(v, tuple) else parts
        elif isinstance(v, dict):
            v = _map_rows(v, n, ndim, fn, several=several, where=name)
        elif k in rows or (several is None and _per_input(v, n, ndim)):
            v = fn(name, v)
        elif several is None and isinstance(v, (list, tuple)) and any(
                _per_input(e, n, ndim) for e in v):  # XRAI's baselines=[rows, 0.0]
            parts = [fn(f"{name}[{i}]", e) if _per_input(e, n, ndim) else e
                     for i, e in enumerate(v)]
            v = tuple(parts) if isinstance(v, tuple) else parts
        out[k] = v
    return out


def _chunk_options(options: dict, n: int, ndim: int, lo: int, hi: int, pad: int,
                   shared: tuple[str, ...] = (), rows: tuple[str, ...] = (),
                   several: _Several | None = None) -> dict:
    return _map_rows(options, n, ndim, lambda _, v: _rows(v, lo, hi, pad), shared, rows,
                     several)


def per_input_arrays(options: dict, n: int, ndim: int, shared: tuple[str, ...] = (),
                     rows: tuple[str, ...] = (), several: _Several | None = None
                     ) -> tuple[list[tuple[str, Any]], dict]:
    """The numeric option arrays a job slices with its inputs (:func:`_map_rows`: IG
    baselines per input, ``evaluate``'s maps), as ``(name, array)``, and ``options`` with
    each replaced by its rows' shape and dtype. The job's signature describes them so, and
    each chunk's hash covers their rows as it covers the inputs': a row fixed since (a NaN
    map cleaned) is computed again, the others are kept."""
    found: list[tuple[str, Any]] = []

    def take(name: str, v: Any) -> Any:
        a = v if hasattr(v, "dtype") else np.asarray(v)
        if np.ndim(a) < 1 or len(a) != n or np.dtype(a.dtype).kind not in "biufc":
            return v  # (described whole, as before)
        found.append((name, a))
        return {"rows of": [list(np.shape(a)[1:]), str(a.dtype)]}

    return found, _map_rows(options, n, ndim, take, shared, rows, several)


def public_function(fn: Any) -> bool:
    """Whether ``fn`` is one of jaxsal's public functions (``jaxsal.saliency``), not one a
    jaxsal factory made (whose closure holds its settings) nor a user's."""
    import jaxsal  # (loaded: this module is one of its own)

    return (isinstance(fn, types.FunctionType) and (fn.__module__ or "").startswith("jaxsal")
            and getattr(jaxsal, fn.__name__, None) is fn)


def _method_name(method: Callable) -> str:
    """How an error names ``method``: ``jaxsal.saliency`` for one of jaxsal's public
    functions (also under ``functools.partial`` layers), else its name."""
    fn = _unwrap(method)
    name = getattr(fn, "__name__", None)
    if public_function(fn):
        return f"jaxsal.{name}"
    return getattr(fn, "__qualname__", None) or name or type(fn).__name__


def _called_with(method: Callable) -> tuple[inspect.Signature, list[str]] | None:
    """``method``'s signature and the names of the parameters a job passes by position
    (its first three, ``model, x, targets``), or None where it has no signature."""
    try:
        sig = inspect.signature(method)
    except (TypeError, ValueError):  # (a builtin, a C callable)
        return None
    positional = [name for name, p in sig.parameters.items()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return sig, positional[:3]


def _bound_keywords(method: Callable, *, none_unset: bool = False) -> dict:
    """The keywords the ``functools.partial`` layers of ``method`` bind, as the partial's
    call gives them to the function under them: an outer layer's over an inner one's
    (``{}`` for a method of no partial). ``none_unset``: a keyword bound to None counts as
    not bound, so an inner layer's value of it shows (``check_finite=None``)."""
    layers = []
    while isinstance(method, functools.partial):
        layers.append(method.keywords)
        method = method.func
    bound: dict = {}
    for keywords in reversed(layers):  # (the innermost first: the outer ones win)
        bound.update((k, v) for k, v in keywords.items() if v is not None or not none_unset)
    return bound


def _bound_positional(method: Callable) -> tuple[list[str], list[str]]:
    """The keywords bound in ``method``'s ``functools.partial`` layers
    (:func:`_bound_keywords`), and the names of the parameters a job passes the function
    under them by position (its first three after those the partials bind by position);
    ``([], [])`` for a plain function or one without a signature."""
    func, skip = method, 0
    while isinstance(func, functools.partial):
        skip += len(func.args)
        func = func.func
    if func is method:
        return [], []
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # (a builtin, a C callable)
        return [], []
    positional = [p.name for p in params
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return list(_bound_keywords(method)), positional[skip:skip + 3]


def unknown_option(method: Callable, names: Any, given: tuple[str, ...] | None = None
                   ) -> tuple[str, list[str]] | None:
    """The first of option ``names`` that ``method`` does not take as a keyword, and the
    options it takes (its keyword parameters but ``given``, those the caller passes itself:
    by default its first three, ``model, x, targets``); None where it takes them all (a
    method with ``**kwargs`` takes any). The one check of :func:`jaxsal.explain_to_file`
    and of the command line's ``--option`` (before any work: the call would fail in the
    first chunk with Python's "unexpected keyword argument")."""
    called = _called_with(method)
    if called is None:
        return None
    sig, positional = called
    params = sig.parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return None
    given = tuple(positional) if given is None else given
    takes = [n for n, p in params.items()
             if n not in given and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for name in names:
        if name not in takes and name not in given:
            return name, takes
    return None


def unknown_option_words(what: str, name: str, takes: list[str]) -> str:
    """The words of :func:`unknown_option`'s refusal: ``"jaxsal.saliency takes no option
    'patch'; its options: reduce, head, ..."``."""
    return (f"{what} takes no option {name!r}; its options: "
            f"{', '.join(takes) if takes else '(none)'}")


def check_call(method: Callable, options: dict) -> None:
    """Refuse, before any work, ``options`` that ``method`` cannot be called with as a job
    calls it for each chunk, ``method(model, x, targets, **options)``: an option it does not
    take (:func:`unknown_option`), one of the three it is passed by position (also bound by
    keyword in a ``functools.partial``: ``partial(jaxsal.saliency, targets=3)``), a required
    keyword left out (:func:`jaxsal.neuron_conductance`'s ``neuron``). Each failed in the
    first chunk with Python's ``TypeError``; so is this, naming the method and its options."""
    called = _called_with(method)
    if called is None:
        return
    sig, positional = called
    what = _method_name(method)
    # a functools.partial that binds one of them by keyword (partial(saliency, targets=3)):
    # its signature makes it keyword-only, and the call failed, "too many positional
    # arguments"
    bound, passed = _bound_positional(method)
    passed = passed or positional  # (those of the function under the partials)
    for name, where in [(n, "") for n in options] + [(n, " (bound in the functools.partial)")
                                                      for n in bound]:
        if name in passed:
            raise TypeError(f"option {name}=...{where}: explain_to_file passes {what}'s "
                            f"{', '.join(passed)} itself (each chunk's call is method(model, "
                            "inputs[i:j], targets, **options)): give the inputs and targets "
                            "as explain_to_file's own arguments")
    found = unknown_option(method, options)
    if found is not None:
        raise TypeError(f"{unknown_option_words(what, *found)}. Options are passed on to the "
                        "method as keywords: check the name (nothing was computed)")
    try:
        sig.bind(None, None, None, **options)
    except TypeError as e:
        raise TypeError(f"explain_to_file calls {what}(model, inputs[i:j], targets, "
                        f"**options) for each chunk, which fails with these options: {e}. "
                        "Pass the options it needs (nothing was computed)") from None


def _takes_offset(method: Callable, options: dict | None = None) -> bool:
    """Whether a job passes ``method`` each chunk's ``index_offset`` (the position of its
    first input in the job): where it names that parameter (:func:`jaxsal.smoothgrad`), or
    where it takes ``**kwargs`` and is given a ``key`` (in ``options`` or bound in a
    ``functools.partial``): a wrapper of a random method, which passes its keywords on, would
    otherwise draw the noise of each chunk's first input as the job's first input's, and its
    maps would depend on the batch size (:func:`_implicit_offset`)."""
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False
    return "index_offset" in params or _implicit_offset(method, options)


def _implicit_offset(method: Callable, options: dict | None) -> bool:
    """Whether a job passes ``index_offset`` to ``method`` because it takes ``**kwargs``
    and is given a ``key`` (not because it names the parameter)."""
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False
    if "index_offset" in params or not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return False
    keyed = "key" in (options or {})
    fn = method
    while isinstance(fn, functools.partial) and not keyed:
        keyed = "key" in fn.keywords
        fn = fn.func
    return keyed


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
