"""One-off (benchmarks/README.md, item 12): the max-pool forward of the importer's
``_blocked_max`` as a max and an argmax (two reductions over the pooled activations, as
committed: ``a``) against one variadic reduce giving both (``b``), on the MNIST model, 64
images; wall-time medians (ms) of jaxsal's top-1 (30 calls) and 10-class (10 calls) saliency.
One process per variant, run alternately:

    for r in 1 2 3; do for v in a b; do python benchmarks/oneoff/maxpool_variadic.py $v; done; done

Each run saves its 10-class maps to ``$OUT`` (default /tmp) as ``a.npy``/``b.npy`` for a
comparison. The runs of 2026-12-03 are in ``benchmarks/results/oneoff/maxpool_variadic.txt``.

Written against the pooling module before commit 0e79fd9 (``_windows``, the argmax and
``_blocked_max_bwd`` of then); run it in a checkout of 0e79fd9's parent.
"""
import sys, time
import numpy as np, jax, jax.numpy as jnp
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
OUT = os.environ.get("OUT", "/tmp")
from model_import._layers import pooling as P

def fwd_variadic(x, pool):
    w = P._windows(x, pool)
    idx = jax.lax.broadcasted_iota(jnp.int32, w.shape, w.ndim - 1)
    def comp(a, b):
        (va, ia), (vb, ib) = a, b
        take_a = (va > vb) | ((va == vb) & (ia < ib)) | jnp.isnan(va)
        return jnp.where(take_a, va, vb), jnp.where(take_a, ia, ib)
    m, first = jax.lax.reduce((w, idx), (jnp.array(-jnp.inf, w.dtype), jnp.array(0, jnp.int32)),
                              comp, (w.ndim - 1,))
    return m, (first, x.shape)

if sys.argv[1] == "b":
    P._blocked_max.defvjp(fwd_variadic, P._blocked_max_bwd)
import jaxsal, model_import
m = model_import.load_keras(ROOT / 'tests' / 'fixtures' / 'mnist_cnn_tfkeras2.h5')
x = np.random.default_rng(0).random((64, 28, 28, 1), dtype=np.float32)
np.save(f"{OUT}/{sys.argv[1]}.npy", np.asarray(jaxsal.saliency(m, x, list(range(10)))))
fwd = jax.jit(m.apply)
def timed(f, n):
    f(); f()
    ts = []
    for _ in range(n):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return 1e3 * np.median(ts)
t1 = timed(lambda: jax.block_until_ready(jaxsal.saliency(m, x)), 30)
t10 = timed(lambda: jax.block_until_ready(jaxsal.saliency(m, x, list(range(10)))), 10)
print(sys.argv[1], "top1 %.1f  10cls %.1f" % (t1, t10), flush=True)
