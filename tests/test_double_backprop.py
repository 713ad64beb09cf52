"""Differentiating through the attribution methods (double backprop): ``jax.grad`` of a loss
on a jaxsal map with respect to the model's params and to the input, eager and under
``jax.jit``, against the same loss on the model written by hand in plain JAX
(``lax.conv_general_dilated``, ``lax.reduce_window``, ``jnp.where``) and differentiated by
JAX's own rules, in float64.

The Keras model covers every custom derivative of the importer's forward pass: a Conv2D
with 3 input channels (``conv_canonical_vjp``'s general rule), one with 1 input channel (its
``conv_patches`` input gradient), a strided one, one with at most 8x8 output positions
(``conv_patches`` itself), a DepthwiseConv2D (shifted sums), MaxPooling2D (the reshape with
a first-maximum rule, an odd input cropped), BatchNormalization, Dense, the importer's
ReLU (a ``custom_jvp``) as a layer and fused, and smooth activations (tanh, swish), without
which most maps would not depend on the input at all.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxsal

x64 = getattr(jax, "enable_x64", None)
if x64 is None:  # older JAX (the oldest release pyproject.toml allows)
    from jax.experimental import enable_x64 as x64

DN = ("NHWC", "HWIO", "NHWC")
N_CLASSES = 5


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    """``(path, x, keras outputs)``: the model saved as .keras, random weights (biases and
    batch-norm statistics included), two random inputs."""
    import keras

    L = keras.layers
    inp = keras.Input((18, 18, 3))
    h = L.Conv2D(1, 3, padding="same", activation="tanh", name="c_rgb")(inp)  # 3 in-channels
    h = L.Conv2D(4, 3, padding="same", name="c_mono")(h)  # 1 input channel, 18x18 outputs
    h = L.BatchNormalization(name="bn")(h)
    h = L.ReLU(name="relu")(h)
    h = L.Conv2D(4, 3, strides=2, padding="same", activation="swish", name="c_s2")(h)  # 9x9
    h = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(h)
    h = L.MaxPooling2D(2, name="pool")(h)  # 9x9 -> 4x4, the last row and column cropped
    h = L.Conv2D(6, 3, padding="same", activation="relu", name="c_small")(h)  # 4x4: patches
    out = L.Dense(N_CLASSES, name="dense")(L.Flatten(name="flat")(h))
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        ws = layer.get_weights()
        if layer.name == "bn":
            ws = [rng.uniform(0.5, 1.5, 4), rng.normal(0, 0.3, 4), rng.normal(0, 0.3, 4),
                  rng.uniform(0.5, 2.0, 4)]
        else:
            ws = [rng.normal(size=w.shape) / np.sqrt(np.prod(w.shape[:-1])) if w.ndim > 1
                  else rng.normal(0, 0.3, w.shape) for w in ws]
        layer.set_weights([np.asarray(w, np.float32) for w in ws])
    path = tmp_path_factory.mktemp("double_backprop") / "model.keras"
    model.save(path)
    x = rng.normal(size=(2, 18, 18, 3)).astype(np.float32)
    return path, x, np.asarray(model.predict(x, verbose=0))


@pytest.fixture(scope="module")
def model(keras_file):
    from model_import import load_keras

    return load_keras(keras_file[0]).with_head("logits")


# ---------------------------------------------------------------------- the model by hand
def _conv(h, p, strides=(1, 1), groups=1):
    k = p["kernel"] if "kernel" in p else p["depthwise_kernel"]
    return lax.conv_general_dilated(h, k, strides, "SAME", dimension_numbers=DN,
                                    feature_group_count=groups) + p["bias"]


def _relu(z):
    return jnp.where(z > 0, z, 0)


def features(p, x, relu=_relu):
    """Input -> the ``dw`` layer's output (the Grad-CAM layer)."""
    h = jnp.tanh(_conv(x, p["c_rgb"]))
    h = _conv(h, p["c_mono"])
    b = p["bn"]
    h = (h - b["moving_mean"]) / jnp.sqrt(b["moving_variance"] + 1e-3) * b["gamma"] + b["beta"]
    h = relu(h)
    z = _conv(h, p["c_s2"], (2, 2))
    h = z * jax.nn.sigmoid(z)
    return _conv(h, p["dw"], groups=h.shape[-1])


