"""The files of a batch job (:func:`jaxsal.explain_to_file`): its output paths and progress file.

A job writes its maps to a ``.npy`` (for several inputs, maybe one per input beside it) and
records its finished chunks in a JSON sidecar, ``path + ".progress.json"``, replaced
atomically by a file synced first (:func:`replace_file`). An output path is checked before any
chunk: a folder, a missing folder, or the file the inputs or an option are read from is
refused. A file that another job's sidecar lists as its output (the path of a job over one
input array, the file of an input's maps of a job over several), finished or to be resumed,
is never written: a job that would write it fails with a :class:`FileExistsError` naming the
file and that sidecar, before its first chunk. A job's own path and the files its own sidecar
lists are its own. :func:`unfinished` says whether a file is the output of an unfinished job.

A job that starts over never replaces, unless told to (``overwrite=True``), a file that may
hold finished work (:func:`check_replaceable`). Its ``.npy`` files are created marked
unfinished (:func:`create_maps`: a header key NumPy refuses, :data:`UNFINISHED_KEY`; made
beside the path and renamed onto it, so what reads the old file keeps it), read back by the
job to resume (:func:`open_maps`), marked unfinished again before a resumed job rewrites rows
of a file that had them all (:func:`mark_unfinished`), and marked finished once every row is
written (:func:`mark_finished`), so that ``np.load`` never reads a half-written file as
maps.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from typing import Any, Callable, Iterator

import numpy as np

from jaxsal._src.job_inputs import _mapped_sources, _Several, input_paths

#: The format of the progress files this jaxsal writes, and the only one it resumes (1:
#: signatures without the model, jaxsal before the model fingerprint; a job of another format
#: starts over).
FORMAT = 2


def resumable(prog: dict) -> bool:
    """Whether a job's progress record ``prog`` may be resumed, whatever its signature (which
    the job compares besides): of this jaxsal's :data:`FORMAT`, with a chunk finished."""
    return prog.get("format") == FORMAT and bool(prog.get("done"))


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
    prog = _record(progress_path)[0]
    if prog is None:
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


def _names(path: str) -> list[str]:
    """``path`` and, where a symbolic link (of the file or a folder above it) makes it another
    name of a file, that file's real path: a job's progress file is found by its output's
    name, so a link to another job's output (``link.npy -> maps.npy``) is that job's file."""
    real = os.path.realpath(path)
    return [path] if real == os.path.abspath(path) else [path, real]


def _owners(path: str) -> Iterator[tuple[str, int, int]]:
    """``(progress_path, done, chunks)`` of each job whose progress file lists the ``.npy``
    at ``path`` as its output (its path, or the file of one of its inputs' maps), in the
    order of :func:`_sidecars`: its own progress file first; then those of the file a
    symbolic link at ``path`` names (:func:`_names`)."""
    for progress_path, _, done, chunks in _owner_records(path):
        yield progress_path, done, chunks


def _owner_records(path: str) -> Iterator[tuple[str, dict, int, int]]:
    """:func:`_owners` with each job's record: ``(progress_path, record, done, chunks)``,
    each progress file read once (a caller that needs more of the record than its state
    reads it from here, not from the file again)."""
    seen = set()
    for name, progress_path, own in ((name, *s) for name in _names(path)
                                     for s in _sidecars(name)):
        if os.path.realpath(progress_path) in seen:
            continue
        seen.add(os.path.realpath(progress_path))
        prog = _record(progress_path)[0]
        if prog is None:
            continue  # nothing says the file is a job's
        done, chunks, outputs = _state(prog)  # (a record has one: _record)
        # (files it wrote besides its maps: record_job_file)
        also = prog["also"] if isinstance(prog.get("also"), list) else []
        if outputs is None and own:  # (a job over one input array: its file is path)
            listed = True
        else:
            listed = os.path.basename(name) in [
                *(outputs if isinstance(outputs, list) else ()), *also]
        if listed:
            yield progress_path, prog, done, chunks


