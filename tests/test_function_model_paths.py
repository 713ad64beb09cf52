"""jaxsal.FunctionModel as a JAX user's own function: the compiled-program cache and the
variables a function reads, the backward rules it is built with, its errors."""

import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal


def _mlp_params(seed=0, d=12, h=8, k=3):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return {"w1": jax.random.normal(k1, (d, h)), "w2": jax.random.normal(k2, (h, k))}


def _mlp(p, x, relu=jax.nn.relu):
    return relu(x.reshape(len(x), -1) @ p["w1"]) @ p["w2"]


def _x(n=4, seed=2):
    return np.asarray(jax.random.normal(jax.random.PRNGKey(seed), (n, 2, 2, 3)))


def _input_grad(fn, params, x, k):
    """d fn(params, x)[:, k] / dx per example, by jax.grad."""
    return np.asarray(jax.vmap(jax.grad(lambda xi: fn(params, xi[None])[0, k]))(jnp.asarray(x)))


SCALE = 1.0  # module-level variables, read only by a function inside the model function
CLASS = 0  # (or the score function)


def _scaled_mlp(p, x):
    q = jax.tree_util.tree_map(lambda w: w * SCALE, p)  # SCALE is read by the lambda
    return _mlp(q, x)


def test_a_reassigned_variable_read_inside_a_nested_function_is_not_baked_in(compiles):
    """A module-level variable that only a lambda inside the model function (or inside a
    score function) names: reassigned, the function is traced again (the program traced
    with the old value was reused: the old model's maps, silently); the same value again
    compiles nothing."""
    global SCALE, CLASS
    p, x = _mlp_params(), _x()
    m = jaxsal.FunctionModel(_scaled_mlp, p)
    SCALE = 1.0
    one = np.asarray(jaxsal.saliency(m, x, 0, reduce=None))
    np.testing.assert_allclose(one, _input_grad(_mlp, p, x, 0), rtol=1e-5, atol=1e-6)
    SCALE = 3.0
    three = np.asarray(jaxsal.saliency(m, x, 0, reduce=None))
    scaled = jax.tree_util.tree_map(lambda w: w * 3.0, p)
    np.testing.assert_allclose(three, _input_grad(_mlp, scaled, x, 0), rtol=1e-5, atol=1e-5)
    assert not np.allclose(three, one)

    score = lambda out: jax.vmap(lambda row: row[CLASS])(out)  # noqa: E731
    CLASS = 0
    np.testing.assert_allclose(jaxsal.saliency(m, x, score), jaxsal.saliency(m, x, 0),
                               rtol=1e-6)
    CLASS = 2
    np.testing.assert_allclose(jaxsal.saliency(m, x, score), jaxsal.saliency(m, x, 2),
                               rtol=1e-6)
    n = compiles.n
    jax.block_until_ready(jaxsal.saliency(m, x, score))
    jax.block_until_ready(jaxsal.saliency(m, x, 0, reduce=None))
    assert compiles.n == n
    SCALE, CLASS = 1.0, 0


class _Net:
    """A user's model class whose method reads a module-level variable."""

    def apply(self, p, x):
        return _mlp(p, x) * SCALE


def test_a_bound_method_is_found_again_with_the_variables_it_reads(compiles):
    """``FunctionModel(net.apply, params)``: a module-level variable the method reads,
    reassigned, is not baked in (the bound method was its own key: the old program was
    reused); the same method and values compile nothing."""
    global SCALE
    p, x = _mlp_params(), _x()
    net = _Net()
    SCALE = 1.0
    one = np.asarray(jaxsal.saliency(jaxsal.FunctionModel(net.apply, p), x, 1, reduce=None))
    np.testing.assert_allclose(one, _input_grad(_mlp, p, x, 1), rtol=1e-5, atol=1e-6)
    SCALE = 3.0
    three = np.asarray(jaxsal.saliency(jaxsal.FunctionModel(net.apply, p), x, 1, reduce=None))
    np.testing.assert_allclose(three, 3.0 * one, rtol=1e-5, atol=1e-5)
    n = compiles.n
    jax.block_until_ready(jaxsal.saliency(jaxsal.FunctionModel(net.apply, p), x, 1, reduce=None))
    jax.block_until_ready(jaxsal.saliency(jaxsal.FunctionModel(net.apply, p), x, 2, reduce=None))
    assert compiles.n == n
    SCALE = 1.0


