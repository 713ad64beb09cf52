"""Activation-maximization throughput: image-steps per second of ``jaxsal.maximize``.

One workload = T units (classes, or channels of ``layer``) x ``steps`` optimizer steps with
the default options (Adam, sigmoid pixels, TV + L1 + blur every 8 steps, jitter + scale +
rotate), all units in one compiled, vmapped program. The program is compiled ahead of time
(``jit(...).lower(...).compile()``, timed apart), run once more as warm-up, then timed
``reps`` times with ``block_until_ready``; the median is reported.

Two entry points:

* ``case(spec) -> Case`` for the harness (:mod:`benchmarks.run`, workloads of
  :mod:`benchmarks.suites` with ``method == "maximize"``);
* ``run(suite, reps=5, warmup=1) -> dict``, standalone::

    python -m benchmarks.bench_maximize --suite cpu --out /tmp/maximize_cpu.json

CPU suite: the MNIST fixture model and VGG16 (``keras.applications.VGG16(weights=None)``,
built by :mod:`benchmarks.models`) at a 32x32 input, 10 classes x 256 steps each: at 224x224
one repetition is about 150 TFLOP, hours on 2 CPU cores, so the CPU suite records the smaller
input in the workload's id and ``note``. ``cpu-full`` adds VGG16 at 112x112; the GPU suite
uses 224x224.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

from benchmarks import models  # noqa: E402
from benchmarks._measure import Case, measure  # noqa: E402

RESULTS = os.path.join(models.ROOT, "benchmarks", "results")


def _w(id, model, targets, steps, layer=None, **kw):
    d = {"id": id, "model": model, "method": "maximize", "batch": None, "targets": targets,
         "steps": steps, "sides": ["jaxsal"]}
    if layer is not None:
        d["layer"] = layer
    d.update(kw)
    return d


MNIST = {"name": "mnist"}
SUITES = {
    "smoke": [_w("mnist/maximize 3cls x16 steps", MNIST, 3, 16)],
    "cpu": [
        _w("mnist/maximize 10cls x256 steps", MNIST, 10, 256),
        _w("vgg16-32/maximize 10cls x256 steps", {"name": "vgg16", "size": 32}, 10, 256,
           note="VGG16 (weights=None, 1000 classes) at a 32x32 input instead of 224x224 "
                "(about 150 TFLOP per repetition there, hours on 2 CPU cores)"),
    ],
    "cpu-full": [
        _w("mnist/maximize 10cls x256 steps", MNIST, 10, 256),
        _w("vgg16-32/maximize 10cls x256 steps", {"name": "vgg16", "size": 32}, 10, 256),
        _w("vgg16-112/maximize 10cls x256 steps", {"name": "vgg16", "size": 112}, 10, 256),
    ],
    "gpu": [
        _w("mnist/maximize 10cls x256 steps", MNIST, 10, 256),
        _w("vgg16/maximize 10cls x256 steps", {"name": "vgg16", "size": 224}, 10, 256),
        _w("vgg16/maximize block3_conv3 64 filters x256 steps", {"name": "vgg16", "size": 224},
           64, 256, layer="block3_conv3"),
    ],
}


def _block(tree):
    import jax

    return jax.block_until_ready(tree)


def presets() -> dict:
    """Named option sets of ``jaxsal.maximize`` a workload spec can ask for (``"preset"``).

    ``"adam-roll"``: the objective of the GPU suite's PyTorch peer
    (``benchmarks.side_torch._maximize``), for a comparison of the same work: the unit's
    logit (or channel mean) alone, no regularizer, the same random shift of the whole batch
    each step by up to 4 pixels with wrap-around (``torch.roll``), Adam at 0.05 on the pixel
    values themselves, kept in the input range (clipped each step; the loop clamps once at
    the end, an element-wise difference). jaxsal's defaults do more per step (jitter by 16
    pixels, random scale and rotation, total variation, L1, a blur every 8 steps, sigmoid
    pixels)."""
    import jaxsal

    return {"adam-roll": dict(parameterization=jaxsal.pixels(squash="clip"), regularizers=(),
                              transforms=jaxsal.jitter(4, mode="wrap"), learning_rate=0.05)}


def case(spec: dict, **options) -> Case:
    """A ready-to-time :class:`Case` for one workload ``spec`` (see the module docstring).

    ``options`` are passed to ``jaxsal.maximize`` on top of the spec's ``"preset"``
    (:func:`presets`; default options otherwise)."""
    import numpy as np

    from benchmarks import side_jaxsal
    from jaxsal._src.maximize import maximize_program
    from model_import import load_keras

    preset = spec.get("preset")
    if preset is not None:
        known = presets()
        if preset not in known:
            raise ValueError(f"preset: expected one of {sorted(known)}, got {preset!r}")
        options = {**known[preset], **options}

    path = models.build(spec["model"]) if spec["model"]["name"] != "mnist" else \
        models.model_path(spec["model"])
    model = load_keras(path)
    t = spec["targets"]
    units = [int(u) for u in t] if isinstance(t, (list, tuple)) else list(range(int(t)))
    steps = int(spec["steps"])
    layer = spec.get("layer")
    shape = models.input_shape(spec["model"])
    run_fn, args = maximize_program(model, units, layer=layer, steps=steps, input_range=(0.0, 1.0),
                            key=0, image_shape=shape, **options)
    t0 = time.perf_counter()
    compiled = run_fn.lower(*args).compile()
    compile_s = time.perf_counter() - t0

    def run():
        return _block(compiled(*args))

    def check():
        images, scores, _ = run()
        out = {"mean_score": float(np.mean(scores)),
               "images_in_range": bool(np.min(images) >= 0.0 and np.max(images) <= 1.0)}
        if layer is None:
            logits = np.asarray(model.with_head("logits")(images))
            out["classified_as_target"] = int(np.sum(logits.argmax(-1) == np.asarray(units)))
        return out

    info = {"input_shape": list(shape), "units": len(units), "steps": steps, "layer": layer,
            # the nominal FLOPs of a layer's channels: the forward pass up to that layer
            # (benchmarks.run._summarize), not the whole model's
            "fwd_flops_per_image_to_layer": None if layer is None else
            side_jaxsal.forward_flops_per_image(model, tuple(shape), layer),
            "options": sorted(options) or "defaults", "preset": preset,
            "compiled_program": "one jit: lax.scan over steps, vmap over units"}
    return Case(run, items=len(units) * steps, unit="image-steps/s", compile_s=compile_s,
                check=check, info=info)


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for p in ("jax", "jaxlib", "optax", "flax", "numpy"):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            pass
    return out


def run(suite: str = "cpu", *, reps: int = 5, warmup: int = 1, only: str | None = None,
        **options) -> dict:
    """Time every workload of ``suite`` (``"smoke"``, ``"cpu"`` or ``"gpu"``); a JSON-ready dict.

    Args:
      suite: which workload list.
      reps: timed repetitions per workload (the median is the figure; at least 5 advised).
      warmup: untimed calls after compilation.
      only: run only workloads whose id contains this string.
      options: passed to ``jaxsal.maximize``.
    """
    import jax

    if suite not in SUITES:
        raise ValueError(f"suite: expected one of {sorted(SUITES)}, got {suite!r}")
    results = []
    for spec in SUITES[suite]:
        if only and only not in spec["id"]:
            continue
        c = case(spec, **options)
        r = measure(c, reps=reps, warmup=warmup)
        r.update(id=spec["id"], spec=spec, status="ok")
        results.append(r)
    d = jax.devices()[0]
    return {
        "benchmark": "jaxsal.maximize throughput (image-steps/s)",
        "suite": suite,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": f"{d.platform}: {getattr(d, 'device_kind', str(d))}",
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "python": sys.version.split()[0]},
        "versions": _versions(),
        "results": results,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="cpu", choices=sorted(SUITES))
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--only", default=None, help="run only workloads whose id contains this")
    p.add_argument("--out", default=None,
                   help="JSON file (default benchmarks/results/maximize_<suite>.json)")
    a = p.parse_args(argv)
    res = run(a.suite, reps=a.reps, warmup=a.warmup, only=a.only)
    out = a.out or os.path.join(RESULTS, f"maximize_{a.suite}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    for r in res["results"]:
        print(f"{r['id']}: {r['throughput']:.1f} {r['unit']} (median {r['median_s']:.3f} s, "
              f"compile {r['compile_s']:.1f} s, check {r.get('check')})")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
