"""One-off CPU A/B (issue 6): jaxsal's saliency on this machine's CPU with the importer's max
pooling and ReLU before and after commit 0e79fd9 (made for the GPU, where the old pooling's
argmax took 13 of 30 ms of VGG16's top-1 gradient: ``results/oneoff/gpu_profile_1.txt``).

Variants, one process each, run alternately:
  ``before``: max pooling as before 0e79fd9 (windows transposed last, max and argmax there,
  the backward a one-hot times the cotangent transposed back), ``jax.nn.relu``;
  ``pool``: the pooling of 0e79fd9 (first maximum found in place), ``jax.nn.relu``;
  ``now``: the pooling and the ReLU of 0e79fd9 (derivative read off the output).
Wall-time medians (ms) of ``jaxsal.saliency`` top-1 (predicted class) and 10 classes: the
MNIST fixture model on 64 images (30 / 10 calls) and VGG16 (weights=None) at 112x112 on 8
images (5 / 3 calls), XLA's default flags. After ``python -m benchmarks.models vgg16_112``:

    for r in 1 2; do for v in before pool now; do
      python -m benchmarks.oneoff.pool_relu_ab_cpu $v; done; done

(The runs in ``results/oneoff/pool_relu_ab_cpu.txt`` were made with the old module's window
code copied here verbatim and a timing loop of its own; this version builds the same windows
from the module's view and uses ``gpu_chunks.median_ms``: the same programs.)
"""

import functools
import math
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "numpy")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxsal  # noqa: E402
import model_import  # noqa: E402
from benchmarks import models  # noqa: E402
from benchmarks.oneoff.gpu_chunks import median_ms  # noqa: E402
from model_import._layers import pooling  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ---------------------------------- the max pooling before 0e79fd9 (the same computation)
def _windows(x, pool):
    """``(N, *out, C, prod(pool))``: the windows moved last, as the old module had them."""
    v = pooling._window_view(x, pool)
    r = len(pool)
    v = jnp.moveaxis(v, pooling._window_axes(pool), range(-r, 0))
    return v.reshape(*v.shape[:-r], math.prod(pool))


def _unwindows(w, pool, full_shape):
    n, *out, c, _ = w.shape
    r = len(pool)
    w = w.reshape(n, *out, c, *pool)
    perm = [0]
    for i in range(r):
        perm += [1 + i, 2 + r + i]
    perm.append(1 + r)
    x = w.transpose(perm).reshape(n, *[o * p for o, p in zip(out, pool)], c)
    pads = [(0, 0)] + [(0, s - o * p) for s, o, p in zip(full_shape[1:-1], out, pool)] + [(0, 0)]
    return jnp.pad(x, pads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def before_max(x, pool):
    return jnp.max(_windows(x, pool), axis=-1)


def _fwd(x, pool):
    w = _windows(x, pool)
    return jnp.max(w, axis=-1), (jnp.argmax(w, axis=-1), x.shape)


def _bwd(pool, res, g):
    first, shape = res
    gw = jax.nn.one_hot(first, math.prod(pool), dtype=g.dtype) * g[..., None]
    return (_unwindows(gw, pool, shape),)


before_max.defvjp(_fwd, _bwd)


def main(variant):
    if variant == "before":
        pooling._blocked_max = before_max
    relu = (lambda m: m.with_relu(jax.nn.relu, name="standard")) if variant in (
        "before", "pool") else (lambda m: m)
    mnist = relu(model_import.load_keras(
        os.path.join(ROOT, "tests", "fixtures", "mnist_cnn_tfkeras2.h5")))
    x = np.random.default_rng(0).random((64, 28, 28, 1), dtype=np.float32)
    vgg = relu(models.logits_model(models.model_path({"name": "vgg16", "size": 112})))
    xv = np.random.default_rng(0).random((8, 112, 112, 3), dtype=np.float32)
    ten = list(range(10))
    out = [median_ms(lambda: jaxsal.saliency(mnist, x), 30),
           median_ms(lambda: jaxsal.saliency(mnist, x, ten), 10),
           median_ms(lambda: jaxsal.saliency(vgg, xv), 5),
           median_ms(lambda: jaxsal.saliency(vgg, xv, ten), 3)]
    print(f"{variant:6s} mnist top1 {out[0]:.1f} 10cls {out[1]:.1f} | vgg16-112 b8 top1 "
          f"{out[2]:.1f} 10cls {out[3]:.1f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
