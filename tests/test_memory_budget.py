"""How jaxsal sizes its chunks on an accelerator: the default budget follows the device's
memory, and a forward pass is charged for its VJP residuals (the CPU path is unchanged and
tested through the methods' timings elsewhere)."""

import math
import types
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal
from jaxsal._src import base


def _mlp(d_in=6, hidden=5, wide=0):
    """relu(x @ w1) @ w2, or with ``wide`` > 0 relu(x @ w1) @ w3 @ w4 through a ``wide``
    linear layer: a VJP keeps w3 and w4 (weights), but no more per input."""
    rng = np.random.default_rng(0)
    params = {"w1": jnp.asarray(rng.normal(size=(d_in, hidden)), jnp.float32),
              "w2": jnp.asarray(rng.normal(size=(hidden, 3)), jnp.float32)}
    if wide:
        params["w3"] = jnp.asarray(rng.normal(size=(hidden, wide)), jnp.float32)
        params["w4"] = jnp.asarray(rng.normal(size=(wide, 3)), jnp.float32)

    def f(p, x):
        h = jax.nn.relu(x @ p["w1"])
        return h @ p["w3"] @ p["w4"] if "w3" in p else h @ p["w2"]

    return jaxsal.FunctionModel(f, params)


def test_residual_bytes_scale_with_the_batch_and_leave_weights_out():
    m = _mlp()
    per = base.residual_bytes(m, jnp.zeros((1, 6)))
    assert base.residual_bytes(m, jnp.zeros((7, 6))) == 7 * per
    # what the backward pass needs per input: the hidden ReLU state (5 values) and the
    # second matmul's input, in float32 or as a mask; never the weights
    assert 5 <= per <= 4 * 5 * 4
    heavy = _mlp(wide=100_000)  # 2.4 MB of weights that the backward pass keeps
    assert base.residual_bytes(heavy, jnp.zeros((1, 6))) == per


def test_accelerator_budget_is_a_quarter_of_the_device_limit():
    def fake(limit):
        dev = types.SimpleNamespace(memory_stats=lambda: {"bytes_limit": limit} if limit else None)
        return mock.patch.object(jax, "devices", lambda backend=None: [dev])

    base._accelerator_budget.cache_clear()
    try:
        with fake(96 * 2**30):
            assert base._accelerator_budget("gpu") == 24 * 2**30
        base._accelerator_budget.cache_clear()
        with fake(4 * 2**30):  # a small card: never below the 2 GiB floor
            assert base._accelerator_budget("gpu") == base.DEFAULT_MEMORY_BUDGET
        base._accelerator_budget.cache_clear()
        with fake(None):  # no statistics reported
            assert base._accelerator_budget("gpu") == base.DEFAULT_MEMORY_BUDGET
    finally:
        base._accelerator_budget.cache_clear()


@pytest.mark.parametrize("backend", ["gpu", "tpu"])
def test_on_an_accelerator_defaults_follow_the_device(backend):
    m = _mlp()
    x = jnp.zeros((4, 6))
    base._SHAPES.clear()
    try:
        with mock.patch.object(jax, "default_backend", return_value=backend), \
                mock.patch.object(base, "_accelerator_budget", return_value=24 * 2**30):
            assert base.default_budget() == base.default_batch_budget() == 24 * 2**30
            assert base.default_wide_budget() == 24 * 2**30
            assert base.forward_bytes(m, x) == base.residual_bytes(m, x)
    finally:
        base._SHAPES.clear()
    # on CPU: the tuned constants and the jaxpr sum, as before
    assert base.default_budget() == base.DEFAULT_CPU_MEMORY_BUDGET
    assert base.default_wide_budget() == base.DEFAULT_MEMORY_BUDGET
    assert base.forward_bytes(m, x) > base.residual_bytes(m, x)


def test_one_program_splits_every_batch_size():
    """``split_batch`` reads N from the traced inputs: the same program (cached by ``nb``)
    serves a batch of 7 after one of 8, both in passes of 4 (it used to keep the first
    call's N and fail: "scan got no values")."""
    def run(params, x, ids):
        return x * params + ids[:, None]

    f = jax.jit(base.split_batch(run, 4))
    for n in (8, 7, 3, 9):
        x = jnp.arange(n * 2, dtype=jnp.float32).reshape(n, 2)
        ids = jnp.arange(n, dtype=jnp.float32)
        np.testing.assert_array_equal(f(2.0, x, ids), run(2.0, x, ids))


