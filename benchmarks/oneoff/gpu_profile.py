"""One-off GPU profile (issue 6): where the time of VGG16's (224x224, batch 64) input gradient
goes, compared with its forward pass, in jaxsal and in the naive JAX version; and why the
bfloat16 Grad-CAM maps correlated badly with the float32 ones in the suite.

Run on the GPU machine after ``python -m benchmarks.models vgg16_224``:

    python -m benchmarks.oneoff.gpu_profile OUTDIR [--parts 1,2,3,4,5]   # default: every part
    python -m benchmarks.oneoff.gpu_profile --from DIR   # summarize saved traces again

Part 1: the FLOPs of one forward pass by XLA's cost analysis (lowered and compiled program)
and counted on the jaxpr. Part 2: the suite's own programs (``benchmarks.side_jaxsal``):
median of 10 calls after a warm-up, then 3 calls under ``jax.profiler.trace``, whose GPU
kernels are summed per call by category and listed by kernel (the traces, ``*.xplane.pb``,
readable with ``jax.profiler.ProfileData``, go to OUTDIR); then the naive top-1 program
with one implementation choice undone at a time (timings only). Part 3: Grad-CAM at
block5_conv3 for 10 classes in float32 (XLA's default precision), ``precision="highest"``
and ``precision="bfloat16"``: per-map Pearson r between each pair, and how many maps are
zero everywhere (ReLU of a negative weighted sum). Part 4: the top-1 saliency with
``precision="bfloat16"``, timed and profiled (which types cuDNN's kernels ran in), then a
variant whose backward convolutions and matmuls also return bfloat16 (in case cuDNN has no
fast kernel for bfloat16 operands with a float32 output), timed, profiled and its maps'
Pearson r against float32's. Part 5: class maximization (the suite's 10 classes x 256
steps), one call traced: GPU kernel time per step against wall time per step.

The first run (tree of commit 5b45ecc, before the max-pooling and ReLU changes) had part 2
compare the importer's max pooling then (windows transposed last, an argmax) with
``reduce_window``; its output is in ``benchmarks/results/oneoff/gpu_profile_1.txt``.
"""

from __future__ import annotations

import collections
import contextlib
import glob
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import data, models, side_jaxsal
from benchmarks.oneoff.gpu_chunks import interleaved_ms

# a dry run on a CPU: PROFILE_SIZE=32 PROFILE_BATCH=2 PROFILE_STEPS=8 (after python -m
# benchmarks.models vgg16_32)
SIZE = int(os.environ.get("PROFILE_SIZE", 224))
BATCH = int(os.environ.get("PROFILE_BATCH", 64))
STEPS = int(os.environ.get("PROFILE_STEPS", 256))  # part 5's optimizer steps
VGG = {"name": "vgg16", "size": SIZE}

# kernel-name patterns, first match wins
CATEGORIES = [
    ("layout conversion", r"nchwtonhwc|nhwctonchw|nchw_to_nhwc|nhwc_to_nchw|transpose"),
    ("conv dgrad (input gradient)", r"dgrad|convolve_bwd_data|bwd_data"),
    ("conv wgrad", r"wgrad|bwd_filter"),
    ("conv fprop", r"fprop|implicit_gemm|convolve|conv2d|xmma_conv|cudnn"),
    ("gemm (dense)", r"gemm|cublas|cutlass|sm\d+_xmma|matmul|dot"),
    ("copy/memset", r"copy|memcpy|memset"),
    ("reduction", r"reduce|reduction|argmax"),
    ("select-and-scatter", r"select_and_scatter|scatter"),
    ("elementwise fusion", r"fusion|loop_|wrapped_|elementwise"),
]


def category(name: str) -> str:
    low = name.lower()
    for label, pat in CATEGORIES:
        if re.search(pat, low):
            return label
    return "other"


def median_ms(run, reps=10):
    """Median and minimum wall milliseconds of ``reps`` calls after two warm-up calls."""
    ts = interleaved_ms({"run": run}, warmup=2, rounds=reps)["run"]
    return statistics.median(ts), min(ts)


