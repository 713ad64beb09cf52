"""Train the two tiny sequence models of example 7 (``examples/sequences.py``) on synthetic
data whose right answer is known, and write them with a held-out test set to ``examples/data/``.

RUN ONCE BY HAND, NOT IN CI: it needs Keras 3 (on the JAX backend), which jaxsal itself never
needs, and its output is committed next to the example. To regenerate (under a minute on a
CPU; seeded, but Keras's training is not bit-for-bit reproducible across versions, so the
weights and the printed accuracies can change a little)::

    KERAS_BACKEND=jax JAX_PLATFORMS=cpu .venv/bin/python examples/make_sequence_models.py

It writes

* ``signal_cnn.keras``: a ``Conv1D`` classifier of 1-D signals ``(128, 1)``: Gaussian noise
  plus one planted pattern of ``PATTERN_LEN`` = 16 samples at a random position; the pattern's
  shape is the class (0: a smooth bump, 1: a sine burst of two periods, 2: a square dip).
  Softmax output.
* ``token_lstm.keras``: ``Embedding(30, 8, mask_zero=True) -> Bidirectional(LSTM(8)) ->
  Dense(2, softmax)`` on sentences of 4 to 16 filler tokens (ids 5..29), padded with id 0 at
  the end to 16; exactly one keyword at a random position decides the class (ids 1 "GOOD",
  2 "GREAT" -> class 1; 3 "BAD", 4 "AWFUL" -> class 0).
* ``sequences_test.npz``: held-out inputs made by the same generators with another seed:
  ``signal_x`` (N, 128, 1), ``signal_y``, ``signal_pos`` (the pattern occupies
  ``signal_pos .. signal_pos + 15``); ``tokens_x`` (N, 16) int32, ``tokens_y``,
  ``tokens_pos`` (the keyword's index) and ``tokens_len`` (tokens before the padding).

and prints each model's test accuracy.
"""

from __future__ import annotations

import os
import pathlib

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parent / "data"

SIGNAL_LEN, PATTERN_LEN, NOISE = 128, 16, 0.35
VOCAB, SEQ_LEN, MIN_LEN = 30, 16, 4
KEYWORDS = {1: "GOOD", 2: "GREAT", 3: "BAD", 4: "AWFUL"}
KEYWORD_CLASS = {1: 1, 2: 1, 3: 0, 4: 0}


def patterns() -> np.ndarray:
    """The three planted shapes, ``(3, PATTERN_LEN)``."""
    t = np.arange(PATTERN_LEN)
    bump = np.exp(-0.5 * ((t - (PATTERN_LEN - 1) / 2) / 2.5) ** 2) * 1.5
    sine = np.sin(2 * np.pi * 2 * t / PATTERN_LEN) * 1.2
    dip = -np.ones(PATTERN_LEN) * 1.2
    dip[:3] = dip[-3:] = 0.0
    return np.stack([bump, sine, dip]).astype(np.float32)


def make_signals(n: int, rng: np.random.Generator):
    y = rng.integers(0, 3, n)
    pos = rng.integers(0, SIGNAL_LEN - PATTERN_LEN + 1, n)
    x = rng.normal(0.0, NOISE, (n, SIGNAL_LEN)).astype(np.float32)
    p = patterns()
    for i in range(n):
        x[i, pos[i]:pos[i] + PATTERN_LEN] += p[y[i]]
    return x[..., None], y, pos


def make_sentences(n: int, rng: np.random.Generator):
    length = rng.integers(MIN_LEN, SEQ_LEN + 1, n)
    x = np.zeros((n, SEQ_LEN), np.int32)
    pos = np.zeros(n, np.int64)
    y = np.zeros(n, np.int64)
    for i in range(n):
        x[i, :length[i]] = rng.integers(len(KEYWORDS) + 1, VOCAB, length[i])
        pos[i] = rng.integers(0, length[i])
        kw = int(rng.integers(1, len(KEYWORDS) + 1))
        x[i, pos[i]] = kw
        y[i] = KEYWORD_CLASS[kw]
    return x, y, pos, length


def main() -> None:
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    test_rng = np.random.default_rng(1)
    OUT.mkdir(exist_ok=True)

    # a) signals
    xs, ys, _ = make_signals(6000, rng)
    sx, sy, spos = make_signals(200, test_rng)
    inp = keras.Input((SIGNAL_LEN, 1), name="signal")
    h = layers.Conv1D(8, 5, padding="same", activation="relu", name="conv1")(inp)
    h = layers.MaxPooling1D(2, name="pool1")(h)
    h = layers.Conv1D(16, 5, padding="same", activation="relu", name="conv2")(h)
    h = layers.GlobalMaxPooling1D(name="gmp")(h)
    out = layers.Dense(3, activation="softmax", name="probs")(h)
    cnn = keras.Model(inp, out, name="signal_cnn")
    cnn.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    cnn.fit(xs, ys, epochs=8, batch_size=64, verbose=0, validation_split=0.1)
    acc_signal = cnn.evaluate(sx, sy, verbose=0)[1]
    print(f"signal_cnn: test accuracy {acc_signal:.3f} on {len(sy)} signals")
    cnn.save(OUT / "signal_cnn.keras")

    # b) tokens
    xt, yt, _, _ = make_sentences(6000, rng)
    tx, ty, tpos, tlen = make_sentences(200, test_rng)
    tok = keras.Input((SEQ_LEN,), dtype="int32", name="tokens")
    e = layers.Embedding(VOCAB, 8, mask_zero=True, name="embedding")(tok)
    h = layers.Bidirectional(layers.LSTM(8), name="bilstm")(e)
    out = layers.Dense(2, activation="softmax", name="probs")(h)
    lstm = keras.Model(tok, out, name="token_lstm")
    lstm.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    lstm.fit(xt, yt, epochs=6, batch_size=64, verbose=0, validation_split=0.1)
    acc_tokens = lstm.evaluate(tx, ty, verbose=0)[1]
    print(f"token_lstm: test accuracy {acc_tokens:.3f} on {len(ty)} sentences")
    lstm.save(OUT / "token_lstm.keras")

    np.savez_compressed(OUT / "sequences_test.npz", signal_x=sx, signal_y=sy, signal_pos=spos,
                        tokens_x=tx, tokens_y=ty, tokens_pos=tpos, tokens_len=tlen)
    for f in ("signal_cnn.keras", "token_lstm.keras", "sequences_test.npz"):
        print(f"wrote {OUT / f} ({(OUT / f).stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    import argparse

    # --help prints the docstring and writes nothing (the outputs are committed files)
    argparse.ArgumentParser(description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    main()
