"""One-off (benchmarks/README.md, item 12): XLA:CPU's YNNPACK fusion types as jaxsal's
per-program option, on the MNIST model, 64 images; in-process CPU/wall medians (ms).

    for o in LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT LIBRARY_FUSION_TYPE_REDUCE ... ""; do
        python -m benchmarks.oneoff.ynn_fusion_types "$o"; done

Output lines: ``option  fwd cpu/wall  top1 cpu/wall  10cls cpu/wall  gradcam10 cpu/wall``;
the runs of 2026-12-02 are in ``benchmarks/results/oneoff/ynn_fusion_types.txt``.
"""

import sys
import time
import types
from pathlib import Path

import jax
import numpy as np

import jaxsal
import model_import
from jaxsal._src import base

MODEL = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "mnist_cnn_tfkeras2.h5"


def timed(f, n=20):
    f()
    f()
    ts = []
    for _ in range(n):
        t, w = time.process_time(), time.perf_counter()
        f()
        ts.append((time.process_time() - t, time.perf_counter() - w))
    a = np.array(ts)
    return 1e3 * np.median(a[:, 0]), 1e3 * np.median(a[:, 1])


def main(option: str) -> None:
    base.CPU_COMPILER_OPTIONS = types.MappingProxyType(
        {"xla_cpu_experimental_ynn_fusion_type": option})
    m = model_import.load_keras(MODEL)
    x = np.random.default_rng(0).random((64, 28, 28, 1), dtype=np.float32)
    fwd = jax.jit(m.apply, compiler_options=dict(base.CPU_COMPILER_OPTIONS))
    r = {"fwd": timed(lambda: jax.block_until_ready(fwd(m.params, x))),
         "top1": timed(lambda: jax.block_until_ready(jaxsal.saliency(m, x))),
         "10cls": timed(lambda: jax.block_until_ready(
             jaxsal.saliency(m, x, list(range(10)))), 8),
         "gradcam10": timed(lambda: jax.block_until_ready(
             jaxsal.gradcam(m, x, list(range(10)), layer="conv2d_2")), 10)}
    print(f"{option:60s}", "  ".join(f"{k} {c:.1f}/{w:.1f}" for k, (c, w) in r.items()),
          flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
