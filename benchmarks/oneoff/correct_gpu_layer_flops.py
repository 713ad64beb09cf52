"""One-off correction of ``benchmarks/results/gpu.json`` (the first GPU run), after
:mod:`benchmarks.oneoff.correct_gpu_flops`: the nominal FLOPs of activation maximization of a
layer's channels (``vgg16/maximize block3_conv3 64 filters x256 steps``) charged each
image-step the whole model's forward pass (and its input gradient), 30.94 GFLOP per VGG16
image, where the programs run the model up to that layer only (XLA drops the layers after it;
the PyTorch loop runs ``net[:where[layer] + 1]``): 18.67 GFLOP up to ``block3_conv3``, so that
row's GFLOP/s were 1.66x too high on both sides (the ratio is unchanged). The count is nominal,
so it is recomputed without the GPU: the forward pass up to the layer counted on the traced
program (:func:`benchmarks.side_jaxsal.forward_flops_per_image` with ``layer``, what the
harness now records, ``info.fwd_flops_per_image_to_layer``); ``flops`` and
``achieved_flops_per_s`` of those results are rescaled and the correction is recorded in the
JSON (``flops_corrected_layer``). Timings are untouched. Rerunnable (a corrected file is left
as it is); builds the model file if missing (``benchmarks.models.build``, seeded, no weights
needed to count)::

    KERAS_BACKEND=jax JAX_PLATFORMS=cpu \\
        python -m benchmarks.oneoff.correct_gpu_layer_flops benchmarks/results/gpu.json
"""

import json
import sys

from benchmarks import models, run, side_jaxsal


def main(path: str) -> None:
    doc = json.load(open(path))
    if "flops_corrected_layer" in doc:
        print("already corrected:", doc["flops_corrected_layer"])
        return
    counted, changed = {}, []
    for w in doc["workloads"]:
        spec = w["spec"]
        if spec["method"] != "maximize" or not spec.get("layer"):
            continue
        key = (models.model_key(spec["model"]), spec["layer"])
        if key not in counted:
            from model_import import load_keras

            model = load_keras(models.build(spec["model"]))
            counted[key] = side_jaxsal.forward_flops_per_image(
                model, tuple(models.input_shape(spec["model"])), spec["layer"])
        upto = counted[key]
        fe = run._forward_equivalents(spec)
        n = spec["batch"] or spec["targets"]
        for r in w["results"]:
            if not r.get("flops"):
                continue
            before = r["flops"] / (n * fe)  # per image, as charged
            r["flops"] = n * upto * fe
            r["achieved_flops_per_s"] = r["flops"] / r["median_s"]
            r["flops_source"] = (f"nominal: convolution and matmul FLOPs of one forward per "
                                 f"image up to layer {spec['layer']!r} (counted on the jaxpr; "
                                 f"corrected, see flops_corrected_layer) x {fe:g} "
                                 f"forward-equivalents x {n} inputs")
            if r["side"] == "jaxsal":
                r.setdefault("info", {})["fwd_flops_per_image_to_layer"] = upto
            changed.append((spec["id"], r["side"], before, upto))
    doc["flops_corrected_layer"] = (
        "2026-12-07: activation maximization of a layer's channels was charged the whole "
        "model's forward pass per image-step; benchmarks/oneoff/correct_gpu_layer_flops.py "
        "recounted the forward pass up to the layer (counted on the jaxpr, the layers after it "
        "removed) and rescaled flops and achieved_flops_per_s of (workload, side, FLOPs per "
        f"image charged, up to the layer): {changed}. Timings unchanged.")
    json.dump(doc, open(path, "w"), indent=1)
    print(doc["flops_corrected_layer"])


if __name__ == "__main__":
    main(sys.argv[1])
