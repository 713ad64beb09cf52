"""One-off (README, "Layer-wise relevance propagation"): does LRP's relevance sum to the score
on ``keras.applications`` models that multiply tensors (squeeze-excitation ``Multiply``,
hard-swish) and add them as operations?

For MobileNetV3Small, EfficientNetB0 and ConvNeXtTiny (``weights=None``, 64x64x3 (ConvNeXt
32x32), 10 classes, seeded; built with Keras's NumPy backend into a temporary file) with every
constant term removed (biases, batch-norm and layer-norm shifts and moving means set to 0,
batch-norm variances random): such a network is positively homogeneous, and LRP with a
vanishing epsilon (1e-20: the activations of these random networks shrink to 1e-10 and
below, which a larger stabilizer absorbs) must conserve the score at the input, with the
epsilon rule everywhere and with z-plus on the convolutions (zennit's EpsilonPlus). Prints,
for 2 random inputs and classes 0 and 1, the relevance's sum over the input divided by the
logit (1.0 is conservation), and for comparison the same ratio for gradient x input. The preprocessing
layers (``Rescaling``, ``Normalization``) pass relevance on, as documented. Run from the
repository root:

    python benchmarks/oneoff/lrp_conservation_apps.py

The output of the runs of 2026-12-04 (at the commit before products became rule layers, and
after) is in ``benchmarks/results/oneoff/lrp_conservation_apps.txt``.
"""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "numpy")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import jaxsal  # noqa: E402
from model_import import load_keras  # noqa: E402

EPS = 1e-20  # the activations of these random networks shrink to 1e-10 and below
ZEROED = ("bias", "beta", "moving_mean")


def build(name, size, **kw):
    keras.utils.set_random_seed(0)
    km = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3),
                                           classes=10, **kw)
    rng = np.random.default_rng(0)
    for w in km.weights:
        short = w.path.rsplit("/", 1)[-1]
        if short in ZEROED:
            w.assign(np.zeros(w.shape, np.float32))
        elif short == "moving_variance":
            w.assign(rng.uniform(0.5, 1.5, w.shape).astype(np.float32))
    path = Path(tempfile.mkdtemp()) / f"{name}.keras"
    km.save(path)
    return load_keras(path).with_head("logits")


def main():
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "jaxsal", "model_import"],
                           cwd=ROOT, capture_output=True, text=True).stdout.strip()
    print(f"commit {commit}{' with local changes' if dirty else ''}, jax {jax.__version__}, "
          f"keras {keras.__version__}")
    for name, size, kw in (("MobileNetV3Small", 64, {}), ("EfficientNetB0", 64, {}),
                           ("ConvNeXtTiny", 32, {})):
        m = build(name, size, **kw)
        x = np.random.default_rng(1).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
        y = np.asarray(m(x))[:, :2]
        print(f"{name} ({size}x{size}), relevance's sum over the input / logit, "
              f"[[image 0: class 0, class 1], [image 1: ...]]:")
        plus = jaxsal.lrp_composite(conv=jaxsal.lrp_zplus(EPS), dense=jaxsal.lrp_epsilon(EPS))
        for label, rule in (("epsilon", None), ("z-plus convolutions", plus)):
            r = np.asarray(jaxsal.lrp(m, x, [0, 1], epsilon=EPS, rule=rule)).sum((-2, -1))
            print(f"  LRP {label}: {np.round(r / y, 4).tolist()}")
        g = np.asarray(jaxsal.gradient_x_input(m, x, [0, 1])).sum((-2, -1))
        print(f"  gradient x input: {np.round(g / y, 4).tolist()}")
        classes = sorted({m.layer(p).class_name for p in m.relevance_layers})
        print(f"  rule layers' classes: {', '.join(classes)}")


if __name__ == "__main__":
    main()
