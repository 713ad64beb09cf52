"""Batch jobs that survive interruption: attribution maps streamed to a ``.npy`` on disk.

:func:`explain_to_file` runs any jaxsal method over a large input array in fixed-size chunks
(the last one padded, so one compiled program serves every chunk), writes each chunk's maps into
a memory-mapped ``.npy`` as soon as it is done, and records progress in a JSON sidecar. A job
that is stopped or fails (a NaN in chunk 7, a killed process) keeps every finished chunk; run the
same call again and it resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Callable, Sequence

import numpy as np

_FORMAT = 1


def _signature(method: Callable, n: int, options: dict, targets: Any, batch_size: int) -> str:
    owner = method if hasattr(method, "__qualname__") else type(method)  # instances: their class
    name = f"{owner.__module__}.{owner.__qualname__}"
    t = targets if isinstance(targets, (int, str, type(None))) else np.asarray(targets).tolist()
    blob = json.dumps({"m": name, "n": n, "o": {k: repr(v) for k, v in sorted(options.items())},
                       "t": t, "b": batch_size}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _chunk_targets(targets, lo, hi, pad):
    if targets is None or isinstance(targets, (int, np.integer)) or callable(targets):
        return targets
    t = np.asarray(targets)
    if t.ndim == 2:  # per-input class ids: slice with the inputs
        t = t[lo:hi]
        if pad:
            t = np.concatenate([t, np.repeat(t[-1:], pad, axis=0)])
    return t


def explain_to_file(method: Callable, model: Any, inputs: np.ndarray, path: str | os.PathLike,
                    *, targets: Any = None, batch_size: int = 64, resume: bool = True,
                    on_chunk: Callable[[int, int], None] | None = None,
                    **options: Any) -> np.ndarray:
    """Compute ``method(model, inputs[i:i+batch_size], targets, **options)`` chunk by chunk
    into the ``.npy`` file ``path``.

    Args:
      method: any jaxsal attribution function, e.g. :func:`jaxsal.saliency`.
      model: the model (``model_import.KerasModel`` or a wrapped JAX function).
      inputs: ``(N, ...)`` array; a ``np.load(..., mmap_mode="r")`` array works, so inputs larger
        than memory stream from disk.
      path: output ``.npy``; ``path + ".progress.json"`` records finished chunks.
      targets: as for ``method``; a 2-D ``(N, T)`` array is sliced along with the inputs.
      batch_size: inputs per compiled call. The last chunk is padded to this size so a single
        compilation serves the whole job.
      resume: reuse the finished chunks of an earlier run of the *same* job (same method,
        inputs length, targets, options, batch size); otherwise start over.
      on_chunk: called as ``on_chunk(done, total)`` after each chunk is written.
    Returns:
      The maps as a read-only memory map of ``path`` (shape ``(N, ...)`` as ``method`` returns).
    Raises:
      ValueError: from ``method`` for a bad chunk (e.g. NaN inputs), naming the chunk; every
        chunk finished before it stays on disk and is not recomputed on the next run.
    """
    path = os.fspath(path)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(inputs)
    if n == 0:
        raise ValueError("inputs is empty: expected at least one example along axis 0")
    progress_path = path + ".progress.json"
    sig = _signature(method, n, options, targets, batch_size)
    n_chunks = -(-n // batch_size)
    done: set[int] = set()
    out = None
    if resume and os.path.exists(progress_path) and os.path.exists(path):
        with open(progress_path) as fh:
            prog = json.load(fh)
        if prog.get("signature") == sig and prog.get("format") == _FORMAT:
            done = set(prog.get("done", []))
            out = np.lib.format.open_memmap(path, mode="r+")

    def save_progress():
        tmp = progress_path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump({"format": _FORMAT, "signature": sig, "done": sorted(done),
                       "chunks": n_chunks, "batch_size": batch_size, "n": n}, fh)
        os.replace(tmp, progress_path)  # atomic: a crash never leaves a torn progress file

    for c in range(n_chunks):
        if c in done:
            continue
        lo, hi = c * batch_size, min(n, (c + 1) * batch_size)
        xb = np.asarray(inputs[lo:hi])
        pad = batch_size - (hi - lo)
        if pad:
            xb = np.concatenate([xb, np.repeat(xb[-1:], pad, axis=0)])
        try:
            maps = method(model, xb, _chunk_targets(targets, lo, hi, pad), **options)
        except ValueError as e:
            raise ValueError(f"chunk {c} (inputs {lo}:{hi}) failed: {e}. Chunks finished so far "
                             f"are saved in {path}; fix the inputs and run again to resume.") from e
        maps = np.asarray(maps)[: hi - lo]
        if out is None:
            out = np.lib.format.open_memmap(path, mode="w+", dtype=maps.dtype,
                                            shape=(n, *maps.shape[1:]))
        out[lo:hi] = maps
        out.flush()
        done.add(c)
        save_progress()
        if on_chunk is not None:
            on_chunk(len(done), n_chunks)
    del out
    return np.load(path, mmap_mode="r")
