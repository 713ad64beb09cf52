"""Whether saved maps are the maps of the inputs and targets a command evaluates them at.

``jaxsal evaluate MODEL INPUTS MAPS --targets ...`` scores, for each input, the classes
``--targets`` names, removing pixels in the order of that input's map. Maps of other inputs
(another file of the same shape, the same file reordered) or of other classes (``--targets
3,5`` against maps made with ``--targets 5,3``) have the right shape and give curves that
mean nothing, silently. Where the maps are the output of a finished
:func:`jaxsal.explain_to_file` job (``jaxsal explain --out maps.npy``), its progress file
``maps.npy.progress.json`` records a hash of each chunk's inputs and what its targets were
(:func:`jaxsal._src.job_signature.target_record`): :func:`check_maps_job` compares them with
the evaluation's. Another model is allowed (evaluating one model's maps on another is an
experiment), but for maps of each input's predicted class (no targets) only one that
predicts as the explained model does: the same weights, architecture and output, and at
another head than the job's, the same class for every input (compared on the inputs: a
float32 sigmoid saturates at 1.0 and ties classes the logits order). The maps of a job over
several inputs (``maps.img.npy``, or one ``maps.npy`` of them all) are checked against the
input they are of. A job of a jaxsal before the targets were recorded: its inputs are
checked, and the caller is given a warning that its targets are not.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from jaxsal._src.batch import _chunk_digest
from jaxsal._src.job_files import _names, _owner_records
from jaxsal._src.job_inputs import _rows
from jaxsal._src.job_signature import _digest, _Unstable, model_fingerprint, target_record


def _flag(ids: Any) -> str:
    """The ``--targets`` value of recorded class ids: ``5`` for an int, ``5,3`` (``5,`` for
    one) for a list."""
    if isinstance(ids, int):
        return str(ids)
    return ",".join(str(i) for i in ids) + ("," if len(ids) == 1 else "")


def _job_record(maps_path: str) -> tuple[dict, str, Any] | None:
    """``(record, progress_path, which)`` of the finished job whose output is the file at
    ``maps_path`` (its own progress file, or through a symbolic link the file's; for a job
    over several inputs, the progress file of the job that wrote it beside its other
    files), None where no progress file lists it as a job's maps (maps written otherwise, or
    a file a job wrote besides its maps: ``evaluate``'s areas). ``which``: None for a job
    over one input array, the position of the input (in the model's order) whose maps the
    file holds for a job over several (``maps.img.npy``), or ``"one"`` for the one map of a
    job over several inputs."""
    for progress_path, prog, done, chunks in _owner_records(maps_path):
        if done < chunks:
            return None
        outputs = prog.get("outputs")
        names = [os.path.basename(n) for n in _names(maps_path)]
        if outputs is None:  # a job over one input array: its own progress file only
            own = [os.path.realpath(n + ".progress.json") for n in _names(maps_path)]
            return (prog, progress_path, None) if os.path.realpath(progress_path) in own \
                else None
        shapes = prog.get("input_shapes")
        if not isinstance(outputs, list) or not isinstance(shapes, dict):
            return None
        listed = [i for i, f in enumerate(outputs) if f in names]
        if not listed:  # (a file it wrote besides its maps)
            return None
        if len(outputs) == len(shapes):  # a map per input, in the model's order
            return prog, progress_path, listed[0]
        return prog, progress_path, "one"
    return None


def _several_inputs(prog: dict, progress_path: str, which: Any, maps_path: str, inputs: Any,
                    inputs_path: str, fix_maps: str) -> int:
    """The position of ``inputs`` among the inputs of the job over several that wrote
    ``maps_path`` (``which``, :func:`_job_record`): that of the file's input, or for the
    job's one map the first input whose row shape, dtype and chunks' hashes are those of
    ``inputs``; a ``ValueError`` where they are not that input's (or none's)."""
    shapes = prog["input_shapes"]
    dtypes = prog.get("input_dtypes") if isinstance(prog.get("input_dtypes"), dict) else {}
    names = list(shapes)
    listing = ", ".join(f"{name!r} {tuple(shapes[name])}"
                        + (f" {dtypes[name]}" if name in dtypes else "") for name in names)
    job = (f"{maps_path} holds the maps of a job over {len(names)} inputs ({listing}; says "
           f"its progress file {progress_path})")
    candidates = [which] if isinstance(which, int) else range(len(names))
    for i in candidates:
        name = names[i]
        if shapes[name] != list(inputs.shape[1:]) or not _same_dtype(dtypes.get(name),
                                                                     inputs.dtype):
            continue
        other = _other_chunk(prog, inputs, i, dtypes.get(name))
        if other is None:
            return i
        if isinstance(which, int):
            lo, hi = other
            raise ValueError(
                f"{job}, of input {name!r}, and {inputs_path} is not that input: the values "
                f"of inputs {lo}:{hi} differ from those the maps were made for (their hash); "
                f"evaluating them would score each input by another input's map. Pass the "
                f"file of input {name!r} the maps were made for, in the same order, or "
                f"{fix_maps}")
    whose = (f"the maps of input {names[which]!r}" if isinstance(which, int) else
             "one map of them all")
    raise ValueError(
        f"{job}, {whose}, and {inputs_path} ({len(inputs)} {inputs.dtype} inputs of shape "
        f"{tuple(inputs.shape[1:])}) is not "
        + (f"input {names[which]!r}" if isinstance(which, int) else "one of them")
        + f" (another row shape or dtype, or other values). Pass the file of the input the "
        f"maps were made for, in the same order, or {fix_maps}")


def _same_dtype(recorded: Any, dtype: Any) -> bool:
    """Whether inputs of ``dtype`` are of the dtype a job recorded (its name; None: none
    recorded), in either byte order (a job reads each chunk in the machine's: a big-endian
    copy holds the same inputs)."""
    if not isinstance(recorded, str) or not recorded or recorded == str(dtype):
        return True
    try:
        return np.dtype(recorded).newbyteorder("=") == np.dtype(dtype).newbyteorder("=")
    except TypeError:  # (a dtype NumPy does not know by its name)
        return False


def _other_chunk(prog: dict, inputs: Any, position: int,
                 dtype: str | None = None) -> tuple[int, int] | None:
    """The rows ``(lo, hi)`` of the first chunk whose inputs differ from those the job
    recorded (their hash, the ``position``-th of each chunk's: one per input of a job over
    several), None where every recorded chunk's are the same. ``dtype``: the inputs' dtype as
    the job recorded it, whose bytes it hashed (where ``inputs`` are in the other byte
    order)."""
    n, b, kept = prog.get("n"), prog.get("batch_size"), prog.get("inputs")
    if not (isinstance(n, int) and isinstance(b, int) and b >= 1 and isinstance(kept, dict)):
        return None
    as_recorded = None
    if isinstance(dtype, str) and dtype and dtype != str(inputs.dtype):
        as_recorded = np.dtype(dtype)  # (_same_dtype: the same but for the byte order)
    for c in range(-(-n // b)):
        recorded = kept.get(str(c))
        if not isinstance(recorded, str):
            continue
        lo, hi = c * b, min(n, (c + 1) * b)
        # (the job's hash of a chunk: each input's part, then rows of per-input options and
        # labels, joined by "+")
        parts = recorded.split("+")
        rows = inputs[lo:hi] if as_recorded is None else np.asarray(inputs[lo:hi], as_recorded)
        if position >= len(parts) or _chunk_digest([rows]) != parts[position]:
            return lo, hi
    return None


def check_maps_job(maps_path: str, inputs: Any, inputs_path: str, targets: Any, model: Any,
                   model_path: str, batch_size: int = 64, *,
                   fingerprint: Callable[[], dict] | None = None) -> str | None:
    """Refuse, with a ``ValueError``, to evaluate the maps at ``maps_path`` on ``inputs``
    (``(N, ...)``, read from ``inputs_path``) and ``targets`` (as ``--targets`` parsed
    them) of ``model`` (from ``model_path``) where the finished job that wrote the maps
    recorded other inputs (a chunk's inputs hashed otherwise, another count, row shape or
    dtype; for a job over several, not the input the maps are of) or other targets (for
    each input's predicted class: another model, or another head that predicts another
    class for some input). Maps of no such job (no progress file beside them) are not
    checked. Returns None, or a warning for the user where the job's jaxsal did not record
    its targets (they are not checked). Reads every input once (the hash), and for
    predicted classes at another head runs the model on every input at both heads,
    ``batch_size`` at a time. ``fingerprint``: a function returning
    ``model_fingerprint(model)``, where the caller needs it too (``jaxsal evaluate``'s job:
    computed once, it hashes every weight)."""
    found = _job_record(maps_path)
    if found is None:
        return None
    prog, progress_path, which = found
    fix_maps = (f"evaluate the maps made for these inputs and targets, or make them: `jaxsal "
                f"explain MODEL {inputs_path} --out MAPS.npy` with the --targets you evaluate")
    n = prog.get("n")
    if isinstance(n, int) and n != len(inputs):
        raise ValueError(
            f"{maps_path} holds the maps of {n} inputs (says its progress file "
            f"{progress_path}), got {len(inputs)} inputs in {inputs_path}; {fix_maps}")
    if which is not None:  # a job over several inputs: inputs must be the file's input
        _several_inputs(prog, progress_path, which, maps_path, inputs, inputs_path, fix_maps)
    else:
        shape, dtype = prog.get("input_shape"), prog.get("input_dtype")
        if (isinstance(shape, list) and shape != list(inputs.shape[1:])) or not _same_dtype(
                dtype, inputs.dtype):
            made = f" {dtype}" if isinstance(dtype, str) else ""
            raise ValueError(
                f"{maps_path} holds the maps of {n}{made} inputs of shape "
                f"{tuple(shape or ())} (says its progress file {progress_path}), got "
                f"{len(inputs)} {inputs.dtype} inputs of shape {inputs.shape[1:]} in "
                f"{inputs_path}; {fix_maps}")
        other = _other_chunk(prog, inputs, 0, dtype)
        if other is not None:
            lo, hi = other
            raise ValueError(
                f"{maps_path} holds the maps of other inputs than {inputs_path}: the "
                f"values of inputs {lo}:{hi} differ from those the maps were made for "
                f"(their hash, recorded in {progress_path}); evaluating them would "
                f"score each input by another input's map. Pass the INPUTS file the maps "
                f"were made for, in the same order, or {fix_maps}")
    made = prog.get("targets")
    if not isinstance(made, str):  # (a job of a jaxsal before targets were recorded)
        return (
            f"the targets of {maps_path} are not checked: its progress file {progress_path} "
            "was written by an earlier jaxsal, which did not record them (the inputs are "
            "checked). The curves mean something only at the classes the maps were made "
            "for: pass the --targets `jaxsal explain` was given (none for its default, each "
            "input's predicted class, and then with the model it explained). To have them "
            "checked, run that `jaxsal explain` command again with this jaxsal: it records "
            "its targets (keeping the finished maps where it finds the same job, else "
            "computing them again)")
    if prog.get("target_form") == "any":  # (maps the same for every class: Eigen-CAM)
        return None
    try:
        if targets is not None:
            fp: dict = {}
        else:
            fp = model_fingerprint(model) if fingerprint is None else fingerprint()
        got = target_record(targets, fp)
    except _Unstable:  # (the command line's targets always have a description)
        return None
    ids, form = prog.get("target_ids"), prog.get("target_form")
    if form == "predicted":
        want = "each input's predicted class, no --targets,"
        fix = "leave --targets out"
    elif form == "ids" and ids is not None:
        want = f"--targets {_flag(ids)}"
        fix = f"pass --targets {_flag(ids)} (the classes in explain's order)"
    elif form == "ids":
        want = "more than 64 class ids for every input"
        fix = "pass the --targets the maps were made with"
    elif form == "per-input ids":
        want = "per-input class ids (--targets @FILE.npy)"
        fix = "pass the --targets @FILE.npy the maps were made with"
    else:  # (score functions, of explain_to_file in Python: no flag gives them)
        want = "score functions (targets= of explain_to_file in Python)"
        fix = ("evaluate them in Python, jaxsal.deletion / jaxsal.insertion(model, x, maps, "
               "targets) with the same functions")
    if got["targets"] != made:
        given = ("no --targets (each input's predicted class)" if targets is None else
                 f"--targets {_flag(got['target_ids'])}" if "target_ids" in got else
                 f"other {got['target_form']}")
        now = got.get("target_ids")
        if form == "ids" and ids is not None and now is not None \
                and np.ravel(ids).tolist() == np.ravel(now).tolist():
            # the same class, one id against a list of it: only the class axis differs
            axes = ("have a class axis of 1, (N, 1, ...)" if isinstance(ids, list) else
                    "have no class axis, (N, ...)")
            curves = ("without" if isinstance(now, int) else "with") + " one"
            raise ValueError(
                f"{maps_path} holds maps made for {want} (says its progress file "
                f"{progress_path}), got {given}: the same class, but the maps {axes}, and "
                f"--targets {_flag(now)} gives curves {curves}. Pass --targets {_flag(ids)} "
                f"to evaluate them")
        raise ValueError(
            f"{maps_path} holds maps made for {want} (says its progress file "
            f"{progress_path}), got {given}: the curves would score other classes than the "
            f"maps are of. {fix[0].upper() + fix[1:]}, or {fix_maps}")
    if form != "predicted":
        return None
    head, made_head = got.get("predicted_head"), prog.get("predicted_head")
    if "predicted_head" not in prog:  # (recorded before the head was: its top-class group)
        legacy = dict(fp)
        if legacy.get("head") in ("logits", "saved", "softmax", "sigmoid"):
            legacy["head"] = "top class"
        same = _digest(legacy) == prog.get("predictor")
    else:
        same = got.get("predictor") == prog.get("predictor")
    if not same:
        raise ValueError(
            f"{maps_path} holds maps of each input's predicted class under the model that "
            f"made them (says its progress file {progress_path}), and {model_path} at "
            "this --output is not that model (other weights or architecture, or another "
            "--output): its predicted classes may be other classes than the maps are of. "
            "Evaluate with the model the maps were made with, or make the maps for given "
            "classes (`jaxsal explain ... --targets @labels.npy`, e.g. the labels) and "
            "evaluate with the same --targets on any model")
    if "predicted_head" not in prog or head == made_head:
        return None
    # the same model at another head: the classes each head predicts, compared (a softmax
    # keeps the logits' top class, but a sigmoid saturated at 1.0 ties it with others,
    # sigmoid_complement's is the class most confidently absent, a saved activation may
    # reorder them)
    made_ids, ids_now = _predicted(model, inputs, (made_head, head), batch_size)
    differ = np.flatnonzero(made_ids != ids_now)
    if differ.size:
        shown = "; ".join(f"input {i}: class {made_ids[i]} at --head {made_head}, "
                          f"{ids_now[i]} at --head {head}" for i in differ[:3])
        raise ValueError(
            f"{maps_path} holds maps of each input's predicted class at --head {made_head} "
            f"(says its progress file {progress_path}), and at --head {head} {model_path} "
            f"predicts another class for {differ.size} of the {len(inputs)} inputs "
            f"({shown}{', ...' if differ.size > 3 else ''}): the curves would score other "
            f"classes than the maps are of. Evaluate at --head {made_head} (or any head "
            f"that predicts as it does), or make the maps for given classes (`jaxsal "
            f"explain ... --targets @labels.npy`, e.g. the labels) and evaluate with the "
            f"same --targets at any head")
    return None


def _predicted(model: Any, inputs: Any, heads: tuple, batch_size: int) -> list[np.ndarray]:
    """Each input's predicted class (``(N,)`` ids, as the methods pick it: the argmax, a
    one-unit output's class test) under ``model`` at each of ``heads``: one forward pass of
    the inputs per head, ``batch_size`` at a time (the last batch padded: one program)."""
    from jaxsal._src import base
    from jaxsal._src.targets import predicted_ids, run_model
    from jaxsal._src.validate import prepare

    n = len(inputs)
    b = max(1, min(int(batch_size), n))
    out: list[list] = [[] for _ in heads]
    for lo in range(0, n, b):
        hi = min(n, lo + b)
        xb = _rows(inputs, lo, hi, b - (hi - lo))  # (padded with copies of its last row)
        for k, head in enumerate(heads):
            p = prepare(model, xb, None, head=head, check_finite=False)

            def build(p=p):
                return lambda params, x: predicted_ids(run_model(p.model, params, x)[0],
                                                       p.info)

            fn = base.compiled(("predicted classes", head, p.key, p.info), build,
                               forward_only=True)
            out[k].append(np.asarray(fn(p.params, p.x))[:hi - lo])
    return [np.concatenate(o) for o in out]
