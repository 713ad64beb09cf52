"""One-off (benchmarks/README.md, bfloat16 paragraph): CPU time of the MNIST model's
10-class saliency, float32 and ``precision="bfloat16"``, for the jaxsal found on
``PYTHONPATH`` (an old checkout against the current one); in-process medians of 15 calls.

    PYTHONPATH=/path/to/old/checkout python benchmarks/oneoff/bf16_rounding_ab.py old
    PYTHONPATH=. python benchmarks/oneoff/bf16_rounding_ab.py new

The runs of 2026-12-02 (old = 1b1357a, new = bdf59f2) are in
``benchmarks/results/oneoff/bf16_rounding_ab.txt``.
"""

import sys
import time
from pathlib import Path

import jax
import numpy as np

import jaxsal
import model_import

MODEL = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "mnist_cnn_tfkeras2.h5"

if __name__ == "__main__":
    m = model_import.load_keras(MODEL)
    x = np.random.default_rng(0).random((64, 28, 28, 1), dtype=np.float32)
    for prec in (None, "bfloat16"):
        def f():
            return jax.block_until_ready(jaxsal.saliency(m, x, list(range(10)), precision=prec))
        f()
        ts = []
        for _ in range(15):
            t = time.process_time()
            f()
            ts.append(time.process_time() - t)
        print(sys.argv[1], prec, "cpu ms median %.1f" % (1e3 * np.median(ts)))
