"""Example 2: vanilla-gradient saliency from scratch in a dozen lines of JAX, next to jaxsal.

The model is ``mnist_cnn_keras3.keras`` (the functional MNIST CNN of the Stack Overflow
question). The from-scratch version needs only a pure forward function ``f(params, x)``:
take the pre-softmax output (the ``logits`` head), differentiate the predicted class's score
with respect to the pixels, take the maximum of ``|gradient|`` over the channel axis and
min-max normalize each map. ``jaxsal.saliency`` computes the same thing in one line; the
script prints their largest difference and draws both.

Run::

    python examples/saliency_from_scratch.py --fast --out out/scratch   # 4 digits
    python examples/saliency_from_scratch.py --out out/scratch          # 10 digits, 0..9
"""

from __future__ import annotations

import _common
import jax
import jax.numpy as jnp
import numpy as np

import jaxsal
from jaxsal import plot
from model_import import load_keras


# ---------------------------------------------------------------- from scratch: 12 lines
def saliency_from_scratch(f, params, x, classes):
    """|d f(params, x)[n, classes[n]] / d x| maxed over channels, min-max normalized."""
    def score(x1, c):  # one image (H, W, C), one class -> a scalar
        return f(params, x1[None])[0, c]

    grads = jax.vmap(jax.grad(score))(x, classes)  # (N, H, W, C)
    sal = jnp.max(jnp.abs(grads), axis=-1)  # (N, H, W)
    lo = sal.min(axis=(1, 2), keepdims=True)
    hi = sal.max(axis=(1, 2), keepdims=True)
    return (sal - lo) / (hi - lo + 1e-7)
# ----------------------------------------------------------------------------------------


def main() -> None:
    args = _common.parse_args(__doc__.splitlines()[0], "out/saliency_from_scratch")
    model = load_keras(_common.fixture("mnist_cnn_keras3.keras"))
    lm = model.with_head("logits")  # pre-softmax output
    x_all, y_all = _common.mnist_heldout()
    n = 4 if args.fast else 10
    x = x_all[:n]  # digits 0, 1, 2, ...
    preds = np.asarray(lm(x)).argmax(-1)

    ours = np.asarray(jax.jit(saliency_from_scratch, static_argnums=0)(
        lm.apply, lm.params, jnp.asarray(x), jnp.asarray(preds)))
    # the one-liner: predicted class (targets=None), then per-map min-max normalization
    lib = _common.squeeze_channels(jaxsal.normalize(jaxsal.saliency(lm, x)))
    diff = float(np.max(np.abs(ours - lib)))
    print(f"{n} digits, predicted classes {preds.tolist()} (labels {y_all[:n].tolist()})")
    print(f"max |from scratch - jaxsal.saliency| = {diff:.3e}")

    maps = np.stack([ours, lib], axis=1)  # (N, 2, 28, 28): images x implementations
    fig = plot.grid(maps, inputs=x, row_titles=[f"label {y}\npredicted {p}"
                                                for y, p in zip(y_all[:n], preds)],
                    col_titles=["from scratch\n(12 lines of JAX)", "jaxsal.saliency\n+ normalize"],
                    scale="shared", vmin=0.0, vmax=1.0, cmap="jet",
                    colorbar_label="normalized |gradient|",
                    title=f"mnist_cnn_keras3.keras, logits head\nmax difference {diff:.1e}")
    _common.save(fig, args.out, "saliency_from_scratch.png")


if __name__ == "__main__":
    main()
