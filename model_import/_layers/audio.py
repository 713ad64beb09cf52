"""Audio front ends of Keras 3: STFTSpectrogram and MelSpectrogram.

``STFTSpectrogram`` is a strided 1-D convolution of every input channel with the layer's two
stored kernels (cosine and sine rows times the window, divided by the window's scale), which
Keras keeps as (trainable) weights: the converter uses the stored kernels, so the window,
``periodic`` and ``scaling`` options, and any fine-tuning, are whatever the file holds. The
``mode`` then maps the real and imaginary parts as Keras does.

``MelSpectrogram`` stores no weights: it is fixed arithmetic on the waveform's last axis.
Reflect-pad ``fft_length // 2`` samples on both ends, cut frames of ``fft_length`` samples
every ``sequence_stride``, multiply by the window (periodic hann or hamming of
``sequence_length`` samples, or the config's array, zero-padded to ``fft_length`` with the
extra sample on the right; no window weighs all ``fft_length`` samples by 1), take the
one-sided DFT, raise its modulus to ``mag_exp``, apply the HTK triangular mel filterbank
(built in NumPy when the layer is converted) and, with
``power_to_db``, convert to decibels relative to ``ref_power`` with a floor at the maximum
minus ``top_db`` -- the maximum over the *whole batch* passed to the model, as in Keras.
Everything is differentiable with respect to the waveform. The nonlinear steps go through the
runtime, so that DeepLIFT's and LRP's rules reach them: the squared modulus ``re**2 + im**2``
and the angle ``arctan2(im, re)`` of a DFT's two parts through ``rt.pair``, the root, log,
``** (mag_exp / 2)`` and decibels through ``rt.act``.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jax import lax

from model_import._layers.conv import conv_canonical_vjp
from model_import._layers.pooling import reduce_max
from model_import._layers.registry import LayerImpl, register_layer

#: Keras's ``backend.epsilon()`` default (a setting of the Keras installation, not saved in
#: model files); STFTSpectrogram's magnitude and log modes floor with it.
KERAS_EPSILON = 1e-7

STFT_MODES = ("log", "magnitude", "psd", "real", "imag", "angle", "stft")


def _stft_frames(x, kernel, stride, padding):
    """``x`` ``(M, L)`` convolved with ``kernel`` ``(frame_length, 1, K)`` at ``stride``
    (``"VALID"``/``"SAME"``, TensorFlow's SAME as Keras): ``(M, T, K)``."""
    x = x[..., None]
    pads = tuple(tuple(int(v) for v in p) for p in
                 lax.padtype_to_pads(x.shape[1:2], kernel.shape[:1], (stride,), padding))
    return conv_canonical_vjp(x, kernel.astype(x.dtype), (stride,), pads, (1,))


def _power(re, im):
    """``re ** 2 + im ** 2``: the squared modulus of a DFT bin from its parts."""
    return jnp.square(re) + jnp.square(im)


def _angle(re, im):
    """``arctan2(im, re)``, Keras's values (signed zeros included); where both parts are
    zero (a silent frame) the gradient is zero instead of NaN."""
    zero = (re == 0) & (im == 0)
    safe = jnp.arctan2(jnp.where(zero, 1.0, im), jnp.where(zero, 1.0, re))
    return jnp.where(zero, lax.stop_gradient(jnp.arctan2(im, re)), safe)


@register_layer("STFTSpectrogram")
def _stft_spectrogram(config, ctx):
    mode = str(config.get("mode", "log"))
    if mode not in STFT_MODES:
        raise ctx.error(f"mode {mode!r} is not one of Keras's modes {', '.join(STFT_MODES)}")
    padding = str(config.get("padding", "valid")).upper()
    if padding not in ("VALID", "SAME"):
        raise ctx.error(f"padding {config.get('padding')!r} is not 'valid' or 'same'")
    frame_length = int(config.get("frame_length", 256))
    stride = int(config.get("frame_step") or frame_length // 2)
    if stride < 1:
        raise ctx.error(f"frame_step {stride} (frame_length {frame_length}) is not positive")
    fft_length = config.get("fft_length") or 2 ** int(math.ceil(math.log2(frame_length)))
    n_freq = int(fft_length) // 2 + 1
    channels_first = config.get("data_format") == "channels_first"
    expand = bool(config.get("expand_dims", False))
    names = {"real": ("real_kernel",), "imag": ("imag_kernel",)}.get(
        mode, ("real_kernel", "imag_kernel"))

    def call(params, x, *, rt):
        if x.ndim != 3:
            raise ValueError(f"STFTSpectrogram takes (batch, time, channels) or (batch, "
                             f"channels, time) inputs, got shape {x.shape}")
        if not channels_first:
            x = jnp.swapaxes(x, 1, 2)
        n, c, length = x.shape
        k = jnp.concatenate([params[nm] for nm in names], axis=-1)
        y = _stft_frames(x.reshape(n * c, length), k, stride, padding)
        y = y.reshape(n, c, y.shape[1], y.shape[2])  # (batch, channels, time, kernels)
        f = y.shape[-1] // len(names)
        re = y[..., :f] if "real_kernel" in names else None
        im = y[..., -f:] if "imag_kernel" in names else None
        if mode == "real":
            out = re
        elif mode == "imag":
            out = im
        elif mode == "angle":
            out = rt.pair(_angle, re, im)
        elif mode == "stft":
            out = y  # [real bins, imaginary bins] along the frequency axis, as Keras
        else:
            power = rt.pair(_power, re, im)
            if mode == "psd":  # one-sided density: every bin but the first and last doubled
                out = power + jnp.pad(power[..., 1:-1], ((0, 0),) * 3 + ((1, 1),))
            else:
                out = rt.act(lambda p: jnp.sqrt(jnp.maximum(p, KERAS_EPSILON)), power)
                if mode == "log":
                    out = rt.act(lambda m: jnp.log(jnp.maximum(m, KERAS_EPSILON)), out)
        # out: (batch, channels, time, freq); Keras's layouts:
        if expand:
            return out if channels_first else jnp.transpose(out, (0, 2, 3, 1))
        out = jnp.swapaxes(out, 1, 2).reshape(n, out.shape[2], c * out.shape[3])
        return jnp.swapaxes(out, 1, 2) if channels_first else out  # feature c * freq + f

    shape = (frame_length, 1, n_freq)
    return LayerImpl(call=call, convert_weights=lambda w: dict(zip(names, w)),
                     n_weights=len(names), param_shapes={nm: shape for nm in names},
                     compute_mask="drop",
                     data_format="channels_first" if channels_first else "channels_last")


def periodic_window(name: str, length: int) -> np.ndarray:
    """The periodic (DFT-even) hann or hamming window of ``length`` samples (what Keras's
    STFT uses for a window name), float64."""
    a = {"hann": 0.5, "hamming": 0.54}[name]
    if length == 1:
        return np.ones(1)  # SciPy's convention for a one-sample window
    k = np.arange(length, dtype=np.float64)
    return a - (1.0 - a) * np.cos(2.0 * np.pi * k / length)


def _hz_to_mel(f):
    return 1127.0 * np.log(1.0 + np.asarray(f, np.float64) / 700.0)


def mel_matrix(num_mel_bins: int, n_freq: int, sampling_rate: float, min_freq: float,
               max_freq: float) -> np.ndarray:
    """``(n_freq, num_mel_bins)`` float32 HTK mel filterbank (triangles of peak 1, linear in
    mel, mel = 1127 ln(1 + f / 700), DC row zero), as Keras's ``MelSpectrogram`` builds it."""
    freqs = np.linspace(0.0, sampling_rate / 2.0, n_freq)[1:]
    bins = _hz_to_mel(freqs)[:, None]
    edges = np.linspace(_hz_to_mel(min_freq), _hz_to_mel(max_freq), num_mel_bins + 2)
    lo, mid, hi = edges[:-2][None], edges[1:-1][None], edges[2:][None]
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.maximum(0.0, np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)))
    return np.pad(w, ((1, 0), (0, 0))).astype(np.float32)


