"""benchmarks/bench_maximize.py runs end to end (smoke suite) and reports what it measured."""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # benchmarks/ is a top-level folder of the repo, not installed
from benchmarks import bench_maximize  # noqa: E402


def test_smoke_suite_result_is_complete(tmp_path):
    out = tmp_path / "maximize_smoke.json"
    bench_maximize.main(["--suite", "smoke", "--reps", "2", "--warmup", "0", "--out", str(out)])
    res = json.loads(out.read_text())
    assert res["suite"] == "smoke" and res["device"].startswith("cpu")
    (r,) = res["results"]
    assert r["unit"] == "image-steps/s" and r["items"] == 3 * 16
    assert r["compile_s"] > 0 and r["median_s"] > 0 and len(r["times_s"]) == 2
    assert abs(r["throughput"] - r["items"] / r["median_s"]) < 1e-6 * r["throughput"]
    assert r["check"]["images_in_range"] and r["check"]["classified_as_target"] == 3
