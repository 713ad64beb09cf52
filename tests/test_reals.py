"""One rule for every real-number hyperparameter (jaxsal._src.reals.check_real): each method
and factory accepts the same kinds of number and refuses the same kinds of value, with an
error that names its own argument and range. Table-driven: every hyperparameter is tried with
every kind of value. The checks run before anything is compiled; an accepted value stops the
call right after its check (a patched ``reals.check_real``), so no method runs here."""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import jaxsal
from jaxsal._src import reals

from check_helpers import Stop, stop_after_check

_X = np.linspace(0.0, 1.0, 2 * 4 * 4 * 1, dtype=np.float32).reshape(2, 4, 4, 1)
_W = jnp.asarray(np.linspace(-1.0, 1.0, 16 * 2, dtype=np.float32).reshape(16, 2))


def _model():
    return jaxsal.FunctionModel(lambda p, v: jnp.tanh(v.reshape(len(v), -1)) @ p, _W,
                                relu_kwarg="relu")


def _relu_model():
    return jaxsal.FunctionModel(
        lambda p, v, relu=jax.nn.relu: relu(v.reshape(len(v), -1)) @ p, _W, relu_kwarg="relu")


def _maximize(**kw):
    model = jaxsal.FunctionModel(lambda p, v: v.reshape(len(v), -1) @ p, _W,
                                 input_shape=(4, 4, 1))
    return jaxsal.maximize(model, [0], steps=1, **kw)


def _plot_grid(alpha, **kw):
    from jaxsal import plot
    return plot.grid(np.zeros((1, 1, 4, 4)), images=np.ones((1, 4, 4)), alpha=alpha, **kw)


def _plot(fn, *args, **kw):
    from jaxsal import plot
    return getattr(plot, fn)(*args, **kw)