@register_layer("MelSpectrogram")
def _mel_spectrogram(config, ctx):
    fft_length = int(config.get("fft_length", 2048))
    stride = int(config.get("sequence_stride", 512))
    seq_len = int(config.get("sequence_length") or fft_length)
    if seq_len > fft_length:
        raise ctx.error(f"sequence_length {seq_len} exceeds fft_length {fft_length}")
    if stride < 1:
        raise ctx.error(f"sequence_stride {stride} is not positive")
    window = config.get("window", "hann")
    if window is None:  # Keras then weighs all fft_length samples of a frame (not padded)
        win = np.ones(seq_len)
    elif isinstance(window, str):
        if window not in ("hann", "hamming"):
            raise ctx.error(f"window {window!r} is not supported: Keras's STFT takes 'hann', "
                            "'hamming', an array of sequence_length values or None")
        win = periodic_window(window, seq_len)
    else:
        try:
            win = np.asarray(window, np.float64)
        except (TypeError, ValueError):
            raise ctx.error(f"window {window!r} is neither a name nor an array") from None
        if win.shape != (seq_len,):
            raise ctx.error(f"the window array has shape {win.shape}, not (sequence_length,) "
                            f"= ({seq_len},), which Keras refuses too")
    if not np.isfinite(win).all() or float(np.sum(win.astype(np.float32))) == 0.0:
        raise ctx.error("the window sums to zero or is not finite: Keras rescales its STFT by "
                        "the window's sum and outputs NaN")
    left = (fft_length - seq_len) // 2
    win = np.ones(fft_length) if window is None else \
        np.pad(win, (left, fft_length - seq_len - left))
    win = win.astype(np.float32)

    sampling_rate = float(config.get("sampling_rate", 16000))
    num_mel = int(config.get("num_mel_bins", 128))
    min_freq = float(config.get("min_freq", 20.0))
    max_freq = float(config.get("max_freq") or int(sampling_rate / 2))
    mel = mel_matrix(num_mel, fft_length // 2 + 1, sampling_rate, min_freq, max_freq)
    if not np.isfinite(mel).all():
        raise ctx.error(f"num_mel_bins={num_mel} between min_freq={min_freq} and "
                        f"max_freq={max_freq} gives empty mel bands (Keras's filterbank "
                        "divides by their width and is not finite)")
    mag_exp = float(config.get("mag_exp", 2.0))
    to_db = bool(config.get("power_to_db", True))
    top_db = config.get("top_db", 80.0)
    min_power = float(config.get("min_power", 1e-10))
    ref_power = float(config.get("ref_power", 1.0))
    if to_db and top_db is None:
        raise ctx.error("power_to_db=True with top_db=None: Keras's layer cannot run so "
                        "(it subtracts None from the maximum); save it with a numeric top_db")
    half = mag_exp / 2.0

    def _magnitude_power(power):
        """``power ** (mag_exp / 2)`` (``|X| ** mag_exp``), with a zero gradient (not NaN)
        where a frame is silent."""
        pos = power > 0
        return jnp.where(pos, jnp.power(jnp.where(pos, power, 1.0), half),
                         jnp.power(jnp.zeros((), power.dtype), half))

    def call(params, x, *, rt):
        x = x.astype(jnp.float32) if x.dtype != jnp.float64 else x
        h = fft_length // 2
        xp = jnp.pad(x, ((0, 0),) * (x.ndim - 1) + ((h, h),), mode="reflect")
        n_frames = (xp.shape[-1] - fft_length) // stride + 1
        if n_frames < 1:
            raise ValueError(f"MelSpectrogram: {x.shape[-1]} samples give no frame of "
                             f"fft_length {fft_length}")
        idx = stride * np.arange(n_frames)[:, None] + np.arange(fft_length)[None]
        frames = xp[..., idx] * jnp.asarray(win, x.dtype)  # (..., time, fft_length)
        spec = jnp.fft.rfft(frames, n=fft_length, axis=-1)
        power = rt.pair(_power, spec.real, spec.imag)
        s = power if half == 1.0 else rt.act(_magnitude_power, power)
        s = jnp.tensordot(s, jnp.asarray(mel, s.dtype), axes=1)  # (..., time, mel)
        if to_db:
            ref = jnp.maximum(jnp.abs(jnp.asarray(ref_power, s.dtype)), min_power)
            s = rt.act(lambda v: 10.0 * jnp.log10(jnp.maximum(v, min_power))
                       - 10.0 * jnp.log10(ref), s)
            # max over the whole batch, as Keras; reduce_max: jnp.max's value and derivative,
            # which XLA computing s twice cannot drop (protective: none dropped was found)
            s = jnp.maximum(s, reduce_max(s) - top_db)
        return jnp.swapaxes(s, -1, -2)  # (..., mel, time)

    return LayerImpl(call=call, compute_mask="drop")
