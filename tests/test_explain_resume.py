"""explain_to_file's job identity and chunking: a resumed job is the same job (model, head,
options in full, score functions), per-input options and SmoothGrad's noise follow the
inputs across chunks, and a mismatched file is refused clearly."""

import functools
import os
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal
from batch_helpers import rows_of
from jaxsal._src.job_files import unfinished
from jaxsal._src.job_signature import _signature


class Stop(Exception):
    pass


def _stop_after_first(done, total):
    if done == 1:
        raise Stop


def _interrupted(method, model, x, path, **kw):
    """Run a job and stop it after its first chunk (a killed process)."""
    with pytest.raises(Stop):
        jaxsal.explain_to_file(method, model, x, path, on_chunk=_stop_after_first, **kw)


@pytest.fixture(scope="module")
def digits(mnist_digits):
    return mnist_digits[:4]


def assert_same_maps(out, ref) -> None:
    """A job's maps (chunks of a few inputs) against one call over all of them: equal up to
    float32 rounding, which differs between batch sizes, and ``tanh``'s derivative
    ``1 - tanh**2`` near saturation turns a rounding of ``tanh`` into an absolute error (jax
    0.12.1 on an Intel Xeon: up to 1.9e-5 of the largest value). Maps of other weights or
    targets differ by about the largest value."""
    ref = np.asarray(ref)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4 * np.abs(ref).max())


@pytest.fixture(scope="module")
def linear():
    """A tiny tanh-linear image model: 5x5x1 inputs, 3 classes."""
    w = jax.random.normal(jax.random.key(0), (25, 3))
    return jaxsal.FunctionModel(lambda p, xx: jnp.tanh(xx.reshape(len(xx), -1) @ p), w)


@pytest.fixture(scope="module")
def xs():
    return np.random.RandomState(0).rand(6, 5, 5, 1).astype(np.float32)


def test_resume_with_another_head_starts_over(tmp_path, mnist, digits):
    path = tmp_path / "maps.npy"
    _interrupted(jaxsal.saliency, mnist.with_head("logits"), digits, path, targets=3,
                 batch_size=2)
    # another job over an unfinished one's chunk: refused (it replaced them without a word)
    with pytest.raises(FileExistsError, match=r"maps.npy holds 1 of 2 finished chunks of the "
                       r"unfinished job that wrote it \(says its progress file .*; that job's "
                       r"own command resumes it\); this job would replace it"):
        jaxsal.explain_to_file(jaxsal.saliency, mnist, digits, path, targets=3, batch_size=2)
    assert unfinished(path)[:2] == (1, 2)
    out = jaxsal.explain_to_file(jaxsal.saliency, mnist, digits, path, targets=3, batch_size=2,
                                 overwrite=True)
    ref = jaxsal.saliency(mnist, digits, 3)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())


def test_resume_with_other_weights_starts_over(tmp_path, linear, xs):
    path = tmp_path / "maps.npy"
    _interrupted(jaxsal.saliency, linear, xs, path, targets=1, batch_size=3)
    other = linear.with_params(linear.params.at[0, 1].add(1.0))  # one weight changed
    out = jaxsal.explain_to_file(jaxsal.saliency, other, xs, path, targets=1, batch_size=3,
                                 overwrite=True)
    assert_same_maps(out, jaxsal.saliency(other, xs, 1))
    # the same model (a copy of its weights) resumes: nothing is recomputed
    again = []

    def counting(model, x, targets=None):
        again.append(len(x))
        return jaxsal.saliency(model, x, targets)

    jaxsal.explain_to_file(counting, other, xs, tmp_path / "b.npy", targets=1, batch_size=3)
    same = other.with_params(np.array(other.params))
    jaxsal.explain_to_file(counting, same, xs, tmp_path / "b.npy", targets=1, batch_size=3)
    assert again == [3, 3]  # the second call resumed a finished job


def test_signature_hashes_whole_arrays(linear):
    """Arrays are hashed whole (numpy's repr elides arrays over 1000 elements)."""
    b1 = np.zeros((64, 28, 28, 1), np.float32)
    b2 = b1.copy()
    b2[10, 14, 14, 0] = 0.9
    x = np.zeros((64, 5, 5, 1), np.float32)
    sig = [_signature(jaxsal.integrated_gradients, linear, x, {"baseline": b}, 1, 64)
           for b in (b1, b2, jnp.asarray(b2))]
    assert sig[0] != sig[1] and sig[1] == sig[2]


