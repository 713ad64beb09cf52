"""Shared by the tests of tf.keras 2 ``TFOpLambda`` fixtures (tests/fixtures/keras2_tfops/):
loading a fixture with TensorFlow's outputs, comparing every TF-function layer with them,
the gradient check, and editing a fixture's recorded call to test refusals."""

import json
import pathlib

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from import_helpers import rel_err
from model_import import KerasImportError, load_keras

D = pathlib.Path(__file__).parent / "fixtures" / "keras2_tfops"
TOL = 1e-5
OPS = ("TFOpLambda", "SlicingOpLambda")


def recorded_calls(name, tag):
    """``(arrays, spec)`` of ``<name>_calls_<tag>.npz``: single calls recorded under TF, the
    spec a list of ``[case, function, keywords]`` (the arrays: ``<case>__x`` the input,
    ``<case>`` TF's result)."""
    ref = np.load(D / f"{name}_calls_{tag}.npz")
    return ref, json.loads(str(ref["spec"]))


def load(name, tag):
    """The fixture ``name`` written by TensorFlow ``tag`` and its expected outputs."""
    return load_keras(D / f"{name}_{tag}.h5"), np.load(D / f"{name}_{tag}.expected.npz")


def close_where_finite(got, want, what, tol=TOL):
    """``got`` within ``tol`` (relative to the largest value) of TF's ``want`` where that is
    finite, and NaN / infinite values (a division by 0, a log of a negative value) in the
    same places."""
    odd = ~np.isfinite(want)
    np.testing.assert_array_equal(got[odd], want[odd], err_msg=what)
    assert rel_err(got[~odd], want[~odd]) <= tol, (what, rel_err(got[~odd], want[~odd]))


def same(got, want, what):
    got = np.asarray(got)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    if want.dtype.kind == "f":
        assert got.dtype == np.float32, what
        # NaN (tf.math.log of negative values), -inf (an exclusive cumulative_logsumexp's
        # empty sum): in the same places
        assert np.isfinite(got[np.isfinite(want)]).all(), what
        close_where_finite(got, want, what)
    elif want.dtype.kind == "c":  # tf.signal.stft: complex64, real and imaginary parts
        assert got.dtype == np.complex64, what
        assert rel_err(got.view(np.float32), want.view(np.float32)) <= TOL, what
    else:  # integers (int64 computed as int32, as JAX does), booleans: exactly
        assert got.dtype.kind == want.dtype.kind, what
        np.testing.assert_array_equal(got, want, err_msg=what)


def check_every_layer(name, tag, versions):
    """The model's outputs and every TF-function layer's output against TensorFlow's, and
    each layer's output shape as known at load; ``versions``: the fixture script's JSON
    (``versions_more``, ``versions_rest``) that lists the functions each model wraps."""
    m, ref = load(name, tag)
    names = [info.name for info in m.layers if info.class_name in OPS]
    functions = {m.layer(n).config.get("function") for n in names}
    recorded = json.loads((D / f"{versions}_{tag}.json").read_text())["tf_functions"][name]
    assert set(recorded) <= functions  # every function the model was built with is checked
    ys, got = jax.jit(lambda p, x: m.apply(p, x, capture=names))(m.params, ref["x"])
    # the shapes for a batch of one (traced, not compiled)
    _, one = jax.eval_shape(lambda p, x: m.apply(p, x, capture=names), m.params, ref["x"][:1])
    for i, y in enumerate(ys):
        same(y, ref[f"y{i}"], f"output {i}")
    for n in names:
        if isinstance(got[n], tuple):  # tf.split, tf.unstack, top_k, tf.linalg.normalize
            assert f"act__{n}__{len(got[n])}" not in ref.files, n
            for i, g in enumerate(got[n]):
                same(g, ref[f"act__{n}__{i}"], f"{n}[{i}]")
        else:
            same(got[n], ref[f"act__{n}"], n)
            want, at_one = ref[f"act__{n}"].shape, np.shape(one[n])
            if at_one == want:  # no batch axis (tf.shape, tf.range, tf.linspace): whole
                assert m.layer(n).output_shape == want, n
            elif at_one[0] == 1 and want[0] == len(ref["x"]):  # known without the batch axis
                assert m.layer(n).output_shape == want[1:], n
            else:  # the batch axis moved (tf.transpose(h, [1, 2, 0, 3])): a batch of one's
                # shape; or grew (tf.space_to_batch_nd: blocks x batch): without that axis
                grown = want[0] == at_one[0] * len(ref["x"])
                assert m.layer(n).output_shape == (at_one[1:] if grown else at_one), n


