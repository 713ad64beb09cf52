"""jaxsal's side of every workload, plus ``naive``: a hand-written jitted JAX baseline (one
``vjp``, its pullback vmapped over one-hot cotangents, channel reduction on device) that the
library must beat.

jaxsal is called through its public contract: ``jaxsal.<method>(model, x, targets, **opts)``
with ``targets=None`` (each input's predicted class) for "top1" and ``list(range(T))`` for T
classes; CAMs at ``layer=`` upsampled to the input; ``jaxsal.maximize`` through
``benchmarks.bench_maximize``. A method jaxsal does not provide yet is recorded as skipped.
"""

from __future__ import annotations

import functools
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

from benchmarks import data, models  # noqa: E402
from benchmarks._measure import Case  # noqa: E402


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for p in ("jaxsal", "jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "flax",
              "optax", "numpy", "h5py"):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            pass
    return out


def device_name() -> str:
    import jax

    d = jax.devices()[0]
    return f"{d.platform}: {getattr(d, 'device_kind', str(d))}"


def device_peak_bytes() -> int | None:
    """The process's device-memory high-water mark (``None`` on CPU). JAX cannot reset it:
    see :mod:`benchmarks.worker` for how a shared process reads it per workload."""
    import jax

    d = jax.devices()[0]
    if d.platform == "cpu":
        return None
    stats = d.memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def _block(tree):
    import jax

    return jax.block_until_ready(tree)


@functools.lru_cache(maxsize=None)
def _flops_cached(path: str, shape: tuple) -> float | None:
    return forward_flops_per_image(models.logits_model(path), shape)


def forward_flops_per_image(model, shape) -> float | None:
    """XLA's FLOP count of one forward pass on one image: the cost analysis of the lowered,
    not the compiled, program. A GPU compiler rewrites convolutions into cuDNN custom calls
    that its cost analysis counts as 0 FLOPs (the first GPU run reported 0.25 GFLOP per
    VGG16 image, its dense layers only); before compilation every backend counts them."""
    import jax
    import jax.numpy as jnp

    fn = jax.jit(model.apply)
    ca = fn.lower(model.params, jax.ShapeDtypeStruct((1, *shape), jnp.float32)).cost_analysis()
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else {}
    f = (ca or {}).get("flops")
    return float(f) if f else None


def _load(spec):
    return models.logits_model(models.model_path(spec["model"]))


def _common(spec):
    import jax
    import jax.numpy as jnp

    model = _load(spec)
    info = {"fwd_flops_per_image": _flops_cached(models.model_path(spec["model"]),
                                                 tuple(models.input_shape(spec["model"]))),
            # None: XLA's default, TF32 for float32 convolutions and dots on NVIDIA GPUs
            # since Ampere (the PyTorch peers are set to match: side_torch.TORCH_SETTINGS)
            "jax_default_matmul_precision": jax.config.jax_default_matmul_precision}
    return model, info, jnp


def _targets(spec):
    return None if spec["targets"] == "top1" else data.class_ids(spec)


def _n_targets(spec):
    return 1 if spec["targets"] == "top1" else len(data.class_ids(spec))


def build(spec: dict) -> Case:
    import jax

    method = spec["method"]
    if method == "import":
        from model_import import load_keras

        path = models.model_path(spec["model"])

        def run():
            return load_keras(path)

        return Case(run, items=1, unit="loads/s",
                    info={"file_bytes": os.path.getsize(path)})
    if method == "maximize":
        try:
            from benchmarks import bench_maximize
        except ImportError as e:
            raise NotImplementedError(f"benchmarks.bench_maximize not available yet: {e}")
        case = bench_maximize.case(spec)
        case.peak_device_bytes = device_peak_bytes
        return case

    model, info, jnp = _common(spec)
    x = jnp.asarray(data.inputs(spec, spec["batch"]))
    if method == "forward":
        # the reference for "input gradient / forward": the faster of XLA's default options
        # and the ones jaxsal compiles its own programs with (on CPU they differ, and which
        # one wins depends on the model), chosen by the median of 3 calls each
        from jaxsal._src.base import compiler_options

        variants = {"xla-defaults": None, "jaxsal-options": compiler_options()}
        if variants["jaxsal-options"] is None:  # not on CPU: the two are the same program
            del variants["jaxsal-options"]
        progs, t0 = {}, time.perf_counter()
        for name, opts in variants.items():
            progs[name] = jax.jit(model.apply, compiler_options=opts).lower(
                model.params, x).compile()
        compile_s = (time.perf_counter() - t0) / len(progs)
        speed = {}
        for name, c in progs.items():
            _block(c(model.params, x))
            ts = []
            for _ in range(3):
                t = time.perf_counter()
                _block(c(model.params, x))
                ts.append(time.perf_counter() - t)
            speed[name] = sorted(ts)[1]
        best = min(speed, key=speed.get)
        compiled = progs[best]
        info.update(forward_options=best, forward_probe_s=speed)
        return Case(lambda: _block(compiled(model.params, x)), items=x.shape[0],
                    unit="images/s", compile_s=compile_s, info=info,
                    peak_device_bytes=device_peak_bytes)

    import jaxsal

    name = {"saliency": "saliency", "guided": "guided_backprop", "gradcam": "gradcam",
            "scorecam": "scorecam", "smoothgrad": "smoothgrad",
            "ig": "integrated_gradients"}[method]
    fn = getattr(jaxsal, name, None)
    if fn is None:
        raise NotImplementedError(f"jaxsal.{name} is not available yet")
    opts = dict(spec.get("options", {}))
    if method in ("gradcam", "scorecam"):
        opts.update(layer=spec["layer"], upsample=True)
    if method == "smoothgrad":
        opts.update(n=spec["samples"], key=jax.random.key(0))
    if method == "ig":
        opts.update(steps=spec["steps"])
    targets = _targets(spec)
    info["options"] = {k: str(v) for k, v in opts.items()}

    def run():
        return _block(fn(model, x, targets, **opts))

    check = None
    if opts.get("precision") == "bfloat16":
        def check():  # the opt-in's accuracy, measured on the same inputs before timing
            ref = {k: v for k, v in opts.items() if k != "precision"}
            # "top1": the float32 prediction for both (a near-tie can flip in bfloat16, and a
            # map of another class is not a precision error)
            t = jnp.argmax(model(x), -1)[:, None] if targets is None else targets
            return pearson_per_map(fn(model, x, t, **opts), fn(model, x, t, **ref))

    return Case(run, items=x.shape[0] * _n_targets(spec), info=info, check=check,
                peak_device_bytes=device_peak_bytes)