def test_bfloat16_weights_and_options_are_hashed(tmp_path, linear, xs):
    # memoryview has no code for bfloat16: the bytes are hashed through a uint8 view
    m16 = linear.with_params(linear.params.astype(jnp.bfloat16))
    base = jnp.full(xs.shape[1:], 0.25, jnp.bfloat16)
    out = jaxsal.explain_to_file(jaxsal.integrated_gradients, m16, xs, tmp_path / "b.npy",
                                 targets=1, batch_size=3, steps=4, baseline=base)
    np.testing.assert_allclose(out, jaxsal.integrated_gradients(m16, xs, 1, steps=4,
                                                                baseline=base), rtol=1e-5)
    sig = [_signature(jaxsal.saliency, m16, xs, {"baseline": b}, 1, 3)
           for b in (base, base.at[0, 0, 0].set(0.5))]
    assert sig[0] != sig[1]


def test_per_input_baseline_is_sliced_and_in_the_signature(tmp_path, linear, xs):
    b1 = np.random.RandomState(1).rand(*xs.shape).astype(np.float32)
    b2 = b1.copy()
    b2[5] += 0.5  # only the last chunk's baseline differs
    path = tmp_path / "ig.npy"
    kw = dict(targets=[0, 2], batch_size=4, steps=4)
    _interrupted(jaxsal.integrated_gradients, linear, xs, path, baseline=b1, **kw)
    out = jaxsal.explain_to_file(jaxsal.integrated_gradients, linear, xs, path, baseline=b2,
                                 **kw)
    want = jaxsal.integrated_gradients(linear, xs, [0, 2], baseline=b2, steps=4)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match=r"option baseline has shape \(4, 5, 5, 1\).*6"):
        jaxsal.explain_to_file(jaxsal.integrated_gradients, linear, xs, tmp_path / "c.npy",
                               baseline=b1[:4], **kw)


def test_per_input_occlusion_fill_is_sliced(tmp_path, linear, xs):
    fill = np.random.RandomState(2).rand(*xs.shape).astype(np.float32)
    out = jaxsal.explain_to_file(jaxsal.occlusion, linear, xs, tmp_path / "o.npy", targets=1,
                                 batch_size=4, patch=2, fill=fill)
    # score drops of O(1) float32 scores: absolute roundings of ~1e-7
    np.testing.assert_allclose(out, jaxsal.occlusion(linear, xs, 1, patch=2, fill=fill),
                               rtol=1e-5, atol=1e-6)


