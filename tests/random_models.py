"""Seeded random Keras 3 Functional models for a differential sweep of the importer.

``build(seed)`` draws a small but valid Keras 3 Functional model (one or two inputs: images
channels-last or channels-first, sequences, volumes, vectors or token ids; a random chain
of layers with random options, branches merged again, nested models, shared layers,
``keras.ops`` calls, one or two outputs). Combinations that Keras itself rejects are drawn
again. ``check(seed, directory)`` gives the model random non-trivial weights (BatchNorm
statistics, biases, gammas, PReLU slopes...), saves it as ``.keras`` and legacy ``.h5``,
loads both with ``load_keras`` and compares the outputs with Keras's on a random batch of
two examples.

Used by ``tests/test_import_random.py`` over a fixed set of seeds; as a script it sweeps a
range of seeds and prints one line per seed::

    KERAS_BACKEND=numpy JAX_PLATFORMS=cpu python tests/random_models.py --start 0 --count 500

Each result is ``ok``, ``skip`` (Keras cannot run or save the drawn model: a Keras
limitation, not the importer's), ``refused`` (``KerasImportError``, with its message),
``error`` (another exception from ``load_keras`` or the ported model) or ``mismatch``
(outputs differ from Keras's beyond ``TOL`` relative to the output's largest value).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "numpy")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import dataclasses  # noqa: E402
import pathlib  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

from import_helpers import perturb_keras  # noqa: E402

#: Largest accepted ``max|ours - keras| / max|keras|`` per output (float32 arithmetic).
TOL = 1e-4
BATCH = 2

ACTIVATIONS = ("relu", "sigmoid", "tanh", "softmax", "softplus", "softsign", "selu", "elu",
               "exponential", "gelu", "silu", "swish", "hard_sigmoid", "linear", "relu6",
               "leaky_relu", "mish", "log_softmax", "celu", "glu", "hard_silu", "hard_swish",
               "hard_tanh", "hard_shrink", "soft_shrink", "tanh_shrink", "log_sigmoid",
               "sparse_plus", "squareplus", "sparsemax", "sparse_sigmoid", "threshold")


class _Redraw(Exception):
    """The drawn option does not apply here: draw another."""


@dataclasses.dataclass
class T:
    """A symbolic tensor and what the generator knows of it."""

    x: object
    masked: bool = False  # carries a Keras mask (Embedding(mask_zero)/Masking)

    @property
    def shape(self) -> tuple:
        return tuple(self.x.shape[1:])

    @property
    def size(self) -> int:
        """Entries per example (an unknown length counted as 10)."""
        return int(np.prod([10 if d is None else d for d in self.shape]))

    @property
    def rank(self) -> int:
        return len(self.shape)


class Builder:
    """Draws one model from ``rng``; ``self.log`` lists what was drawn (for reports)."""

    def __init__(self, rng: np.random.Generator):
        import keras

        self.keras = keras
        self.L = keras.layers
        self.ops = keras.ops
        self.rng = rng
        self.inputs: list = []
        self.feeds: list[np.ndarray] = []
        self.log: list[str] = []
        self.n = 0

    # ------------------------------------------------------------------ helpers
    def r(self, *choices):
        return choices[int(self.rng.integers(len(choices)))]

    def i(self, lo, hi):
        return int(self.rng.integers(lo, hi + 1))

    def p(self, prob):
        return bool(self.rng.random() < prob)

    def name(self, kind):
        self.n += 1
        return f"{kind.lower()}_{self.n}"

    def fmt(self):
        return self.r("channels_last", "channels_last", "channels_first")

    def spatial_input(self, t: T) -> tuple[int, str, str]:
        """``(spatial rank, drawn data_format, "1D"/"2D"/"3D")`` of a layer taking ``t``;
        redraws unless ``t`` has 1-3 spatial axes."""
        nd = t.rank - 1
        if nd not in (1, 2, 3):
            raise _Redraw
        return nd, self.fmt(), f"{nd}D"

    def spatial(self, t: T, fmt: str) -> tuple:
        return t.shape[:-1] if fmt == "channels_last" else t.shape[1:]

    def chan(self, t: T, fmt: str) -> int:
        return t.shape[-1] if fmt == "channels_last" else t.shape[0]

    # ------------------------------------------------------------------ inputs
    def new_input(self) -> T:
        kind = self.r("image", "image", "image", "seq", "seq", "seqvar", "vol", "vec", "tokens",
                      "tokens")
        if kind == "image" and self.p(0.15):  # an image of any size
            c = self.i(1, 3)
            inp = self.keras.Input((None, None, c), name=f"in_{len(self.inputs)}")
            self.inputs.append(inp)
            self.feeds.append(self.rng.normal(
                0, 1, (BATCH, self.i(3, 9), self.i(3, 9), c)).astype("float32"))
            self.log.append(f"imagevar(None, None, {c})")
            return T(inp)
        if kind == "seqvar":  # a sequence of any length (fed with 3 to 10 steps)
            c = self.i(1, 5)
            inp = self.keras.Input((None, c), name=f"in_{len(self.inputs)}")
            self.inputs.append(inp)
            self.feeds.append(self.rng.normal(0, 1, (BATCH, self.i(3, 10), c)).astype("float32"))
            self.log.append(f"seqvar(None, {c})")
            return T(inp)
        if kind == "image":
            shape = (self.i(3, 9), self.i(3, 9), self.i(1, 4))
        elif kind == "seq":
            shape = (self.i(3, 10), self.i(1, 5))
        elif kind == "vol":
            shape = (self.i(2, 5), self.i(2, 5), self.i(2, 5), self.i(1, 3))
        elif kind == "vec":
            shape = (self.i(2, 12),)
        else:
            t = self.i(3, 9)
            inp = self.keras.Input((t,), dtype="int32", name=f"in_{len(self.inputs)}")
            ids = self.rng.integers(1, 12, (BATCH, t))
            if self.p(0.5):  # padded sequences (masked when the Embedding has mask_zero)
                ids[0, self.i(1, t - 1):] = 0
            self.inputs.append(inp)
            self.feeds.append(ids.astype("int32"))
            mask_zero = self.p(0.6)
            emb = self.L.Embedding(12, self.i(2, 6), mask_zero=mask_zero, name=self.name("emb"))
            self.log.append(f"tokens{(t,)} Embedding(mask_zero={mask_zero})")
            return T(emb(inp), masked=mask_zero)
        inp = self.keras.Input(shape, name=f"in_{len(self.inputs)}")
        self.inputs.append(inp)
        self.feeds.append(self.rng.normal(0, 1, (BATCH,) + shape).astype("float32"))
        self.log.append(f"{kind}{shape}")
        return T(inp)

    # ------------------------------------------------------------------ layers
    def act_layer(self, t: T) -> T:
        L, r = self.L, self.r
        kind = r("Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax")
        if kind == "Activation":
            a = r(*ACTIVATIONS)
            if a == "threshold":
                raise _Redraw
            if a == "glu" and t.shape[-1] % 2:
                raise _Redraw
            lay = L.Activation(a, name=self.name("act"))
        elif kind == "ReLU":
            lay = L.ReLU(max_value=r(None, 1.0, 6.0), negative_slope=r(0.0, 0.1),
                         threshold=r(0.0, 0.3), name=self.name("relu"))
        elif kind == "LeakyReLU":
            lay = L.LeakyReLU(negative_slope=r(0.3, 0.01, 0.2), name=self.name("leaky"))
        elif kind == "PReLU":
            axes = [a for a in range(1, t.rank + 1) if self.p(0.4)]
            lay = L.PReLU(shared_axes=axes or None, name=self.name("prelu"))
        elif kind == "ELU":
            lay = L.ELU(alpha=r(1.0, 0.5), name=self.name("elu"))
        else:
            ax = r(-1, *range(1, t.rank + 1)) if self.p(0.5) else -1
            lay = L.Softmax(axis=ax, name=self.name("softmax"))
        cfg = {k: v for k, v in lay.get_config().items()
               if k not in ("name", "trainable", "dtype") and "initializer" not in k
               and "regularizer" not in k and "constraint" not in k}
        self.log.append(f"{type(lay).__name__}({cfg})")
        return T(lay(t.x), t.masked)

    def norm_layer(self, t: T) -> T:
        L, r = self.L, self.r
        kind = r("BatchNormalization", "LayerNormalization", "GroupNormalization",
                 "UnitNormalization", "RMSNormalization")
        axes = list(range(1, t.rank + 1))
        if kind == "BatchNormalization":
            lay = L.BatchNormalization(axis=r(-1, *axes), epsilon=r(1e-3, 0.1),
                                       center=self.p(0.8), scale=self.p(0.8),
                                       name=self.name("bn"))
        elif kind == "LayerNormalization":
            ax = sorted(set(int(a) for a in self.rng.choice(axes, self.i(1, len(axes)))))
            lay = L.LayerNormalization(axis=ax if len(ax) > 1 or self.p(0.5) else -1,
                                       epsilon=r(1e-3, 1e-2), center=self.p(0.8),
                                       scale=self.p(0.8), rms_scaling=self.p(0.15),
                                       name=self.name("ln"))
        elif kind == "GroupNormalization":
            ax = r(-1, *axes)
            c = t.shape[ax - 1] if ax > 0 else t.shape[-1]
            groups = r(*[g for g in (1, 2, 3, 4, -1) if g == -1 or c % g == 0])
            lay = L.GroupNormalization(groups=groups, axis=ax, epsilon=r(1e-3, 1e-2),
                                       center=self.p(0.8), scale=self.p(0.8),
                                       name=self.name("gn"))
        elif kind == "UnitNormalization":
            lay = L.UnitNormalization(axis=r(-1, axes, *axes), name=self.name("unorm"))
        else:
            lay = L.RMSNormalization(axis=r(-1, *axes), name=self.name("rms"))
        keys = ("axis", "groups", "center", "scale", "rms_scaling", "epsilon")
        self.log.append(f"{kind}({ {k: v for k, v in lay.get_config().items() if k in keys} })")
        return T(lay(t.x), t.masked)

    def dense(self, t: T) -> T:
        units = self.i(1, 8)
        act = self.r("linear", "linear", *[a for a in ACTIVATIONS if a not in ("threshold", "glu")])
        lay = self.L.Dense(units, activation=act, use_bias=self.p(0.8),
                           name=self.name("dense"))
        self.log.append(f"Dense({units}, {act}) on rank {t.rank + 1}")
        return T(lay(t.x), t.masked)

    def einsum_dense(self, t: T) -> T:
        if t.rank != 2:
            raise _Redraw
        u = self.i(2, 5)
        eq, shape, bias = self.r(("abc,cd->abd", (None, u), "d"),
                                 ("abc,cde->abde", (None, u, 2), "de"),
                                 ("abc,cd->abd", (None, u), None))
        lay = self.L.EinsumDense(eq, output_shape=shape, bias_axes=bias,
                                 name=self.name("einsum_dense"))
        self.log.append(f"EinsumDense({eq}, {bias})")
        return T(lay(t.x), t.masked)

    def apply(self, lay, t: T, desc: str) -> T:
        """``lay(t.x)``, logged as ``desc`` with its shapes; an empty output is redrawn."""
        out = lay(t.x)
        if 0 in out.shape[1:]:
            raise _Redraw
        self.log.append(f"{desc} {t.shape}->{tuple(out.shape[1:])}")
        return T(out)

    def conv(self, t: T) -> T:
        L, r = self.L, self.r
        nd, fmt, cls = self.spatial_input(t)
        cin = self.chan(t, fmt)
        kind = r("Conv", "Conv", "ConvTranspose", "Depthwise", "Separable")
        if kind in ("Depthwise", "Separable") and nd == 3:
            raise _Redraw
        k = tuple(self.i(1, 4) for _ in range(nd)) if self.p(0.6) else self.i(1, 4)
        padding = r("valid", "same", "causal") if nd == 1 else r("valid", "same")
        if padding == "causal" and kind != "Conv":
            padding = "same"
        strides = self.r(1, 1, 2, tuple(self.i(1, 3) for _ in range(nd)))
        dil = 1 if self.p(0.6) else r(2, tuple(self.i(1, 2) for _ in range(nd)))
        use_bias = self.p(0.7)
        act = r(None, None, "relu", *[a for a in ACTIVATIONS if a not in ("threshold", "glu")])
        name = self.name(kind)
        if kind == "Conv":
            groups = r(*[g for g in (1, 1, 2, 3) if cin % g == 0])
            filters = groups * self.i(1, 3)
            lay = getattr(L, f"Conv{cls}")(filters, k, strides=strides, padding=padding,
                                            dilation_rate=dil, groups=groups,
                                            data_format=fmt, use_bias=use_bias,
                                            activation=act, name=name)
        elif kind == "ConvTranspose":
            s = strides if isinstance(strides, tuple) else (strides,) * nd
            kk = k if isinstance(k, tuple) else (k,) * nd
            op = None
            if self.p(0.4):
                op = tuple(self.i(0, max(si - 1, 0)) for si in s)
            lay = getattr(L, f"Conv{cls}Transpose")(self.i(1, 4), kk, strides=s,
                                                     padding=padding, output_padding=op,
                                                     dilation_rate=dil if max(s) == 1 else 1,
                                                     data_format=fmt, use_bias=use_bias,
                                                     activation=act, name=name)
        elif kind == "Depthwise":
            lay = getattr(L, f"DepthwiseConv{cls}")(k, strides=strides, padding=padding,
                                                     depth_multiplier=self.i(1, 3),
                                                     dilation_rate=dil, data_format=fmt,
                                                     use_bias=use_bias, activation=act,
                                                     name=name)
        else:
            lay = getattr(L, f"SeparableConv{cls}")(self.i(1, 4), k, strides=strides,
                                                     padding=padding,
                                                     depth_multiplier=self.i(1, 3),
                                                     dilation_rate=dil, data_format=fmt,
                                                     use_bias=use_bias, activation=act,
                                                     name=name)
        keys = ("kernel_size", "strides", "dilation_rate", "padding", "data_format", "groups",
                "output_padding", "depth_multiplier", "activation", "use_bias")
        cfg = {k: v for k, v in lay.get_config().items() if k in keys}
        return self.apply(lay, t, f"{type(lay).__name__}({cfg})")

    def pool(self, t: T) -> T:
        L, r = self.L, self.r
        nd, fmt, cls = self.spatial_input(t)
        kind = r("Max", "Average", "GlobalMax", "GlobalAverage", "Adaptive")
        if kind in ("Max", "Average"):
            ps = tuple(self.i(1, 3) for _ in range(nd)) if self.p(0.5) else self.i(1, 3)
            st = r(None, 1, 2, tuple(self.i(1, 3) for _ in range(nd)))
            lay = getattr(L, f"{kind}Pooling{cls}")(ps, strides=st, padding=r("valid", "same"),
                                                     data_format=fmt,
                                                     name=self.name(f"{kind}pool"))
            desc = f"{type(lay).__name__}({ps}, s={st}, {lay.padding}, {fmt})"
        elif kind == "Adaptive":
            if nd == 3:
                raise _Redraw
            size = tuple(self.i(1, 3) for _ in range(nd))
            lay = getattr(L, f"Adaptive{r('Max', 'Average')}Pooling{cls}")(
                size, data_format=fmt, name=self.name("adapool"))
            desc = f"{type(lay).__name__}({size}, {fmt})"
        else:
            lay = getattr(L, f"{kind}Pooling{cls}")(data_format=fmt, keepdims=self.p(0.3),
                                                     name=self.name(f"{kind}pool"))
            desc = f"{type(lay).__name__}({fmt}, keepdims={lay.keepdims})"
        return self.apply(lay, t, desc)

    def resample(self, t: T) -> T:
        L, r = self.L, self.r
        nd, fmt, cls = self.spatial_input(t)
        kind = r("ZeroPadding", "Cropping", "UpSampling", "Resizing")
        if kind == "Resizing":
            if nd != 2:
                raise _Redraw
            size = (self.i(1, 9), self.i(1, 9))
            if self.p(0.3):
                lay = L.CenterCrop(*size, data_format=fmt, name=self.name("center_crop"))
            else:
                lay = L.Resizing(*size, interpolation=r("bilinear", "nearest", "bicubic",
                                                        "lanczos3", "area"),
                                 crop_to_aspect_ratio=self.p(0.2),
                                 pad_to_aspect_ratio=self.p(0.2), data_format=fmt,
                                 antialias=self.p(0.2), name=self.name("resizing"))
            cfg = {k: v for k, v in lay.get_config().items()
                   if k not in ("name", "trainable", "dtype")}
            return self.apply(lay, t, f"{type(lay).__name__}({cfg})")
        if kind == "ZeroPadding":
            pad = tuple((self.i(0, 2), self.i(0, 2)) for _ in range(nd))
            arg = pad[0] if nd == 1 else pad
            kw = {} if nd == 1 else {"data_format": fmt}
        elif kind == "Cropping":
            sp = self.spatial(t, "channels_last" if nd == 1 else fmt)
            crop = []
            for s in sp:
                a = self.i(0, max(0, (s - 1) // 2))
                crop.append((a, self.i(0, max(0, s - 1 - a))))
            arg = tuple(crop[0]) if nd == 1 else tuple(crop)
            kw = {} if nd == 1 else {"data_format": fmt}
        else:
            arg = self.i(1, 3) if nd == 1 else tuple(self.i(1, 3) for _ in range(nd))
            kw = {} if nd == 1 else {"data_format": fmt}
            if nd == 2:
                kw["interpolation"] = r("nearest", "bilinear", "bicubic", "lanczos3")
        lay = getattr(L, f"{kind}{cls}")(arg, name=self.name(kind), **kw)
        return self.apply(lay, t, f"{type(lay).__name__}({arg}, {kw})")

    def reshape(self, t: T) -> T:
        L, r = self.L, self.r
        kind = r("Flatten", "Reshape", "Permute", "RepeatVector")
        if kind == "Flatten":
            if t.rank == 1:
                raise _Redraw
            fmt = self.fmt()
            lay = L.Flatten(data_format=fmt, name=self.name("flat"))
            desc = f"Flatten({fmt})"
        elif kind == "Reshape":
            n = int(np.prod(t.shape))
            divs = [d for d in range(1, n + 1) if n % d == 0]
            d = r(*divs)
            shape = r((d, n // d), (d, -1), (-1, d), (n,), (d, n // d, 1), (1, d, n // d))
            lay = L.Reshape(shape, name=self.name("reshape"))
            desc = f"Reshape({shape})"
        elif kind == "Permute":
            if t.rank < 2:
                raise _Redraw
            perm = tuple(int(a) + 1 for a in self.rng.permutation(t.rank))
            lay = L.Permute(perm, name=self.name("permute"))
            desc = f"Permute({perm})"
        else:
            if t.rank != 1:
                raise _Redraw
            lay = L.RepeatVector(self.i(1, 4), name=self.name("repeat"))
            desc = "RepeatVector"
        return self.apply(lay, t, desc)

    def recurrent(self, t: T) -> T:
        L, r = self.L, self.r
        if t.rank != 2:
            raise _Redraw
        kind = r("SimpleRNN", "LSTM", "GRU")
        kw = dict(return_sequences=self.p(0.6), go_backwards=self.p(0.3),
                  activation=r("tanh", "tanh", "relu", "sigmoid"), use_bias=self.p(0.85),
                  unroll=self.p(0.2))
        if kind != "SimpleRNN":
            kw["recurrent_activation"] = r("sigmoid", "hard_sigmoid", "tanh")
        if kind == "GRU":
            kw["reset_after"] = self.p(0.7)
        units = self.i(1, 5)
        if self.p(0.2):
            kw["dropout"], kw["recurrent_dropout"] = 0.3, 0.2
        if self.p(0.25):  # return_state, the states fed to a second RNN as initial_state
            first = getattr(L, kind)(units, return_state=True, name=self.name(kind), **kw)
            out, *states = first(t.x)
            kw2 = dict(kw, go_backwards=self.p(0.3))
            second = getattr(L, kind)(units, name=self.name(kind), **kw2)
            out2 = second(t.x, initial_state=states)
            self.log.append(f"{kind}({units}, return_state, {kw}) -> initial_state of "
                            f"{kind}({kw2}) masked={t.masked}")
            return T(out2, t.masked and kw2["return_sequences"])
        if self.p(0.15):  # RNN over a stack of cells
            cells = [getattr(L, f"{kind}Cell")(self.i(1, 4)) for _ in range(self.i(1, 2))]
            rs = self.p(0.5)
            lay = L.RNN(cells, return_sequences=rs, go_backwards=self.p(0.3),
                        name=self.name("rnn"))
            self.log.append(f"RNN({len(cells)} x {kind}Cell, return_sequences={rs}, "
                            f"go_backwards={lay.go_backwards}) masked={t.masked}")
            return T(lay(t.x), t.masked and rs)
        if self.p(0.3):
            merge = r("concat", "sum", "mul", "ave", None)
            if merge is None:
                kw["return_sequences"] = False
            kw.pop("go_backwards")
            inner = getattr(L, kind)(units, **kw)
            lay = L.Bidirectional(inner, merge_mode=merge, name=self.name("bidi"))
            out = lay(t.x)
            if merge is None:
                self.log.append(f"Bidirectional({kind}, merge=None, {kw})")
                return T(self.L.Concatenate(name=self.name("cat"))(out))
            self.log.append(f"Bidirectional({kind}, {merge}, {kw})")
        else:
            lay = getattr(L, kind)(units, name=self.name(kind), **kw)
            out = lay(t.x)
            self.log.append(f"{kind}({units}, {kw}) masked={t.masked}")
        return T(out, t.masked and kw["return_sequences"])

    def attention(self, t: T) -> T:
        L, r = self.L, self.r
        if t.rank == 3 and self.p(0.5):  # attention over the axes of an image
            lay = L.MultiHeadAttention(num_heads=self.i(1, 2), key_dim=self.i(1, 3),
                                       attention_axes=r((1,), (2,), (1, 2)),
                                       name=self.name("mha"))
            out = lay(t.x, t.x)
            self.log.append(f"MultiHeadAttention(attention_axes={lay._attention_axes}) "
                            f"{t.shape}")
            return T(out)
        if t.rank != 2:
            raise _Redraw
        kind = r("MultiHeadAttention", "Attention", "AdditiveAttention")
        if kind == "MultiHeadAttention" and self.p(0.3):
            lay = L.MultiHeadAttention(num_heads=self.i(1, 3), key_dim=self.i(1, 3),
                                       name=self.name("mha"))
            v = self.ops.flip(t.x, axis=1)
            out, scores = lay(t.x, v, t.x, return_attention_scores=True)
            self.log.append(f"MultiHeadAttention(query, value=flip, key) scores "
                            f"masked={t.masked}")
            if self.p(0.5):
                return T(self.L.Reshape((-1,), name=self.name("scores_flat"))(scores))
            return T(out)
        if kind == "MultiHeadAttention":
            lay = L.MultiHeadAttention(num_heads=self.i(1, 3), key_dim=self.i(1, 4),
                                       value_dim=r(None, 3), use_bias=self.p(0.8),
                                       output_shape=r(None, self.i(1, 4)),
                                       name=self.name("mha"))
            causal = self.p(0.3)
            out = lay(t.x, t.x, use_causal_mask=causal)
        elif kind == "Attention":
            lay = L.Attention(use_scale=self.p(0.5), score_mode=r("dot", "concat"),
                              name=self.name("att"))
            causal = self.p(0.3)
            out = lay([t.x, t.x], use_causal_mask=causal)
        else:
            lay = L.AdditiveAttention(use_scale=self.p(0.5), name=self.name("addatt"))
            causal = self.p(0.3)
            out = lay([t.x, t.x], use_causal_mask=causal)
        self.log.append(f"{kind}(causal={causal}) masked={t.masked}")
        return T(out, t.masked and kind != "MultiHeadAttention")

    def convlstm(self, t: T) -> T:
        """ConvLSTM1D over a (time, steps, channels) tensor, ConvLSTM2D over
        (time, rows, cols, channels)."""
        if t.rank not in (3, 4) or None in t.shape:
            raise _Redraw
        nd = t.rank - 2
        fmt = self.fmt()
        lay = getattr(self.L, f"ConvLSTM{nd}D")(
            self.i(1, 3), self.i(1, 3), padding=self.r("valid", "same"), data_format=fmt,
            return_sequences=self.p(0.5), go_backwards=self.p(0.3),
            strides=self.r(1, 2), name=self.name("convlstm"))
        out = lay(t.x)
        self.log.append(f"ConvLSTM{nd}D({lay.get_config()['padding']}, {fmt}, "
                        f"strides={lay.strides}, return_sequences={lay.return_sequences}, "
                        f"go_backwards={lay.go_backwards}) {t.shape}->{tuple(out.shape[1:])}")
        return T(out)

    def sequential(self, t: T) -> T:
        """A Sequential model of one to three simple layers, called on ``t``."""
        L = self.L
        seq = self.keras.Sequential(name=self.name("sequential"))
        seq.add(self.keras.Input(t.shape))
        for _ in range(self.i(1, 3)):
            seq.add(self.r(lambda: L.Dense(self.i(1, 4), activation="tanh"),
                           lambda: L.BatchNormalization(),
                           lambda: L.LayerNormalization(),
                           lambda: L.Activation(self.r("relu", "gelu", "softplus")))())
        self.log.append(f"Sequential({[type(l).__name__ for l in seq.layers]}) on {t.shape}")
        return T(seq(t.x), t.masked)

    def wrapper(self, t: T) -> T:
        if t.rank < 2:
            raise _Redraw
        inner = self.r("Dense", "Conv1D", "SpectralNormalization")
        if inner == "SpectralNormalization":
            conv = {2: "Conv1D", 3: "Conv2D", 4: "Conv3D"}.get(t.rank)
            base = (getattr(self.L, conv)(self.i(1, 3), 2, padding="same") if conv
                    and self.p(0.5) else self.L.Dense(self.i(1, 4)))
            lay = self.L.SpectralNormalization(base, power_iterations=self.i(1, 2),
                                               name=self.name("specnorm"))
            self.log.append(f"SpectralNormalization({type(base).__name__}) on {t.shape}")
            return T(lay(t.x))
        if inner == "Conv1D":
            if t.rank != 3:
                raise _Redraw
            lay = self.L.TimeDistributed(self.L.Conv1D(2, 2, padding="same"),
                                         name=self.name("td"))
        else:
            lay = self.L.TimeDistributed(self.L.Dense(self.i(1, 4), activation="tanh"),
                                         name=self.name("td"))
        self.log.append(f"TimeDistributed({inner}) on {t.shape}")
        return T(lay(t.x), t.masked)

    def masking(self, t: T) -> T:
        if t.rank != 2 or t.masked:
            raise _Redraw
        lay = self.L.Masking(mask_value=0.0, name=self.name("masking"))
        # zero some steps so that the mask is not all-true (ops on the fed value are not
        # possible here: the tensor is already symbolic), hence ReLU-like zeros suffice
        z = self.L.ReLU(threshold=0.5, name=self.name("relu_th"))(t.x)
        self.log.append("ReLU(threshold=0.5) Masking")
        return T(lay(z), True)

    def op(self, t: T) -> T:
        ops, r = self.ops, self.r
        x = t.x
        rank = t.rank
        kind = r("unary", "unary", "reduce", "transpose", "slice", "binary_const", "flip",
                 "roll", "cumsum", "softmax", "split", "expand", "image", "pad", "sort",
                 "clip", "where", "tile", "norm", "index")
        if kind == "index":
            g = r("one_hot_argmax", "take_along_argsort", "take", "compare")
            ax = self.i(1, rank)
            if g == "one_hot_argmax":
                y = ops.one_hot(ops.argmax(x, axis=-1), t.shape[-1])
            elif g == "take_along_argsort":
                y = ops.take_along_axis(x, ops.argsort(x, axis=ax), axis=ax)
            elif g == "take":
                n = x.shape[ax]
                if n is None:
                    raise _Redraw
                idx = [int(i) for i in self.rng.integers(0, n, self.i(1, 4))]
                y = ops.take(x, idx, axis=ax)
            else:
                y = ops.cast(ops.greater(x, 0.2), "float32") * x
            desc = f"ops.{g}(axis={ax})"
        elif kind == "unary":
            f = r("abs", "square", "tanh", "sin", "cos", "exp", "negative", "sigmoid", "relu",
                  "silu", "sign", "floor", "erf", "softplus", "log1p_abs", "sqrt_abs",
                  "gelu", "arctan", "log_sigmoid", "relu6", "hard_sigmoid", "elu", "selu")
            if f == "log1p_abs":
                y = ops.log1p(ops.abs(x))
            elif f == "sqrt_abs":
                y = ops.sqrt(ops.abs(x) + 1.0)
            elif f == "exp":
                y = ops.exp(ops.tanh(x))
            else:
                y = getattr(ops, f)(x)
            desc = f"ops.{f}"
        elif kind == "reduce":
            f = r("sum", "mean", "max", "min", "std", "var", "prod", "logsumexp")
            axis = r(-1, *range(1, rank + 1), tuple(range(1, rank + 1)))
            keep = self.p(0.5)
            y = getattr(ops, f)(x, axis=axis, keepdims=keep)
            if len(y.shape) < 2:
                raise _Redraw
            desc = f"ops.{f}(axis={axis}, keepdims={keep})"
        elif kind == "transpose":
            if rank < 2:
                raise _Redraw
            g = r("transpose", "swapaxes", "moveaxis")
            if g == "transpose":
                perm = (0,) + tuple(int(a) + 1 for a in self.rng.permutation(rank))
                y = ops.transpose(x, perm)
                desc = f"ops.transpose({perm})"
            else:
                a, b = (int(v) + 1 for v in self.rng.choice(rank, 2, replace=False))
                y = getattr(ops, g)(x, a, b)
                desc = f"ops.{g}({a}, {b})"
        elif kind == "slice":
            ax = self.i(1, rank)
            n = x.shape[ax]
            if n < 2:
                raise _Redraw
            a = self.i(0, n - 2)
            step = self.i(1, 2)
            idx = [slice(None)] * (rank + 1)
            idx[ax] = slice(a, None, step) if self.p(0.5) else slice(a, n - self.i(0, 1), step)
            y = x[tuple(idx)]
            desc = f"getitem axis {ax} {idx[ax]}"
        elif kind == "binary_const":
            f = r("add", "multiply", "subtract", "divide_by")
            c = float(np.round(self.rng.uniform(0.5, 2.0), 2))
            y = {"add": lambda: x + c, "multiply": lambda: x * c,
                 "subtract": lambda: c - x, "divide_by": lambda: x / c}[f]()
            desc = f"x {f} {c}"
        elif kind == "flip":
            ax = r(None, *range(1, rank + 1))
            if ax is None:
                raise _Redraw
            y = ops.flip(x, axis=ax)
            desc = f"ops.flip({ax})"
        elif kind == "roll":
            ax = self.i(1, rank)
            sh = self.i(-2, 3)
            y = ops.roll(x, sh, axis=ax)
            desc = f"ops.roll({sh}, {ax})"
        elif kind == "cumsum":
            ax = self.i(1, rank)
            y = r(ops.cumsum, ops.cumprod)(x, axis=ax)
            desc = f"ops.cumsum/prod({ax})"
        elif kind == "softmax":
            ax = r(-1, *range(1, rank + 1))
            f = r("softmax", "log_softmax")
            y = getattr(ops, f)(x, axis=ax)
            desc = f"ops.{f}({ax})"
        elif kind == "split":
            ax = self.i(1, rank)
            n = x.shape[ax]
            if n < 2:
                raise _Redraw
            parts = ops.split(x, [1] if n == 2 else [1, n - 1], axis=ax)
            y = r(*parts) if self.p(0.5) else ops.concatenate(parts[::-1], axis=ax)
            desc = f"ops.split(axis={ax})"
        elif kind == "expand":
            if rank > 3:
                raise _Redraw
            ax = self.i(1, rank + 1)
            y = ops.expand_dims(x, ax)
            if self.p(0.5):
                y = ops.squeeze(y, axis=ax)
            desc = f"ops.expand_dims({ax})"
        elif kind == "image":
            if rank != 3:
                raise _Redraw
            g = r("resize", "depth_to_space", "pad", "crop")
            fmt = self.fmt()
            sp = self.spatial(t, fmt)
            if g == "resize":
                size = (self.i(2, 8), self.i(2, 8))
                interp = r("bilinear", "nearest", "bicubic", "lanczos3", "area")
                anti = self.p(0.3)
                y = ops.image.resize(x, size, interpolation=interp, antialias=anti,
                                     data_format=fmt,
                                     crop_to_aspect_ratio=self.p(0.2))
                desc = f"ops.image.resize({size}, {interp}, antialias={anti}, {fmt})"
            elif g == "depth_to_space":
                raise _Redraw
            elif g == "pad":
                tgt = (sp[0] + self.i(0, 3), sp[1] + self.i(0, 3))
                y = ops.image.pad_images(x, target_height=tgt[0], target_width=tgt[1],
                                         data_format=fmt)
                desc = f"ops.image.pad_images({tgt}, {fmt})"
            else:
                tgt = (self.i(1, sp[0]), self.i(1, sp[1]))
                y = ops.image.crop_images(x, target_height=tgt[0], target_width=tgt[1],
                                          data_format=fmt)
                desc = f"ops.image.crop_images({tgt}, {fmt})"
        elif kind == "pad":
            pw = [(0, 0)] + [(self.i(0, 2), self.i(0, 1)) for _ in range(rank)]
            mode = r("constant", "reflect", "symmetric")
            if mode == "reflect" and any(max(p) >= s for p, s in zip(pw[1:], t.shape)):
                raise _Redraw
            y = ops.pad(x, pw, mode=mode)
            desc = f"ops.pad({pw}, {mode})"
        elif kind == "sort":
            g = r("sort", "top_k")
            if g == "sort":
                ax = r(-1, *range(1, rank + 1))
                y = ops.sort(x, axis=ax)
            else:
                k = self.i(1, t.shape[-1])
                y = ops.top_k(x, k, sorted=True)[0]
            desc = f"ops.{g}"
        elif kind == "clip":
            y = ops.clip(x, -0.5, 0.7)
            desc = "ops.clip"
        elif kind == "where":
            y = ops.where(x > 0.1, x, ops.tanh(x) * 0.5)
            desc = "ops.where"
        elif kind == "tile":
            if rank > 3:
                raise _Redraw
            reps = [1] + [self.i(1, 2) for _ in range(rank)]
            y = r(lambda: ops.tile(x, reps), lambda: ops.repeat(x, 2, axis=self.i(1, rank)))()
            desc = "ops.tile/repeat"
        else:
            ax = r(-1, *range(1, rank + 1))
            y = ops.expand_dims(ops.norm(x, axis=ax), -1) if rank < 4 else ops.abs(x)
            desc = f"ops.norm({ax})"
        if len(y.shape) < 2 or 0 in y.shape[1:]:
            raise _Redraw
        self.log.append(f"{desc} {t.shape}->{tuple(y.shape[1:])}")
        return T(y)

    def misc(self, t: T) -> T:
        L, r = self.L, self.r
        kind = r("Dropout", "GaussianNoise", "Rescaling", "SpatialDropout", "Identity",
                 "ActivityRegularization", "Normalization", "GaussianDropout", "AlphaDropout")
        if kind == "Normalization":  # statistics given in the config, along one axis or two
            axis = r(-1, None, *range(1, t.rank + 1)) if t.rank > 1 else -1
            if axis is None or None in t.shape:
                raise _Redraw
            n = t.shape[axis - 1] if axis > 0 else t.shape[-1]
            mean = [float(v) for v in np.round(self.rng.normal(0, 0.5, n), 3)]
            var = [float(v) for v in np.round(self.rng.uniform(0.3, 2.0, n), 3)]
            lay = L.Normalization(axis=axis, mean=mean, variance=var,
                                  invert=self.p(0.2), name=self.name("norm"))
        elif kind == "GaussianDropout":
            lay = L.GaussianDropout(0.3, name=self.name("gdrop"))
        elif kind == "AlphaDropout":
            lay = L.AlphaDropout(0.3, name=self.name("adrop"))
        elif kind == "Dropout":
            lay = L.Dropout(0.5, name=self.name("drop"))
        elif kind == "GaussianNoise":
            lay = L.GaussianNoise(0.5, name=self.name("noise"))
        elif kind == "Rescaling":
            lay = L.Rescaling(r(0.5, 1 / 255.0, 2.0), offset=r(0.0, -1.0),
                              name=self.name("rescale"))
        elif kind == "SpatialDropout":
            if t.rank not in (2, 3, 4):
                raise _Redraw
            lay = getattr(L, f"SpatialDropout{t.rank - 1}D")(0.3, name=self.name("sdrop"))
        elif kind == "Identity":
            lay = L.Identity(name=self.name("identity"))
        else:
            lay = L.ActivityRegularization(l1=0.01, name=self.name("actreg"))
        self.log.append(kind)
        return T(lay(t.x), t.masked)

    # ------------------------------------------------------------------ merges
    def merge(self, a: T, b: T) -> T:
        L, r = self.L, self.r
        kind = r("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum",
                 "Concatenate", "Dot", "ops")
        if None in a.shape + b.shape:
            # lengths unknown to Keras may differ (a pooled copy): such a merge runs only
            # where they broadcast, and load_keras traces the model at other lengths
            raise _Redraw
        if kind == "Concatenate":
            if a.rank != b.rank:
                raise _Redraw
            axes = [ax for ax in range(1, a.rank + 1)
                    if all(sa == sb for i, (sa, sb) in enumerate(zip(a.shape, b.shape))
                           if i != ax - 1)]
            if not axes:
                raise _Redraw
            ax = r(*axes)
            ax = ax - a.rank - 1 if self.p(0.5) else ax
            out = L.Concatenate(axis=ax, name=self.name("cat"))([a.x, b.x])
            self.log.append(f"Concatenate({ax}) {a.shape}+{b.shape}")
        elif kind == "Dot":
            if a.rank not in (1, 2) or b.rank != a.rank:
                raise _Redraw
            if a.rank == 1:
                if a.shape != b.shape:
                    raise _Redraw
                axes = 1
            else:
                pairs = [(i, j) for i in (1, 2) for j in (1, 2) if a.shape[i - 1] == b.shape[j - 1]]
                if not pairs:
                    raise _Redraw
                axes = r(*pairs)
            norm = self.p(0.4)
            out = L.Dot(axes=axes, normalize=norm, name=self.name("dot"))([a.x, b.x])
            self.log.append(f"Dot(axes={axes}, normalize={norm}) {a.shape}.{b.shape}")
        elif kind == "ops":
            if a.shape != b.shape:
                raise _Redraw
            f = r("add", "multiply", "maximum", "subtract", "stack_mean", "matmul")
            if f == "stack_mean":
                out = self.ops.mean(self.ops.stack([a.x, b.x], axis=1), axis=1)
            elif f == "matmul":
                if a.rank < 2:
                    raise _Redraw
                out = self.ops.matmul(a.x, self.ops.swapaxes(b.x, -1, -2))
            else:
                out = getattr(self.ops, f)(a.x, b.x)
            self.log.append(f"ops.{f} {a.shape},{b.shape}")
            return T(out)
        else:
            if a.shape != b.shape and not (kind != "Subtract" and self._bcast(a, b)):
                raise _Redraw
            ins = [a.x, b.x] + ([a.x] if kind != "Subtract" and self.p(0.2) else [])
            out = getattr(L, kind)(name=self.name(kind))(ins)
            self.log.append(f"{kind} of {len(ins)} {a.shape},{b.shape} "
                            f"masked={a.masked},{b.masked}")
        return T(out, (a.masked or b.masked) and kind in ("Add", "Subtract", "Multiply",
                                                          "Average", "Maximum", "Minimum",
                                                          "Concatenate"))

    @staticmethod
    def _bcast(a: T, b: T) -> bool:
        return a.rank == b.rank and all(x == y or y == 1 for x, y in zip(a.shape, b.shape))

    # ------------------------------------------------------------------ structure
    BLOCKS = ("act_layer", "norm_layer", "dense", "conv", "conv", "pool", "resample",
              "reshape", "recurrent", "recurrent", "attention", "op", "op", "misc", "wrapper",
              "masking", "einsum_dense", "convlstm", "sequential")

    def block(self, t: T) -> T:
        for _ in range(30):
            kind = self.r(*self.BLOCKS)
            try:
                out = getattr(self, kind)(t)
            except _Redraw:
                continue
            except Exception:  # noqa: BLE001  (Keras rejects the combination: draw again)
                continue
            if out.rank < 1 or out.size > 4000 or 0 in out.shape:
                continue
            return out
        return t

    def chain(self, t: T, n: int) -> T:
        for _ in range(n):
            t = self.block(t)
        return t

    def nested(self, t: T) -> T:
        """A Functional sub-model over a chain of blocks, called on ``t`` (and maybe shared:
        called again on another tensor of the same shape)."""
        keras = self.keras
        inp = keras.Input(t.shape, name=self.name("sub_in"))
        self.log.append(f"nested model on {t.shape}: [")
        sub_t = self.chain(T(inp), self.i(1, 3))
        self.log.append("]")
        if sub_t.x is inp:
            raise _Redraw
        sub = keras.Model(inp, sub_t.x, name=self.name("submodel"))
        out = sub(t.x)
        if self.p(0.3):
            other = self.ops.flip(t.x, axis=1) if t.rank >= 1 else t.x
            out2 = sub(other)
            self.log.append("shared nested model called twice")
            if tuple(out.shape) == tuple(out2.shape):
                out = self.L.Add(name=self.name("add_shared"))([out, out2])
        return T(out)

    def shared(self, t: T) -> T:
        lay = self.L.Dense(self.i(1, 5), name=self.name("shared_dense"))
        a = lay(t.x)
        b = lay(self.ops.flip(t.x, axis=-1))
        self.log.append(f"shared Dense called twice on {t.shape}")
        return T(self.L.Add(name=self.name("add"))([a, b]), t.masked)

    def model(self):
        keras = self.keras
        tensors = [self.new_input()]
        if self.p(0.25):
            tensors.append(self.new_input())
        for _ in range(self.i(2, 6)):
            t = tensors[int(self.rng.integers(len(tensors)))]
            what = self.r("chain", "chain", "chain", "merge", "nested", "shared")
            try:
                if what == "chain":
                    out = self.chain(t, self.i(1, 3))
                elif what == "merge":
                    other = tensors[int(self.rng.integers(len(tensors)))]
                    if other is t:
                        other = self.chain(t, self.i(1, 2))
                    out = self.merge(t, other)
                elif what == "nested":
                    out = self.nested(t)
                else:
                    out = self.shared(t)
            except Exception:  # noqa: BLE001
                continue
            tensors.append(out)
        # every input reaches an output: merge flattened branches when there are two inputs
        outs = [tensors[-1]]
        if len(self.inputs) == 2:
            flat = [self.L.Flatten(name=self.name("flat_out"))(t.x) if t.rank > 1 else t.x
                    for t in tensors[-2:]]
            if len(flat) == 2:
                outs = [T(self.L.Concatenate(name=self.name("cat_out"))(flat))]
        if self.p(0.25) and len(tensors) > 2:
            outs.append(tensors[int(self.rng.integers(1, len(tensors) - 1))])
        return keras.Model(self.inputs, [o.x for o in outs] if len(outs) > 1 else outs[0].x,
                           name="random")


def build(seed: int):
    """``(model, inputs, description)`` for ``seed``: a Keras Functional model that Keras
    runs on ``inputs`` (a list of arrays, batch of :data:`BATCH`) with finite outputs, or
    ``None`` when no such model was drawn in a few tries."""
    import keras

    for attempt in range(5):
        rng = np.random.default_rng([seed, attempt])
        keras.utils.clear_session()
        b = Builder(rng)
        try:
            model = b.model()
            perturb_keras(model, rng=rng, kernels=True)
            ref = _as_list(model(b.feeds if len(b.feeds) > 1 else b.feeds[0], training=False))
        except Exception:  # noqa: BLE001  (Keras cannot build or run it: draw again)
            continue
        if all(r.size and np.all(np.isfinite(r)) for r in ref) and len(model.layers) > len(
                b.inputs):
            return model, b.feeds, b.log
    return None


def _as_list(y) -> list[np.ndarray]:
    if isinstance(y, (list, tuple)):
        return [np.asarray(a) for a in y]
    return [np.asarray(y)]


def rel_err(ours, ref) -> float:
    """The largest difference relative to the largest reference value, which counts as at
    least 1e-2: with :data:`TOL` that passes absolute differences up to 1e-6, so an output
    that is zero up to float32 rounding (seen on Keras's torch backend: 2e-7 apart, which
    relative to a 1e-6 floor was a 0.2 "mismatch") is not one."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    if ours.shape != ref.shape:
        return float("inf")
    if ref.size == 0:
        return 0.0
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-2))


