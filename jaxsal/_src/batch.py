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
beside ``path``, ``<stem>.<input name>.npy`` (``maps.img.npy``, ``maps.vec.npy``); the job
still has one sidecar, which lists those files, and a chunk is recorded as finished only after
every file holds its rows (a job stopped between two files' writes computes the chunk again). An
option the method takes one value per input (its ``several_input_options`` attribute: an
integrated-gradients ``baseline``) is a dict keyed by the model's input names or a list in
their order, whatever container the inputs come in, passed to the job or bound in a
``functools.partial`` of the method (taken out of it as if passed to the job).

A job is identified by a signature (:mod:`jaxsal._src.job_signature`): a hash of a stable
description of the method, the model (architecture and weights), the inputs' count, shape and
dtype, the targets, every option and the batch size. A run that differs only in the batch size
(a smaller one after running out of memory) is the same job: it keeps the inputs already
finished and computes the chunks of the others; the inputs' values are checked chunk by chunk
(the sidecar keeps a hash of each finished chunk's inputs, and a chunk whose inputs changed
since is computed again). A run whose signature differs otherwise is another job: where the
file holds finished work (a finished job's maps, finished chunks, an array no progress file
lists) it is refused unless ``overwrite=True`` (``job_files.check_replaceable``); it then
starts over, and replaces that sidecar with its own (no chunk finished) before it makes
the new ``.npy`` (a run stopped between the two never leaves an old job's progress over another
job's chunks, and the new file reads as unfinished), which it makes beside the old one and
renames onto it (``job_files.create_maps``: what still reads the old file keeps its values).
Until its last row is written, the ``.npy``'s header carries a key NumPy refuses
(``job_files.UNFINISHED_KEY``), so ``np.load`` never reads a half-written file as finished
maps; a resumed job whose file had all its rows (a finished job run again on inputs changed in
some chunks) marks it so again (``job_files.mark_unfinished``) and records the chunks it keeps
before it writes any row.

While it runs, a job holds a lock on ``path + ".lock"`` (:mod:`jaxsal._src.job_lock`): a second
job writing the same file fails at once. A file that another job's sidecar lists as its output
is never written (:mod:`jaxsal._src.job_files`, which also checks the output path before any
chunk). What each chunk gets, the inputs of a model of several, the options sliced with the
inputs, is :mod:`jaxsal._src.job_inputs`'s.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
from typing import Any, Callable

import jax
import numpy as np

from jaxsal._src import base, ints
from jaxsal._src.base import Inputs, ModelLike
from jaxsal._src.finite import NonFiniteMaps, listed, non_finite_rows
from jaxsal._src.job_files import (_allocate, _check_path, _input_roles, _read_progress,
                                   _record, _replace_json, check_not_another_jobs,
                                   FORMAT, check_replaceable, create_maps,
                                   mark_finished, mark_unfinished, open_maps, resumable,
                                   write_fix)
from jaxsal._src.job_inputs import (_arrange_options, _bound_keywords, _bound_options,
                                    _check_ids, _check_options, _check_targets, _chunk_options,
                                    _chunk_targets, _implicit_offset, _map_rows, _rows,
                                    _several, _Several, _takes_offset, _unwrap, check_call,
                                    class_free, input_paths, job_options, per_input_arrays,
                                    per_input_options, several_input_options, shared_options)
from jaxsal._src.job_lock import job_lock
from jaxsal._src.job_signature import (_array_digest, _bytes, _signatures, _Unstable,
                                      model_fingerprint, per_input_targets, target_record)
from jaxsal._src.per_example import check_per_example
from jaxsal._src.targets import Targets
from jaxsal._src.validate import _fits, check_flag


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


def _fresh(path: str | list[str], progress_path: str, overwrite_helps: bool = True) -> str:
    """How to start over a job whose files at ``path`` (with its progress file
    ``progress_path``) cannot be resumed: delete them, or where the job found it before any
    chunk (``overwrite_helps``: it then starts over instead), pass ``overwrite=True``."""
    files = " and ".join([path] if isinstance(path, str) else path)
    if overwrite_helps:
        return (f"delete {files} and {progress_path}, or pass overwrite=True (jaxsal: "
                "--overwrite), to start the job over, or write to another path")
    return (f"delete {files} and {progress_path} (in Python, or pass resume=False, "
            "overwrite=True) to start the job over, or write to another path")


def _reopen(files: list[str], n: int, progress_path: str, overwrite: bool
            ) -> dict[str, np.memmap] | None:
    """``{file: its memory map}`` of the files of a job to resume, each holding the maps of
    ``n`` inputs. One that cannot be resumed (torn, cut short, of another count of maps):
    a ``ValueError`` saying what to delete, or with ``overwrite`` None (the job starts
    over, replacing them)."""
    out = {}
    for f in files:
        try:
            m = open_maps(f)
        except (OSError, ValueError) as e:
            why = f"cannot reopen {f} to resume this job ({e})"
        else:
            if m.ndim >= 1 and m.shape[0] == n:
                out[f] = m
                continue
            why = (f"{f} holds an array of shape {m.shape}, but this job writes maps for {n} "
                   "inputs; the file was replaced after the job started")
            del m
        if overwrite:
            return None
        raise ValueError(f"{why}; {_fresh(files, progress_path)}")
    return out


def _recorded_files(prog: dict, path: str, per_input: list[str]) -> list[str] | None:
    """The files a job over several inputs recorded in its progress file ``prog`` as its
    outputs: ``[path]`` (one map), ``per_input`` (a map per input), else None."""
    outputs = prog.get("outputs")
    for files in ([path], per_input):
        if outputs == [os.path.basename(f) for f in files]:
            return files
    return None


def _maps_by_file(result: Any, several: _Several | None, path: str, per_input: list[str],
                  count: int, batch_size: int) -> dict[str, np.ndarray]:
    """``{file: its rows}`` of a chunk's maps ``result`` (its first ``count`` rows): one
    array to ``path``; for several inputs, a map per input (in their container, or a list
    or tuple of one per input) to each input's file. Each must hold one map per input of
    the chunk as padded (``batch_size`` rows): a ``ValueError`` otherwise (one row would
    broadcast into every row of the file, extra rows would be cut silently)."""
    maps = {}
    for f, m in _split_maps(result, several, path, per_input).items():
        a = np.asarray(m)
        if a.ndim < 1 or a.shape[0] != batch_size:
            padded = f", padded to {batch_size}" if count < batch_size else ""
            raise ValueError(
                f"expected the method to return one map per input of the chunk: an array of "
                f"shape ({batch_size}, ...) for its {count} inputs{padded}, got shape "
                f"{a.shape}{f' for {f}' if several is not None else ''}; a method must "
                "return maps of shape (batch, ...) for inputs of shape (batch, ...), not "
                "one map for the whole batch")
        maps[f] = a[:count]
    return maps


def _split_maps(result: Any, several: _Several | None, path: str, per_input: list[str]
                ) -> dict[str, Any]:
    """``{file: its maps}`` of a chunk's ``result`` (:func:`_maps_by_file`; also of its
    shapes, ``jax.ShapeDtypeStruct`` leaves: the files a job will write)."""
    if several is None:
        return {path: result}
    by_input = several.by_input(result) if isinstance(result, (list, tuple, dict)) else None
    if by_input is None:
        if isinstance(result, (list, tuple, dict)):
            raise ValueError(f"expected the method to return one map per input "
                             f"({', '.join(several.names)}), in a list in that order or a "
                             f"dict keyed by their names, or one array; got a "
                             f"{type(result).__name__} of {len(result)}")
        return {path: result}
    return {per_input[i]: result[key] for key, i in sorted(by_input, key=lambda ki: ki[1])}


def _non_finite_maps(maps: dict[str, np.ndarray], lo: int) -> tuple[list[int], str]:
    """The inputs (by index in the job; row 0 of ``maps`` = input ``lo``) whose maps in a
    chunk's ``{file: rows}`` hold NaN or inf values (written, they would read as finished
    results: a model whose scores are not finite for some inputs, a method dividing by
    zero), and the file, for a job writing several; ``([], "")`` where all are finite."""
    bad = {f: non_finite_rows(m) for f, m in maps.items()}
    rows = sorted({lo + r for f in bad for r in bad[f]})
    where = ", ".join(f for f in bad if bad[f])
    return rows, f" (for {where})" if rows and len(maps) > 1 else ""


def _non_finite_option_rows(parts: list[tuple[str, np.ndarray]]) -> tuple[list[int], str]:
    """The rows of a chunk where its rows of an option array given per input (``parts``:
    ``(name, rows)``, :func:`~jaxsal._src.job_inputs.per_input_arrays`) are not finite, and
    ``"'s <option>"`` naming the first such option; ``([], "")`` where all are finite."""
    for name, rows in parts:
        bad = non_finite_rows(rows)
        if bad:
            return bad, f"'s {name}"
    return [], ""


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
    flag = options.get("check_finite")
    if flag is None:  # (None, passed or bound, is unset: an inner layer's value shows)
        flag = _bound_keywords(method, none_unset=True).get("check_finite")
    try:
        param = inspect.signature(_unwrap(method)).parameters.get("check_finite")
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


def _fix(cause: str) -> str:
    """What to fix where a chunk was left out for ``cause``: ``"inputs"`` (not finite),
    ``"model"`` (finite inputs whose maps are not) or the name of an option given per input
    whose rows are not finite (``"maps"``: ``jaxsal evaluate``'s MAPS file)."""
    if cause == "inputs":
        return "those inputs (np.nan_to_num)"
    if cause == "model":
        return ("those inputs (np.nan_to_num) or the model (the scores of an input whose maps "
                "are not finite: model(x[i:i+1]))")
    return f"those rows of the {cause} (np.nan_to_num, or make them again)"


def _incomplete(skipped: dict[int, tuple[str, list[int], str]], n: int, n_chunks: int,
                batch_size: int, files: list[str], done: set, resume: bool) -> IncompleteJob:
    """The end of a ``keep_going`` job that left out chunks ``skipped`` (chunk -> why, the
    inputs at fault and the cause, :func:`_fix`'s; ``resume``: the job's, which its next run
    needs to keep the chunks written)."""
    chunks = [(c * batch_size, min(n, (c + 1) * batch_size)) for c in sorted(skipped)]
    rows = sorted(r for _, at_fault, _ in skipped.values() for r in at_fault)
    # what to fix, by cause (in the order of the chunks): the given maps are not the inputs
    fixes = list(dict.fromkeys(_fix(skipped[c][2]) for c in sorted(skipped)))
    said = "; ".join(f"chunk {c} (inputs {lo}:{hi}): {skipped[c][0]}"
                     for c, (lo, hi) in zip(sorted(skipped)[:5], chunks))
    if len(chunks) > 5:
        said += f"; and {len(chunks) - 5} more (at fault in all: {listed(rows)})"
    saved = (f"The other {len(done)} chunk{'s are' if len(done) > 1 else ' is'} saved in "
             f"{', '.join(files)} (which reads as unfinished until every chunk is)" if done
             else "No chunk was written")
    isolate = (" (at a batch size of 1, the inputs one by one, so that only those at fault "
               "stay out)" if batch_size > 1 else "")
    return IncompleteJob(
        f"{len(chunks)} of {n_chunks} chunks were left out: {said}. {saved}. Fix "
        f"{'; and '.join(fixes)} and run the same job again"
        f"{'' if resume else ' with resume=True'}: it computes only the chunks left out"
        f"{isolate}.", rows, chunks)


def _write(out: np.memmap, lo: int, hi: int, maps: np.ndarray) -> None:
    """Rows ``lo:hi`` of one output file, flushed to it (``mmap.flush``: ``msync``, on the
    disk before the progress file records the chunk)."""
    out[lo:hi] = maps
    out.flush()


def explain_to_file(method: Callable, /, model: ModelLike, inputs: Inputs,
                    path: str | os.PathLike, *, targets: Targets = None, batch_size: int = 64,
                    resume: bool = True, on_chunk: Callable[[int, int], None] | None = None,
                    keep_going: bool = False, sharding: jax.sharding.Sharding | None = None,
                    overwrite: bool = False, _fingerprint: Callable[[], dict] | None = None,
                    **options: Any) -> Any:
    """Compute ``method(model, inputs[i:i+batch_size], targets, **options)`` chunk by chunk
    into the ``.npy`` file ``path``.

    For a model of several inputs, ``inputs`` is a list (or tuple) of arrays in
    ``model.input_names`` order or a dict keyed by those names, as the methods take them:
    every chunk gets rows ``i:i+batch_size`` of each. A method that gives a map per input
    (:func:`jaxsal.saliency`, :func:`jaxsal.occlusion`...) has each input's maps written to a
    file of its own, named after ``path`` and the input, ``<stem>.<input name>.npy`` (the stem:
    ``path`` less its ``.npy``): ``maps.npy`` -> ``maps.img.npy``, ``maps.vec.npy``
    (positions, ``maps.0.npy``, where the model names no inputs or a name cannot end a file's
    name); one that gives one map (the gradient CAMs) writes ``path``. The job keeps one
    progress file and one lock, ``path + ".progress.json"`` and ``path + ".lock"``, and a
    chunk is finished only once every file holds its rows.

    Until every chunk is written, ``path`` (each file) is marked unfinished in its ``.npy``
    header, which ``np.load`` refuses; the job resumes it, and removes the mark once the last
    row is written and flushed.

    Args:
      method: any jaxsal attribution function, e.g. :func:`jaxsal.saliency`.
      model: the model (``model_import.KerasModel`` or a wrapped JAX function).
      inputs: ``(N, ...)`` array; a ``np.load(..., mmap_mode="r")`` array works, so inputs larger
        than memory stream from disk. For several inputs, a list, tuple or dict of such
        arrays, each with the same ``N``.
      path: output ``.npy``; ``path + ".progress.json"`` records finished chunks, the hash of
        each one's inputs and what the targets were (``jaxsal evaluate`` checks that it
        evaluates the maps at those inputs and targets: README, "Evaluating saved maps").
        For several inputs, the maps of each may go to its own file beside it (above):
        those files, too, are never a file the job reads.
      targets: as for ``method`` (class ids, ``None``, score functions such as
        :func:`jaxsal.class_score` / :func:`jaxsal.neuron` or your own functions); a 2-D
        ``(N, T)`` array is sliced along with the inputs.
      batch_size: inputs per compiled call. The last chunk is padded to this size so a single
        compilation serves the whole job. At most ``len(inputs)``: fewer inputs are one chunk,
        not padded. It is the job's, not the method's: a method's own ``batch_size``
        (occlusion's, RISE's, the Shapley methods', KernelSHAP's, LIME's, Score-CAM's,
        Ablation-CAM's, deletion's and insertion's perturbed inputs per forward pass) is
        bound in a ``functools.partial``: ``explain_to_file(functools.partial(
        jaxsal.occlusion, batch_size=16), model, inputs, path, batch_size=64, ...)``.
      resume: reuse the finished chunks of an earlier run of the *same* job: same method, model
        (class, head, output, backward rule, architecture and weights), inputs count, shape
        and dtype, targets and options (see the module docstring); otherwise start over. At
        another batch size the inputs already finished are kept and the chunks of the others
        computed. A finished chunk whose inputs changed since is computed again (resuming
        reads the finished chunks' inputs once to check them; so are the rows of an option
        given per input). ``False`` always starts over.
      on_chunk: called as ``on_chunk(done, total)`` after each chunk is written (``done``:
        the chunks written so far, a count); one that names a ``left_out`` parameter is also
        told how many chunks ``keep_going`` left out so far (``total - done - left_out``
        chunks are still to compute).
      keep_going: where a chunk's inputs, its rows of an option given per input (IG
        baselines, ``evaluate``'s maps) or its maps are not finite (NaN or inf), leave that
        chunk unwritten and go on with the others, then raise :class:`IncompleteJob` naming
        every such input (``False``: stop at the first, raising a ``ValueError``). Only this
        failure, of some inputs' data, is skipped: any other error still stops the job. The
        chunks left out stay unfinished (rows of zeros, not listed in the progress file;
        ``jaxsal`` refuses the file as inputs or maps), and running the job again
        computes only them; again at ``batch_size=1``, only the inputs at fault stay out.
      overwrite: let a job that starts over (it resumes nothing) replace an existing file
        that may hold finished work: an array no progress file lists (one's own, or a
        finished job's maps whose progress file is gone), a finished job's output (another
        job at ``path``, or this one with ``resume=False``), the finished chunks of an
        unfinished job, a file beside an unreadable progress file. ``False`` (default):
        refused with a ``FileExistsError`` before any chunk, the file untouched (for several
        inputs, only the files the job writes: ``path`` or those of the inputs' maps, as the
        traced call of a jaxsal method says; all of them for a method of one's own). A job's
        own file resumes without it; another job's file (its progress file lists it under
        another path) stays refused.
      sharding: where each chunk's inputs go before ``method`` runs on them
        (``jax.device_put(chunk, sharding)``), e.g. ``NamedSharding(Mesh(jax.devices(),
        ("data",)), P("data"))``: every device explains its rows of each chunk, and the maps
        are those of one device (the same file; it is not part of the job's signature).
        ``batch_size`` must split into whole shards (a multiple of the device count); fewer
        inputs than ``batch_size`` make one chunk padded to the next multiple. ``None``
        (default): JAX's default device.
      _fingerprint: private (``jaxsal evaluate``'s): a function returning the model's
        description in the job's signature, which the command computed for its check of the
        maps (it hashes every weight: once). Leave it out.
      **options: passed to ``method`` (``method=`` too: ``explain_to_file``'s own ``method``
        is positional, so ``explain_to_file(jaxsal.smoothgrad, ...,
        method="integrated_gradients")`` reaches SmoothGrad), except ``batch_size``, the
        job's (above: bind the method's own in a ``functools.partial``). An array option of
        the inputs' rank whose leading axis is the inputs' count (an ``(N, H, W, C)``
        integrated-gradients ``baseline`` or occlusion ``fill``, also inside
        ``method_options``) is sliced with the inputs; a
        method with an ``index_offset`` parameter (:func:`jaxsal.smoothgrad`) gets each
        chunk's position, so its noise, keyed by the global input index, does not depend on
        ``batch_size`` and the file equals one call over all inputs; so does a method of
        ``**kwargs`` given a ``key`` (a wrapper of a random method, which passes it on).
        Options a method lists in its ``shared_options`` attribute
        (:func:`jaxsal.gradient_shap`'s ``baselines``) are passed whole to every chunk;
        those its ``per_input_options`` names
        (:func:`jaxsal.shapley_values`'s ``(N, H, W)`` ``feature_mask``) are sliced; its
        ``job_options`` fixes options for the whole job first (the Shapley methods'
        ``return_groups=True`` becomes the column count of all the inputs' masks). For several
        inputs, an option given per input (a list of one value per input, a dict keyed by
        their names: an integrated-gradients ``baseline``) has each array of its input's
        rank with ``N`` rows sliced with that input; the options a method lists in its
        ``several_input_options`` attribute (a tuple of option names:
        ``jaxsal.integrated_gradients.several_input_options``) are taken in either form
        whatever container ``inputs`` is, and passed on as a dict keyed as
        ``inputs`` for a dict of inputs, else as a list; bound in a ``functools.partial`` of
        ``method`` (``functools.partial(jaxsal.integrated_gradients, baseline={...})``),
        they are taken as if passed here (arranged, sliced, checked; the same job), an
        option passed here over the partial's. So are, for one input array as for several,
        the partial's options sliced with the inputs (an ``(N, H, W, C)`` baseline), named
        by ``per_input_options`` or fixed by ``job_options`` (``functools.partial(
        jaxsal.shapley_values, return_groups=True)``); its others stay bound.
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
        count (both before any work), for an option of nested lists of one row per input
        (pass an array), for what a jaxsal method refuses in the first chunk's call (traced
        before any work; a ``TypeError`` too), and when the file at
        ``path`` does not hold this job's maps although its progress file says so.
      Exception: any other error of ``method`` in a chunk (a ``TypeError``, a JAX runtime
        error such as running out of memory) propagates as it is, with a note (``__notes__``)
        naming the chunk and saying what is saved; the finished chunks stay, as above.
      TypeError: when ``resume=True`` and an option, a target or the model cannot be described
        the same way in another process (an object without a stable description): the job
        could not be told apart from another one on resume. Also, before any work, for a
        structure of inputs given to a model of one input or to a method that explains one
        input array (:func:`jaxsal.scorecam`, the Shapley methods, LIME...: its
        ``one_input`` attribute says why), for one array given to a model of several, and
        for an option ``method`` does not take (naming the option, the method and its
        options; a method of ``**kwargs`` takes any), one of the three it is passed by
        position, or a required option left out.
      BlockingIOError: when another process (or thread) runs a job writing ``path`` (or, for
        several inputs, one of the files of their maps): it holds that file's lock,
        ``path + ".lock"`` (see the module docstring).
      FileExistsError: when a file the job may write is another job's output (its progress
        file lists it), before any chunk: ``path`` and, for several inputs, the file of each
        input's maps (``<stem>.<input name>.npy``), whether the method writes them or one
        map. Also, without ``overwrite=True``, when the job starts over onto such a file that
        may hold finished work (see ``overwrite``).
    """
    path = os.fspath(path)
    resume = check_flag(resume, "resume")  # "False" would resume: refused before the lock
    keep_going = check_flag(keep_going, "keep_going")
    overwrite = check_flag(overwrite, "overwrite")
    batch_size = ints.check_int(batch_size, "batch_size", kind="inputs per chunk")
    if sharding is not None and not isinstance(sharding, jax.sharding.Sharding):
        raise TypeError("expected sharding as a jax.sharding.Sharding (e.g. NamedSharding(Mesh("
                        "jax.devices(), ('data',)), PartitionSpec('data'))) or None, got "
                        f"{type(sharding).__name__}")
    _refuse_explicit_sharding(sharding)
    if not callable(method):
        raise TypeError(f"expected method as a jaxsal attribution function (e.g. "
                        f"jaxsal.saliency), got {method!r}")
    if on_chunk is not None and not callable(on_chunk):  # (else a TypeError after chunk 0)
        raise TypeError(f"expected on_chunk as a function on_chunk(done, total), called after "
                        f"each chunk is written, or None; got {on_chunk!r}")
    whole = _whole_batch(method, options)
    if whole:
        fn = _unwrap(method)
        name = getattr(fn, "__name__", "this method")
        fix = getattr(fn, "whole_batch_fix", "Call it")
        raise ValueError(f"{name} {whole}: its values depend on the "
                         "batch, so chunks (and the last one, padded with copies of its last "
                         f"input) would not equal one call. {fix} on the whole batch "
                         "(method(model, inputs, ...)) and save the result")
    several = _several(method, model, inputs)  # None: one input array
    # (an option the method does not take, a required one left out: before any work, as the
    # command line's --option, not Python's TypeError in the first chunk)
    check_call(method, options)
    # before the sidecar is read, until the job has returned: the lock of path and, for
    # several inputs, those of the files their maps may go to (another job may write one of
    # them as its path, or as the maps of an input of its own)
    with job_lock(path, several.names if several is not None else ()):
        return _explain_to_file(method, model, inputs, path, several, targets=targets,
                                batch_size=batch_size, resume=resume, on_chunk=on_chunk,
                                keep_going=keep_going, sharding=sharding,
                                overwrite=overwrite, _fingerprint=_fingerprint, **options)


def _whole_batch(method: Callable, options: dict) -> str | None:
    """Why ``method``'s values depend on the batch (so a job's chunks would not equal one
    call), or None: its ``whole_batch`` attribute, a reason (``feature_permutation``'s) or a
    function of the options returning one or None (Score-CAM's, for ``top_k`` with
    ``top_k_mode="union"``), given those bound in ``functools.partial`` layers (an outer
    layer's over an inner one's) under ``options``, as the call gets them."""
    whole = getattr(_unwrap(method), "whole_batch", None)
    if not callable(whole):
        return whole or None
    return whole({**_bound_keywords(method), **options}) or None


def _unbind_options(method: Callable, model: Any, shapes: Any, n: int, ndim: int,
                    several: _Several | None, options: dict) -> tuple[Callable, dict]:
    """``(method, options)`` with the options that ``functools.partial`` layers of
    ``method`` bind and the job must read, taken out of them into ``options`` (an option
    passed to the job over the partial's, as the partial's call gives them): those of
    :func:`several_input_options` (for several inputs), those its ``job_options`` fixes for
    the whole job (the Shapley methods' ``return_groups=True``) or ``per_input_options``
    names, and every one with rows sliced with the inputs (:func:`_map_rows`: an ``(N, H,
    W, C)`` IG baseline). Left bound, each chunk would get them whole and as bound: rows of
    all the inputs, a value a chunk's masks alone decide. The others stay bound (a method's
    own ``batch_size``), as the job's signature describes them."""
    bound = _bound_keywords(method)
    if not bound:
        return method, options
    view = {**bound, **options}
    if several is not None:
        view = _arrange_options(method, several, view)
    job = job_options(method, model, shapes, view)
    rows = per_input_options(method, model, shapes, job)
    shared = shared_options(method)
    names = ({spec.partition(".")[0] for spec in several_input_options(method)}
             if several is not None else set())
    for k in bound:
        hit: list = []
        _map_rows({k: job.get(k)}, n, ndim, lambda _, v: hit.append(k) or v, shared, rows,
                  several)
        if hit or k in rows or k not in job or job[k] is not view[k]:
            names.add(k)
    if not names:
        return method, options
    method, taken = _bound_options(method, names)
    return method, {**taken, **options}


def _refuse_explicit_sharding(sharding: Any) -> None:
    """Refuse a ``sharding=`` that splits an axis over ``Explicit`` mesh axes, naming it,
    before any work: each chunk put there was refused as the method's ``x`` ("x is sharded
    over Explicit mesh axes ... move x to such a mesh"), of inputs the caller passed on the
    host. Replicated on such a mesh (``P()``), it is taken, as the methods take such
    arrays."""
    explicit = getattr(getattr(jax.sharding, "AxisType", None), "Explicit", None)
    if explicit is None or not isinstance(sharding, jax.sharding.NamedSharding):
        return
    mesh = sharding.mesh
    kinds = dict(zip(mesh.axis_names, getattr(mesh, "axis_types", ()) or ()))
    names = [n for entry in sharding.spec if entry is not None
             for n in (entry if isinstance(entry, tuple) else (entry,))]
    axes = tuple(n for n in names if kinds.get(n) == explicit)
    if axes:
        raise ValueError(
            f"sharding= splits each chunk over Explicit mesh axes {axes} (spec "
            f"{sharding.spec}), which jaxsal does not support: its programs rely on XLA "
            f"propagating the sharding (Auto axes). Build the mesh with Auto axes, "
            f"jax.make_mesh(shape, names, axis_types=(jax.sharding.AxisType.Auto,) * "
            f"{len(mesh.axis_names)}) or jax.sharding.Mesh(devices, names), and pass "
            f"sharding=NamedSharding(auto_mesh, {sharding.spec}) (README: 'Several devices')")


def _shard_count(sharding: Any, batch_size: int, row_shape: tuple) -> int:
    """How many shards ``sharding`` splits a chunk's batch axis into; a ``ValueError`` where
    ``batch_size`` rows do not split into whole shards, or where another axis of a chunk
    ``(batch_size, *row_shape)`` does not (naming that axis: no batch size fixes it)."""
    shape = (batch_size, *row_shape)
    try:
        rows = sharding.shard_shape(shape)[0]
    except ValueError as e:
        axis, parts = _uneven_axis(sharding, shape)
        if axis:
            raise ValueError(
                f"sharding= splits axis {axis} of each chunk (size {shape[axis]}) into {parts} "
                f"shards, which do not divide it ({sharding}; chunks of shape {shape}); no "
                f"batch_size can fix that. Split only the batch axis (axis 0), e.g. "
                f"NamedSharding(mesh, PartitionSpec('data')), or split axis {axis} over mesh "
                f"axes whose sizes multiply to a divisor of {shape[axis]}") from e
        raise ValueError(f"expected batch_size as a multiple of the shards sharding splits the "
                         f"batch axis into, got batch_size={batch_size} ({e}); pass a multiple "
                         "of the device count") from e
    return batch_size // rows


def _uneven_axis(sharding: Any, shape: tuple) -> tuple[int, int]:
    """The first axis past the batch axis of ``shape`` that ``sharding`` splits into shards
    that do not divide it, and into how many: ``(axis, parts)``; ``(0, 0)`` where none (or
    the split cannot be read). Each axis's parts are read from the shard shape of an array
    of the device count along every axis (which any split of the devices divides)."""
    devices = len(sharding.device_set)
    try:
        shard = sharding.shard_shape((devices,) * len(shape))
    except ValueError:  # (a rank the sharding does not fit: JAX's placement says it)
        return 0, 0
    for axis in range(1, len(shape)):
        parts = devices // shard[axis]
        if shape[axis] % parts:
            return axis, parts
    return 0, 0


def _is_jaxsal(method: Callable) -> bool:
    """Whether ``method`` is a function of jaxsal's own (also under ``functools.partial``
    layers): its public methods, the command line's ``evaluate`` scores; pure functions of
    their arguments, which a dry run may trace (a method of one's own may have side effects,
    a call log, host work: never dry-run)."""
    fn = _unwrap(method)
    module = getattr(fn, "__module__", None) or ""
    return inspect.isfunction(fn) and (module == "jaxsal" or module.startswith("jaxsal."))


def _takes_left_out(on_chunk: Callable) -> bool:
    """Whether ``on_chunk`` names a ``left_out`` parameter (positional-or-keyword or
    keyword-only). A ``**kwargs`` alone does not count: a forwarding wrapper (``def cb(*a,
    **kw): log(*a, **kw)``) passed it on to a two-argument callback, which then failed."""
    try:
        params = inspect.signature(on_chunk).parameters.values()
    except (TypeError, ValueError):  # (a callable without a signature: the documented two)
        return False
    return any(p.name == "left_out" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
               for p in params)


def _dry_run(method: Callable, model: Any, x: Any, targets: Any, options: dict,
             chunk: str) -> Any:
    """Trace ``method(model, x, targets, **options)`` (a chunk's call) without computing it
    (``jax.eval_shape``: no compilation, no device work), return the shapes of its result
    (``jax.ShapeDtypeStruct`` leaves; None where the trace itself failed) and raise what the
    method refuses
    in its arguments, as a direct call would: an option in a form it does not take (a tuple
    of baselines for a dict of inputs), a value out of range, an input of another shape.
    ``check_finite`` is off for it (NaN inputs are the job's to name, chunk by chunk), and
    an error of the trace itself (a value the method reads on the host) is left to the
    real call. ``chunk``: which (``"chunk 7 (inputs 56:64)"``), for the error."""
    if "check_finite" in inspect.signature(method).parameters:
        options = {**options, "check_finite": False}
    try:
        return jax.eval_shape(lambda: method(model, x, targets, **options))
    except jax.errors.JAXTypeError:  # (a tracer where the method reads a value: not dry)
        return None
    except (ValueError, TypeError) as e:
        kind = TypeError if isinstance(e, TypeError) else ValueError
        raise kind(f"{str(e).rstrip('.')}. (Refused before any work: explain_to_file "
                   f"traced the call of {chunk}, the first to compute, before computing any "
                   "chunk; nothing was computed or written. Fix the option or inputs and run "
                   "the call again.)") from e
    except Exception:  # anything else: the real call says it, for its chunk
        return None


def _check_rows(model: Any, inputs: Any, batch_size: int, targets: Any) -> None:
    """The methods' check that the model keeps the inputs of a batch apart
    (:func:`jaxsal._src.per_example.check_per_example`), and class ids against the model's
    classes, once before the first chunk: such a model or id is refused as what it is, not as
    the failure of the chunk it is met in. Anything else that keeps the model from running is
    left to the method."""
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
    if isinstance(y, jax.ShapeDtypeStruct) and len(y.shape) == 2:
        _check_ids(targets, int(y.shape[1]))


def _explain_to_file(method: Callable, model: Any, inputs: Any, path: str,
                     several: _Several | None, /, *, targets: Any, batch_size: int,
                     resume: bool, on_chunk: Callable[[int, int], None] | None,
                     keep_going: bool, sharding: Any = None, overwrite: bool = False,
                     _fingerprint: Callable[[], dict] | None = None, **options: Any) -> Any:
    """:func:`explain_to_file`, its arguments checked (``several``: its inputs, for a
    model of several) and its lock held (``_fingerprint``: as there, a name no method's
    option has)."""
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
    # (the method refuses them too, but the job slices the inputs first, where JAX raised)
    for i, a in enumerate(arrays):
        base.refuse_explicit(a, "inputs" if several is None else f"inputs {several.names[i]!r}")
    # (and every other array: the targets, the options, those a functools.partial binds;
    # options with rows are sliced with the inputs, where JAX raised too)
    base.refuse_explicit_tree(targets, "targets")
    for k, v in {**_bound_keywords(method), **options}.items():
        base.refuse_explicit_tree(v, k)
    # an option bound in a functools.partial of the method that the job reads (rows sliced
    # with the inputs, one fixed for the whole job, one value per input): taken as passed
    # here (arranged, sliced, checked; the same job), the call's over the partial's
    method, options = _unbind_options(method, model, shapes, n, ndim, several, options)
    if several is not None:
        # an option of one value per input as a dict by name or a list by position: passed
        # on keyed as the inputs (a dict of them), else as a list
        options = _arrange_options(method, several, options)
    # fewer inputs than a batch: one chunk of them all, not padded with copies (which cost a
    # full batch: 64 inputs' work for 2 with the default)
    if sharding is None:
        batch_size = min(batch_size, n)
    else:  # whole shards: fewer inputs are padded to the next multiple of the shard count
        k = _shard_count(sharding, batch_size, tuple(np.shape(arrays[0])[1:]))
        batch_size = min(batch_size, -(-n // k) * k)
    _check_targets(targets, n)
    shared = shared_options(method)
    options = job_options(method, model, shapes, options)
    rows = per_input_options(method, model, shapes, options)
    _check_options(options, n, ndim, shared=shared, several=several, rows=rows)
    # (a method of **kwargs given a key: passed on too, a wrapper of a random method)
    implicit = _implicit_offset(method, options)
    offset = options.pop("index_offset", 0) if _takes_offset(method, options) else None
    if offset is not None:  # (the last chunk's rows padded to a whole batch keyed too)
        offset = base.check_index_offset(offset, n=-(-n // batch_size) * batch_size)
    _check_path(path, inputs, options, several)
    progress_path = path + ".progress.json"
    # never another job's output, before any chunk: every file the job may write (path and,
    # for several inputs, the files of their maps, whether its method writes them or one
    # map to path, as the files it holds the locks of)
    check_not_another_jobs([path, *per_input], progress_path, _input_roles(path, several))
    _check_rows(model, inputs, batch_size, targets)
    # option arrays of one row per input: signed by their shape, hashed chunk by chunk
    sliced, described = per_input_arrays(options, n, ndim, shared, rows, several)
    # labels per input ((N, T) class ids): signed by their rows' shape, hashed alike
    labels = per_input_targets(targets, n)
    if labels is not None:
        sliced.append(("targets", labels))
    hashed = (*arrays, *(a for _, a in sliced))  # a chunk's hash: its inputs' rows, theirs
    try:
        fp = model_fingerprint(model) if _fingerprint is None else _fingerprint()
        sig, family, sig_parts = _signatures(
            method, model, inputs,
            described if offset is None else {**described, "index_offset": offset}, targets,
            batch_size, several, fp)
        # the classes the maps are of (for `jaxsal evaluate` to check it scores those)
        made_for: dict | None = target_record(targets, fp)
        if class_free(method):  # (Eigen-CAM, and what wraps it: one map for any class)
            made_for = {**made_for, "target_form": "any"}
    except _Unstable as e:
        if resume:
            raise TypeError(
                f"explain_to_file records the method, model, targets and options in the job's "
                f"signature to tell a resumed job from another, and cannot describe {e} the "
                "same way in another process. Pass a value with a stable description (arrays, "
                "numbers, strings, plain functions, jaxsal.class_score / jaxsal.neuron), or "
                "resume=False (the job then starts over on every run).") from None
        sig = family = made_for = sig_parts = None  # never resumed
    n_chunks = -(-n // batch_size)
    done: set[int] = set()
    digests: dict[int, str] = {}  # finished chunk -> the hash of its inputs
    out: dict[str, np.memmap] | None = None  # output file -> its memory map
    files: list[str] = [path]  # the files the maps go to: path, or one per input

    recorded = [None]  # how many chunks the progress file lists, once this run wrote it
    also: list = []  # files an earlier job at path wrote besides its maps (record_job_file):
    _read_progress(progress_path, also)  # still its own, listed on

    def save_progress():
        record = {"format": FORMAT, "signature": sig, "family": family,
                  "done": sorted(done), "chunks": n_chunks, "batch_size": batch_size,
                  "n": n, "inputs": {str(c): d for c, d in sorted(digests.items())}}
        if also:
            record["also"] = also
        if sig_parts is not None:  # (for the error that says how another job differs)
            record["parts"] = sig_parts
        if made_for is not None:
            record.update(made_for)
        if several is None:
            record["input_shape"] = list(np.shape(inputs)[1:])
            record["input_dtype"] = str(getattr(inputs, "dtype", ""))  # (the signature's)
        else:  # the files it vouches for (batch.unfinished finds it from theirs)
            record["input_shapes"] = {name: list(np.shape(a)[1:])
                                      for name, a in zip(several.names, arrays)}
            record["input_dtypes"] = {name: str(getattr(a, "dtype", ""))
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
            if not overwrite:
                raise ValueError(f"cannot read the progress file {progress_path} ({why}); "
                                 f"{_fresh(path, progress_path)}")
            prog = {}  # (nothing says which chunks are finished: overwrite=True starts over)
        same = prog.get("signature") == sig
        old_b = batch_size if same else prog.get("batch_size")
        # or the same job at another batch size (a smaller one after running out of memory)
        rebatch = (not same and prog.get("family") == family and isinstance(old_b, int)
                   and old_b >= 1)
        # the files of a job over several inputs: as its progress file lists them (every one
        # there, else the job starts over, as one whose .npy is missing: where the others
        # hold finished chunks, with overwrite=True only, check_replaceable saying which file
        # is missing; none another job's output: checked above)
        kept_files = [path] if several is None else _recorded_files(prog, path, per_input)
        # (a job that finished no chunk has nothing to keep, and its .npy may be torn: one
        # stopped while writing the header starts again)
        if (resumable(prog) and (same or rebatch)
                and kept_files and all(os.path.exists(f) for f in kept_files)):
            out = _reopen(kept_files, n, progress_path, overwrite)  # (None: starts over)
        if out is not None:
            files = kept_files
            for f in files:
                _allocate(f)  # (a file of a jaxsal before the reservation may be sparse)
            kept = prog.get("inputs")
            # a finished chunk whose inputs changed since (fixed, or another data set of the
            # same shape) is computed again, never kept from the old values (a sidecar written
            # before the hashes is trusted, and gets them)
            digests.update(_finished_chunks(hashed, n, old_b, set(prog.get("done", [])),
                                            kept if isinstance(kept, dict) else None,
                                            batch_size))
            done.update(digests)
            if len(done) < n_chunks:
                # rows will be written: the files read as unfinished before any is (a
                # finished job whose inputs changed in some chunks held finished maps; a
                # file of a jaxsal before the mark), so that neither np.load nor a run
                # stopped while writing them passes off old and new rows as finished maps
                for f in files:
                    if mark_unfinished(f):  # (made again, with room for the mark)
                        out[f] = open_maps(f)
            if (rebatch or sorted(done) != prog.get("done")
                    or (made_for is not None and any(prog.get(k) != v
                                                     for k, v in made_for.items()))):
                # the job's progress at this batch size from now on; the chunks kept, before
                # the rows of those whose inputs changed are written again (its progress file
                # listed them); what its maps were made for, where a jaxsal before did not
                # record it (for `jaxsal evaluate` to check)
                save_progress()
    resumed = out is not None
    # starting over: never onto a file holding finished work, unless told to (for several
    # inputs, once the dry run below says which files the job writes)
    replace_check = not resumed and not overwrite
    if replace_check and several is None:
        check_replaceable([path], progress_path, parts=sig_parts, resume=resume)

    check_inputs = _checks_inputs(method, options)
    # keep_going: chunk -> (why, inputs at fault, cause: "inputs", "model" or an option)
    skipped: dict[int, tuple[str, list[int], str]] = {}

    def call_args(lo: int, hi: int, parts: list) -> tuple[Any, Any, dict]:
        """The inputs, targets and options of the method's call for inputs ``lo:hi``
        (``parts``: their rows of each input), padded to the batch size."""
        pad = batch_size - (hi - lo)
        padded = [_rows(p, 0, hi - lo, pad) for p in parts]
        xb = padded[0] if several is None else several.pack(padded)
        if sharding is not None:
            xb = jax.device_put(xb, sharding)
        opts = _chunk_options(options, n, ndim, lo, hi, pad, shared, rows, several)
        if offset is not None:
            opts["index_offset"] = int(offset) + lo
        return xb, _chunk_targets(targets, lo, hi, pad), opts

    read: dict[int, list] = {}  # chunk -> its inputs' rows, read by the dry run
    first = next((c for c in range(n_chunks) if c not in done), None)
    traced = None  # the shapes of the first chunk's maps, where the dry run got them
    if first is not None and _is_jaxsal(method):
        # the first chunk's call traced, not run, before any work: what the method refuses
        # in its arguments (an option's form, its values) is refused here, not as the
        # failure of a chunk
        lo, hi = first * batch_size, min(n, (first + 1) * batch_size)
        read[first] = [np.asarray(a[lo:hi]) for a in arrays]
        traced = _dry_run(method, model, *call_args(lo, hi, read[first]),
                          f"chunk {first} (inputs {lo}:{hi})")
    if replace_check and several is not None:
        # the files the job writes: path (one map) or those of the inputs' maps, as the
        # traced maps say; every one it may write where nothing says (a method of one's own)
        written = [path, *per_input]
        if traced is not None:
            with contextlib.suppress(Exception):  # (a result of another form: the chunk's)
                written = list(_split_maps(traced, several, path, per_input))
        check_replaceable(written, progress_path, _input_roles(path, several),
                          parts=sig_parts, resume=resume)

    for c in range(n_chunks):
        if c in done:
            continue
        lo, hi = c * batch_size, min(n, (c + 1) * batch_size)
        parts = read.pop(c) if c in read else [np.asarray(a[lo:hi]) for a in arrays]
        option_parts = [(name, np.asarray(a[lo:hi])) for name, a in sliced]
        digest = _chunk_digest(parts + [rows for _, rows in option_parts])
        # (NaN/inf inputs, or rows of an option given per input (evaluate's maps, IG
        # baselines), named here: the method's own check cannot say which)
        bad, what = (non_finite_rows(parts), "") if check_inputs else ([], "")
        if check_inputs and not bad:
            bad, what = _non_finite_option_rows(option_parts)
        if bad:
            rows_bad = [lo + r for r in bad]
            many = len(bad) > 1 or bool(what)  # ("input 3's maps contain")
            cause = what[3:] or "inputs"  # (what: "'s maps", an option's rows)
            them = "them" if len(bad) > 1 else "it"
            why = (f"{listed(rows_bad)}{what} contain{'' if many else 's'} NaN or infinite "
                   "values: attribution maps of such inputs are meaningless. Clean "
                   f"{them} (np.nan_to_num) or leave {them} out" if not what else
                   f"{listed(rows_bad)}{what} contain NaN or infinite values: fix "
                   f"{_fix(cause)} or leave those inputs out")
            short = f"{listed(rows_bad)}{what} contain{'' if many else 's'} NaN or inf"
        else:
            xb, tb, opts = call_args(lo, hi, parts)
            try:
                # np.asarray inside: a JAX runtime error (out of memory...) surfaces there
                maps = _maps_by_file(method(model, xb, tb, **opts), several, path, per_input,
                                     hi - lo, batch_size)
            except NonFiniteMaps as e:  # named by their index in the job, not the chunk
                rows_bad, where = [lo + r for r in e.rows if r < hi - lo] or [hi - 1], ""
            except Exception as e:
                if implicit and isinstance(e, TypeError) and "index_offset" in str(e):
                    e.add_note(
                        "explain_to_file passes index_offset (each chunk's position) to a "
                        "method that takes **kwargs and is given a key, for a wrapper of a "
                        "random method to pass on (its noise then does not depend on the "
                        "batch size); a method of **kwargs that draws no noise by the "
                        "input's index: name its parameters, or take index_offset and ignore "
                        "it")
                raise _chunk_failed(e, c, lo, hi, batch_size, done, files, path, several)
            else:
                rows_bad, where = _non_finite_maps(maps, lo)
            why = _not_finite(rows_bad, where) if rows_bad else None
            short = f"the maps of {listed(rows_bad)}{where} are not finite"
            cause = "model"
        if why is not None:
            if keep_going:
                skipped[c] = short, rows_bad, cause
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
                    # (marked unfinished until its last row is written: mark_finished)
                    out[f] = create_maps(f, m.dtype, (n, *m.shape[1:]))
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
                             f"the job started; {_fresh(list(out), progress_path, False)}")
        elif list(out) != list(maps) or any(out[f].shape[1:] != m.shape[1:]
                                            for f, m in maps.items()):
            # (a method whose maps change shape from chunk to chunk: written into the file's
            # shape, they would broadcast or fail half-way through a write)
            def shapes(arrays: dict) -> str:
                return "; ".join(f"{(batch_size, *a.shape[1:])}"
                                 + (f" for {f}" if several is not None else "")
                                 for f, a in arrays.items())
            raise _chunk_failed(ValueError(
                f"the method returned maps of shape {shapes(maps)}, but the earlier chunks' "
                f"maps (in the file) were of shape {shapes(out)}: expected {shapes(out)}; a "
                "method must return maps of the same shape for every chunk"), c, lo, hi,
                batch_size, done, files, path, several)
        for f, m in maps.items():
            _write(out[f], lo, hi, m)
        done.add(c)
        digests[c] = digest
        if len(done) == n_chunks:  # every row written and flushed: np.load reads the files
            for f in out:         # now (before the progress file says so)
                mark_finished(f)
        save_progress()
        if on_chunk is not None:
            if _takes_left_out(on_chunk):
                on_chunk(len(done), n_chunks, left_out=len(skipped))
            else:
                on_chunk(len(done), n_chunks)
    del out
    if skipped:
        raise _incomplete(skipped, n, n_chunks, batch_size, files, done, resume)
    for f in files:  # (a run that found every chunk finished: marked already, but cheap)
        mark_finished(f)
    loaded = [np.load(f, mmap_mode="r") for f in files]
    return loaded[0] if files == [path] else several.pack(loaded)