def profile(label, run, outdir, calls=3):
    """Trace ``calls`` calls, keep the trace in ``outdir`` and print its summary; returns
    the GPU kernel time per call in ms (``None`` without GPU kernels)."""
    tmp = tempfile.mkdtemp()
    with jax.profiler.trace(tmp):
        for _ in range(calls):
            run()
    files = glob.glob(os.path.join(tmp, "**", "*.xplane.pb"), recursive=True)
    if not files:
        print(f"  [{label}] no xplane file written")
        return None
    safe = re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_")
    path = os.path.join(outdir, f"{safe}.xplane.pb")
    shutil.copy(files[0], path)
    return summarize(label, path, calls)


def summarize(label, path, calls=3):
    """Kernel time per call of a trace of ``calls`` calls: by category and by kernel."""
    from jax.profiler import ProfileData

    pd = ProfileData.from_file(path)
    kernels = collections.defaultdict(lambda: [0.0, 0, ""])
    gpu_planes = [p for p in pd.planes if p.name.startswith("/device:GPU")]
    if not gpu_planes:
        print(f"  [{label}] planes: {[p.name for p in pd.planes]}")
        return None
    first = True
    ops = collections.Counter()
    for plane in gpu_planes:
        for line in plane.lines:
            if line.name == "XLA Ops":
                for ev in line.events:
                    ops[ev.name] += ev.duration_ns
            # kernels run on the compute stream ("Stream #14(Compute,Memset)", the order and
            # the set of activities vary); the copy-only streams are skipped
            if not line.name.startswith("Stream") or "Compute" not in line.name:
                continue
            for ev in line.events:
                stats = dict(ev.stats)
                if first:
                    print(f"  [{label}] line {line.name!r}, first event stats: "
                          f"{ {k: str(v)[:60] for k, v in stats.items()} }")
                    first = False
                k = kernels[ev.name]
                k[0] += ev.duration_ns
                k[1] += 1
                k[2] = str(stats.get("hlo_op", ""))
    if not kernels:
        print(f"  [{label}] no kernels; lines: "
              f"{[(p.name, [ln.name for ln in p.lines]) for p in gpu_planes]}")
        return None
    total = sum(v[0] for v in kernels.values()) / calls / 1e6
    by_cat = collections.Counter()
    for name, (ns, _, _) in kernels.items():
        by_cat[category(name)] += ns / calls / 1e6
    print(f"  [{label}] GPU kernel time per call {total:.2f} ms; by category:")
    for c, ms in by_cat.most_common():
        print(f"      {ms:8.2f} ms  {100 * ms / total:5.1f}%  {c}")
    print("    top kernels (ms per call, launches per call, hlo_op, name):")
    for name, (ns, n, op) in sorted(kernels.items(), key=lambda kv: -kv[1][0])[:14]:
        print(f"      {ns / calls / 1e6:8.2f} {n // calls:4d}  {op[:28]:28s} {name[:110]}")
    if ops:
        print("    top HLO ops of the 'XLA Ops' line (ms per call):")
        for name, ns in ops.most_common(10):
            print(f"      {ns / calls / 1e6:8.2f}  {name[:100]}")
    return total


@contextlib.contextmanager
def reduce_window_maxpool():
    """Max pooling by ``reduce_window`` (select-and-scatter backward) instead of the
    importer's reshape-and-max, while programs are traced inside."""
    import flax.linen as nn

    from model_import._layers import pooling

    saved = pooling._blocked_max
    pooling._blocked_max = lambda v, pool: nn.max_pool(v, pool, pool, "VALID")
    try:
        yield
    finally:
        pooling._blocked_max = saved


def spec(method, targets, **kw):
    return {"id": "profile", "model": VGG, "method": method, "batch": BATCH, "targets": targets,
            **kw}


def part1():
    model = models.logits_model(models.model_path(VGG))
    fn = jax.jit(model.apply)
    lowered = fn.lower(model.params, jax.ShapeDtypeStruct((1, SIZE, SIZE, 3), jnp.float32))
    lo = lowered.cost_analysis()
    co = lowered.compile().cost_analysis()
    co = co[0] if isinstance(co, (list, tuple)) else co
    print(f"forward FLOPs per image: XLA cost analysis of the lowered program "
          f"{(lo or {}).get('flops')}, of the "
          f"compiled one {(co or {}).get('flops')}; counted on the jaxpr (side_jaxsal) "
          f"{side_jaxsal.forward_flops_per_image(model, (SIZE, SIZE, 3)):.4g}", flush=True)


