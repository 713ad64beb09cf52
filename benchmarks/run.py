"""Benchmark harness: ``python -m benchmarks.run --suite cpu|gpu|smoke --out FILE.json``.

Every workload runs for jaxsal and for its peers in the same job, each (workload, library,
allocator setting) in a fresh worker process (:mod:`benchmarks.worker`), so that peak RSS is
the workload's own. The peers run in their own interpreter: tf-keras-vis in the venv made by
``benchmarks/setup_peers.sh`` (``--peer-python``), the PyTorch peers in ``--torch-python``.
The JSON holds every measurement, the machine, library versions, the date and the ratios;
``--write-readme`` regenerates the table in ``benchmarks/README.md`` from it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

from benchmarks import _workers, models, suites
from benchmarks._measure import MAX_REPS

ROOT = models.ROOT
README = os.path.join(ROOT, "benchmarks", "README.md")
TUNED_MALLOC = ("glibc.malloc.mmap_threshold=4294967295:"
                "glibc.malloc.trim_threshold=4294967295")
#: Transparent huge pages for glibc's allocations (madvise on every chunk it maps): one page
#: fault per 2 MiB instead of per 4 KiB where the kernel's THP mode is ``madvise``.
THP_MALLOC = "glibc.malloc.hugetlb=1"
MALLOC = {"default": {}, "tuned": {"GLIBC_TUNABLES": TUNED_MALLOC},
          "thp": {"GLIBC_TUNABLES": THP_MALLOC}}
PEER_SIDES = ("tfkv", "captum", "gradcam", "torch")
SCHEMA = 1


def _machine() -> dict:
    out = {"platform": platform.platform(), "machine": platform.machine(),
           "cpu_count": os.cpu_count()}
    try:
        out["cpu_affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    out["cpu_model"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            out["mem_total_bytes"] = int(f.readline().split()[1]) * 1024
    except OSError:
        pass
    try:  # e.g. "always [madvise] never": the "thp" allocator setting needs madvise or always
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            out["transparent_hugepage"] = f.read().strip()
    except OSError:
        pass
    return out


def _python_for(side: str, a) -> str:
    if side == "tfkv":
        return a.peer_python
    if side in ("captum", "gradcam", "torch"):
        return a.torch_python
    return sys.executable


def _worker_env(env_extra: dict, a, side: str) -> dict:
    env = dict(os.environ)
    env.update(env_extra)
    env.setdefault("PYTHONPATH", ROOT)
    if a.cpu:
        env["JAX_PLATFORMS"] = "cpu"
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif a.keep_workers and side in ("jaxsal", "naive"):
        # two JAX workers (jaxsal, naive) and the PyTorch ones share the GPU for the whole
        # run: JAX takes memory as it needs it instead of 75% of the device up front
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    return env


def _no_interpreter(side: str, spec: dict, python: str) -> dict:
    return {"side": side, "workload": spec["id"], "status": "skipped",
            "reason": f"no interpreter for {side!r} (got {python!r}); see "
                      "benchmarks/setup_peers.sh"}


def _forward_equivalents(spec: dict) -> float | None:
    """Useful work of one call per input, in forward passes: 1 forward plus 1 per input
    gradient (a VJP with respect to the input costs about one forward's FLOPs)."""
    m = spec["method"]
    t = spec["targets"]
    T = 1 if t == "top1" else (len(t) if isinstance(t, list) else int(t or 1))
    if m == "forward":
        return 1.0
    if m in ("saliency", "guided"):
        return 1.0 + T
    if m == "smoothgrad":
        return spec["samples"] * (1.0 + T)
    if m == "ig":
        return spec["steps"] * (1.0 + T)
    if m == "maximize":
        return 2.0 * spec["steps"]  # per image (one image per target)
    return None  # CAMs: a partial backward pass, not counted


def host_cpu_time_comparable(*results: dict) -> bool:
    """Whether the process CPU times of ``results`` compare work done: on the CPU only. With
    a GPU the host's CPU time measures how each library waits for the device
    (``torch.cuda.synchronize`` spins: CPU time = wall time; JAX's ``block_until_ready``
    sleeps: 0.02-0.37 of it in the first GPU run's gradient rows), not the work."""
    return all(str(r.get("device") or "cpu").startswith("cpu") for r in results)


def _summarize(spec: dict, results: list[dict], fwd_flops: dict) -> dict:
    """Attach nominal FLOPs and compute ratios (peer median / jaxsal median)."""
    fe = _forward_equivalents(spec)
    f1 = fwd_flops.get(models.model_key(spec["model"]))
    if spec["method"] == "maximize" and spec.get("layer"):
        # a layer's channels: the forward pass up to that layer, as the programs compute
        # (XLA drops the layers after it; the PyTorch peer runs the net up to it), counted
        # by jaxsal's side (bench_maximize); none where no result has it
        f1 = next((r["info"]["fwd_flops_per_image_to_layer"] for r in results
                   if (r.get("info") or {}).get("fwd_flops_per_image_to_layer")), None)
    n = spec["batch"] if spec["batch"] else (
        len(spec["targets"]) if isinstance(spec["targets"], list) else spec["targets"])
    for r in results:
        if r.get("status") == "ok" and fe and f1 and r.get("flops") is None:
            r["flops"] = n * f1 * fe
            r["flops_source"] = ("nominal: convolution and matmul FLOPs of one forward per image "
                                 "(counted on the jaxpr) x "
                                 f"{fe:g} forward-equivalents x {n} inputs")
            r["achieved_flops_per_s"] = r["flops"] / r["median_s"]
    by = {(r["side"], json.dumps(r.get("env", {}), sort_keys=True)): r for r in results}
    ratios = []
    for variant, env in MALLOC.items():
        key = json.dumps(env, sort_keys=True)
        js = by.get(("jaxsal", key))
        if not js or js.get("status") != "ok":
            continue
        for side in spec["sides"][1:]:
            other = by.get((side, key)) or by.get((side, json.dumps({}, sort_keys=True)))
            if other and other.get("status") == "ok":
                ratio = other["median_s"] / js["median_s"]
                cpu_ratio = (other["median_cpu_s"] / js["median_cpu_s"]
                             if other.get("median_cpu_s") and js.get("median_cpu_s")
                             and host_cpu_time_comparable(other, js) else None)
                ratios.append({"vs": side, "malloc": variant, "cpu_time_speedup": cpu_ratio,
                               "peer_malloc": "default" if other.get("env") == {} else variant,
                               "speedup": ratio, "target": spec.get("target")
                               if side in PEER_SIDES else None,
                               "met": (ratio >= spec["target"]) if spec.get("target")
                               and side in PEER_SIDES else None})
    return {"ratios": ratios}


def run_suite(a) -> dict:
    t_start = time.perf_counter()
    specs = list(suites.SUITES[a.suite])
    if a.only:
        specs = [s for s in specs if any(o in s["id"] for o in a.only)]
    sides = set(a.sides) if a.sides else None
    variants = [v for v in a.malloc]
    started = datetime.datetime.now(datetime.timezone.utc)
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True)
    doc: dict = {"schema": SCHEMA, "suite": a.suite, "date": started.isoformat(timespec="seconds"),
                 "machine": _machine(), "command": " ".join(sys.argv),
                 # a device machine's copy of the tree may have no .git, or a stale one: the
                 # caller's JAXSAL_GIT_COMMIT names the commit that runs (dirtiness unknown)
                 "git_commit": os.environ.get("JAXSAL_GIT_COMMIT") or git.stdout.strip(),
                 "git_dirty": (None if os.environ.get("JAXSAL_GIT_COMMIT") else
                               bool(dirty.stdout.strip()) if dirty.returncode == 0 else None),
                 "malloc_variants": {v: MALLOC[v] for v in variants},
                 "workers": "kept (one per library for the run)" if a.keep_workers
                 else "one per workload", "deadline_s": a.deadline,
                 "timing": {"min_reps": a.reps, "min_time_s": a.min_time}, "workloads": []}
    for spec in specs:
        if spec["model"]["name"] != "mnist":
            _build_model(spec["model"])
    kept: dict = {}
    try:
        for spec in specs:
            results = []
            for side in spec["sides"]:
                if sides and side not in sides:
                    continue
                side_variants = variants if (side not in PEER_SIDES or a.peer_malloc_variants) \
                    else ["default"]
                for v in side_variants:
                    left = None if a.deadline is None else \
                        a.deadline - (time.perf_counter() - t_start)
                    if left is not None and left < a.min_worker_s:
                        r = {"side": side, "workload": spec["id"], "status": "not_run",
                             "reason": "the run's --deadline left too little time to start it"}
                    else:
                        if not a.quiet:
                            print(f"[{a.suite}] {spec['id']:<55} {side:<7} malloc={v:<8}",
                                  end=" ", flush=True)
                        r = _run(spec, side, v, a, kept,
                                 a.timeout if left is None else min(a.timeout, left))
                        if not a.quiet:
                            print(_short(r), flush=True)
                    r["malloc"] = v
                    r["env"] = MALLOC[v]
                    results.append(r)
            doc["workloads"].append({"spec": spec, "results": results})
            doc["workloads"] = _assemble(doc["workloads"])
            if a.out:  # keep what is measured so far
                _save(doc, a.out + ".partial")
    finally:
        for w in kept.values():
            w.close()
    cut = [f"{w['spec']['id']} [{r['side']}]" for w in doc["workloads"] for r in w["results"]
           if r.get("status") == "not_run"]
    doc["complete"] = not cut
    if cut:
        doc["not_run"] = cut
    return _finalize(doc)


