"""The harness's worker processes: kept workers, timeouts, the run deadline, and how a shared
process reports each workload's peak device memory."""

import json
import os
import subprocess
import sys
import time
import types

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # benchmarks/ is a top-level folder of the repo, not installed
from benchmarks import _workers, run as bench_run, suites, worker  # noqa: E402
from benchmarks._measure import MAX_REPS, Case  # noqa: E402

ENV = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
SAL = suites.workload("mnist/saliency 3cls b4", "smoke")
CAM = suites.workload("mnist/gradcam conv2d_2 3cls b4", "smoke")


def test_kept_worker_runs_workloads_in_one_process_and_restarts_after_a_timeout():
    w = _workers.KeptWorker(sys.executable, "jaxsal", ENV, ROOT, reps=5)
    try:
        first = w.run(SAL, timeout=300)
        second = w.run(CAM, timeout=300)
        assert first["status"] == second["status"] == "ok", (first, second)
        assert (first["workloads_before_in_process"], second["workloads_before_in_process"]) \
            == (0, 1)
        assert second["reps"] >= 5 and second["median_s"] > 0
        pid = w.proc.pid
        # no result within the time given: the process is stopped, the workload recorded
        late = w.run(SAL, timeout=0.01)
        assert late["status"] == "error" and "timed out" in late["reason"]
        assert w.proc is None
        again = w.run(SAL, timeout=300)  # a fresh process takes the next workload
        assert again["status"] == "ok" and again["workloads_before_in_process"] == 0
        assert w.proc.pid != pid
    finally:
        w.close()
    assert w.proc is None


def test_kept_worker_records_a_failing_workload_and_goes_on():
    bad = dict(SAL, id="mnist/gradcam at a layer that does not exist", method="gradcam",
               layer="no_such_layer")
    w = _workers.KeptWorker(sys.executable, "jaxsal", ENV, ROOT, reps=5)
    try:
        r = w.run(bad, timeout=300)
        pid = w.proc.pid
        ok = w.run(SAL, timeout=300)
        assert w.proc.pid == pid  # the same process ran both
    finally:
        w.close()
    assert r["status"] == "error" and "no_such_layer" in r["reason"] and r["traceback"]
    assert ok["status"] == "ok" and ok["workloads_before_in_process"] == 1


class _FakeSide(types.SimpleNamespace):
    """A side module whose device high-water mark, like JAX's, is never reset: each workload
    uses the next of ``uses`` bytes at its peak."""

    def __init__(self, uses):
        super().__init__(uses=list(uses), mark=0)

    def versions(self):
        return {}

    def device_peak_bytes(self):
        return self.mark

    def build(self, spec):
        use = self.uses.pop(0)

        def run():
            self.mark = max(self.mark, use)

        return Case(run, items=1, peak_device_bytes=self.device_peak_bytes)


def test_shared_process_peak_is_exact_only_when_the_workload_raised_it():
    side = _FakeSide([100, 300, 200])
    spec = {"id": "w"}
    a = worker.run_one(side, "jaxsal", spec, earlier=0)
    b = worker.run_one(side, "jaxsal", spec, earlier=1)
    c = worker.run_one(side, "jaxsal", spec, earlier=2)  # below the mark b left
    assert (a["peak_device_bytes"], b["peak_device_bytes"]) == (100, 300)
    assert c["peak_device_bytes"] is None and c["peak_device_bytes_at_most"] == 300


