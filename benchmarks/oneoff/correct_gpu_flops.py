"""One-off correction of ``benchmarks/results/gpu.json`` (the first GPU run): its nominal
FLOPs came from the compiled GPU program's cost analysis, which counts cuDNN convolutions as
0 (0.25 GFLOP per VGG16 image: the dense layers alone), so every GFLOP/s figure of that run
was 124x too low. The count is nominal (FLOPs per forward pass x forward-equivalents x
inputs, not measured), so it can be recomputed without the GPU: this script replaces the
per-image figure by the one the harness now counts on the traced program, rescales
``flops`` and ``achieved_flops_per_s`` of every result that used it, and records the
correction in the JSON (``flops_corrected``). Timings are untouched. Run once, after
``python -m benchmarks.models vgg16_224``:

    python -m benchmarks.oneoff.correct_gpu_flops benchmarks/results/gpu.json
"""

import json
import sys

from benchmarks import models, side_jaxsal


def main(path):
    doc = json.load(open(path))
    if "flops_corrected" in doc:
        print("already corrected:", doc["flops_corrected"])
        return
    old, new = {}, {}  # per model: the per-image FLOPs recorded, and counted now
    for w in doc["workloads"]:
        key = models.model_key(w["spec"]["model"])
        for r in w["results"]:
            info = r.get("info") or {}
            if info.get("fwd_flops_per_image") is None:
                continue
            old.setdefault(key, info["fwd_flops_per_image"])
            if key not in new:
                m = models.logits_model(models.model_path(w["spec"]["model"]))
                new[key] = side_jaxsal.forward_flops_per_image(
                    m, tuple(models.input_shape(w["spec"]["model"])))
            info["fwd_flops_per_image_before_correction"] = info["fwd_flops_per_image"]
            info["fwd_flops_per_image"] = new[key]
    changed = 0
    for w in doc["workloads"]:  # the nominal FLOPs of every side came from that figure
        key = models.model_key(w["spec"]["model"])
        for r in w["results"]:
            if r.get("flops") and str(r.get("flops_source", "")).startswith("nominal"):
                r["flops"] *= new[key] / old[key]
                r["achieved_flops_per_s"] = r["flops"] / r["median_s"]
                r["flops_source"] = ("nominal: convolution and matmul FLOPs of one forward "
                                     "per image (counted on the jaxpr; corrected, see "
                                     "flops_corrected) x forward-equivalents x inputs")
                changed += 1
    per_model = {k: (old[k], new[k]) for k in new}
    doc["flops_corrected"] = (
        "2026-12-04: the nominal FLOPs of this run came from the compiled GPU program's XLA "
        "cost analysis, which counts cuDNN convolutions as 0; per model (FLOPs per image "
        f"recorded, counted on the jaxpr now): {per_model}, by which benchmarks/oneoff/"
        f"correct_gpu_flops.py rescaled the FLOPs of {changed} results. Timings unchanged.")
    json.dump(doc, open(path, "w"), indent=1)
    print(doc["flops_corrected"])


if __name__ == "__main__":
    main(sys.argv[1])
