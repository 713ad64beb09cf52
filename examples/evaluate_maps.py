"""Example 8: which map explains the model best? Deletion and insertion curves of six methods.

For held-out digits and their predicted class, six methods (saliency, gradient x input,
integrated gradients, SmoothGrad, Grad-CAM at ``conv2d_2``, occlusion) and a random map
order the 784 pixels; ``jaxsal.deletion`` blanks them in that order (most relevant first)
and ``jaxsal.insertion`` puts them back into a blurred copy of the digit, following the
predicted class's probability (RISE's causal metrics). A faithful map makes the deletion
curve fall fast (low area) and the insertion curve rise fast (high area). The script prints
both areas per method, averaged over the digits, and draws the mean curves and the maps of
the first digits (softmax head of ``mnist_cnn_tfkeras2.h5`` for the curves, logits for the
maps).

Run::

    python examples/evaluate_maps.py --fast --out out/evaluate   # 16 digits, 28 steps
    python examples/evaluate_maps.py --out out/evaluate          # 200 digits, 98 steps
"""

from __future__ import annotations

import _common
import jax
import numpy as np

import jaxsal
from jaxsal import plot
from model_import import load_keras


def main() -> None:
    args = _common.parse_args(__doc__.splitlines()[0], "out/evaluate_maps")
    model = load_keras(_common.fixture("mnist_cnn_tfkeras2.h5"))
    logits, probs = model.with_head("logits"), model.with_head("softmax")
    x_all, _ = _common.mnist_heldout()
    n, steps = (16, 28) if args.fast else (200, 98)
    x = x_all[:n]
    t = np.asarray(logits(x)).argmax(-1)  # the predicted class, explained and followed

    t = t[:, None]  # (N, 1) ids: maps (N, 1, 28, 28), curves (N, 1, steps + 1)
    maps = {
        "saliency": jaxsal.saliency(logits, x, t),
        "gradient x input": jaxsal.gradient_x_input(logits, x, t),
        "integrated gradients": jaxsal.integrated_gradients(logits, x, t, steps=32),
        "smoothgrad": jaxsal.smoothgrad(logits, x, t, key=0, n=16),
        "grad-cam": jaxsal.gradcam(logits, x, t, layer="conv2d_2"),
        "occlusion": jaxsal.occlusion(logits, x, t, patch=4, stride=2),
        "random": jax.random.uniform(jax.random.key(1), (n, 1, 28, 28)),
    }
    blurred = jax.vmap(lambda im: jaxsal.gaussian_blur(im, 3.0))(x)
    curves = {}
    print(f"{n} digits, predicted class, {steps} steps; deletion: lower is better, "
          "insertion: higher is better")
    for name, mp in maps.items():
        d = jaxsal.deletion(probs, x, mp, t, steps=steps)
        i = jaxsal.insertion(probs, x, mp, t, steps=steps, baseline=blurred)
        curves[name] = (d, i)
        print(f"{name:>22}: deletion auc {float(d.auc.mean()):.3f}  "
              f"insertion auc {float(i.auc.mean()):.3f}")

    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    for i, title in enumerate(("deletion (pixels set to 0)", "insertion (into a blurred copy)")):
        ax = fig.add_subplot(1, 2, i + 1)
        plot.curves({name: pair[i] for name, pair in curves.items()}, ax=ax, title=title,
                    ylabel="probability of the class")
        ax.set_ylim(0, 1.02)
    fig.tight_layout()
    _common.save(fig, args.out, "evaluate_maps_curves.png")

    show = 4
    names = [k for k in maps if k != "random"]
    # the positive evidence (what the curves delete first), each map scaled to [0, 1]
    grid = np.stack([np.asarray(jaxsal.normalize(np.maximum(maps[k][:show, 0], 0.0)))
                     for k in names], axis=1)  # (digits, methods, 28, 28)
    fig = plot.grid(grid, inputs=x[:show], col_titles=names, input_title="digit",
                    row_titles=[f"class {c}" for c in t[:show, 0]], cmap="jet")
    _common.save(fig, args.out, "evaluate_maps.png")


if __name__ == "__main__":
    main()