def _run(spec: dict, side: str, variant: str, a, kept: dict, timeout: float) -> dict:
    """One workload on one side, in a fresh worker or in the run's kept worker for it."""
    python = _python_for(side, a)
    if not python or not os.path.exists(python):
        return _no_interpreter(side, spec, python)
    env = _worker_env(MALLOC[variant], a, side)
    if not a.keep_workers:
        return _workers.run_once(python, side, spec, env, ROOT, a.reps, timeout, a.min_time)
    if (side, variant) not in kept:
        kept[(side, variant)] = _workers.KeptWorker(python, side, env, ROOT, a.reps,
                                                    a.min_time)
    return kept[(side, variant)].run(spec, timeout)


def _short(r: dict) -> str:
    if r.get("status") == "ok":
        return f"{r['median_s'] * 1e3:.1f} ms ({r['throughput']:.1f} {r['unit']})"
    return f"{r.get('status')}: {r.get('reason', '')[:150]}"


def _assemble(workloads: list[dict]) -> list[dict]:
    """The workload entries with their nominal FLOPs and ratios (re)computed: a model's
    forward FLOPs come from the first of its results that measured them."""
    fwd_flops: dict = {}
    for w in workloads:
        for r in w["results"]:
            f = (r.get("info") or {}).get("fwd_flops_per_image")
            if f:
                fwd_flops.setdefault(models.model_key(w["spec"]["model"]), f)
    return [{"spec": w["spec"], "results": w["results"],
             **_summarize(w["spec"], w["results"], fwd_flops)} for w in workloads]


