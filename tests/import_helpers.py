"""Helpers for the importer's differential tests against real Keras 3 (NumPy backend unless
``KERAS_BACKEND`` says otherwise: see conftest.py).

Random initial weights hide bugs (BatchNormalization with fresh statistics is the identity,
biases are zero, LayerScale is 1e-6): :func:`perturb_keras` gives every such weight a random
value so that a wrong formula, axis or weight order changes the outputs.
"""

from __future__ import annotations

import contextlib

import numpy as np


def padded_tokens(n: int = 4, t: int = 7, vocab: int = 20, seed: int = 3) -> np.ndarray:
    """``(n, t)`` int32 token ids drawn from ``[1, vocab)``, with 0 (the padding that
    ``Embedding(mask_zero=True)`` masks) at the end of row 0 (from step 5), the start of row 1
    (steps 0-2) and the middle of row 2 (step 3): ``n >= 3``, ``t >= 6``."""
    x = np.random.default_rng(seed).integers(1, vocab, (n, t)).astype("int32")
    x[0, 5:] = 0  # padded at the end
    x[1, :3] = 0  # at the start
    x[2, 3] = 0  # in the middle
    return x


@contextlib.contextmanager
def keras_jax_backend_fixes():
    """Keras 3.15's JAX backend calls JAX 0.10 in ways it refuses, so these reference
    computations failed under ``KERAS_BACKEND=jax`` (a Keras bug each; the importer reads the
    recorded arguments itself): ``ops.quantile``'s ``axis``, which ``Quantile`` makes a list
    (``[-1]``), goes to ``jnp.quantile``, where it is static and must be hashable (Keras's own
    ``median`` passes a tuple); ``ops.repeat``'s list of ``repeats`` to ``jnp.repeat``, which
    takes an array; and ``dot_product_attention`` with a value head size other than the
    key's (``MultiHeadAttention(value_dim=...)``) to ``jax.nn.dot_product_attention``, which
    refuses it, and then to a fallback that reshapes the output to the query's head size (a
    TypeError for every input). Within this context the first two get a tuple and an array,
    and the third runs Keras's own function on head sizes made equal by zeros (the value's
    padded and the output cut back, or the query's and key's padded with the scale of their
    own size given): the same values in exact arithmetic. A fourth computes wrong values
    without an error: the adaptive pooling layers' bins, ``floor(j n / o)`` to
    ``ceil((j + 1) n / o)``, which Keras's JAX backend computes in float32 on device, where
    XLA:CPU rounds ``21 / 7`` above 3 (``n = o = 7`` or ``13``: an axis that keeps its size),
    so a bin takes two elements where it has one, and the last bin's index falls outside the
    pooled rows (``jnp.take`` fills NaN): ``AdaptiveMaxPooling1D(7)`` of ``1..7`` gave
    ``[1, 2, 4, 4, 5, 7, nan]``. Within this context they are computed in integers, as Keras's
    NumPy backend and ``model_import`` do. Nothing changes on other backends."""
    import keras

    if keras.backend.backend() != "jax":
        yield
        return
    import inspect

    import jax.numpy as jnp
    import pytest
    from keras.src.backend.jax import nn as jax_nn
    from keras.src.backend.jax import numpy as jax_numpy

    quantile, repeat, attention = (jax_numpy.quantile, jax_numpy.repeat,
                                   jax_nn.dot_product_attention)

    def quantile_hashable_axis(x, q, axis=None, **kw):
        return quantile(x, q, axis=tuple(axis) if isinstance(axis, list) else axis, **kw)

    def repeat_array_repeats(x, repeats, axis=None):
        return repeat(x, np.asarray(repeats) if isinstance(repeats, list) else repeats, axis)

    def attention_value_heads(*args, **kw):
        a = inspect.signature(attention).bind(*args, **kw).arguments
        q, k, v = (jnp.asarray(a.pop(n)) for n in ("query", "key", "value"))
        hk, hv = k.shape[-1], v.shape[-1]
        if hk == hv:
            return attention(q, k, v, **a)

        def pad(t, h):
            return jnp.pad(t, [(0, 0)] * (t.ndim - 1) + [(0, h - t.shape[-1])])

        if hv < hk:
            return attention(q, k, pad(v, hk), **a)[..., :hv]
        a["scale"] = 1.0 / np.sqrt(hk) if a.get("scale") is None else a["scale"]
        return attention(pad(q, hv), pad(k, hv), v, **a)

    def adaptive_gather_in_integers(input_dim, output_size, big_window):
        # Keras's _compute_adaptive_pooling_gather_indices with its bins in exact integers
        j = np.arange(output_size)
        starts = (j * input_dim) // output_size
        ends = -((-(j + 1) * input_dim) // output_size)
        small_len = input_dim - (big_window - 1) + 1
        return jnp.asarray(np.where(ends - starts == big_window, starts + small_len, starts),
                           jnp.int32)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jax_nn, "_compute_adaptive_pooling_gather_indices",
                      adaptive_gather_in_integers)
        patch.setattr(jax_numpy, "quantile", quantile_hashable_axis)
        patch.setattr(jax_numpy, "repeat", repeat_array_repeats)
        patch.setattr(jax_nn, "dot_product_attention", attention_value_heads)
        yield