@contextlib.contextmanager
def two_operand_reduction():
    """Every window's first maximum by the two-operand reduction, not the comparison chain."""
    from model_import._layers import pooling

    saved = pooling._CHAIN_MAX
    pooling._CHAIN_MAX = 0
    try:
        yield
    finally:
        pooling._CHAIN_MAX = saved


@contextlib.contextmanager
def jax_relu():
    """The naive cases' model with ``jax.nn.relu`` (derivative from the input) instead of
    the importer's ReLU (derivative from the output)."""
    saved = side_jaxsal._load
    side_jaxsal._load = lambda spec: saved(spec).with_relu(jax.nn.relu, name="jax.nn.relu")
    try:
        yield
    finally:
        side_jaxsal._load = saved


def part2(outdir):
    cases = [
        ("forward", lambda: side_jaxsal.build(spec("forward", None))),
        ("jaxsal saliency top1", lambda: side_jaxsal.build(spec("saliency", "top1"))),
        ("naive saliency top1", lambda: side_jaxsal.build_naive(spec("saliency", "top1"))),
        ("jaxsal saliency 10cls one chunk", lambda: side_jaxsal.build(
            spec("saliency", 10, options={"memory_budget": 100e9}))),
        ("jaxsal guided top1", lambda: side_jaxsal.build(spec("guided", "top1"))),
    ]
    for label, make in cases:
        case = make()
        med, mn = median_ms(case.run)
        print(f"{label}: median {med:.2f} ms, min {mn:.2f} ms", flush=True)
        profile(label, case.run, outdir)
    # the same naive top-1 program with one choice undone at a time (traced afresh inside
    # each context; timings only)
    for label, ctx in (("max pooling's first maximum by the two-operand reduction",
                        two_operand_reduction), ("max pooling by reduce_window",
                                                 reduce_window_maxpool),
                       ("jax.nn.relu", jax_relu)):
        with ctx():
            case = side_jaxsal.build_naive(spec("saliency", "top1"))
            med, mn = median_ms(case.run)
        print(f"naive saliency top1, {label}: median {med:.2f} ms, min {mn:.2f} ms",
              flush=True)


def part4(outdir):
    """bfloat16 (no speed-up in the first suite run): the kernels of the top-1 saliency with
    ``precision="bfloat16"``; their names say which types cuDNN computed in (the float32
    program's read ``f32f32_tf32f32_f32``)."""
    case = side_jaxsal.build(spec("saliency", "top1", options={"precision": "bfloat16"}))
    med, mn = median_ms(case.run)
    print(f"jaxsal saliency top1 bfloat16: median {med:.2f} ms, min {mn:.2f} ms", flush=True)
    profile("jaxsal saliency top1 bfloat16", case.run, outdir)
    # A variant not in jaxsal: the backward convolutions and matmuls also *return* bfloat16
    # (converted to float32 after), in case cuDNN has no fast kernel for bfloat16 operands
    # with a float32 output. Timed, profiled, and its maps' r against float32.
    import jaxsal
    from jaxsal._src import base, precision

    def bind_bf16_out(self, prim, params, invals):
        ops = [jax.lax.convert_element_type(a, self.dtype) for a in invals]
        out = prim.bind(*ops, **dict(params, preferred_element_type=jnp.dtype(self.dtype)))
        return jax.lax.convert_element_type(out, jnp.float32)

    model = models.logits_model(models.model_path(VGG))
    x = jnp.asarray(data.inputs(spec("saliency", "top1"), BATCH))
    ref = np.asarray(jaxsal.saliency(model, x))
    base.clear_caches()
    with mock.patch.object(precision._Rule, "bind", bind_bf16_out):
        run = lambda: jax.block_until_ready(jaxsal.saliency(model, x, precision="bfloat16"))  # noqa: E731
        maps = np.asarray(run())
        med, mn = median_ms(run)
        print(f"saliency top1 bfloat16 with bfloat16 outputs: median {med:.2f} ms, "
              f"min {mn:.2f} ms", flush=True)
        profile("saliency top1 bfloat16 outputs", run, outdir)
    base.clear_caches()
    r = pearson(maps, ref)
    print(f"  r vs float32: mean {np.nanmean(r):.5f}, min {np.nanmin(r):.5f}", flush=True)


def pearson(a, b):
    a = np.asarray(a, np.float64).reshape(-1, SIZE * SIZE)
    b = np.asarray(b, np.float64).reshape(-1, SIZE * SIZE)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    return np.where(den > 0, (a * b).sum(1) / np.where(den > 0, den, 1), np.nan)


