"""``SpectralNormalization`` (Keras 3, and tf.keras 2.13+): the wrapped layer as saved.

At inference (``training=False``) the wrapper only calls its layer: the power iteration that
divides the kernel by its largest singular value runs in training and writes the result back
into the kernel, so the saved kernel is the one used. Keras 3 then casts the output to the
input's dtype (an ``Embedding`` fed integer ids returns integers there; tf.keras 2 does not
cast). The wrapper drops Keras masks.

Weights: the wrapped layer's plus ``vector_u (1, kernel.shape[-1])``, the power iteration's
state, which inference does not read and the converter drops. A Keras 3 weights file
(``.keras``, ``.weights.h5``; tf.keras 2's ``.keras`` too) keeps the wrapper's own variables,
``[kernel, vector_u]`` (the kernel is tracked twice), then the wrapped layer's under
``layer/``; a legacy ``.h5`` lists the trainable weights, then the non-trainable ones:
``[kernel, bias, vector_u]``, or ``[kernel, vector_u, bias]`` when the wrapper or its layer
is frozen. The wrapped layer's arrays are taken from ``layer/`` in the first case and from
around ``vector_u`` in the other, which is why only layers whose weights are a kernel and
an optional 1-D bias (or an ``Embedding``'s table) are accepted.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from model_import._errors import KerasImportError
from model_import._layers.registry import LayerImpl, register_layer
from model_import._layers.sequence import _apply, _groups, convert_inner

#: the wrapped layers whose weights are ``[kernel]``, ``[kernel, 1-D bias]`` or
#: ``[embeddings]`` (what the weight orders above need to tell ``vector_u`` apart)
_SPECTRAL_INNER = frozenset({
    "Dense", "Conv1D", "Conv2D", "Conv3D", "Convolution1D", "Convolution2D", "Convolution3D",
    "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose", "Convolution2DTranspose",
    "Convolution3DTranspose", "DepthwiseConv1D", "DepthwiseConv2D", "Embedding",
})


@register_layer("SpectralNormalization")
def _spectral_normalization(config, ctx):
    cls, cfg, inner = convert_inner(config["layer"], ctx)
    if cls not in _SPECTRAL_INNER:
        raise ctx.error(f"it wraps a {cls} layer; SpectralNormalization is converted around "
                        f"{', '.join(sorted(_SPECTRAL_INNER))} (layers whose weights are a "
                        "kernel and an optional bias, or an embedding table)")
    k = inner.n_weights
    if k is None:
        raise ctx.error("the wrapped layer does not say how many weights it has")
    major = ctx.keras_major

    def call(params, x, *, rt):
        y = _apply(inner, params, x, rt, major)
        return y.astype(x.dtype) if major >= 3 else y

    def convert(w: Sequence[np.ndarray]) -> dict:
        w = list(w)
        if not w:
            raise KerasImportError(f"layer {ctx.layer_name!r} (SpectralNormalization): no "
                                   "weights", path=ctx.path)
        out = np.shape(w[0])[-1]

        def is_u(a) -> bool:
            return np.ndim(a) == 2 and np.shape(a) == (1, out)

        if len(w) == k + 2 and is_u(w[1]) and np.shape(w[0]) == np.shape(w[2]):
            ours = w[2:]  # Keras 3 file: own [kernel, vector_u], then layer/
        elif len(w) == k + 1 and is_u(w[-1]):
            ours = w[:-1]  # legacy .h5: [kernel, (bias,) vector_u]
        elif len(w) == k + 1 and k >= 2 and is_u(w[1]):
            ours = [w[0], *w[2:]]  # legacy .h5, frozen: [kernel, vector_u, bias]
        else:
            raise KerasImportError(
                f"layer {ctx.layer_name!r} (SpectralNormalization around {cls}): expected the "
                f"wrapped layer's {k} weight array(s) and vector_u (1, {out}), the file has "
                f"shapes {[np.shape(a) for a in w]}", path=ctx.path)
        return inner.convert_weights(ours)

    return LayerImpl(call=call, convert_weights=convert, n_weights=None, compute_mask="drop",
                     weight_groups=_groups("layer", inner), data_format=inner.data_format,
                     param_shapes=inner.param_shapes)