def perturb_keras(model, seed: int = 0, *, rng: np.random.Generator | None = None,
                  kernels: bool = False) -> None:
    """Randomize ``model``'s normalization statistics, gammas/scales, betas, biases, PReLU
    alphas and (unless ``kernels``) LayerScale factors (from ``rng``, else
    ``default_rng(seed)``); ``kernels=True`` also draws every other float weight from a
    normal of about its initial scale."""
    rng = np.random.default_rng(seed) if rng is None else rng
    for v in model.weights:
        a = np.asarray(v.numpy())
        if not np.issubdtype(a.dtype, np.floating):
            continue
        name = v.name.split("/")[-1].split(":")[0]
        if name in ("moving_mean", "mean"):
            new = rng.normal(0.0, 0.3, a.shape)
        elif name in ("moving_variance", "variance"):
            new = rng.uniform(0.4, 1.6, a.shape)
        elif name in ("gamma", "scale"):  # "scale": RMSNormalization
            new = rng.uniform(0.5, 1.5, a.shape)
        elif name in ("beta", "bias"):
            new = rng.normal(0.0, 0.3, a.shape)
        elif name == "alpha":  # PReLU
            new = rng.uniform(0.05, 0.5, a.shape)
        elif kernels:
            std = float(np.std(a)) if a.size > 1 else 0.3
            new = rng.normal(0.0, min(max(std, 0.05), 1.0), a.shape)
        else:
            continue
        v.assign(new.astype(a.dtype))
    for lay in _all_layers(model):
        # Keras 3.15 names ConvNeXt's LayerScale weight "variable"; at its 1e-6 the
        # residual branches add nothing a comparison could see
        if type(lay).__name__ == "LayerScale" and not kernels:
            for v in lay.weights:
                v.assign(rng.uniform(0.5, 1.5, v.shape).astype(np.asarray(v.numpy()).dtype))
        if type(lay).__name__ == "Normalization" and hasattr(lay, "finalize_state"):
            lay.finalize_state()  # Keras reads adapted statistics from a cache set here


def _all_layers(model):
    for lay in getattr(model, "layers", []):
        yield lay
        if hasattr(lay, "layers"):
            yield from _all_layers(lay)


