"""Runs one workload on one library in this process and writes its measurement as JSON.

``python -m benchmarks.worker --side jaxsal|naive|tfkv|torch|captum|gradcam --spec JSON
--out FILE``. The harness (:mod:`benchmarks.run`) starts one worker per (workload, side,
variant), so every peak-RSS figure is that workload's own high-water mark and each library
runs in its own interpreter (the peers in their own venv).
"""

from __future__ import annotations

import argparse
import importlib
import json
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", required=True, choices=sorted(SIDES))
    ap.add_argument("--spec", required=True, help="workload spec as JSON")
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=0,
                    help="calls after the first (which is always a warm-up, timed apart)")
    ap.add_argument("--min-time", type=float, default=0.0)
    a = ap.parse_args(argv)
    spec = json.loads(a.spec)
    from benchmarks._measure import measure, peak_rss_bytes

    res: dict = {"side": a.side, "workload": spec["id"], "python": platform.python_version()}
    t_import = time.perf_counter()
    try:
        mod = importlib.import_module(SIDES[a.side])
        res["versions"] = mod.versions()
        res["device"] = getattr(mod, "device_name", lambda: platform.processor() or "cpu")()
        t0 = time.perf_counter()
        res["import_s"] = t0 - t_import
        build = getattr(mod, "build_" + a.side, None) if a.side in ("naive", "captum",
                                                                     "gradcam", "torch") else None
        case = (build or mod.build)(spec)
        res["setup_s"] = time.perf_counter() - t0
        res.update(measure(case, reps=spec.get("reps", a.reps), warmup=a.warmup,
                           min_time_s=a.min_time))
        res["status"] = "ok"
    except NotImplementedError as e:
        res.update(status="skipped", reason=str(e))
    except Exception as e:  # a failing workload is recorded, the suite goes on
        res.update(status="error", reason=f"{type(e).__name__}: {e}",
                   traceback=traceback.format_exc()[-4000:], peak_rss_bytes=peak_rss_bytes())
    with open(a.out, "w") as f:
        json.dump(res, f, default=float)
    return 0 if res["status"] != "error" else 1


if __name__ == "__main__":
    sys.exit(main())
