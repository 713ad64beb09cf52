"""A small Keras model with a dead ReLU channel, shared by the pre-activation tests
(test_import_preact.py, test_maximize_preact.py)."""

import pathlib

import jax

DEAD = 2  # the channel of "conv" whose bias is strongly negative


def build(activation: str = "relu"):
    """Input (10, 10, 3) -> conv (4 filters, ``activation``) -> conv2 (3, ``activation``) ->
    gap -> out (Dense 2, softmax or ``activation``), random weights of a fixed seed; with
    ReLUs, channel DEAD of conv has a bias of -20 (ReLU output 0 for every input in [0, 1])."""
    import keras

    keras.utils.set_random_seed(0)
    i = keras.Input((10, 10, 3))
    h = keras.layers.Conv2D(4, 3, activation=activation, name="conv")(i)
    h = keras.layers.Conv2D(3, 3, activation=activation, name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    out = keras.layers.Dense(2, activation="softmax" if activation == "relu" else activation,
                             name="out")(h)
    km = keras.Model(i, out)
    if activation == "relu":
        w, b = km.get_layer("conv").get_weights()
        b[DEAD] = -20.0
        km.get_layer("conv").set_weights([w, b])
    return km


def save(d: pathlib.Path) -> pathlib.Path:
    """The model saved as ``relu.keras`` and ``relu.h5`` in ``d``, and its twin with every
    activation linear and the same weights, ``linear.keras`` (an independent computation of
    the pre-activation values)."""
    km = build()
    twin = build("linear")
    twin.set_weights(km.get_weights())
    for ext in (".keras", ".h5"):
        km.save(d / f"relu{ext}")
    twin.save(d / "linear.keras")
    return d


def inputs(n: int = 2, seed: int = 0) -> jax.Array:
    return jax.random.uniform(jax.random.key(seed), (n, 10, 10, 3))
