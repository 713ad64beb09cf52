"""Runs workloads on one library in this process and reports their measurements as JSON.

Two modes:

* ``python -m benchmarks.worker --side SIDE --spec JSON --out FILE``: one workload, its
  result written to ``FILE``. The CPU suites start one such worker per (workload, side,
  allocator setting), so every peak-RSS figure is that workload's own high-water mark.
* ``python -m benchmarks.worker --side SIDE --serve --result-fd N``: a worker kept for a whole
  run (the GPU suites): it reads one workload spec per line on stdin, runs it, and writes its
  result as one JSON line to file descriptor ``N`` (stdout stays free for the libraries'
  own printing). One interpreter start, CUDA context and model load per library instead of
  one per workload, as in a user's batch job.

Peak device memory per workload in a kept worker: PyTorch resets its peak counter before each
workload (exact). JAX has no such reset, so a workload's peak is exact when it raised the
process's high-water mark and is recorded as an upper bound (``peak_device_bytes_at_most``)
when an earlier workload had set it higher.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import sys
import time
import traceback

SIDES = {
    "jaxsal": "benchmarks.side_jaxsal",
    "naive": "benchmarks.side_jaxsal",
    "tfkv": "benchmarks.side_tfkv",
    "captum": "benchmarks.side_torch",
    "gradcam": "benchmarks.side_torch",
    "torch": "benchmarks.side_torch",
}


def _import(side: str):
    """The side's module and the facts every result of this process carries."""
    t0 = time.perf_counter()
    mod = importlib.import_module(SIDES[side])
    common = {"versions": mod.versions(),
              "device": getattr(mod, "device_name", lambda: platform.processor() or "cpu")(),
              "import_s": time.perf_counter() - t0, "python": platform.python_version()}
    return mod, common


def run_one(mod, side: str, spec: dict, *, reps: int = 5, warmup: int = 0,
            min_time: float = 0.0, earlier: int = 0) -> dict:
    """Build and time one workload on ``mod`` (a side module); ``earlier`` is how many
    workloads this process ran before. A failure becomes a result with ``status`` error."""
    from benchmarks._measure import measure, peak_rss_bytes

    res: dict = {"side": side, "workload": spec["id"], "workloads_before_in_process": earlier}
    reset = getattr(mod, "reset_device_peak", None)
    if reset:
        reset()
    peak_fn = getattr(mod, "device_peak_bytes", None)
    peak_before = peak_fn() if peak_fn else None
    try:
        t0 = time.perf_counter()
        build = getattr(mod, "build_" + side, None) if side in ("naive", "captum", "gradcam",
                                                                "torch") else None
        case = (build or mod.build)(spec)
        res["setup_s"] = time.perf_counter() - t0
        # ``reps`` is the command line's --reps for every workload, the count the JSON's
        # "timing" and the table's header state (a spec's own "reps" is not read)
        res.update(measure(case, reps=reps, warmup=warmup, min_time_s=min_time))
        res["status"] = "ok"
        del case
    except NotImplementedError as e:
        res.update(status="skipped", reason=str(e))
    except Exception as e:  # a failing workload is recorded, the suite goes on
        res.update(status="error", reason=f"{type(e).__name__}: {e}",
                   traceback=traceback.format_exc()[-4000:], peak_rss_bytes=peak_rss_bytes())
    if (res.get("peak_device_bytes") is not None and not reset and earlier
            and peak_before is not None and res["peak_device_bytes"] <= peak_before):
        # an earlier workload of this process set the high-water mark: this one's peak is at
        # most that, and no more is known
        res["peak_device_bytes_at_most"] = res.pop("peak_device_bytes")
        res["peak_device_bytes"] = None
    gc.collect()
    release = getattr(mod, "release_device_memory", None)
    if release:  # a kept worker hands cached memory back to the device for the others
        release()
    return res


def _failed_import(side: str, spec: dict, tb: str) -> dict:
    from benchmarks._measure import peak_rss_bytes

    return {"side": side, "workload": spec["id"], "status": "error",
            "reason": f"importing {SIDES[side]}: {tb.strip().splitlines()[-1]}",
            "traceback": tb[-4000:], "peak_rss_bytes": peak_rss_bytes()}


def serve(side: str, result_fd: int, **kw) -> int:
    """Run the specs read from stdin, one per line, until EOF; one JSON result line each."""
    out = os.fdopen(result_fd, "w", buffering=1)
    try:
        mod, common = _import(side)
        failure = None
    except Exception:  # the library itself is missing or broken: every workload fails
        mod, common, failure = None, {}, traceback.format_exc()
    for i, line in enumerate(sys.stdin):
        spec = json.loads(line)
        if failure is not None:
            res = _failed_import(side, spec, failure)
        else:
            res = {**run_one(mod, side, spec, earlier=i, **kw), **common}
        out.write(json.dumps(res, default=float) + "\n")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", required=True, choices=sorted(SIDES))
    ap.add_argument("--spec", help="workload spec as JSON (one-workload mode)")
    ap.add_argument("--out", help="result file (one-workload mode)")
    ap.add_argument("--serve", action="store_true", help="read specs from stdin, one per line")
    ap.add_argument("--result-fd", type=int, help="where --serve writes its result lines")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=0,
                    help="calls after the first (which is always a warm-up, timed apart)")
    ap.add_argument("--min-time", type=float, default=0.0)
    a = ap.parse_args(argv)
    kw = dict(reps=a.reps, warmup=a.warmup, min_time=a.min_time)
    if a.serve:
        if a.result_fd is None:
            ap.error("--serve needs --result-fd")
        return serve(a.side, a.result_fd, **kw)
    if a.spec is None or a.out is None:
        ap.error("expected --spec and --out, or --serve")
    spec = json.loads(a.spec)
    try:
        mod, common = _import(a.side)
        res = {**run_one(mod, a.side, spec, **kw), **common}
    except Exception:
        res = _failed_import(a.side, spec, traceback.format_exc())
    with open(a.out, "w") as f:
        json.dump(res, f, default=float)
    return 0 if res["status"] != "error" else 1


if __name__ == "__main__":
    sys.exit(main())