def head(p, a, relu=_relu):
    """The ``dw`` layer's output -> logits."""
    h = lax.reduce_window(a, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    h = relu(_conv(h, p["c_small"]))
    return h.reshape(h.shape[0], -1) @ p["dense"]["kernel"] + p["dense"]["bias"]


def forward(p, x):
    return head(p, features(p, x))


def grads(p, x, classes):
    """``(N, T, H, W, C)``: the input gradient of each class's logit."""
    _, pull = jax.vjp(lambda z: forward(p, z), x)
    onehot = jax.nn.one_hot(jnp.asarray(classes), N_CLASSES, dtype=x.dtype)
    return jnp.stack([pull(jnp.broadcast_to(o, (len(x), N_CLASSES)))[0] for o in onehot], 1)


def ref_saliency(p, x):
    return grads(p, x, [1, 3])


def ref_saliency_max_abs(p, x):
    return jnp.max(jnp.abs(grads(p, x, [1, 3])), axis=-1)


def ref_gradient_x_input(p, x):
    return jnp.sum(x * grads(p, x, [3])[:, 0], axis=-1)


def ref_integrated_gradients(p, x):  # the trapezoid rule on 5 points, baseline 0
    alphas, w = [0, 0.25, 0.5, 0.75, 1], [0.125, 0.25, 0.25, 0.25, 0.125]
    avg = sum(wk * grads(p, a * x, [3])[:, 0] for a, wk in zip(alphas, w))
    return jnp.sum(x * avg, axis=-1)


def ref_integrated_gradients_gl(p, x):  # Gauss-Legendre on 3 points (irrational nodes)
    nodes, weights = np.polynomial.legendre.leggauss(3)
    avg = sum(0.5 * wk * grads(p, 0.5 * (a + 1) * x, [3])[:, 0] for a, wk in zip(nodes, weights))
    return jnp.sum(x * avg, axis=-1)


SG_KEY, SG_N = 7, 3


def _noise(x):
    """SmoothGrad's noise as its docstring specifies it: sample k of input i is
    ``normal(fold_in(fold_in(key, k), i))``, scaled by 0.2 x the input's max - min."""
    key = jax.random.key(SG_KEY)
    eps = jnp.stack([jnp.stack([jax.random.normal(
        jax.random.fold_in(jax.random.fold_in(key, k), i), x.shape[1:], x.dtype)
        for i in range(len(x))]) for k in range(SG_N)])
    span = jnp.max(x, axis=(1, 2, 3)) - jnp.min(x, axis=(1, 2, 3))
    return eps * (0.2 * span)[None, :, None, None, None]


def ref_smoothgrad(p, x):  # saliency, max_abs: the mean of |gradient|, then the channel max
    eps = _noise(x)
    g = [grads(p, x + eps[k], [3])[:, 0] for k in range(SG_N)]
    return jnp.max(sum(jnp.abs(gk) for gk in g) / SG_N, axis=-1)


def ref_vargrad(p, x):
    eps = _noise(x)
    g0 = grads(p, x, [3])[:, 0]
    d = [grads(p, x + eps[k], [3])[:, 0] - g0 for k in range(SG_N)]
    mean = sum(d) / SG_N
    var = jnp.maximum(sum(dk * dk for dk in d) / SG_N - mean * mean, 0)
    return jnp.max(var, axis=-1)


def ref_gradcam(p, x):
    a, pull = jax.vjp(lambda aa: head(p, aa), features(p, x))
    g = pull(jnp.broadcast_to(jax.nn.one_hot(3, N_CLASSES, dtype=x.dtype), (len(x), 5)))[0]
    return _relu(jnp.einsum("nhwk,nk->nhw", features(p, x), g.mean(axis=(1, 2))))


METHODS = {
    "saliency": (lambda m, x: jaxsal.saliency(m, x, targets=[1, 3], reduce=None),
                 ref_saliency),
    "saliency_max_abs": (lambda m, x: jaxsal.saliency(m, x, targets=[1, 3]),
                         ref_saliency_max_abs),
    "gradient_x_input": (lambda m, x: jaxsal.gradient_x_input(m, x, targets=3),
                         ref_gradient_x_input),
    "integrated_gradients": (lambda m, x: jaxsal.integrated_gradients(m, x, targets=3,
                                                                      steps=5),
                             ref_integrated_gradients),
    # (nodes that float32 does not hold: rounded to float32 they missed 1e-12 by 2e-8)
    "integrated_gradients_gl": (lambda m, x: jaxsal.integrated_gradients(
        m, x, targets=3, steps=3, rule="gausslegendre"), ref_integrated_gradients_gl),
    "smoothgrad": (lambda m, x: jaxsal.smoothgrad(m, x, targets=3, key=SG_KEY, n=SG_N),
                   ref_smoothgrad),
    "vargrad": (lambda m, x: jaxsal.smoothgrad(m, x, targets=3, key=SG_KEY, n=SG_N,
                                               variant="vargrad"), ref_vargrad),
    "gradcam": (lambda m, x: jaxsal.gradcam(m, x, targets=3, layer="dw", upsample=False),
                ref_gradcam),
}


# The gradient tests leave out integrated_gradients_gl: its rule changes only the constant
# nodes and weights that integrated.quadrature gives path_integral (the same program, the same
# derivatives as the trapezoid rule's); test_maps_equal_the_hand_written_maps checks those
# nodes, in float64, to 1e-12 (finer than the gradient tests' 1e-9).
GRAD_METHODS = [name for name in METHODS if name != "integrated_gradients_gl"]


def _loss(maps, w):
    return jnp.sum(w * maps) + jnp.sum(maps * maps)


def _weights(shape):
    return jnp.asarray(np.random.default_rng(1).normal(size=shape))


def _f64(tree):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tree)


