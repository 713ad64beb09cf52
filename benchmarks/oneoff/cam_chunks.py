"""One-off A/B (issue 6): how many Grad-CAM targets share one chunk. Before, a chunk of
targets was charged for whole backward passes (the forward pass's VJP residuals per target),
though a gradient CAM pulls back only through the layers after its layer; now for that
pullback (``jaxsal._src.base.layer_pullback_bytes``). Wall-time medians of
``jaxsal.gradcam`` with the chunk size the old charge gives (passed as ``chunk_size``) and
with the new default, alternating, each after its own compile and warm-up.

    python -m benchmarks.oneoff.cam_chunks            # CPU: VGG16 112x112, 2 and 8 images
    python -m benchmarks.oneoff.cam_chunks vgg16_224  # GPU: VGG16 224x224, 64 images
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "numpy")

import numpy as np  # noqa: E402
import jax  # noqa: E402

import jaxsal  # noqa: E402
from benchmarks import models  # noqa: E402
from benchmarks.oneoff.gpu_chunks import median_ms  # noqa: E402
from jaxsal._src import cam  # noqa: E402

CASES = {  # name: (model spec, [(batch, targets, repetitions)])
    "vgg16_112": ({"name": "vgg16", "size": 112}, [(2, 10, 9), (8, 10, 7)]),
    "vgg16_224": ({"name": "vgg16", "size": 224}, [(64, 10, 9), (64, 100, 5)]),
}


def main(argv):
    names = argv or ["vgg16_112"]
    print("device", jax.devices()[0], "jax", jax.__version__, flush=True)
    for name in names:
        spec, runs = CASES[name]
        m = models.logits_model(models.build(spec))
        for n, t, reps in runs:
            x = np.random.default_rng(0).uniform(
                0, 1, (n,) + models.input_shape(spec)).astype(np.float32)
            ts = list(range(t))
            old = cam._prepare_cam(m, x, ts, "block5_conv3", None, None, None, False).chunk
            new = cam._prepare_cam(m, x, ts, "block5_conv3", None, None, None, False,
                                   layer_charge=True).chunk
            for r in range(2):
                for label, kw in ((f"old charge: chunks of {old}", {"chunk_size": old}),
                                  (f"new charge: chunks of {new}", {})):
                    ms = median_ms(lambda kw=kw: jaxsal.gradcam(m, x, ts, layer="block5_conv3",
                                                                **kw), reps)
                    print(f"{name} b{n} gradcam block5_conv3 {t} classes, {label}: {ms:.1f} ms "
                          f"(round {r + 1})", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
