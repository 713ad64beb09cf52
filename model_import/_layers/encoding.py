"""Keras 3's categorical preprocessing layers: CategoryEncoding, Discretization and
IntegerLookup.

They are not differentiable (their outputs are counts and bin indices: the gradient with
respect to their inputs is zero), but tabular models contain them, so a model must run
through them with Keras's values exactly. Semantics are Keras 3's (tf.keras 2's layers
check ranges and ranks differently and are refused):

* ``CategoryEncoding(num_tokens, output_mode)``: ``one_hot`` (an input ``(..., 1)`` of rank
  2 or more loses that axis; every id becomes a ``num_tokens`` vector), ``multi_hot`` (ids
  truncated to integers, one-hot, maximum over axis 1, or over the batch for a rank-1
  input, as Keras reduces), ``count`` (the sum over that axis, each id weighted by
  ``count_weights`` when given). Ids outside ``[0, num_tokens)`` encode nothing (Keras's
  JAX backend; its NumPy backend raises for ids past the end); float ids are compared with
  the integers as the JAX backend does (``2.0`` is id 2, ``2.5`` no id), except in
  ``multi_hot``, which truncates them first. The output dtype is the layer's dtype
  (float32 under a mixed policy).
* ``Discretization(bin_boundaries)``: the index of the bin, ``sum(x >= b for b in
  boundaries)`` (``np.digitize``); NaN falls in the last bin. The boundaries of an adapted
  layer are in its config (Keras keeps no weights for them). The comparison follows the
  backend Keras ran on (``ConvertContext.backend``): its NumPy backend compares inputs with
  the config's boundaries exactly (integers as integers, floats as float32 values), its JAX,
  TensorFlow and torch backends with the boundaries rounded to float32, integer inputs cast
  to float32 first. They differ for an input equal to a boundary's float32 rounding when
  that is below the boundary (``0.7`` -> ``0.69999999``: bin 2 on JAX, 1 on NumPy) and for
  integers near a boundary beyond ``2**24`` in magnitude or one that is no float32. An
  unknown backend (a ``.keras`` archive) is computed as on JAX, with a ``BackendWarning``
  where the boundaries make the backends differ. ``output_mode`` ``one_hot``,
  ``multi_hot`` and ``count`` encode the indices as CategoryEncoding does, in the layer's
  compute dtype; ``int`` returns int32.
* ``IntegerLookup(vocabulary=[...])`` (the vocabulary in the config): index layout
  ``[mask token (int output only)] [num_oov_indices OOV indices] [vocabulary]``; the mask
  token gives index 0 (``int``) or encodes nothing (other modes); an id outside the
  vocabulary gets the OOV index, ``id mod num_oov_indices`` (``oov_method="floormod"``) when
  there are several, and ``-1`` (``int``; nothing in other modes) with
  ``num_oov_indices=0``, where Keras raises. A vocabulary that starts with the special tokens
  has them stripped, as in Keras. ``one_hot``/``multi_hot``/``count`` encode the indices over
  ``vocabulary_size`` (``max_tokens`` with ``pad_to_max_tokens``). Keras returns int64 in
  every mode; the port returns int32, the same values (JAX without 64-bit mode). Refused: an
  adapted vocabulary or a vocabulary file (kept outside the config), ``invert``,
  ``tf_idf``, ``oov_method="farmhash"``, ids beyond int32.

``sparse=True`` is refused: Keras returns a sparse tensor there, and its JAX backend's
sparse multi-hot path differs from the dense one (negative ids set id 0, float ids are not
truncated). StringLookup, Hashing and HashedCrossing have no converter: they read strings,
or hash the decimal string of an integer (FarmHash/SipHash), which has no array form in JAX.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from model_import._layers.registry import BackendWarning, LayerImpl, register_layer

_MODES = ("one_hot", "multi_hot", "count")


def _policy_name(config: Mapping[str, Any]) -> str:
    dt = config.get("dtype")
    if isinstance(dt, Mapping):
        dt = (dt.get("config") or {}).get("name")
    return str(dt or "float32")


def _dtype(config: Mapping[str, Any], compute: bool, ctx) -> jnp.dtype:
    """The layer's variable dtype (``compute=False``) or compute dtype under its policy."""
    name = _policy_name(config)
    if name.startswith("mixed_"):
        name = name[len("mixed_"):] if compute else "float32"
    try:
        return jnp.dtype(name)
    except TypeError as e:
        raise ctx.error(f"dtype policy {name!r} is not supported") from e