def _finalize(doc: dict) -> dict:
    """Derived ratios, versions, devices and elapsed time of a (possibly partial) run."""
    doc["derived"] = _derived(doc)
    doc["memory_ratios"] = _memory_ratios(doc)
    doc["versions"] = _versions(doc)
    doc["devices"] = sorted({r["device"] for w in doc["workloads"] for r in w["results"]
                             if r.get("device")})
    started = datetime.datetime.fromisoformat(doc["date"])
    doc["elapsed_s"] = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
    return doc


def _save(doc: dict, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, default=float)


def _build_model(spec: dict) -> None:
    if os.path.exists(models.model_path(spec)):
        return
    arg = f"{spec['name']}_{spec['size']}"
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-m", "benchmarks.models", arg], cwd=ROOT, env=env,
                   check=True, capture_output=True)


def _versions(doc) -> dict:
    out: dict = {}
    for w in doc["workloads"]:
        for r in w["results"]:
            for k, v in (r.get("versions") or {}).items():
                out.setdefault(r["side"] if r["side"] != "naive" else "jaxsal", {})[k] = v
    return out


def _derived(doc) -> list[dict]:
    """Input-gradient cost relative to the forward pass, per model and batch."""
    out = []
    fwd = {}
    for w in doc["workloads"]:
        s = w["spec"]
        for r in w["results"]:
            if r.get("status") == "ok" and s["method"] == "forward":
                fwd[(models.model_key(s["model"]), s["batch"], r["side"], r["malloc"])] = r
    for w in doc["workloads"]:
        s = w["spec"]
        if s["method"] != "saliency" or s["targets"] != "top1" or s.get("options"):
            continue
        for r in w["results"]:
            f = fwd.get((models.model_key(s["model"]), s["batch"],
                         "jaxsal" if r["side"] == "naive" else r["side"], r["malloc"]))
            if r.get("status") == "ok" and f:
                cpu = (r["median_cpu_s"] / f["median_cpu_s"]
                       if r.get("median_cpu_s") and f.get("median_cpu_s")
                       and host_cpu_time_comparable(r, f) else None)
                out.append({"what": "input-gradient (saliency top-1) time / forward time",
                            "workload": s["id"], "side": r["side"], "malloc": r["malloc"],
                            "ratio": r["median_s"] / f["median_s"], "cpu_time_ratio": cpu,
                            "target": 2.5})
    return out