# (what the user calls, the argument's name, its range: low, low excluded, high[, "sequences"
# where a sequence of such numbers is taken too, "below" where high is excluded])
CASES = [
    (lambda v: jaxsal.smoothgrad(_model(), _X, 0, key=0, n=2, noise_std=v),
     "noise_std", 0, False, None),
    (lambda v: jaxsal.smoothgrad(_model(), _X, 0, key=0, n=2, noise_level=v),
     "noise_level", 0, False, None),
    (lambda v: jaxsal.gradient_shap(_model(), _X, 0, key=0, n=2, noise_std=v),
     "noise_std", 0, False, None),
    (lambda v: jaxsal.lime(_model(), _X, 0, key=0, alpha=v), "alpha", 0, False, None),
    (lambda v: jaxsal.lime(_model(), _X, 0, key=0, kernel_width=v),
     "kernel_width", 0, True, None),
    (lambda v: jaxsal.blur_integrated_gradients(_model(), _X, 0, max_sigma=v),
     "max_sigma", 0, True, None),
    (lambda v: jaxsal.blur_integrated_gradients(_model(), _X, 0, grad_step=v),
     "grad_step", 0, True, None),
    (lambda v: jaxsal.guided_integrated_gradients(_model(), _X, 0, fraction=v),
     "fraction", 0, False, 1),
    (lambda v: jaxsal.guided_integrated_gradients(_model(), _X, 0, max_dist=v),
     "max_dist", 0, False, 1),
    (lambda v: jaxsal.rise(_model(), _X, 0, key=0, grid=2, p=v), "p", 0, True, 1, "below"),
    (lambda v: jaxsal.xrai_regions(np.zeros((1, 4, 4)), np.ones((1, 1, 4, 4), bool),
                                   area_threshold=v), "area_threshold", 0, True, 1),
    (lambda v: jaxsal.lrp(_relu_model(), _X, 0, epsilon=v), "epsilon", 0, True, None),
    (lambda v: jaxsal.lrp_epsilon(v), "epsilon", 0, True, None),
    (lambda v: jaxsal.lrp_gamma(v), "gamma", 0, False, None),
    (lambda v: jaxsal.lrp_alpha_beta(v, 0.0), "alpha", 0, False, None),
    (lambda v: jaxsal.deeplift(_relu_model(), _X, 0, eps=v), "eps", 0, True, None),
    (lambda v: jaxsal.deeplift(_relu_model(), _X, 0, rtol=v), "rtol", 0, False, None),
    (lambda v: jaxsal.infidelity(_model(), _X, _X[..., 0], 0, key=0, noise_std=v),
     "noise_std", 0, True, None),
    (lambda v: jaxsal.sensitivity_max(lambda a: a, _X, key=0, n=2, radius=v),
     "radius", 0, True, None),
    # (scale: one number or a sequence of them, each checked by the rule)
    (lambda v: jaxsal.felzenszwalb(_X, scale=v), "scale", 0, False, None, "sequences"),
    (lambda v: jaxsal.felzenszwalb(_X, sigma=v), "sigma", 0, False, None),
    (lambda v: jaxsal.xrai_labels(_X, sigma=v), "sigma", 0, False, None),
    (lambda v: jaxsal.normalize(_X, eps=v), "eps", 0, False, None),
    (lambda v: jaxsal.clip_percentile(_X, lower=v), "lower", 0, False, 100),
    (lambda v: jaxsal.clip_percentile(_X, upper=v, lower=0), "upper", 0, False, 100),
    (lambda v: jaxsal.saliency(_model(), _X, 0, memory_budget=v), "memory_budget", 1, False,
     None),
    (lambda v: _maximize(learning_rate=v), "learning_rate", 0, True, None),
    (lambda v: _maximize(upscale_blur=v), "upscale_blur", 0, False, None),
    (lambda v: _maximize(upscaling_factor=v), "upscaling_factor", 0, True, None),
    (lambda v: jaxsal.random_scale(v, 2.0), "low", 0, True, None),
    (lambda v: jaxsal.random_rotate(v), "degrees", 0, False, None),
    (lambda v: jaxsal.pad(1, value=v), "value", None, False, None),
    (lambda v: jaxsal.standard_transforms(8, pad_value=v), "pad_value", None, False, None),
    (lambda v: jaxsal.gaussian_blur(jnp.zeros((4, 4, 1)), v), "sigma", 0, False, None),
    (lambda v: jaxsal.lp_norm(v), "weight", 0, False, None),
    (lambda v: jaxsal.lp_norm(p=v), "p", 0, True, None),
    (lambda v: jaxsal.blur_every(1, v), "sigma", 0, True, None),
    (lambda v: jaxsal.blur_every(1, weight=v), "weight", 0, False, 1),
    (lambda v: jaxsal.pixels(init_value=v), "init_value", 0, False, 1),
    (lambda v: jaxsal.pixels(init_std=v), "init_std", 0, False, None),
    (lambda v: jaxsal.fourier(decay_power=v), "decay_power", 0, False, None),
    (lambda v: jaxsal.diversity("d", weight=v), "weight", 0, False, None),
    (_plot_grid, "alpha", 0, False, 1),
    (lambda v: _plot_grid(0.5, vmin=v, vmax=10), "vmin", None, False, None),
    (lambda v: _plot_grid(0.5, panel_size=v), "panel_size", 0, True, None),
    (lambda v: _plot("heatmap", np.zeros((4, 4)), size=v), "size", 0, True, None),
    (lambda v: _plot("image_grid", np.zeros((2, 4, 4, 1)), panel_size=v), "panel_size", 0, True,
     None),
    (lambda v: _plot("tokens", ["a"], np.zeros((1, 1)), width=v), "width", 0, True, None),
    (lambda v: _plot("signal", np.zeros(4), np.zeros((1, 4)), panel_size=(v, 1.0)),
     "panel_size[0] (width)", 0, True, None),
    (lambda v: _plot("curves", {}, size=(4.0, v)), "size[1] (height)", 0, True, None),
]
IDS = [f"{i}-{c[1]}" for i, c in enumerate(CASES)]


def _valid(low, above, high, below=False) -> tuple[float, int | None]:
    """A float and an int inside the range (exact in float32; no int for (0, 1))."""
    if high is not None:
        return high / 2, (None if below and high - 1 <= (low or 0) else
                          high - 1 if below else high)
    base = 0 if low is None else low
    return base + 0.5 + (1 if low == 1 else 0), base + 2


