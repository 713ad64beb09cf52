"""One-off (benchmarks/README, "GPU profile"): the bytes per image that a VJP of VGG16
(weights=None, 224x224) keeps for its backward pass under guided backprop, with the guided
ReLU of commit f0258f8 (a boolean residual read off the output) and with the rule before it
(the float32 input kept). Shapes only (``jaxsal._src.base.residual_bytes``), nothing is run.
After ``python -m benchmarks.models vgg16_224``:

    python -m benchmarks.oneoff.guided_residuals
"""

import os

os.environ.setdefault("KERAS_BACKEND", "numpy")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks import models  # noqa: E402
from jaxsal._src.base import residual_bytes  # noqa: E402


@jax.custom_vjp
def before(x):
    """The guided ReLU before f0258f8: its input kept for the backward pass."""
    return jnp.maximum(x, 0.0)


before.defvjp(lambda x: (jnp.maximum(x, 0.0), x),
              lambda x, g: (jnp.where((g > 0) & (x > 0), g, jnp.zeros_like(g)),))


def main():
    m = models.logits_model(models.model_path({"name": "vgg16", "size": 224}))
    one = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    for label, model in (("guided, now (boolean residual)", m.with_backprop("guided")),
                         ("guided, before (float32 input kept)",
                          m.with_relu(before, name="guided"))):
        print(f"{label}: {residual_bytes(model, one) / 2**20:.1f} MiB per image")


if __name__ == "__main__":
    main()
