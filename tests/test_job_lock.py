"""Two processes never run the same batch job at once: explain_to_file (and the ``jaxsal``
jobs) hold an advisory lock beside the output while they write it."""

import json
import os
import pathlib
import subprocess
import sys
import threading

import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal
import jaxsal._src.job_lock as locks
from jaxsal._src.job_files import unfinished
from jaxsal import cli

ROOT = str(pathlib.Path(__file__).resolve().parents[1])

#: A job of two chunks that waits, after each, for a line on its stdin (so that the test
#: knows it is running, holding the lock, and decides when it goes on or is killed).
_JOB = r"""
import sys
import jax.numpy as jnp, numpy as np
import jaxsal

model = jaxsal.FunctionModel(lambda p, x: jnp.tanh(x @ p), np.ones((3, 2), np.float32))

def wait(done, total):
    print("chunk", done, flush=True)
    sys.stdin.readline()

jaxsal.explain_to_file(jaxsal.saliency, model, np.ones((4, 3), np.float32), sys.argv[1],
                       targets=0, batch_size=2, on_chunk=wait)
print("finished", flush=True)
"""

#: The same over two inputs, a and b: maps.npy -> the maps of each in maps.a.npy, maps.b.npy.
_MULTI_JOB = r"""
import sys
import numpy as np
import jaxsal

model = jaxsal.FunctionModel(lambda p, x: x["a"] @ p + x["b"], np.ones((3, 2), np.float32))

def doubled(model, x, targets=None):
    return {k: 2 * np.asarray(v) for k, v in x.items()}

def wait(done, total):
    print("chunk", done, flush=True)
    sys.stdin.readline()

xs = {"a": np.ones((4, 3), np.float32), "b": np.ones((4, 2), np.float32)}
jaxsal.explain_to_file(doubled, model, xs, sys.argv[1], batch_size=2, on_chunk=wait)
print("finished", flush=True)
"""

#: Holds the lock of the job writing argv[1], as the README describes it (flock on OUT.lock,
#: which names the holder's pid), until a line comes on its stdin: plain Python, quick to start.
_HOLDER = r"""
import fcntl, os, sys

fd = os.open(sys.argv[1] + ".lock", os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.write(fd, f"{os.getpid()}\n".encode())
print("locked", flush=True)
sys.stdin.readline()
"""


def _counted_loads(monkeypatch):
    """The list to which every ``model_import.load_keras`` call appends its arguments (a
    command that fails at its start loads nothing)."""
    import model_import

    loads = []
    load_keras = model_import.load_keras
    monkeypatch.setattr(model_import, "load_keras", lambda *a, **k: loads.append(a)
                        or load_keras(*a, **k))
    return loads


def _start(code, *args):
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    p = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, env=env,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return p


def _stop(p):
    """Kill ``p`` (SIGKILL: no chance to clean up) and close its pipes."""
    p.kill()
    p.wait()
    p.stdin.close()
    p.stdout.close()


def _say(p, line):
    p.stdin.write(line + "\n")
    p.stdin.flush()


class Counting:
    def __init__(self):
        self.calls = []

    def __call__(self, model, x, targets=None):
        self.calls.append(len(x))
        return np.asarray(model(x))


@pytest.fixture(scope="module")
def linear():
    return jaxsal.FunctionModel(lambda p, x: jnp.tanh(x @ p), np.ones((3, 2), np.float32))


XS = np.arange(12, dtype=np.float32).reshape(4, 3) / 12


def test_a_second_process_is_refused_and_the_lock_dies_with_the_first(tmp_path, linear):
    """While a job runs, another process's call for the same output fails at once, naming
    the process, before any chunk; killed (no chance to clean up), the job's lock is
    released by the kernel and the next call runs."""
    path = tmp_path / "maps.npy"
    job = _start(_JOB, path)
    try:
        assert job.stdout.readline() == "chunk 1\n"  # running, its first chunk written
        m = Counting()
        with pytest.raises(BlockingIOError) as e:
            jaxsal.explain_to_file(m, linear, XS, path, batch_size=2)
        assert str(e.value) == (
            f"another jaxsal process (pid {job.pid}) is writing {path} (it holds the lock "
            f"{path}.lock); wait for it to end, or write to another path (--out)")
        assert m.calls == []
        assert unfinished(path)[:2] == (1, 2)  # the running job's progress untouched
    finally:
        _stop(job)
    assert os.path.exists(f"{path}.lock")  # left by the killed job, but not held
    m = Counting()  # (another job: Counting, not jaxsal.saliency: replaces its chunk)
    out = jaxsal.explain_to_file(m, linear, XS, path, batch_size=2, overwrite=True)
    assert m.calls == [2, 2]
    np.testing.assert_allclose(out, np.asarray(linear(XS)), rtol=1e-6)
    assert not os.path.exists(f"{path}.lock")


