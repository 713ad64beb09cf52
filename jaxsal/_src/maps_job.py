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
predicts as the explained model does (the same weights, architecture and output, at any
head of the same top class): another model's predicted classes may be other classes.
"""

from __future__ import annotations

from typing import Any

from jaxsal._src.batch import _chunk_digest
from jaxsal._src.job_files import _owners, _record
from jaxsal._src.job_signature import _Unstable, model_fingerprint, target_record


def _flag(ids: Any) -> str:
    """The ``--targets`` value of recorded class ids: ``5`` for an int, ``5,3`` (``5,`` for
    one) for a list."""
    if isinstance(ids, int):
        return str(ids)
    return ",".join(str(i) for i in ids) + ("," if len(ids) == 1 else "")


def _job_record(maps_path: str) -> tuple[dict, str] | None:
    """``(record, progress_path)`` of the finished one-input job whose output is the file
    at ``maps_path`` (its own progress file, or through a symbolic link the file's), None
    where no progress file lists it (maps written otherwise) or the job wrote the maps of
    several inputs."""
    for progress_path, done, chunks in _owners(maps_path):
        prog = _record(progress_path)[0]
        if prog is None or done < chunks or prog.get("outputs") is not None:
            return None
        return prog, progress_path
    return None


def check_maps_job(maps_path: str, inputs: Any, inputs_path: str, targets: Any, model: Any,
                   model_path: str) -> None:
    """Refuse, with a ``ValueError``, to evaluate the maps at ``maps_path`` on ``inputs``
    (``(N, ...)``, read from ``inputs_path``) and ``targets`` (as ``--targets`` parsed
    them) of ``model`` (from ``model_path``) where the finished job that wrote the maps
    recorded other inputs (a chunk's inputs hashed otherwise, another count or row shape)
    or other targets. Maps of no such job (no progress file beside them) and jobs of a
    jaxsal that did not record their targets are not checked for what they lack. Reads
    every input once (the hash)."""
    found = _job_record(maps_path)
    if found is None:
        return
    prog, progress_path = found
    fix_maps = (f"evaluate the maps made for these inputs and targets, or make them: `jaxsal "
                f"explain MODEL {inputs_path} --out MAPS.npy` with the --targets you evaluate")
    n, b, kept = prog.get("n"), prog.get("batch_size"), prog.get("inputs")
    shape, dtype = prog.get("input_shape"), prog.get("input_dtype")
    if isinstance(n, int) and n != len(inputs) or (
            isinstance(shape, list) and shape != list(inputs.shape[1:])) or (
            isinstance(dtype, str) and dtype and dtype != str(inputs.dtype)):
        made = f" {dtype}" if isinstance(dtype, str) else ""
        raise ValueError(
            f"{maps_path} holds the maps of {n}{made} inputs of shape {tuple(shape or ())} "
            f"(says its progress file {progress_path}), got {len(inputs)} {inputs.dtype} "
            f"inputs of shape {inputs.shape[1:]} in {inputs_path}; {fix_maps}")
    if isinstance(n, int) and isinstance(b, int) and b >= 1 and isinstance(kept, dict):
        for c in range(-(-n // b)):
            recorded = kept.get(str(c))
            if not isinstance(recorded, str):
                continue
            lo, hi = c * b, min(n, (c + 1) * b)
            # (the job's hash of a chunk: its inputs' part first, then rows of per-input
            # options, joined by "+")
            if _chunk_digest([inputs[lo:hi]]) != recorded.split("+")[0]:
                raise ValueError(
                    f"{maps_path} holds the maps of other inputs than {inputs_path}: the "
                    f"values of inputs {lo}:{hi} differ from those the maps were made for "
                    f"(their hash, recorded in {progress_path}); evaluating them would "
                    f"score each input by another input's map. Pass the INPUTS file the maps "
                    f"were made for, in the same order, or {fix_maps}")
    made = prog.get("targets")
    # (a job of a jaxsal before targets were recorded; a method whose maps are the same for
    # every class, Eigen-CAM: any targets)
    if not isinstance(made, str) or prog.get("target_form") == "any":
        return
    try:
        fingerprint = model_fingerprint(model) if targets is None else {}
        got = target_record(targets, fingerprint)
    except _Unstable:  # (the command line's targets always have a description)
        return
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
        raise ValueError(
            f"{maps_path} holds maps made for {want} (says its progress file "
            f"{progress_path}), got {given}: the curves would score other classes than the "
            f"maps are of. {fix[0].upper() + fix[1:]}, or {fix_maps}")
    if form == "predicted" and got.get("predictor") != prog.get("predictor"):
        raise ValueError(
            f"{maps_path} holds maps of each input's predicted class under the model that "
            f"made them (says its progress file {progress_path}), and {model_path} at "
            "this --output and --head is not that model (other weights or architecture, "
            "another --output, or --head sigmoid_complement, whose top class is the one most "
            "confidently absent): its predicted classes may be other classes than the maps "
            "are of. Evaluate with the model the maps were made with (at any --head but "
            "sigmoid_complement: they predict the same class), or make "
            "the maps for given classes (`jaxsal explain ... --targets @labels.npy`, e.g. "
            "the labels) and evaluate with the same --targets on any model")
