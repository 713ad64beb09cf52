"""One rule for every integer count (jaxsal._src.ints.check_int) and one for every (low, high)
pair (jaxsal._src.reals.check_interval): each method, factory and plot accepts the same kinds of
value and refuses the same kinds, with an error that names its own argument and range.
Table-driven, as tests/test_reals.py: the checks run before anything is compiled, and an
accepted value stops the call right after its check (the check patched), so no method runs."""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal
from jaxsal import plot
from jaxsal._src import ints, reals

from check_helpers import Stop, stop_after_check

_X = np.linspace(0.0, 1.0, 2 * 4 * 4 * 1, dtype=np.float32).reshape(2, 4, 4, 1)
_W = jnp.asarray(np.linspace(-1.0, 1.0, 16 * 2, dtype=np.float32).reshape(16, 2))
_IMGS = np.linspace(0.0, 1.0, 4 * 8 * 8, dtype=np.float32).reshape(4, 8, 8, 1)


def _model():
    return jaxsal.FunctionModel(lambda p, v: jnp.tanh(v.reshape(len(v), -1)) @ p, _W)


def _maximize(**kw):
    model = jaxsal.FunctionModel(lambda p, v: v.reshape(len(v), -1) @ p, _W,
                                 input_shape=(4, 4, 1))
    return jaxsal.maximize(model, [0], **kw)


def _kernel():
    return np.linspace(-1.0, 1.0, 3 * 3 * 2 * 4, dtype=np.float32).reshape(3, 3, 2, 4)


# (what the user calls, the argument's name, its range: low, high[, "traced ok" where a
# scalar integer traced by the caller's jit is taken (index_offset: keyed on device)])
CASES = [
    (lambda v: jaxsal.smoothgrad(_model(), _X, 0, key=0, n=v), "n", 1, None),
    (lambda v: jaxsal.gradient_shap(_model(), _X, 0, key=0, n=v), "n", 1, None),
    (lambda v: jaxsal.rise(_model(), _X, 0, key=0, n=v, grid=2), "n", 1, None),
    (lambda v: jaxsal.smoothgrad(_model(), _X, 0, key=0, n=2, index_offset=v),
     "index_offset", 0, None, "traced ok"),
    (lambda v: jaxsal.integrated_gradients(_model(), _X, 0, steps=v), "steps", 1, None),
    (lambda v: jaxsal.guided_integrated_gradients(_model(), _X, 0, steps=v), "steps", 1, None),
    (lambda v: jaxsal.blur_integrated_gradients(_model(), _X, 0, steps=v), "steps", 1, None),
    (lambda v: jaxsal.shapley_values(_model(), _X, 0, patch=2, max_groups=v), "max_groups", 1,
     30),
    (lambda v: jaxsal.saliency(_model(), _X, 0, chunk_size=v), "chunk_size", 1, None),
    (lambda v: jaxsal.occlusion(_model(), _X, 0, patch=2, batch_size=v), "batch_size", 1, None),
    (lambda v: _maximize(steps=v), "steps", 1, None),
    (lambda v: _maximize(steps=1, upscaling_steps=v), "upscaling_steps", 1, None),
    (lambda v: _maximize(steps=1, images_per_unit=v), "images_per_unit", 1, None),
    (lambda v: _maximize(steps=1, unit_chunk=v), "unit_chunk", 1, None),
    (lambda v: jaxsal.interpolate_objectives(jaxsal.output_objective(0),
                                             jaxsal.output_objective(1), v), "n", 2, None),
    (lambda v: jaxsal.jitter(v), "pixels", 0, None),
    (lambda v: jaxsal.pad(v), "pixels", 0, None),
    (lambda v: jaxsal.standard_transforms(v), "image_size", 1, None),
    (lambda v: jaxsal.default_transforms(v), "image_size", 1, None),
    (lambda v: jaxsal.blur_every(v), "every", 1, None),
    (lambda v: jaxsal.xrai_regions(np.zeros((1, 4, 4)), np.ones((1, 1, 4, 4), bool),
                                   min_pixel_diff=v), "min_pixel_diff", 1, None),
    (lambda v: jaxsal.felzenszwalb(_X, min_size=v), "min_size", 0, None),
    (lambda v: jaxsal.image_grid(_IMGS, ncols=v), "ncols", 1, None),
    (lambda v: jaxsal.image_grid(_IMGS, pad=v), "pad", 0, None),
    (lambda v: plot.image_grid(_IMGS, ncols=v), "ncols", 1, None),
    (lambda v: plot.feature_maps(_IMGS[0].repeat(4, -1), max_maps=v), "max_maps", 1, None),
    (lambda v: plot.filters(_kernel(), max_filters=v), "max_filters", 1, None),
    (lambda v: plot.filters(_kernel(), channel=v), "channel", 0, 1),
]
IDS = [f"{i}-{c[1]}" for i, c in enumerate(CASES)]