def test_a_job_of_several_inputs_locks_the_file_of_each_input(tmp_path, linear):
    """While a job writes maps.npy for inputs a and b (maps.a.npy, maps.b.npy), a job
    whose path is maps.a.npy, or a job over several inputs whose maps of a go there too
    (writing "maps"), fails at once naming the process and the lock of that file, before
    any chunk; once the first has finished, the file is its output, never overwritten."""
    path = tmp_path / "maps.npy"
    job = _start(_MULTI_JOB, path)
    two = jaxsal.FunctionModel(lambda p, x: x["a"] @ p + x["b"], np.ones((3, 2), np.float32))
    xs = {"a": XS, "b": XS[:, :2]}
    a = tmp_path / "maps.a.npy"
    try:
        assert job.stdout.readline() == "chunk 1\n"
        m = Counting()
        with pytest.raises(BlockingIOError) as e:
            jaxsal.explain_to_file(m, linear, XS, a, batch_size=2)
        assert str(e.value) == (
            f"another jaxsal process (pid {job.pid}) is writing {a} (it holds the lock "
            f"{a}.lock); wait for it to end, or write to another path (--out)")
        calls = []
        with pytest.raises(BlockingIOError) as e:
            jaxsal.explain_to_file(lambda *args: calls.append(1), two, xs, tmp_path / "maps",
                                   batch_size=2)
        assert str(e.value) == (
            f"another jaxsal process (pid {job.pid}) is writing {a}, where this job (writing "
            f"{tmp_path}/maps) puts the maps of input 'a' (it holds the lock {a}.lock); wait "
            "for it to end, or write to another path (--out)")
        assert m.calls == [] and calls == []
        assert not os.path.exists(f"{tmp_path}/maps.lock")  # (released as it failed)
        assert unfinished(a)[:2] == (1, 2)  # the running job's progress untouched
        _say(job, "")
        assert job.stdout.readline() == "chunk 2\n"
        _say(job, "")
        assert job.stdout.readline() == "finished\n"
        assert job.wait(timeout=60) == 0
    finally:
        _stop(job)
    with pytest.raises(FileExistsError, match=f"{a} is the output of another job"):
        jaxsal.explain_to_file(m, linear, XS, a, batch_size=2)
    np.testing.assert_array_equal(np.load(a), 2 * np.ones((4, 3), np.float32))


def test_a_job_of_several_inputs_is_refused_while_one_writes_an_input_s_file(tmp_path):
    """The other way round: while a job writes maps.a.npy as its path, a job over inputs a
    and b writing maps.npy fails at once, naming the file of its input, the process and
    its lock; it leaves no lock or progress file of its own."""
    a = tmp_path / "maps.a.npy"
    job = _start(_JOB, a)
    two = jaxsal.FunctionModel(lambda p, x: x["a"] @ p + x["b"], np.ones((3, 2), np.float32))
    try:
        assert job.stdout.readline() == "chunk 1\n"
        calls = []
        with pytest.raises(BlockingIOError) as e:
            jaxsal.explain_to_file(lambda *args: calls.append(1), two,
                                   {"a": XS, "b": XS[:, :2]}, tmp_path / "maps.npy",
                                   batch_size=2)
        assert str(e.value) == (
            f"another jaxsal process (pid {job.pid}) is writing {a}, where this job (writing "
            f"{tmp_path}/maps.npy) puts the maps of input 'a' (it holds the lock {a}.lock); "
            "wait for it to end, or write to another path (--out)")
        assert calls == []
        assert sorted(os.listdir(tmp_path)) == ["maps.a.npy", "maps.a.npy.lock",
                                                "maps.a.npy.progress.json"]
    finally:
        _stop(job)


def test_the_lock_is_removed_when_a_job_ends_or_fails(tmp_path, linear):
    path = tmp_path / "maps.npy"

    def fails(model, x, targets=None):
        raise ValueError("inputs contain NaN")

    with pytest.raises(ValueError, match="chunk 0"):
        jaxsal.explain_to_file(fails, linear, XS, path, batch_size=2)
    assert os.listdir(tmp_path) == []
    jaxsal.explain_to_file(Counting(), linear, XS, path, batch_size=2)
    assert sorted(os.listdir(tmp_path)) == ["maps.npy", "maps.npy.progress.json"]