def unfinished(path: str | os.PathLike) -> tuple[int, int, str] | None:
    """``(done, chunks, progress_path)`` when the ``.npy`` at ``path`` is the output of an
    :func:`explain_to_file` job that has not finished (its sidecar lists fewer chunks than
    the job has: the rows of the others are still zeros), else None. The file of one input's
    maps (``maps.img.npy`` of a job writing ``maps.npy``) is the output of the job whose
    sidecar lists it (``maps.npy.progress.json``). A ``ValueError`` where ``path``'s own
    progress file exists but cannot be read: nothing then says whether its rows are
    finished."""
    path = os.fspath(path)
    for own in (name + ".progress.json" for name in _names(path)):
        why = _record(own)[1]
        if why is not None:
            break
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
        names = _names(f)
        linked = len(names) > 1  # (f a symbolic link to another job's file)
        real = names[1] if linked else os.path.abspath(f)  # (its real path either way)
        by_path = os.path.realpath(sidecar) in (os.path.realpath(f + ".progress.json"),
                                                real + ".progress.json")
        raise FileExistsError(
            (f"{f} (a symbolic link to {real})" if linked else f)
            + f"{roles.get(f, '')} is the output of another job ({state}, says its progress "
            f"file {sidecar}); this job would overwrite its maps. Write to another path "
            f"(--out), or, if that job's maps are no longer needed, delete "
            + (f"{real if linked else f} and {sidecar}" if by_path else
               f"{sidecar} (and the files it lists)") + " first")


def _how_it_differs(prog: dict, parts: dict | None, resume: bool) -> str:
    """How the job of progress record ``prog`` differs from the one whose signature's parts
    are ``parts`` (``job_signature._signatures``: ``{part: hash}``), said after the progress
    file's name in :func:`check_replaceable`'s error (``"; what differs from this job: the
    targets"``); ``""`` where nothing tells (a progress file of a jaxsal before the parts, a
    job of no stable signature)."""
    from jaxsal._src.job_signature import PARTS

    recorded = prog.get("parts")
    if not isinstance(recorded, dict) or not isinstance(parts, dict):
        return ""
    differ = [what for key, what in PARTS.items() if recorded.get(key) != parts.get(key)]
    if len(differ) == 1:
        return f"; what differs from this job: {differ[0]}"
    if differ:
        return f"; what differs from this job: {', '.join(differ[:-1])} and {differ[-1]}"
    return "; it is this job, run with resume=False" if not resume else ""


def check_replaceable(files: list[str], progress_path: str,
                      roles: dict[str, str] | None = None, *, parts: dict | None = None,
                      resume: bool = True) -> None:
    """Refuse, with a :class:`FileExistsError` before any chunk, a job that starts over (it
    resumes nothing) onto an existing file that may hold finished work: a file no progress
    file lists (one's own ``.npy``, or the maps of a finished job whose progress file is
    gone), the output of a job that finished (this path's own progress file
    ``progress_path`` says so: another job, the same one run with ``resume=False``) or of one
    that finished some of its chunks, or a file beside a progress file that cannot be read.
    What it may replace: a file whose job (``progress_path``'s) finished no chunk, and a file
    marked unfinished (:data:`UNFINISHED_KEY`) that no progress file lists (a killed job's,
    its progress file deleted: nothing in it is known to be finished). Other jobs' files are
    :func:`check_not_another_jobs`'s. ``roles``: as there. The caller passes ``overwrite``
    by not calling it. ``parts``: the hashes of the parts of this job's signature, to say
    how the job that wrote the file differs (:func:`_how_it_differs`; ``resume``: this
    job's, where nothing differs)."""
    roles = roles or {}
    own = os.path.realpath(progress_path)
    unreadable = _record(progress_path)[1]
    for f in files:
        if not os.path.exists(f):
            continue
        listed = next((o for o in _owner_records(f) if os.path.realpath(o[0]) == own), None)
        what = f"{f}{roles.get(f, '')}"
        if listed is not None:
            _, prog, done, chunks = listed
            if not done:
                continue
            differs = _how_it_differs(prog, parts, resume)
            if done >= chunks:
                held = (f"is the output of a finished job (says its progress file "
                        f"{progress_path}{differs})")
            elif prog.get("format") != FORMAT:  # (never resumed: batch, resumable)
                held = (f"holds {done} of {chunks} finished chunks of an unfinished job "
                        f"that another jaxsal version wrote (says its progress file "
                        f"{progress_path}, of format {prog.get('format', 1)!r}; this jaxsal "
                        f"resumes format {FORMAT} only, so it can only start that job over)")
            elif missing := _missing_outputs(prog, progress_path):
                # (a job over several inputs: resumed only with every file it lists)
                held = (f"holds {done} of {chunks} finished chunks of the unfinished job that "
                        f"wrote it (says its progress file {progress_path}{differs}), but "
                        f"{missing}, another file of that job, is missing, so no run can "
                        "resume it (not that job's own command either)")
            else:
                held = (f"holds {done} of {chunks} finished chunks of the unfinished job that "
                        f"wrote it (says its progress file {progress_path}{differs}; that "
                        "job's own command resumes it)")
        elif unreadable is not None:
            held = (f"may hold finished maps: its progress file {progress_path} cannot be read "
                    f"({unreadable})")
        elif marked_unfinished(f):
            continue
        else:
            held = ("exists and no progress file lists it (an array of your own, or the maps "
                    "of a finished job whose progress file is gone)")
        raise FileExistsError(
            f"{what} {held}; this job would replace it. Write to another path (--out), or "
            "pass overwrite=True (jaxsal: --overwrite) to replace it")