def calibrate_keras(model, x, rng: np.random.Generator, *, shift: float = 0.3,
                    spread: tuple = (0.7, 1.4), floor: float = 0.1) -> None:
    """Fit ``model``'s BatchNormalization statistics and biases to the data ``x``, as a
    trained network's are, perturbed so that no formula's terms cancel.

    Weights drawn without the data (:func:`perturb_keras`) let a deep network's activations
    drift until every sample gives about the same output: on 32x32 inputs MobileNet's
    ReLU6 saturates (its two samples' outputs are equal), VGG16's activations shrink until
    its random biases dominate (cosine similarity 0.9998 at ``fc2``), and ConvNeXt's
    residual stream fills with what its biases add alike to every sample. A test that
    compares such outputs cannot tell a wrong importer from a right one.

    In one inference pass, each layer, just before it runs (so on what the layers before
    it, already fitted, produce):

    - a BatchNormalization takes its input's per-channel mean and variance as its moving
      statistics: the mean plus ``shift`` standard deviations times a normal draw, the
      variance at least ``floor**2`` times the input's mean square (at 1x1 spatial size a
      channel's statistics come from a few samples; one whose samples nearly agree would
      magnify float32 rounding into the output) and times a uniform draw in ``spread``;
    - a layer with a bias (Dense, convolutions) gets, per channel, minus the mean of its
      output without the bias, plus ``shift`` standard deviations times a normal draw.

    Give ``x`` more samples than a test compares (the apps tests: eight, two of them
    compared). Fitted to two samples, a BN at 1x1 spatial size scales their every
    difference, float32 rounding included, to order one, and the rounding then grows
    two- to threefold per block (EfficientNetB0 at 32x32: relative errors of 1e4 at its
    top). Fitted to
    eight, the deepest tensors of these networks still carry up to 6e-4 of rounding, as
    much as Keras's own float32 outputs against float64 ones: random networks with
    BatchNormalization magnify small input changes with depth (Yang et al., "A Mean Field
    Theory of Batch Normalization", ICLR 2019).

    Each such layer's ``call`` is wrapped on the instance for that pass and restored after.
    """
    import keras

    def channel_axis(lay, ndim):
        if isinstance(lay, keras.layers.BatchNormalization):
            return lay.axis % ndim
        return 1 if getattr(lay, "data_format", None) == "channels_first" else ndim - 1

    def moments(lay, a):
        a = np.asarray(a, np.float64)
        axis = channel_axis(lay, a.ndim)
        axes = tuple(i for i in range(a.ndim) if i != axis)
        return a.mean(axis=axes), a.var(axis=axes), float(np.mean(a * a))

    def fit_bn(lay, call):
        def wrapped(inputs, *args, **kwargs):
            mean, var, square = moments(lay, inputs)
            var = np.maximum(var, floor**2 * square)
            mean = mean + shift * np.sqrt(var) * rng.normal(size=mean.shape)
            var = var * rng.uniform(*spread, size=var.shape)
            lay.moving_mean.assign(mean.astype(lay.moving_mean.dtype))
            lay.moving_variance.assign(var.astype(lay.moving_variance.dtype))
            return call(inputs, *args, **kwargs)
        return wrapped

    def fit_bias(lay, call):
        def wrapped(inputs, *args, **kwargs):
            act, lay.activation = lay.activation, keras.activations.linear
            try:
                lay.bias.assign(np.zeros(lay.bias.shape, lay.bias.dtype))
                y = np.asarray(call(inputs, *args, **kwargs))
            finally:
                lay.activation = act
            mean, var, _ = moments(lay, y)
            b = (shift * np.sqrt(var) * rng.normal(size=mean.shape) - mean).astype(y.dtype)
            lay.bias.assign(b)
            shape = [1] * y.ndim
            shape[channel_axis(lay, y.ndim)] = -1
            return act(y + b.reshape(shape))  # the layer's output with the new bias
        return wrapped

    wrapped = []
    try:
        for lay in _all_layers(model):
            if isinstance(lay, keras.layers.BatchNormalization):
                lay.call = fit_bn(lay, lay.call)
            elif (getattr(lay, "use_bias", False) and getattr(lay, "bias", None) is not None
                  and hasattr(lay, "activation")):
                lay.call = fit_bias(lay, lay.call)
            else:
                continue
            wrapped.append(lay)
        model(x, training=False)
    finally:
        for lay in wrapped:
            del lay.call


def sample_spread(ref) -> float:
    """How far ``ref`` (samples on axis 0) is from one output for every sample: the largest
    deviation from the mean over samples relative to the largest value, so the relative
    error (:func:`rel_err`) of a model that gave every sample that mean output."""
    ref = np.asarray(ref, np.float64)
    dev = np.abs(ref - ref.mean(axis=0, keepdims=True)).max()
    return float(dev / max(np.abs(ref).max(), 1e-30))


def check_spread(ref, what: str, minimum: float = 0.05) -> None:
    """Fail unless ``ref`` (samples on axis 0) differs across samples by at least ``minimum``
    of its scale (:func:`sample_spread`): a comparison with an output that is about the
    same for every sample cannot fail for an importer that gets every sample wrong alike."""
    spread = sample_spread(ref)
    assert spread >= minimum, (
        f"{what}: the reference differs across samples by {spread:.1e} of its scale, "
        f"expected at least {minimum}: an importer giving every sample the same output "
        "would pass this comparison; fit the model to its inputs (calibrate_keras) or "
        "choose inputs that it tells apart")


def scale_dense(layer, target_std: float, features: np.ndarray) -> None:
    """Rescale a Dense layer so that its pre-activation outputs on ``features`` have standard
    deviation ``target_std`` (a near-uniform softmax cannot tell a wrong model from a right
    one)."""
    k, b = [np.asarray(w) for w in layer.get_weights()]
    z = features @ k + b
    s = target_std / max(float(np.std(z)), 1e-12)
    layer.set_weights([k * s, b * s])


def rel_err(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-12))