def test_the_command_line_refuses_a_job_that_runs_before_loading_the_model(
        tmp_path, fixtures_dir, mnist_digits, capsys, monkeypatch):
    """`jaxsal explain` (and `evaluate`) hold the lock for the whole command: a second one
    fails at its start, exit status 75 (EX_TEMPFAIL: try again later; 2 is for errors of the
    inputs and options), one line on stderr, the model never loaded."""
    np.save(tmp_path / "x.npy", mnist_digits[:2])
    out = tmp_path / "my maps é.npy"  # a space and a non-ASCII letter
    argv = ["explain", str(fixtures_dir / "mnist_cnn_keras3.keras"), str(tmp_path / "x.npy"),
            "--targets", "3", "--out", str(out)]
    holder = _start(_HOLDER, out)
    loads = _counted_loads(monkeypatch)
    try:
        assert holder.stdout.readline() == "locked\n"
        assert cli.main(argv) == 75
        assert capsys.readouterr().err == (
            f"jaxsal: error: another jaxsal process (pid {holder.pid}) is writing {out} (it "
            f"holds the lock {out}.lock); wait for it to end, or write to another path "
            "(--out)\n")
        assert loads == [] and not out.exists()
        _say(holder, "")
        assert holder.wait(timeout=60) == 0
    finally:
        _stop(holder)
    assert cli.main(argv) == 0
    assert loads and np.load(out).shape == (2, 28, 28)
    assert not os.path.exists(f"{out}.lock")


def test_another_thread_is_refused_and_the_same_thread_reenters(tmp_path):
    path = str(tmp_path / "maps.npy")
    errors = []

    def other():
        try:
            with locks.job_lock(path):
                pass
        except BlockingIOError as e:
            errors.append(str(e))

    with locks.job_lock(path):
        with locks.job_lock(path):  # the CLI holds it, then explain_to_file inside
            pass
        assert os.path.exists(path + ".lock")  # still held by the outer block
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert errors == [f"another thread of this process (pid {os.getpid()}) is writing {path} "
                      "(it holds the lock " f"{path}.lock); wait for it to end, or write to "
                      "another path (--out)"]
    assert not os.path.exists(path + ".lock")
    with locks.job_lock(path):  # free again
        pass


def test_the_same_output_by_another_name_is_the_same_lock(tmp_path, monkeypatch):
    """A relative path, a symlinked folder and a symlink name the same file: one lock."""
    (tmp_path / "d").mkdir()
    os.symlink(tmp_path / "d", tmp_path / "link")
    monkeypatch.chdir(tmp_path / "d")
    assert locks._lock_file("maps.npy") == str(tmp_path / "d" / "maps.npy.lock")
    assert locks._lock_file(tmp_path / "link" / "maps.npy") == str(
        tmp_path / "d" / "maps.npy.lock")
    os.symlink(tmp_path / "d" / "maps.npy", tmp_path / "alias.npy")  # (to a file to be)
    assert locks._lock_file(tmp_path / "alias.npy") == str(tmp_path / "d" / "maps.npy.lock")


def test_a_folder_where_no_lock_file_can_be_made_fails_before_any_chunk(tmp_path, linear,
                                                                        monkeypatch):
    """(A read-only folder: faked, as root writes anywhere.)"""
    real_open = os.open

    def read_only(p, *a, **k):
        if str(p).startswith(str(tmp_path)):
            raise PermissionError(13, "Permission denied", str(p))
        return real_open(p, *a, **k)

    monkeypatch.setattr(locks.os, "open", read_only)
    m = Counting()
    path = tmp_path / "maps.npy"
    with pytest.raises(PermissionError, match=(
            rf"cannot create {path}\.lock \(Permission denied\): the job writes its maps, "
            rf"their progress file and this lock in {tmp_path}; make the folder writable or "
            r"write to another path \(--out\)")):
        jaxsal.explain_to_file(m, linear, XS, path, batch_size=2)
    assert m.calls == []


def test_without_fcntl_jobs_run_unlocked(tmp_path, linear, monkeypatch):
    """(Windows has no fcntl: jobs run as before, unlocked; the README says so.)"""
    monkeypatch.setattr(locks, "fcntl", None)
    m = Counting()
    jaxsal.explain_to_file(m, linear, XS, tmp_path / "maps.npy", batch_size=2)
    assert m.calls == [2, 2]
    assert sorted(os.listdir(tmp_path)) == ["maps.npy", "maps.npy.progress.json"]


