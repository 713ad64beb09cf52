"""One-off: the memory XLA plans for XRAI's compiled selection, and its time, ``"fast"`` on
pixels (every pixel an atom: what ``xrai_regions(algorithm="fast")`` compiled before it ran on atoms, and
what it still compiles for masks traced by the caller's ``jax.jit``) against ``"fast"`` and
``"full"`` on atoms (``jaxsal._src.xrai._partition``'s ``(N, M, A)`` members). Compiled
only (``memory_analysis`` of ``_regions.lower(...).compile()``), nothing run, one target:

- the masks of ``benchmarks/oneoff/xrai_regions.py`` (8 maps of 224x224, 329 regions each),
  their atom count ``A`` from ``_partition`` itself;
- 8 x 986 regions (as many as PAIR's six Felzenszwalb scales gave a textured 224x224 image),
  ``A = 8192`` assumed (the power of two ``_partition`` rounds a few thousand atoms up to).

Then the time of ``"fast"`` on the first masks, random normal maps: on pixels (``_regions``
called as ``xrai_regions`` called it before, the NumPy masks passed whole) and on atoms
(``xrai_regions`` now, ``_partition`` on the host included), alternately after a compiling
call each, medians of 7 rounds, and that both give the same maps.

    python -m benchmarks.oneoff.xrai_fast_atoms
"""

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxsal
from jaxsal._src import xrai

N, H, W = 8, 224, 224
P = H * W


def report(label, m, a):
    maps = jax.ShapeDtypeStruct((N, 1, P), jnp.float32)
    for name, alg, ids, members, sizes in (
            ("fast on pixels", "fast", None, (N, m, P), (N, P)),
            ("fast on atoms", "fast", (N, P), (N, m, a), (N, a)),
            ("full on atoms", "full", (N, P), (N, m, a), (N, a))):
        lowered = xrai._regions.lower(
            maps, None if ids is None else jax.ShapeDtypeStruct(ids, jnp.int32),
            jax.ShapeDtypeStruct(members, jnp.bool_), jax.ShapeDtypeStruct(sizes, jnp.float32),
            50, P, alg)
        ma = lowered.compile().memory_analysis()
        print(f"{label}, {name}: arguments {ma.argument_size_in_bytes / 2**20:.0f} MiB, "
              f"temporaries {ma.temp_size_in_bytes / 2**20:.0f} MiB", flush=True)


def main():
    rng = np.random.default_rng(0)  # the masks of benchmarks/oneoff/xrai_regions.py
    yy, xx = np.mgrid[:H, :W]
    labels = np.stack([np.stack([((yy + rng.integers(0, 30)) // c) * 100
                                 + (xx + rng.integers(0, 30)) // c
                                 for c in (20, 28, 40, 56, 75, 112)]) for _ in range(N)])
    masks = jaxsal.segment_masks(labels)
    _, members, _ = xrai._partition(masks.reshape(N, masks.shape[1], P))
    print("device", jax.devices()[0], "jax", jax.__version__, flush=True)
    report(f"{N} x {masks.shape[1]} masks (A = {members.shape[-1]})", masks.shape[1],
           members.shape[-1])
    report(f"{N} x 986 masks (A = 8192)", 986, 8192)

    attr = jnp.asarray(rng.normal(size=(N, H, W)).astype(np.float32))
    flat = masks.reshape(N, masks.shape[1], P)

    def on_pixels():
        return xrai._regions(attr.reshape(N, 1, P), None, flat, jnp.ones((N, P), jnp.float32),
                             50, P, "fast").reshape(N, H, W)

    def on_atoms():
        return jaxsal.xrai_regions(attr, masks, algorithm="fast")

    old, new = np.asarray(on_pixels()), np.asarray(on_atoms())
    print(f"largest difference {np.abs(old - new).max():.2e} of largest value "
          f"{np.abs(old).max():.2e}", flush=True)
    times = {"on pixels": [], "on atoms": []}
    for _ in range(7):
        for name, fn in (("on pixels", on_pixels), ("on atoms", on_atoms)):
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - t0)
    for name, ts in times.items():
        print(f"fast {name}: median {statistics.median(ts):.3f} s (min {min(ts):.3f}, "
              f"max {max(ts):.3f}) for {N} maps of {masks.shape[1]} masks", flush=True)


if __name__ == "__main__":
    main()
