"""The ``jaxsal`` command line: ``demo``, ``summary``, ``explain`` and ``evaluate`` (batch jobs
to disk).

    jaxsal demo --out jaxsal_out
    jaxsal summary model.h5
    jaxsal explain model.h5 inputs.npy --method saliency --targets all --out maps.npy
    jaxsal explain model.h5 inputs.npy --method smoothgrad --seed 0 --out sg.npy
    jaxsal explain model.h5 inputs.npy --method occlusion --patch 4 --stride 2 --out occ.npy
    jaxsal explain model.h5 inputs.npy --method shapley_values --patch 7 --out shap.npy
    jaxsal evaluate model.h5 inputs.npy maps.npy --metric deletion --targets all --out del.npy

A model of several inputs takes one INPUTS file per input, in the order of its inputs (as
`summary` lists them) or as NAME=FILE.npy, e.g. ``explain two.keras img.npy vec.npy --out
maps.npy``; a method giving a map per input writes ``maps.img.npy`` and ``maps.vec.npy``.

I/O lives here; the engine never prints.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import os
import re
import sys
import time
from importlib import resources
from typing import Any

import numpy as np

METHODS = ("saliency", "gradient_x_input", "guided_backprop", "deconvnet", "smoothgrad",
           "gradient_shap", "deeplift", "deeplift_shap", "lrp", "integrated_gradients",
           "blur_integrated_gradients", "guided_integrated_gradients", "gradcam",
           "gradcam_plus_plus", "layercam", "hirescam", "xgradcam", "scorecam", "eigencam",
           "eigengradcam", "gradcam_elementwise", "ablationcam", "fullgrad", "guided_gradcam",
           "occlusion", "rise", "shapley_values", "shapley_value_sampling", "kernel_shap",
           "lime", "layer_conductance", "internal_influence", "neuron_conductance", "xrai")


def _data_path(name: str) -> str:
    return str(resources.files("jaxsal").joinpath("data", name))


def _enable_cache(cache_dir: str | None) -> None:
    """``--cache-dir``: JAX's persistent compilation cache in that folder (made if missing).
    A path that is a file is refused (JAX warned once, "Error reading persistent compilation
    cache entry", and ran the job without the cache asked for)."""
    if cache_dir and os.path.exists(cache_dir) and not os.path.isdir(cache_dir):
        raise ValueError(f"--cache-dir {cache_dir} (or $JAXSAL_CACHE_DIR) is a file; expected "
                         "the folder of JAX's compilation cache (made if missing): pass a "
                         "folder's path")
    if cache_dir:
        import jax

        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


#: ``jaxsal evaluate``'s ``--metric``s (jaxsal's functions of those names).
METRICS = ("deletion", "insertion")
#: Methods that draw random numbers: they need ``--seed``.
RANDOM_METHODS = ("smoothgrad", "gradient_shap", "rise", "shapley_value_sampling",
                  "kernel_shap", "lime")
#: Methods that explain a layer's units: they need ``--layer``.
LAYER_METHODS = ("layer_conductance", "internal_influence", "neuron_conductance")
#: Methods whose feature groups are patches: they take ``--patch``.
PATCH_METHODS = ("occlusion", "shapley_values", "shapley_value_sampling", "kernel_shap",
                 "lime")


def _num_classes(model) -> int:
    """The class ids ``--targets all`` lists: ``K`` for ``(N, K)`` outputs, 2 for a one-unit
    (sigmoid) output (classes 0 and 1, as the methods read them); the output was checked by
    :func:`_check_class_output`."""
    from jaxsal._src.targets import OutputInfo

    shape = model.output_shape
    if len(shape) != 1:  # (refused by _check_class_output before: a guard)
        raise ValueError(f"--targets all: expected outputs of shape (N, classes), got shape "
                         f"{tuple(shape)} without the batch axis; explain this model in "
                         f"Python with a score function (targets=lambda out: ...)")
    k = shape[0]
    if not isinstance(k, int):
        raise ValueError("--targets all needs the number of classes; this model's output has "
                         "shape (N, None) (it depends on the input's size): pass the class "
                         "ids, e.g. --targets 0,1,2")
    return OutputInfo(k).num_classes


def _check_class_output(model, method: str, command: str = "explain",
                        inputs: Any = None) -> None:
    """Refuse, before the job, a model whose targets the command line cannot give: class ids
    and the predicted class read one ``(N, classes)`` output, and the command line has no
    score function (the methods' own errors advise Python: ``model.with_output``, ``targets=
    lambda ...``). ``method``: the ``--method`` (or ``--metric``) that will run; ``command``:
    ``"explain"`` or ``"evaluate"`` (whose metrics take the maps, and which has no
    ``--method``); ``inputs``: the job's ``(N, ...)`` inputs (a list for a model of several),
    to tell an ``(N,)`` output from one without the batch axis, which both have shape
    ``()``."""
    shape = model.output_shape
    if isinstance(shape, list):
        names = list(model.output_names)
        listing = ", ".join(f"{n!r} {tuple(s)}" for n, s in zip(names, shape))
        raise ValueError(f"this model has {len(shape)} outputs ({listing}); --targets (class "
                         f"ids, 'all' or the predicted class) read one: pick it with --output "
                         f"NAME (e.g. --output {names[0]})")
    if len(shape) == 0 and not _one_value_per_input(model, inputs):
        # no batch axis at all (tf.nn.l2_loss of the batch): the per-example check says
        # what is wrong, naming the layer (--targets all has no classes to count)
        return
    if len(shape) != 1:
        if shape:
            dims = f"(N, {', '.join(str(d) for d in shape)})"
            what = "a class per position, such as a segmentation map, say"
            score = "targets=lambda out: out[..., k].reshape(len(out), -1).mean(1)"
            means = "class k averaged over the positions"
        else:  # (N,): a sigmoid's probability reshaped, a regression's value
            dims, what = "(N,)", "one value per input, no class axis"
            score, means = "targets=lambda out: out", "the output itself"
        if command == "evaluate":
            raise ValueError(
                f"--targets: the command line evaluates maps of class outputs, shaped (N, "
                f"classes); this model's output has shape {dims} ({what}), which class ids "
                f"and the predicted class do not index. Evaluate the maps in Python with a "
                f"score function reading one value per input, e.g. jaxsal.{method}(model, x, "
                f"maps, {score}) ({means})")
        raise ValueError(
            f"--targets: the command line explains class outputs, shaped (N, classes); this "
            f"model's output has shape {dims} ({what}), which class ids and the predicted "
            f"class do not index. Explain it in Python with a score function reading one "
            f"value per input, e.g. jaxsal.{method}(model, x, {score}) ({means}; "
            f"jaxsal.explain_to_file runs it as a resumable job); --method eigencam runs here "
            f"without --targets (it reads no output)")


def _one_value_per_input(model, inputs: Any) -> bool:
    """Whether ``model``'s output, of shape ``()`` without the batch axis, is ``(N,)`` for
    ``inputs`` (``(N, ...)``, a list for a model of several; traced abstractly, with ``N``
    at least 2) rather than one value for the whole batch; ``False`` where it cannot tell.
    A model that mixes the batch is refused here, by the methods' per-example check."""
    import jax

    from jaxsal._src import base
    from jaxsal._src.per_example import check_per_example

    if inputs is None:
        return False
    leaves = inputs if isinstance(inputs, list) else [inputs]
    n = max(2, len(leaves[0]))

    def batch(a):  # (the dtype: as _check_rows reads it, no row read)
        dtype = np.dtype(a.dtype)
        return jax.ShapeDtypeStruct((n, *a.shape[1:]),
                                    np.float32 if dtype.kind == "f" else dtype)

    xs = [batch(a) for a in leaves] if isinstance(inputs, list) else batch(inputs)
    try:
        m = base.as_model(model)
        y = base.model_shapes(m, xs)[0]
    except Exception:  # (the method says what is wrong)
        return False
    check_per_example(m, xs, y)  # (an output without the batch axis: refused as such)
    return isinstance(y, jax.ShapeDtypeStruct) and tuple(y.shape) == (n,)


def _parse_targets(s: str | None, model, n: int, method: str, command: str = "explain",
                   inputs: Any = None):
    """``--targets``: None (predicted), the ids of ``all``, one id, a list of ids, or the
    ``(N, T)`` per-input ids of ``@FILE.npy`` (``(N,)`` labels read as ``(N, 1)``), for the
    ``method`` that will run (Eigen-CAM without targets reads no output) in ``command``
    (``"explain"`` or ``"evaluate"``, for the advice of :func:`_check_class_output`, which
    reads the shapes of ``inputs``)."""
    import jaxsal
    from jaxsal._src.job_inputs import class_free

    if (s is None or s == "predicted") and class_free(getattr(jaxsal, method, None)):
        return None  # (Eigen-CAM: no class axis, reads no output)
    _check_class_output(model, method, command, inputs)
    if s is None or s == "predicted":
        return None
    if s == "all":
        return list(range(_num_classes(model)))
    if s.startswith("@"):
        ids = _load_npy(s[1:], "--targets @FILE", mmap=False)
        if not np.issubdtype(ids.dtype, np.integer) or ids.ndim not in (1, 2) or len(ids) != n:
            raise ValueError(
                f"--targets @{s[1:]}: expected per-input class ids, an int array of shape "
                f"({n},) (one label per input) or ({n}, T), got {ids.dtype} of shape "
                f"{ids.shape}; e.g. np.save('labels.npy', y.astype(int))")
        # (an (N, T) row may repeat a class, as in the Python call: columns such as each
        # input's label and its predicted class coincide where the prediction is right)
        return ids[:, None] if ids.ndim == 1 else ids
    items = [t.strip() for t in s.split(",")]
    # one comma after the last id makes a list of one ('3,': maps (N, 1, ...)); any other
    # empty item is a typo ('1,,2' was read as 1,2)
    parts = items[:-1] if len(items) > 1 and not items[-1] else items
    empty = [k + 1 for k, t in enumerate(parts) if not t]
    if empty and len(empty) < len(parts):
        said = (f"item {empty[0]}" if len(empty) == 1 else
                f"items {', '.join(map(str, empty[:-1]))} and {empty[-1]}")
        raise ValueError(f"--targets: expected class ids separated by single commas (one after "
                         f"the last makes a list of one: 3,), got {s!r}: {said} of "
                         f"{len(items)} {'is' if len(empty) == 1 else 'are'} empty; remove "
                         f"the extra comma (--targets {','.join(t for t in parts if t)})")
    parts = [t for t in parts if t]
    if not parts or not all(map(_is_int, parts)):
        raise ValueError(f"--targets: expected 'predicted', 'all', a class id, ids like "
                         f"0,3,7 or @FILE.npy (per-input ids); got {s!r}")
    ids = [int(t) for t in parts]
    if len(set(ids)) < len(ids):
        raise ValueError(f"--targets {s}: expected distinct class ids (each is explained for "
                         f"every input), got repeats; per-input labels go as @FILE.npy, e.g. "
                         f"np.save('labels.npy', y.astype(int)) then --targets @labels.npy")
    return ids[0] if len(ids) == 1 and "," not in s else ids


def _is_int(s: str) -> bool:
    """Whether ``s`` is an int typed as digits: an optional sign, then ``0``-``9`` only. Every
    integer flag reads its value through this (Python's ``int()`` also reads ``'3_0'`` as 30
    and ``' 3 '`` or ``'\u0663'`` as 3)."""
    return re.fullmatch(r"[+-]?[0-9]+", s) is not None


def _int_type(expected: str = "an int"):
    """An argparse type taking an int typed as digits (:func:`_is_int`), whose error says
    ``expected`` and what was got: ``argument --steps: expected an int typed as digits (e.g.
    100), got '1_0'``."""
    def check(s: str) -> int:
        if not _is_int(s):
            raise argparse.ArgumentTypeError(f"expected {expected} typed as digits, got {s!r}")
        return int(s)
    return check


def _parse_sizes(s: str, flag: str):
    """``"8"`` -> 8, ``"8,4"`` -> (8, 4) (one size per spatial axis), each typed as digits."""
    parts = [t.strip() for t in s.split(",")]
    if not all(map(_is_int, parts)):
        raise ValueError(f"{flag}: expected an int or ints like 8,4 (one per spatial axis), "
                         f"typed as digits, got {s!r}")
    sizes = [int(t) for t in parts]
    return sizes[0] if len(sizes) == 1 else tuple(sizes)


#: ``--seed`` takes 0 <= SEED < 2**32: ``jax.random.key`` overflows from 2**63, and in JAX's
#: default 32-bit mode keeps only the low 32 bits (2**32 would give seed 0's numbers, -1 those
#: of 2**32 - 1), so only this range gives distinct keys, the same with and without x64.
SEED_LIMIT = 2**32
#: ``--batch-size`` where it is not given (with ``--devices N``: rounded down to a multiple
#: of ``N``, see :func:`_batch_sharding`).
DEFAULT_BATCH_SIZE = 64


def _devices(s: str) -> int | str:
    """``--devices``' argparse type: ``all`` or a positive int (the local devices the batch
    axis is split over; checked against the machine's by :func:`_batch_sharding`)."""
    if s == "all":
        return s
    count = int(s) if _is_int(s) else 0
    if count < 1:
        raise argparse.ArgumentTypeError(
            f"expected 'all' or a positive int (how many of this machine's devices split each "
            f"chunk's inputs), got {s!r}")
    return count


def _batch_sharding(args):
    """``--devices``: ``None`` (JAX's default device), or a ``NamedSharding`` splitting each
    chunk's batch axis over the first ``N`` (or all) of the local devices, a 1-D mesh
    (``jax.local_devices()``, in their order). Refused here, before the model is read: more
    devices than the machine has, and a ``--batch-size`` that does not split into whole
    shards (a multiple of the device count). Sets ``args.batch_size`` where it was not
    given: :data:`DEFAULT_BATCH_SIZE`, on ``N`` devices rounded down to a multiple of ``N``
    (63 on 3; at least ``N``), so that ``--devices 3`` runs without a ``--batch-size``."""
    if args.devices is None:
        if args.batch_size is None:
            args.batch_size = DEFAULT_BATCH_SIZE
        return None
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    local = jax.local_devices()
    count = len(local) if args.devices == "all" else args.devices
    if count > len(local):
        raise ValueError(f"--devices {count}: this machine has {len(local)} "
                         f"{local[0].platform.upper()} device{'s' * (len(local) > 1)} "
                         f"(jax.local_devices()); pass at most {len(local)}, or all")
    if args.batch_size is None:  # the default, made a multiple of the count
        args.batch_size = max(count, DEFAULT_BATCH_SIZE - DEFAULT_BATCH_SIZE % count)
    elif args.batch_size >= 1 and args.batch_size % count:  # (others: explain_to_file's)
        up = -(-args.batch_size // count) * count
        raise ValueError(f"--batch-size {args.batch_size} does not split over --devices "
                         f"{args.devices} ({count} devices): expected a multiple of {count} "
                         f"(each device explains batch-size / {count} inputs of every "
                         f"chunk); pass e.g. --batch-size {up}")
    mesh = Mesh(np.array(local[:count]), ("batch",))
    return NamedSharding(mesh, PartitionSpec("batch"))


def _choice(choices: tuple[str, ...], what: str):
    """An argparse type taking one of ``choices`` (each a ``what``: method, metric), whose
    error suggests the nearest ones (``--method salency``: did you mean 'saliency'?; case,
    ``-`` for ``_`` and small misspellings), where argparse's ``choices=`` gives no hint."""
    def check(s: str) -> str:
        if s in choices:
            return s
        import difflib

        key = s.strip().lower().replace("-", "_")
        close = [key] if key in choices else difflib.get_close_matches(key, choices, n=3,
                                                                       cutoff=0.6)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise argparse.ArgumentTypeError(f"unknown {what} {s!r}; {hint}expected one of: "
                                         f"{', '.join(choices)}")
    return check


def _seed(s: str) -> int:
    """``--seed``'s argparse type: an int in ``[0, SEED_LIMIT)``, typed as digits."""
    seed = int(s) if _is_int(s) else None
    if seed is None or not 0 <= seed < SEED_LIMIT:
        raise argparse.ArgumentTypeError(
            f"expected an int 0 <= SEED < 2**32 = {SEED_LIMIT} (in JAX's default 32-bit mode "
            f"jax.random.key keeps only a seed's low 32 bits), got {s!r}; pick a seed in that "
            "range")
    return seed


_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"  # an .npz archive (numpy.savez) is a zip file


def _load_npy(path: str, what: str, *, mmap: bool = True) -> np.ndarray:
    """The array in the ``.npy`` file ``path`` (memory-mapped unless ``mmap=False``), or a
    ``ValueError`` naming ``what`` (``inputs``, ``maps``, ``--option fill=@FILE``...), the
    file and how to make a .npy: every array a subcommand reads goes through here."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(len(_NPY_MAGIC))
    except OSError as e:
        raise ValueError(f"{what}: could not read the array in {path} "
                         f"({e.strerror or e}); expected a .npy file written by numpy.save"
                         ) from None
    if magic.startswith(_ZIP_MAGIC):
        try:
            with np.load(path, allow_pickle=False) as archive:
                names = list(archive.files)
        except (OSError, ValueError, EOFError) as e:
            names, why = [], f" (not a readable archive: {e})"
        else:
            why = f" (arrays: {', '.join(names)})" if names else " (an empty archive)"
        name = names[0] if names else "x"
        npy = os.path.splitext(path)[0] + f"_{name}.npy"
        raise ValueError(
            f"{what}: expected a .npy array (numpy.save), got {path}, an .npz archive of "
            f"arrays (numpy.savez){why}; save the one you need as a .npy and pass that: "
            f"python -c \"import numpy as np; np.save({npy!r}, np.load({path!r})[{name!r}])\"")
    if magic != _NPY_MAGIC:
        reason = ("the file is empty" if not magic else
                  f"it does not start with the .npy signature {_NPY_MAGIC!r}")
    else:
        try:
            array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            reason = str(e)
            from jaxsal._src.job_files import marked_unfinished

            if marked_unfinished(path):  # a job's, its rows not all written
                _check_finished(path, what)  # (its progress file: how many chunks)
                raise ValueError(
                    f"{what}: {path} is the output of an unfinished job (its .npy header "
                    "says so; no progress file lists it, so which chunks are finished is "
                    "unknown): the rows of its unfinished chunks are zeros. Run the command "
                    "that wrote it again (it starts over), then use it") from None
        else:
            _check_finished(path, what)
            if mmap:  # (the batch job takes each chunk to the machine's byte order)
                return array
            from model_import._model import native

            return native(array)  # JAX takes no big-endian arrays
    raise ValueError(f"{what}: expected a .npy array, but {path} is not a readable .npy file "
                     f"(truncated, not written by numpy.save, or of Python objects): "
                     f"{reason}. Write it again with numpy.save(path, array)")


def _check_finished(path: str, what: str) -> None:
    """Refuse the output of an unfinished batch job (``jaxsal explain`` / ``evaluate``
    stopped before its last chunk): the rows of its unfinished chunks are zeros."""
    from jaxsal._src.job_files import unfinished

    try:
        left = unfinished(path)
    except ValueError as e:  # a progress file that cannot be read (torn, another program's)
        raise ValueError(f"{what}: {e}") from None
    if left is not None:
        done, chunks, progress_path = left
        raise ValueError(
            f"{what}: {path} is the output of an unfinished job ({done} of {chunks} chunks "
            f"done, says {progress_path}); the rows of the other chunks are zeros. Run the "
            "command that wrote it again to finish it (it resumes), then use it; if the file "
            f"was written otherwise since, delete {progress_path}")


#: A number as Python writes it where JSON does not: ``.1``, ``1.``, ``+0.1``, ``-.5``, ``+3``
#: (digits, an optional point and exponent; no ``_``, ``nan`` or ``inf``, kept as written)
_PY_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _parse_option(s: str) -> tuple[str, object]:
    """``NAME=VALUE``; VALUE is read as JSON (numbers, true/false, lists, objects) when it
    parses, Python's ``True``/``False``/``None`` as those values, a number JSON does not
    read (``.1``, ``1.``, ``+0.1``) as Python's ``int``/``float`` read it, ``@FILE.npy`` as
    the array in that file (a baseline, a distribution of baselines, an occlusion fill),
    else kept as a string."""
    import json

    name, eq, value = s.partition("=")
    if not eq or not name.isidentifier():
        raise ValueError(f"--option: expected NAME=VALUE (e.g. --option n=16), got {s!r}")
    if value.startswith("@"):
        if not value.endswith(".npy"):
            raise ValueError(f"--option {name}=@FILE: expected a .npy file after '@' (an "
                             f"array saved with numpy.save), got {value[1:]!r}")
        return name, _load_npy(value[1:], f"--option {name}=@FILE", mmap=False)
    if value in ("True", "False", "None"):  # the string "False" would be true in a flag
        return name, {"True": True, "False": False, "None": None}[value]
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        if _PY_NUMBER.fullmatch(value):  # (so fill=.5 is the option of fill=0.5's job)
            return name, int(value) if value.lstrip("+-").isdigit() else float(value)
        return name, value

    # "@FILE.npy" in a JSON list or object: one array per input of a model
    return name, _map_npy_refs(
        parsed, lambda file: _load_npy(file, f"--option {name}=...@{file}", mmap=False))


def _command_line_advice(message: str, args) -> str:
    """``message`` with the Python advice about an ``--option`` put the command line's way:
    ``--option n=4.0`` where an int is expected is told ``--option n=4``, not ``n=int(...)``."""
    for item in getattr(args, "option", None) or ():
        name, _, value = item.partition("=")
        python = f"; pass an int: {name}=int(...)"
        if python not in message:
            continue
        try:
            whole = float(value)
        except ValueError:
            continue
        if whole.is_integer():
            message = message.replace(python, f"; type it as digits, without a point "
                                              f"(--option {name}={int(whole)})")
    return message


def _map_npy_refs(v: object, f) -> object:
    """``v`` (parsed JSON) with each ``"@FILE.npy"`` string in it, in lists and objects too,
    replaced by ``f(FILE)``."""
    if isinstance(v, str) and v.startswith("@") and v.endswith(".npy"):
        return f(v[1:])
    if isinstance(v, list):
        return [_map_npy_refs(e, f) for e in v]
    if isinstance(v, dict):
        return {k: _map_npy_refs(e, f) for k, e in v.items()}
    return v


def _option_files(value: str) -> list[str]:
    """The ``.npy`` files an ``--option NAME=VALUE`` reads: ``@FILE.npy``, or the
    ``"@FILE.npy"`` strings in a JSON list or object."""
    import json

    if value.startswith("@"):
        return [value[1:]]
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        return []
    found: list[str] = []
    _map_npy_refs(parsed, found.append)
    return found


#: What the job itself takes, by its own flags: never a method's ``--option``. ``head``: every
#: method's ``head=`` option is the model's head, ``--head`` (it has a default, so a method's
#: head given too would silently override it: ``--head softmax --option head=logits`` gave
#: logits maps).
_JOB_FLAGS = {"targets": "--targets", "batch_size": "--batch-size", "path": "--out",
              "head": "--head", "method": "--method", "model": "the MODEL argument",
              "x": "the INPUTS argument", "inputs": "the INPUTS argument",
              "on_chunk": "the job (it prints the progress)",
              "resume": "the job (it resumes the same job, else starts over)"}


#: Options of the job's names that a method may take itself: SmoothGrad's ``method`` (the
#: gradient it smooths), occlusion's or deletion's ``batch_size`` (perturbed inputs per
#: forward pass; the job's is --batch-size, inputs per chunk).
_OWN = ("method", "batch_size")


def _job_flag(name: str, method=None) -> None:
    """Refuse ``--option NAME=...`` for what the job takes by its own flags, but for the
    options of :data:`_OWN` that ``method`` takes itself."""
    import inspect

    if name in _OWN and method is not None and name in inspect.signature(method).parameters:
        return
    if name in _JOB_FLAGS:
        raise ValueError(f"--option {name}=...: {name} is given by {_JOB_FLAGS[name]}; pass "
                         "it there")


def _method_options(args) -> dict:
    """The method's options from the command line, checked against the method."""
    options: dict = {}
    if args.layer:
        options["layer"] = args.layer
    elif args.method in LAYER_METHODS:
        raise ValueError(f"--method {args.method} explains a layer's units and needs --layer "
                         f"NAME (`jaxsal summary MODEL` lists the layers)")
    import jaxsal

    for item in args.option or ():
        name, value = _parse_option(item)
        _job_flag(name, getattr(jaxsal, args.method))
        if name in options:
            given = ("--layer" if name == "layer" and args.layer
                     else f"another --option {name}=...")
            raise ValueError(f"--option {name}=... repeats an option given already (by "
                             f"{given}); pass it once")
        options[name] = value
    if args.method == "neuron_conductance" and "neuron" not in options:
        raise ValueError("--method neuron_conductance explains one unit or channel of --layer "
                         "and needs --option neuron=INDEX (a channel, e.g. neuron=7) or "
                         "--option 'neuron=[row, col, channel]' (one unit)")
    explicit = {"--seed": args.seed is not None, "--patch": args.patch is not None,
                "--stride": args.stride is not None}
    if args.method in RANDOM_METHODS:
        if args.seed is None:
            raise ValueError(f"--method {args.method} draws random numbers and needs --seed "
                             "INT (the same seed gives the same maps)")
    elif explicit["--seed"]:
        raise ValueError(f"--seed is used by the random methods {RANDOM_METHODS}, not by "
                         f"--method {args.method}")
    if args.method not in PATCH_METHODS and explicit["--patch"]:
        raise ValueError(f"--patch is an option of --method occlusion (and of the patch "
                         f"methods {PATCH_METHODS[1:]}), not of --method {args.method}")
    if args.method != "occlusion" and explicit["--stride"]:
        raise ValueError(f"--stride is an option of --method occlusion, not of "
                         f"--method {args.method}")
    for flag, name, value in (("--seed", "key", args.seed), ("--patch", "patch", args.patch),
                              ("--stride", "stride", args.stride)):
        if value is None:
            continue
        if name in options:
            raise ValueError(f"{flag} and --option {name}=... both given; pass one")
        if name == "key":
            import jax

            value = jax.random.key(value)
        else:
            value = _parse_sizes(value, flag)
        options[name] = value
    return options


def cmd_demo(args) -> int:
    import jax

    import jaxsal
    from jaxsal import plot
    from model_import import load_keras

    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"--out {args.out} is a file; `jaxsal demo` writes a PNG and a .npy "
                         "into the folder --out names (made if missing): pass a folder's path")
    os.makedirs(args.out, exist_ok=True)
    model = load_keras(_data_path("mnist_cnn_keras3.keras"))
    digits = np.load(_data_path("mnist_digits.npz"))
    x, y = digits["x"], digits["y"]
    print(model.summary())
    probs = np.asarray(model(x))
    print("\nPredictions on 10 held-out MNIST digits (bundled example):")
    for label, p in zip(y, probs):
        print(f"  digit {label}: predicted {int(p.argmax())} (p={p.max():.3f})")
    logits_model = model.with_head("logits")
    classes = list(range(probs.shape[1]))
    t0 = time.perf_counter()
    maps = jax.block_until_ready(jaxsal.saliency(logits_model, x, classes))  # (10, 10, 28, 28)
    dt = time.perf_counter() - t0
    print(f"\nSaliency for all {len(classes)} classes x {len(x)} digits in one call: "
          f"{tuple(maps.shape)} in {dt:.2f} s (including compilation)")
    fig = plot.grid(np.asarray(maps), inputs=x[..., 0], row_titles=[f"digit {d}" for d in y],
                    col_titles=[f"class {c}" for c in classes], scale="shared",
                    colorbar_label="max |d logit / d x|",
                    title="Saliency (vanilla gradient, logits head): rows are inputs, "
                          "columns the explained class")
    png = os.path.join(args.out, "saliency_all_classes.png")
    fig.savefig(png, dpi=110)
    npy = os.path.join(args.out, "saliency_all_classes.npy")
    np.save(npy, np.asarray(maps))
    print(f"wrote {png}\nwrote {npy} (the maps, {tuple(maps.shape)}: digits x classes x H x W)")
    return 0


def cmd_summary(args) -> int:
    from model_import import load_keras

    m = load_keras(args.model, head=args.head, keras_backend=args.keras_backend,
                   config=args.config)
    print(m.summary())
    if getattr(m, "num_inputs", 1) > 1:
        from jaxsal._src.job_inputs import model_inputs

        print(f"Inputs, in the order `jaxsal explain` takes their files: {model_inputs(m)}")
    return 0


def _input_files(args) -> list[tuple[str | None, str]]:
    """``(input name or None, file)`` of each INPUTS argument: ``FILE.npy`` (the model's
    inputs in order) or ``NAME=FILE.npy`` (bound by name); all of one form."""
    items = args.inputs if isinstance(args.inputs, list) else [args.inputs]
    files = []
    for item in items:
        name, eq, file = item.partition("=")
        if eq and name and not os.path.exists(item):
            files.append((name, file))
        else:
            files.append((None, item))
    if len({name is None for name, _ in files}) > 1:
        raise ValueError("INPUTS: give every input as NAME=FILE.npy (bound by the model's "
                         "input names) or none (FILE.npy in the order of the model's inputs), "
                         f"not a mix; got {' '.join(items)}")
    return files


def _check_out(args, outputs: list[str] = ()) -> None:
    """Refuse an ``--out`` (or one of the ``outputs`` a job over several inputs writes
    beside it) that is one of the files the command reads (the model, its ``--config``, the
    inputs, the maps, an ``@FILE.npy``): the job would write over it."""
    inputs = _input_files(args)
    reads = [("MODEL", args.model), ("--config", args.config),
             *((f"INPUTS {file}" if len(inputs) > 1 else "INPUTS", file) for _, file in inputs),
             ("MAPS", getattr(args, "maps", None))]
    if (args.targets or "").startswith("@"):
        reads.append(("--targets @FILE", args.targets[1:]))
    for item in args.option or ():
        name, _, value = item.partition("=")
        reads += [(f"--option {name}=@FILE", file) for file in _option_files(value)]
    for out in (args.out, *outputs):
        what_out = (f"--out {out}" if out == args.out else
                    f"{out} (where --out {args.out} puts the maps of one input)")
        for what, path in reads:
            if path and os.path.exists(out) and os.path.exists(path) \
                    and os.path.samefile(out, path):
                raise ValueError(f"{what_out} is the {what} file this command reads; the job "
                                 "would write over it. Pass another --out")


def _job(args):
    """What a batch job (``explain``, ``evaluate``) starts from: the compilation cache
    turned on, the model (its head and ``--output``), the inputs memory-mapped (one array,
    or a list of one per input of the model, in its order), and a progress printer for
    :func:`jaxsal.explain_to_file`."""
    import jaxsal
    from jaxsal._src.job_inputs import _one_input_error, input_paths, model_inputs
    from model_import import load_keras

    _check_out(args)
    files = _input_files(args)
    # before the model: a bad file fails fast
    arrays = [_load_npy(file, "inputs" if len(files) == 1 else f"inputs ({file})")
              for _, file in files]
    for (_, file), a in zip(files, arrays):  # (len() of it failed: "unsized object")
        if a.ndim == 0:
            raise ValueError(f"INPUTS {file}: expected a batch (N, ...) with the examples along "
                             f"axis 0, got a 0-d array (one {a.dtype} number); save the batch "
                             "of inputs, np.save(path, x) with x of shape (N, ...)")
    if len(files) == 1:  # (a job over one input array) what it refuses without the model
        from jaxsal._src.job_files import check_start_over

        check_start_over(args.out, overwrite=args.overwrite)
    _enable_cache(args.cache_dir)
    model = load_keras(args.model, head=args.head, keras_backend=args.keras_backend,
                       config=args.config)
    k = getattr(model, "num_inputs", 1)
    names = list(getattr(model, "input_names", None) or [])
    if k > 1 and args.cmd == "evaluate":
        raise ValueError(
            f"{args.model} has {k} inputs ({model_inputs(model)}); `jaxsal evaluate` runs "
            "jaxsal.deletion / jaxsal.insertion, which take one input array (they remove or "
            "add one input's values in the order of its map). Evaluate one input's maps in "
            "Python with the others held fixed (README: \"Models with several inputs\")")
    method = getattr(jaxsal, args.method, None) if args.cmd == "explain" else None
    if k > 1 and getattr(method, "one_input", None):  # one file or one per input: refused
        raise _one_input_error(method, f"{k} inputs ({model_inputs(model)})")
    named = files[0][0] is not None
    if len(files) != k or (named and sorted(n for n, _ in files) != sorted(names)):
        given = ", ".join(f"{n}={f}" if n else f for n, f in files)
        form = (" ".join(f"{n.upper()}.npy" for n in names) if k > 1 else "INPUTS.npy")
        raise ValueError(
            f"{args.model} has {k} input{'s' if k > 1 else ''}: {model_inputs(model)}; got "
            f"{len(files)} INPUTS file{'s' if len(files) > 1 else ''} ({given}). Pass one "
            f".npy per input, in that order (`jaxsal {args.cmd} {args.model} {form} ...`) "
            f"or as NAME=FILE.npy with those names")
    if named:  # in the model's order
        arrays = [dict(zip([n for n, _ in files], arrays))[name] for name in names]
    if k > 1:
        _check_out(args, input_paths(args.out, names))
    if args.output is not None:
        model = model.with_output(int(args.output) if _is_int(args.output)
                                  else args.output)
    return model, (arrays if k > 1 else arrays[0]), progress_printer()


def progress_printer(clock=time.perf_counter):
    """A job's ``on_chunk`` callback for the command line: ``  chunks done 5/40  (12.3 s,
    about 70 s left)``: the chunks written (a count; errors name a chunk by its index from
    0, ``chunk 5 (inputs 320:384)``), the seconds since it was made and, from the second
    chunk this run computes, the time left at this run's rate after its first chunk (which
    compiled the program; chunks finished by an earlier run are not this run's work) for the
    chunks still to compute (not those ``--keep-going`` left out), in seconds below 90 s,
    then in minutes (:func:`_duration`)."""
    t0 = clock()
    first: list = []  # (time, done) when this run's first chunk was written

    def progress(done: int, total: int, left_out: int = 0) -> None:
        now = clock()
        left = ""
        to_compute = total - done - left_out
        if not first:
            first.append((now, done))
        elif to_compute > 0 and done > first[0][1]:
            each = (now - first[0][0]) / (done - first[0][1])
            left = f", about {_duration(each * to_compute)} left"
        print(f"  chunks done {done}/{total}  ({now - t0:.1f} s{left})", flush=True)

    return progress


def _duration(seconds: float) -> str:
    """``"8 s"``, ``"4 min"``, ``"2 h 5 min"``: a rough time, for the time left."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 90 else f"{minutes // 60} h {minutes % 60} min"


def _check_option_names(args, fn, what: str, given: tuple = ("model", "x", "targets")) -> None:
    """Refuse, before loading anything, ``--layer`` or an ``--option NAME=`` that ``fn`` (the
    method ``what``) does not take: it failed in the first chunk, "got an unexpected keyword
    argument". ``given``: its parameters the job passes itself. The check and its words are
    :func:`jaxsal.explain_to_file`'s (``job_inputs.unknown_option``), but that the options
    listed are those ``--option`` takes: a keyword given by the job's own flag (``head``) is
    named with it, ``head is given by --head``."""
    from jaxsal._src.job_inputs import unknown_option, unknown_option_words

    names = [("--layer", "layer")] if getattr(args, "layer", None) else []
    names += [(f"--option {name}=...", name)
              for name, eq, _ in (item.partition("=") for item in args.option or ()) if eq]
    flags = {name: flag for flag, name in reversed(names)}  # (the first flag of a name)
    found = unknown_option(fn, [name for _, name in names
                                if name.isidentifier() and name not in _JOB_FLAGS], given)
    if found is not None:  # (its options as --option takes them: head=... is --head's)
        name, takes = found
        flagged = [n for n in takes if n in _JOB_FLAGS and n not in _OWN]
        words = unknown_option_words(what, name, [n for n in takes if n not in flagged])
        raise ValueError(f"{flags[name]}: {words}"
                         + "".join(f"; {n} is given by {_JOB_FLAGS[n]}" for n in flagged))


def _token_inputs(e: BaseException):
    """The :class:`jaxsal._src.validate.TokenInputs` refusal that ``e`` is or was raised from
    (the job's trace of the first chunk restates the method's errors), else None."""
    from jaxsal._src.validate import TokenInputs

    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, TokenInputs):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _layer_help() -> str:
    """``--layer``'s help, from the methods' signatures (those with ``layer=``), so that it
    names every method that takes it: the CAMs' layer, the layer the others attribute at,
    and :data:`LAYER_METHODS`, which need it."""
    import jaxsal

    takes = [m for m in METHODS if "layer" in inspect.signature(getattr(jaxsal, m)).parameters]
    cams = [m for m in takes if "cam" in m and m not in LAYER_METHODS]
    at = [m for m in takes if m not in cams and m not in LAYER_METHODS]
    need = [m for m in LAYER_METHODS if m in takes]

    def listed(names: list[str]) -> str:
        return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)

    return (f"the layer of the CAM methods {listed(cams)} (default: automatic), or the layer "
            f"{listed(at)} attribute at (e.g. the embedding of a token model, whose "
            f"inputs.npy holds integer ids); required by {listed(need)} (with --option "
            "neuron=...)")


def _token_flag_error(tokens, args, model) -> ValueError:
    """``jaxsal explain``'s own words for token ids given to a method that takes their
    gradient: the ``--layer NAME`` to pass (the Embedding that reads them, by name), not the
    Python call's ``layer=``."""
    import jaxsal

    files = _input_files(args)
    names = list(getattr(model, "input_names", None) or [])
    by_name = dict(files) if files[0][0] is not None else {}
    i = tokens.index
    file = (by_name.get(names[i]) if by_name and i < len(names) else
            files[i][1] if i < len(files) else None)
    layers = tokens.layers
    flag = f"--layer {layers[0] if layers else 'NAME'}"
    named = (flag + "".join(f" or --layer {n}" for n in layers[1:])
             + f" (the Embedding{'s' if len(layers) > 1 else ''} that read"
             f"{'' if len(layers) > 1 else 's'} them" if layers
             else "--layer NAME (the Embedding that reads them")
    named += f", or a later layer: `jaxsal summary {args.model}` lists them)"
    takes = [m for m in METHODS if m not in LAYER_METHODS and "cam" not in m
             and "layer" in inspect.signature(getattr(jaxsal, m)).parameters]
    if args.method in takes:
        fix = f"attribute at a layer instead: pass {named}"
    else:
        fix = (f"--method {args.method} takes no --layer to attribute at (it attributes to "
               f"the inputs): use --method {', '.join(takes)} with {named}")
    return ValueError(
        f"INPUTS{f' {file}' if file else ''}: this model takes integer inputs (token ids or "
        "other codes), which have no gradient (every map would be 0) and no fractions (the "
        f"masks and noise some methods scale inputs by); {fix}. Or explain the ids as they "
        "are: --method occlusion, shapley_values, shapley_value_sampling, kernel_shap, lime, "
        "rise, or a gradient CAM, eigencam or ablationcam at a layer with a token axis "
        "(--layer, a Conv1D after the embedding)")


def cmd_explain(args) -> int:
    import jaxsal
    from jaxsal._src.job_inputs import _one_input_error, input_paths

    method = getattr(jaxsal, args.method)
    _check_option_names(args, method, f"--method {args.method}")
    files = _input_files(args)
    if len(files) > 1 and getattr(method, "one_input", None):  # before loading the model
        raise _one_input_error(method, f"{len(files)} inputs ("
                               + ", ".join(f for _, f in files) + ")")
    sharding = _batch_sharding(args)  # (before the model is read: a bad --devices fails fast)
    model, inputs, progress = _job(args)
    several = isinstance(inputs, list)
    targets = _parse_targets(args.targets, model, len(inputs[0] if several else inputs),
                             args.method, inputs=inputs)
    # (an option per input, a JSON object keyed by the input names or a list in their
    # order: explain_to_file takes either)
    options = _method_options(args)
    if "batch_size" in options:  # the method's own (explain_to_file's is the job's)
        method = functools.partial(method, batch_size=options.pop("batch_size"))
    try:
        out = jaxsal.explain_to_file(method, model, inputs, args.out, targets=targets,
                                     batch_size=args.batch_size, on_chunk=progress,
                                     keep_going=args.keep_going, sharding=sharding,
                                     overwrite=args.overwrite, **options)
    except TypeError as e:
        tokens = _token_inputs(e)
        if tokens is None or args.layer:
            raise
        raise _token_flag_error(tokens, args, model) from None
    if isinstance(out, list):  # a map per input, each in its own file
        print("wrote " + "; ".join(
            f"{path}: {o.shape} {o.dtype}"
            for path, o in zip(input_paths(args.out, model.input_names), out)))
    else:
        print(f"wrote {args.out}: {out.shape} {out.dtype}")
    return 0


def _curve_scores(model, x, targets=None, *, maps, metric: str, check_finite: bool = True,
                  **options):
    """``jaxsal.deletion`` / ``jaxsal.insertion``'s scores ``(N, [T,] steps + 1)`` for
    :func:`jaxsal.explain_to_file` (which writes one array per chunk); the maps are sliced
    with the inputs. (``check_finite`` named: the job checks the inputs for it, naming the
    inputs at fault.)"""
    import jaxsal

    fn = {"deletion": jaxsal.deletion, "insertion": jaxsal.insertion}[metric]
    return fn(model, x, maps, targets, check_finite=check_finite, **options).scores


_curve_scores.per_input_options = lambda model, shape, options: ("maps",)


#: What `jaxsal evaluate` writes to its areas file (:func:`_areas_path`), for its errors.
AREAS = "the areas under its curves"


def _areas_path(out: str) -> str | None:
    """The file `jaxsal evaluate --out OUT.npy` writes the areas to, ``OUT.auc.npy`` (None
    for an ``out`` not ending ``.npy``, which it refuses)."""
    return out[:-len(".npy")] + ".auc.npy" if out.endswith(".npy") else None


def _listed(out: str, file: str) -> bool:
    """Whether the progress file of the job writing ``out`` lists ``file`` as written by it
    (``evaluate``'s areas: :func:`jaxsal._src.job_files.record_job_file`)."""
    from jaxsal._src.job_files import _read_progress

    also: list = []
    _read_progress(out + ".progress.json", also)
    return os.path.basename(file) in also


def cmd_evaluate(args) -> int:
    import jaxsal
    from jaxsal._src.job_files import check_not_another_jobs, record_job_file

    _check_option_names(args, getattr(jaxsal, args.metric), f"--metric {args.metric}",
                        given=("model", "x", "maps", "targets", "metric"))
    auc_path = _areas_path(args.out)
    if auc_path is None:
        raise ValueError(f"--out: expected a .npy path (the curves), got {args.out!r}")
    for what, path in (("INPUTS", args.inputs), ("MAPS", args.maps)):
        if os.path.exists(auc_path) and os.path.exists(path) \
                and os.path.samefile(auc_path, path):
            raise ValueError(f"--out {args.out} would write the areas to {auc_path}, the "
                             f"{what} file; pick another --out")
    # (its lock is held, with --out's: main) never another job's output
    check_not_another_jobs([auc_path], args.out + ".progress.json",
                           {auc_path: f" (where --out {args.out} puts {AREAS})"})
    if not args.overwrite and os.path.exists(auc_path) and not _listed(args.out, auc_path):
        raise FileExistsError(
            f"{auc_path} (where --out {args.out} puts {AREAS}) exists and the job of --out "
            f"{args.out} did not write it (its progress file does not list it: an array of "
            "your own, or the areas of an evaluation whose progress file is gone); this "
            "command would replace it. Pass another --out, or --overwrite to replace it")
    sharding = _batch_sharding(args)
    model, inputs, progress = _job(args)
    maps = _load_npy(args.maps, "maps")
    if maps.ndim < 2 or len(maps) != len(inputs):
        raise ValueError(f"expected maps with one row per input ({len(inputs)} in "
                         f"{args.inputs}: (N, ...), or (N, T, ...) for T --targets), "
                         f"got shape {maps.shape} in {args.maps}; pass the maps `jaxsal "
                         f"explain` wrote for these INPUTS (the same file, in its order)")
    targets = _parse_targets(args.targets, model, len(inputs), args.metric, "evaluate",
                             inputs)
    # maps an explain job wrote (its progress file beside them): of these inputs and targets
    from jaxsal._src.job_signature import model_fingerprint
    from jaxsal._src.maps_job import check_maps_job

    # the model's description, for the check and the job: its weights hashed once, where
    # either first needs it
    fingerprint = functools.cache(functools.partial(model_fingerprint, model))
    note = check_maps_job(args.maps, inputs, args.inputs, targets, model, args.model,
                          args.batch_size or 64, fingerprint=fingerprint)
    if note is not None:  # (what it could not check: a job of a jaxsal before the check)
        print(f"jaxsal: warning: {note}", file=sys.stderr)
    options = {"maps": maps, "metric": args.metric}
    for item in args.option or ():
        name, value = _parse_option(item)
        _job_flag(name, getattr(jaxsal, args.metric))
        if name == "maps":
            raise ValueError("--option maps=...: the maps are the MAPS argument (a .npy "
                             "file); pass them there only")
        if name == "metric":
            raise ValueError("--option metric=...: the metric is chosen by --metric; pass it "
                             "there only")
        if name in options:
            raise ValueError(f"--option {name}=... given twice; pass it once")
        options[name] = value
    # as `explain`'s --seed/--patch/--stride: a flag or its --option, not both
    for flag, name, value in (("--steps", "steps", args.steps),
                              ("--order", "order", args.order)):
        if value is None:
            continue
        if name in options:
            raise ValueError(f"{flag} and --option {name}=... both given; pass one")
        options[name] = value
    if options.get("order") == "most":  # the default, left out of the job's signature
        del options["order"]
    scores_fn = _curve_scores
    if "batch_size" in options:  # the metric's own (explain_to_file's is the job's)
        scores_fn = functools.partial(_curve_scores, batch_size=options.pop("batch_size"))
    scores = jaxsal.explain_to_file(scores_fn, model, inputs, args.out,
                                    targets=targets,
                                    batch_size=args.batch_size, on_chunk=progress,
                                    keep_going=args.keep_going, sharding=sharding,
                                    overwrite=args.overwrite, _fingerprint=fingerprint,
                                    **options)
    from jaxsal._src.job_files import replace_file, write_fix
    from jaxsal._src.curves import curve_area, curve_fractions, map_positions

    steps = scores.shape[-1] - 1
    # the positions each map orders (one map per input and target): its values, or the
    # cells of --option patch=
    _, positions = map_positions(tuple(maps.shape[2 if scores.ndim == 3 else 1:]),
                                 options.get("patch"))
    auc = curve_area(np.asarray(scores), curve_fractions(positions, steps))
    try:  # atomically: a stopped command never leaves a torn areas file
        replace_file(auc_path, lambda fh: np.save(fh, auc))
    except OSError as e:
        raise type(e)(e.errno, f"cannot write the areas to {auc_path} ({e.strerror or e}); "
                      f"the curves are finished in {args.out}: {write_fix(e)} and run the "
                      "same command again (it writes the areas without computing the curves "
                      "again)") from None
    # listed in the job's progress file: another job is refused to write it, as d.npy
    record_job_file(args.out, auc_path)
    most = options.get("order", "most") == "most"
    better = "lower" if (args.metric == "deletion") == most else "higher"
    print(f"wrote {args.out}: {scores.shape} scores at {steps + 1} points; {auc_path}: "
          f"areas {auc.shape}, mean {float(auc.mean()):.4f} ({better} is better)")
    return 0


BACKEND_HELP = ("jax, numpy, tensorflow or torch: the backend Keras 3 ran the model on, for "
                "the few layers that compute differently there (bicubic resizing, unrolled "
                "masked RNNs, ...); default: what an .h5 records, else JAX/NumPy (a .keras "
                "archive records none)")


MODEL_HELP = ("the Keras model file: .h5 (Keras 2, tf.keras, Keras 3) or .keras; or a "
              "weights-only file (m.weights.h5, a save_weights .h5, the m.weights.json index "
              "of sharded weights) with --config")
CONFIG_HELP = ("the architecture, for a weights-only MODEL (or to override the file's): a "
               "JSON file as model.to_json() writes it, or a .keras archive's config.json")
HEAD_HELP = ("the scores followed: 'logits' (the output layer's activation replaced by "
             "linear), 'saved' (the model's own output), 'softmax', 'sigmoid', "
             "'sigmoid_complement'; default: {default}")
BATCH_HELP = ("inputs per compiled call (default 64, with --devices N a multiple of N: 63 "
              "on 3; the last chunk is padded to it, fewer inputs than a batch are one "
              "unpadded chunk); run "
              "again at a smaller one after running out of memory: the finished inputs are "
              "kept")
KEEP_GOING_HELP = ("a chunk whose inputs or maps (given, or computed) are not finite (NaN/inf) "
                   "is left out and the "
                   "job goes on; at the end the command lists those inputs and exits with "
                   "status 2 (running it again computes only the chunks left out; at "
                   "--batch-size 1, only the inputs at fault stay out)")
DEVICES_HELP = ("split each chunk's inputs over this many of the machine's devices (GPUs, "
                "TPU cores), or 'all': the batch axis sharded over a 1-D mesh of "
                "jax.local_devices(), every device explaining its share of each chunk; "
                "a --batch-size given must be a multiple of the device count (the default "
                "64 is rounded down to one: 63 on 3 devices). The file is the one "
                "a single device writes, and resuming does not depend on it. Default: JAX's "
                "default device")
OVERWRITE_HELP = ("replace an existing --out that may hold finished work (an array no "
                  "progress file lists, a finished job's output, another job's finished "
                  "chunks; evaluate: also its .auc.npy), and starts over a job that cannot "
                  "be resumed (its progress file unreadable, a .npy cut short); without it "
                  "the command refuses to start over onto it. Running the same command again "
                  "resumes without it")
CACHE_HELP = ("folder of JAX's persistent compilation cache, reused across runs (default: "
              "$JAXSAL_CACHE_DIR, else none)")


def _model_source_arguments(p: argparse.ArgumentParser) -> None:
    """What the model file is read with: the Keras backend it follows, its architecture."""
    p.add_argument("--keras-backend", default=None, help=BACKEND_HELP)
    p.add_argument("--config", default=None, metavar="JSON", help=CONFIG_HELP)


def _job_arguments(p: argparse.ArgumentParser) -> None:
    """A batch job's chunking and compilation cache (``explain``, ``evaluate``)."""
    p.add_argument("--batch-size", type=_int_type("an int (e.g. 64)"), default=None,
                   help=BATCH_HELP)
    p.add_argument("--cache-dir", default=os.environ.get("JAXSAL_CACHE_DIR"), help=CACHE_HELP)
    p.add_argument("--keep-going", action="store_true", help=KEEP_GOING_HELP)
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("--devices", type=_devices, default=None, metavar="N|all",
                   help=DEVICES_HELP)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch scheduler's stop: SLURM at the time limit, ``kill PID``) in a batch
    job: raised in the main thread as Ctrl-C's ``KeyboardInterrupt`` is, so that the command
    says what is kept, as for Ctrl-C, and exits with 143 (128 + SIGTERM), not silently."""


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While a batch job runs: SIGTERM raises :class:`Terminated` (only where a handler can
    be set, the main thread; the previous handler is put back after)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _finished_or_unreadable(out: str, overwrite: bool) -> str:
    """What Ctrl-C's line says of ``--out`` ``out`` whose progress file lists no unfinished
    chunk: it holds a finished job's maps (this command's, stopped after its last chunk, or
    another job's, stopped before its own began: which, only the job's signature tells) or
    its progress file cannot be read."""
    from jaxsal._src.job_files import _record

    progress_path = f"{out}.progress.json"
    prog, why = _record(progress_path)
    if prog is None:
        return (f"; its progress file {progress_path} cannot be read ({why}), so nothing says "
                f"which chunks of {out} are finished: running the same command again "
                + ("starts the job over (--overwrite)" if overwrite else
                   "refuses to resume it, saying what to delete; --overwrite starts it over"))
    return (f"; {out} holds the maps of a finished job (says its progress file "
            f"{progress_path}): running the same command again ends at once where they are "
            "its own maps, and "
            + ("replaces another job's (--overwrite)" if overwrite else
               "refuses to replace another job's (--overwrite replaces them)"))


def main(argv=None) -> int:
    summary = " ".join(__doc__.split("\n\n")[0].split())  # the first paragraph
    p = argparse.ArgumentParser(prog="jaxsal", description=summary)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="run the bundled MNIST example")
    d.add_argument("--out", default="jaxsal_out",
                   help="folder for the saliency PNG and .npy (made if missing; default "
                        "jaxsal_out)")
    d.set_defaults(fn=cmd_demo)
    s = sub.add_parser("summary", help="print a model file's layers")
    s.add_argument("model", help=MODEL_HELP)
    s.add_argument("--head", default="saved", help=HEAD_HELP.format(default="saved"))
    _model_source_arguments(s)
    s.set_defaults(fn=cmd_summary)
    e = sub.add_parser("explain", help="attribution maps for a .npy of inputs, resumable")
    e.add_argument("model", help=MODEL_HELP)
    e.add_argument("inputs", nargs="+", metavar="INPUTS",
                   help=".npy of inputs (N, H, W, C), read memory-mapped; for a model of "
                        "several inputs one .npy per input (each with the same N), in the "
                        "order of the model's inputs (`jaxsal summary MODEL` lists them) or "
                        "as NAME=FILE.npy; a method that gives a map per input writes each "
                        "to --out's name with the input's (maps.npy -> maps.img.npy)")
    e.add_argument("--method", default="saliency", type=_choice(METHODS, "method"),
                   metavar="METHOD",
                   help=f"the attribution method (default: saliency): {', '.join(METHODS)}")
    e.add_argument("--targets", default="predicted",
                   help="'predicted' (default), 'all' (every class; 0 and 1 for a one-unit "
                        "sigmoid model), a class id, ids like 0,3,7, or @FILE.npy: per-input "
                        "ids, (N,) labels (maps (N, 1, ...)) or (N, T)")
    e.add_argument("--head", default="logits", help=HEAD_HELP.format(default="logits"))
    _model_source_arguments(e)
    e.add_argument("--output", default=None,
                   help="for a multi-output model: the output to explain (name or position)")
    e.add_argument("--layer", default=None, help=_layer_help())
    e.add_argument("--seed", type=_seed, default=None,
                   help="PRNG seed of the random methods (smoothgrad, gradient_shap, rise, "
                        "shapley_value_sampling, kernel_shap, lime: required), an int "
                        "0 <= SEED < 2**32, used as jax.random.key(SEED) and recorded in the "
                        "job's resume signature")
    e.add_argument("--patch", default=None,
                   help="occlusion, shapley_values, shapley_value_sampling, kernel_shap, "
                        "lime: patch size, an int or one per spatial axis (e.g. 4 or 4,2); "
                        "default 8 (1 for (N, D) feature inputs); for the Shapley methods, "
                        "KernelSHAP and LIME the groups' grid (or pass "
                        "--option feature_mask=@mask.npy)")
    e.add_argument("--stride", default=None,
                   help="occlusion: step between patches (default: the patch; at most the "
                        "patch)")
    e.add_argument("--option", action="append", metavar="NAME=VALUE",
                   help="any other keyword option of the method, VALUE read as JSON when it "
                        "parses, True/False/None and numbers such as .1 or 1. as in Python "
                        "(e.g. --option n=16 --option "
                        "noise_level=0.1 --option upsample=false --option "
                        "'method_options={\"steps\": 8}'), @FILE.npy as the array in the file "
                        "(--option baselines=@refs.npy; one per input of a model of several "
                        "in a JSON list or object: --option 'baseline=[\"@img0.npy\", 0]'); "
                        "repeatable")
    _job_arguments(e)
    e.add_argument("--out", required=True,
                   help="output .npy (resumes if interrupted); for several inputs and a map "
                        "per input, one file per input beside it: OUT without .npy, then "
                        ".NAME.npy for input NAME (maps.npy -> maps.img.npy; its position, "
                        "maps.0.npy, where a name does not fit a file name)")
    e.set_defaults(fn=cmd_explain)
    v = sub.add_parser("evaluate", help="deletion or insertion curves of saved maps, "
                                        "resumable")
    v.add_argument("model", help=MODEL_HELP)
    v.add_argument("inputs", help=".npy of inputs (N, ...), read memory-mapped")
    v.add_argument("maps", help=".npy of the maps of those inputs (what `jaxsal explain` "
                                "wrote): (N, [T,] H, W) or with the inputs' own shape; with "
                                "explain's progress file beside them, INPUTS and --targets "
                                "must be the ones they were made for (checked)")
    v.add_argument("--metric", required=True, type=_choice(METRICS, "metric"),
                   metavar="{" + ",".join(METRICS) + "}",
                   help="deletion: remove the most relevant first, the score should fall "
                        "fast; insertion: add them to a baseline, it should rise fast")
    v.add_argument("--targets", default="predicted",
                   help="the targets the maps explain, as for `jaxsal explain` (the same "
                        "value: maps of --targets 5,3 are refused at 3,5 or none)")
    v.add_argument("--head", default="saved",
                   help="the scores followed: 'saved' (default: the model's own output, "
                        "probabilities for a softmax classifier, as RISE's curves), "
                        "'logits', 'softmax', 'sigmoid', 'sigmoid_complement'")
    _model_source_arguments(v)
    v.add_argument("--output", default=None,
                   help="for a multi-output model: the output to follow (name or position)")
    v.add_argument("--steps", type=_int_type("an int (e.g. 100)"), default=None,
                   help="points after the first (default 100, at most the positions)")
    v.add_argument("--order", default=None, choices=("most", "least"),
                   help="most relevant first (default) or least relevant first")
    v.add_argument("--option", action="append", metavar="NAME=VALUE",
                   help="fill= (deletion) or baseline= (insertion): a number or @FILE.npy "
                        "(e.g. blurred inputs, (N, H, W, C)); memory_budget=...; repeatable")
    _job_arguments(v)
    v.add_argument("--out", required=True,
                   help="output .npy of the curves (N, [T,] steps + 1), resumes if "
                        "interrupted; the areas go to the same name ending .auc.npy")
    v.set_defaults(fn=cmd_evaluate)
    args = p.parse_args(argv)
    try:
        if args.cmd not in ("explain", "evaluate"):
            return args.fn(args)
        from jaxsal._src.job_lock import job_lock

        # the job's lock, for the whole command, and that of evaluate's areas file: a second
        # `jaxsal` writing the same --out (or a job writing OUT.auc.npy) fails here, before
        # it loads anything
        auc_path = _areas_path(args.out) if args.cmd == "evaluate" else None
        with _sigterm_as_interrupt(), job_lock(args.out,
                                                others={auc_path: AREAS} if auc_path else None):
            return args.fn(args)
    except (ValueError, TypeError, OSError) as err:
        # with the notes a batch job adds (the chunk that failed, what is saved)
        print(" ".join(["jaxsal: error:", _command_line_advice(str(err), args),
                        *getattr(err, "__notes__", ())]), file=sys.stderr)
        # another process writes the same --out: 75 (EX_TEMPFAIL), a scheduler may retry
        return 75 if isinstance(err, BlockingIOError) else 2
    except RuntimeError as err:  # JAX's (XLA's) out of memory; any other: its traceback
        if "RESOURCE_EXHAUSTED" not in str(err) or args.cmd not in ("explain", "evaluate"):
            raise
        print(" ".join(["jaxsal: error:", str(err), *getattr(err, "__notes__", ()),
                        "Out of memory: a smaller --batch-size needs less (the inputs already "
                        "finished are kept)"]), file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:  # Ctrl-C: one line, not a traceback; 130 = 128 + SIGINT
        # (SIGTERM in a batch job: Terminated, the same line, 143 = 128 + SIGTERM)
        resume = ""
        if args.cmd in ("explain", "evaluate"):  # resumable jobs (jaxsal.explain_to_file)
            from jaxsal._src.job_files import job_files, job_unfinished

            state = job_unfinished(args.out)
            files = job_files(args.out)  # --out, or the files of a job over several inputs
            if state is not None and state[0]:
                resume = (f"; {state[0]} of {state[1]} chunks are finished and kept in "
                          f"{', '.join(files)}, and running the same command again computes "
                          "the rest")
            elif state is not None or not any(map(os.path.exists, files)):
                resume = (f"; no chunk had finished ({args.out} holds no maps yet): running "
                          "the same command again starts the job")
            elif os.path.exists(f"{args.out}.progress.json"):
                resume = _finished_or_unreadable(args.out, args.overwrite)
            elif args.overwrite:  # OUT is a file no job wrote (an array of one's own...)
                resume = ("; no job had started: running the same command again starts the "
                          f"job (it replaces {args.out}: --overwrite)")
            else:
                resume = (f"; no job had started ({args.out} is left as it was, an array no "
                          "job wrote: running the same command again refuses to replace it; "
                          "--overwrite replaces it)")
        term = isinstance(stop, Terminated)
        print(f"jaxsal {args.cmd}: {'terminated (SIGTERM)' if term else 'interrupted'}{resume}",
              file=sys.stderr)
        return 143 if term else 130


if __name__ == "__main__":
    sys.exit(main())