def test_relu_mode_given_to_the_constructor_is_the_rule_used():
    """``FunctionModel(..., relu_kwarg="relu", relu_mode="guided")`` is the model
    ``with_backprop("guided")`` makes (it kept the function's own ReLU: guided backprop gave
    plain gradients, silently); an unknown mode, or a mode or ReLU without ``relu_kwarg``,
    is refused."""
    p, x = _mlp_params(), _x()
    swappable = jaxsal.FunctionModel(_mlp, p, relu_kwarg="relu")
    for mode, method in (("guided", jaxsal.guided_backprop), ("deconvnet", jaxsal.deconvnet)):
        made = jaxsal.FunctionModel(_mlp, p, relu_kwarg="relu", relu_mode=mode)
        expected = np.asarray(method(swappable, x, [0, 2]))
        assert not np.allclose(expected, jaxsal.saliency(swappable, x, [0, 2]))
        np.testing.assert_allclose(method(made, x, [0, 2]), expected, rtol=1e-6)
        np.testing.assert_allclose(
            jaxsal.saliency(made, x, [0, 2], reduce=None),
            jaxsal.saliency(swappable.with_backprop(mode), x, [0, 2], reduce=None), rtol=1e-6)
    with pytest.raises(ValueError, match="unknown relu_mode 'guidd'"):
        jaxsal.FunctionModel(_mlp, p, relu_kwarg="relu", relu_mode="guidd")
    with pytest.raises(ValueError, match="needs relu_kwarg; got relu_kwarg=None"):
        jaxsal.FunctionModel(_mlp, p, relu_mode="guided")
    with pytest.raises(ValueError, match="needs relu_kwarg"):
        jaxsal.FunctionModel(_mlp, p, relu=jaxsal.guided_relu, relu_mode="mine")
    with pytest.raises(TypeError, match="expected relu as a function"):
        jaxsal.FunctionModel(_mlp, p, relu_kwarg="relu", relu="relu")


def test_the_saved_head_is_the_head_the_model_was_made_with():
    """``with_head("saved")`` (and ``head="saved"``) keep the head a FunctionModel was made
    with, as a KerasModel's keeps its file's; it was mapped to ``"logits"``, silently dropping
    ``head="softmax"``."""
    p, x = _mlp_params(), _x(n=2)
    m = jaxsal.FunctionModel(_mlp, p, head="softmax")
    assert m.with_head("saved").head == "softmax"
    probs = lambda q, xx: jax.nn.softmax(_mlp(q, xx), axis=-1)  # noqa: E731
    want = _input_grad(probs, p, x, 1)
    np.testing.assert_allclose(jaxsal.saliency(m, x, 1, head="saved", reduce=None), want,
                               rtol=1e-5, atol=1e-7)
    assert not np.allclose(want, _input_grad(_mlp, p, x, 1))  # the logits' would differ


def test_the_saved_head_is_kept_through_variants_of_another_head():
    """A FunctionModel made with head="logits", then ``with_head("softmax")`` (and other
    variants of that): ``with_head("saved")`` and ``head="saved"`` return to the logits it was
    made with; ``with_head("saved")`` returned the model as it was, keeping the softmax."""
    p, x = _mlp_params(), _x(n=2)
    m = jaxsal.FunctionModel(_mlp, p, relu_kwarg="relu")  # head="logits"
    logits = np.asarray(_mlp(p, x))
    for v in (m.with_head("softmax"),
              m.with_head("softmax").with_params(p).with_backprop("standard")):
        back = v.with_head("saved")
        assert back.head == "logits" and back.cache_key == m.cache_key
        np.testing.assert_allclose(back(x), logits, rtol=1e-6)
        np.testing.assert_allclose(jaxsal.saliency(v, x, 1, head="saved", reduce=None),
                                   _input_grad(_mlp, p, x, 1), rtol=1e-5, atol=1e-7)
    assert m.with_head("saved") is m


