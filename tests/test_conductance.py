"""Layer conductance and internal influence (``jaxsal.layer_conductance``,
``jaxsal.internal_influence``; Captum's ``LayerConductance`` and ``InternalInfluence``).

The truths: conductance is the trapezoid rule of ``integral G(a) dA(x(a))/da da`` and
internal influence the quadrature of ``integral G(a) da``, ``G = dS/dA`` along the input's
straight path, both checked against ``jax.grad`` of a perturbation at the layer at every
path point; summed over a layer that cuts the network, conductance is ``S(x) - S(x')`` (up
to the quadrature error, which shrinks with ``steps``).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

import jaxsal  # noqa: E402
from import_helpers import perturb_keras  # noqa: E402
from model_import import load_keras  # noqa: E402


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    inp = keras.Input((6, 6, 2))
    h = layers.Conv2D(4, 3, activation="tanh", name="conv")(inp)
    h = layers.Flatten()(h)
    h = layers.Dense(5, activation="softplus", name="hidden")(h)
    km = keras.Model(inp, layers.Dense(3, name="out")(h))
    perturb_keras(km, seed=2, kernels=True)
    path = tmp_path_factory.mktemp("cond") / "net.keras"
    km.save(path)
    m = load_keras(str(path))
    rng = np.random.default_rng(0)
    x, x0 = (rng.normal(size=(2, 6, 6, 2)).astype(np.float32) for _ in "ab")
    return m, x, x0


def _path(m, x, x0, layer, k, alphas):
    """Per path point: the layer's output A and d score_k / dA (jax.grad at the layer)."""
    out = []
    for a in alphas:
        xa = x0 + a * (x - x0)
        A = m.apply(m.params, xa, capture=[layer])[1][layer]
        g = jax.grad(lambda d: m.apply(m.params, xa, perturb={layer: d})[:, k].sum())(
            jnp.zeros_like(A))
        out.append((np.asarray(A), np.asarray(g)))
    return out


@pytest.mark.parametrize("layer,batch_steps", [("conv", None), ("hidden", None),
                                               ("conv", 2), ("hidden", 3)])
def test_conductance_is_its_trapezoid_rule(net, layer, batch_steps):
    """Also in groups of 2 and 3 of the 5 path points: a group's neighbours across its ends
    (and the padding of its last group) are read right."""
    m, x, x0 = net
    steps = 4
    got = np.asarray(jaxsal.layer_conductance(m, x, [0, 2], layer=layer, baseline=x0,
                                              steps=steps, batch_steps=batch_steps,
                                              reduce=None))
    for t, k in enumerate([0, 2]):
        pts = _path(m, x, x0, layer, k, np.arange(steps + 1) / steps)
        want = sum(0.5 * (pts[i][1] + pts[i + 1][1]) * (pts[i + 1][0] - pts[i][0])
                   for i in range(steps))
        np.testing.assert_allclose(got[:, t], want, rtol=1e-4, atol=1e-6)


def test_conductance_sums_to_the_score_difference(net):
    m, x, x0 = net
    delta = np.asarray(m(x) - m(x0))
    for layer, axes in (("conv", (-3, -2, -1)), ("hidden", (-1,))):
        c = np.asarray(jaxsal.layer_conductance(m, x, [0, 1, 2], layer=layer, baseline=x0,
                                                steps=64, reduce=None))
        np.testing.assert_allclose(c.sum(axes), delta, rtol=1e-3,
                                   atol=1e-3 * np.abs(delta).max(), err_msg=layer)
        rough = np.asarray(jaxsal.layer_conductance(m, x, [0, 1, 2], layer=layer,
                                                    baseline=x0, steps=1, reduce=None))
        miss = np.abs(rough.sum(axes) - delta).max()
        if layer == "hidden":  # the scores are affine in A: the trapezoid rule is exact
            assert miss < 1e-5 * np.abs(delta).max()
        else:  # a quadrature error, which 64 steps made small
            assert miss > 1e-3 * np.abs(delta).max()
    summed = np.asarray(jaxsal.layer_conductance(m, x, 1, layer="conv", baseline=x0))
    assert summed.shape == (2, 4, 4)  # the channel axis summed


