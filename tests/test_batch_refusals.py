"""Batch jobs (``jaxsal.explain_to_file``) refuse before any work what would fail in their
first chunk: an option the method does not take, options per input in a form the method
refuses, option rows the job cannot split; and what they pass a method of ``**kwargs``."""

import functools
import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal

W = np.array([[1.0, -2.0], [0.5, 3.0], [-1.5, 0.25]], np.float32)  # (3 features, 2 classes)


@pytest.fixture(scope="module")
def bent():
    """A plain function of one input (N, 3): tanh of a linear map, so that gradients depend
    on the point (SmoothGrad's noise changes them)."""
    return jaxsal.FunctionModel(lambda p, x: jnp.tanh(x @ p["w"]), {"w": jnp.asarray(W)})


@pytest.fixture
def x():
    return np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)


def _chunks():
    """An ``on_chunk`` that records the chunks a job computes."""
    done = []

    def on_chunk(k, total):
        done.append(k)

    on_chunk.done = done
    return on_chunk


# ---------------------------------------------------------------------- option names
@pytest.mark.parametrize("bound", ["targets", "x", "model"])
def test_a_positional_parameter_bound_in_a_partial_is_refused_as_an_option(tmp_path, bent, x,
                                                                         bound):
    """functools.partial(jaxsal.saliency, targets=3) failed with "too many positional
    arguments. Pass the options it needs", naming neither targets nor the fix, where
    targets=3 given to explain_to_file was refused naming both: the same refusal, before any
    work (nothing traced, written or called)."""
    calls = []

    def mine(model, inputs, t=None, *, scale=1.0):
        calls.append(scale)
        return scale * np.asarray(model(inputs))

    for method, names, what in (
            (jaxsal.saliency, ("model", "x", "targets"), "jaxsal.saliency"),
            (mine, ("model", "inputs", "t"), mine.__qualname__)):
        name = dict(zip(("model", "x", "targets"), names))[bound]
        partial = functools.partial(functools.partial(method, reduce=None) if method is
                                    jaxsal.saliency else method, **{name: 3})
        with pytest.raises(TypeError) as e:
            jaxsal.explain_to_file(partial, bent, x, tmp_path / "m.npy", batch_size=2)
        assert str(e.value).startswith(
            f"option {name}=... (bound in the functools.partial): explain_to_file passes "
            f"{what}'s {', '.join(names)} itself (each chunk's call is method(model, "
            "inputs[i:j], targets, **options)): give the inputs and targets as "
            "explain_to_file's own arguments"), e.value
    assert calls == [] and list(tmp_path.iterdir()) == []


def test_an_option_the_method_does_not_take_is_refused_before_any_work(tmp_path, bent, x):
    """An option a method does not take failed in the first chunk with Python's "unexpected
    keyword argument" (the command line refused it up front): refused first, naming the
    option, the method and its options, for jaxsal's methods (also under a partial) and for
    one's own (by its signature); nothing is called or written."""
    path = tmp_path / "maps.npy"
    takes = ", ".join(list(inspect.signature(jaxsal.saliency).parameters)[3:])
    with pytest.raises(TypeError, match=re.escape(
            f"jaxsal.saliency takes no option 'patch'; its options: {takes}. Options are "
            "passed on to the method as keywords: check the name (nothing was computed)")):
        jaxsal.explain_to_file(jaxsal.saliency, bent, x, path, batch_size=2, patch=2)
    with pytest.raises(TypeError, match=re.escape("jaxsal.saliency takes no option 'patch'")):
        jaxsal.explain_to_file(functools.partial(jaxsal.saliency, reduce=None), bent, x, path,
                               batch_size=2, patch=2)
    calls = []

    def mine(model, inputs, t=None, *, scale=1.0):
        calls.append(scale)
        return scale * np.asarray(model(inputs))

    with pytest.raises(TypeError, match=re.escape(
            "test_an_option_the_method_does_not_take_is_refused_before_any_work.<locals>.mine "
            "takes no option 'scal'; its options: scale.")):
        jaxsal.explain_to_file(mine, bent, x, path, batch_size=2, scal=2.0)
    with pytest.raises(TypeError, match=re.escape(
            "option t=...: explain_to_file passes test_an_option_the_method_does_not_"
            "take_is_refused_before_any_work.<locals>.mine's model, inputs, t itself")):
        jaxsal.explain_to_file(mine, bent, x, path, batch_size=2, t=1)
    with pytest.raises(TypeError, match=re.escape(
            "explain_to_file calls jaxsal.neuron_conductance(model, inputs[i:j], targets, "
            "**options) for each chunk, which fails with these options: missing a required "
            "argument: 'neuron'")):
        jaxsal.explain_to_file(jaxsal.neuron_conductance, bent, x, path, layer="dense")
    assert calls == [] and list(tmp_path.iterdir()) == []
    jaxsal.explain_to_file(mine, bent, x, path, batch_size=2, scale=2.0)  # (taken)

    def anything(model, inputs, t=None, **kw):
        calls.append(kw)
        return np.asarray(model(inputs))

    jaxsal.explain_to_file(anything, bent, x, tmp_path / "any.npy", batch_size=5, patch=2)
    assert calls[-1] == {"patch": 2}


