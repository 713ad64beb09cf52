"""Example 6: a batch view: 64 held-out digits x 10 classes of saliency in one call.

``jaxsal.saliency(model, x, targets=range(10))`` with ``x`` of shape (64, 28, 28, 1) returns
(64, 10, 28, 28): one forward pass and ten backward passes per digit, in one compiled
program. The script prints how long the first call (with compilation) and a second call
(compiled program reused) took, and draws the 640 maps as one grid, the digit at the left of
each row, with one colour scale for all of them (logits head of ``mnist_cnn_tfkeras2.h5``).

Run::

    python examples/batch_saliency.py --fast --out out/batch   # 64 x 10 maps
    python examples/batch_saliency.py --out out/batch          # also times 1000 x 10 maps
"""

from __future__ import annotations

import time

import _common
import jax
import numpy as np

import jaxsal
from jaxsal import plot
from model_import import load_keras


def timed(fn):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t0


def main() -> None:
    args = _common.parse_args(__doc__.splitlines()[0], "out/batch_saliency")
    model = load_keras(_common.fixture("mnist_cnn_tfkeras2.h5")).with_head("logits")
    x_all, y_all = _common.mnist_heldout()
    x, y = x_all[:64], y_all[:64]
    classes = list(range(10))

    maps, t_first = timed(lambda: jaxsal.saliency(model, x, targets=classes))
    _, t_second = timed(lambda: jaxsal.saliency(model, x, targets=classes))
    maps = _common.squeeze_channels(maps)
    print(f"saliency of {x.shape[0]} digits x {len(classes)} classes -> {maps.shape}: "
          f"{t_first:.2f} s first call (with compilation), {t_second:.3f} s second call")
    if not args.fast:
        xb = x_all
        _, t1 = timed(lambda: jaxsal.saliency(model, xb, targets=classes))
        _, t2 = timed(lambda: jaxsal.saliency(model, xb, targets=classes))
        print(f"saliency of {xb.shape[0]} digits x {len(classes)} classes: {t1:.2f} s first "
              f"call, {t2:.3f} s second call ({xb.shape[0] * 10 / t2:.0f} maps/s)")

    pred = np.asarray(model(x)).argmax(-1)
    # one scale for all 640 maps; its top is the 99.5th percentile, so that a few extreme
    # pixels do not turn every other map dark blue (the colour bar's pointed end says so)
    vmax = float(np.percentile(maps, 99.5))
    fig = plot.grid(maps, inputs=x, row_titles=[f"{yy}" if p == yy else f"{yy} (pred {p})"
                                                for yy, p in zip(y, pred)],
                    col_titles=[str(c) for c in classes], input_title="digit",
                    cmap="jet", vmin=0.0, vmax=vmax, mosaic=True,
                    colorbar_label="|d logit / d pixel| (clipped at the 99.5th percentile)",
                    title=f"saliency, 64 held-out digits (rows) x 10 classes (columns), "
                          f"one call: {t_second:.2f} s")
    _common.save(fig, args.out, "batch_saliency.png", dpi=80)  # 640 maps: keep the file small


if __name__ == "__main__":
    main()
