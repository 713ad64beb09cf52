"""One-off A/B (issue 6): the chunk sizes of targets, balanced (before) or with the least
padding (``jaxsal._src.base.least_padding``).

``lax.map`` runs equal chunks, so 10 targets in chunks of at most 3 were 4 chunks of 3: 12
backward passes for 10 maps. On the H200 the default budget planned VGG16's 10-class saliency
(224x224, batch 64) exactly so (``results/accelerator_plan.json``), and that call took 143.5 ms
against 120.1 ms in one chunk (``results/oneoff/gpu_chunks.txt``): the 12/10 of the padding.
Here: wall-time medians of ``jaxsal.saliency`` over 10 classes with ``chunk_size=c`` under the
old rule (``balanced``: ``ceil(10 / ceil(10 / c))``) and the new (``least``), alternating,
each after its own compile and warm-up, plus one chunk (``chunk_size=10``) as the floor.

    python -m benchmarks.oneoff.chunk_padding            # CPU: MNIST b64, VGG16 112 b2
    python -m benchmarks.oneoff.chunk_padding vgg16_224  # GPU: VGG16 224x224 b64
"""

import math
import os
import sys
from unittest import mock

os.environ.setdefault("KERAS_BACKEND", "numpy")

import jax  # noqa: E402
import numpy as np  # noqa: E402

import jaxsal  # noqa: E402
from benchmarks import models  # noqa: E402
from benchmarks.oneoff.gpu_chunks import median_ms  # noqa: E402
from jaxsal._src import base  # noqa: E402


def balanced(total, c):
    """The rule before: the fewest chunks, balanced."""
    total, c = max(int(total), 1), max(1, min(int(c), max(int(total), 1)))
    return math.ceil(total / math.ceil(total / c))


CASES = {  # name: (model spec, batch, chunk sizes to compare, repetitions)
    "mnist": ({"name": "mnist"}, 64, (3, 4), 15),
    "vgg16_112": ({"name": "vgg16", "size": 112}, 2, (3, 4), 3),
    "vgg16_224": ({"name": "vgg16", "size": 224}, 64, (3, 4), 5),
}


def main(argv):
    names = argv or ["mnist", "vgg16_112"]
    print("device", jax.devices()[0], "jax", jax.__version__, flush=True)
    classes = list(range(10))
    for name in names:
        spec, n, sizes, reps = CASES[name]
        m = models.logits_model(models.build(spec))
        shape = (n,) + models.input_shape(spec)
        x = np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32)

        def run(c, rule):
            with mock.patch.object(base, "least_padding", rule):
                chunk = base.chunk_for(10, 1, c, None)
                t = median_ms(lambda: jaxsal.saliency(m, x, classes, chunk_size=c), reps)
            return chunk, t

        for r in range(2):
            for c in sizes:
                for label, rule in (("balanced", balanced), ("least", base.least_padding)):
                    chunk, t = run(c, rule)
                    print(f"{name} b{n} 10 classes chunk_size={c} {label}: chunks of {chunk} "
                          f"({math.ceil(10 / chunk) * chunk} passes): {t:.1f} ms "
                          f"(round {r + 1})", flush=True)
            chunk, t = run(10, base.least_padding)
            print(f"{name} b{n} 10 classes one chunk: {t:.1f} ms (round {r + 1})", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
