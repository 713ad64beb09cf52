"""Example 7: 1-D signals and token sequences, on models whose right answer is known.

Two tiny Keras 3 models trained on synthetic data with a planted truth
(``examples/make_sequence_models.py``, run once by hand; files in ``examples/data/``):

* ``signal_cnn.keras``, a ``Conv1D`` classifier of signals ``(128, 1)``: noise plus one
  pattern of 16 samples at a random position whose shape is the class (0: bump, 1: sine
  burst, 2: square dip); test accuracy 1.000 (200 held-out signals).
* ``token_lstm.keras``, ``Embedding(30, mask_zero=True) -> Bidirectional(LSTM) -> Dense(2)``
  on padded sentences of random filler tokens ``w5 .. w29`` with exactly one keyword at a
  random position (GOOD, GREAT -> class 1; BAD, AWFUL -> class 0); test accuracy 1.000 (200
  held-out sentences).

Both are explained through the ``logits`` head. For the signals, Grad-CAM at ``conv2`` and
saliency for all three classes (``(N, 3, 128)``); for the sentences, integrated gradients at
the ``embedding`` layer for both classes (``(N, 2, 16)``, one value per token; baseline: all
padding). Printed: the fraction of held-out signals whose Grad-CAM (true class) peaks inside
the planted pattern, the fraction of sentences whose most positively attributed token (for
the predicted class) is the keyword, and the mean |attribution| on padding positions, which
is exactly 0 since the mask comes from the input.

``sequences_signal_class{0,1,2}.png``: one held-out signal of each class over its Grad-CAM and
saliency maps for the three classes (each method scaled to [0, 1] over its three maps, so
the classes compare). ``sequences_tokens_class{0,1}.png``: one sentence of each class, its
tokens coloured by their integrated gradients for class 0 and class 1 (one signed scale).

Run::

    python examples/sequences.py --fast --out out/sequences   # scores on 100 of each
    python examples/sequences.py --out out/sequences          # all 200 of each
"""

from __future__ import annotations

import _common
import numpy as np

import jaxsal
from jaxsal import plot
from model_import import load_keras

DATA = _common.ROOT / "examples" / "data"
CAM_LAYER = "conv2"
PATTERN_LEN = 16
SHAPES = ["bump", "sine burst", "square dip"]
KEYWORDS = {1: "GOOD", 2: "GREAT", 3: "BAD", 4: "AWFUL"}
CLASS_NAMES = ["class 0 (BAD, AWFUL)", "class 1 (GOOD, GREAT)"]


def data_file(name: str) -> str:
    path = DATA / name
    if not path.is_file():
        raise SystemExit(f"missing {path}: run the examples from a checkout of the repository")
    return str(path)


def words_of(ids) -> list[str]:
    return [KEYWORDS.get(int(t), "pad" if t == 0 else f"w{int(t)}") for t in ids]


def signals(d, n: int, out: str) -> None:
    m = load_keras(data_file("signal_cnn.keras")).with_head("logits")
    x, y, pos = d["signal_x"][:n], d["signal_y"][:n], d["signal_pos"][:n]
    pred = np.asarray(m(x)).argmax(-1)
    cam = np.asarray(jaxsal.gradcam(m, x, targets=range(3), layer=CAM_LAYER))   # (n, 3, 128)
    sal = np.asarray(jaxsal.saliency(m, x, targets=range(3)))                  # (n, 3, 128)
    rows = np.arange(n)

    def inside(maps):  # where each map of the true class peaks, inside the pattern or not
        peak = maps[rows, y].argmax(-1)
        hit = (peak >= pos) & (peak < pos + PATTERN_LEN)
        return f"{hit.mean():.3f} ({hit.sum()}/{n} peak inside the planted pattern, true class)"

    print(f"signals: accuracy {np.mean(pred == y):.3f} on {n} held-out signals")
    print(f"signal localization gradcam: {inside(cam)}")
    print(f"signal localization saliency: {inside(sal)}")

    for c in range(3):
        i = int(np.flatnonzero(y == c)[0])
        maps = np.concatenate([jaxsal.normalize(cam[i], axis=(0, 1)),
                               jaxsal.normalize(sal[i], axis=(0, 1))])
        titles = [f"{meth}\nclass {k} ({SHAPES[k]})"
                  for meth in ("Grad-CAM", "saliency") for k in range(3)]
        fig = plot.signal(x[i], maps, row_titles=titles, colorbar_label="scaled per method",
                          panel_size=(5.5, 0.9),
                          title=f"signal_cnn.keras, held-out signal of class {c}: {SHAPES[c]} "
                                f"planted at {pos[i]}..{pos[i] + PATTERN_LEN - 1} (dashed)")
        for ax in plot.panel_axes(fig):  # mark the planted pattern
            for edge in (pos[i] - 0.5, pos[i] + PATTERN_LEN - 0.5):
                ax.axvline(edge, color="tab:blue", linestyle="--", linewidth=1)
        _common.save(fig, out, f"sequences_signal_class{c}.png", dpi=80)


def sentences(d, n: int, out: str) -> None:
    m = load_keras(data_file("token_lstm.keras")).with_head("logits")
    x, y = d["tokens_x"][:n], d["tokens_y"][:n]
    pos, length = d["tokens_pos"][:n], d["tokens_len"][:n]
    pred = np.asarray(m(x)).argmax(-1)
    ig = np.asarray(jaxsal.integrated_gradients(m, x, targets=[0, 1], layer="embedding",
                                                baseline=np.zeros_like(x)))    # (n, 2, 16)
    rows = np.arange(n)
    top = ig[rows, pred].argmax(-1)
    pad = np.arange(x.shape[1])[None, :] >= length[:, None]
    print(f"tokens: accuracy {np.mean(pred == y):.3f} on {n} held-out sentences")
    print(f"token localization integrated_gradients: {np.mean(top == pos):.3f} "
          f"({np.sum(top == pos)}/{n} top token is the keyword, predicted class)")
    on_pad = np.abs(ig.transpose(1, 0, 2)[:, pad])  # (2, padded positions)
    print(f"mean |attribution| on padding positions: {on_pad.mean():.3g} "
          f"({int(pad.sum())} padded positions x 2 classes)")

    for c in range(2):
        # a sentence of class c long enough to wrap a little
        i = int(np.flatnonzero((y == c) & (length >= 12))[0])
        fig = plot.tokens(words_of(x[i]), ig[i], row_titles=CLASS_NAMES,
                          colorbar_label="integrated gradients",
                          title=f"token_lstm.keras, held-out sentence of class {c}: "
                                "integrated gradients at the embedding", width=7.5)
        _common.save(fig, out, f"sequences_tokens_class{c}.png", dpi=100)


def main() -> None:
    args = _common.parse_args(__doc__.splitlines()[0], "out/sequences")
    d = np.load(data_file("sequences_test.npz"))
    n = 100 if args.fast else len(d["signal_y"])
    signals(d, n, args.out)
    sentences(d, n, args.out)


if __name__ == "__main__":
    main()
