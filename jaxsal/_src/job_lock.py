"""The lock a batch job (:func:`jaxsal.explain_to_file`, ``jaxsal explain``) holds while it runs.

A job holds an advisory lock (``fcntl.flock``) on ``path + ".lock"``, and a job over several
inputs also on that of each file its inputs' maps may go to (``maps.img.npy.lock``: whether its
method writes them or one map to ``path``): a second process (or thread) that starts the same
job, or any job writing one of those files (as its path, or as the maps of an input of its
own), fails at once with a :class:`BlockingIOError` naming the process that holds it. The
kernel releases the lock when the process ends, however it ends; a job that ends removes the
file, one that is killed leaves it (not held: the next job takes it). Where there is no
``fcntl`` (Windows) or the file system refuses ``flock`` (some network file systems), jobs run
unlocked.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, Iterator

from jaxsal._src.job_files import _check_folder
from jaxsal._src.job_inputs import input_paths

try:
    import fcntl
except ImportError:  # Windows: jobs run unlocked (see the module docstring)
    fcntl = None

try:
    import fcntl
except ImportError:  # Windows: jobs run unlocked (see the module docstring)
    fcntl = None


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