# each kind of number the rule takes, made from a valid float f and a valid int i
ACCEPTED = {
    "int": lambda f, i: i, "float": lambda f, i: f,
    "np.float32": lambda f, i: np.float32(f), "np.int64": lambda f, i: np.int64(i),
    "np 0-d float64 array": lambda f, i: np.array(f),
    "jnp 0-d float32": lambda f, i: jnp.float32(f),
    "jnp 0-d int32": lambda f, i: jnp.asarray(i, jnp.int32),
    # (ml_dtypes' bfloat16 is no np.floating: it was refused, float16 taken)
    "jnp 0-d bfloat16": lambda f, i: jnp.asarray(f, jnp.bfloat16),
    "ml_dtypes bfloat16 scalar": lambda f, i: ml_dtypes.bfloat16(f),
}
#: the kinds made from the int (none where the range holds no int: rise's p in (0, 1))
INT_KINDS = ("int", "np.int64", "jnp 0-d int32")

# each kind of value the rule refuses, made from the valid float f; and what the error adds
REFUSED = {
    "True": (lambda f: True, ""), "np.bool_": (lambda f: np.bool_(True), ""),
    "str": (lambda f: str(f), ""), "bytes": (lambda f: b"1", ""),
    "complex": (lambda f: complex(f, 0), ""), "np.complex64": (lambda f: np.complex64(f), ""),
    "nan": (lambda f: float("nan"), "NaN and infinity"),
    "inf": (lambda f: math.inf, "NaN and infinity"),
    "-inf": (lambda f: -math.inf, "NaN and infinity"),
    "np 1-element array": (lambda f: np.array([f]), "pass one number, not an array"),
    "jnp 2 values": (lambda f: jnp.array([f, f]), "pass one number, not an array"),
    "list": (lambda f: [f], "pass one number, not an array"),
    "int too large for a float": (lambda f: 10 ** 400, ""),
}


@pytest.fixture
def stop_after(monkeypatch):
    """``stop_after(name)``: the calls stop right after ``reals.check_real``'s check of
    argument ``name`` (its results recorded in the list returned)."""
    return lambda name: stop_after_check(monkeypatch, reals, "check_real", name)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_hyperparameter_takes_every_kind_of_number(case, stop_after):
    call, name, low, above, high = case[:5]
    f, i = _valid(low, above, high, "below" in case[5:])
    seen = stop_after(name)
    kinds = {k: make for k, make in ACCEPTED.items() if i is not None or k not in INT_KINDS}
    for kind, make in kinds.items():
        v = make(f, i)
        with pytest.raises(Stop):
            call(v)
        assert seen[-1] == float(v) and type(seen[-1]) is float, (kind, seen)
    assert len(seen) == len(kinds)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_hyperparameter_refuses_the_same_values(case):
    call, name, low, above, high = case[:5]
    several, below = "sequences" in case[5:], "below" in case[5:]
    f, _ = _valid(low, above, high, below)
    out = []
    if low is not None:
        out.append((low - 1 if not above else low, ""))  # below the range
    if high is not None:
        out.append((high + 1, ""))
        if below:
            out.append((high, ""))
    bad = [(make(f), why) for make, why in REFUSED.values()
           if not (several and why.startswith("pass one number"))] + out
    cond = reals.expected_range(low, above, high, below)
    expected = re.escape(f"expected {name} {cond} (" if cond else f"expected {name} as ")
    for v, why in bad:
        with pytest.raises(ValueError, match=expected) as e:
            call(v)
        assert f"got {v!r}" in str(e.value) and why in str(e.value), str(e.value)
    # traced by the caller's jit: refused, saying why (before the method traces anything)
    with pytest.raises(ValueError, match=expected + r".*traced by jax\.jit.*part of the "
                       r"compiled program: pass a Python number"):
        jax.jit(call)(f)


def test_objective_weights_may_be_traced():
    """The one exception, kept: an objective's weight is data of the Objective (a pytree leaf
    that maximize vmaps over), so a traced weight is taken; a concrete one is checked as
    every other real."""
    assert float(jax.jit(lambda w: jaxsal.output_objective(0, weight=w).weights[0])(2.0)) == 2.0
    for v in (True, "1", math.nan, np.ones(2)):
        with pytest.raises(ValueError, match="output_objective: expected weight as a finite"):
            jaxsal.output_objective(0, weight=v)