# ---------------------------------------------------------------------- one job, two spellings
def test_smoothgrad_s_method_by_name_or_function_is_one_job(tmp_path, bent, x):
    """SmoothGrad's ``method`` as a name or as the jaxsal function is the same job: run
    again with the other spelling (as an option, or bound in a partial), the finished job
    computes nothing."""
    key = jax.random.key(0)
    options = dict(targets=1, batch_size=2, key=key, n=2,
                   method_options={"steps": 2})
    path = tmp_path / "sg.npy"
    want = jaxsal.explain_to_file(jaxsal.smoothgrad, bent, x, path,
                                  method="integrated_gradients", **options)
    again = _chunks()
    out = jaxsal.explain_to_file(jaxsal.smoothgrad, bent, x, path, on_chunk=again,
                                 method=jaxsal.integrated_gradients, **options)
    assert again.done == []
    np.testing.assert_array_equal(out, want)
    bound = tmp_path / "bound.npy"
    jaxsal.explain_to_file(functools.partial(jaxsal.smoothgrad, method=jaxsal.saliency),
                           bent, x, bound, targets=1, batch_size=2, key=key, n=2)
    again = _chunks()
    jaxsal.explain_to_file(functools.partial(jaxsal.smoothgrad, method="saliency"), bent, x,
                           bound, targets=1, batch_size=2, key=key, n=2, on_chunk=again)
    assert again.done == []