def _missing_outputs(prog: dict, progress_path: str) -> str:
    """The first of the files a job's progress record ``prog`` lists as its outputs (a job
    over several inputs, ``maps.img.npy``...) that is missing beside ``progress_path``, or
    ``""``: a job is resumed only with every one of them there."""
    outputs = prog.get("outputs")
    if not isinstance(outputs, list):
        return ""
    folder = os.path.dirname(progress_path)
    return next((os.path.join(folder, f) for f in outputs
                 if isinstance(f, str) and not os.path.exists(os.path.join(folder, f))), "")


def check_start_over(path: str, *, overwrite: bool = False) -> None:
    """The refusals of a job over one input array writing ``path`` (resumed where it can be)
    that need neither its model nor its method, for the command line to make before it loads
    the model (a big one takes long to load, only to be refused): ``path`` another job's
    output (:func:`check_not_another_jobs`) and, where the job cannot resume whatever its
    signature (no progress file, one of another :data:`FORMAT` or that lists no finished
    chunk), ``path`` holding finished work it would replace (:func:`check_replaceable`,
    unless ``overwrite``). Where it may resume, or its progress file cannot be read, the job
    checks it itself, once its signature is known (:func:`jaxsal.explain_to_file`)."""
    _check_folder(path)  # (a folder: not "an array no progress file lists")
    progress_path = path + ".progress.json"
    check_not_another_jobs([path], progress_path)
    prog, why = _record(progress_path)
    if overwrite or why is not None or (prog is not None and resumable(prog)):
        return
    check_replaceable([path], progress_path)


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


def _allocate(path: str, name: str | None = None) -> None:
    """Reserve the disk space of the whole ``.npy`` at ``path`` (``open_memmap`` leaves it
    sparse): on a disk that cannot hold it, the job fails now with a clear error rather than
    dies of SIGBUS (a "Bus error", no message) when a later chunk writes to the memory map.
    ``name``: the file to name in that error (the one being made under a temporary name)."""
    if not hasattr(os, "posix_fallocate"):  # (macOS, Windows: left sparse, as before)
        return
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno in _NO_ROOM:
            raise OSError(e.errno, f"cannot reserve the {size:,} bytes of {name or path} on "
                          f"its disk ({e.strerror}): the maps of the whole job need them; free "
                          "some space or write to another disk") from None
        # EOPNOTSUPP, EINVAL...: a file system that cannot reserve space; left sparse
    finally:
        os.close(fd)


#: The key a job's ``.npy`` carries in its header until its last row is written: NumPy refuses
#: a header with a key other than its three (``np.load`` raises "Header does not contain the
#: correct keys: [...]", this one among them), so a file whose rows are not all written cannot
#: be read as finished maps, even where its progress file is gone.
UNFINISHED_KEY = ("UNFINISHED jaxsal job: its unwritten rows are zeros; run the job again to "
                  "finish it")
_MAGIC = b"\x93NUMPY"


def _header_text(descr: Any, shape: tuple, unfinished: bool) -> str:
    """A ``.npy`` header's dict, as NumPy writes it, with :data:`UNFINISHED_KEY` where
    ``unfinished``."""
    d = {"descr": descr, "fortran_order": False, "shape": tuple(shape)}
    if unfinished:
        d[UNFINISHED_KEY] = True
    return "{" + "".join(f"{k!r}: {v!r}, " for k, v in d.items()) + "}"