@pytest.mark.parametrize("n,nb", [(8, 4), (7, 4), (8, 1), (9, 2)])
def test_passes_take_rows_strided_through_the_batch(n, nb):
    """A batch split into ``P`` passes of ``nb`` inputs: pass ``k`` takes rows ``k, k + P,
    ...`` (so a batch sharded over its inputs in contiguous blocks stays sharded along each
    pass: tests/test_several_devices.py), and the maps come back in the inputs' order; the
    passes are as many, and as large, as contiguous ones (``strided=False``, which
    ``scorecam``'s union of channels over a pass keeps). Each row's value here holds the
    sum of its pass's rows, which tells the two layouts apart."""
    def run(params, x, ids):
        return x + 100 * x.sum(0, keepdims=True) + ids[:, None]

    x = jnp.arange(n, dtype=jnp.float32)[:, None] * jnp.ones((1, 2))
    ids = jnp.arange(n, dtype=jnp.float32)
    p = math.ceil(n / nb)
    xp = np.concatenate([np.asarray(x), np.repeat(np.asarray(x)[-1:], p * nb - n, 0)])
    idx = np.arange(p * nb)
    for strided, pass_of in ((True, idx % p), (False, idx // nb)):
        sums = np.array([xp[pass_of == pass_of[i]].sum(0) for i in range(n)])
        want = np.asarray(x) + 100 * sums + np.asarray(ids)[:, None]
        f = jax.jit(base.split_batch(run, nb, strided=strided))
        np.testing.assert_array_equal(f(1.0, x, ids), want)
        # one loop over the passes (one pass: none)
        loops = [e for e in jax.make_jaxpr(f)(1.0, x, ids).jaxpr.eqns[0].params["jaxpr"].eqns
                 if e.primitive.name in ("while", "scan")]
        assert len(loops) == (p > 1)


def test_passes_on_a_mesh_hold_a_multiple_of_its_devices():
    """On a mesh of ``d`` devices a pass holds a multiple of ``d`` inputs (so that it splits
    over them: tests/test_several_devices.py), never more than the budget's ``nb``, padding
    least; one device (no mesh) keeps ``nb``."""
    assert base.device_multiple(6, 12, 4) == 4  # 3 passes of 4, not 2 of 6
    assert base.device_multiple(10, 20, 4) == 4  # 5 of 4 (no padding), not 3 of 8 (24 rows)
    assert base.device_multiple(11, 24, 4) == 8
    assert base.device_multiple(8, 16, 4) == 8 and base.device_multiple(3, 8, 4) == 3
    assert base.device_multiple(6, 12, 1) == 6
    assert base.mesh_devices(jnp.ones((4, 2))) == 1
    assert base.mesh_devices({"a": jnp.ones((4, 2))}) == 1


def test_batch_sizes_sharing_a_plan_reuse_it(mnist, mnist_digits):
    """End to end: 8 and then 7 inputs under a budget of about 4 inputs per pass (the same
    ``nb``, hence the same cached program) give the maps of unsplit calls."""
    m = mnist.with_head("logits")
    x = mnist_digits[:8]
    per = base.forward_bytes(m, x[:1])
    budget = per * 2 * 4 + 10
    assert base.batch_chunk(8, per, budget) == base.batch_chunk(7, per, budget) == 4
    for n in (8, 7):
        split = jaxsal.saliency(m, x[:n], [1, 5], memory_budget=budget)
        np.testing.assert_allclose(split, jaxsal.saliency(m, x[:n], [1, 5]), rtol=1e-5,
                                   atol=1e-7)


def test_chunks_pad_least():
    """``lax.map`` runs equal chunks, so a balanced chunking of 10 targets in chunks of at
    most 3 computed 12 backward passes (4 of 3: the H200's 10-class saliency plan); the
    chunk size that pads least wins, down to half the size, then the fewest chunks."""
    def work(total, c):
        return math.ceil(total / c) * c

    assert base.least_padding(10, 3) == 2  # 5 x 2 = 10, not 4 x 3 = 12
    assert base.least_padding(10, 4) == 2
    assert base.least_padding(13, 5) == 5  # 3 x 5 = 15 = 5 x 3: the fewer chunks
    assert base.least_padding(1000, 3) == 3  # 1002: within MAX_PADDING, fewer chunks kept
    for total in range(1, 80):
        for c in range(1, total + 3):
            k = base.least_padding(total, c)
            balanced = math.ceil(total / math.ceil(total / min(c, total)))
            assert 1 <= k <= min(c, total)
            assert work(total, k) <= work(total, balanced)
            assert k >= math.ceil(balanced / 2)
            if work(total, balanced) - total <= base.MAX_PADDING * total:
                assert k == balanced
    per = 1000
    assert base.chunk_for(10, per, None, 3 * per + 10) == 2
    assert base.chunk_for(10, per, 3, None) == 2  # an explicit size is an upper bound
    assert base.batch_chunk(10, per, 2 * 4 * per) == 2  # inputs: 5 passes of 2, not 3 of 4


@pytest.mark.parametrize("method, kw", [
    (jaxsal.occlusion, dict(patch=2)), (jaxsal.rise, dict(key=0, n=3, grid=2)),
    (jaxsal.shapley_values, dict(patch=2)), (jaxsal.scorecam, dict(upsample=False)),
    (jaxsal.ablationcam, dict(upsample=False))],
    ids=["occlusion", "rise", "shapley_values", "scorecam", "ablationcam"])
def test_batch_size_bounds_the_masked_inputs_of_a_pass(method, kw):
    """``batch_size`` is the masked inputs one forward pass holds, at most: below the number
    of inputs it splits the batch (4 inputs, ``batch_size=2``: passes of 2 rows, where they
    were of 4, one copy of every input), and the maps stay those of one pass. The rows are
    counted as the passes run (a callback in the model: Ablation-CAM vmaps its passes)."""
    rows = []

    def count(a):  # a: (*passes vmapped, rows, 4, 4, 3)
        rows.append(int(np.prod(a.shape[:-3])))
        return np.zeros(a.shape[:-4], np.float32)

    def head_fn(p, a):
        seen = jax.pure_callback(count, jax.ShapeDtypeStruct((), jnp.float32), a,
                                 vmap_method="expand_dims")
        return a.mean((1, 2)) @ p["w"] + seen

    params = {"k": jnp.asarray([1.0, -0.5, 2.0]), "w": jnp.asarray([[1.0, 0.0], [0.5, 2.0],
                                                                   [-1.0, 1.0]])}
    m = jaxsal.FunctionModel(features=lambda p, x: jax.nn.relu(x * p["k"]), head_fn=head_fn,
                             params=params, layer="feat")
    x = np.random.default_rng(0).random((4, 4, 4, 1)).astype(np.float32)
    one = np.asarray(method(m, x, [0, 1], **kw))
    rows.clear()
    split = np.asarray(method(m, x, [0, 1], batch_size=2, **kw))
    assert rows and max(rows) <= 2, rows
    np.testing.assert_allclose(split, one, rtol=1e-5, atol=1e-6)


def test_gradient_cams_are_charged_for_the_pullback_to_their_layer(mnist, mnist_digits):
    """A gradient CAM pulls each target back through the layers after its layer only: a
    chunk of targets is charged for that (its VJP residuals, the gradient and one product
    per target), not for whole backward passes, so targets that the whole pass's charge
    split run in one chunk, with the same maps."""
    from jaxsal._src import cam

    m = mnist.with_head("logits")
    x = mnist_digits[:4]
    a_shape = (4, 24, 24, 64)  # conv2d_2
    per = base.layer_pullback_bytes(m, x, "conv2d_2", a_shape)
    a_bytes = 24 * 24 * 64 * 4
    # the head after conv2d_2 keeps its pooling positions and ReLU mask: less than A itself
    assert 4 * 2 * a_bytes < per < 4 * 3 * a_bytes
    assert base.layer_pullback_bytes(m, x[:1], "conv2d_2", (1, 24, 24, 64)) * 4 == per
    assert per < base.residual_bytes(m, x) < base.forward_bytes(m, x)
    # at the last dense layer: the gradient and product of a (4, 10) output, nothing else
    assert base.layer_pullback_bytes(m, x, "dense_2", (4, 10)) == 4 * 2 * 10 * 4
    budget = 10 * per + 1
    assert base.forward_bytes(m, x) * 2 > budget  # the old charge: chunks of 1
    c = cam._prepare_cam(m, x, list(range(10)), "conv2d_2", None, None, budget, True,
                         layer_charge=True)
    assert c.chunk == 10
    one = jaxsal.gradcam(m, x, list(range(10)), layer="conv2d_2", memory_budget=budget)
    split = jaxsal.gradcam(m, x, list(range(10)), layer="conv2d_2", chunk_size=3)
    np.testing.assert_allclose(one, split, rtol=1e-5, atol=1e-7)
    # attribution at a layer (saliency(layer=)) is charged the same way: same maps
    at_layer = jaxsal.saliency(m, x, list(range(10)), layer="conv2d_2", memory_budget=budget)
    np.testing.assert_allclose(at_layer, jaxsal.saliency(m, x, list(range(10)), layer="conv2d_2",
                                                         chunk_size=1), rtol=1e-5, atol=1e-7)


def test_backward_rules_are_charged_alike(mnist, mnist_digits, monkeypatch):
    """Guided backprop's and the deconvnet's backward rules keep less for the backward pass
    than the standard one, but a chunk's memory is its targets' cotangents, the same under
    every rule: all three are charged the standard VJP's residuals."""
    base.clear_caches()  # no plans: every call sizes its chunks
    m = mnist.with_head("logits")
    x = jnp.asarray(mnist_digits[:4])
    guided = m.with_backprop("guided")
    assert base.residual_bytes(guided, x) < base.residual_bytes(m, x)
    assert base.sizing_model(guided).relu_mode == "standard"
    assert base.sizing_model(m) is m
    other = m.with_relu(jax.nn.relu, name="deeplift")  # other rules are charged as they are
    assert base.sizing_model(other) is other
    charged = []
    real = base.chunk_for
    monkeypatch.setattr(base, "chunk_for",
                        lambda total, per, *a, **k: charged.append(per) or real(total, per,
                                                                                 *a, **k))
    # as on an accelerator, where a forward pass is charged its VJP residuals (on CPU, the
    # jaxpr's intermediates: the same for every rule)
    with mock.patch.object(jax, "default_backend", return_value="gpu"), \
            mock.patch.object(base, "_accelerator_budget", return_value=24 * 2**30):
        for method in (jaxsal.saliency, jaxsal.guided_backprop, jaxsal.deconvnet):
            method(m, x, [1, 2, 3], check_finite=False)
    base.clear_caches()
    assert len(charged) == 3 and len(set(charged)) == 1, charged
    assert charged[0] == base.residual_bytes(m, x)


def test_eigencam_runs_in_passes_under_a_memory_budget(mnist, mnist_digits, monkeypatch):
    """Eigen-CAM's ``memory_budget`` bounds the inputs of one forward pass: 8 inputs under a
    budget of about 4 per pass run as 2 passes, with the maps of one pass."""
    m = mnist.with_head("logits")
    x = mnist_digits[:8]
    whole = jaxsal.eigencam(m, x, layer="conv2d_2")
    per = base.forward_bytes(m, x[:1])
    budget = per * 2 * 4 + 10
    passes = []
    split_batch = base.split_batch
    monkeypatch.setattr(base, "split_batch",
                        lambda run, nb, *a: passes.append(nb) or split_batch(run, nb, *a))
    base.clear_caches()  # build the program again, under the spy
    split = jaxsal.eigencam(m, x, layer="conv2d_2", memory_budget=budget)
    assert passes == [4]
    np.testing.assert_allclose(split, whole, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="memory_budget"):
        jaxsal.eigencam(m, x, memory_budget=0)


def test_chunks_write_their_items_in_place():
    """``map_chunks`` gives the items of one call over all of them, ``chunk`` not dividing
    ``total`` included (the last chunk overlaps the one before), and keeps no second copy of
    its result: chunks stacked ``(chunks, N, c, ...)`` and then moved to ``(N, total, ...)``
    made the 1000-class saliency of 8 images of 224x224 peak at twice its 1.6 GB result."""
    x = jnp.arange(3 * 5, dtype=jnp.float32).reshape(3, 5)

    def fn(idx):  # (N, c, 5, 64): item k of input i is x[i] * k + k**2, broadcast
        k = idx.astype(jnp.float32)
        v = x[:, None, :] * k[None, :, None] + (k ** 2)[None, :, None]
        return jnp.broadcast_to(v[..., None], v.shape + (64,))

    total = 23
    want = fn(jnp.arange(total, dtype=jnp.int32))
    for chunk in (1, 4, 5, 7, 22, 23):
        np.testing.assert_array_equal(jax.jit(lambda: base.map_chunks(fn, total, chunk))(),
                                      want)
    mem = jax.jit(lambda: base.map_chunks(fn, total, 4)).lower().compile().memory_analysis()
    # one chunk's work beside the result, not a second result
    assert mem.temp_size_in_bytes < mem.output_size_in_bytes / 2, (
        mem.temp_size_in_bytes, mem.output_size_in_bytes)


#: The methods whose copies (DeepLIFT's reference halves, path points, blurred images,
#: guided paths, perturbed and masked inputs) are stacked input-major, and the random
#: methods keyed by an input's global index: 7 inputs in strided passes of 3.
_RESTACKED = {
    "deeplift": lambda m, x, b: jaxsal.deeplift(m, x, [1, 2], baseline=x[::-1] * 0.5,
                                                memory_budget=b),
    "deeplift_shap": lambda m, x, b: jaxsal.deeplift_shap(
        m, x, 1, baselines=x[:5] * 0.3, batch_baselines=2, memory_budget=b),
    "layer_conductance": lambda m, x, b: jaxsal.layer_conductance(
        m, x, [1, 2], layer="conv2d_2", steps=6, memory_budget=b),
    "internal_influence": lambda m, x, b: jaxsal.internal_influence(
        m, x, 1, layer="conv2d_2", steps=6, baseline=x * 0.2, memory_budget=b),
    "blur_integrated_gradients": lambda m, x, b: jaxsal.blur_integrated_gradients(
        m, x, [1, 2], steps=6, memory_budget=b),
    "guided_integrated_gradients": lambda m, x, b: jaxsal.guided_integrated_gradients(
        m, x, [1, 2], steps=8, baseline=x * 0.1, memory_budget=b),
    "infidelity": lambda m, x, b: jaxsal.infidelity(
        m, x, x[..., 0] - 0.5, 1, key=0, n=6, baseline=x * 0.3, memory_budget=b),
    "deletion": lambda m, x, b: jaxsal.deletion(m, x, x[..., 0] - 0.5, 1, steps=8,
                                                fill=x * 0.2, memory_budget=b).scores,
    "smoothgrad": lambda m, x, b: jaxsal.smoothgrad(m, x, 2, key=0, n=4, index_offset=5,
                                                    memory_budget=b),
    "rise": lambda m, x, b: jaxsal.rise(m, x, 1, key=0, n=16, grid=4, fill=x * 0.1,
                                        memory_budget=b),
}


@pytest.mark.parametrize("name", sorted(_RESTACKED))
def test_strided_passes_with_padding_give_the_maps_of_one_pass(mnist, mnist_digits, name):
    """7 inputs in strided passes of 3 (pass ``k``: rows ``k, k + 3, k + 6``; the last two
    rows of the ``(3, 3)`` layout copies of the last input) give the maps of one unsplit
    call, for the methods whose copies are stacked input-major (per-input baselines and
    fills split with their inputs) and the random ones (draws keyed by the global index).
    The passes are forced to 3 (``split_batch`` given ``nb=3``; the programs built for it
    are dropped after)."""
    m = mnist.with_head("logits")
    x = jnp.asarray(mnist_digits[:7])
    f = _RESTACKED[name]
    want = np.asarray(f(m, x, None))
    orig, sizes = base.split_batch, []

    def in_threes(run, nb, *args, **kwargs):
        sizes.append(nb)
        return orig(run, 3, *args, **kwargs)

    base.clear_caches()
    try:
        with mock.patch.object(base, "split_batch", in_threes):
            got = np.asarray(f(m, x, 1))  # (a budget of 1 byte: split_batch splits)
    finally:
        base.clear_caches()
    assert sizes and all(nb < 7 for nb in sizes), sizes
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())
