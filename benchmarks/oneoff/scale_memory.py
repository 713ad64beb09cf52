"""One-off survey (the scale issue): every method at realistic sizes on the 2-core, 24 GiB
CPU VM, one subprocess per experiment: its peak RSS during the call (``/proc/self/clear_refs``
resets the peak after the model is loaded; ``ru_maxrss`` then), its wall time, or, past the
deadline, the peak so far. A watchdog thread polls ``/proc/self/statm`` and ends an
experiment above ``SCALE_LIMIT_GIB`` (10) so that an unbounded method cannot exhaust the
shared machine's memory.

Models: VGG16 at 224x224 (``benchmarks.models``, 1000 classes, random weights) and a cheap
model of the same input size (two strided convolutions, global pooling, 1000 classes; "wide":
with a 7x7x2048 convolution after them, as ResNet50's last block, for Score-CAM), on
which the sample-heavy settings (thousands of masks, coalitions, path points) finish in
minutes and any array of ``N x samples x 224 x 224 x 3`` would show.

    python -m benchmarks.oneoff.scale_memory DEADLINE_S [NAME ...]   # default: all
"""

import json
import os
import resource
import subprocess
import sys
import threading
import time

LIMIT = int(float(os.environ.get("SCALE_LIMIT_GIB", "10")) * 2**30)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
E = {}


def ex(name, model, n, code):
    """Experiment ``name``: ``code`` evaluated with ``m`` (the logits model), ``x`` (``n``
    uniform images), ``seg``/``manyseg`` (XRAI regions), ``maps10`` (10 maps per input)."""
    E[name] = (model, n, code)


def model_path(kind):
    from benchmarks import models
    if kind == "vgg":
        return models.build({"name": "vgg16", "size": 224})
    path = os.path.join(models.CACHE, f"{kind}224.h5")
    if not os.path.exists(path):
        os.environ.setdefault("KERAS_BACKEND", "numpy")
        import keras
        keras.utils.set_random_seed(0)
        i = keras.Input((224, 224, 3))
        h = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="c1")(i)
        h = keras.layers.Conv2D(32, 3, strides=2, activation="relu", name="c2")(h)
        if kind == "wide":  # a 7x7x2048 layer, as ResNet50's last block
            h = keras.layers.Conv2D(2048, 3, strides=8, activation="relu", name="wide")(h)
        h = keras.layers.GlobalAveragePooling2D()(h)
        o = keras.layers.Dense(1000, activation="softmax", name="pred")(h)
        os.makedirs(models.CACHE, exist_ok=True)
        keras.Model(i, o).save(path)
    return path


# --- the gradient family (10 classes; saliency: all 1000)
ex("saliency_1000", "cheap", 8, "jaxsal.saliency(m, x, targets=range(1000))")
ex("vgg_saliency_1000", "vgg", 2, "jaxsal.saliency(m, x, targets=range(1000))")
ex("vgg_saliency_10", "vgg", 2, "jaxsal.saliency(m, x, targets=range(10))")
ex("gxi_10", "cheap", 8, "jaxsal.gradient_x_input(m, x, targets=range(10))")
ex("guided_10", "cheap", 8, "jaxsal.guided_backprop(m, x, targets=range(10))")
ex("deconv_10", "cheap", 8, "jaxsal.deconvnet(m, x, targets=range(10))")
ex("smoothgrad_50x10", "cheap", 8, "jaxsal.smoothgrad(m, x, targets=range(10), key=0, n=50)")
ex("vgg_smoothgrad_50x10", "vgg", 2,
   "jaxsal.smoothgrad(m, x, targets=range(10), key=0, n=50)")
ex("ig_200x10", "cheap", 8, "jaxsal.integrated_gradients(m, x, targets=range(10), steps=200)")
ex("vgg_ig_200x10", "vgg", 2,
   "jaxsal.integrated_gradients(m, x, targets=range(10), steps=200)")
ex("blurig_100x10", "cheap", 8, "jaxsal.blur_integrated_gradients(m, x, targets=range(10))")
ex("guidedig_200x10", "cheap", 8,
   "jaxsal.guided_integrated_gradients(m, x, targets=range(10))")
ex("conductance_10", "cheap", 8,
   "jaxsal.layer_conductance(m, x, targets=range(10), layer='c1')")
ex("influence_10", "cheap", 8, "jaxsal.internal_influence(m, x, targets=range(10), layer='c1')")
ex("nconductance_10", "cheap", 8,
   "jaxsal.neuron_conductance(m, x, targets=range(10), layer='c2', neuron=3)")