def _memory_ratios(doc) -> list[dict]:
    """Memory of a T-class call over that of the top-1 call of the same method, model, batch
    and library (issue 6: at most 2), by two measures where the results have them: the peak
    device memory (``ratio``; on GPU; only an upper bound, ``ratio_at_most``, where a shared
    JAX process's high-water mark had been set by an earlier workload) and the compiled
    programs' memory (``program_ratio``: arguments + outputs + temporaries of XLA's buffer
    assignment, :func:`benchmarks._measure.program_memory`; exact per program, on every
    backend)."""
    def program(r):
        return (r.get("program_memory") or {}).get("bytes")

    top1 = {}
    for w in doc["workloads"]:
        s = w["spec"]
        if s["targets"] == "top1" and not s.get("options"):
            for r in w["results"]:
                if r.get("status") == "ok":
                    top1[(s["method"], models.model_key(s["model"]), s["batch"], r["side"],
                          r["malloc"])] = r
    out = []
    for w in doc["workloads"]:
        s = w["spec"]
        if s["targets"] == "top1" or s.get("options"):
            continue
        for r in w["results"]:
            base = top1.get((s["method"], models.model_key(s["model"]), s["batch"], r["side"],
                             r["malloc"]))
            if r.get("status") != "ok" or not base:
                continue
            b, exact, at_most = (base.get("peak_device_bytes"), r.get("peak_device_bytes"),
                                 r.get("peak_device_bytes_at_most"))
            d = {"what": "memory, T targets / top-1", "workload": s["id"], "side": r["side"],
                 "malloc": r["malloc"], "ratio": exact / b if b and exact else None,
                 "ratio_at_most": at_most / b if b and at_most and not exact else None,
                 "program_ratio": (program(r) / program(base)
                                   if program(r) and program(base) else None),
                 "program_bytes": program(r), "top1_program_bytes": program(base),
                 "target": 2.0}
            if d["ratio"] or d["ratio_at_most"] or d["program_ratio"]:
                out.append(d)
    return out


