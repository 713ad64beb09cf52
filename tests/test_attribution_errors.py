"""Bad input is rejected with a clear error before any heavy compute."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal

FIX = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def m(mnist):
    return mnist


@pytest.fixture(scope="module")
def x():
    return np.load(FIX / "reference" / "gradcam.npz")["x"][:2]


def test_unknown_layer_lists_valid_names(m, x):
    with pytest.raises(ValueError, match="unknown layer 'conv9'.*conv2d_1.*dense_2"):
        jaxsal.gradcam(m, x, 1, layer="conv9")


def test_non_spatial_layer_for_cam(m, x):
    for f in (jaxsal.gradcam, jaxsal.scorecam, jaxsal.eigencam, jaxsal.eigengradcam,
              jaxsal.gradcam_elementwise, jaxsal.ablationcam):
        with pytest.raises(ValueError, match="spatial"):
            f(m, x, 1, layer="dense_1")


def test_target_ids_out_of_range(m, x):
    with pytest.raises(ValueError, match=r"out of range.*0 <= id < 10.*\[10\]"):
        jaxsal.saliency(m, x, [3, 10])
    with pytest.raises(ValueError, match="out of range"):
        jaxsal.gradcam(m, x, -1)
    with pytest.raises(ValueError, match=r"\(N, T\)"):
        jaxsal.saliency(m, x, np.zeros((3, 2), int))
    with pytest.raises(TypeError, match="integer class ids"):
        jaxsal.saliency(m, x, [1.0, 2.0])


def test_input_shape_and_dtype(m, x):
    with pytest.raises(ValueError, match=r"expected x of shape \(N, 28, 28, 1\).*x\[None\]"):
        jaxsal.saliency(m, x[0], 1)
    with pytest.raises(ValueError, match=r"\(N, 28, 28, 1\)"):
        jaxsal.saliency(m, np.zeros((2, 32, 32, 1), np.float32), 1)
    with pytest.raises(TypeError, match="floating-point"):
        jaxsal.saliency(m, (x * 255).astype(np.uint8), 1)


def test_big_endian_inputs_are_taken(m, x):
    """A big-endian array (np.load of a .npy written on such a machine, FITS data) failed in
    every method with JAX's 'Error interpreting argument to stage as a JAX value'."""
    xb = x.astype(x.dtype.newbyteorder(">"))
    assert not xb.dtype.isnative
    for f in (lambda a: jaxsal.saliency(m, a, [1, 3]),
              lambda a: jaxsal.gradcam(m, a, 1, layer="conv2d_2"),
              lambda a: jaxsal.occlusion(m, a, 1, patch=7)):
        np.testing.assert_array_equal(f(xb), f(x))