# each kind of int the rule takes, made from a valid int i
ACCEPTED = {
    "int": lambda i: i, "np.int64": lambda i: np.int64(i), "np.uint8": lambda i: np.uint8(i),
    "np 0-d int array": lambda i: np.array(i), "jnp 0-d int32": lambda i: jnp.int32(i),
}

# each kind of value the rule refuses, made from the valid int i; and what the error adds
REFUSED = {
    "True": (lambda i: True, ""), "np.bool_": (lambda i: np.bool_(True), ""),
    "whole float": (lambda i: float(i), "pass an int: {name}=int(...)"),
    "whole np.float32": (lambda i: np.float32(i), "pass an int: {name}=int(...)"),
    "fraction": (lambda i: i + 0.5, "a count is a whole number"),
    "nan": (lambda i: math.nan, ""), "inf": (lambda i: math.inf, ""),
    "str": (lambda i: str(i), ""), "bytes": (lambda i: b"1", ""),
    "complex": (lambda i: complex(i, 0), ""),
    "np 1-element array": (lambda i: np.array([i]), "pass one int, not an array"),
    "jnp 2 values": (lambda i: jnp.array([i, i]), "pass one int, not an array"),
    "list": (lambda i: [i], "pass one int, not an array"),
    "int beyond 64 bits": (lambda i: 2 ** 63, "too large for a 64-bit integer"),
}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_count_takes_every_kind_of_int(case, monkeypatch):
    call, name, low, high = case[:4]
    i = low + 1 if high is None or low + 1 <= high else low
    seen = stop_after_check(monkeypatch, ints, "check_int", name)
    for kind, make in ACCEPTED.items():
        with pytest.raises(Stop):
            call(make(i))
        assert seen[-1] == i and type(seen[-1]) is int, (kind, seen)
    assert len(seen) == len(ACCEPTED)


def test_integrated_gradients_runs_with_steps_as_a_0d_integer_array():
    """The cases above stop each call right after its check; integrated gradients (and
    xrai, which calls it) checked ``steps`` but kept the array, whose program cache key then
    raised "unhashable type". Against the trapezoid rule of the analytic gradient of
    ``sum_i tanh(x_i) W_i0`` from the zero baseline (alphas 0, 1/2, 1; weights 1/4, 1/2, 1/4)."""
    x = _X.reshape(2, -1).astype(np.float64)
    w0 = np.asarray(_W, np.float64)[:, 0]
    want = sum(wk * x * w0 * (1.0 - np.tanh(ak * x) ** 2)
               for ak, wk in ((0.0, 0.25), (0.5, 0.5), (1.0, 0.25))).reshape(2, 4, 4)
    for steps in (np.array(3), jnp.int32(3)):
        got = jaxsal.integrated_gradients(_model(), _X, 0, steps=steps)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_count_refuses_the_same_values(case):
    call, name, low, high = case[:4]
    i = low + 1 if high is None or low + 1 <= high else low
    bad = [(make(i), why.format(name=name)) for make, why in REFUSED.values()]
    bad.append((low - 1, ""))
    if high is not None:
        bad.append((high + 1, ""))
    expected = re.escape(f"expected {name} as an int {reals.expected_range(low, False, high)}")
    for v, why in bad:
        with pytest.raises(ValueError, match=expected) as e:
            call(v)
        assert f"got {v!r}" in str(e.value) and why in str(e.value), str(e.value)
    if case[4:] != ("traced ok",):
        # traced by the caller's jit: refused, saying why (before the method traces anything)
        with pytest.raises(ValueError, match=expected + r".*traced by jax\.jit.*part of the "
                           r"compiled program: pass a Python int"):
            jax.jit(call)(i)