ex("gradshap_50x10", "cheap", 8, "jaxsal.gradient_shap(m, x, targets=range(10), key=0, n=50, "
   "baselines=np.zeros((64, 224, 224, 3), np.float32))")
ex("deeplift_10", "cheap", 8, "jaxsal.deeplift(m, x, targets=range(10))")
ex("deepliftshap_64x10", "cheap", 8, "jaxsal.deeplift_shap(m, x, targets=range(10), baselines="
   "np.random.RandomState(1).uniform(0, 1, (64, 224, 224, 3)).astype(np.float32))")
ex("lrp_10", "cheap", 8, "jaxsal.lrp(m, x, targets=range(10))")
ex("vgg_lrp_10", "vgg", 2, "jaxsal.lrp(m, x, targets=range(10))")
ex("fullgrad_10", "cheap", 8, "jaxsal.fullgrad(m, x, targets=range(10))")
ex("vgg_fullgrad_10", "vgg", 2, "jaxsal.fullgrad(m, x, targets=range(10))")
ex("xrai_10", "cheap", 8, "jaxsal.xrai(m, x, targets=range(10), segments=seg)")
ex("xrai_1000seg", "cheap", 8, "jaxsal.xrai(m, x, targets=range(3), segments=manyseg)")
# --- CAMs (VGG16, default layer block5_conv3, 512 channels)
for c in ["gradcam", "gradcam_plus_plus", "layercam", "hirescam", "xgradcam", "eigengradcam",
          "gradcam_elementwise", "guided_gradcam"]:
    ex(f"vgg_{c}_10", "vgg", 2, f"jaxsal.{c}(m, x, targets=range(10))")
ex("vgg_scorecam_512", "vgg", 2,
   "jaxsal.scorecam(m, x, targets=range(10), layer='block5_conv3')")
ex("vgg_ablationcam_512", "vgg", 2,
   "jaxsal.ablationcam(m, x, targets=range(10), layer='block5_conv3')")
ex("vgg_eigencam", "vgg", 2, "jaxsal.eigencam(m, x, layer='block5_conv3')")
ex("scorecam_c2", "cheap", 8, "jaxsal.scorecam(m, x, targets=range(10), layer='c2')")
ex("scorecam_2048", "wide", 2, "jaxsal.scorecam(m, x, targets=range(10), layer='wide')")
# --- perturbation
ex("occlusion_p8s4", "cheap", 8, "jaxsal.occlusion(m, x, targets=range(10), patch=8, stride=4)")
ex("vgg_occlusion_p16s8", "vgg", 1,
   "jaxsal.occlusion(m, x, targets=range(10), patch=16, stride=8)")
ex("rise_4000", "cheap", 8, "jaxsal.rise(m, x, targets=range(10), key=0, n=4000)")
ex("vgg_rise_4000", "vgg", 2, "jaxsal.rise(m, x, targets=range(10), key=0, n=4000)")
ex("kshap_p16", "cheap", 8, "jaxsal.kernel_shap(m, x, targets=range(10), key=0, patch=16)")
ex("kshap_p8", "cheap", 8, "jaxsal.kernel_shap(m, x, targets=range(10), key=0, patch=8)")
ex("lime_5000_p16", "cheap", 8,
   "jaxsal.lime(m, x, targets=range(10), key=0, n=5000, patch=16)")
ex("lime_5000_p8", "cheap", 8, "jaxsal.lime(m, x, targets=range(10), key=0, n=5000, patch=8)")
ex("svs_p16", "cheap", 8,
   "jaxsal.shapley_value_sampling(m, x, targets=range(10), key=0, n=25, patch=16)")
ex("shapley_p56", "cheap", 8, "jaxsal.shapley_values(m, x, targets=range(10), patch=56)")
ex("featperm_p8", "cheap", 8,
   "jaxsal.feature_permutation(m, x, targets=range(10), key=0, patch=8)")
ex("featperm_p8_n10", "cheap", 8,
   "jaxsal.feature_permutation(m, x, targets=range(10), key=0, patch=8, n=10)")
# --- evaluation
ex("deletion_10", "cheap", 8, "jaxsal.deletion(m, x, maps10, targets=range(10))")
ex("insertion_10", "cheap", 8, "jaxsal.insertion(m, x, maps10, targets=range(10))")
ex("deletion_steps", "cheap", 8,
   "jaxsal.deletion(m, x, maps10, targets=range(10), steps=1000)")
