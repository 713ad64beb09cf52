"""One-off (issue 6): the memory of the GPU suite's VGG16 10-class programs against their
top-1 programs (target: at most 2x), from XLA's buffer assignment of each compiled program
(``compiled.memory_analysis()``: arguments + outputs + temporaries), under the chunk plan
jaxsal makes on an H200 (``jax.default_backend`` and the device memory limit mocked, as in
``benchmarks/plan_steps.py``), compiled by XLA:CPU here, nothing run.

The GPU suite's kept JAX worker could only bound jaxsal's peaks (``<=``); since this change
the suite records each program's own figure (``program_memory``) on the GPU too. XLA:CPU's
buffer assignment is not the GPU's, so the naive version is compiled the same way and
printed next to its peaks measured on the H200 (``results/gpu.json``, exact there: its own
process's first workloads), as a check of how far this CPU figure stands from a GPU's.

    python -m benchmarks.oneoff.memory_ratio_plan [H200|H100]
"""

import os
import sys
from unittest import mock

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("KERAS_BACKEND", "numpy")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jaxsal  # noqa: E402
from benchmarks import models, side_jaxsal  # noqa: E402
from benchmarks._measure import program_memory  # noqa: E402
from jaxsal._src import base  # noqa: E402

LIMITS = {"H200": 104e9, "H100": 60e9}  # bytes_limit: 75% of the card (plan_steps.LIMITS)
VGG = {"name": "vgg16", "size": 224}
N = 64
METHODS = [("saliency", {}), ("guided_backprop", {}),
           ("gradcam", {"layer": "block5_conv3", "upsample": True})]


def naive_program(model, t: int | None):
    """The suite's naive saliency (``side_jaxsal.naive_saliency``) lowered on shapes only."""
    cts = jax.ShapeDtypeStruct((t or 1, N, 1000), jnp.float32)
    x = jax.ShapeDtypeStruct((N, 224, 224, 3), jnp.float32)
    return jax.jit(side_jaxsal.naive_saliency(model)).lower(model.params, x, cts).compile()


def jaxsal_program(model, method: str, targets, opts: dict):
    """``jaxsal.<method>`` traced inside a jit with the parameters as arguments: the method's
    own program inlined (plus its small NaN/inf check of the input)."""
    fn = getattr(jaxsal, method)

    def f(params, x):
        return fn(model.with_params(params), x, targets, **opts)

    x = jax.ShapeDtypeStruct((N, 224, 224, 3), jnp.float32)
    return jax.jit(f).lower(model.params, x).compile()


def mib(b):
    return f"{b / 2**20:,.0f} MiB"


def main(argv):
    device = (argv or ["H200"])[0]
    model = models.logits_model(models.build(VGG))
    print(f"jax {jax.__version__}; VGG16 224x224, {N} images; XLA:CPU buffer assignment of "
          f"each program under the {device} plan (bytes_limit {LIMITS[device] / 1e9:.0f} GB)",
          flush=True)
    gpu_peaks = {"naive saliency top1": 8850, "naive saliency 10cls": 40683}  # MiB, gpu.json
    with mock.patch.object(jax, "default_backend", return_value="gpu"), \
            mock.patch.object(base, "_accelerator_budget", return_value=max(
                base.DEFAULT_MEMORY_BUDGET,
                int(LIMITS[device] * base.ACCELERATOR_BUDGET_FRACTION))):
        for t in (None, 10):
            name = f"naive saliency {'top1' if t is None else '10cls'}"
            m = program_memory(naive_program(model, t))
            print(f"{name}: {mib(m['bytes'])} (temporaries {mib(m['temp_bytes'])}); measured "
                  f"peak on the H200 {gpu_peaks[name]:,} MiB", flush=True)
        for method, opts in METHODS:
            got = {}
            for label, targets in (("top1", None), ("10cls", list(range(10)))):
                got[label] = m = program_memory(jaxsal_program(model, method, targets, opts))
                print(f"jaxsal {method} {label}: {mib(m['bytes'])} (arguments "
                      f"{mib(m['argument_bytes'])}, outputs {mib(m['output_bytes'])}, "
                      f"temporaries {mib(m['temp_bytes'])})", flush=True)
            print(f"jaxsal {method}: 10 classes / top-1 = "
                  f"{got['10cls']['bytes'] / got['top1']['bytes']:.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