def _assert_close(ours, ref, what, rtol=1e-9):
    """Each leaf within ``rtol`` of the largest reference gradient (leaves whose reference
    is exactly 0, the last biases of a map through ReLUs, must be 0 up to rounding too)."""
    scale = max(float(jnp.max(jnp.abs(r))) for r in jax.tree_util.tree_leaves(ref))
    assert scale > 0, what
    for path, o, r in zip(jax.tree_util.tree_leaves_with_path(ours),
                          jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(ref)):
        assert o.dtype == jnp.float64, (what, path[0])
        np.testing.assert_allclose(np.asarray(o), np.asarray(r), rtol=0, atol=rtol * scale,
                                   err_msg=f"{what} {jax.tree_util.keystr(path[0])}")


def test_the_hand_written_model_is_the_keras_model(model, keras_file):
    _, x, y = keras_file
    np.testing.assert_allclose(np.asarray(forward(model.params, x)), y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(model(x)), y, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def reference(model, keras_file):
    """``reference(name) -> (map, w, d loss / d params, d loss / d x)``: the hand-written
    model's map and the gradients of ``_loss(map, w)``, by JAX's own rules, in float64;
    computed once per method and shared by the tests below (the eager and jitted, params and
    input cases compare jaxsal's own derivatives with the same reference)."""
    cache = {}

    def get(name):
        if name not in cache:
            ref = METHODS[name][1]
            with x64(True):
                p, x = _f64(model.params), jnp.asarray(keras_file[1], jnp.float64)
                maps = ref(p, x)
                w = _weights(maps.shape)
                gp, gx = jax.grad(lambda q, z: _loss(ref(q, z), w), argnums=(0, 1))(p, x)
            cache[name] = maps, w, gp, gx
        return cache[name]

    return get


@pytest.mark.parametrize("name", METHODS)
def test_maps_equal_the_hand_written_maps(model, keras_file, reference, name):
    method, _ = METHODS[name]
    theirs = reference(name)[0]
    with x64(True):
        p, x = _f64(model.params), jnp.asarray(keras_file[1], jnp.float64)
        ours = method(model.with_params(p), x)
        assert ours.dtype == jnp.float64 and ours.shape == theirs.shape
        _assert_close(ours, theirs, name, rtol=1e-12)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name", GRAD_METHODS)
def test_grad_of_a_loss_on_the_map_wrt_params(model, keras_file, reference, name, jit):
    method, _ = METHODS[name]
    _, w, theirs, _ = reference(name)
    with x64(True):
        p, x = _f64(model.params), jnp.asarray(keras_file[1], jnp.float64)
        grad = jax.grad(lambda q: _loss(method(model.with_params(q), x), w))
        ours = (jax.jit(grad) if jit else grad)(p)
        _assert_close(ours, theirs, name)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name", GRAD_METHODS)
def test_grad_of_a_loss_on_the_map_wrt_the_input(model, keras_file, reference, name, jit):
    method, _ = METHODS[name]
    _, w, _, theirs = reference(name)
    with x64(True):
        m, x = model.with_params(_f64(model.params)), jnp.asarray(keras_file[1], jnp.float64)
        grad = jax.grad(lambda z: _loss(method(m, z), w))
        ours = (jax.jit(grad) if jit else grad)(x)
        _assert_close(ours, theirs, name)
        assert float(jnp.max(jnp.abs(theirs))) > 0  # the smooth activations make it nonzero


@pytest.mark.parametrize("name", ["saliency_max_abs", "gradcam"])
def test_grad_of_a_loss_on_the_map_matches_a_central_difference(model, keras_file, name):
    """Independent of JAX's differentiation rules: a central difference along a random
    direction of params and of the input (float64, a step small enough that no ReLU or max
    pooling changes its branch: the kinks make large steps disagree)."""
    method, _ = METHODS[name]
    with x64(True):
        p, x = _f64(model.params), jnp.asarray(keras_file[1], jnp.float64)
        w = _weights(method(model.with_params(p), x).shape)
        rng = np.random.default_rng(2)
        loss = lambda q, z: _loss(method(model.with_params(q), z), w)  # noqa: E731
        dp = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.normal(size=a.shape)), p)
        dx = jnp.asarray(rng.normal(size=x.shape))
        gp, gx = jax.grad(loss, argnums=(0, 1))(p, x)
        h = 1e-6
        for g, move in ((gp, lambda s: (jax.tree_util.tree_map(lambda a, d: a + s * d, p, dp),
                                        x)),
                        (gx, lambda s: (p, x + s * dx))):
            fd = (loss(*move(h)) - loss(*move(-h))) / (2 * h)
            d = dp if g is gp else dx
            exact = sum(float(jnp.vdot(a, b)) for a, b in zip(jax.tree_util.tree_leaves(g),
                                                              jax.tree_util.tree_leaves(d)))
            assert abs(fd - exact) <= 1e-6 * abs(exact), (name, fd, exact)