def test_a_lock_file_removed_as_it_is_taken_is_not_the_lock(tmp_path, monkeypatch):
    """A job that ends removes its lock file: one that opened the old file just before, and
    takes its flock just after, holds the lock of no file (another job would make a new one
    and run beside it); it takes the file now at the path instead."""
    import fcntl
    import types

    path = str(tmp_path / "maps.npy")
    lock = path + ".lock"
    calls = []

    def flock(fd, op):
        if not calls:  # the job that held it ends between our open and our flock
            os.remove(lock)
        calls.append(fd)
        return fcntl.flock(fd, op)

    monkeypatch.setattr(locks, "fcntl", types.SimpleNamespace(
        flock=flock, LOCK_EX=fcntl.LOCK_EX, LOCK_NB=fcntl.LOCK_NB))
    with locks.job_lock(path):
        assert len(calls) == 2 and os.path.exists(lock)
        fd = os.open(lock, os.O_RDONLY)  # another open file: as another process's
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)


def test_a_lock_file_left_by_another_user_is_taken(tmp_path, linear, monkeypatch):
    """A killed job of another user leaves its lock file, which this user may not write (a
    shared folder, umask 022): the job takes its flock through a read-only descriptor (it
    said "cannot create ... make the folder writable") and replaces the file by its own,
    which names its pid (not the dead job's), then runs and removes it."""
    path = tmp_path / "maps.npy"
    (tmp_path / "maps.npy.lock").write_text("4242\n")
    real_open = os.open

    def not_mine(p, flags, *a, **k):
        if str(p).endswith(".lock") and os.path.exists(p) and flags & os.O_RDWR:
            raise PermissionError(13, "Permission denied", str(p))
        return real_open(p, flags, *a, **k)

    monkeypatch.setattr(locks.os, "open", not_mine)
    m, pids = Counting(), []
    jaxsal.explain_to_file(m, linear, XS, path, batch_size=2,
                           on_chunk=lambda *_: pids.append((tmp_path / "maps.npy.lock")
                                                           .read_text()))
    assert m.calls == [2, 2] and not os.path.exists(f"{path}.lock")
    assert pids == [f"{os.getpid()}\n"] * 2


def test_a_file_system_without_flock_runs_jobs_unlocked_and_leaves_no_file(tmp_path, linear,
                                                                           monkeypatch):
    """(flock refused, ENOLCK: some network file systems.)"""
    import errno
    import fcntl
    import types

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(locks, "fcntl", types.SimpleNamespace(
        flock=no_locks, LOCK_EX=fcntl.LOCK_EX, LOCK_NB=fcntl.LOCK_NB))
    m = Counting()
    jaxsal.explain_to_file(m, linear, XS, tmp_path / "maps.npy", batch_size=2)
    assert m.calls == [2, 2]
    assert sorted(os.listdir(tmp_path)) == ["maps.npy", "maps.npy.progress.json"]


def _evaluate(tmp_path, fixtures_dir, mnist_digits, out):
    """`jaxsal evaluate` argv for 2 digits and maps saved in tmp_path, writing ``out``."""
    np.save(tmp_path / "x.npy", mnist_digits[:2])
    np.save(tmp_path / "maps.npy", np.random.RandomState(0).rand(2, 28, 28).astype(np.float32))
    return ["evaluate", str(fixtures_dir / "mnist_cnn_keras3.keras"), str(tmp_path / "x.npy"),
            str(tmp_path / "maps.npy"), "--metric", "deletion", "--steps", "4", "--targets",
            "1", "--out", str(out)]