def test_smoothgrad_chunks_equal_one_call(tmp_path, linear, xs):
    x = np.concatenate([xs[:3], xs[:3]])  # inputs 3..5 repeat 0..2: their noise must differ
    one = np.asarray(jaxsal.smoothgrad(linear, x, 1, key=jax.random.key(0), n=3))
    for b in (2, 4):  # 3 chunks, 2 chunks (the last padded)
        f = jaxsal.explain_to_file(jaxsal.smoothgrad, linear, x, tmp_path / f"s{b}.npy",
                                   targets=1, batch_size=b, key=jax.random.key(0), n=3)
        np.testing.assert_allclose(f, one, rtol=1e-5, atol=1e-7)
    assert not np.allclose(one[:3], one[3:])
    # index_offset is the position of x[0] in a larger batch
    np.testing.assert_allclose(
        jaxsal.smoothgrad(linear, x[3:5], 1, key=jax.random.key(0), n=3, index_offset=3),
        one[3:5], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("targets", [jaxsal.class_score(2), jaxsal.neuron("x", (1,)),
                                     [jaxsal.class_score(0), jaxsal.class_score(2)]],
                         ids=["class_score", "neuron-missing-layer", "list"])
def test_score_function_targets(tmp_path, linear, xs, targets):
    if isinstance(targets, jaxsal._src.targets.LayerScore):
        # (refused before any work: the first chunk's call is traced first)
        with pytest.raises(ValueError, match="^unknown layer 'x'.*Refused before any work"):
            jaxsal.explain_to_file(jaxsal.saliency, linear, xs, tmp_path / "n.npy",
                                   targets=targets, batch_size=4)
        return
    out = jaxsal.explain_to_file(jaxsal.saliency, linear, xs, tmp_path / "t.npy",
                                 targets=targets, batch_size=4)
    assert_same_maps(out, jaxsal.saliency(linear, xs, targets))


def test_lambda_targets_resume_only_the_same_function(tmp_path, linear, xs):
    path = tmp_path / "l.npy"
    _interrupted(jaxsal.saliency, linear, xs, path, targets=lambda y: y[:, 0], batch_size=3)
    out = jaxsal.explain_to_file(jaxsal.saliency, linear, xs, path, targets=lambda y: y[:, 2],
                                 batch_size=3, overwrite=True)  # another constant: a new job
    assert_same_maps(out, jaxsal.saliency(linear, xs, 2))


CLASS = 0  # a module-level variable a score function reads, as in a notebook


@pytest.mark.parametrize("where", ["module", "closure", "nested"])
def test_a_reassigned_variable_a_score_function_reads_is_another_job(tmp_path, linear, xs,
                                                                     where):
    """The same score function reading a reassigned variable: a new job, computed with the
    new value (a module-level one was not in the signature: the finished job was returned;
    a closure one restarted the job on the program traced with the old value; a
    module-level one read by a function inside the score function, the finished job was
    returned and the program traced with the old value reused)."""
    global CLASS
    k = 0
    score = {"module": lambda y: y[:, CLASS], "closure": lambda y: y[:, k],
             "nested": lambda y: jax.vmap(lambda row: row[CLASS])(y)}[where]
    path = tmp_path / "s.npy"
    CLASS = 0
    jaxsal.explain_to_file(jaxsal.saliency, linear, xs, path, targets=score, batch_size=3)
    CLASS = k = 2
    out = jaxsal.explain_to_file(jaxsal.saliency, linear, xs, path, targets=score,
                                 batch_size=3, overwrite=True)
    assert_same_maps(out, jaxsal.saliency(linear, xs, 2))


STEPS = 2  # a module-level setting a method function reads, as in a notebook


def _ig_module(model, x, targets=None):
    return jaxsal.integrated_gradients(model, x, targets, steps=STEPS)


def _ig_closure(steps):
    def ig(model, x, targets=None):
        return jaxsal.integrated_gradients(model, x, targets, steps=steps)
    return ig


class _IG:
    def __init__(self, steps):
        self.steps, self.calls = steps, []  # a setting and a call log

    def __call__(self, model, x, targets=None):
        self.calls.append(len(x))
        return jaxsal.integrated_gradients(model, x, targets, steps=self.steps)

    def explain(self, model, x, targets=None):
        return self(model, x, targets)


def _ig_default(steps):
    def ig(model, x, targets=None, steps=steps):  # (a default, not a closure variable)
        return jaxsal.integrated_gradients(model, x, targets, steps=steps)
    return ig


class _IGClass:
    steps = 2  # a class attribute read through self

    def __call__(self, model, x, targets=None):
        return jaxsal.integrated_gradients(model, x, targets, steps=self._steps())

    def _steps(self):
        return self.steps


@pytest.mark.parametrize("where", ["module", "closure", "instance", "bound method",
                                   "default", "class attribute"])
def test_a_setting_a_method_function_reads_is_part_of_the_job(tmp_path, linear, xs,
                                                              monkeypatch, where):
    """A method of one's own reading a setting (a module-level STEPS = 2, then 5; a
    closure's steps; a callable object's or a bound method's self.steps; a default argument;
    a class attribute read through self, by a helper method): the method was described by
    its name and code (or its class) alone, so the run with the new value resumed the old
    job and the file mixed chunks of both settings."""
    path = tmp_path / "m.npy"
    method = {"module": lambda: _ig_module, "closure": lambda: _ig_closure(STEPS),
              "instance": lambda: _IG(STEPS), "bound method": lambda: _IG(STEPS).explain,
              "default": lambda: _ig_default(STEPS), "class attribute": _IGClass}[where]
    _interrupted(method(), linear, xs, path, targets=1, batch_size=3)
    monkeypatch.setattr(__import__(__name__), "STEPS", 5)
    monkeypatch.setattr(_IGClass, "steps", 5)
    out = jaxsal.explain_to_file(method(), linear, xs, path, targets=1, batch_size=3,
                                 overwrite=True)
    np.testing.assert_allclose(out, jaxsal.integrated_gradients(linear, xs, 1, steps=5),
                               rtol=1e-5, atol=1e-7)


def test_a_callable_object_s_call_log_is_not_a_setting(tmp_path, linear, xs):
    """(Its list attribute is state: the job resumes.)"""
    path = tmp_path / "m.npy"
    _interrupted(_IG(2), linear, xs, path, targets=1, batch_size=3)
    again = _IG(2)
    again.calls.append(99)
    jaxsal.explain_to_file(again, linear, xs, path, targets=1, batch_size=3)
    assert again.calls == [99, 3]


def test_unstable_option_needs_resume_false(tmp_path, linear, xs):
    class Opaque:
        pass

    def method(model, x, targets=None, thing=None):
        return jaxsal.saliency(model, x, targets)

    with pytest.raises(TypeError, match="resume=False"):
        jaxsal.explain_to_file(method, linear, xs, tmp_path / "u.npy", targets=1,
                               thing=Opaque())
    out = jaxsal.explain_to_file(method, linear, xs, tmp_path / "u.npy", targets=1,
                                 thing=Opaque(), resume=False)
    assert out.shape == (6, 5, 5)


class _Opaque:
    """An object with no stable description (its repr names its address)."""

    def __call__(self, v):
        return v


def test_a_keras_model_s_own_relu_and_rules_are_part_of_the_job(mnist):
    """A KerasModel's ReLU of one's own (with_relu) was recorded by its name alone
    ("custom"): a softplus model's job resumed over a leaky-ReLU model's chunks, and the
    rules of with_rules were not recorded at all. They are described by their code and
    closure values, as a FunctionModel's; the named rules (guided...) by their name, as
    before; one of no stable description cannot resume."""
    from jaxsal._src.job_signature import _Unstable, model_fingerprint

    softplus = model_fingerprint(mnist.with_relu(jax.nn.softplus))
    assert softplus != model_fingerprint(mnist.with_relu(lambda v: jax.nn.leaky_relu(v, 0.3)))
    assert softplus == model_fingerprint(mnist.with_relu(jax.nn.softplus))
    for named in (mnist, mnist.with_backprop("guided")):
        assert set(model_fingerprint(named)) == set(model_fingerprint(mnist))
    doubled = [model_fingerprint(mnist.with_rules(elementwise=lambda f, x, k=k: f(x) * k))
               for k in (2.0, 3.0)]
    assert doubled[0] != doubled[1] and model_fingerprint(mnist) not in doubled
    with pytest.raises(_Unstable):
        model_fingerprint(mnist.with_relu(_Opaque()))


def _flatten(scale):
    """A converter of one's own for Keras's Flatten, scaling its values by ``scale``."""
    from model_import import LayerImpl

    def converter(config, ctx):
        return LayerImpl(call=lambda p, x, *, rt: x.reshape(len(x), -1) * scale)

    return converter


def test_a_converter_of_one_s_own_is_part_of_the_job(fixtures_dir):
    """The architecture's hash recorded each layer's class and config, not the converter of
    one's own that computes it (custom_layers=, register_layer): a job of a model loaded
    with a fixed converter resumed over the chunks of one loaded with a wrong one."""
    from model_import import load_keras
    from jaxsal._src.job_signature import model_fingerprint

    path = fixtures_dir / "mnist_cnn_keras3.keras"
    prints = [model_fingerprint(load_keras(path, custom_layers={"Flatten": _flatten(k)}))
              for k in (1.0, 2.0, 2.0)]
    assert prints[0] != prints[1] and prints[1] == prints[2]
    assert prints[0] != model_fingerprint(load_keras(path))


def _wrapper_of(method):
    def wrapped(model, x, targets=None):
        return method(model, x, targets)

    return wrapped


class _Helped:
    """A callable object whose attribute is one of its own methods."""

    def __init__(self):
        self.helper = self.run

    def run(self, x):
        return x

    def __call__(self, model, x, targets=None):
        return self.helper(x)


def _wrapper_on(other):
    def wrapped(model, x, targets=None):
        return jaxsal.saliency(other, x, targets)

    return wrapped


def test_the_functions_and_models_a_method_closes_over_are_part_of_the_job(tmp_path, linear,
                                                                           xs):
    """A method of one's own closing over a method or a model (a wrapper) was described by
    its code alone: wrappers of saliency and gradient x input, or on models of other
    weights, were the same job, and resumed over each other's chunks. The functions are
    described as methods (their code and settings), the models by their fingerprint; one of
    no stable description asks for resume=False."""
    from jaxsal._src.job_signature import _method_description

    def sig(method):
        return _signature(method, linear, xs, {}, 1, 3)

    assert sig(_wrapper_of(jaxsal.saliency)) != sig(_wrapper_of(jaxsal.gradient_x_input))
    assert sig(_wrapper_of(jaxsal.saliency)) == sig(_wrapper_of(jaxsal.saliency))
    assert sig(_wrapper_of(_wrapper_of(jaxsal.saliency))) != sig(
        _wrapper_of(_wrapper_of(jaxsal.gradient_x_input)))
    other = linear.with_params(2 * linear.params)
    assert sig(_wrapper_on(linear)) != sig(_wrapper_on(other))
    assert sig(_wrapper_on(other)) == sig(_wrapper_on(linear.with_params(2 * linear.params)))
    _method_description(_wrapper_of(_wrapper_of))  # (a function reading itself: described)
    _method_description(_Helped())  # (an object holding its own method: described)
    opaque = jaxsal.FunctionModel(lambda p, v, f=_Opaque(): f(v) @ p, linear.params)
    with pytest.raises(TypeError, match="resume=False"):
        jaxsal.explain_to_file(_wrapper_on(opaque), linear, xs, tmp_path / "o.npy",
                               targets=1, batch_size=3)


def test_other_input_shape_starts_over_and_a_replaced_file_is_refused(tmp_path, xs):
    fm = jaxsal.FunctionModel(lambda p, xx: xx.mean(axis=(1, 2)) @ p, jnp.ones((1, 3)))
    path = tmp_path / "shape.npy"
    _interrupted(jaxsal.saliency, fm, xs, path, targets=1, batch_size=3)
    other = np.random.RandomState(3).rand(6, 4, 3, 1).astype(np.float32)
    out = jaxsal.explain_to_file(jaxsal.saliency, fm, other, path, targets=1, batch_size=3,
                                 overwrite=True)
    assert out.shape == (6, 4, 3)
    # the progress file says "this job", but the .npy was replaced by something else
    _interrupted(jaxsal.saliency, fm, xs, path, targets=1, batch_size=3, overwrite=True)
    np.save(path, np.zeros((6, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"holds maps of shape \(4, 3\).*computes \(5, 5\)"):
        jaxsal.explain_to_file(jaxsal.saliency, fm, xs, path, targets=1, batch_size=3)
    np.save(path, np.zeros((2, 5, 5), np.float32))
    with pytest.raises(ValueError, match="for 6 inputs"):
        jaxsal.explain_to_file(jaxsal.saliency, fm, xs, path, targets=1, batch_size=3)


def test_targets_and_batch_size_are_checked_up_front(tmp_path, linear, xs):
    with pytest.raises(ValueError, match="expected 6 rows"):
        jaxsal.explain_to_file(jaxsal.saliency, linear, xs, tmp_path / "a.npy",
                               targets=np.zeros((4, 2), int), batch_size=2)
    for bad in (2.5, True, -1):
        with pytest.raises(ValueError, match="batch_size"):
            jaxsal.explain_to_file(jaxsal.saliency, linear, xs, tmp_path / "a.npy",
                                   batch_size=bad)
    out = jaxsal.explain_to_file(jaxsal.saliency, linear, xs, tmp_path / "a.npy", targets=0,
                                 batch_size=np.int64(4))
    assert out.shape == (6, 5, 5)


def test_resume_with_another_keras_backend_starts_over(tmp_path, fixtures_dir, digits):
    """The backend a model follows (``load_keras(keras_backend=)``) changes what some layers
    compute: a job run for one backend is not resumed for another."""
    from model_import import load_keras

    path = fixtures_dir / "mnist_cnn_keras3.keras"
    on_torch = load_keras(path, keras_backend="torch")
    on_jax = load_keras(path, keras_backend="jax")
    assert _signature(jaxsal.saliency, on_torch, digits, {}, 3, 2) != _signature(
        jaxsal.saliency, on_jax, digits, {}, 3, 2)
    calls = []

    def counting(model, x, targets=None):
        calls.append(model.keras_backend)
        return jaxsal.saliency(model, x, targets)

    out = tmp_path / "maps.npy"
    _interrupted(counting, on_torch, digits, out, targets=3, batch_size=2)
    jaxsal.explain_to_file(counting, on_jax, digits, out, targets=3, batch_size=2,
                           overwrite=True)
    assert calls == ["torch", "jax", "jax"]  # started over: both chunks for jax


def test_a_job_stopped_while_starting_over_leaves_no_old_progress(tmp_path, linear, xs,
                                                                  monkeypatch):
    """Job A stops after one chunk; job B, another job on the same path, starts over and is
    killed after rewriting the .npy but before recording its own progress. Running A again
    must start over, not resume over B's chunk."""
    import jaxsal._src.batch as batch

    path = tmp_path / "maps.npy"
    _interrupted(jaxsal.saliency, linear, xs, path, targets=1, batch_size=3)

    def killed(*a, **k):
        raise Stop

    with monkeypatch.context() as mp:
        mp.setattr(batch.os, "replace", killed)
        with pytest.raises(Stop):
            jaxsal.explain_to_file(jaxsal.gradient_x_input, linear, xs, path, targets=1,
                                   batch_size=3, overwrite=True)
    out = jaxsal.explain_to_file(jaxsal.saliency, linear, xs, path, targets=1, batch_size=3)
    assert_same_maps(out, jaxsal.saliency(linear, xs, 1))


def test_smoothgrad_s_own_method_option_reaches_it(tmp_path, linear, xs):
    """explain_to_file's method is positional, so SmoothGrad's method= (and its
    method_options, a per-input baseline sliced with the inputs) goes through to it (it
    collided: "got multiple values for argument 'method'")."""
    base = np.random.default_rng(4).uniform(size=xs.shape).astype(np.float32)
    kw = dict(key=0, n=2, method="integrated_gradients",
              method_options={"steps": 3, "baseline": base})
    out = jaxsal.explain_to_file(jaxsal.smoothgrad, linear, xs, tmp_path / "ig.npy",
                                 targets=[0, 2], batch_size=3, **kw)
    np.testing.assert_allclose(out, jaxsal.smoothgrad(linear, xs, [0, 2], **kw), rtol=1e-5,
                               atol=1e-7)


@pytest.mark.parametrize("given", ["option", "partial"])
def test_smoothgrad_s_method_given_as_a_jaxsal_function(tmp_path, linear, xs, given):
    """SmoothGrad takes its method as a name or as the jaxsal function (the direct call and
    the command line's name agree); a batch job refused the function ("cannot describe a
    _contextvars.ContextVar", read by the function's decorator). A jaxsal method is described
    by its name and code, as a job's method is: the job runs, resumes computing nothing, and
    another method is another job."""
    ig = dict(key=0, n=2, method_options={"steps": 3})

    def job(fn, path, **kw):
        if given == "partial":
            return jaxsal.explain_to_file(functools.partial(jaxsal.smoothgrad, method=fn),
                                          linear, xs, path, targets=[0, 2], batch_size=3, **kw)
        return jaxsal.explain_to_file(jaxsal.smoothgrad, linear, xs, path, targets=[0, 2],
                                      batch_size=3, method=fn, **kw)

    path = tmp_path / "ig.npy"
    out = job(jaxsal.integrated_gradients, path, **ig)
    want_ig = np.asarray(jaxsal.smoothgrad(linear, xs, [0, 2], method="integrated_gradients",
                                           **ig))
    np.testing.assert_allclose(out, want_ig, rtol=1e-5, atol=1e-7)
    chunks = []
    job(jaxsal.integrated_gradients, path, on_chunk=lambda done, total: chunks.append(done),
        **ig)
    assert chunks == []  # resumed: every chunk was done
    other = job(jaxsal.gradient_x_input, path, key=0, n=2, overwrite=True)  # another job
    want = jaxsal.smoothgrad(linear, xs, [0, 2], method="gradient_x_input", key=0, n=2)
    # the job's chunks of 3 and the direct call of all inputs are different compiled programs:
    # with jax 0.12.1 (Python 3.12) 10 of 300 values, near 1e-3 in maps up to 4e-2, differed
    # by up to 3e-7
    np.testing.assert_allclose(other, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(other, want_ig)  # (the file holds the other method's maps)


def test_a_job_resumed_in_64_bit_mode_is_another_job(tmp_path, mnist_digits):
    """JAX's 64-bit mode computes float64 maps of float64 inputs: a job stopped in the
    default mode and run again with x64 on starts over (it was refused as "the file was
    replaced after the job started"), and equals one call in that mode."""
    w = np.random.RandomState(1).randn(784, 3)  # float64 weights: the maps follow x64
    model = jaxsal.FunctionModel(lambda p, xx: jnp.tanh(xx.reshape(len(xx), -1) @ p), w)
    x = mnist_digits[:4].astype(np.float64)
    path = tmp_path / "maps.npy"
    _interrupted(jaxsal.saliency, model, x, path, targets=1, batch_size=2)
    assert rows_of(path).dtype == np.float32
    x64 = getattr(jax, "enable_x64", None)
    if x64 is None:  # older JAX (the oldest release pyproject.toml allows)
        from jax.experimental import enable_x64 as x64
    with x64(True):
        out = jaxsal.explain_to_file(jaxsal.saliency, model, x, path, targets=1, batch_size=2,
                                     overwrite=True)
        assert out.dtype == np.float64
        # float64 closeness (chunks of 2 against one call of 4: other roundings, jax 0.12)
        ref = jaxsal.saliency(model, x, 1)
        np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names an fd by /proc")
def test_the_progress_file_is_synced_before_it_is_put_in_place(tmp_path, linear, xs,
                                                               monkeypatch):
    """Each chunk's rows are flushed to the .npy before the progress file records them, and
    the progress file is written to a temporary file synced to the disk before os.replace
    puts it in place (then the folder is synced): a crash of the machine cannot leave an
    empty progress file (a file system may write the rename before the data) or one that
    lists rows the disk lacks."""
    import jaxsal._src.batch as batch

    events = []
    fsync, replace, write = os.fsync, os.replace, batch._write

    def logged_fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return fsync(fd)

    def logged_replace(src, dst):
        events.append(("replace", os.fspath(src), os.fspath(dst)))
        return replace(src, dst)

    def logged_write(out, lo, hi, maps):
        write(out, lo, hi, maps)
        events.append(("written", lo))

    monkeypatch.setattr(batch.os, "fsync", logged_fsync)
    monkeypatch.setattr(batch.os, "replace", logged_replace)
    monkeypatch.setattr(batch, "_write", logged_write)
    path = tmp_path / "maps.npy"
    out = jaxsal.explain_to_file(jaxsal.saliency, linear, xs, path, targets=1, batch_size=2)
    # (chunks of 2 against one call of 6: jax 0.12 rounds them differently, ~1e-6 relative)
    ref = jaxsal.saliency(linear, xs, 1)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
    progress = str(path) + ".progress.json"
    puts = [i for i, e in enumerate(events) if e[0] == "replace" and e[2] != str(path)]
    assert len(puts) == 4  # the job's start, then each of its 3 chunks (not the new .npy)
    for i in puts:
        assert events[i][2] == os.path.realpath(progress)
        assert events[i - 1] == ("fsync", os.path.realpath(events[i][1])), events
        assert events[i + 1] == ("fsync", os.path.realpath(tmp_path)), events
    written = [i for i, e in enumerate(events) if e[0] == "written"]
    assert [events[i][1] for i in written] == [0, 2, 4]
    assert all(w < p for w, p in zip(written, puts[1:])), events  # rows before their record


@pytest.mark.parametrize("content", [b"[0, 1]", b"\xff\xfe\x00"])
def test_a_progress_file_that_is_no_json_object_is_a_clear_error(tmp_path, linear, xs,
                                                                  content):
    path = tmp_path / "maps.npy"
    _interrupted(jaxsal.saliency, linear, xs, path, targets=1, batch_size=3)
    (tmp_path / "maps.npy.progress.json").write_bytes(content)
    with pytest.raises(ValueError, match=r"cannot read the progress file .*maps\.npy\.progress"
                                         r"\.json \(.*\); delete .*maps\.npy and"):
        jaxsal.explain_to_file(jaxsal.saliency, linear, xs, path, targets=1, batch_size=3)


def _doubled(model, x, targets=None):
    """A method stand-in (no compilation): ``2 x``."""
    return 2 * np.asarray(x)


def test_a_truncated_output_is_refused_not_padded_with_zeros(tmp_path, linear, xs):
    """An output cut short (an interrupted copy, a full disk) was reopened with np.memmap's
    "r+", which lengthened it with zeros: the chunks its progress file lists were kept as
    finished, zeros in their rows, and the file marked finished. It is refused, naming it."""
    path = tmp_path / "maps.npy"
    _interrupted(_doubled, linear, xs, path, batch_size=2)  # chunk 0 (inputs 0:2) finished
    os.truncate(path, 250)  # (the header's 192 bytes, then 14 of chunk 0's 50 values)
    with pytest.raises(ValueError, match=r"cannot reopen .*maps\.npy to resume this job \(.*"
                                         r"maps\.npy is shorter than its header says \(truncated"
                                         r".*: 250 bytes, where maps of shape \(6, 5, 5, 1\) "
                                         r"\(float32\) need 792.*\); delete .*maps\.npy and"):
        jaxsal.explain_to_file(_doubled, linear, xs, path, batch_size=2)
    assert os.path.getsize(path) == 250  # (left as it was, not lengthened)
    out = jaxsal.explain_to_file(_doubled, linear, xs, path, batch_size=2, resume=False,
                                 overwrite=True)
    np.testing.assert_array_equal(out, 2 * xs)


@pytest.mark.parametrize("torn", ["progress", "maps"])
def test_overwrite_starts_over_a_job_it_cannot_resume(tmp_path, linear, xs, torn):
    """A progress file that cannot be read, or a .npy that cannot be reopened: refused,
    saying what to delete or to pass overwrite=True (jaxsal: --overwrite), and with
    overwrite=True the job starts over (it was refused all the same, and the command line,
    which cannot pass resume=False, had no way but deleting the files)."""
    path = tmp_path / "maps.npy"
    _interrupted(_doubled, linear, xs, path, batch_size=2)
    if torn == "progress":
        progress = tmp_path / "maps.npy.progress.json"
        progress.write_bytes(progress.read_bytes()[:100])
    else:
        os.truncate(path, 250)
    with pytest.raises(ValueError, match=r"; delete .*maps\.npy and .*maps\.npy\.progress\.json, "
                                         r"or pass overwrite=True \(jaxsal: --overwrite\), to "
                                         r"start the job over, or write to another path$"):
        jaxsal.explain_to_file(_doubled, linear, xs, path, batch_size=2)
    out = jaxsal.explain_to_file(_doubled, linear, xs, path, batch_size=2, overwrite=True)
    np.testing.assert_array_equal(out, 2 * xs)
    assert unfinished(path) is None


def test_a_method_defined_by_exec_without_a_module(tmp_path, linear, xs):
    """(A function exec'd in a namespace without __name__ has no module: __module__ None.)"""
    ns = {"jaxsal": jaxsal}
    exec("def method(model, x, targets=None):\n    return jaxsal.saliency(model, x, targets)",
         ns)
    assert ns["method"].__module__ is None
    out = jaxsal.explain_to_file(ns["method"], linear, xs, tmp_path / "e.npy", targets=1)
    assert_same_maps(out, jaxsal.saliency(linear, xs, 1))


tanh = reshape = None  # module variables named like the attributes the `linear` model reads


@pytest.mark.parametrize("value", [2.0, threading.Lock()], ids=["number", "lock"])
def test_an_attribute_named_like_a_module_variable_is_not_a_read_of_it(tmp_path, linear, xs,
                                                                      value):
    """The model's function reads ``jnp.tanh`` and ``xx.reshape``, attributes, not this
    module's ``tanh`` and ``reshape``: every name of the code (``co_names``) was taken as a
    module-level read, so reassigning such a variable started a finished job over, and one
    that cannot be described (a lock) refused the job. A real read of a module variable
    stays in the signature (test_a_reassigned_variable_a_score_function_reads_is_another_job)."""
    global tanh, reshape
    path = tmp_path / "a.npy"
    tanh = reshape = 1.0
    first = jaxsal.explain_to_file(jaxsal.saliency, linear, xs, path, batch_size=3)
    tanh = reshape = value
    chunks = []
    again = jaxsal.explain_to_file(jaxsal.saliency, linear, xs, path, batch_size=3,
                                   on_chunk=lambda done, total: chunks.append(done))
    assert chunks == []  # resumed: nothing computed again
    np.testing.assert_array_equal(again, first)