# ---------------------------------------------------------------------- guided, deconvnet
def guided_grads(p, x, cls, rule):
    """The guided-backprop (``rule="guided"``) or deconvnet map of class ``cls``, written
    out: a plain backward pass, stage by stage, with the modified rule at each ReLU
    (``g [g > 0] [z > 0]``; ``g [g > 0]``) and ``jax.vjp`` of the other stages."""
    b = p["bn"]
    stages = [
        lambda h: (_conv(jnp.tanh(_conv(h, p["c_rgb"])), p["c_mono"]) - b["moving_mean"])
        / jnp.sqrt(b["moving_variance"] + 1e-3) * b["gamma"] + b["beta"],
        None,  # the ReLU layer
        lambda h: _conv(lax.reduce_window(features_after_relu(p, h), -jnp.inf, lax.max,
                                          (1, 2, 2, 1), (1, 2, 2, 1), "VALID"), p["c_small"]),
        None,  # c_small's fused ReLU
        lambda h: h.reshape(h.shape[0], -1) @ p["dense"]["kernel"] + p["dense"]["bias"]]
    inputs, h = [], x
    for s in stages:
        inputs.append(h)
        h = _relu(h) if s is None else s(h)
    g = jnp.broadcast_to(jax.nn.one_hot(cls, N_CLASSES, dtype=x.dtype), h.shape)
    for s, z in zip(stages[::-1], inputs[::-1]):
        if s is None:
            g = jnp.where((g > 0) & ((z > 0) if rule == "guided" else True), g, 0)
        else:
            g = jax.vjp(s, z)[1](g)[0]
    return g