def _read_header(path: str) -> tuple[dict, int, int, int]:
    """``(header dict, where its text starts, its length in bytes, where the data starts)``
    of the ``.npy`` at ``path``, whether or not it carries :data:`UNFINISHED_KEY`; a
    ``ValueError`` for a file that is no ``.npy`` of a dict header."""
    import ast
    import struct

    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 10 or head[:6] != _MAGIC or head[6] not in (1, 2, 3):
            raise ValueError(f"{path} is not a .npy file (no .npy signature and version)")
        size = 2 if head[6] == 1 else 4
        start = 8 + size
        length = struct.unpack("<H" if size == 2 else "<I", head[8:start])[0]
        fh.seek(start)
        text = fh.read(length)
    try:
        d = ast.literal_eval(text.decode("utf8" if head[6] == 3 else "latin1"))
    except (SyntaxError, ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read its .npy header ({e})") from None
    if not isinstance(d, dict) or not {"descr", "fortran_order", "shape"} <= d.keys():
        raise ValueError(f"{path}: its .npy header is not NumPy's ({d!r})")
    return d, start, length, start + length


def marked_unfinished(path: str | os.PathLike) -> bool:
    """Whether the ``.npy`` at ``path`` is a job's output whose rows are not all written yet
    (its header carries :data:`UNFINISHED_KEY`: ``np.load`` refuses it); ``False`` for any
    other file, or none."""
    try:
        return UNFINISHED_KEY in _read_header(os.fspath(path))[0]
    except (OSError, ValueError):
        return False


def _marked_header(dtype: np.dtype, shape: tuple) -> bytes:
    """The bytes of a ``.npy`` header for ``shape`` of ``dtype`` marked unfinished
    (:data:`UNFINISHED_KEY`), padded, as NumPy pads, so that the data start at a multiple of
    64 bytes (the finished header, :func:`mark_finished`, is padded to the same length)."""
    import struct

    marked = _header_text(np.lib.format.dtype_to_descr(dtype), shape, True)
    size = 2 if len(marked) + 12 < 65536 else 4
    start = 8 + size
    length = -(-(start + len(marked) + 1) // 64) * 64 - start
    return _MAGIC + bytes([1 if size == 2 else 2, 0]) + struct.pack(
        "<H" if size == 2 else "<I", length) + (marked.ljust(length - 1) + "\n").encode("latin1")


def _new_maps(path: str, dtype: Any, shape: tuple,
              fill: Callable[[np.memmap], None] | None = None) -> np.memmap:
    """Put a new ``.npy`` for ``shape`` maps of ``dtype`` at ``path``, marked unfinished, its
    disk space reserved, and return it memory-mapped for writing.

    The file is made under a temporary name beside it (``path + ".new"``: its header synced,
    then ``fill(rows)`` where given, the rows synced) and ``os.replace`` puts it at ``path``:
    the file that was there (its inode) is never truncated or written, so what still reads it
    (a memory map an earlier job returned, ``np.load(mmap_mode="r")``, another name of it, a
    hard link) keeps its values, and a process stopped at any point leaves either the old
    file or the whole new one at ``path``. A symbolic link at ``path`` stays one: the file it
    points to is replaced. On any error the temporary file is removed and ``path`` is left as
    it was."""
    real = os.path.realpath(path)
    tmp = real + ".new"
    dtype = np.dtype(dtype)
    header = _marked_header(dtype, shape)
    count = int(np.prod(shape, dtype=np.int64))
    try:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)  # (a stopped run's: only this name, never the file it may be)
        with open(tmp, "xb") as fh:
            fh.write(header)
            fh.truncate(len(header) + count * dtype.itemsize)
            fh.flush()
            os.fsync(fh.fileno())
        _allocate(tmp, name=path)
        if fill is not None:
            rows = np.memmap(tmp, dtype=dtype, mode="r+", offset=len(header), shape=shape)
            fill(rows)
            rows.flush()
            del rows
        os.replace(tmp, real)
    except BaseException:  # (also Ctrl-C: this job's new file, not left behind)
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _sync_folder(os.path.dirname(real))
    return np.memmap(real, dtype=dtype, mode="r+", offset=len(header), shape=tuple(shape))


def create_maps(path: str, dtype: Any, shape: tuple) -> np.memmap:
    """Create the ``.npy`` at ``path`` for ``(N, ...)`` maps of ``dtype``, its disk space
    reserved (:func:`_allocate`), marked unfinished (:data:`UNFINISHED_KEY`; see
    :func:`mark_finished`), and return it memory-mapped for writing (rows of zeros). A file
    at ``path`` is replaced, not rewritten (:func:`_new_maps`): its readers and its other
    names keep its values."""
    return _new_maps(path, dtype, tuple(shape))


def mark_unfinished(path: str) -> bool:
    """Put :data:`UNFINISHED_KEY` back into the header of a job's ``.npy`` at ``path`` before
    the job writes rows into it again (a finished job resumed on inputs changed in some
    chunks: its file held finished maps), so that ``np.load`` refuses it until the last row
    is written (:func:`mark_finished`). In place (synced) where the header's padding has
    room for the key (every file of this jaxsal); else (NumPy's own header, of a jaxsal
    before the mark) the file is made again with room for it, its rows copied, and replaced
    (:func:`_new_maps`). Returns whether the file was replaced (a memory map of it must then
    be opened again). Nothing is done to a file already marked."""
    d, start, length, _ = _read_header(path)
    if UNFINISHED_KEY in d:
        return False
    text = _header_text(d["descr"], d["shape"], True)
    if len(text) < length and not d["fortran_order"]:
        with open(path, "r+b") as fh:
            fh.seek(start)
            fh.write((text.ljust(length - 1) + "\n").encode("latin1"))
            fh.flush()
            os.fsync(fh.fileno())
        return False
    old = open_maps(path, mode="r")

    def copy(rows: np.memmap) -> None:
        step = max(1, 2**26 // max(1, old[:1].nbytes))  # (about 64 MiB at a time)
        for i in range(0, len(old), step):
            rows[i:i + step] = old[i:i + step]

    _new_maps(path, old.dtype, tuple(old.shape), copy)
    return True


def open_maps(path: str, mode: str = "r+") -> np.memmap:
    """The ``.npy`` at ``path`` memory-mapped (for writing: ``mode="r+"``; ``"r"`` reads),
    marked unfinished (:data:`UNFINISHED_KEY`, a job's file being resumed) or not (a finished
    one, or one of a jaxsal before the mark). A ``ValueError`` for a file shorter than its
    header's shape needs (cut by an interrupted copy or a full disk): ``np.memmap`` in
    ``"r+"`` mode lengthens such a file with zeros, which a resumed job would keep as the
    rows of its finished chunks."""
    d, _, _, offset = _read_header(path)
    if set(d) - {"descr", "fortran_order", "shape", UNFINISHED_KEY}:
        raise ValueError(f"{path}: its .npy header has keys NumPy does not write ({sorted(d)})")
    dtype = np.lib.format.descr_to_dtype(d["descr"])
    if not (isinstance(d["shape"], tuple)
            and all(isinstance(k, int) and k >= 0 for k in d["shape"])):
        raise ValueError(f"{path}: its .npy header's shape is {d['shape']!r}; expected a "
                         "tuple of sizes")
    need = offset + int(np.prod(d["shape"], dtype=np.int64)) * dtype.itemsize
    size = os.path.getsize(path)
    if size < need:
        raise ValueError(f"{path} is shorter than its header says (truncated: an interrupted "
                         f"copy, a full disk): {size:,} bytes, where maps of shape "
                         f"{tuple(d['shape'])} ({dtype}) need {need:,}; the rows it lacks are "
                         "lost")
    return np.memmap(path, dtype=dtype, mode=mode, offset=offset, shape=tuple(d["shape"]),
                     order="F" if d["fortran_order"] else "C")


def mark_finished(path: str) -> None:
    """Replace the header of a job's ``.npy`` at ``path`` that carries
    :data:`UNFINISHED_KEY` by NumPy's own (the same length: written in place, then synced),
    once every row is written and flushed: ``np.load`` reads it from then on. Nothing is
    done to a file without the mark."""
    d, start, length, _ = _read_header(path)
    if UNFINISHED_KEY not in d:
        return
    text = _header_text(d["descr"], d["shape"], False)
    with open(path, "r+b") as fh:
        fh.seek(start)
        fh.write((text.ljust(length - 1) + "\n").encode("latin1"))
        fh.flush()
        os.fsync(fh.fileno())