@pytest.mark.parametrize("rule", ["trapezoid", "gausslegendre"])
def test_internal_influence_is_the_mean_gradient(net, rule):
    from jaxsal._src.integrated import quadrature

    m, x, x0 = net
    alphas, weights = quadrature(5, rule)
    got = np.asarray(jaxsal.internal_influence(m, x, [1], layer="hidden", baseline=x0,
                                               steps=5, rule=rule, reduce=None))
    pts = _path(m, x, x0, "hidden", 1, alphas)
    want = sum(w * g for w, (_, g) in zip(weights, pts))
    np.testing.assert_allclose(got[:, 0], want, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="unknown rule"):
        jaxsal.internal_influence(m, x, 1, layer="hidden", rule="simpson")


# ------------------------------------------------------------------ neuron conductance
def _neuron_by_hand(m, x, x0, layer, unit, k, rule, steps):
    """(x - x') * sum_w w * (dS_k/dA * unit) pulled back to the input (jax.vjp at each
    quadrature point)."""
    from jaxsal._src.integrated import quadrature

    alphas, weights = quadrature(steps, rule)
    total = 0.0
    for a, w in zip(alphas, weights):
        xa = x0 + a * (x - x0)
        A = m.apply(m.params, xa, capture=[layer])[1][layer]
        g = jax.grad(lambda d: m.apply(m.params, xa, perturb={layer: d})[:, k].sum())(
            jnp.zeros_like(A))
        _, pull = jax.vjp(lambda v: m.apply(m.params, v, capture=[layer])[1][layer], xa)
        total = total + w * np.asarray(pull(g * unit)[0])
    return (x - x0) * total


@pytest.mark.parametrize("layer,neuron", [("conv", (1, 2, 3)), ("conv", 2), ("hidden", (4,)),
                                          ("hidden", 1)])