#: Dense (no sparsity) peak throughput of the accelerators the GPU suite is run on, from
#: NVIDIA's H100 and H200 datasheets (SXM form factor; the datasheets' tensor-core figures
#: are with 2:4 sparsity, twice these). Matched on the device name the sides report.
DEVICE_PEAK = (
    ("H200 NVL", {"fp32": 60e12, "tf32": 417.5e12, "bf16": 835.5e12}),
    ("H200", {"fp32": 66.9e12, "tf32": 494.7e12, "bf16": 989.4e12}),
    ("H100 PCIe", {"fp32": 51.2e12, "tf32": 378e12, "bf16": 756e12}),
    ("H100", {"fp32": 66.9e12, "tf32": 494.7e12, "bf16": 989.4e12}),
)


def device_peak_flops(device: str) -> dict | None:
    """Peak FLOP/s by precision for a device name such as ``"gpu: NVIDIA H200"``, if known."""
    for name, peak in DEVICE_PEAK:
        if name in device:
            return peak
    return None


# ----------------------------------------------------------------------------- README table
def _fmt_s(s):
    return "-" if s is None else (f"{s * 1e3:.1f} ms" if s < 10 else f"{s:.1f} s")


def _fmt_b(b):
    return "-" if not b else f"{b / 2**20:.0f} MiB"


def _fmt_device(r: dict) -> str:
    if r.get("peak_device_bytes"):
        return _fmt_b(r["peak_device_bytes"])
    if r.get("peak_device_bytes_at_most"):  # a shared JAX process: see benchmarks/worker.py
        return "<= " + _fmt_b(r["peak_device_bytes_at_most"])
    return "-"


def _fmt_flops(r: dict) -> str:
    gf = r.get("achieved_flops_per_s")
    if not gf:
        return "-"
    peak = device_peak_flops(r.get("device", ""))
    return f"{gf / 1e9:.1f}" + (f" ({100 * gf / peak['tf32']:.0f}% TF32)" if peak else "")


def _compile_untimed(r: dict, spec: dict) -> bool:
    """Whether a result's compilation ran untimed: before 2026-12-07 the harness ran a case's
    check before its first call (no ``check_s`` recorded), and the bfloat16 opt-in's check
    of T classes calls the very program that is timed, so its first call found it compiled
    (a top-1 check passes the predicted classes as targets: another program, and the first
    call still compiled the timed one)."""
    return ("check_s" not in r and "pearson_vs_float32_mean" in (r.get("check") or {})
            and spec.get("targets") != "top1")


def _fmt_compile(r: dict, spec: dict) -> str:
    """The table's compile column: JAX's AOT compile where measured, else first call minus
    median; ``-`` where the compilation was not timed (:func:`_compile_untimed`)."""
    if r.get("compile_s") is not None:
        return _fmt_s(r["compile_s"])
    return "-" if _compile_untimed(r, spec) else _fmt_s(r.get("compile_estimate_s"))


def _load_range(doc: dict) -> str:
    loads = [v for w in doc["workloads"] for r in w["results"]
             for v in (r.get("loadavg_1min_before_after") or []) if v is not None]
    return f"{min(loads):.1f}-{max(loads):.1f}" if loads else "?"


def _timing(doc: dict) -> str:
    """How many calls each median is of, as the run's ``timing`` says (runs before it had
    none: at least 5 calls)."""
    t = doc.get("timing") or {}
    reps, min_time = t.get("min_reps", 5), t.get("min_time_s") or 0
    more = (f", more (up to {MAX_REPS}) until they add up to {min_time:g} s," if min_time
            else "")
    return f"Median of >= {reps} calls{more} after the first (warm-up) call"