def test_nan_and_inf_inputs(m, x):
    bad = x.copy()
    bad[0, 3, 3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        jaxsal.saliency(m, bad, 1)
    bad[0, 3, 3, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        jaxsal.gradcam(m, jax.numpy.asarray(bad), 1)


def test_option_errors(m, x):
    with pytest.raises(ValueError, match="key"):
        jaxsal.smoothgrad(m, x, 1)
    with pytest.raises(ValueError, match="variant"):
        jaxsal.smoothgrad(m, x, 1, key=jax.random.key(0), variant="mean")
    with pytest.raises(ValueError, match="top_k"):
        jaxsal.scorecam(m, x, 1, top_k=65)
    with pytest.raises(ValueError, match="rule"):
        jaxsal.integrated_gradients(m, x, 1, rule="simpson")
    # (these said neither the steps got nor the keys expected)
    with pytest.raises(ValueError, match=r"expected steps >= 2 for the trapezoid rule .*got "
                                         r"steps=1; .*rule='middle'"):
        jaxsal.integrated_gradients(m, x, 1, steps=1)
    with pytest.raises(ValueError, match=r"unknown integrated_gradients options \['step'\] in "
                                         r"method_options; expected keys among \('baseline', "
                                         r"'steps', 'rule', 'batch_steps'\)"):
        jaxsal.smoothgrad(m, x, 1, key=0, method="integrated_gradients",
                          method_options={"step": 8})
    with pytest.raises(ValueError, match="baseline"):
        jaxsal.integrated_gradients(m, x, 1, baseline=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="patch"):
        jaxsal.occlusion(m, x, 1, patch=0)
    with pytest.raises(ValueError, match="head"):
        jaxsal.saliency(m, x, 1, head="tanh")
    with pytest.raises(ValueError, match="reduction"):
        jaxsal.saliency(m, x, 1, reduce="median")
    with pytest.raises(TypeError, match="FunctionModel"):
        jaxsal.saliency(lambda p, x: x, x, 1)
    with pytest.raises(ValueError, match="one value per"):
        jaxsal.saliency(m, x, lambda y: y)
    # integrated gradients scores its steps' points together: the message said 'one value per
    # input, shape (6,)' for 2 inputs and 3 steps, a batch the user never passed
    with pytest.raises(ValueError, match=r"one value per row of the outputs it is given, shape "
                                         r"\(\d+,\) here \(a method may stack several points"):
        jaxsal.integrated_gradients(m, x, lambda y: y, steps=3)


@pytest.mark.parametrize("method", ["shapley_values", "kernel_shap"])
def test_one_input_methods_give_a_wrap_that_works(method):
    # Methods of one input array refuse a model's several inputs and say how to wrap the model
    # with the others fixed. The wrap they gave closed over N rows of the other inputs, which
    # fails once the method runs the function on a batch of masked copies (any N > 1).
    import jax.numpy as jnp
    import re

    def f(p, xs):  # a Keras Concatenate of the two inputs' features: the batches must match
        return jnp.concatenate([xs[0].mean((1, 2)), xs[1]], axis=1) @ p

    w = jnp.arange(10.0).reshape(5, 2) - 4.0
    model = jaxsal.FunctionModel(f, w)
    img = jax.random.uniform(jax.random.key(0), (2, 4, 4, 3))
    other = jnp.array([[0.3, -0.2]])  # one row: the fixed values of the other input
    run = {"shapley_values": lambda f, x: jaxsal.shapley_values(f, x, [0, 1], patch=2),
           "kernel_shap": lambda f, x: jaxsal.kernel_shap(f, x, [0, 1], key=0, patch=2)}[method]
    with pytest.raises(TypeError, match="one input array") as err:
        run(model, [img, jnp.concatenate([other, other])])
    wrap = re.search(r"(jaxsal\.FunctionModel\(lambda p, img: .*?, model\.params\))",
                     str(err.value)).group(1)
    scope = {"jaxsal": jaxsal, "jnp": jnp, "model": model, "other": other}
    wrapped = eval(wrap, scope)  # noqa: S307
    fixed = jaxsal.FunctionModel(lambda p, x: x.mean((1, 2)) @ p[:3] + other @ p[3:], w)
    np.testing.assert_allclose(run(wrapped, img), run(fixed, img), rtol=1e-6, atol=1e-6)


def _token_model():
    """A model of token ids (an embedding, a mean over the tokens, a dense layer) and 2 rows
    of 4 ids."""
    rng = np.random.default_rng(0)
    params = {"emb": jnp.asarray(rng.normal(size=(12, 4)), jnp.float32),
              "w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)}
    m = jaxsal.FunctionModel(features=lambda p, ids: p["emb"][ids],
                             head_fn=lambda p, a: a.mean(1) @ p["w"], layer="embedding",
                             params=params)
    return m, np.array([[1, 2, 3, 4], [5, 6, 7, 8]])


@pytest.mark.parametrize("method", ["scorecam", "saliency"])
def test_token_ids_are_refused_with_the_reason_that_fits_the_method(method):
    """Score-CAM scales the input by masks: token ids were refused with 'have no gradient'
    alone, which is not its reason; the message names both, and the methods that take ids
    as they are (RISE among them: it was left out of that list)."""
    m, ids = _token_model()
    with pytest.raises(TypeError, match=r"have no gradient and no fractions \(the masks and "
                                        r"noise some methods scale inputs by\).*occlusion.*"
                                        r"lime \(with distance='interpretable'\) and rise "
                                        r"\(absent tokens become a fill id\)"):
        getattr(jaxsal, method)(m, ids, 0)
    assert jaxsal.rise(m, ids, 0, key=0, n=8, fill=0).shape == (2, 4)


def test_the_token_id_refusal_names_the_lime_option_that_takes_ids():
    """The token-id refusal listed lime among the methods that take ids as they are, but
    lime's default ``distance='input'`` refuses ids; it names the option that takes them, and
    lime with it, as written, explains the ids (each token a feature)."""
    import re

    m, ids = _token_model()
    with pytest.raises(TypeError, match=r"lime \(with distance='interpretable'\) and rise") as e:
        jaxsal.saliency(m, ids, 0)
    option = re.search(r"lime \(with distance=('\w+')\)", str(e.value)).group(1)
    with pytest.raises(ValueError, match="meaningless for integer ids"):
        jaxsal.lime(m, ids, 0, key=0, n=16)
    assert jaxsal.lime(m, ids, 0, key=0, n=16, distance=eval(option)).shape == (2, 4)  # noqa: S307