# (low, high) pairs: (what the user calls, the argument's name, where)
PAIRS = [
    (lambda v: _maximize(steps=1, input_range=v), "input_range", "maximize"),
    (lambda v: jaxsal.xrai_labels(_X, value_range=v), "value_range", "xrai_labels"),
    (lambda v: plot.image_grid(np.zeros((2, 8, 8)), value_range=v), "value_range",
     "image_grid"),
]
PAIR_IDS = [c[1] + "-" + c[2] for c in PAIRS]


@pytest.mark.parametrize("case", PAIRS, ids=PAIR_IDS)
def test_every_pair_takes_two_reals_low_below_high(case, monkeypatch):
    call, name, _ = case
    seen = stop_after_check(monkeypatch, reals, "check_interval", name)
    for v in ((-1, 2), [-1.0, 2.0], np.array([-1.0, 2.0]), jnp.array([-1, 2]),
              (np.float32(-1), jnp.int32(2)), (np.array(-1.0), 2)):
        with pytest.raises(Stop):
            call(v)
        assert seen[-1] == (-1.0, 2.0) and all(type(f) is float for f in seen[-1]), (v, seen)


@pytest.mark.parametrize("case", PAIRS, ids=PAIR_IDS)
def test_every_pair_refuses_the_same_values(case):
    call, name, where = case
    whole = re.escape(f"{where}: expected {name} as (low, high), two finite numbers with "
                      "low < high")
    for v in ((1.0, 0.0), (0.5, 0.5), (0.0,), (0, 1, 2), "01", 0.5, np.zeros((2, 2)), {0: 1}):
        with pytest.raises(ValueError, match=whole) as e:
            call(v)
        assert f"got {v!r}" in str(e.value), str(e.value)
    # each end by the reals' rule, named by its place
    for v, end in (((0.0, math.nan), "[1] (high)"), ((True, 2.0), "[0] (low)"),
                   (("0", 1), "[0] (low)"), ((0.0, math.inf), "[1] (high)")):
        with pytest.raises(ValueError, match=re.escape(f"{where}: expected {name}{end} as a "
                                                       "finite number")):
            call(v)
    with pytest.raises(ValueError, match=whole + r".*traced by jax\.jit"):
        jax.jit(call)(jnp.array([0.0, 1.0]))


def test_objective_arithmetic_takes_numbers_by_the_rule():
    """``True * objective`` scaled it by 1 and ``np.int64(0) + objective`` (a NumPy sum's
    start) was refused: a factor is a real by the one rule (a traced one is taken, the weight
    being data of the pytree), and any concrete zero is the sum's start."""
    o = jaxsal.output_objective(0, weight=1.5)
    for c in (2, 2.0, np.float32(2), np.int64(2), jnp.float32(2), np.array(2.0)):
        assert float((c * o).weights[0]) == 3.0 and float((o * c).weights[0]) == 3.0
    for c in (True, np.bool_(True), "2", math.nan, np.ones(2), [2.0]):
        with pytest.raises(ValueError, match=r"Objective \* c: expected c as a finite number"):
            o * c
        if not isinstance(c, np.ndarray):  # (an array's own * maps over the Objective)
            with pytest.raises(ValueError, match=r"Objective \* c: expected c as a finite"):
                c * o
    assert float(jax.jit(lambda c: (c * o).weights[0])(2.0)) == 3.0
    for zero in (0, 0.0, np.int64(0), np.float32(0), np.array(0)):
        assert (zero + o) is o
    assert [float(w) for w in sum([o, o], np.int64(0)).weights] == [1.5, 1.5]
    for other in (1, False, "0"):
        with pytest.raises(TypeError):
            other + o