def check_expected(m, ref, tol: float = 1e-4, *, require_logits: bool = True) -> None:
    """Compare an imported model with the outputs its Keras computed, as the fixture
    generators record them on ``ref["x"]``: ``ref["y"]`` (the saved head), ``ref["logits"]``
    (a copy whose last activation is linear; with ``require_logits=False`` only when
    recorded) and ``ref["act__<layer>"]`` (named layers), each within ``tol`` relative to
    its largest value."""
    import jax

    acts = [k[len("act__"):] for k in ref.files if k.startswith("act__")]
    lm = m.with_head("logits")
    # one compiled program for all checks: compilation dominates on CPU, and XLA's backend
    # optimizations (halving the compile time of the recurrent models) do not pay here
    fn = jax.jit(lambda p, x: (m.apply(p, x, capture=acts) if acts else (m.apply(p, x), {}),
                               lm.apply(p, x)))
    (y, got), logits = fn.lower(m.params, ref["x"]).compile(
        compiler_options={"xla_backend_optimization_level": 0})(m.params, ref["x"])
    assert rel_err(y, ref["y"]) <= tol
    for n in acts:
        assert rel_err(got[n], ref[f"act__{n}"]) <= tol, n
    if require_logits or "logits" in ref.files:
        assert rel_err(logits, ref["logits"]) <= tol
        assert np.std(ref["logits"]) > 0.05  # not a constant output


def save_keras_and_h5(model, directory, name: str) -> dict:
    """``model`` saved as ``directory/name.keras`` and ``directory/name.h5``:
    ``{".keras": path, ".h5": path}``."""
    paths = {}
    for ext in (".keras", ".h5"):
        paths[ext] = directory / f"{name}{ext}"
        model.save(paths[ext])
    return paths


def save_all_formats(model, directory, name: str) -> dict:
    """``model`` saved as ``.keras``, legacy ``.h5`` and ``.weights.h5``: ``{ext: path}``."""
    paths = {ext: directory / f"{name}{ext}" for ext in (".keras", ".h5", ".weights.h5")}
    model.save(paths[".keras"])
    model.save(paths[".h5"])
    model.save_weights(paths[".weights.h5"])
    return paths


def load_saved(paths: dict, ext: str, model, **kw):
    """``paths[ext]`` (from :func:`save_all_formats`) loaded by ``model_import`` (``kw`` to
    ``load_keras``: ``custom_layers=``...); a ``.weights.h5`` with ``model``'s
    architecture."""
    from model_import import load_keras

    if ext == ".weights.h5":
        return load_keras(paths[ext], config=model.to_json(), **kw)
    return load_keras(paths[ext], **kw)


def keras_outputs(model, names, x) -> dict:
    """``{layer name: output}`` of the named layers of a Keras ``model`` on ``x`` (a layer
    with several outputs gives a tuple), in one inference call."""
    import keras

    flat = [model.get_layer(n).output for n in names]
    flat = [list(keras.tree.flatten(o)) if isinstance(o, (list, tuple)) else o for o in flat]
    got = keras.Model(model.inputs, flat)(x, training=False)
    return {n: (tuple(np.asarray(a) for a in r) if isinstance(r, (list, tuple))
                else np.asarray(r)) for n, r in zip(names, got)}


def layer_errors(acts, ref) -> dict:
    """``{layer: relative error}`` of ported activations ``acts`` against Keras's ``ref``
    (:func:`keras_outputs`; the worst output of a layer with several)."""
    out = {}
    for n, r in ref.items():
        pairs = zip(acts[n], r) if isinstance(r, tuple) else [(acts[n], r)]
        # NaN (on either side) as inf: ``max`` of a list skips a NaN after the first value,
        # and ``max(errs.values()) <= tol`` passed a NaN reference so
        out[n] = max(np.nan_to_num(rel_err(a, b), nan=np.inf) for a, b in pairs)
    return out


def relabel_h5(path, version: str, option: tuple[str, str] | None = None) -> None:
    """Rewrites a Keras ``.h5`` file's recorded ``keras_version`` to ``version`` and, with
    ``option=(class_name, key)``, sets ``key`` to true in the config of every top-level layer
    of that class (an option only some Keras versions write), so that one saved model stands
    for a file another Keras version wrote."""
    import json

    import h5py

    with h5py.File(path, "r+") as f:
        f.attrs["keras_version"] = version
        if option is not None:
            config = json.loads(f.attrs["model_config"])
            for layer in config["config"]["layers"]:
                if layer["class_name"] == option[0]:
                    layer["config"][option[1]] = True
            f.attrs["model_config"] = json.dumps(config)


def relabel_keras(path, version: str) -> None:
    """Rewrites a ``.keras`` archive's recorded ``keras_version`` (its ``metadata.json``) to
    ``version``, so that one saved model stands for a file another Keras 3 version wrote."""
    import json
    import zipfile

    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    meta = json.loads(members["metadata.json"])
    meta["keras_version"] = version
    members["metadata.json"] = json.dumps(meta).encode()
    with zipfile.ZipFile(path, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