def part5(outdir):
    """Class maximization (the first run: 1.14x a PyTorch Adam loop, target 4x; 5.3 ms per
    step for 10 images, with jaxsal's default options): the suite's own program
    (``bench_maximize.case`` with the suite's ``"adam-roll"`` preset, the PyTorch loop's
    objective; 10 classes x ``STEPS`` steps in one ``lax.scan``), one call traced. GPU kernel time per step against
    wall time per step: what the kernels take, and how long the GPU waits between them
    (launches of a loop's many small kernels)."""
    from benchmarks import bench_maximize, suites

    s = dict(suites.workload("vgg16/maximize 10cls x256 steps", "gpu"), model=VGG, steps=STEPS)
    case = bench_maximize.case(s)
    med, mn = median_ms(case.run, reps=3)
    print(f"jaxsal maximize 10 classes x {STEPS} steps: median {med:.1f} ms, min {mn:.1f} ms "
          f"({med / STEPS:.3f} ms per step)", flush=True)
    kernels = profile("jaxsal maximize 10cls", case.run, outdir, calls=1)
    if kernels:
        print(f"  per step: wall {med / STEPS:.3f} ms, GPU kernels {kernels / STEPS:.3f} ms, "
              f"between kernels {(med - kernels) / STEPS:.3f} ms", flush=True)


def part3():
    import jaxsal

    model = models.logits_model(models.model_path(VGG))
    x = jnp.asarray(data.inputs(spec("gradcam", 10), BATCH))
    maps = {p: np.asarray(jaxsal.gradcam(model, x, list(range(10)), layer="block5_conv3",
                                         precision=p))
            for p in (None, "highest", "bfloat16")}
    for p, m in maps.items():
        flat = m.reshape(-1, SIZE * SIZE)
        print(f"gradcam precision={p}: maps {len(flat)}, zero everywhere "
              f"{int((flat.max(1) == 0).sum())}, median max {np.median(flat.max(1)):.3g}, "
              f"median fraction of positive pixels {np.median((flat > 0).mean(1)):.3f}")
    for a, b in ((None, "highest"), ("bfloat16", None), ("bfloat16", "highest")):
        r = pearson(maps[a], maps[b])
        ok = r[~np.isnan(r)]
        q = np.quantile(ok, [0, 0.01, 0.05, 0.5]) if len(ok) else []
        print(f"r({a} vs {b}): undefined (a constant map) {int(np.isnan(r).sum())}, "
              f"defined {len(ok)}: mean {ok.mean():.5f}, quantiles 0/1/5/50% "
              f"{np.round(q, 4).tolist()}, below 0.99: {int((ok < 0.99).sum())}")
        low = np.argsort(np.nan_to_num(r, nan=-2))[:3]
        for i in low:
            fa = maps[a].reshape(-1, SIZE * SIZE)[i]
            fb = maps[b].reshape(-1, SIZE * SIZE)[i]
            print(f"    map {i}: r {r[i]:.4f}, positive pixels {(fa > 0).mean():.4f} / "
                  f"{(fb > 0).mean():.4f}, max {fa.max():.3g} / {fb.max():.3g}")


def main(argv):
    if argv[:1] == ["--from"]:  # summarize saved traces again: --from DIR
        for path in sorted(glob.glob(os.path.join(argv[1], "*.xplane.pb"))):
            summarize(os.path.basename(path)[:-len(".xplane.pb")], path)
        return
    outdir = argv[0] if argv else "gpu_profile_out"
    parts = argv[2].split(",") if argv[1:2] == ["--parts"] else ["1", "2", "3", "4", "5"]
    os.makedirs(outdir, exist_ok=True)
    print("device", jax.devices()[0], getattr(jax.devices()[0], "device_kind", ""),
          "jax", jax.__version__, "parts", parts, flush=True)
    chosen = {"1": part1, "2": lambda: part2(outdir), "3": part3, "4": lambda: part4(outdir),
              "5": lambda: part5(outdir)}
    for part in (chosen[p] for p in parts):
        t = time.perf_counter()
        try:
            part()
        except Exception as e:  # keep the other parts' output
            print(f"FAILED: {type(e).__name__}: {e}", flush=True)
        print(f"[{time.perf_counter() - t:.1f} s]", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
