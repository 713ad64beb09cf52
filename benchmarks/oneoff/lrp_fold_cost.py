"""One-off (README, "BatchNormalization folded"): the per-call cost of
``jaxsal.lrp(..., fold_batchnorm=True)``, whose program merges every folded batch norm into
the layer before it on each call, against the same call without folding.

First, for ResNet50, MobileNetV2 (alpha 0.35) and DenseNet121 from ``keras.applications``
(``weights=None``, 32x32x3, 10 classes; their batch norms given random statistics, seed 0;
built with Keras's NumPy backend into a temporary file): how many batch norms are folded,
and the logits' largest difference between the folded and the plain forward pass (2
inputs). Then, on ResNet50, 2 inputs, class 0, the z-plus / epsilon composite, with and
without folding: one warm-up call (compilation), then 20 timed calls, each ended by
``block_until_ready``; the median and the min/max in ms. Run from the repository root:

    python benchmarks/oneoff/lrp_fold_cost.py

The output of the run of 2026-12-04 is in ``benchmarks/results/oneoff/lrp_fold_cost.txt``.
"""
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "numpy")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import jaxsal  # noqa: E402
from jaxsal._src.lrp import lrp_model  # noqa: E402
from jaxsal._src.lrp_fold import fold_params, fold_plan  # noqa: E402
from model_import import load_keras  # noqa: E402

def build(name, **kw):
    """``keras.applications.<name>`` (random weights, its batch norms random statistics),
    loaded by the importer with the logits head."""
    km = getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3), classes=10,
                                           **kw)
    rng = np.random.default_rng(0)
    for layer in km.layers:
        if isinstance(layer, keras.layers.BatchNormalization):  # gamma, beta, mean, variance
            layer.set_weights([rng.uniform(0.5, 1.5, a.shape).astype(np.float32)
                               if i in (0, 3) else rng.normal(0, 0.1, a.shape).astype(np.float32)
                               for i, a in enumerate(layer.get_weights())])
    path = Path(tempfile.mkdtemp()) / f"{name}.keras"
    km.save(path)
    n_bn = sum(isinstance(v, keras.layers.BatchNormalization) for v in km.layers)
    return load_keras(path).with_head("logits"), n_bn


x = jax.device_put(np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(np.float32))
print(f"jax {jax.__version__}, {jax.devices()[0].platform}")
for name, kw in (("ResNet50", {}), ("MobileNetV2", {"alpha": 0.35}), ("DenseNet121", {})):
    m, n_bn = build(name, **kw)
    plan = fold_plan(m)
    folded = jax.jit(lrp_model(m, 1e-9, None, plan).apply)(fold_params(m.params, plan), x)
    y = np.asarray(m(x))
    print(f"{name}: {len(plan)} of {n_bn} batch norms folded; logits' largest difference "
          f"folded vs plain {float(np.abs(np.asarray(folded) - y).max()):.2e} "
          f"(largest logit {float(np.abs(y).max()):.2f})")

m, _ = build("ResNet50")
rule = jaxsal.lrp_composite(conv=jaxsal.lrp_zplus(), dense=jaxsal.lrp_epsilon(1e-6))
print("ResNet50, 2 inputs, class 0, conv=lrp_zplus(), dense=lrp_epsilon(1e-6):")
for fold in (False, True):
    jaxsal.lrp(m, x, [0], rule=rule, fold_batchnorm=fold).block_until_ready()  # compiles
    times = []
    for _ in range(20):
        t = time.perf_counter()
        jaxsal.lrp(m, x, [0], rule=rule, fold_batchnorm=fold).block_until_ready()
        times.append(1e3 * (time.perf_counter() - t))
    print(f"fold_batchnorm={fold}: median {statistics.median(times):.1f} ms "
          f"(min {min(times):.1f}, max {max(times):.1f}) over 20 calls")
