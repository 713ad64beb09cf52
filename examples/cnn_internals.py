"""Example 5: inside the MNIST CNN: architecture, filters, feature maps, class images, maps.

On ``mnist_cnn_tfkeras2.h5`` (conv 32 -> conv 64 -> max-pool -> dense 128 -> dense 10):

* ``internals_architecture.png``: the layer graph with output shapes (matplotlib only);
* ``internals_filters.png``: the 32 first-layer 3x3 filters, one diverging scale;
* ``internals_feature_maps_<layer>.png``: the feature maps of one digit for each conv layer;
* ``internals_class_images.png``: activation maximization of the ten classes (logits head,
  ``input_range=(0, 1)``) in one ``jaxsal.maximize`` call, titled with the logit reached and
  the class the model gives the image;
* ``internals_occlusion.png``: occlusion sensitivity (a gray square slid over the image; how
  much the class probability drops) next to Grad-CAM and saliency, for a few digits and
  their predicted class.

Run::

    python examples/cnn_internals.py --fast --out out/internals   # 3 digits, 64 steps
    python examples/cnn_internals.py --out out/internals          # 6 digits, 256 steps
"""

from __future__ import annotations

import time

import _common
import numpy as np

import jaxsal
from jaxsal import plot
from model_import import load_keras

CONV_LAYERS = ("conv2d_1", "conv2d_2")


def main() -> None:
    args = _common.parse_args(__doc__.splitlines()[0], "out/cnn_internals")
    model = load_keras(_common.fixture("mnist_cnn_tfkeras2.h5"))
    x_all, y_all = _common.mnist_heldout()
    n_digits = 3 if args.fast else 6
    steps = 64 if args.fast else 256

    _common.save(plot.architecture(model, title="mnist_cnn_tfkeras2.h5 (Keras 2 Sequential)"),
                 args.out, "internals_architecture.png")
    _common.save(plot.filters(model, "conv2d_1", ncols=8), args.out, "internals_filters.png")

    digit = x_all[7:8]  # the first held-out 7
    for layer in CONV_LAYERS:
        fig = plot.feature_maps(model, digit, layer, max_maps=32, ncols=8,
                                title=f"{layer}: feature maps of a held-out 7 (first 32 "
                                      "channels)")
        _common.save(fig, args.out, f"internals_feature_maps_{layer}.png")

    t0 = time.perf_counter()
    res = jaxsal.maximize(model, list(range(10)), steps=steps, input_range=(0.0, 1.0), key=0)
    images = np.asarray(res.images)
    print(f"activation maximization, 10 classes x {steps} steps: "
          f"{time.perf_counter() - t0:.1f} s")
    logits = np.asarray(model.with_head("logits")(images))
    pred = logits.argmax(-1)
    titles = [f"class {c}: logit {logits[c, c]:.1f}\nclassified as {pred[c]}" for c in range(10)]
    print("classified as:", pred.tolist(), " mean target logit:",
          f"{float(np.mean(np.diag(logits))):.2f}")
    fig = plot.image_grid(images, titles=titles, ncols=5, value_range=(0.0, 1.0),
                          panel_size=1.5,
                          title=f"activation maximization, logits head, {steps} steps, "
                                "input_range (0, 1)")
    _common.save(fig, args.out, "internals_class_images.png")

    # occlusion vs Grad-CAM vs saliency for a few digits, for their predicted class
    x = x_all[:n_digits]
    sm = model.with_head("softmax")
    pred = np.asarray(sm(x)).argmax(-1)
    # targets=None: each input's predicted class
    occ = _common.squeeze_channels(
        jaxsal.occlusion(sm, x, patch=6, stride=2, fill=0.5))
    cam = _common.squeeze_channels(
        jaxsal.gradcam(model.with_head("logits"), x, layer="conv2d_2"))
    sal = _common.squeeze_channels(jaxsal.saliency(model.with_head("logits"), x))
    cols = [occ, cam, sal]
    maps = np.stack([jaxsal.normalize(np.asarray(c)) for c in cols], axis=1)
    fig = plot.grid(np.asarray(maps), inputs=x,
                    row_titles=[f"label {y}\npredicted {p}" for y, p in zip(y_all, pred)],
                    col_titles=["occlusion\n(drop of p, 6x6 gray patch)",
                                "Grad-CAM\n(conv2d_2, logits)", "saliency\n(logits)"],
                    scale="shared", vmin=0.0, vmax=1.0, cmap="jet", panel_size=1.6,
                    colorbar_label="each map min-max normalized",
                    title="where the evidence for the predicted class is")
    _common.save(fig, args.out, "internals_occlusion.png")


if __name__ == "__main__":
    main()
