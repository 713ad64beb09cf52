"""How jaxsal splits the GPU suite's VGG16 workloads into sequential steps on an accelerator,
computed on any machine (shapes and XLA:CPU's buffer assignment only; nothing is timed).

``python -m benchmarks.plan_steps --out benchmarks/results/accelerator_plan.json``

For VGG16 at 224x224 (``benchmarks/models.py``) it records: the memory estimates per image
(the sum of the forward jaxpr's intermediates, the VJP residuals, and XLA:CPU's
``memory_analysis()`` of a naive saliency program at 8 images and 1 or 10 targets), then the
plan (sub-batch of inputs, targets per chunk, steps) of each GPU-suite input-gradient
workload under the accelerator rules for a given device memory limit, next to the plan the
former rules (a fixed 2 GiB budget, the jaxpr sum) gave. ``benchmarks/README.md`` item 11
cites the committed output.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
from unittest import mock

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from benchmarks import models  # noqa: E402

VGG = {"name": "vgg16", "size": 224}
LIMITS = {"H200 (bytes_limit 104 GB: 75% of 139 GB)": 104e9,
          "H100 80GB (bytes_limit 60 GB)": 60e9}
#: (workload, inputs, targets) of the GPU suite's gradient workloads
SALIENCY = [("saliency top1 b64", 64, 1), ("saliency 10cls b64", 64, 10),
            ("saliency 1000cls b8", 8, 1000)]


def _xla_bytes(model, n: int, t: int) -> int:
    """XLA:CPU's temp buffers for one VJP of ``n`` images pulled back for ``t`` classes."""
    import jax
    import jax.numpy as jnp

    def f(params, x):
        _, pull = jax.vjp(lambda a: model.apply(params, a), x)
        cts = jnp.broadcast_to(jax.nn.one_hot(jnp.arange(t), 1000)[:, None], (t, n, 1000))
        return jnp.max(jnp.abs(jax.vmap(lambda c: pull(c)[0])(cts)), -1)

    x = jax.ShapeDtypeStruct((n, 224, 224, 3), jnp.float32)
    return int(jax.jit(f).lower(model.params, x).compile().memory_analysis().temp_size_in_bytes)


def _plan(model, budget: int, per_image: int, n: int, t: int) -> dict:
    """The input-gradient methods' plan (``jaxsal._src.gradients``) for a forward charge of
    ``per_image`` bytes under ``budget``."""
    from jaxsal._src import base

    nb = base.batch_chunk(n, per_image, budget)
    chunk = base.chunk_for(t, per_image * nb, None, budget, rows=nb)
    return {"sub_batch": nb, "targets_per_chunk": chunk,
            "steps": math.ceil(n / nb) * math.ceil(t / chunk), "rows_per_step": nb * chunk,
            # equal chunks: the last one padded, its extra targets computed and thrown away
            "target_passes": math.ceil(t / chunk) * chunk}


def _sampling_plan(budget: int, per_image: int, n: int, samples: int) -> int:
    """Images per pass of SmoothGrad / integrated gradients (``jaxsal._src.smoothing``)."""
    from jaxsal._src import base

    nb = base.batch_chunk(n, per_image, budget)
    return nb * base.auto_batch(samples, per_image * nb, None, budget)


def main(argv=None) -> int:
    import jax
    import jax.numpy as jnp

    from jaxsal._src import base

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    model = models.logits_model(models.build(VGG))
    x1 = jnp.zeros((1, 224, 224, 3), jnp.float32)
    jaxpr_sum = base.forward_bytes(model, x1)  # the CPU (and former accelerator) charge
    residuals = base.residual_bytes(model, x1)
    xla_1, xla_10 = _xla_bytes(model, 8, 1), _xla_bytes(model, 8, 10)
    doc = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "jax": jax.__version__, "model": "VGG16 (weights=None) at 224x224",
           "per_image_bytes": {"forward_jaxpr_sum": jaxpr_sum, "vjp_residuals": residuals,
                               "xla_cpu_temp_8_images_1_target_per_image": xla_1 // 8,
                               "xla_cpu_temp_per_extra_row": (xla_10 - xla_1) // (8 * 9)},
           "plans": {}}
    with mock.patch.object(jax, "default_backend", return_value="gpu"):
        for name, limit in LIMITS.items():
            with mock.patch.object(base, "_accelerator_budget",
                                   return_value=max(base.DEFAULT_MEMORY_BUDGET,
                                                    int(limit * base.ACCELERATOR_BUDGET_FRACTION))):
                budget = base.default_budget()
                plans = {w: {"now": _plan(model, budget, residuals, n, t),
                             "before": _plan(model, base.DEFAULT_MEMORY_BUDGET, jaxpr_sum, n,
                                             t)} for w, n, t in SALIENCY}
                plans["smoothgrad / ig 50 b16: images per pass"] = {
                    "now": _sampling_plan(budget, residuals, 16, 50),
                    "before": _sampling_plan(base.DEFAULT_MEMORY_BUDGET, jaxpr_sum, 16, 50)}
                doc["plans"][name] = {"budget_bytes": budget, **plans}
    text = json.dumps(doc, indent=1)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
