"""One-off: the cost of XRAI's default regions (``jaxsal.felzenszwalb`` and what
``jaxsal.xrai(..., segments=None)`` adds to a call) on 224x224 RGB images.

Eight synthetic 224x224 RGB images (stripes, a gradient, a checkerboard and smooth blobs of
random parameters with noise, NumPy ``default_rng(0)``), each in [0, 1]. Timed, as medians of
5 calls after a first one (min and max beside):

- ``felzenszwalb``: one image at PAIR's six scales (sigma 0.8, min_size 150), and the eight;
- ``xrai_labels``: the eight as PAIR segments them (normalized to [-1, 1], six scales);
- ``xrai_segments``: the same plus ``segment_masks`` (dilation 5), what ``xrai`` adds.

``--skimage``: the same ``felzenszwalb`` calls with scikit-image's instead (in a venv that
has it; jaxsal is not imported). ``--jax``: the first pass of the union-find (not the
min_size pass, float32 thresholds) written as a jitted ``lax.fori_loop`` over the sorted
edges for one scale, against jaxsal's Python loop for one scale's whole segmentation: the
alternative the host loop was chosen over. (The same loop ``vmap``-ed over the six scales
did not finish in 15 minutes: see the results file.)

    python -m benchmarks.oneoff.felzenszwalb_speed [--skimage | --jax]
"""

import statistics
import sys
import time

import numpy as np

N, H, W = 8, 224, 224
SCALES = (50, 100, 150, 250, 500, 1200)


def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:H, :W]
    out = []
    for _ in range(N):
        a, b, c = rng.uniform(4, 16, 3)
        stripes = np.sin(xx / a) * np.cos(yy / b)
        checker = ((yy // int(4 * c) + xx // int(4 * c)) % 2).astype(float)
        blobs = np.zeros((H, W))
        for _ in range(5):
            cy, cx, s = rng.uniform(0, H), rng.uniform(0, W), rng.uniform(15, 50)
            blobs += rng.uniform(-1, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        im = np.stack([stripes + blobs, yy / H + 0.5 * checker, blobs + 0.3 * checker], -1)
        im = im + rng.normal(0, 0.05, im.shape)
        out.append((im - im.min()) / (im.max() - im.min()))
    return np.stack(out)


def timed(fn, reps=5):
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), max(times)


def show(label, fn, reps=5):
    med, lo, hi = timed(fn, reps)
    print(f"{label}: median {med:.3f} s (min {lo:.3f}, max {hi:.3f})", flush=True)


def with_skimage(x):
    import skimage
    from skimage.segmentation import felzenszwalb

    print("scikit-image", skimage.__version__, f"{N} images of {H}x{W}x3", flush=True)

    def segment(ims):
        return [[felzenszwalb(im, scale=s, sigma=0.8, min_size=150) for s in SCALES]
                for im in ims]

    show("skimage felzenszwalb, 1 image x 6 scales", lambda: segment(x[:1]))
    show(f"skimage felzenszwalb, {N} images x 6 scales", lambda: segment(x))


def with_jax_loop(x):
    import jax
    import jax.numpy as jnp

    from jaxsal._src.segmentation import _edges, _segment, _smooth

    a, b, c = _edges(_smooth(x[0] * 2 - 1, 0.8))
    n = H * W

    def first_pass(k, a, b, c):
        def root(parent, v):
            def body(s):
                p, v = s
                up = p[p[v]]
                return p.at[v].set(up), up
            return jax.lax.while_loop(lambda s: s[0][s[1]] != s[1], body, (parent, v))

        def step(i, s):
            parent, size, inner = s
            parent, rp = root(parent, a[i])
            parent, rq = root(parent, b[i])
            t = jnp.minimum(inner[rp] + k / size[rp], inner[rq] + k / size[rq])
            join = (rp != rq) & (c[i] < t)
            r = jnp.minimum(rp, rq)
            parent = parent.at[jnp.where(join, jnp.maximum(rp, rq), n)].set(r, mode="drop")
            size = size.at[jnp.where(join, r, n)].set(size[rp] + size[rq], mode="drop")
            inner = inner.at[jnp.where(join, r, n)].set(c[i], mode="drop")
            return parent, size, inner

        init = (jnp.arange(n), jnp.ones(n, jnp.float32), jnp.zeros(n, jnp.float32))
        return jax.lax.fori_loop(0, len(c), step, init)[0]

    ks = jnp.asarray(np.array(SCALES) / 255.0, jnp.float32)
    args = (jnp.asarray(a, jnp.int32), jnp.asarray(b, jnp.int32), jnp.asarray(c, jnp.float32))
    one = jax.jit(first_pass)
    print("device", jax.devices()[0], "jax", jax.__version__, f"{len(c)} edges", flush=True)
    show("jax fori_loop first pass, 1 scale", lambda: jax.block_until_ready(one(ks[0], *args)),
         reps=2)
    al, bl, cl = a.tolist(), b.tolist(), c.tolist()
    show("jaxsal Python loop, both passes, 1 scale",
         lambda: _segment(al, bl, cl, n, SCALES[0] / 255.0, 150, (a, b)))


def main():
    x = images()
    if "--skimage" in sys.argv:
        return with_skimage(x)
    if "--jax" in sys.argv:
        return with_jax_loop(x)
    import jaxsal

    labels = jaxsal.xrai_labels(x)
    masks = jaxsal.xrai_segments(x)
    print(f"{N} images of {H}x{W}x3; segments per image and scale (first image): "
          f"{[int(v.max()) + 1 for v in labels[0]]}; masks {masks.shape}", flush=True)
    show("felzenszwalb, 1 image x 6 scales",
         lambda: jaxsal.felzenszwalb(x[:1], scale=SCALES, sigma=0.8, min_size=150))
    show(f"felzenszwalb, {N} images x 6 scales",
         lambda: jaxsal.felzenszwalb(x, scale=SCALES, sigma=0.8, min_size=150))
    show(f"xrai_labels, {N} images", lambda: jaxsal.xrai_labels(x))
    show(f"xrai_segments (with segment_masks), {N} images", lambda: jaxsal.xrai_segments(x))
    show(f"segment_masks of their labels, {N} images", lambda: jaxsal.segment_masks(labels))


if __name__ == "__main__":
    main()