def test_class_ids_on_outputs_that_are_not_n_by_classes_say_what_the_model_returned():
    """Class ids (or ``targets=None``) on a function returning a dict, ``(N,)`` or
    ``(N, a, K)``: the error names what came back and the score function to pass (it said
    only "this model's outputs are not"); the score functions it suggests work."""
    p, x = _mlp_params(), _x()
    as_dict = jaxsal.FunctionModel(lambda q, xx: {"aux": xx.sum((1, 2, 3)),
                                                  "logits": _mlp(q, xx)}, p)
    with pytest.raises(ValueError, match=r"got a dict of outputs \{'aux': \(4,\), 'logits': "
                                         r"\(4, 3\)\}.*outs\['logits'\]\[:, k\]"):
        jaxsal.saliency(as_dict, x, 1)
    np.testing.assert_allclose(jaxsal.saliency(as_dict, x, lambda outs: outs["logits"][:, 1]),
                               jaxsal.saliency(jaxsal.FunctionModel(_mlp, p), x, 1), rtol=1e-6)
    one = jaxsal.FunctionModel(lambda q, xx: _mlp(q, xx)[:, 0], p)
    with pytest.raises(ValueError, match=r"predicted class.*got outputs of shape \(4,\).*"
                                         r"targets=lambda out: out "):
        jaxsal.saliency(one, x)
    np.testing.assert_allclose(jaxsal.saliency(one, x, lambda out: out),
                               jaxsal.saliency(jaxsal.FunctionModel(_mlp, p), x, 0), rtol=1e-6)
    three = jaxsal.FunctionModel(lambda q, xx: _mlp(q, xx)[:, None, :], p)
    with pytest.raises(ValueError, match=r"class-id targets.*got outputs of shape \(4, 1, 3\)"):
        jaxsal.saliency(three, x, [0, 2])
    k = 2
    np.testing.assert_allclose(
        jaxsal.saliency(three, x, lambda out: out[..., k].reshape(len(out), -1).mean(1)),
        jaxsal.saliency(jaxsal.FunctionModel(_mlp, p), x, 2), rtol=1e-6)