def features_after_relu(p, h):
    z = _conv(h, p["c_s2"], (2, 2))
    h = z * jax.nn.sigmoid(z)
    return _conv(h, p["dw"], groups=h.shape[-1])


@pytest.mark.parametrize("rule", ["guided", "deconvnet"])
def test_second_order_of_guided_backprop_is_the_derivative_of_its_map(model, keras_file,
                                                                      rule):
    """The modified ReLU backward is not the ReLU's derivative, but the map it defines is a
    function of params and input like any other: ``jax.grad`` of a loss on it is that
    function's derivative (the masks ``[z > 0]``, ``[g > 0]`` constant, the forward
    activations differentiated as they are), the written-out map's gradient."""
    method = jaxsal.guided_backprop if rule == "guided" else jaxsal.deconvnet
    with x64(True):
        p, x = _f64(model.params), jnp.asarray(keras_file[1], jnp.float64)
        ref = guided_grads(p, x, 3, rule)
        np.testing.assert_allclose(np.asarray(method(model.with_params(p), x, 3, reduce=None)),
                                   np.asarray(ref), rtol=0,
                                   atol=1e-12 * float(jnp.max(jnp.abs(ref))))
        w = _weights(ref.shape)
        # params and input in one program (both are traced by the jit either way)
        ours = jax.jit(jax.grad(lambda q, z: _loss(method(model.with_params(q), z, 3,
                                                          reduce=None), w),
                                argnums=(0, 1)))(p, x)
        theirs = jax.grad(lambda q, z: _loss(guided_grads(q, z, 3, rule), w),
                          argnums=(0, 1))(p, x)
        for argnums in (0, 1):
            assert all(bool(jnp.isfinite(a).all())
                       for a in jax.tree_util.tree_leaves(ours[argnums]))
            _assert_close(ours[argnums], theirs[argnums], f"{rule} argnums={argnums}")


# ---------------------------------------------------------------------- forward mode
@pytest.mark.parametrize("name", ["saliency", "gradient_x_input", "integrated_gradients"])
def test_forward_mode_over_the_input_gradient_methods(model, keras_file, name):
    """``jax.jvp`` of an input-gradient map: forward mode over the method's own reverse pass
    never meets a custom VJP in forward mode."""
    method, ref = METHODS[name]
    with x64(True):
        p, x = _f64(model.params), jnp.asarray(keras_file[1], jnp.float64)
        rng = np.random.default_rng(3)
        dp = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.normal(size=a.shape)), p)
        dx = jnp.asarray(rng.normal(size=x.shape))
        _, ours = jax.jvp(lambda q, z: method(model.with_params(q), z), (p, x), (dp, dx))
        _, theirs = jax.jvp(ref, (p, x), (dp, dx))
        _assert_close(ours, theirs, name)


@pytest.mark.parametrize("method", [
    lambda m, x: m(x),
    lambda m, x: m.apply(m.params, x),
    lambda m, x: jaxsal.gradcam(m, x, 3, layer="dw"),
    lambda m, x: jaxsal.occlusion(m, x, 3, patch=6),
], ids=["forward", "apply", "gradcam", "occlusion"])
def test_forward_mode_through_the_forward_pass_is_a_clear_error(model, keras_file, method):
    """The importer's convolutions and max pooling are ``jax.custom_vjp`` functions (their
    reverse mode is the fast one on XLA:CPU): forward mode through a model's forward values
    (the model itself, a CAM's activations, occlusion's scores) is refused with the way out."""
    x = jnp.asarray(keras_file[1])
    with pytest.raises(TypeError, match=r"reverse mode only.*jax\.jacrev"):
        jax.jvp(lambda z: method(model, z), (x,), (jnp.ones_like(x),))


# ---------------------------------------------------------------------- other methods
def _smooth(dtype=jnp.float64):
    """A smooth 3-class model of ``(N, 4, 4, 2)`` inputs (tanh hidden layer) and 2 inputs."""
    rng = np.random.default_rng(4)
    params = {"w1": jnp.asarray(rng.normal(size=(32, 8)) * 0.3, dtype),
              "w2": jnp.asarray(rng.normal(size=(8, 3)), dtype)}

    def f(p, x):
        return jnp.tanh(x.reshape(x.shape[0], -1) @ p["w1"]) @ p["w2"]

    x = jnp.asarray(rng.uniform(size=(2, 4, 4, 2)), dtype)
    return jaxsal.FunctionModel(f, params, input_shape=(4, 4, 2)), x


