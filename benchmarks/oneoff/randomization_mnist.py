"""One-off (README, "Evaluating maps"): the model parameter randomization test on the MNIST
fixture model (tests/fixtures/mnist_cnn_tfkeras2.h5, logits head), the first 6 held-out
digits of mnist_5k.npz, each digit's predicted class, ``key=0``: the mean Spearman rank
correlation with the original maps after each step of the cascade (output layer first),
for gradient x input, saliency and guided backprop, both randomization modes, signed and
absolute maps. Run from the repository root:

    KERAS_BACKEND=numpy python -m benchmarks.oneoff.randomization_mnist
"""

import numpy as np

import jaxsal
from model_import import load_keras


def main():
    m = load_keras("tests/fixtures/mnist_cnn_tfkeras2.h5").with_head("logits")
    d = np.load("tests/fixtures/mnist_5k.npz")
    x = (d["x"][d["test_idx"]].astype(np.float32) / 255.0)[..., None][:6]
    t = np.asarray(m(x)).argmax(1)[:, None]
    methods = {"gradient_x_input": jaxsal.gradient_x_input, "saliency": jaxsal.saliency,
               "guided_backprop": jaxsal.guided_backprop}
    for mode in ("permute", "gaussian"):
        for name, f in methods.items():
            for absolute in (False, True):
                r = jaxsal.randomization_test(lambda mm, f=f: f(mm, x, t)[:, 0], m, key=0,
                                              mode=mode, absolute=absolute)
                means = ", ".join(f"{k} {float(np.nanmean(v)):.3f}" for k, v in r.items())
                print(f"{mode} {name} absolute={absolute}: {means}", flush=True)


if __name__ == "__main__":
    main()
