"""Timing and memory measurement shared by every side (standard library + numpy only).

A :class:`Case` is one workload made ready to run on one library: ``run()`` computes the
result once and blocks until it is ready (``block_until_ready`` for JAX, ``.numpy()`` for
TensorFlow, ``torch.cuda.synchronize`` for PyTorch). :func:`measure` times it: the first
call (which includes tracing/compilation), then the case's ``check`` (timed apart,
``check_s``), ``warmup`` further calls, then ``reps`` timed calls; it reports
median/min/max wall time, the process's CPU time per call (user + system, all threads:
robust when other processes share the cores; the 1-minute load average is recorded with
it), throughput and the process's memory high-water marks.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import statistics
import time
from typing import Any, Callable


@dataclasses.dataclass
class Case:
    """One ready-to-run workload.

    Attributes:
      run: computes the workload once and waits for the result.
      items: how many maps (or image-steps) one call produces; throughput = items / time.
      unit: the throughput's unit, e.g. ``"maps/s"``.
      flops: floating-point operations of one call where known, else ``None``.
      flops_source: how ``flops`` was counted.
      compile_s: time spent compiling, where the library separates it (JAX AOT compile).
      check: optional ``() -> dict`` run once after the first call and before the timed calls
        (output agreement checks; it may raise to stop the workload).
      peak_device_bytes: optional ``() -> int`` read after the timed calls (GPU memory).
      program_memory: optional ``() -> dict`` read after the timed calls: the memory XLA's
        buffer assignment gives the compiled program that ran (:func:`program_memory`).
      info: free-form facts recorded with the result (shapes, chunk sizes, ...).
    """

    run: Callable[[], Any]
    items: int
    unit: str = "maps/s"
    flops: float | None = None
    flops_source: str | None = None
    compile_s: float | None = None
    check: Callable[[], dict] | None = None
    peak_device_bytes: Callable[[], int | None] | None = None
    program_memory: Callable[[], dict | None] | None = None
    info: dict = dataclasses.field(default_factory=dict)


def program_memory(compiled: Any) -> dict:
    """What one call of a compiled JAX program holds on its device, from its
    ``memory_analysis()``: arguments (parameters and inputs, resident before the call),
    outputs, temporaries (one block per call, sized by XLA's buffer assignment: the
    intermediates' peak) and the outputs aliasing arguments; ``bytes`` = arguments + outputs +
    temporaries - aliased. Exact for the program where a process-wide high-water mark is not
    (JAX cannot reset it: :mod:`benchmarks.worker`), and defined on CPU too."""
    m = compiled.memory_analysis()
    parts = {k: int(getattr(m, k + "_size_in_bytes", 0) or 0)
             for k in ("argument", "output", "temp", "alias")}
    return {**{k + "_bytes": v for k, v in parts.items()},
            "bytes": parts["argument"] + parts["output"] + parts["temp"] - parts["alias"]}


def rss_bytes() -> int | None:
    """Current resident set size of this process (Linux ``/proc``), else ``None``."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_bytes() -> int:
    """High-water mark of this process's resident set size (``ru_maxrss``, KiB on Linux)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _read_program_memory(case: Case) -> dict | None:
    if case.program_memory is None:
        return None
    t0 = time.perf_counter()
    try:
        out = case.program_memory()
    except Exception as e:  # a figure the backend cannot give is recorded, not fatal
        return {"error": f"{type(e).__name__}: {e}"}
    if out is not None:
        out["lookup_s"] = time.perf_counter() - t0
    return out


#: The most timed calls :func:`measure` makes to fill ``min_time_s``.
MAX_REPS = 50


def measure(case: Case, *, reps: int = 5, warmup: int = 1, min_time_s: float = 0.0,
            max_reps: int = MAX_REPS) -> dict:
    """Time ``case.run``; returns a JSON-ready dict (seconds, bytes)."""
    rss_setup = rss_bytes()
    peak_setup = peak_rss_bytes()
    out: dict[str, Any] = {}
    # the first call before the check: a check that calls the timed program (the bfloat16
    # opt-in's, against float32) would otherwise compile it untimed, and "compile" (first
    # call - median) would read ~0
    t0 = time.perf_counter()
    case.run()
    first = time.perf_counter() - t0
    if case.check is not None:
        t0 = time.perf_counter()
        out["check"] = case.check()
        out["check_s"] = time.perf_counter() - t0
    for _ in range(warmup):
        case.run()
    times: list[float] = []
    cpu: list[float] = []
    load_before = _loadavg()
    # timed calls until they add up to min_time_s (their sum, not the loop's wall time,
    # which also counts the timing itself: the calls could sum to a little less)
    while len(times) < reps or (sum(times) < min_time_s and len(times) < max_reps):
        c0 = time.process_time()
        t0 = time.perf_counter()
        case.run()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    med = statistics.median(times)
    out.update({
        "first_call_s": first,
        "compile_s": case.compile_s,
        "compile_estimate_s": max(first - med, 0.0),
        "warmup": warmup,
        "reps": len(times),
        "times_s": times,
        "median_s": med,
        "min_s": min(times),
        "max_s": max(times),
        "cpu_times_s": cpu,
        "median_cpu_s": statistics.median(cpu),
        "loadavg_1min_before_after": [load_before, _loadavg()],
        "items": case.items,
        "unit": case.unit,
        "throughput": case.items / med,
        "flops": case.flops,
        "flops_source": case.flops_source,
        "achieved_flops_per_s": (case.flops / med) if case.flops else None,
        "rss_after_setup_bytes": rss_setup,
        "peak_rss_before_run_bytes": peak_setup,
        "peak_rss_bytes": peak_rss_bytes(),
        "peak_device_bytes": case.peak_device_bytes() if case.peak_device_bytes else None,
        "program_memory": _read_program_memory(case),
        "info": case.info,
    })
    return out