def test_deadline_records_every_workload_as_not_run(tmp_path):
    out = tmp_path / "cut.json"
    p = subprocess.run([sys.executable, "-m", "benchmarks.run", "--suite", "smoke", "--out",
                        str(out), "--quiet", "--deadline", "0", "--keep-workers"], cwd=ROOT,
                       env=ENV, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["complete"] is False and doc["deadline_s"] == 0
    assert doc["timing"] == {"min_reps": 5, "min_time_s": 0.0}  # the smoke suite's default
    n = sum(len(s["sides"]) * 2 for s in suites.SMOKE)  # default and tuned allocator
    assert len(doc["not_run"]) == n
    assert all(r["status"] == "not_run" for w in doc["workloads"] for r in w["results"])
    assert "stopped early" in bench_run.table(doc)


def test_short_workloads_get_more_timed_calls_up_to_the_cap():
    from benchmarks._measure import measure
    calls = []

    def case(seconds):
        def run():
            calls.append(1)
            time.sleep(seconds)
        return Case(run=run, items=1, unit="maps/s")

    fast = measure(case(0.002), reps=5, min_time_s=0.1, max_reps=1000)
    assert 0.1 / 0.002 * 0.5 < fast["reps"] < 0.1 / 0.002 + 1 and len(fast["times_s"]) == \
        fast["reps"]
    assert measure(case(0.002), reps=5, min_time_s=10.0, max_reps=12)["reps"] == 12
    assert measure(case(0.05), reps=5, min_time_s=0.1)["reps"] == 5  # already over it
    assert measure(case(0.0), reps=5)["reps"] == 5  # no minimum time: exactly reps


def test_fresh_worker_takes_the_minimum_time(tmp_path):
    r = _workers.run_once(sys.executable, "jaxsal", SAL, ENV, ROOT, 5, 300, min_time=0.5)
    assert r["status"] == "ok", r
    assert r["reps"] > 5 and sum(r["times_s"]) >= 0.5 or r["reps"] == MAX_REPS


def test_memory_ratio_of_ten_classes_to_top1():
    def w(id, targets, peak=None, at_most=None, program=None):
        r = {"side": "jaxsal", "malloc": "default", "status": "ok", "peak_device_bytes": peak,
             "peak_device_bytes_at_most": at_most,
             "program_memory": None if program is None else {"bytes": program}}
        return {"spec": {"id": id, "method": "saliency", "model": {"name": "vgg16", "size": 224},
                         "batch": 64, "targets": targets}, "results": [r]}

    doc = {"workloads": [w("top1", "top1", peak=4 << 30, program=2 << 30),
                         w("10", 10, peak=6 << 30, program=3 << 30),
                         w("10b", 10, at_most=12 << 30), w("10c", 10)]}
    got = {d["workload"]: d for d in bench_run._memory_ratios(doc)}
    assert got["10"]["ratio"] == pytest.approx(1.5) and got["10"]["ratio_at_most"] is None
    assert got["10"]["program_ratio"] == pytest.approx(1.5)
    assert got["10b"]["ratio"] is None and got["10b"]["ratio_at_most"] == pytest.approx(3.0)
    assert got["10b"]["program_ratio"] is None
    assert "10c" not in got  # nothing to compare

    # a kept JAX worker (GPU suite): the top-1 peak is only a bound, so the device ratio is
    # unknown, and the compiled programs' memory gives the figure
    doc = {"workloads": [w("top1", "top1", at_most=9 << 30, program=2 << 30),
                         w("10", 10, at_most=16 << 30, program=5 << 30)]}
    (d,) = bench_run._memory_ratios(doc)
    assert d["ratio"] is None and d["ratio_at_most"] is None
    assert d["program_ratio"] == pytest.approx(2.5)
    row = [line for line in bench_run.table({**_table_doc(), "memory_ratios": [d]}).splitlines()
           if line.startswith("| 10 |")]
    assert row == ["| 10 | jaxsal | default | - | 2.50 | 5120 MiB / 2048 MiB | <= 2.0 |"]


def _table_doc():
    return {"suite": "t", "date": "2026-12-04", "devices": ["cpu"], "machine": {},
            "workloads": []}


def test_program_memory_of_the_last_plan_reuses_its_executable(compiles):
    """The harness reads the memory of the program a jaxsal call ran from its call plan,
    lowered again with the same arguments: recent JAX finds the executable it already has
    (seen with 0.10; 0.4.38 compiles it again, outside the timed calls)."""
    import jax
    import jax.numpy as jnp

    import jaxsal
    from benchmarks import side_jaxsal

    k = jax.random.split(jax.random.key(3), 2)
    params = {"w": jax.random.normal(k[0], (12, 5))}
    model = jaxsal.FunctionModel(lambda p, x: jnp.tanh(x.reshape(x.shape[0], -1) @ p["w"]),
                                 params)
    x = jax.random.normal(k[1], (4, 2, 2, 3))
    jaxsal.saliency(model, x, [0, 1, 2])
    before = compiles.n
    m = side_jaxsal.last_plan_memory("saliency", model, x)
    if jax.__version_info__ >= (0, 10):
        assert compiles.n == before
    assert m["bytes"] == m["argument_bytes"] + m["output_bytes"] + m["temp_bytes"] - m[
        "alias_bytes"]
    assert m["argument_bytes"] >= (12 * 5 + 4 * 12) * 4 and m["output_bytes"] == 4 * 3 * 2 * 2 * 4
    assert side_jaxsal.last_plan_memory("gradcam", model, x) is None  # another method's
    assert side_jaxsal.last_plan_memory("saliency", model, x[:2]) is None  # another shape


def test_device_peak_flops_by_name():
    assert bench_run.device_peak_flops("gpu: NVIDIA H200")["tf32"] == pytest.approx(494.7e12)
    assert bench_run.device_peak_flops("cuda: NVIDIA H100 PCIe")["tf32"] == pytest.approx(378e12)
    assert bench_run.device_peak_flops("cpu: cpu") is None


def test_workload_finds_a_spec_by_id_and_names_a_missing_one():
    assert suites.workload("mnist/saliency 3cls b4", "smoke")["method"] == "saliency"
    assert suites.workload("vgg16/maximize 10cls x256 steps", "gpu")["preset"] == "adam-roll"
    with pytest.raises(KeyError, match="no workload 'mnist/nothing' in suite 'cpu'"):
        suites.workload("mnist/nothing")


def test_first_call_is_timed_before_a_check_that_runs_the_same_program():
    """A check that calls the timed program (the bfloat16 opt-in's, against float32) used to
    run first: it paid the compilation, and 'compile' (first call - median) read ~0."""
    from benchmarks._measure import measure
    compiled = []

    def run():  # "compiles" (0.2 s) on its first call, then takes ~0
        if not compiled:
            time.sleep(0.2)
            compiled.append(1)

    def check():
        run()
        return {"same": True}

    r = measure(Case(run=run, items=1, unit="maps/s", check=check), reps=5)
    assert r["first_call_s"] >= 0.2 and r["compile_estimate_s"] >= 0.19
    assert r["check"] == {"same": True} and 0 <= r["check_s"] < 0.1


def test_compile_of_a_bf16_row_checked_before_its_first_call_is_not_shown():
    old = {"compile_s": None, "compile_estimate_s": 0.0007,
           "check": {"pearson_vs_float32_mean": 0.999}}
    cls3, top1 = {"targets": [0, 1, 2]}, {"targets": "top1"}
    assert bench_run._fmt_compile(old, cls3) == "-"
    assert bench_run._fmt_compile(old, top1) == "0.7 ms"  # its check ran another program
    assert bench_run._fmt_compile(dict(old, check_s=0.4), cls3) == "0.7 ms"  # timed before
    assert bench_run._fmt_compile(dict(old, compile_s=2.0), cls3) == "2000.0 ms"  # AOT
    assert bench_run._fmt_compile({"compile_s": None, "compile_estimate_s": 0.5,
                                   "check": {"max_abs_diff_logits": 0.0}}, cls3) == "500.0 ms"


def test_cpu_time_ratios_only_between_cpu_results():
    """On a GPU the host's CPU time is how a library waits (torch.cuda.synchronize spins,
    JAX sleeps): the first GPU run showed CPU-time 'speed-ups' of 59x where wall time gave
    2.3x. Those columns are left empty for GPU results, in new runs and in tables of old."""
    spec = {"id": "w", "method": "gradcam", "model": {"name": "mnist"}, "batch": 4,
            "targets": 3, "sides": ("jaxsal", "gradcam"), "target": 2.5}

    def res(side, device, wall, cpu):
        return {"side": side, "status": "ok", "env": {}, "malloc": "default",
                "device": device, "median_s": wall, "median_cpu_s": cpu, "min_s": wall,
                "max_s": wall, "throughput": 1.0, "unit": "maps/s", "compile_s": 0.1}

    for dev, want in (("cpu", 2.0), ("gpu: NVIDIA H200", None)):
        peer = "cuda: NVIDIA H200" if dev != "cpu" else "cpu"
        rs = [res("jaxsal", dev, 0.1, 0.1 if dev == "cpu" else 0.01),
              res("gradcam", peer, 0.2, 0.2)]
        (q,) = bench_run._summarize(spec, rs, {})["ratios"]
        assert q["speedup"] == pytest.approx(2.0)
        assert q["cpu_time_speedup"] == (None if want is None else pytest.approx(want))
        # an old run's JSON with the ratio computed: not shown either
        q["cpu_time_speedup"] = 20.0
        doc = {"suite": "s", "date": "2026-12-07", "devices": [dev], "machine": {},
               "workloads": [{"spec": spec, "results": rs, "ratios": [q]}]}
        row = next(line for line in bench_run.table(doc).splitlines()
                   if line.startswith("| w | gradcam | default / default"))
        assert row.split(" | ")[3:5] == (["2.00x", "20.00x"] if want else ["2.00x", "-"])


def test_import_workload_waits_for_the_params(monkeypatch):
    """``load_keras`` returns before its params' host-to-device copies are done (on a 201 MB
    .h5: 405 ms returned, 602 ms ready): the timed call waits for them."""
    from benchmarks import side_jaxsal
    blocked = []
    monkeypatch.setattr(side_jaxsal, "_block", lambda tree: blocked.append(tree) or tree)
    case = side_jaxsal.build({"id": "mnist/import .h5", "model": suites.MNIST,
                              "method": "import", "batch": None, "targets": None})
    model = case.run()
    assert len(blocked) == 1 and blocked[0] is model.params


def test_reps_is_the_command_lines_for_every_workload():
    # a spec's own "reps" (the smoke suite's specs carried reps=5) overrode --reps N while
    # the JSON's "timing" and the table's header stated N
    assert not any("reps" in s for s in suites.SMOKE)
    mod = types.SimpleNamespace(build=lambda spec: Case(run=lambda: None, items=1, unit="maps/s"))
    for n in (2, 8):
        r = worker.run_one(mod, "jaxsal", dict(SAL, reps=5), reps=n)
        assert r["status"] == "ok" and r["reps"] == n == len(r["times_s"]), r


@pytest.mark.parametrize("profile,oneoffs", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_gpu_run_reserves_the_time_of_every_step_after_the_suite(profile, oneoffs):
    # gpu_run.sh's suite deadline leaves `reserve` s for the profile and the one-offs; it
    # reserved 2 one-offs' time for its 3. Its settings and the steps after the suite are run
    # with `bounded` counting each step's MAX instead of running it.
    lines = open(os.path.join(ROOT, "benchmarks", "gpu_run.sh")).read().splitlines()

    def part(first, last):
        i = next(k for k, s in enumerate(lines) if first in s)
        j = next(k for k, s in enumerate(lines) if k > i and last in s)
        return "\n".join(lines[i:j])

    script = "\n".join([
        "set -u; out=/nonexistent; total=0",
        part("# at most this long", "# bounded NAME"),
        "bounded() { total=$((total + $2)); return 1; }; rm() { :; }",
        part("# JAXSAL_GPU_PROFILE=1: the kernel profile", 'echo "== done in'),
        'echo "$reserve $total"'])
    env = dict(os.environ, JAXSAL_GPU_PROFILE=str(profile), JAXSAL_GPU_ONEOFFS=str(oneoffs))
    p = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stderr
    reserve, total = map(int, p.stdout.split())
    assert reserve == total and (total > 0) == bool(profile or oneoffs), (reserve, total)