def test_sizes_per_axis_take_each_entry_by_the_rule():
    """occlusion's patch/stride (and the Shapley methods' patch), rise's grid and
    xrai_labels' size refused a 0-d integer array entry (``np.array(2)``, ``jnp.int32(2)``);
    each entry is now an int by the one rule, and bools and floats stay refused."""
    from jaxsal._src import occlusion, rise
    for v in (2, np.int64(2), np.array(2), jnp.int32(2)):
        assert occlusion._sizes(v, "patch", 2) == (2, 2)
        assert occlusion._sizes((v, 1), "patch", 2) == (2, 1)
        assert rise._check_grid((v, v), (4, 4)) == (2, 2)
        assert all(type(i) is int for i in occlusion._sizes(v, "patch", 2))
    for bad in (True, 2.0, np.array([2]), "2"):
        with pytest.raises(ValueError, match="expected patch for x as a positive int or 2"):
            occlusion._sizes(bad, "patch", 2)
        with pytest.raises(ValueError, match="expected grid as a positive int or 2"):
            rise._check_grid((bad, 2), (4, 4))
    # one per axis as a 1-D integer array, like a tuple (it was refused: "got array([3, 2])")
    for v in (np.array([3, 2]), jnp.array([3, 2]), np.array([3, 2], np.uint8)):
        assert occlusion._sizes(v, "patch", 2) == (3, 2)
        assert rise._check_grid(v, (4, 4)) == (3, 2)
        assert all(type(i) is int for i in rise._check_grid(v, (4, 4)))
    for bad in (np.array([2.0, 2.0]), np.array([2, 2, 2]), np.array([2, 0])):
        with pytest.raises(ValueError, match=r"expected patch for x as a positive int or 2 .*"
                                             r"got array\("):
            occlusion._sizes(bad, "patch", 2)
        with pytest.raises(ValueError, match=r"expected grid as a positive int or 2 .*got "
                                             r"array\("):
            rise._check_grid(bad, (4, 4))
    ok = jaxsal.xrai_labels(_X[:1], scales=[1.0], size=(np.array(4), jnp.int32(4)))
    np.testing.assert_array_equal(ok, jaxsal.xrai_labels(_X[:1], scales=[1.0], size=(4, 4)))
    with pytest.raises(ValueError, match=r"expected size=\(h, w\) as two positive ints"):
        jaxsal.xrai_labels(_X[:1], scales=[1.0], size=(4.0, 4))


@pytest.mark.parametrize("call, prefix, ints_", [
    (lambda s: jaxsal.resize(_X[..., 0], s), "resize", "(int(H), int(W))"),
    (lambda s: jaxsal.xrai_labels(_X[:1], scales=[1.0], size=s), "xrai_labels",
     "(int(h), int(w))"),
    (lambda s: jaxsal.rise_masks(0, 2, s), "rise_masks", "tuple(int(s) for s in size)"),
    (lambda s: jaxsal.maximize(_model(), 0, image_shape=(*s, 1), steps=1), "image_shape",
     "(int(H), int(W), int(C))"),
], ids=["resize", "xrai_labels", "rise_masks", "maximize"])
def test_sizes_that_are_not_sizes_say_why(call, prefix, ints_):
    """A float size (or one traced under jit) is refused saying why, with the ints to pass,
    by every function that takes sizes: resize said it alone, and xrai_labels' error did not
    name the function."""
    for size in ((4.0, 4), np.array([4.0, 4.0]), [np.float32(4), 4]):
        with pytest.raises(ValueError, match=rf"^{prefix}: expected .*; sizes are counts: pass "
                                             rf"ints, e\.g\. {re.escape(ints_)}$"):
            call(size)
    with pytest.raises(ValueError, match=rf"^{prefix}: .*traced under jax\.jit.*static"):
        jax.jit(lambda s: call(tuple(s)))(jnp.array([4, 4]))


def test_figure_sizes_in_pairs_are_two_positive_reals():
    """signal's panel_size and curves' size, (width, height) in inches, were not checked
    (matplotlib failed later, or drew a figure of no size): each is a pair of reals > 0."""
    for bad in (3.0, (1.0, 2.0, 3.0), "62", np.ones((2, 2))):
        with pytest.raises(ValueError, match=r"signal: expected panel_size as \(width, "
                                             r"height\) in inches, got (?s:.*); pass e.g. "
                                             r"panel_size=\(6, 3\)"):
            plot.signal(np.zeros(4), np.zeros((1, 4)), panel_size=bad)
        with pytest.raises(ValueError, match=r"curves: expected size as \(width, height\)"):
            plot.curves({}, size=bad)
    with pytest.raises(ValueError, match=r"curves: expected size\[0\] \(width\) > 0"):
        plot.curves({}, size=(0.0, 2.0))
    # rise_masks' size and the other shapes read by base.int_sizes, the same way
    from jaxsal._src import base
    assert base.int_sizes((np.array(4), jnp.int32(3), np.uint8(2))) == (4, 3, 2)
    assert base.int_sizes((4, True)) is None and base.int_sizes((4.0, 3)) is None