def check(seed: int, directory) -> dict:
    """Build the model of ``seed``, save it as ``.keras`` and ``.h5``, load both with
    ``load_keras`` and compare with Keras. Returns ``{"seed", "status", "detail", "log"}``,
    ``status`` one of ``ok``, ``skip``, ``refused``, ``error``, ``mismatch`` (the worst over
    the two formats)."""
    import keras

    from model_import import KerasImportError, load_keras

    directory = pathlib.Path(directory)
    built = build(seed)
    if built is None:
        return {"seed": seed, "status": "skip", "detail": "no runnable model drawn", "log": []}
    model, feeds, log = built
    x = feeds if len(feeds) > 1 else feeds[0]
    ref = _as_list(model(x, training=False))
    rank = {"ok": 0, "skip": 1, "refused": 2, "mismatch": 3, "error": 4}
    result = {"seed": seed, "status": "ok", "detail": "", "log": log}

    def worse(status, detail):
        if rank[status] > rank[result["status"]]:
            result["status"] = status
        result["detail"] = (result["detail"] + " | " + detail).strip(" |")

    for ext in (".keras", ".h5"):
        path = directory / f"random_{seed}{ext}"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.save(path)
        except Exception as e:  # noqa: BLE001  (a Keras limitation)
            worse("skip", f"{ext}: Keras cannot save: {type(e).__name__}: {e}"[:300])
            continue
        try:
            m = load_keras(path)
            ours = _as_list(m(x))
        except KerasImportError as e:
            worse("refused", f"{ext}: {type(e).__name__}: {e}"[:500])
            continue
        except Exception as e:  # noqa: BLE001
            worse("error", f"{ext}: {type(e).__name__}: {e}"[:500] + "\n"
                  + "".join(traceback.format_exception(e)[-4:]))
            continue
        if len(ours) != len(ref):
            worse("mismatch", f"{ext}: {len(ours)} outputs, Keras {len(ref)}")
            continue
        errs = [rel_err(o, r) for o, r in zip(ours, ref)]
        if max(errs) > TOL:
            detail = f"{ext}: relative errors {errs}"
            if ext == ".h5":  # is Keras itself consistent with its own .h5?
                try:
                    again = _as_list(keras.models.load_model(path, compile=False)(
                        x, training=False))
                    if max(rel_err(a, r) for a, r in zip(again, ref)) > TOL:
                        detail += " (Keras's reloaded .h5 differs from Keras too)"
                except Exception as e:  # noqa: BLE001
                    detail += f" (Keras cannot reload its .h5: {type(e).__name__})"
            worse("mismatch", detail)
    return result


def main(argv=None) -> None:
    import argparse
    import time

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--verbose", action="store_true", help="print each model's layers")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as d:
        for seed in range(args.start, args.start + args.count):
            print(f"start {seed}", flush=True)  # a crash inside XLA ends the process here
            t0 = time.time()
            res = check(seed, d)
            for f in pathlib.Path(d).iterdir():
                f.unlink()
            counts[res["status"]] = counts.get(res["status"], 0) + 1
            print(f"seed {seed} {res['status']} {time.time() - t0:.1f}s {res['detail']}",
                  flush=True)
            if args.verbose or res["status"] in ("error", "mismatch"):
                print("    " + "\n    ".join(res["log"]), flush=True)
    print("summary", counts, flush=True)


if __name__ == "__main__":
    main()
