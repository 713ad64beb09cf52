"""One-off A/B (the scale issue): ``jaxsal.maximize`` over 8 units of VGG16 224x224's
``block5_conv3`` with every unit in one chunk (``unit_chunk=8``, what the default did
before the units were chunked under the memory budget) and with the default chunking (2
chunks of 4 on CPU), alternating, each after its own compile. Wall time and the peak RSS
over each kind of call (``/proc/self/clear_refs`` resets the peak).

    python -m benchmarks.oneoff.maximize_chunks
"""

import os
import resource
import time

os.environ.setdefault("KERAS_BACKEND", "numpy")

import jax  # noqa: E402

import jaxsal  # noqa: E402
from benchmarks import models  # noqa: E402


def main():
    print("device", jax.devices()[0], "jax", jax.__version__, flush=True)
    m = models.logits_model(models.build({"name": "vgg16", "size": 224}))
    opts = dict(layer="block5_conv3", steps=2, key=0)
    kinds = {"one chunk of 8 (unit_chunk=8)": dict(unit_chunk=8), "default chunks": {}}
    for name, kw in kinds.items():  # compile
        jax.block_until_ready(tuple(jaxsal.maximize(m, list(range(8)), **opts, **kw)))
    for r in range(2):
        for name, kw in kinds.items():
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            t = time.perf_counter()
            jax.block_until_ready(tuple(jaxsal.maximize(m, list(range(8)), **opts, **kw)))
            dt = time.perf_counter() - t
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            print(f"vgg16_224 maximize block5_conv3 8 units x 2 steps, {name}: {dt:.2f} s, "
                  f"peak RSS {peak:.2f} GiB (round {r + 1})", flush=True)


if __name__ == "__main__":
    main()
