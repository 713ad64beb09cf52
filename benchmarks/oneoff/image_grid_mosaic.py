"""One-off: ``jaxsal.plot.image_grid`` of 1000 images (ImageNet's classes), drawn as panels
(``mosaic=False``) and as one mosaic picture (``mosaic=True``, the default above 150 images
without titles): seconds to build the figure and to save it as a PNG, one run each, in this
order (matplotlib's Agg backend; random images of 32x32x3, seeded; their noise makes the PNG
encoding a large part of the save). Prints one JSON line.

    python -m benchmarks.oneoff.image_grid_mosaic
"""

import io
import json
import time

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxsal import plot  # noqa: E402


def main() -> None:
    images = np.random.default_rng(0).random((1000, 32, 32, 3), dtype=np.float32)
    out = {"images": list(images.shape)}
    for mosaic in (False, True):
        t0 = time.perf_counter()
        fig = plot.image_grid(images, value_range=(0, 1), mosaic=mosaic)
        t1 = time.perf_counter()
        fig.savefig(io.BytesIO(), format="png")
        t2 = time.perf_counter()
        plt.close(fig)
        out["mosaic" if mosaic else "panels"] = {
            "build_s": round(t1 - t0, 2), "save_s": round(t2 - t1, 2)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