def test_evaluate_holds_the_lock_of_its_areas_file(tmp_path, fixtures_dir, mnist_digits,
                                                    capsys, monkeypatch):
    """`jaxsal evaluate --out d.npy` writes its areas to d.auc.npy: it holds that file's
    lock too, for the whole command. While another process holds it (a job whose --out is
    d.auc.npy), evaluate fails at its start (exit status 75, the model never loaded),
    naming the file, what it is to the command and the lock; while evaluate runs, a job
    writing d.auc.npy (as its path) is refused the same way."""
    import model_import

    out, auc = tmp_path / "d.npy", tmp_path / "d.auc.npy"
    argv = _evaluate(tmp_path, fixtures_dir, mnist_digits, out)
    holder = _start(_HOLDER, auc)
    loads = _counted_loads(monkeypatch)
    try:
        assert holder.stdout.readline() == "locked\n"
        assert cli.main(argv) == 75
        assert capsys.readouterr().err == (
            f"jaxsal: error: another jaxsal process (pid {holder.pid}) is writing {auc}, "
            f"where this job (writing {out}) puts the areas under its curves (it holds the "
            f"lock {auc}.lock); wait for it to end, or write to another path (--out)\n")
        assert loads == [] and not out.exists() and not os.path.exists(f"{out}.lock")
    finally:
        _stop(holder)
    errors = []

    def other():  # another thread: as another process, refused
        try:
            jaxsal.explain_to_file(Counting(), jaxsal.FunctionModel(
                lambda p, x: x @ p, np.ones((3, 2), np.float32)), XS, auc, batch_size=2)
        except BlockingIOError as e:
            errors.append(str(e))

    load_keras = model_import.load_keras

    def load_then_other(*a, **k):  # while evaluate holds its locks
        t = threading.Thread(target=other)
        t.start()
        t.join()
        return load_keras(*a, **k)

    monkeypatch.setattr(model_import, "load_keras", load_then_other)
    assert cli.main(argv) == 0
    assert errors == [f"another thread of this process (pid {os.getpid()}) is writing {auc} "
                      f"(it holds the lock {auc}.lock); wait for it to end, or write to "
                      "another path (--out)"]
    assert np.load(auc).shape == (2,)
    assert not os.path.exists(f"{auc}.lock") and not os.path.exists(f"{out}.lock")


def test_evaluate_never_overwrites_the_output_of_another_job_with_its_areas(
        tmp_path, fixtures_dir, mnist_digits, capsys, monkeypatch):
    """d.auc.npy written by a job of its own (its progress file lists it): `jaxsal evaluate
    --out d.npy`, whose areas would go there, refuses before loading the model (exit
    status 2), naming the file, the other job's progress file and what to delete, as a job
    refuses another job's output; deleted as it says, the file is free."""
    import model_import

    out, auc = tmp_path / "d.npy", tmp_path / "d.auc.npy"
    argv = _evaluate(tmp_path, fixtures_dir, mnist_digits, out)
    jaxsal.explain_to_file(Counting(), jaxsal.FunctionModel(
        lambda p, x: x @ p, np.ones((3, 2), np.float32)), XS, auc, batch_size=2)
    before = {f: (tmp_path / f).read_bytes() for f in sorted(os.listdir(tmp_path))}
    load_keras = model_import.load_keras
    monkeypatch.setattr(model_import, "load_keras", lambda *a, **k: pytest.fail("loaded"))
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == (
        f"jaxsal: error: {auc} (where --out {out} puts the areas under its curves) is the "
        f"output of another job (finished, says its progress file {auc}.progress.json); this "
        "job would overwrite its maps. Write to another path (--out), or, if that job's maps "
        f"are no longer needed, delete {auc} and {auc}.progress.json first\n")
    assert {f: (tmp_path / f).read_bytes() for f in sorted(os.listdir(tmp_path))} == before
    os.remove(auc)
    os.remove(f"{auc}.progress.json")
    monkeypatch.setattr(model_import, "load_keras", load_keras)
    assert cli.main(argv) == 0
    assert np.load(auc).shape == (2,)


def test_the_areas_of_a_finished_evaluate_are_not_another_jobs_to_overwrite(
        tmp_path, fixtures_dir, mnist_digits, capsys):
    """`jaxsal evaluate --out d.npy` lists its areas file d.auc.npy in its progress file
    once written: a later job writing d.auc.npy is refused as it would be for d.npy (it
    overwrote the areas before), naming the evaluate's progress file; the same evaluate
    command runs again."""
    out, auc = tmp_path / "d.npy", tmp_path / "d.auc.npy"
    argv = _evaluate(tmp_path, fixtures_dir, mnist_digits, out)
    assert cli.main(argv) == 0
    areas = auc.read_bytes()
    with pytest.raises(FileExistsError, match=(
            f"{auc} is the output of another job \\(finished, says its progress file "
            f"{out}.progress.json\\); this job would overwrite its maps")):
        jaxsal.explain_to_file(Counting(), jaxsal.FunctionModel(
            lambda p, x: x @ p, np.ones((3, 2), np.float32)), XS, auc, batch_size=2)
    assert auc.read_bytes() == areas and not os.path.exists(f"{auc}.progress.json")
    capsys.readouterr()
    assert cli.main(argv) == 0 and auc.read_bytes() == areas
    # another job at d.npy (starting over: its own progress file) keeps d.auc.npy listed
    jaxsal.explain_to_file(Counting(), jaxsal.FunctionModel(
        lambda p, x: x @ p, np.ones((3, 2), np.float32)), XS, out, batch_size=2,
        overwrite=True)
    with open(f"{out}.progress.json") as fh:
        assert json.load(fh)["also"] == ["d.auc.npy"]
