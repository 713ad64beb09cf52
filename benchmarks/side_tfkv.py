"""tf-keras-vis 0.8.7 on TensorFlow (CPU): the CPU peer. Runs in the peer venv
(``benchmarks/setup_peers.sh``), never imported by jaxsal's interpreter.

Protocol (what a tf-keras-vis user writes): the model is loaded by Keras 3 and wrapped as a
functional model, the visualizer is built once with ``ReplaceToLinear`` (scores on logits, as
jaxsal's ``logits`` head), and every timed call returns raw maps (``normalize_map=False`` /
``normalize_cam=False``; CAMs upsampled to the input size). T classes of N images are T calls
with ``CategoricalScore(c)`` (its score applies one class to the whole batch); "top1" is one
call with ``CategoricalScore(predicted classes)``.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import data, models  # noqa: E402
from benchmarks._measure import Case  # noqa: E402


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for p in ("tensorflow-cpu", "tensorflow", "keras", "tf-keras-vis", "numpy", "scipy"):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            pass
    return out


def _load(spec):
    import keras

    m = keras.models.load_model(models.model_path(spec["model"]), compile=False)
    return keras.Model(m.inputs, m.outputs)


def build(spec: dict) -> Case:
    import numpy as np
    import tensorflow as tf
    from tf_keras_vis.activation_maximization import ActivationMaximization
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.saliency import Saliency
    from tf_keras_vis.scorecam import Scorecam
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    model = _load(spec)
    method = spec["method"]
    info = {"tensorflow_threads": {"intra": tf.config.threading.get_intra_op_parallelism_threads(),
                                   "inter": tf.config.threading.get_inter_op_parallelism_threads()}}

    if method == "maximize":
        t = int(spec["targets"])
        seed = data.seeds(spec, t)
        am = ActivationMaximization(model, model_modifier=ReplaceToLinear(), clone=True)
        score = CategoricalScore(list(range(t)))

        def run():
            return am(score, seed_input=seed, input_range=(0.0, 1.0), steps=spec["steps"])

        return Case(run, items=t * spec["steps"], unit="image-steps/s", info=info)

    x = data.inputs(spec, spec["batch"])
    n = x.shape[0]
    if method == "forward":
        xt = tf.constant(x)
        fwd = tf.function(lambda a: model(a, training=False))

        def run():
            return fwd(xt).numpy()

        return Case(run, items=n, unit="images/s", info=info)

    if spec["targets"] == "top1":
        pred = np.argmax(model.predict(x, verbose=0), axis=-1)
        scores = [CategoricalScore([int(c) for c in pred])]
    else:
        scores = [CategoricalScore(c) for c in data.class_ids(spec)]
    n_maps = n * len(scores)
    layer = spec.get("layer")

    if method in ("saliency", "smoothgrad"):
        viz = Saliency(model, model_modifier=ReplaceToLinear(), clone=True)
        samples = spec.get("samples", 0) if method == "smoothgrad" else 0

        def run():
            return [viz(s, x, smooth_samples=samples, normalize_map=False) for s in scores]
    elif method == "gradcam":
        viz = Gradcam(model, model_modifier=ReplaceToLinear(), clone=True)

        def run():
            return [viz(s, x, penultimate_layer=layer, normalize_cam=False) for s in scores]
    elif method == "scorecam":
        viz = Scorecam(model, model_modifier=ReplaceToLinear(), clone=True)

        def run():
            return [viz(s, x, penultimate_layer=layer, normalize_cam=False) for s in scores]
    else:
        raise NotImplementedError(f"tf-keras-vis side has no workload {method!r}")
    return Case(run, items=n_maps, unit="maps/s", info=info)
