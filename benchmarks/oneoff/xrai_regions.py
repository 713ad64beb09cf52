"""One-off: the cost of XRAI's regions apart from its integrated gradients.

``jaxsal.segment_masks`` (label images to dilated masks, on the host) and
``jaxsal.xrai_regions`` (the compiled greedy selection, ``"full"`` and ``"fast"``) on 8 maps
of 224x224 with six grid segmentations per image (cells of 20 to 112 pixels, shifted at
random: about 330 regions per image, as many as PAIR's six Felzenszwalb scales give a
photograph), random normal attributions. Medians of 5 calls after a compiling one:

    python -m benchmarks.oneoff.xrai_regions
"""

import statistics
import time

import jax
import numpy as np

import jaxsal

N, H, W = 8, 224, 224


def median_s(fn, reps=5):
    jax.block_until_ready(fn())
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), max(times)


def main():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:H, :W]
    labels = np.stack([np.stack([((yy + rng.integers(0, 30)) // c) * 100
                                 + (xx + rng.integers(0, 30)) // c
                                 for c in (20, 28, 40, 56, 75, 112)]) for _ in range(N)])
    attr = jax.numpy.asarray(rng.normal(size=(N, H, W)).astype(np.float32))
    masks = jaxsal.segment_masks(labels)
    print("device", jax.devices()[0], "jax", jax.__version__, f"{N} maps of {H}x{W}, "
          f"masks {masks.shape}", flush=True)
    for label, fn in (("segment_masks (dilation 5)", lambda: jaxsal.segment_masks(labels)),
                      ("xrai_regions full", lambda: jaxsal.xrai_regions(attr, masks)),
                      ("xrai_regions fast", lambda: jaxsal.xrai_regions(attr, masks,
                                                                        algorithm="fast"))):
        med, lo, hi = median_s(fn)
        print(f"{label}: median {med:.3f} s (min {lo:.3f}, max {hi:.3f}) for {N} maps",
              flush=True)


if __name__ == "__main__":
    main()