# ---------------------------------------------------------------------- the method's batch_size
def test_a_method_s_own_batch_size_is_bound_in_a_partial_as_documented(tmp_path, bent, x):
    """explain_to_file's batch_size is the job's; the docstring says so and how a method's own
    is passed (a functools.partial), and that call is one job chunk of occlusion's passes of
    2 masked inputs: the maps are the score drops of zeroing each feature (NumPy)."""
    doc = re.sub(r"\s+", "", jaxsal.explain_to_file.__doc__)  # (whatever the line breaks)
    assert "functools.partial(jaxsal.occlusion,batch_size=16)" in doc
    done = _chunks()
    got = jaxsal.explain_to_file(functools.partial(jaxsal.occlusion, batch_size=2), bent, x,
                                 tmp_path / "occ.npy", targets=1, batch_size=5, patch=1,
                                 on_chunk=done)
    assert done.done == [1]
    s = np.tanh(x @ W)[:, 1]
    want = np.stack([s - np.tanh(np.where(np.arange(3) == j, 0, x) @ W)[:, 1]
                     for j in range(3)], axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- **kwargs and offsets
def test_a_method_of_kwargs_given_a_key_gets_each_chunk_s_offset(tmp_path, bent, x):
    """A wrapper of a random method taking ``**kwargs`` and given a key gets each chunk's
    ``index_offset``, so its maps equal one call over all inputs whatever the batch size
    (without it, every chunk drew its first input's noise as input 0's); without a key it
    gets none; one that cannot take it fails saying why it was passed."""
    key = jax.random.key(3)
    seen = []

    def wrapper(model, inputs, t, **kw):
        seen.append(sorted(kw))
        return jaxsal.smoothgrad(model, inputs, t, **kw)

    want = jaxsal.smoothgrad(bent, x, 1, key=key, n=4)
    for b in (2, 3):
        out = jaxsal.explain_to_file(wrapper, bent, x, tmp_path / f"sg{b}.npy", targets=1,
                                     batch_size=b, key=key, n=4)
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    assert seen[-1] == ["index_offset", "key", "n"]

    def plain(model, inputs, t, **kw):
        seen.append(sorted(kw))
        return jaxsal.saliency(model, inputs, t, **kw)

    jaxsal.explain_to_file(plain, bent, x, tmp_path / "s.npy", targets=1, batch_size=2,
                           reduce=None)
    assert seen[-1] == ["reduce"]

    def keyed(model, inputs, t, **kw):
        kw.pop("key")
        return jaxsal.saliency(model, inputs, t, **kw)

    with pytest.raises(TypeError, match="index_offset") as info:
        jaxsal.explain_to_file(keyed, bent, x, tmp_path / "k.npy", targets=1, batch_size=2,
                               key=key)
    assert any("explain_to_file passes index_offset (each chunk's position) to a method that "
               "takes **kwargs and is given a key" in note for note in info.value.__notes__)


# ---------------------------------------------------------------------- the first chunk's call
@pytest.fixture(scope="module")
def two():
    """A plain function of two inputs, ``a`` (N, 3) and ``b`` (N, 2), given as a dict or
    a list in that order."""
    wb = np.array([[2.0, 1.0], [-0.5, 4.0]], np.float32)

    def fn(p, x):
        a, b = (x["a"], x["b"]) if isinstance(x, dict) else x
        return jnp.tanh(a @ p["wa"] + b @ p["wb"])

    return jaxsal.FunctionModel(fn, {"wa": jnp.asarray(W), "wb": jnp.asarray(wb)})


def test_an_option_a_direct_call_refuses_is_refused_before_any_work(tmp_path, two, x):
    """A tuple of baselines that does not fit every input (a tuple is one value for every
    input: (0.0, 0.5) does not broadcast to input a's 3 features) failed in the first chunk;
    the job traces the first chunk's call before any work (jax.eval_shape: nothing computed)
    and refuses it with the direct call's error. A tuple that fits every input runs, the
    direct call's maps."""
    xs = {"a": x, "b": x[:, :2] * 0.5}
    with pytest.raises(ValueError) as direct:  # (on chunk 0's rows: the error names a shape)
        jaxsal.integrated_gradients(two, {k: v[:2] for k, v in xs.items()}, 1, steps=2,
                                    baseline=(0.0, 0.5))
    with pytest.raises(ValueError, match=re.escape(
            str(direct.value).rstrip(".") + ". (Refused before any work: explain_to_file "
            "traced the call of chunk 0 (inputs 0:2), the first to compute, before computing "
            "any chunk; nothing was computed or written.")):
        jaxsal.explain_to_file(jaxsal.integrated_gradients, two, xs, tmp_path / "ig.npy",
                               targets=1, batch_size=2, steps=2, baseline=(0.0, 0.5))
    with pytest.raises(ValueError, match=r"^unknown variant 'var'.*Refused before any work"):
        jaxsal.explain_to_file(jaxsal.smoothgrad, two, xs, tmp_path / "sg.npy", targets=1,
                               batch_size=2, key=jax.random.key(0), variant="var")
    assert list(tmp_path.iterdir()) == []
    listed = [xs["a"], xs["b"]]
    out = jaxsal.explain_to_file(jaxsal.integrated_gradients, two, listed, tmp_path / "ig.npy",
                                 targets=1, batch_size=2, steps=2, baseline=(0.5,))
    want = jaxsal.integrated_gradients(two, listed, 1, steps=2, baseline=(0.5,))
    for o, w in zip(out, want):
        np.testing.assert_allclose(o, w, rtol=1e-5, atol=1e-6)


def test_rows_given_as_nested_lists_are_refused_before_any_work(tmp_path, bent, x):
    """An (N, ...) option as nested Python lists (one row per input, as a direct call reads
    it) was passed whole to every chunk, which failed; refused up front, saying to pass a
    NumPy array, which is sliced with the inputs (the maps of the direct call). One row in
    lists is shared by every input, as before."""
    rows = (x * 0.25).tolist()
    with pytest.raises(ValueError, match=re.escape(
            "option baseline is nested Python lists of shape (5, 3): one row per input (5, "
            "with the inputs' rank 2) as a direct call reads it")) as info:
        jaxsal.explain_to_file(jaxsal.integrated_gradients, bent, x, tmp_path / "ig.npy",
                               targets=1, batch_size=2, steps=2, baseline=rows)
    assert "Pass it as a NumPy array, np.asarray(baseline)" in str(info.value)
    with pytest.raises(ValueError, match=re.escape(
            "option method_options['baseline'] is nested Python lists of shape (5, 3)")):
        jaxsal.explain_to_file(jaxsal.smoothgrad, bent, x, tmp_path / "sg.npy", targets=1,
                               batch_size=2, key=jax.random.key(0), n=2,
                               method="integrated_gradients",
                               method_options={"steps": 2, "baseline": rows})
    assert list(tmp_path.iterdir()) == []
    out = jaxsal.explain_to_file(jaxsal.integrated_gradients, bent, x, tmp_path / "ig.npy",
                                 targets=1, batch_size=2, steps=2, baseline=np.asarray(rows))
    want = jaxsal.integrated_gradients(bent, x, 1, steps=2, baseline=rows)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    one = rows[:1]
    out = jaxsal.explain_to_file(jaxsal.integrated_gradients, bent, x, tmp_path / "one.npy",
                                 targets=1, batch_size=2, steps=2, baseline=one)
    want = jaxsal.integrated_gradients(bent, x, 1, steps=2, baseline=one)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


def test_an_on_chunk_that_is_no_function_is_refused_before_any_work(tmp_path, bent, x):
    """``on_chunk=True`` (a flag, say) failed after the first chunk was computed and written,
    "'bool' object is not callable"; refused first."""
    with pytest.raises(TypeError, match=re.escape(
            "expected on_chunk as a function on_chunk(done, total), called after each chunk "
            "is written, or None; got True")):
        jaxsal.explain_to_file(jaxsal.saliency, bent, x, tmp_path / "maps.npy", batch_size=2,
                               on_chunk=True)
    assert list(tmp_path.iterdir()) == []