def check_gradients(name):
    """The gradient of the sum of the float outputs (NaN outputs left out) is finite and not
    zero everywhere."""
    m, ref = load(name, "tf221")

    def total(x):
        ys = m.apply(m.params, x)
        return sum(jnp.sum(jnp.where(jnp.isnan(y), 0.0, y)) for y in ys
                   if jnp.issubdtype(y.dtype, jnp.floating))

    g = jax.jit(jax.grad(total))(jnp.asarray(ref["x"]))
    assert np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).max() > 0


def config(name):
    """The architecture of the TF 2.21 fixture ``name``, to edit."""
    with h5py.File(D / f"{name}_tf221.h5", "r") as f:
        return json.loads(f.attrs["model_config"])


def layer(cfg, name):
    return next(lay for lay in cfg["config"]["layers"] if lay["name"] == name)


def set_kwarg(cfg, name, key, value):
    node = layer(cfg, name)["inbound_nodes"][0]
    entry = node if isinstance(node[0], str) else node[0]  # a bare entry, or a list of them
    entry[3][key] = value
    return cfg


def check_refused(name, layer_name, function, key, value, why):
    """Layer ``layer_name`` of fixture ``name`` given ``key=value`` is refused at load, with a
    message naming the layer, the TF function, the keyword and ``why``."""
    cfg = set_kwarg(config(name), layer_name, key, value)
    with pytest.raises(KerasImportError) as e:
        load_keras(D / f"{name}_tf221.h5", config=cfg)
    msg = str(e.value)
    assert f"layer {layer_name!r}" in msg and "TFOpLambda" in msg, msg
    assert f"tf.{function}" in msg and f"{key}=" in msg and why in msg, msg


def check_attribution(name, shape):
    """Attribution through fixture ``name``'s first output (a classifier): DeepLIFT's maps,
    of ``shape`` for the fixture's first two inputs and classes 0 and 2, sum to the score's
    change from the zero baseline, and LRP (which gives every layer its rule) is finite."""
    import jaxsal

    m, ref = load(name, "tf221")
    head = m.with_output(0)
    x = jnp.asarray(ref["x"][:2])
    dl = jaxsal.deeplift(head, x, [0, 2], reduce=None)
    assert dl.shape == shape and np.isfinite(np.asarray(dl)).all()
    delta = head(x) - head(jnp.zeros_like(x))
    sums = np.asarray(dl).reshape(2, 2, -1).sum(-1)
    np.testing.assert_allclose(sums, np.asarray(delta)[:, [0, 2]], rtol=1e-3, atol=1e-4)
    r = jaxsal.lrp(head, x, [1])
    assert r.shape[0] == 2 and np.isfinite(np.asarray(r)).all()
    return m


def check_finite_attribution(name, shape):
    """Saliency, LRP and DeepLIFT through fixture ``name``'s first output (a classifier),
    for its first two inputs and classes 0 and 2: finite maps, DeepLIFT's of ``shape`` (its
    sums are not checked: for layers without a rule of their own, see
    :func:`check_attribution` for those that have one)."""
    import jaxsal

    m, ref = load(name, "tf221")
    head = m.with_output(0)
    x = jnp.asarray(ref["x"][:2])
    for method in (jaxsal.saliency, jaxsal.lrp):
        a = np.asarray(method(head, x, [0, 2]))
        assert a.shape[0] == len(x) and np.isfinite(a).all(), method.__name__
    dl = np.asarray(jaxsal.deeplift(head, x, [0, 2], reduce=None))
    assert dl.shape == shape and np.isfinite(dl).all()


def tf_function(fn):
    """The importer's translation of the tf.keras function ``fn`` (``"math.bincount"``, as
    tf.keras records it), as a plain function ``(*args, **kwargs) -> array`` of one call."""
    from model_import import Runtime
    from model_import._layers.registry import ConvertContext, lookup

    impl = lookup("TFOpLambda")({"function": fn}, ConvertContext(layer_name="t",
                                                                  class_name="TFOpLambda"))
    return lambda *a, **kw: impl.call({}, *a, rt=Runtime(), **kw)
