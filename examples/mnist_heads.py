"""Example 1: one digit, ten classes, two heads, two gradients, one figure.

The first held-out "7" of ``mnist_5k.npz`` on ``mnist_cnn_tfkeras2.h5`` (softmax output):
saliency (|d score / d pixel|) for all ten classes in one call, through the **softmax** head
(the saved model) and the **logits** head (softmax swapped for linear, as keras-vis's
``utils.apply_modifications`` / tf-keras-vis's ``ReplaceToLinear`` do), with plain gradients
and with guided backpropagation. Each map's sum, max and min is printed.

``mnist_heads.png`` puts the input next to the 4 x 10 maps with **one colour scale per head**
(shared by both methods and all ten classes of that head), so the classes can be compared.
``mnist_heads_per_map.png`` shows the same maps each stretched to its own range, the way
keras-vis normalized every map: all maps then look equally strong, whatever their size.

Why is the contrast so hard to see with the linear head? The gradient of one logit does not
depend on the other classes, so all ten logit maps are of the same size (class 7's map is the
largest by less than 2x) and on a shared scale they look alike; the softmax head couples the
classes and saturates (p = 1.000 here), so its maps are about 10^4 times smaller but the
predicted class and its close rivals stand out from the others.

Run::

    python examples/mnist_heads.py --fast --out out/heads   # seconds; --fast changes nothing
                                                           # here (one image), kept for CI
"""

from __future__ import annotations

import time

import _common
import numpy as np

import jaxsal
from jaxsal import plot
from model_import import load_keras

HEADS = ("softmax", "logits")
METHODS = (("gradient", jaxsal.saliency), ("guided", jaxsal.guided_backprop))


def main() -> None:
    args = _common.parse_args(__doc__.splitlines()[0], "out/mnist_heads")
    model = load_keras(_common.fixture("mnist_cnn_tfkeras2.h5"))
    x_all, y_all = _common.mnist_heldout()
    i = int(np.argmax(y_all == 7))  # the first held-out 7
    x = x_all[i:i + 1]
    probs = np.asarray(model.with_head("softmax")(x))[0]
    logits = np.asarray(model.with_head("logits")(x))[0]
    print(f"held-out sample {i} (label 7): predicted {probs.argmax()} with p={probs.max():.4f}")

    classes = list(range(10))
    rows, row_titles, groups = [], [], []
    t0 = time.perf_counter()
    for head in HEADS:
        hm = model.with_head(head)
        for name, method in METHODS:
            maps = _common.squeeze_channels(method(hm, x, targets=classes))[0]  # (10, 28, 28)
            rows.append(maps)
            row_titles.append(f"{head} head\n{name}")
            groups.append(head)
            for c in classes:
                a = maps[c]
                print(f"head={head} method={name} class={c} sum={a.sum():.6e} "
                      f"max={a.max():.6e} min={a.min():.6e}")
    print(f"4 x 10 maps in {time.perf_counter() - t0:.2f} s (including compilation)")
    maps = np.stack(rows)  # (4, 10, 28, 28)
    col_titles = [f"class {c}\np={probs[c]:.3f}\nlogit={logits[c]:.1f}" for c in classes]
    fig = plot.grid(maps, inputs=x[0], row_titles=row_titles, col_titles=col_titles,
                    scale="row", row_groups=groups, cmap="jet",
                    colorbar_label="|d score / d pixel|",
                    title="mnist_cnn_tfkeras2.h5, first held-out 7: saliency of every class")
    _common.save(fig, args.out, "mnist_heads.png")
    fig = plot.grid(maps, inputs=x[0], row_titles=row_titles, col_titles=col_titles,
                    scale="panel", cmap="jet",
                    title="the same maps, each stretched to its own range (keras-vis style)")
    _common.save(fig, args.out, "mnist_heads_per_map.png")


if __name__ == "__main__":
    main()