def test_grad_of_lime_wrt_the_input():
    """LIME read its fit's statistics on the host whenever the refusal flag alone was
    untraced: ``jax.grad`` with respect to ``x`` raised a TracerArrayConversionError. Now it
    is a central difference's (float64)."""
    with x64(True):
        m, x = _smooth()
        method = lambda z: jaxsal.lime(m, z, 1, key=0, n=64, patch=2)  # noqa: E731
        w = _weights(method(x).shape)
        loss = lambda z: _loss(method(z), w)  # noqa: E731
        g = jax.grad(loss)(x)
        dx = jnp.asarray(np.random.default_rng(5).normal(size=x.shape))
        h = 1e-6
        fd = (loss(x + h * dx) - loss(x - h * dx)) / (2 * h)
        exact = float(jnp.vdot(g, dx))
        assert exact != 0 and abs(fd - exact) <= 1e-6 * abs(exact), (fd, exact)


def test_guided_integrated_gradients_wrt_the_input_is_refused_by_jax():
    """Guided IG's path is built in a ``lax.while_loop`` whose carry depends on ``x``: reverse
    mode with respect to ``x`` is JAX's documented refusal (with respect to the params the
    path is piecewise constant and the gradient runs)."""
    m, x = _smooth(jnp.float32)
    method = lambda q, z: jaxsal.guided_integrated_gradients(  # noqa: E731
        m.with_params(q), z, 1, steps=8)
    g = jax.grad(lambda q: jnp.sum(method(q, x) ** 2))(m.params)
    assert all(bool(jnp.isfinite(a).all()) for a in jax.tree_util.tree_leaves(g))
    with pytest.raises(ValueError, match="Reverse-mode differentiation does not work for "
                                         "lax.while_loop"):
        jax.grad(lambda z: jnp.sum(method(m.params, z) ** 2))(x)


def test_vargrad_checks_concrete_inputs_inside_a_jit():
    """VarGrad refuses a constant input (its noise is 0) by a host-side check: inside the
    user's ``jax.jit`` it raised a TracerArrayConversionError for any input; now a concrete
    input is checked as outside, and a traced one (``jax.grad`` with respect to ``x``)
    passes unchecked."""
    m, x = _smooth(jnp.float32)
    flat = jnp.ones_like(x)
    with pytest.raises(ValueError, match="constant"):
        jax.jit(lambda p: jaxsal.smoothgrad(m.with_params(p), flat, 1, key=0, n=2,
                                            variant="vargrad"))(m.params)
    out = jax.jit(lambda p: jaxsal.smoothgrad(m.with_params(p), x, 1, key=0, n=2,
                                              variant="vargrad"))(m.params)
    np.testing.assert_allclose(out, jaxsal.smoothgrad(m, x, 1, key=0, n=2, variant="vargrad"),
                               rtol=1e-4)


@pytest.mark.parametrize("variant", ["paper", "pytorch-grad-cam"])
def test_grad_of_a_loss_on_fullgrad_maps_is_finite(model, keras_file, variant):
    """FullGrad min-max scales each term: ``jnp.min``/``jnp.max``'s derivative compares the
    term with its extreme computed apart, and where XLA computed the term twice with
    different roundings (XLA:CPU at the suite's optimization level 0) no element matched:
    0 / 0, NaN gradients. The extremes are read at their argmin/argmax instead."""
    _, x, _ = keras_file
    w = _weights((2, 18, 18))

    def loss(p, xx):
        return _loss(jaxsal.fullgrad(model.with_params(p), xx, 1, variant=variant), w)

    gp, gx = jax.grad(loss, argnums=(0, 1))(model.params, jnp.asarray(x))
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree_util.tree_leaves(gp))
    assert np.isfinite(np.asarray(gx)).all() and np.abs(np.asarray(gx)).max() > 0
