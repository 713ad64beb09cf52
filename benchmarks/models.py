"""Model files used by the benchmarks, built once and cached (weights=None, seeded).

The Keras applications are built by Keras 3 in the interpreter that runs this module and
saved as legacy ``.h5`` files, so jaxsal (``load_keras``), tf-keras-vis (Keras 3 on
TensorFlow) and the PyTorch VGG16 (weights copied from jaxsal's params) all compute the same
function. ``python -m benchmarks.models NAME [NAME...]`` builds the files.
"""

from __future__ import annotations

import functools
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("JAXSAL_BENCH_CACHE", os.path.join(ROOT, "benchmarks", ".cache"))
MNIST = os.path.join(ROOT, "tests", "fixtures", "mnist_cnn_tfkeras2.h5")
MNIST_DATA = os.path.join(ROOT, "tests", "fixtures", "mnist_5k.npz")


def model_key(spec: dict) -> str:
    """File stem of a model spec ``{"name": ..., "size": ...}``."""
    name = spec["name"]
    if name == "mnist":
        return "mnist"
    return f"{name}_{spec['size']}"


def model_path(spec: dict) -> str:
    """Path of the model file for ``spec`` (it may not exist yet; see :func:`build`)."""
    if spec["name"] == "mnist":
        return MNIST
    return os.path.join(CACHE, model_key(spec) + ".h5")


@functools.lru_cache(maxsize=None)
def logits_model(path: str):
    """jaxsal's model of the file ``path`` with the logits head, loaded once per process:
    a kept worker's workloads share it, as one user program would (JAX on whatever platform
    the process runs; the PyTorch side builds its own module from it for each workload)."""
    from model_import import load_keras

    return load_keras(path).with_head("logits")


def input_shape(spec: dict) -> tuple:
    if spec["name"] == "mnist":
        return (28, 28, 1)
    return (spec["size"], spec["size"], 3)


def num_classes(spec: dict) -> int:
    return {"mnist": 10, "mobilenetv2": 10, "vgg16": 1000}[spec["name"]]


def build(spec: dict) -> str:
    """Build and save the model file for ``spec`` if missing; returns its path."""
    path = model_path(spec)
    if os.path.exists(path):
        return path
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    keras.utils.set_random_seed(0)
    s = spec["size"]
    if spec["name"] == "vgg16":
        model = keras.applications.VGG16(weights=None, input_shape=(s, s, 3), classes=1000)
    elif spec["name"] == "mobilenetv2":
        model = keras.applications.MobileNetV2(input_shape=(s, s, 3), alpha=0.35,
                                               weights=None, classes=10)
    else:
        raise ValueError(f"unknown benchmark model {spec['name']!r}")
    os.makedirs(CACHE, exist_ok=True)
    tmp = path + ".tmp.h5"
    model.save(tmp)
    os.replace(tmp, path)
    return path


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        name, _, size = arg.partition("_")
        print(build({"name": name, "size": int(size) if size else None}))