def _refuse_common(config, ctx, what: str) -> None:
    if ctx.keras_major < 3:
        raise ctx.error(f"tf.keras 2's {what} is not supported (it checks id ranges and ranks "
                        "differently from Keras 3's); save the model with Keras 3")
    if config.get("sparse"):
        raise ctx.error("sparse=True is not supported: Keras returns a sparse tensor, whose "
                        "values differ from the dense encoding on some inputs (JAX backend); "
                        "save the model with sparse=False")


def encode(x, mode: str, depth: int, dtype, count_weights=None):
    """Keras 3's dense ``encode_categorical_inputs`` for ``one_hot``/``multi_hot``/``count``
    (see the module docstring)."""
    x = jnp.asarray(x)
    if x.ndim == 0:
        x = x[None]
    axis = 1 if x.ndim > 1 else 0
    if mode == "multi_hot":
        return jnp.max(jax.nn.one_hot(x.astype(jnp.int32), depth, dtype=dtype), axis=axis)
    if mode == "one_hot":
        if x.ndim > 1 and x.shape[-1] == 1:
            x = x.reshape(x.shape[:-1])
        return jax.nn.one_hot(x, depth, dtype=dtype)
    if count_weights is None:
        return jnp.sum(jax.nn.one_hot(x, depth, dtype=dtype), axis=axis)
    w = jnp.asarray(count_weights, dtype)
    return jnp.sum(jax.nn.one_hot(x, depth, dtype=dtype) * w[..., None], axis=axis)


@register_layer("CategoryEncoding")
def _category_encoding(config, ctx):
    _refuse_common(config, ctx, "CategoryEncoding")
    mode = config.get("output_mode", "multi_hot")
    mode = "multi_hot" if mode == "binary" else mode
    if mode not in _MODES:
        raise ctx.error(f"unknown output_mode {mode!r}; expected one of {_MODES}")
    depth = config.get("num_tokens")
    if depth is None or int(depth) < 1:
        raise ctx.error(f"num_tokens must be a positive integer, got {depth!r}")
    depth = int(depth)
    # Keras passes the layer's `dtype` (the variable dtype) to the encoding; count_weights
    # are converted to the compute dtype and set the output dtype.
    dtype = _dtype(config, compute=False, ctx=ctx)
    cw_dtype = _dtype(config, compute=True, ctx=ctx)

    def call(params, x, count_weights=None, *, rt):
        if count_weights is not None:
            if mode != "count":
                raise ValueError("count_weights is only used with output_mode='count'")
            return encode(x, mode, depth, cw_dtype, count_weights)
        return encode(x, mode, depth, dtype)

    return LayerImpl(call=call, compute_mask="drop")


def _float_thresholds(bounds: np.ndarray) -> np.ndarray:
    """The smallest float32 at or above each boundary: a float32 ``x`` is ``>= b`` (compared
    exactly, in float64) iff it is ``>=`` that value."""
    c = bounds.astype(np.float32)
    low = c.astype(np.float64) < bounds
    c[low] = np.nextafter(c[low], np.float32(np.inf))
    return c


def float32_bounds(bounds: np.ndarray) -> np.ndarray:
    """``bounds`` rounded to the nearest float32 (beyond float32's range: infinite), as
    Keras's JAX, TensorFlow and torch backends make a list of boundaries a tensor."""
    with np.errstate(over="ignore"):
        return bounds.astype(np.float32)