def test_a_fresh_lambda_from_the_same_line_reuses_the_program(compiles):
    """A FunctionModel made in a helper or a loop (a new ``lambda`` object every call) with
    the same values compiles once (every call compiled again: the function object was the
    key); a fresh score ``lambda`` likewise; other closure values (an int and a float that
    compare equal included) are other programs, with their own values."""
    p, x = _mlp_params(), _x()

    def explain(params, batch, scale, k):
        m = jaxsal.FunctionModel(lambda q, xx: _mlp(q, xx) * scale, params)
        return np.asarray(jaxsal.saliency(m, batch, lambda out: out[:, k], reduce=None))

    first = explain(p, x, 1.0, 0)
    np.testing.assert_allclose(first, _input_grad(_mlp, p, x, 0), rtol=1e-5, atol=1e-6)
    n = compiles.n
    p2 = _mlp_params(seed=7)
    second = explain(p2, x, 1.0, 0)
    third = explain(p, x, 1.0, 0)
    assert compiles.n == n
    np.testing.assert_allclose(second, _input_grad(_mlp, p2, x, 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(third, first)
    np.testing.assert_allclose(explain(p, x, 2.0, 1), 2.0 * _input_grad(_mlp, p, x, 1),
                               rtol=1e-5, atol=1e-5)
    assert compiles.n > n
    n = compiles.n
    as_int = explain(p, x, 1, 0)  # == 1.0 and hashes alike, but another constant
    np.testing.assert_allclose(as_int, first, rtol=1e-6)
    assert compiles.n > n


INNER = None  # a model a function reads as a module-level variable (a notebook's `net`)
GAIN = 1.0  # read by a helper function that the model function calls


def _amplified(x):
    return x * GAIN


def test_explain_to_file_sees_the_models_and_helpers_a_function_reads(tmp_path):
    """A job whose model function calls a module-level model object, or a helper reading a
    module-level number: reassigned, they make another job (the signature left both out:
    the finished job of the old model was returned); the same values resume."""
    global INNER, GAIN
    x = _x(n=6)
    INNER = jaxsal.FunctionModel(_mlp, _mlp_params(seed=0))
    outer = jaxsal.FunctionModel(lambda q, xx: INNER.apply(INNER.params, _amplified(xx)), None)
    path = tmp_path / "maps.npy"
    first = np.array(jaxsal.explain_to_file(jaxsal.saliency, outer, x, path, targets=0,
                                              batch_size=4))
    np.testing.assert_allclose(first, jaxsal.saliency(INNER, x, 0), rtol=1e-6)
    INNER = jaxsal.FunctionModel(_mlp, _mlp_params(seed=3))  # other weights
    # (overwrite=True: another job replaces the finished one's file; the same job resumes)
    other = np.array(jaxsal.explain_to_file(jaxsal.saliency, outer, x, path, targets=0,
                                              batch_size=4, overwrite=True))
    np.testing.assert_allclose(other, jaxsal.saliency(INNER, x, 0), rtol=1e-6)
    assert not np.allclose(other, first)
    GAIN = 2.0  # the helper's constant; the MLP has no biases: twice the gradient
    shifted = np.array(jaxsal.explain_to_file(jaxsal.saliency, outer, x, path, targets=0,
                                                batch_size=4, overwrite=True))
    np.testing.assert_allclose(shifted, 2.0 * other, rtol=1e-5)
    calls = []
    again = np.array(jaxsal.explain_to_file(jaxsal.saliency, outer, x, path, targets=0,
                                              batch_size=4,
                                              on_chunk=lambda d, t: calls.append(d)))
    assert calls == []  # the same job: resumed, nothing computed
    np.testing.assert_array_equal(again, shifted)
    INNER, GAIN = None, 1.0


def test_explain_to_file_tells_apart_models_held_in_a_closure(tmp_path):
    """A model function closing over a model object: another model of the same
    architecture with other weights is another job (the model was described by its repr,
    the same for both: the first model's maps were returned)."""
    x = _x(n=6)

    def wrap(inner):
        return jaxsal.FunctionModel(lambda q, xx: inner.apply(inner.params, xx), None)

    path = tmp_path / "held.npy"
    models = [jaxsal.FunctionModel(_mlp, _mlp_params(seed=s)) for s in (0, 3)]
    for inner in models:
        out = np.array(jaxsal.explain_to_file(jaxsal.saliency, wrap(inner), x, path,
                                              targets=1, batch_size=4, overwrite=True))
        np.testing.assert_allclose(out, jaxsal.saliency(inner, x, 1), rtol=1e-6)


def _split_model(p):
    def feat(q, xx):
        return jax.nn.relu(xx @ q["c"])  # (N, H, W, 4): a 1x1 convolution

    return jaxsal.FunctionModel(features=feat, head_fn=lambda q, a: a.mean((1, 2)) @ q["d"],
                                params=p, layer="conv")


@pytest.mark.parametrize("first", ["jit", "eager"])
def test_jit_over_a_call_on_constant_inputs_with_traced_params(first):
    """``jax.jit(lambda p: method(FunctionModel(f, p), x, ...))`` with ``x`` a constant the
    function closes over: the input's NaN check was a tracer there (a
    TracerBoolConversionError), and a call plan made while tracing kept its target ids as
    tracers (the next call raised an UnexpectedTracerError); maps computed inside the jit
    pass the evaluation metrics' checks. Values equal the eager calls'."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    p = {"c": jax.random.normal(k1, (2, 4)), "d": jax.random.normal(k2, (4, 3))}
    x = jax.random.normal(jax.random.PRNGKey(3), (3, 5, 5, 2))
    calls = {
        "saliency": lambda q: jaxsal.saliency(_split_model(q), x, 0),
        "gradcam": lambda q: jaxsal.gradcam(_split_model(q), x, [0, 2]),
        "gradient_shap": lambda q: jaxsal.gradient_shap(_split_model(q), x, 1, baselines=x,
                                                        key=jax.random.PRNGKey(1)),
        "deletion": lambda q: jaxsal.deletion(
            _split_model(q), x, jaxsal.saliency(_split_model(q), x, 0), 0).auc,
    }
    for name, call in calls.items():
        if first == "jit":
            traced = jax.jit(call)(p)
            eager = call(p)
        else:
            eager = call(p)
            traced = jax.jit(call)(p)
        np.testing.assert_allclose(traced, eager, rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(jax.jit(call)(p), eager, rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_params_give_float32_maps_from_every_method(dtype):
    """A model whose params (and so its layers and outputs) are bfloat16/float16: Eigen-CAM
    ran ``eigh`` on them (NotImplementedError: no such kernel), occlusion and KernelSHAP
    returned maps in the model's dtype; every method now returns float32 maps close to the
    float32 model's (the half-precision forward pass's own rounding apart)."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    p = {"c": jax.random.normal(k1, (2, 4)), "d": jax.random.normal(k2, (4, 3))}
    half = jax.tree_util.tree_map(lambda a: a.astype(dtype), p)

    def feat(q, xx):
        return jax.nn.relu(xx.astype(q["c"].dtype) @ q["c"])

    def model(q):
        return jaxsal.FunctionModel(features=feat, head_fn=lambda q, a: a.mean((1, 2)) @ q["d"],
                                    params=q, layer="conv")

    x = jax.random.normal(jax.random.PRNGKey(3), (3, 5, 5, 2))
    key = jax.random.PRNGKey(1)
    calls = {"eigencam": lambda m: jaxsal.eigencam(m, x),
             "occlusion": lambda m: jaxsal.occlusion(m, x, [0, 2], patch=2),
             "kernel_shap": lambda m: jaxsal.kernel_shap(m, x, 1, key=key),
             "shapley_value_sampling": lambda m: jaxsal.shapley_value_sampling(m, x, 1,
                                                                               key=key),
             "saliency": lambda m: jaxsal.saliency(m, x, 1)}
    tol = 0.05 if dtype == jnp.bfloat16 else 0.01
    for name, call in calls.items():
        got, ref = call(model(half)), np.asarray(call(model(p)))
        assert got.dtype == jnp.float32, (name, got.dtype)
        assert np.abs(np.asarray(got) - ref).max() <= tol * np.abs(ref).max(), name


def _shuffled(key, a):
    """``randomization_test``'s ``"permute"`` of one array with ``key``, as its documentation
    states it: NumPy's shuffle of a copy, its generator seeded with 128 bits of the key."""
    flat = np.array(a).reshape(-1)
    np.random.default_rng(np.asarray(jax.random.bits(key, (4,), jnp.uint32))).shuffle(flat)
    return jnp.asarray(flat.reshape(a.shape))


def test_randomization_test_of_flax_linen_variables_goes_module_by_module():
    """A FunctionModel over ``net.apply`` with linen's variables: the layers randomized are
    the modules, last created first, each across its collections (``params`` and
    ``batch_stats`` were taken as two layers: every module's weights in one step); each
    step equals randomizing that module's entries by hand with the same key."""
    nn = pytest.importorskip("flax.linen")

    class Net(nn.Module):
        @nn.compact
        def __call__(self, xx):
            xx = nn.relu(nn.BatchNorm(use_running_average=True)(nn.Conv(4, (3, 3))(xx)))
            return nn.Dense(3)(xx.mean((1, 2)))

    net = Net()
    x = jax.random.normal(jax.random.PRNGKey(2), (3, 6, 6, 2))
    v = net.init(jax.random.PRNGKey(0), x)
    v = {"params": v["params"],  # running statistics that are not constants (permutable)
         "batch_stats": jax.tree_util.tree_map(
             lambda a: a + jax.random.uniform(jax.random.PRNGKey(5), a.shape), v["batch_stats"])}
    fm = jaxsal.FunctionModel(net.apply, v)

    def explain(m):
        return jaxsal.saliency(m, x, 0)

    out = jaxsal.randomization_test(explain, fm, key=0, cascade=False)
    assert list(out) == ["Dense_0", "BatchNorm_0", "Conv_0"]
    key = jax.random.PRNGKey(0)
    # by hand: step 1 (BatchNorm_0) permutes its leaves across both collections
    mine = {c: v[c]["BatchNorm_0"] for c in ("params", "batch_stats")}
    leaves, tree = jax.tree_util.tree_flatten(mine)
    # (each layer's key: the key folded with the CRC-32 of its name's repr, documented)
    keys = jax.random.split(jax.random.fold_in(key, zlib.crc32(b"'BatchNorm_0'")), len(leaves))
    shuffled = tree.unflatten([_shuffled(k, a) for k, a in zip(keys, leaves)])
    by_hand = {c: {**v[c], "BatchNorm_0": shuffled[c]} for c in v}
    np.testing.assert_allclose(
        out["BatchNorm_0"],
        jaxsal.rank_correlation(explain(fm), explain(fm.with_params(by_hand))), rtol=1e-6)


def test_layer_and_relu_kwarg_are_checked_when_the_model_is_made():
    """``layer=None`` was refused only by a CAM call, as if its own ``layer=`` were wrong;
    ``relu_kwarg=3`` was accepted and failed inside guided backprop."""
    p = _mlp_params()
    with pytest.raises(TypeError, match="FunctionModel: expected layer= as the name"):
        jaxsal.FunctionModel(features=lambda q, x: x, head_fn=_mlp, params=p, layer=None)
    with pytest.raises(TypeError, match="FunctionModel: expected relu_kwarg as the name"):
        jaxsal.FunctionModel(_mlp, p, relu_kwarg=3)


def test_a_function_and_params_pair_is_a_model_everywhere():
    """README: "(f, params) is accepted wherever a model is"; randomization_test, maximize
    and feature_maps refused it (maximize saying it expected a KerasModel). Each gives what
    the same FunctionModel gives."""
    p = {"dense": {"w": jax.random.normal(jax.random.PRNGKey(0), (12, 3))}}

    def f(q, x):
        return x.reshape(len(x), -1) @ q["dense"]["w"]

    x = _x(n=3)
    fm = jaxsal.FunctionModel(f, p)

    def explain(m):
        return jaxsal.saliency(m, x, 0)

    for a, b in ((jaxsal.randomization_test(explain, (f, p), key=0),
                  jaxsal.randomization_test(explain, fm, key=0)),):
        assert list(a) == list(b) == ["dense"]
        np.testing.assert_allclose(a["dense"], b["dense"])
    np.testing.assert_allclose(jaxsal.maximize((f, p), 1, image_shape=(2, 2, 3), steps=3).images,
                               jaxsal.maximize(fm, 1, image_shape=(2, 2, 3), steps=3).images)
    split = (lambda q, xx: xx, p)
    with pytest.raises(ValueError, match="unknown layer 'conv'"):  # a model, with no layers
        jaxsal.feature_maps(split, x, "conv")


def test_model_objects_of_other_libraries_are_refused_with_how_to_pass_them():
    """A flax.nnx module, a flax.linen module (no variables) and a Keras model object were
    refused as "a bare function"; each error now names the object and the way in."""
    import flax.linen as nn
    from flax import nnx

    x = _x(n=2)
    keras = pytest.importorskip("keras")
    inp = keras.Input(x.shape[1:])
    cases = [
        (nnx.Linear(12, 3, rngs=nnx.Rngs(0)), r"flax\.nnx module: split it.*nnx\.merge"),
        (nn.Dense(3), r"flax\.linen module without its variables.*module\.apply, variables"),
        (keras.Model(inp, keras.layers.Dense(3)(keras.layers.Flatten()(inp))),
         r"Keras model object: save it.*load_keras\('model\.keras'\)"),
    ]
    for obj, match in cases:
        for call in (lambda m: jaxsal.saliency(m, x, 0),
                     lambda m: jaxsal.maximize(m, 0, image_shape=(2, 2, 3), steps=2)):
            with pytest.raises(TypeError, match=match):
                call(obj)
    with pytest.raises(TypeError, match="got a bare function"):  # a plain function: as before
        jaxsal.saliency(lambda xx: xx, x, 0)


def test_a_model_file_s_path_is_refused_saying_to_load_it():
    """A path given as the model (str or PathLike) got "expected a model ..., got str" with
    no way out; the error now says to load the file, as README's first example does."""
    import pathlib

    x = _x(n=2)
    for path in ("model.keras", pathlib.Path("model.keras")):
        for call in (lambda m: jaxsal.saliency(m, x, 0),
                     lambda m: jaxsal.maximize(m, 0, image_shape=(2, 2, 3), steps=2)):
            with pytest.raises(TypeError, match=r"got a path to a model file \('model\.keras'\)"
                                                r".*model_import\.load_keras\(path\).*"
                                                r'with_head\("logits"\)'):
                call(path)


def test_explain_to_file_tells_apart_relus_of_ones_own(tmp_path):
    """A FunctionModel given a ReLU of the user's own (``relu=``): another ReLU is another
    job (only ``relu_mode`` was recorded: the first ReLU's maps were returned)."""
    x = _x(n=6)
    path = tmp_path / "relu.npy"
    for slope in (0.0, 0.5):
        leaky = functools.partial(jax.nn.leaky_relu, negative_slope=slope)
        m = jaxsal.FunctionModel(_mlp, _mlp_params(), relu_kwarg="relu", relu=leaky)
        out = np.array(jaxsal.explain_to_file(jaxsal.saliency, m, x, path, targets=2,
                                              batch_size=4, overwrite=True))
        np.testing.assert_allclose(out, jaxsal.saliency(m, x, 2), rtol=1e-6)


def test_a_jitted_function_whose_relu_is_not_static_is_told_how():
    """guided_backprop passes its ReLU (a function) through relu_kwarg; a jax.jit-ed model
    function without static_argnames failed with JAX's message alone, which names neither
    the ReLU nor relu_kwarg. The error now says both, and the static form works."""
    p, x = _mlp_params(), _x()
    plain = jaxsal.FunctionModel(_mlp, p, relu_kwarg="relu", input_shape=(2, 2, 3))
    jitted = jaxsal.FunctionModel(jax.jit(_mlp), p, relu_kwarg="relu", input_shape=(2, 2, 3))
    with pytest.raises(ValueError, match=r"relu= argument .*static_argnames='relu'"):
        jaxsal.guided_backprop(jitted, x, 0)
    # DeepLIFT's rule reaches the function the same way (it raised JAX's TypeError alone)
    with pytest.raises(ValueError, match=r"'deeplift' rule .*static_argnames='relu'"):
        jaxsal.deeplift(jitted, x, 0)
    static = jaxsal.FunctionModel(jax.jit(_mlp, static_argnames="relu"), p, relu_kwarg="relu",
                                  input_shape=(2, 2, 3))
    np.testing.assert_allclose(jaxsal.guided_backprop(static, x, 0),
                               jaxsal.guided_backprop(plain, x, 0), rtol=1e-6)
    np.testing.assert_allclose(jaxsal.deeplift(static, x, 0), jaxsal.deeplift(plain, x, 0),
                               rtol=1e-6)


def test_randomization_test_of_list_and_named_tuple_params():
    """Params as a list of per-layer tuples (stax's ``init_fun`` gives them) or a NamedTuple of
    layers were refused ("needs a dict keyed by layer"). Their entries (fields) are the layers,
    last first; each step equals randomizing that entry by hand with the same key, and the
    structure the function takes is kept."""
    import collections

    p = _mlp_params()
    stax = [(p["w1"], jnp.zeros(8)), (), (p["w2"], jnp.zeros(3))]  # Dense, Relu, Dense

    def f_list(q, x):
        (w1, b1), _, (w2, b2) = q
        return jax.nn.relu(x.reshape(len(x), -1) @ w1 + b1) @ w2 + b2

    Layers = collections.namedtuple("Layers", ["hidden", "out"])
    named = Layers(p["w1"], p["w2"])

    def f_named(q, x):
        return jax.nn.relu(x.reshape(len(x), -1) @ q.hidden) @ q.out

    x = _x()

    def explain(m):
        return jaxsal.saliency(m, x, 0)

    key = jax.random.PRNGKey(0)
    for f, params, names, step, entry in (
            (f_list, stax, [2, 0], 1, 0), (f_named, named, ["out", "hidden"], 1, "hidden")):
        fm = jaxsal.FunctionModel(f, params)
        out = jaxsal.randomization_test(explain, fm, key=0, cascade=False)
        assert list(out) == names  # (stax's Relu entry has no parameters)
        leaves, tree = jax.tree_util.tree_flatten(
            params[entry] if isinstance(entry, int) else getattr(params, entry))
        keys = jax.random.split(jax.random.fold_in(key, zlib.crc32(repr(entry).encode())),
                                len(leaves))
        mine = tree.unflatten([_shuffled(k, a) for k, a in zip(keys, leaves)])
        by_hand = (params._replace(**{entry: mine}) if isinstance(entry, str)
                   else [mine if i == entry else v for i, v in enumerate(params)])
        np.testing.assert_allclose(
            out[names[step]],
            jaxsal.rank_correlation(explain(fm), explain(fm.with_params(by_hand))), rtol=1e-6)
        assert np.nanmean(np.asarray(out[names[-1]])) < 0.9  # the maps changed
    one = jaxsal.randomization_test(explain, jaxsal.FunctionModel(f_list, stax), key=0,
                                    layers=0)
    assert list(one) == [0]


def test_class_ids_on_a_dict_suggest_its_n_by_classes_output():
    """With a dict of an (N, 1) output before the (N, classes) one, the class-id error
    suggested the first 2-D key ('aux', one column); it suggests the output of several
    columns, and its score function, applied as written, gives the plain model's maps."""
    import re

    p, x = _mlp_params(), _x()
    as_dict = jaxsal.FunctionModel(lambda q, xx: {"aux": xx.sum((1, 2, 3))[:, None],
                                                  "logits": _mlp(q, xx)}, p)
    with pytest.raises(ValueError, match=r"\{'aux': \(4, 1\), 'logits': \(4, 3\)\}") as e:
        jaxsal.saliency(as_dict, x, 1)
    score = re.search(r"targets=(lambda outs: outs\['\w+'\]\[:, k\])", str(e.value)).group(1)
    fn = eval(score, {"k": 1})  # noqa: S307
    np.testing.assert_allclose(jaxsal.saliency(as_dict, x, fn),
                               jaxsal.saliency(jaxsal.FunctionModel(_mlp, p), x, 1), rtol=1e-6)
