"""One-off (issue 6): what float32 rate this CPU attains at all, to set the convolutions'
GFLOP/s against.

The VM names its CPU only "AMD EPYC" (no clock, no model), so there is no datasheet peak to
quote as for the GPUs. Instead: the best of large float32 matrix products, the kernel with
the highest arithmetic intensity there is, compiled by XLA:CPU (YNNPACK dots, with jaxsal's
options and with XLA's defaults) and by NumPy's BLAS, square and at the MNIST model's
``conv2d_2`` GEMM shape (im2col: ``(36864, 288) @ (288, 64)``), medians of 10 calls after
2 warm-ups, in one process: XLA's two programs interleaved, then NumPy's calls.

    python -m benchmarks.oneoff.cpu_ceiling
"""

import statistics

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.oneoff.gpu_chunks import interleaved_ms
from jaxsal._src.base import compiler_options

SHAPES = {"square 2048": ((2048, 2048), (2048, 2048)),
          "square 4096": ((4096, 4096), (4096, 4096)),
          "conv2d_2 as im2col": ((36864, 288), (288, 64))}


def main():
    rng = np.random.default_rng(0)
    print(f"device {jax.devices()[0].device_kind}, jax {jax.__version__}, numpy "
          f"{np.__version__}; median ms (GFLOP/s), 10 calls", flush=True)
    for name, (sa, sb) in SHAPES.items():
        a = rng.normal(size=sa).astype(np.float32)
        b = rng.normal(size=sb).astype(np.float32)
        gflop = 2 * sa[0] * sa[1] * sb[1] / 1e9
        ja, jb = jnp.asarray(a), jnp.asarray(b)
        calls = {f"XLA, {label}": (lambda f=jax.jit(jnp.dot, compiler_options=opts): f(ja, jb))
                 for label, opts in (("jaxsal's options", compiler_options()),
                                     ("XLA's defaults", None))}
        times = interleaved_ms(calls, warmup=2, rounds=10)
        # NumPy's calls on their own: interleaved with XLA's, in one try, XLA's dots ran
        # well below these rates (NumPy's fresh outputs in between): not a ceiling
        times.update(interleaved_ms({"NumPy BLAS": lambda: np.dot(a, b)}, warmup=2,
                                    rounds=10))
        for label, ts in times.items():
            med = statistics.median(ts)
            print(f"  {name} ({gflop:.2f} GFLOP), {label}: {med:.2f} ms "
                  f"({gflop / med * 1e3:.0f} GFLOP/s; best call {gflop / min(ts) * 1e3:.0f})",
                  flush=True)


if __name__ == "__main__":
    main()
