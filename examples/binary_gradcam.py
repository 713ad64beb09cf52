"""Example 3: Grad-CAM of a one-unit sigmoid classifier, for both classes.

``binary_cnn_keras3.keras`` (input layer ``model_input``, 32x32x3) has one sigmoid output
``p`` = P(class 1); class 1 means "the digit is 5 or more" and class 0 "the digit is 4 or
less". The "dog vs cat" question about such a model: Grad-CAM for class 1 is Grad-CAM of
``p``, but what is Grad-CAM for class 0? Explaining ``p`` again shows class 1's evidence
whatever you call it. Class 0 is explained through the ``sigmoid_complement`` head, whose
output is ``1 - p``: its gradient is minus the gradient of ``p``, so the channel weights of
Grad-CAM change sign, and after the ReLU the map keeps exactly the regions that push the
prediction *towards class 0*, which the class-1 map discards.

``binary_gradcam.png``: for images of both classes, the input, Grad-CAM for class 1
(``sigmoid`` head) and Grad-CAM for class 0 (``sigmoid_complement`` head) at the last conv
layer ``block2_conv2``, overlaid on the input. Each row has its own colour scale, shared by
its two maps: the sigmoid's slope ``p (1 - p)`` multiplies both classes' gradients of an
image alike, so the two maps of a row compare directly, while a confident image (p near 0
or 1) has much smaller maps than a borderline one.

Run::

    python examples/binary_gradcam.py --fast --out out/binary   # 2 images per class
    python examples/binary_gradcam.py --out out/binary          # 4 images per class
"""

from __future__ import annotations

import _common
import numpy as np

import jaxsal
from jaxsal import plot
from model_import import load_keras

LAYER = "block2_conv2"


def binary_images(x28: np.ndarray) -> np.ndarray:
    """MNIST digits (N, 28, 28, 1) in [0, 1] -> the binary model's (N, 32, 32, 3) inputs."""
    x = np.pad(x28, ((0, 0), (2, 2), (2, 2), (0, 0)))
    return np.repeat(x, 3, axis=-1)


def main() -> None:
    args = _common.parse_args(__doc__.splitlines()[0], "out/binary_gradcam")
    model = load_keras(_common.fixture("binary_cnn_keras3.keras"))
    x_all, digits = _common.mnist_heldout()
    k = 2 if args.fast else 4
    # held-out digits 0..9 interleaved: take k of class 0 (digit < 5) and k of class 1
    cls = (digits >= 5).astype(int)
    pick = np.concatenate([np.flatnonzero(cls == 0)[:k], np.flatnonzero(cls == 1)[:k]])
    x = binary_images(x_all[pick])
    p = np.asarray(model.with_head("sigmoid")(x))[:, 0]

    cam1 = jaxsal.gradcam(model.with_head("sigmoid"), x, targets=1, layer=LAYER)
    cam0 = jaxsal.gradcam(model.with_head("sigmoid_complement"), x, targets=0, layer=LAYER)
    maps = np.stack([_common.squeeze_channels(cam1), _common.squeeze_channels(cam0)], axis=1)
    for j, n in enumerate(pick):
        print(f"digit {digits[n]} (class {cls[n]}): p(class 1)={p[j]:.3f}  "
              f"Grad-CAM sum class 1={maps[j, 0].sum():.4g}  class 0={maps[j, 1].sum():.4g}")

    row_titles = [f"digit {digits[n]}, class {cls[n]}\np(class 1) = {pj:.3f}"
                  for n, pj in zip(pick, p)]
    fig = plot.grid(maps, images=x[:, None], inputs=x, alpha=0.55, row_titles=row_titles,
                    col_titles=["Grad-CAM class 1 (digit >= 5)\nsigmoid head",
                                "Grad-CAM class 0 (digit < 5)\nsigmoid_complement head"],
                    scale="row", cmap="jet", colorbar_label="Grad-CAM", panel_size=1.9,
                    title=f"binary_cnn_keras3.keras, Grad-CAM at {LAYER}")
    _common.save(fig, args.out, "binary_gradcam.png")


if __name__ == "__main__":
    main()
