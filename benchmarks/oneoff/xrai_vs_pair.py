"""One-off: XRAI's region selection, jaxsal against Google PAIR saliency, on the same masks.

Four random 224x224 RGB images segmented by PAIR's own ``_get_segments_felzenszwalb`` (six
Felzenszwalb scales, each label dilated by ``disk(5)``), smooth random attributions maxed over
channels; two cases: smooth images (Gaussian blobs: few regions) and textured ones (the blobs
plus normal noise of standard deviation 0.2: about 160 regions per image, nearer a
photograph's). Timed: PAIR's ``XRAI._xrai`` (``"full"``) and
``_xrai_fast`` over the four, one after another, against ``jaxsal.xrai_regions`` on the four
at once (the masks padded to one count); medians of 3 (PAIR) and 5 (jaxsal) runs after one
more (jaxsal's compiling); the maps are checked equal first. Needs a venv with saliency==0.2.1,
scikit-image and jaxsal (``pip install -e .``):

    python -m benchmarks.oneoff.xrai_vs_pair
"""

import jax
import numpy as np
import saliency.core.xrai as pair_xrai
import skimage

import jaxsal
from benchmarks.oneoff.xrai_regions import median_s

N, H, W = 4, 224, 224


def blobs(rng, count):
    yy, xx = np.mgrid[:H, :W]
    out = np.zeros((H, W, 3))
    for _ in range(count):
        cy, cx, s = rng.uniform(0, H), rng.uniform(0, W), rng.uniform(10, 60)
        out += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))[..., None] \
            * rng.normal(size=3)
    return out


def main():
    print("device", jax.devices()[0], "jax", jax.__version__, "scikit-image",
          skimage.__version__, f"{N} images {H}x{W}", flush=True)
    for case, noise in (("smooth", 0.0), ("textured", 0.2)):
        rng = np.random.default_rng(0)
        images = [blobs(rng, 12) for _ in range(N)]
        images = [(im - im.min()) / (im.max() - im.min()) + noise * rng.normal(size=im.shape)
                  for im in images]
        attr = np.stack([blobs(rng, 30).astype(np.float32).max(-1) for _ in range(N)])
        masks = [pair_xrai._get_segments_felzenszwalb(im) for im in images]
        padded = np.zeros((N, max(map(len, masks)), H, W), bool)
        for i, m in enumerate(masks):
            padded[i, :len(m)] = np.stack(m)
        print(f"{case}: regions per image {[len(m) for m in masks]}", flush=True)
        for algorithm in ("full", "fast"):
            pair_fn = pair_xrai.XRAI._xrai if algorithm == "full" else pair_xrai.XRAI._xrai_fast

            def pair():
                return np.stack([pair_fn(attr=attr[i], segs=masks[i])[0] for i in range(N)])

            def ours():
                return jaxsal.xrai_regions(attr, padded, algorithm=algorithm)

            ref, got = pair(), np.asarray(ours())
            err = np.abs(got - ref).max() / np.abs(ref).max()
            assert err < 1e-5, err
            p, j = median_s(pair, 3), median_s(ours, 5)
            print(f"  {algorithm}: PAIR {p[0]:.3f} s (min {p[1]:.3f}, max {p[2]:.3f}), jaxsal "
                  f"{j[0]:.3f} s (min {j[1]:.3f}, max {j[2]:.3f}) for {N} maps: "
                  f"{p[0] / j[0]:.1f}x; maps within {err:.1e} of PAIR's largest value",
                  flush=True)


if __name__ == "__main__":
    main()