def table(doc: dict) -> str:
    lines = [f"Suite `{doc['suite']}`" + ("" if doc.get("complete", True) else
                                           f" (stopped early; not run: {', '.join(doc.get('not_run', []))})")
             + f", {doc['date']}, commit {str(doc.get('git_commit'))[:10]}"
             f"{' + uncommitted changes' if doc.get('git_dirty') else ''}, "
             f"device(s): {', '.join(doc['devices'])}; "
             f"CPU: {doc['machine'].get('cpu_model', '?')} ({doc['machine'].get('cpu_count')} "
             f"cores), 1-min load average {_load_range(doc)}. {_timing(doc)}; compile = "
             f"first call minus median (JAX AOT compile where measured); peak RSS = the "
             f"worker process's high-water mark; speed-up = peer median / jaxsal median, the peer "
             f"at glibc's defaults unless the run had --peer-malloc-variants (malloc column: "
             f"jaxsal / peer)."
             + ("" if host_cpu_time_comparable(*(r for w in doc["workloads"]
                                                 for r in w["results"])) else
                " CPU-time ratios `-`: on a GPU the host's CPU time measures how each library "
                "waits for the device (PyTorch's synchronize spins, JAX sleeps), not its work.")
             + (" Compile `-` on the bfloat16 T-class rows: this run's output check called "
                "the timed program before its first call, so its compilation was not timed "
                "(the harness times the first call before the check since)." if any(
                    _compile_untimed(r, w["spec"]) for w in doc["workloads"]
                    for r in w["results"] if r.get("status") == "ok") else ""),
             "",
             "| workload | library | malloc | median | min-max | throughput | compile | "
             "GFLOP/s | peak RSS | peak device |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for w in doc["workloads"]:
        for r in w["results"]:
            name = w["spec"]["id"]
            if r.get("status") != "ok":
                lines.append(f"| {name} | {r['side']} | {r.get('malloc', '')} | "
                             f"{r.get('status')}: {str(r.get('reason', ''))[:80]} "
                             "| | | | | | |")
                continue
            lines.append(
                f"| {name} | {r['side']} | {r['malloc']} | {_fmt_s(r['median_s'])} | "
                f"{_fmt_s(r['min_s'])}-{_fmt_s(r['max_s'])} | {r['throughput']:.1f} "
                f"{r['unit']} | {_fmt_compile(r, w['spec'])} | {_fmt_flops(r)} | "
                f"{_fmt_b(r.get('peak_rss_bytes'))} | {_fmt_device(r)} |")
    # a run's JSON keeps the CPU-time ratios computed when it was made: none on a GPU
    ratios = [(w["spec"]["id"], q if host_cpu_time_comparable(*w["results"])
               else dict(q, cpu_time_speedup=None))
              for w in doc["workloads"] for q in w["ratios"]]
    if ratios:
        lines += ["", "| workload | jaxsal vs | malloc (jaxsal / peer) | speed-up (wall) | "
                  "speed-up (CPU time) | target | met (wall) |",
                  "|---|---|---|---|---|---|---|"]
        for name, q in ratios:
            met = "-" if q["met"] is None else ("yes" if q["met"] else "**no**")
            cr = q.get("cpu_time_speedup")
            lines.append(f"| {name} | {q['vs']} | {q['malloc']} / {q['peer_malloc']} | "
                         f"{q['speedup']:.2f}x | {'-' if cr is None else f'{cr:.2f}x'} | "
                         f"{q['target'] or '-'} | {met} |")
    if doc.get("derived"):
        lines += ["", "| input-gradient / forward | library | malloc | ratio (wall) | "
                  "ratio (CPU time) | target |", "|---|---|---|---|---|---|"]
        for d in doc["derived"]:
            c = d.get("cpu_time_ratio")
            lines.append(f"| {d['workload']} | {d['side']} | {d['malloc']} | "
                         f"{d['ratio']:.2f} | {'-' if c is None else f'{c:.2f}'} | "
                         f"<= {d['target']} |")
    if doc.get("memory_ratios"):
        lines += ["", "| memory, T targets / top-1 | library | malloc | peak device | "
                  "compiled program | program bytes (T / top-1) | target |",
                  "|---|---|---|---|---|---|---|"]
        for d in doc["memory_ratios"]:
            dev = ("-" if d["ratio"] is None and d.get("ratio_at_most") is None
                   else f"{d['ratio']:.2f}" if d["ratio"] is not None
                   else f"<= {d['ratio_at_most']:.2f}")
            prog = d.get("program_ratio")
            lines.append(f"| {d['workload']} | {d['side']} | {d.get('malloc', '')} | {dev} | "
                         f"{'-' if prog is None else f'{prog:.2f}'} | "
                         f"{_fmt_b(d.get('program_bytes'))} / "
                         f"{_fmt_b(d.get('top1_program_bytes'))} | <= {d['target']} |")
    lines += _bf16_table(doc)
    return "\n".join(lines)


def _bf16_table(doc: dict) -> list[str]:
    """The bfloat16 opt-in: each map's Pearson r with the float32 map of the same call (the
    worker's check, before the timed calls) and the time relative to the float32 workload."""
    f32 = {(w["spec"]["id"], r["malloc"]): r for w in doc["workloads"] for r in w["results"]
           if r.get("status") == "ok" and r["side"] == "jaxsal"}
    rows = []
    for w in doc["workloads"]:
        for r in w["results"]:
            c = r.get("check") or {}
            if r.get("status") != "ok" or "pearson_vs_float32_mean" not in c:
                continue
            base = f32.get((w["spec"]["id"].removesuffix(" bf16"), r["malloc"]))
            speed = f"{base['median_s'] / r['median_s']:.2f}x" if base else "-"
            maps = str(c["maps"])
            if c.get("maps_constant_in_both"):  # no correlation to score (see side_jaxsal)
                maps += f" ({c['maps_constant_in_both']} constant in both, not scored)"
            rows.append(f"| {w['spec']['id']} | {r['malloc']} | "
                        f"{c['pearson_vs_float32_mean']:.4f} | {c['pearson_vs_float32_min']:.4f} "
                        f"| {maps} | {speed} |")
    if not rows:
        return []
    return ["", "| bfloat16 workload | malloc | Pearson r vs float32 (mean) | (min) | maps | "
            "speed-up vs float32 |", "|---|---|---|---|---|---|"] + rows


def write_readme(doc: dict, path: str = README) -> None:
    start, end = f"<!-- table:{doc['suite']}:start -->", f"<!-- table:{doc['suite']}:end -->"
    text = open(path).read() if os.path.exists(path) else ""
    block = f"{start}\n<!-- generated by python -m benchmarks.run --write-readme; do not edit -->\n" \
            f"{table(doc)}\n{end}"
    if start in text and end in text:
        pre, rest = text.split(start, 1)
        text = pre + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", choices=sorted(suites.SUITES), default="smoke")
    ap.add_argument("--out", help="result JSON path (e.g. benchmarks/results/cpu.json)")
    ap.add_argument("--write-readme", action="store_true",
                    help="regenerate this suite's table in benchmarks/README.md")
    ap.add_argument("--from-json", help="only regenerate the README table from this JSON")
    ap.add_argument("--only", nargs="*", help="run workloads whose id contains any of these")
    ap.add_argument("--sides", nargs="*", help="run only these libraries",
                    choices=sorted({side for suite in suites.SUITES.values() for spec in suite
                                    for side in spec["sides"]}))
    ap.add_argument("--malloc", nargs="*", default=None, choices=sorted(MALLOC),
                    help="allocator settings to run jaxsal under (default: default and tuned "
                         "on CPU suites; default alone on the GPU suites, where the host "
                         "allocator does not hold the device's buffers)")
    ap.add_argument("--peer-malloc-variants", action="store_true",
                    help="run the peers under every --malloc setting too (default: glibc "
                         "defaults only)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=None,
                    help="seconds of timed calls per workload: short workloads get more than "
                         f"--reps calls, up to {MAX_REPS}, until they add up to this (default "
                         "1 s; 0 on the smoke suites)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="per worker, seconds")
    ap.add_argument("--deadline", type=float, default=None,
                    help="seconds for the whole run: no worker starts with less than "
                         "--min-worker-s left, a running one is stopped at it, and what "
                         "was measured is kept (workloads not reached are listed as not_run)")
    ap.add_argument("--min-worker-s", type=float, default=30.0)
    ap.add_argument("--keep-workers", action=argparse.BooleanOptionalAction, default=None,
                    help="one worker process per library kept for the whole run (default on "
                         "the GPU suites and the smoke suite, which checks that the harness "
                         "runs: 4 worker starts instead of 12) instead of one per workload "
                         "(default on the CPU suite: each workload's peak RSS is its own)")
    ap.add_argument("--peer-python", default=os.environ.get(
        "JAXSAL_PEER_PYTHON", "/work/venvs/peer/bin/python"))
    ap.add_argument("--torch-python", default=os.environ.get("JAXSAL_TORCH_PYTHON",
                                                             sys.executable))
    ap.add_argument("--cpu", action="store_true", help="force JAX (and torch) onto the CPU")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    if a.suite in ("cpu", "smoke", "gpu-smoke"):
        a.cpu = True
    if a.keep_workers is None:
        a.keep_workers = a.suite.startswith("gpu") or a.suite == "smoke"
    if a.min_time is None:
        a.min_time = 0.0 if a.suite.endswith("smoke") else 1.0
    if a.malloc is None:
        a.malloc = ["default"] if a.suite.startswith("gpu") else ["default", "tuned"]
    if a.from_json:
        with open(a.from_json) as f:
            doc = json.load(f)
        if "complete" not in doc:  # a run's .partial file: stopped before its last workload
            done = {w["spec"]["id"] for w in doc["workloads"]}
            doc["complete"] = False
            doc["not_run"] = [s["id"] for s in suites.SUITES[doc["suite"]] if s["id"] not in done]
            _finalize(doc)
            doc["elapsed_s"] = sum(r.get("wall_s", 0.0) for w in doc["workloads"]
                                   for r in w["results"])
        else:
            doc["derived"] = _derived(doc)  # recomputed: the ratios are derived, not measured
            doc["memory_ratios"] = _memory_ratios(doc)
        if a.out:
            _save(doc, a.out)
        if a.write_readme:
            write_readme(doc)
        return 0
    if a.write_readme and (a.only is not None or a.sides is not None):
        ap.error("--write-readme regenerates the suite's whole table in benchmarks/README.md; "
                 "with --only/--sides it would replace it with the selected rows alone. Run "
                 "the selection without --write-readme, or regenerate the table from a whole "
                 "run's JSON: --from-json benchmarks/results/<suite>.json --write-readme")
    if not any((not a.only or any(o in s["id"] for o in a.only))
               and (not a.sides or set(s["sides"]) & set(a.sides))
               for s in suites.SUITES[a.suite]):
        ap.error(f"no workload of suite {a.suite!r} matches --only {a.only or '(all)'} and "
                 f"--sides {a.sides or '(all)'}: expected a substring of a workload id of "
                 f"that suite and libraries its workloads run on (see benchmarks/suites.py)")
    doc = run_suite(a)
    if a.out:
        _save(doc, a.out)
        if os.path.exists(a.out + ".partial"):
            os.unlink(a.out + ".partial")
    if a.write_readme:
        write_readme(doc)
    if not a.quiet:
        print(table(doc))
    bad = [r for w in doc["workloads"] for r in w["results"] if r.get("status") == "error"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