def test_neuron_conductance_is_its_definition(net, layer, neuron):
    m, x, x0 = net
    shape = m.apply(m.params, x, capture=[layer])[1][layer].shape[1:]
    unit = np.zeros(shape, np.float32)
    if isinstance(neuron, tuple):
        unit[neuron] = 1.0
    else:
        unit[..., neuron] = 1.0
    got = np.asarray(jaxsal.neuron_conductance(m, x, [0, 2], layer=layer, neuron=neuron,
                                               baseline=x0, steps=5, batch_steps=2,
                                               reduce=None))
    assert got.shape == (2, 2, 6, 6, 2)
    for t, k in enumerate([0, 2]):
        want = _neuron_by_hand(m, x, x0, layer, unit, k, "trapezoid", 5)
        np.testing.assert_allclose(got[:, t], want, rtol=1e-4,
                                   atol=1e-5 * np.abs(want).max())
    # steps as a 0-d integer array, a count as an int (README): it was checked but kept, and
    # the program cache key raised "unhashable type"
    gl = np.asarray(jaxsal.neuron_conductance(m, x, 1, layer=layer, neuron=neuron,
                                              baseline=x0, steps=np.array(4),
                                              rule="gausslegendre"))
    want = _neuron_by_hand(m, x, x0, layer, unit, 1, "gausslegendre", 4).sum(-1)
    np.testing.assert_allclose(gl, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_layer_conductance_steps_refusal_counts_path_segments(net):
    """layer_conductance's steps counts path segments (steps + 1 gradient evaluations): its
    refusal of steps=0 called them "gradient evaluations along the path" (quadrature's)."""
    m, x, x0 = net
    with pytest.raises(ValueError, match=r"steps as an int >= 1 \(path segments: steps \+ 1 "
                                         r"gradient evaluations\), got 0"):
        jaxsal.layer_conductance(m, x, 0, layer="conv", baseline=x0, steps=0)


def test_neuron_conductance_sums_to_the_units_conductance(net):
    """Summed over the input, a unit's neuron conductance is its layer conductance (both
    converge to the same integral); a channel's is the sum of its units'."""
    m, x, x0 = net
    layer_c = np.asarray(jaxsal.layer_conductance(m, x, [0, 1], layer="conv", baseline=x0,
                                                  steps=96, reduce=None))
    for neuron in ((0, 3, 1), (2, 2, 0)):
        nc = np.asarray(jaxsal.neuron_conductance(m, x, [0, 1], layer="conv", neuron=neuron,
                                                  baseline=x0, steps=96))
        want = layer_c[(slice(None), slice(None)) + neuron]
        np.testing.assert_allclose(nc.sum((-2, -1)), want, rtol=2e-3,
                                   atol=2e-3 * np.abs(layer_c).max())
    channel = np.asarray(jaxsal.neuron_conductance(m, x, [0, 1], layer="conv", neuron=1,
                                                   baseline=x0, steps=96))
    np.testing.assert_allclose(channel.sum((-2, -1)), layer_c[..., 1].sum((-2, -1)),
                               rtol=2e-3, atol=2e-3 * np.abs(layer_c).max())


def test_a_sweep_over_neurons_compiles_once(net, compiles):
    """The neuron is an argument of the program: other units and channels of one layer
    reuse it (each compiled a program of its own), and each gives its own map."""
    m, x, x0 = net
    kw = dict(layer="conv", baseline=x0, steps=3)
    units = (np.array([2, 2, 0]), jnp.array([2, 2, 0]), np.array([2, 2, 0], np.uint8))
    first = np.asarray(jaxsal.neuron_conductance(m, x, [0, 1], neuron=(0, 3, 1), **kw))
    n = compiles.n
    second = np.asarray(jaxsal.neuron_conductance(m, x, [0, 1], neuron=(2, 2, 0), **kw))
    np.asarray(jaxsal.neuron_conductance(m, x, [0, 1], neuron=(1, 1, 2), **kw))
    assert compiles.n == n
    assert not np.allclose(first, second)
    jaxsal.neuron_conductance(m, x, [0, 1], neuron=2, **kw)  # a channel: the same program
    assert compiles.n == n
    # a 1-D integer array is one unit, as a tuple (as jaxsal.neuron takes it); it was
    # refused ("expected neuron as a channel (an int) or one unit ...")
    for unit in units:
        np.testing.assert_array_equal(
            jaxsal.neuron_conductance(m, x, [0, 1], neuron=unit, **kw), second)
    assert compiles.n == n


def test_neuron_conductance_errors(net):
    m, x, x0 = net
    with pytest.raises(ValueError, match="not a channel of layer 'conv'"):
        jaxsal.neuron_conductance(m, x, 0, layer="conv", neuron=4)
    with pytest.raises(ValueError, match=r"a tuple of 3 indices into its output of shape "
                                         r"\(4, 4, 4\)"):
        jaxsal.neuron_conductance(m, x, 0, layer="conv", neuron=(1, 2))
    with pytest.raises(ValueError, match="a tuple of 3 indices"):
        jaxsal.neuron_conductance(m, x, 0, layer="conv", neuron=(1, 2, 9))
    for bad in (np.array([1.0, 2.0, 3.0]), np.array([True, False, True])):
        with pytest.raises(ValueError, match=r"or a 1-D integer array; got array.*dtype "
                                             r"(float64|bool): pass integer indices"):
            jaxsal.neuron_conductance(m, x, 0, layer="conv", neuron=bad)
    for bad in (np.array([[1, 2, 3]]), np.array([1, 2, 9])):
        with pytest.raises(ValueError, match=r"a tuple of 3 indices .*got array"):
            jaxsal.neuron_conductance(m, x, 0, layer="conv", neuron=bad)