ex("infidelity_1000", "cheap", 8,
   "jaxsal.infidelity(m, x, maps10, targets=range(10), key=0, n=1000)")
ex("sensmax_50", "cheap", 8, "jaxsal.sensitivity_max(lambda z: jaxsal.saliency(m, z, "
   "targets=range(10)), x, key=0, n=50)")
ex("randomization", "cheap", 8, "jaxsal.randomization_test(lambda mm: jaxsal.saliency(mm, x, "
   "targets=range(10)), m, key=0)")
ex("vgg_randomization", "vgg", 2, "jaxsal.randomization_test(lambda mm: jaxsal.saliency(mm, "
   "x, targets=range(3)), m, key=0)")
# --- activation maximization (64 units)
ex("vgg_maximize_64", "vgg", 0,
   "jaxsal.maximize(m, list(range(64)), layer='block5_conv3', steps=2)")
ex("vgg_maximize_8", "vgg", 0, "jaxsal.maximize(m, list(range(8)), layer='block5_conv3', steps=2)")
ex("maximize_64", "cheap", 0, "jaxsal.maximize(m, list(range(64)), steps=20)")


def worker(name):
    """Run experiment ``name`` in this process; print one JSON line."""
    peak = [0]
    deadline = time.time() + float(os.environ.get("SCALE_DEADLINE", "110"))
    page = os.sysconf("SC_PAGE_SIZE")

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    def maxrss_gib():
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)

    def watch():
        while True:
            now = rss()
            peak[0] = max(peak[0], now)
            if now > LIMIT:
                print(json.dumps({"name": name, "status": f"killed above {LIMIT / 2**30:g} GiB",
                                  "rss_gib": round(now / 2**30, 2)}), flush=True)
                os._exit(99)
            if time.time() > deadline:
                print(json.dumps({"name": name, "status": "deadline (still running)",
                                  "peak_gib": maxrss_gib()}), flush=True)
                os._exit(98)
            time.sleep(0.01)

    threading.Thread(target=watch, daemon=True).start()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import numpy as np
    import jax
    import jaxsal
    from model_import import load_keras

    model, n, code = E[name]
    m = load_keras(model_path(model)).with_head("logits")
    x = np.random.RandomState(0).uniform(0, 1, (n, 224, 224, 3)).astype(np.float32)
    seg = np.zeros((16, 224, 224), bool)  # a 4x4 grid of regions
    for k in range(16):
        seg[k, (k // 4) * 56:(k // 4 + 1) * 56, (k % 4) * 56:(k % 4 + 1) * 56] = True
    manyseg = None
    if "manyseg" in code:  # grids of 8, 16 and 32 pixels: 1029 regions per input
        g = np.arange(224)
        labs = np.stack([(g[:, None] // c) * 1000 + g[None, :] // c for c in (8, 16, 32)])
        manyseg = jaxsal.segment_masks(np.broadcast_to(labs, (n,) + labs.shape).astype(np.int64))
    maps10 = np.random.RandomState(2).uniform(0, 1, (n, 10, 224, 224)).astype(np.float32)
    load_peak = maxrss_gib()
    start = round(rss() / 2**30, 2)
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM, ru_maxrss)
        f.write("5")
    t = time.time()
    out = eval(code, dict(globals(), jax=jax, jaxsal=jaxsal, np=np, m=m, x=x, seg=seg,
                          manyseg=manyseg, maps10=maps10))
    jax.block_until_ready(tuple(out) if hasattr(out, "_asdict") else out)
    dt = time.time() - t
    shapes = [getattr(a, "shape", None) for a in jax.tree_util.tree_leaves(out)][:4]
    print(json.dumps({"name": name, "status": "ok", "load_peak_gib": load_peak,
                      "start_gib": start, "peak_gib": maxrss_gib(), "s": round(dt, 1),
                      "shapes": str(shapes)}), flush=True)


def main(names, timeout):
    for name in names:
        os.environ["SCALE_DEADLINE"] = str(timeout)
        p = subprocess.Popen([sys.executable, "-m", "benchmarks.oneoff.scale_memory", "run",
                              name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=ROOT)
        try:
            out, err = p.communicate(timeout=timeout + 120)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        lines = [line for line in out.splitlines() if line.startswith("{")]
        print(lines[-1] if lines else json.dumps({
            "name": name, "status": "error", "rc": p.returncode,
            "err": err.strip().splitlines()[-1:]}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "run":
        worker(sys.argv[2])
    else:
        main(sys.argv[2:] or list(E), float(sys.argv[1]))
