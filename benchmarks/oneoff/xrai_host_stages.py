"""One-off: where the time of XRAI's default regions and selection goes, stage by stage, for 8
maps of 224x224.

The eight 224x224 RGB images of ``benchmarks.oneoff.felzenszwalb_speed`` (segmented as
``jaxsal.xrai_labels`` does: scaled to [-1, 1], PAIR's six scales, sigma 0.8, min_size 150;
the stages below are its private steps, and their labels are checked equal to
``xrai_labels``'), then ``segment_masks`` (dilation 5) and ``xrai_regions`` (``"full"``,
random normal attributions) split into its host part (``_partition``: the atoms and their
regions) and its compiled selection (after a compiling call). Each stage's time summed over
the eight images, medians (min, max) of 3 rounds:

    python -m benchmarks.oneoff.xrai_host_stages
"""

import statistics
import time

import jax
import numpy as np

import jaxsal
from benchmarks.oneoff.felzenszwalb_speed import SCALES, images
from jaxsal._src import segmentation as seg
from jaxsal._src import xrai as xr

N, H, W = 8, 224, 224


def one_round(x, attr, labels_want):
    t = {}

    def timed(name, fn):
        t0 = time.perf_counter()
        out = fn()
        t[name] = t.get(name, 0.0) + time.perf_counter() - t0
        return out

    labels = []
    for img in x:
        img = timed("scale to [-1, 1]",  # (as xrai_labels writes it)
                    lambda: (img - img.min()) / (img.max() - img.min()) * 2.0 + -1.0)
        smooth = timed("smoothing (NumPy)", lambda: seg._smooth(img, 0.8))
        ia, ib, cost = timed("edges and their sort (NumPy)", lambda: seg._edges(smooth))
        a, b, c = timed("edges to lists", lambda: (ia.tolist(), ib.tolist(), cost.tolist()))
        per_scale = []
        for s in SCALES:
            first = timed("first pass, union-find loop (Python)",
                          lambda: seg._segment(a, b, c, H * W, s / 255.0, 1, (ia, ib)))
            per_scale.append(timed("min_size pass (Python loop on the small segments' edges)",
                                   lambda: seg._merge_small(first, ia, ib, 150)))
        labels.append(np.stack(per_scale).reshape(len(SCALES), H, W).astype(np.int32))
    assert np.array_equal(np.stack(labels), labels_want)
    masks = timed("segment_masks (NumPy, label by label)",
                  lambda: jaxsal.segment_masks(labels_want))
    flat = masks.reshape(*masks.shape[:2], -1)
    ids, members, sizes = timed("xrai_regions: _partition, atoms (NumPy)",
                                lambda: xr._partition(flat))
    timed("xrai_regions: selection (compiled)", lambda: jax.block_until_ready(xr._regions(
        attr.reshape(N, 1, H * W), ids, members, sizes, 50, xr._area_limit(1.0, H * W),
        "full")))
    return t, masks.shape, members.shape


def main():
    x = images()
    attr = jax.numpy.asarray(np.random.default_rng(0).normal(size=(N, H, W)), np.float32)
    labels_want = jaxsal.xrai_labels(x)
    one_round(x, attr, labels_want)  # (compiles the selection)
    rounds = []
    for _ in range(3):
        t, mshape, ashape = one_round(x, attr, labels_want)
        rounds.append(t)
    print(f"device {jax.devices()[0]} jax {jax.__version__}; {N} images of {H}x{W}x3, masks "
          f"{mshape}, members (N, M, atoms rounded) {ashape}", flush=True)
    total = [sum(t.values()) for t in rounds]
    for name in rounds[0]:
        ts = [t[name] for t in rounds]
        print(f"{name}: median {statistics.median(ts):.3f} s (min {min(ts):.3f}, max "
              f"{max(ts):.3f})", flush=True)
    print(f"total: median {statistics.median(total):.3f} s (min {min(total):.3f}, max "
          f"{max(total):.3f})", flush=True)


if __name__ == "__main__":
    main()
