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
from benchmarks._measure import Case, program_memory  # noqa: E402


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


def last_plan():
    """``(key, plan)`` of the call plan used last (:mod:`jaxsal._src.plans`: the plan of the
    jaxsal call that ran last, if that method keeps plans), or ``None``."""
    from jaxsal._src import plans

    with plans.PLANS.lock:
        return next(reversed(plans.PLANS.data.items()), None)


def last_plan_memory(name: str, model, x) -> dict | None:
    """:func:`~benchmarks._measure.program_memory` of the program that the last call of
    ``jaxsal.<name>`` on an input shaped like ``x`` ran: the most recently used call plan
    (:func:`last_plan`), lowered again with the same arguments, which finds the
    executable JAX already compiled (no second compilation with recent JAX; 0.4.38 compiles
    it again, after the timed calls). ``None`` when the last plan is another call's (a
    method without plans)."""
    last = last_plan()
    # a plan's key starts (method name, model function, input type, input shape, ...):
    # jaxsal._src.plans.key
    if last is None or last[0][0] != name or last[0][3] != tuple(x.shape):
        return None
    plan = last[1]
    return program_memory(plan.fn.lower(model.params, x, plan.ids).compile())


def _block(tree):
    import jax

    return jax.block_until_ready(tree)


@functools.lru_cache(maxsize=None)
def _flops_cached(path: str, shape: tuple) -> float | None:
    return forward_flops_per_image(models.logits_model(path), shape)


def forward_flops_per_image(model, shape, layer: str | None = None) -> float | None:
    """The multiply-add FLOPs (2 per multiply-accumulate) of the convolutions and matrix
    products of one forward pass on one image, counted on the traced program. Not XLA's
    cost analysis: a GPU compiler turns convolutions into cuDNN calls that the compiled
    program's analysis counts as 0 (the first GPU run reported 0.25 GFLOP per VGG16 image,
    its dense layers only), and the lowered program's analysis returned nothing there.

    With ``layer``, only the forward pass up to that layer's output: the program traced to
    return that output alone, its equations that do not lead to it removed (JAX's dead-code
    elimination, as XLA drops them from a compiled program that reads a layer: activation
    maximization of a layer's channels). ``shape``: one image's shape, ``(H, W, C)``."""
    import jax
    import jax.numpy as jnp

    img = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
    if layer is None:
        jaxpr = jax.make_jaxpr(model.apply)(model.params, img).jaxpr
    else:
        from jax._src.interpreters import partial_eval as pe

        jaxpr = jax.make_jaxpr(lambda p, x: model.apply(p, x, capture=[layer])[1][layer])(
            model.params, img).jaxpr
        jaxpr, _ = pe.dce_jaxpr(jaxpr, [True] * len(jaxpr.outvars))
    return float(jaxpr_matmul_flops(jaxpr)) or None


def jaxpr_matmul_flops(jaxpr) -> int:
    """``2 * multiply-accumulates`` of every ``dot_general`` and ``conv_general_dilated`` in
    ``jaxpr`` and the jaxprs nested in its equations (calls, custom derivatives, loops once)."""
    import math

    import jax
    import jax.extend  # jax.extend.core below: ``import jax`` alone does not load it

    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            (lc, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            out = eqn.outvars[0].aval.shape
            total += 2 * math.prod(out) * math.prod(lhs[d] for d in lc)
        elif name == "conv_general_dilated":
            rhs = eqn.invars[1].aval.shape
            spec = eqn.params["dimension_numbers"].rhs_spec  # (out feature, in feature, *sp)
            out = eqn.outvars[0].aval.shape
            total += 2 * math.prod(out) * rhs[spec[1]] * math.prod(rhs[d] for d in spec[2:])
        for v in eqn.params.values():
            for sub in (v if isinstance(v, (tuple, list)) else (v,)):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    total += jaxpr_matmul_flops(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    total += jaxpr_matmul_flops(sub)
    return total


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

        def run():  # the params' host-to-device copies finish after load_keras returns
            model = load_keras(path)
            _block(model.params)
            return model

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
                    peak_device_bytes=device_peak_bytes,
                    program_memory=lambda: program_memory(compiled))

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

    if opts.get("precision") == "bfloat16":
        def check():  # the opt-in's accuracy on the same inputs (after the first call's timing)
            ref = {k: v for k, v in opts.items() if k != "precision"}
            # "top1": the float32 prediction for both (a near-tie can flip in bfloat16, and a
            # map of another class is not a precision error)
            t = jnp.argmax(model(x), -1)[:, None] if targets is None else targets
            return pearson_per_map(fn(model, x, t, **opts), fn(model, x, t, **ref))
    else:
        check = None

    return Case(run, items=x.shape[0] * _n_targets(spec), info=info, check=check,
                peak_device_bytes=device_peak_bytes,
                program_memory=lambda: last_plan_memory(name, model, x))


def pearson_per_map(maps, ref) -> dict:
    """Pearson correlation of each map with its float32 counterpart (maps are ``(N, H, W)``
    or ``(N, T, H, W)``): mean and minimum over the maps where both vary. A map constant in
    both (a Grad-CAM that the ReLU zeroes everywhere: 64 of the 640 VGG16 maps of the first
    GPU run, in every precision) has no correlation and is counted apart; the first GPU run
    scored such pairs 0 and reported a mean of 0.90 for maps that agreed to r >= 0.9999.
    A map constant in one precision only scores 0."""
    import numpy as np

    a = np.asarray(maps, np.float64).reshape(-1, *np.shape(maps)[-2:])
    b = np.asarray(ref, np.float64).reshape(a.shape)
    a = a.reshape(len(a), -1) - a.reshape(len(a), -1).mean(1, keepdims=True)
    b = b.reshape(len(b), -1) - b.reshape(len(b), -1).mean(1, keepdims=True)
    va, vb = (a * a).sum(1), (b * b).sum(1)
    both = (va == 0) & (vb == 0)
    r = np.where((va > 0) & (vb > 0), (a * b).sum(1) / np.sqrt(np.maximum(va * vb, 1e-300)),
                 0.0)[~both]
    out = {"maps": int(len(a)), "maps_constant_in_both": int(both.sum()),
           "maps_constant_in_one": int(((va == 0) != (vb == 0)).sum())}
    if len(r):
        out.update(pearson_vs_float32_mean=float(r.mean()), pearson_vs_float32_min=float(r.min()))
    return out


# ----------------------------------------------------------------------------- naive JAX
def naive_saliency(model):
    """The naive version's saliency program ``f(params, x, cts) -> (N, T, H, W)``: one
    forward pass, its pullback vmapped over the ``(T, N, K)`` cotangents ``cts``, the max of
    ``|.|`` over the channels."""
    import jax
    import jax.numpy as jnp

    def f(params, x, cts):
        _, pullback = jax.vjp(lambda a: model.apply(params, a), x)
        g = jax.vmap(lambda c: pullback(c)[0])(cts)            # (T, N, H, W, C)
        return jnp.moveaxis(jnp.max(jnp.abs(g), axis=-1), 0, 1)  # (N, T, H, W)
    return f


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
        f = naive_saliency(model)
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
                compile_s=compile_s, info=info, peak_device_bytes=device_peak_bytes,
                program_memory=lambda: program_memory(compiled))