def digitize(x, bounds: np.ndarray, *, as_float32: bool = False):
    """``np.digitize(x, bounds)`` (non-decreasing float64 ``bounds``, compared exactly: Keras's
    NumPy backend) as int32, for float32 or integer ``x``. ``as_float32``: as Keras's JAX,
    TensorFlow and torch backends, ``x`` (integers too) cast to float32 and compared with
    :func:`float32_bounds` (``jnp.digitize``). NaN falls in the last bin either way."""
    n = len(bounds)
    x = jnp.asarray(x)
    if as_float32:
        x = x.astype(jnp.float32)
        idx = jnp.sum(x[..., None] >= jnp.asarray(float32_bounds(bounds)), axis=-1,
                      dtype=jnp.int32)
        return jnp.where(jnp.isnan(x), jnp.int32(n), idx)
    if jnp.issubdtype(x.dtype, jnp.integer):
        x = x.astype(jnp.int32)
        t = np.ceil(bounds)  # an integer is >= b iff it is >= ceil(b)
        info = np.iinfo(np.int32)
        always = int(np.sum(t <= info.min))
        mid = t[(t > info.min) & (t <= info.max)].astype(np.int32)
        if mid.size == 0:
            return jnp.full(x.shape, always, jnp.int32)
        return always + jnp.sum(x[..., None] >= jnp.asarray(mid), axis=-1, dtype=jnp.int32)
    x = x.astype(jnp.float32)
    c = jnp.asarray(_float_thresholds(bounds))
    idx = jnp.sum(x[..., None] >= c, axis=-1, dtype=jnp.int32)
    return jnp.where(jnp.isnan(x), jnp.int32(n), idx)


@register_layer("Discretization")
def _discretization(config, ctx):
    _refuse_common(config, ctx, "Discretization")
    bounds = config.get("bin_boundaries")
    if bounds is None:
        raise ctx.error("its config has no bin_boundaries (a layer built with num_bins that "
                        "was never adapted, or saved by a Keras that kept the adapted state "
                        "elsewhere); Keras itself cannot call it")
    try:
        bounds = np.asarray([float(b) for b in bounds], np.float64)
    except (TypeError, ValueError) as e:
        raise ctx.error(f"bin_boundaries must be a list of numbers, got {bounds!r}") from e
    if np.isnan(bounds).any() or np.any(np.diff(bounds) < 0):
        raise ctx.error("bin_boundaries must be non-decreasing numbers (np.digitize's "
                        f"increasing bins), got {bounds.tolist()}")
    mode = config.get("output_mode", "int")
    if mode not in ("int",) + _MODES:
        raise ctx.error(f"unknown output_mode {mode!r}; expected 'int' or one of {_MODES}")
    dtype = _dtype(config, compute=True, ctx=ctx)
    depth = len(bounds) + 1
    backend, name = ctx.backend, ctx.layer_name
    rounded = float32_bounds(bounds)
    # where the backends agree: floats, with float32 boundaries; integers, with float32
    # boundaries below 2**24 in magnitude (every integer up to there is a float32, and one
    # beyond rounds to a float32 beyond every boundary)
    floats_agree = bool(np.all(rounded.astype(np.float64) == bounds))
    ints_agree = floats_agree and bool(np.all(np.abs(bounds) < 2.0 ** 24))
    advice = ("The file does not record the backend Keras ran on, so it is computed as on "
              "JAX; pass load_keras(..., keras_backend='numpy') for a file written there, "
              "keras_backend='jax' (or 'tensorflow', 'torch') to silence this")
    if backend is None and not floats_agree:
        odd = [float(b) for b, r in zip(bounds, rounded) if float(r) != b][:3]
        warnings.warn(
            f"layer {name!r} (Discretization): bin_boundaries {odd} are not float32 values. "
            "Keras's JAX, TensorFlow and torch backends compare inputs with their float32 "
            "roundings, its NumPy backend with the exact values (an input of float32(0.7) is "
            f"in bin 1 of [0.7] on JAX, 0 on NumPy). {advice}", BackendWarning, stacklevel=2)

    def call(params, x, *, rt):
        if (backend is None and floats_agree and not ints_agree
                and jnp.issubdtype(jnp.asarray(x).dtype, jnp.integer)):
            warnings.warn(
                f"layer {name!r} (Discretization) of integers, with bin_boundaries beyond "
                "2**24 in magnitude: Keras's JAX, TensorFlow and torch backends cast the "
                "integers to float32 (rounding those beyond 2**24), its NumPy backend "
                f"compares them exactly. {advice}", BackendWarning, stacklevel=2)
        idx = digitize(x, bounds, as_float32=backend != "numpy")
        return idx if mode == "int" else encode(idx, mode, depth, dtype)

    return LayerImpl(call=call, compute_mask="drop")