def pearson_per_map(maps, ref) -> dict:
    """Pearson correlation of each map with its float32 counterpart (maps are ``(N, H, W)``
    or ``(N, T, H, W)``): mean and minimum over maps."""
    import numpy as np

    a = np.asarray(maps, np.float64).reshape(-1, *np.shape(maps)[-2:])
    b = np.asarray(ref, np.float64).reshape(a.shape)
    a = a.reshape(len(a), -1) - a.reshape(len(a), -1).mean(1, keepdims=True)
    b = b.reshape(len(b), -1) - b.reshape(len(b), -1).mean(1, keepdims=True)
    r = (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1) + 1e-300)
    return {"pearson_vs_float32_mean": float(r.mean()), "pearson_vs_float32_min": float(r.min()),
            "maps": int(len(r))}


# ----------------------------------------------------------------------------- naive JAX
def build_naive(spec: dict) -> Case:
    """The hand-written baseline: what a JAX user writes without jaxsal."""
    import jax

    method = spec["method"]
    if method not in ("saliency", "guided", "gradcam"):
        raise NotImplementedError(f"no naive JAX version of {method!r}")
    model, info, jnp = _common(spec)
    if method == "guided":
        model = model.with_backprop("guided")
    x = jnp.asarray(data.inputs(spec, spec["batch"]))
    n = x.shape[0]
    if spec["targets"] == "top1":
        cls = jnp.argmax(model(x), axis=-1)
        cts = jax.nn.one_hot(cls, model.output_shape[-1])[None]  # (1, N, K)
    else:
        k = models.num_classes(spec["model"])
        ids = jnp.asarray(data.class_ids(spec))
        cts = jnp.broadcast_to(jax.nn.one_hot(ids, k)[:, None, :], (len(ids), n, k))

    if method in ("saliency", "guided"):
        def f(params, x, cts):
            _, pullback = jax.vjp(lambda a: model.apply(params, a), x)
            g = jax.vmap(lambda c: pullback(c)[0])(cts)            # (T, N, H, W, C)
            return jnp.moveaxis(jnp.max(jnp.abs(g), axis=-1), 0, 1)  # (N, T, H, W)
    else:
        layer = spec["layer"]
        shape = model.layer(layer).output_shape
        h, w = x.shape[1:3]

        def f(params, x, cts):
            def fwd(delta):
                return model.apply(params, x, capture=[layer], perturb={layer: delta})
            (_, acts), pullback = jax.vjp(fwd, jnp.zeros((n, *shape), x.dtype))
            a = acts[layer]
            g = jax.vmap(lambda c: pullback((c, {layer: jnp.zeros_like(a)}))[0])(cts)
            wts = jnp.mean(g, axis=(2, 3))                          # (T, N, K)
            cam = jax.nn.relu(jnp.einsum("tnk,nhwk->tnhw", wts, a))
            cam = jax.image.resize(cam, (*cam.shape[:2], h, w), "bilinear")
            return jnp.moveaxis(cam, 0, 1)
    fn = jax.jit(f)
    t0 = time.perf_counter()
    compiled = fn.lower(model.params, x, cts).compile()
    compile_s = time.perf_counter() - t0
    return Case(lambda: _block(compiled(model.params, x, cts)), items=n * cts.shape[0],
                compile_s=compile_s, info=info, peak_device_bytes=device_peak_bytes)
