"""Worker processes of the harness (:mod:`benchmarks.run`): one per workload, or kept.

:func:`run_once` starts ``python -m benchmarks.worker`` for one workload and reads its result
file. :class:`KeptWorker` keeps one ``--serve`` worker for a whole run and hands it workloads
one at a time (specs on its stdin, results on a pipe of their own), so a run pays for one
interpreter start, CUDA context and model load per library. Both stop a worker that
outlives its time and return what happened as a result dict; neither raises for a failing
workload.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import tempfile
import time


def _worker_cmd(python: str, side: str, reps: int, min_time: float) -> list[str]:
    return [python, "-m", "benchmarks.worker", "--side", side, "--reps", str(reps),
            "--min-time", repr(float(min_time))]


def _error(side: str, spec: dict, reason: str, log: str = "") -> dict:
    return {"side": side, "workload": spec["id"], "status": "error", "reason": reason,
            "stderr_tail": log[-3000:]}


def run_once(python: str, side: str, spec: dict, env: dict, cwd: str, reps: int,
             timeout: float, min_time: float = 0.0) -> dict:
    """One workload in a fresh worker process: at least ``reps`` timed calls, more (up to
    the worker's cap) until ``min_time`` seconds of them."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        out = tmp.name
    cmd = _worker_cmd(python, side, reps, min_time) + ["--spec", json.dumps(spec), "--out", out]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=timeout)
        try:
            with open(out) as f:
                res = json.load(f)
        except (OSError, ValueError):
            res = _error(side, spec, f"worker exited {p.returncode} without a result", p.stderr)
    except subprocess.TimeoutExpired:
        res = _error(side, spec, f"timed out after {timeout:.0f} s")
    finally:
        if os.path.exists(out):
            os.unlink(out)
    res["wall_s"] = time.perf_counter() - t0
    return res


class KeptWorker:
    """A ``benchmarks.worker --serve`` process for one side, started on first use and again
    after it died or was stopped. Its stdout and stderr go to a log file, whose tail is
    attached to a failing workload's result."""

    def __init__(self, python: str, side: str, env: dict, cwd: str, reps: int,
                 min_time: float = 0.0):
        self.python, self.side, self.env, self.cwd, self.reps = python, side, env, cwd, reps
        self.min_time = min_time
        self.proc: subprocess.Popen | None = None

    def _start(self) -> None:
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        r, w = os.pipe()
        cmd = _worker_cmd(self.python, self.side, self.reps, self.min_time) + [
            "--serve", "--result-fd", str(w)]
        self.proc = subprocess.Popen(cmd, cwd=self.cwd, env=self.env, stdin=subprocess.PIPE,
                                     stdout=self.log, stderr=subprocess.STDOUT, text=True,
                                     pass_fds=(w,))
        os.close(w)
        self.results = os.fdopen(r, "r")

    def _log_tail(self) -> str:
        try:
            with open(self.log.name, errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def run(self, spec: dict, timeout: float) -> dict:
        """Run ``spec``; stop the process if no result came within ``timeout`` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        t0 = time.perf_counter()
        try:
            self.proc.stdin.write(json.dumps(spec) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return self._failed(spec, "the worker process had exited")
        ready, _, _ = select.select([self.results], [], [], max(timeout, 0.0))
        if not ready:
            res = self._failed(spec, f"timed out after {timeout:.0f} s")
        else:
            line = self.results.readline()
            res = json.loads(line) if line else self._failed(
                spec, f"worker exited {self.proc.wait()} without a result")
        res["wall_s"] = time.perf_counter() - t0
        return res

    def _failed(self, spec: dict, reason: str) -> dict:
        tail = self._log_tail()
        self.close(kill=True)
        return _error(self.side, spec, reason, tail)

    def close(self, kill: bool = False) -> None:
        """End the process: EOF on its stdin, killed if it has not exited within 10 s (at
        once with ``kill``)."""
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                try:
                    if kill:
                        raise subprocess.TimeoutExpired(self.proc.args, 0)
                    self.proc.stdin.close()
                    self.proc.wait(timeout=10)
                except (BrokenPipeError, subprocess.TimeoutExpired):
                    self.proc.kill()
                    self.proc.wait()
        finally:
            try:
                self.proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            self.results.close()
            self.proc = None
            if os.path.exists(self.log.name):
                self.log.close()
                os.unlink(self.log.name)