def _int_list(values, what: str, ctx) -> list[int]:
    try:
        out = [int(v) for v in values]
    except (TypeError, ValueError) as e:
        raise ctx.error(f"{what} must be integers, got {str(values)[:200]}") from e
    info = np.iinfo(np.int32)
    if any(v < info.min or v > info.max for v in out):
        raise ctx.error(f"{what} holds values outside the int32 range, which the importer's "
                        "integer inputs cannot reach")
    return out


@register_layer("IntegerLookup")
def _integer_lookup(config, ctx):
    _refuse_common(config, ctx, "IntegerLookup")
    if config.get("invert"):
        raise ctx.error("invert=True (indices back to tokens) is not supported")
    mode = config.get("output_mode", "int")
    mode = {"binary": "multi_hot", "tf-idf": "tf_idf"}.get(mode, mode)
    if mode not in ("int",) + _MODES:
        raise ctx.error(f"output_mode {mode!r} is not supported; supported: 'int', "
                        f"{', '.join(repr(m) for m in _MODES)}")
    if str(config.get("vocabulary_dtype", "int64")) != "int64":
        raise ctx.error(f"vocabulary_dtype {config.get('vocabulary_dtype')!r} is not "
                        "supported; expected 'int64'")
    num_oov = int(config.get("num_oov_indices", 1))
    if num_oov > 1 and config.get("oov_method", "floormod") != "floormod":
        raise ctx.error(f"oov_method {config.get('oov_method')!r} (hashing of the id's "
                        "decimal string) is not supported; expected 'floormod'")
    vocab = config.get("vocabulary")
    if vocab is None or isinstance(vocab, str):
        raise ctx.error("its vocabulary is not in the config (an adapted layer, or a "
                        "vocabulary file, which Keras keeps as an asset of the .keras "
                        "archive); build the layer with vocabulary=[...] and save again")
    vocab = _int_list(vocab, "the vocabulary", ctx)
    mask_token = config.get("mask_token")
    mask_token = None if mask_token is None else _int_list([mask_token], "mask_token", ctx)[0]
    oov_token = config.get("oov_token")
    # Keras's index layout: [mask (int output only)] [num_oov OOV indices] [tokens]
    oov_start = 1 if mask_token is not None and mode == "int" else 0
    token_start = oov_start + num_oov
    special = [mask_token] * oov_start + [oov_token] * num_oov
    tokens = vocab[token_start:] if vocab[:token_start] == special else vocab
    if not tokens or len(set(tokens)) != len(tokens) or (
            mask_token is not None and mask_token in tokens):
        raise ctx.error("the vocabulary must be non-empty, without repeated ids or the "
                        "mask token (Keras refuses such a vocabulary as well)")
    if mode != "int" and config.get("pad_to_max_tokens"):
        depth = int(config["max_tokens"])
    else:
        depth = token_start + len(tokens)
    order = np.argsort(np.asarray(tokens, np.int64), kind="stable")
    sorted_tokens = np.asarray(tokens, np.int32)[order]
    index_of = (order + token_start).astype(np.int32)

    def lookup(x):
        x = jnp.asarray(x)
        x = x.astype(jnp.int32)  # Keras casts ids to int64 (floats truncated)
        pos = jnp.clip(jnp.searchsorted(jnp.asarray(sorted_tokens), x), 0, len(tokens) - 1)
        found = jnp.asarray(sorted_tokens)[pos] == x
        if num_oov == 0:
            oov = jnp.full(x.shape, -1, jnp.int32)  # Keras raises on such ids
        elif num_oov == 1:
            oov = jnp.full(x.shape, oov_start, jnp.int32)
        else:
            oov = jnp.mod(x, num_oov) + oov_start  # floormod: non-negative
        out = jnp.where(found, jnp.asarray(index_of)[pos], oov)
        if mask_token is not None:  # index 0 for int output; no index (dropped) otherwise
            out = jnp.where(x == mask_token, 0 if mode == "int" else -1, out)
        return out

    def call(params, x, *, rt):
        idx = lookup(x)
        return idx if mode == "int" else encode(idx, mode, depth, jnp.int32)

    return LayerImpl(call=call, compute_mask="drop")
