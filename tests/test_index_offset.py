"""``index_offset`` (the position of ``x[0]`` in a larger batch, which keys each input's
draws) of every method that takes one: traced by the caller's ``jax.jit`` (a shard's offset,
a loop counter) as well as concrete."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal


def _offset_methods() -> list[str]:
    """The public functions with an ``index_offset`` argument, found here so that a new one
    is tested too."""
    return sorted(n for n in jaxsal.__all__ if callable(getattr(jaxsal, n))
                  and "index_offset" in inspect.signature(getattr(jaxsal, n)).parameters)


@pytest.fixture(scope="module")
def tiny():
    """A small nonlinear model of (4, 4, 1) images (its gradients change with the input, so
    SmoothGrad's noise shows in its maps) and two inputs."""
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(16, 6)), jnp.float32),
              "v": jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)}
    model = jaxsal.FunctionModel(
        lambda p, x: jnp.tanh(x.reshape(len(x), -1) @ p["w"]) @ p["v"], params)
    return model, jnp.asarray(rng.normal(size=(2, 4, 4, 1)), jnp.float32)


def _call(name, model, x, offset):
    """``name`` on ``x`` with small sampling options and ``index_offset=offset``."""
    f = getattr(jaxsal, name)
    kw = dict(key=jax.random.key(3), index_offset=offset)
    if name == "sensitivity_max":
        return f(lambda a: jaxsal.saliency(model, a, 1), x, n=2, **kw)
    if name == "infidelity":
        return f(model, x, jnp.ones((2, 4, 4)), 1, n=4, **kw)
    kw.update({"rise": dict(n=8, grid=2), "smoothgrad": dict(n=3),
               "gradient_shap": dict(n=3, noise_std=0.1)}.get(name, dict(n=8, patch=2)))
    return f(model, x, 1, **kw)


def test_the_methods_with_an_index_offset_are_found():
    assert set(_offset_methods()) >= {
        "smoothgrad", "gradient_shap", "rise", "shapley_value_sampling", "kernel_shap", "lime",
        "infidelity", "sensitivity_max"}


@pytest.mark.parametrize("name", _offset_methods())
def test_a_traced_index_offset_gives_the_concrete_offset_s_maps_and_compiles_once(
        name, tiny, compiles):
    """A jitted step whose ``index_offset`` is traced was refused ("expected index_offset as
    an int >= 0, got Traced<...>"): the draws of input ``i`` are keyed by ``index_offset + i``
    on device, so the traced offset gives the maps of the same offset given as an int, and a
    new offset value compiles nothing (one program for every shard)."""
    model, x = tiny
    step = jax.jit(lambda x, offset: _call(name, model, x, offset))
    maps, eager = {}, {}
    for offset in (3, 8):
        want = eager[offset] = np.asarray(_call(name, model, x, offset))
        got = np.asarray(step(x, jnp.int32(offset)))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max(),
                                   err_msg=f"{name}, index_offset={offset}")
        maps[offset] = got
        if offset == 3:
            n = compiles.n
    assert compiles.n == n, f"{name}: {compiles.n - n} programs compiled for a new offset"
    assert step._cache_size() == 1
    assert not np.allclose(maps[3], maps[8]), name  # (the offset keys the draws)
    # a concrete 0-d integer array is the int it holds
    np.testing.assert_array_equal(np.asarray(_call(name, model, x, jnp.int32(8))), eager[8])


@pytest.mark.parametrize("name", _offset_methods())
def test_an_index_offset_that_is_no_integer_is_refused(name, tiny):
    model, x = tiny
    for bad, got in ((-1, "-1"), (1.5, "1.5"), (True, "True")):
        with pytest.raises(ValueError, match=rf"expected index_offset as an int >= 0 \(a "
                                             rf"scalar integer traced by jax.jit is taken too\), "
                                             rf"got {got}"):
            _call(name, model, x, bad)
    with pytest.raises(ValueError, match=r"index_offset as an int >= 0 or a scalar integer "
                                         r"traced by jax.jit, got a traced float32 of shape "
                                         r"\(\)"):
        jax.jit(lambda off: _call(name, model, x, off))(jnp.float32(2))
    # the global indices index_offset + i are int32: 2**31 - 1 leaves no room for the second
    # of the 2 inputs (it was taken, wrapping to -2**31), 2**31 none (JAX's OverflowError)
    for bad, top in ((2 ** 31 - 1, r"2\*\*31 - 2 = 2147483646, for 2 inputs"),
                     (2 ** 31, r"2\*\*31 - 1"), (2 ** 40, r"2\*\*31 - 1")):
        with pytest.raises(ValueError, match=rf"expected index_offset as an int in \[0, {top}\], "
                                             rf"got {bad}: the global index of input i"):
            _call(name, model, x, bad)


def test_explain_to_file_refuses_an_offset_whose_indices_pass_int32(tiny, tmp_path):
    """Before any chunk: the job's last index (of its rows padded to whole batches) must fit
    in int32."""
    model, x = tiny
    path = tmp_path / "maps.npy"
    with pytest.raises(ValueError, match=r"expected index_offset as an int in \[0, 2\*\*31 - 2 "
                                         r"= 2147483646, for 2 inputs\], got 2147483647"):
        jaxsal.explain_to_file(jaxsal.smoothgrad, model, np.asarray(x), path, targets=1,
                               key=0, n=3, index_offset=2 ** 31 - 1)
    assert not path.exists()
