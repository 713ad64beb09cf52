"""Keras 3's audio front ends, STFTSpectrogram and MelSpectrogram, against Keras (NumPy backend
unless ``KERAS_BACKEND`` says otherwise: see conftest.py).

Each option is checked on the layer (our converter built from the Keras layer's config and
weights, run on the input the Keras layer was called on), then small classifiers (waveform ->
spectrogram -> convolution -> Dense) are saved as ``.keras`` and ``.h5`` and loaded with
``load_keras``; saliency runs through them. STFTSpectrogram's kernels are perturbed before the
comparison (they are trainable weights: the stored ones must be used, not recomputed).

Tolerances: 1e-5 of the largest output for linear outputs (measured: <= 1.5e-7 for
STFTSpectrogram, <= 1.3e-6 for linear mel power, summed over an FFT). Decibel outputs are
compared in absolute dB: 1e-3 dB is a 2.3e-4 relative error of a power, which float32 FFT
rounding stays far below even for bands ``top_db`` below the batch maximum (measured
<= 3e-5 dB).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

import jaxsal  # noqa: E402
from import_helpers import rel_err, save_keras_and_h5  # noqa: E402
from model_import import UnsupportedLayerError, load_keras  # noqa: E402
from model_import._layers.registry import ConvertContext, Runtime, lookup  # noqa: E402

TOL = 1e-5
DB_TOL = 1e-3


def _ours(layer, x):
    cls = type(layer).__name__
    impl = lookup(cls)(layer.get_config(), ConvertContext(layer.name, cls))
    params = impl.convert_weights([np.asarray(w) for w in layer.get_weights()])
    return np.asarray(impl.call(params, jnp.asarray(x), rt=Runtime()))


def _waves(rng, n, length):
    """``(n, length)``: noise plus a tone, the second example 40 dB quieter (so top_db floors
    it against the batch maximum), the first one silent at the start (floors, and zero
    gradients rather than NaN)."""
    t = np.arange(length)
    x = rng.normal(size=(n, length)) * 0.3 + np.sin(2 * np.pi * 0.05 * t)
    x[1] *= 0.01
    x[0, :150] = 0.0
    return x.astype("float32")


STFT_MODES = ["log", "magnitude", "psd", "real", "imag", "angle", "stft"]


@pytest.mark.parametrize("mode", STFT_MODES)
def test_stft_spectrogram_matches_keras(mode):
    """Each mode with half of padding x data_format x expand_dims (every pair of those
    options; the other half for the next mode, so all 8 layouts are checked); windows,
    periodic, scaling, frame_step and fft_length (given or defaulted) vary along the loop.
    Three channels, one silent (the epsilon floors), kernels perturbed as by fine-tuning."""
    rng = np.random.default_rng(len(mode))
    windows = ("hann", "hamming", None, list(rng.uniform(0.2, 1.0, 40)))
    half = STFT_MODES.index(mode) % 2
    layouts = [(pad, cf, ex) for pad, cf, ex in itertools.product(
        ("valid", "same"), (False, True), (False, True)) if (pad == "same") ^ cf ^ ex == half]
    for i, (pad, cf, ex) in enumerate(layouts):
        x = rng.normal(size=(2, 300, 3)).astype("float32")
        x[..., 1] = 0.0
        if cf:
            x = np.swapaxes(x, 1, 2).copy()
        layer = layers.STFTSpectrogram(
            mode=mode, frame_length=40, frame_step=(15, None)[i % 2],
            fft_length=(64, None, 50)[i % 3], window=windows[i % 4], periodic=i % 3 == 1,
            scaling=("density", "spectrum", None)[i % 3], padding=pad, expand_dims=ex,
            data_format="channels_first" if cf else "channels_last")
        layer.build(x.shape)
        layer.set_weights([w + 0.05 * rng.normal(size=w.shape).astype("float32")
                           for w in layer.get_weights()])
        ref = np.asarray(layer(x))
        y = _ours(layer, x)
        assert y.shape == ref.shape, (pad, cf, ex, y.shape, ref.shape)
        assert rel_err(y, ref) <= TOL, (pad, cf, ex, rel_err(y, ref))


def _check_mel(layer, x, db):
    ref = np.asarray(layer(x))
    y = _ours(layer, x)
    assert y.shape == ref.shape, (y.shape, ref.shape)
    err = float(np.abs(y - ref).max()) if db else rel_err(y, ref)
    assert err <= (DB_TOL if db else TOL), (layer.get_config(), err)


@pytest.mark.parametrize("window", ["hann", "hamming", None, "array"])
def test_mel_spectrogram_matches_keras(window):
    """mag_exp x power_to_db x sequence_length (shorter than fft_length by an odd count: the
    window's zero padding is asymmetric), with top_db, ref_power, min_power, the frequency
    range (given or defaulted) and the sampling rate varying along the loop. The batch holds
    a quiet example, so top_db's floor comes from the other one (Keras takes the maximum over
    the whole batch)."""
    rng = np.random.default_rng(7)
    x = _waves(rng, 2, 1000)
    for i, (mag_exp, db, seq) in enumerate(itertools.product((2.0, 1.0, 0.5), (True, False),
                                                             (None, 101))):
        n_win = seq or 128
        win = list(rng.uniform(0.2, 1.0, n_win)) if window == "array" else window
        freq = ({"min_freq": 50.0, "max_freq": 3500.0}, {}, {"min_freq": 0.0})[i % 3]
        layer = layers.MelSpectrogram(
            fft_length=128, sequence_stride=37, sequence_length=seq, window=win,
            sampling_rate=(8000, 16000)[i % 2], num_mel_bins=(20, 12)[i % 2],
            power_to_db=db, top_db=(50.0, 80.0, 30.0)[i % 3], mag_exp=mag_exp,
            ref_power=(1.0, 2.5, -0.5)[i % 3], min_power=(1e-10, 1e-4)[i % 2], **freq)
        _check_mel(layer, x, db)


def _stft_model(cf=False):
    """log mode channels-last; "stft" mode (real and imaginary bins, which tells the two
    stored kernels apart) channels-first."""
    shape = (1, 800) if cf else (800, 1)
    inp = keras.Input(shape)
    s = layers.STFTSpectrogram(mode="stft" if cf else "log", frame_length=64, frame_step=32,
                               padding="same", window="hamming",
                               data_format="channels_first" if cf else None)(inp)
    h = layers.Conv1D(4, 3, activation="relu", data_format="channels_first" if cf else None)(s)
    h = layers.GlobalAveragePooling1D(data_format="channels_first" if cf else None)(h)
    return keras.Model(inp, layers.Dense(3, activation="softmax")(h))


def _stft_image_model():
    inp = keras.Input((800, 2))
    s = layers.STFTSpectrogram(mode="magnitude", frame_length=48, frame_step=24, fft_length=64,
                               expand_dims=True)(inp)
    h = layers.Conv2D(4, 3, activation="relu")(s)
    h = layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, layers.Dense(3, activation="softmax")(h))


def _mel_model():
    inp = keras.Input((800,))
    s = layers.MelSpectrogram(fft_length=128, sequence_stride=64, num_mel_bins=16,
                              sampling_rate=8000)(inp)
    s = layers.Reshape((16, -1, 1))(s)
    h = layers.Conv2D(4, 3, activation="relu")(s)
    h = layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, layers.Dense(3, activation="softmax")(h))


#: name: (builder, waveforms (N, 800) -> the model's input)
MODELS = {"stft": (_stft_model, lambda w: w[..., None]),
          "stft_cf": (lambda: _stft_model(True), lambda w: w[:, None, :]),
          "stft_image": (_stft_image_model, lambda w: np.stack([w, w[::-1] * 0.5], -1)),
          "mel": (_mel_model, lambda w: w)}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio")
    out = {}
    for name, (build, layout) in MODELS.items():
        m = build()
        rng = np.random.default_rng(len(name))
        if name.startswith("stft"):
            lay = m.layers[1]
            lay.set_weights([w + 0.05 * rng.normal(size=w.shape).astype("float32")
                             for w in lay.get_weights()])
        x = np.ascontiguousarray(layout(_waves(rng, 3, 800)))
        out[name] = (save_keras_and_h5(m, d, name), x, np.asarray(m.predict(x, verbose=0)))
    return out


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("ext", [".keras", ".h5"])
def test_saved_audio_models_match_keras(saved, name, ext):
    paths, x, ref = saved[name]
    m = load_keras(paths[ext])
    y = np.asarray(m(x))
    assert rel_err(y, ref) <= TOL, rel_err(y, ref)
    assert rel_err(jax.jit(m)(x), ref) <= TOL


@pytest.mark.parametrize("name", ["stft", "mel"])
def test_saliency_on_waveforms(saved, name):
    """jaxsal.saliency on waveform input: (N, samples, 1) and (N, samples) both give
    (N, samples) maps, finite (silent stretch included), equal to |d logit / d waveform|; a
    MelSpectrogram model (its top_db floor mixes the batch) through the per-input wrapper."""
    paths, x, _ = saved[name]
    m = load_keras(paths[".keras"]).with_head("logits")
    if name == "mel":
        # its top_db floor is the maximum over the whole batch (as in Keras): every method
        # refuses the model, and the per-input wrapper the error gives is explained instead
        with pytest.raises(ValueError, match=r"mixes the inputs of the batch: reduce_max over "
                                             r"the batch axis in layer 'mel_spectrogram"):
            jaxsal.saliency(m, x, targets=1)
        whole = m
        m = jaxsal.FunctionModel(
            lambda p, v: jax.vmap(lambda vi: whole.apply(p, vi[None]).reshape(-1))(v),
            whole.params)
    maps = np.asarray(jaxsal.saliency(m, x, targets=1))
    assert maps.shape == (x.shape[0], 800)
    assert np.isfinite(maps).all() and maps.max() > 0
    one = lambda v: m.apply(m.params, v)  # noqa: E731
    grad = np.asarray(jax.jit(jax.grad(lambda v: one(v)[:, 1].sum()))(jnp.asarray(x)))
    grad = grad.reshape(maps.shape)
    np.testing.assert_allclose(maps, np.abs(grad), rtol=1e-5, atol=1e-7 * np.abs(grad).max())
    both = np.asarray(jaxsal.saliency(m, x, targets=[0, 2]))
    assert both.shape == (x.shape[0], 2, 800)


def test_silent_frames_give_finite_gradients():
    """A silent waveform: Keras's sqrt(re^2 + im^2) ** mag_exp (here 1) and arctan2(0, 0)
    have NaN gradients there; ours are zero (the values are equal). mag_exp=2 computes
    re^2 + im^2 directly."""
    x = jnp.zeros((1, 400))
    layer = layers.MelSpectrogram(fft_length=64, sequence_stride=32, num_mel_bins=8,
                                  mag_exp=1.0, power_to_db=False)
    impl = lookup("MelSpectrogram")(layer.get_config(), ConvertContext("m", "Mel"))
    g = jax.grad(lambda v: impl.call({}, v, rt=Runtime()).sum())(x)
    assert np.isfinite(np.asarray(g)).all()
    layer = layers.STFTSpectrogram(mode="angle", frame_length=16)
    layer.build((1, 400, 1))
    impl = lookup("STFTSpectrogram")(layer.get_config(), ConvertContext("s", "STFT"))
    params = impl.convert_weights([np.asarray(w) for w in layer.get_weights()])
    g = jax.grad(lambda v: impl.call(params, v, rt=Runtime()).sum())(x[..., None])
    assert np.isfinite(np.asarray(g)).all()


@pytest.mark.parametrize("kwargs, words", [
    ({"window": "blackman"}, "window 'blackman' is not supported"),
    ({"window": [1.0] * 5}, "not (sequence_length,)"),
    ({"top_db": None}, "top_db=None"),
    ({"window": [0.0] * 64}, "sums to zero"),
    ({"min_freq": 1000.0, "max_freq": 1000.0}, "empty mel bands"),
])
def test_mel_options_keras_cannot_run_are_refused(tmp_path, kwargs, words):
    """Keras saves these MelSpectrogram configs but fails when the model is called: refused
    when the file is loaded, naming the option."""
    inp = keras.Input((500,))
    out = layers.MelSpectrogram(fft_length=64, sequence_stride=32, num_mel_bins=8, **kwargs)(inp)
    keras.Model(inp, out).save(tmp_path / "m.keras")
    with pytest.raises(UnsupportedLayerError, match="MelSpectrogram") as e:
        load_keras(tmp_path / "m.keras")
    assert words in str(e.value)


@pytest.mark.parametrize("front", ["stft_log", "stft_angle", "mel"])
def test_deeplift_sums_to_the_difference_through_spectrograms(tmp_path, front):
    """DeepLIFT's maps through an audio front end sum to ``f(x) - f(x')`` (summation to
    delta): the squared modulus and the angle of the DFT's two parts take the pair rule, the
    root, log and ``** (mag_exp / 2)`` the rescale rule. Computed with plain jnp, they took
    their gradient and missed the difference by 40% to 96% of its largest value. ``f``
    checked against Keras."""
    if front == "mel":
        inp = keras.Input((64,))
        s = layers.MelSpectrogram(fft_length=32, sequence_length=32, sequence_stride=16,
                                  num_mel_bins=4, mag_exp=1.0, power_to_db=False)(inp)
    else:
        inp = keras.Input((64, 1))
        s = layers.STFTSpectrogram(frame_length=16, frame_step=8, mode=front[5:])(inp)
    km = keras.Model(inp, layers.Dense(3)(layers.Flatten()(s)))
    km.save(tmp_path / "m.keras")
    m = load_keras(tmp_path / "m.keras")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2,) + km.input_shape[1:]).astype("float32")
    b = 0.3 * rng.normal(size=x.shape).astype("float32")
    assert rel_err(np.asarray(m(x)), np.asarray(km(x))) <= TOL
    a = np.asarray(jaxsal.deeplift(m, x, [0, 2], baseline=b, reduce=None))
    delta = np.asarray(m(x))[:, [0, 2]] - np.asarray(m(b))[:, [0, 2]]
    np.testing.assert_allclose(a.reshape(2, 2, -1).sum(-1), delta, rtol=1e-4,
                               atol=1e-4 * np.abs(delta).max())
