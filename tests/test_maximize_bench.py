"""benchmarks/bench_maximize.py runs end to end (smoke suite) and reports what it measured."""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # benchmarks/ is a top-level folder of the repo, not installed
from benchmarks import bench_maximize  # noqa: E402


def test_smoke_suite_result_is_complete(tmp_path):
    out = tmp_path / "maximize_smoke.json"
    bench_maximize.main(["--suite", "smoke", "--reps", "2", "--warmup", "0", "--out", str(out)])
    res = json.loads(out.read_text())
    assert res["suite"] == "smoke" and res["device"].startswith("cpu")
    (r,) = res["results"]
    assert r["unit"] == "image-steps/s" and r["items"] == 3 * 16
    assert r["compile_s"] > 0 and r["median_s"] > 0 and len(r["times_s"]) == 2
    assert abs(r["throughput"] - r["items"] / r["median_s"]) < 1e-6 * r["throughput"]
    assert r["check"]["images_in_range"] and r["check"]["classified_as_target"] == 3


def test_adam_roll_preset_is_plain_adam_on_clipped_pixels():
    """The GPU suite's preset for the PyTorch loop's objective: the unit alone (no regularizer)
    and Adam at 0.05 on the pixel values, kept in range. For logits that grow with every pixel
    (shift-invariant, so the roll does not matter), Adam moves each pixel by exactly the
    learning rate per step (a constant gradient), until the top of the range."""
    import jax.numpy as jnp
    import numpy as np

    import jaxsal

    w = jnp.stack([jnp.full((6 * 6,), float(k + 1)) for k in range(3)], 1)
    model = jaxsal.FunctionModel(lambda p, x: x.reshape(x.shape[0], -1) @ p["w"], {"w": w},
                                 input_shape=(6, 6, 1))
    preset = bench_maximize.presets()["adam-roll"]

    def images(steps):
        return np.asarray(jaxsal.maximize(model, [0, 1, 2], steps=steps, key=0,
                                          image_shape=(6, 6, 1), **preset).images)

    one, four = images(1), images(4)
    np.testing.assert_allclose(four - one, 3 * 0.05, atol=1e-5)
    assert np.all(images(20) == 1.0)  # clipped at the top of input_range (0, 1)


def test_unknown_preset_is_refused():
    import pytest

    spec = dict(bench_maximize.SUITES["smoke"][0], preset="adam")
    with pytest.raises(ValueError, match="adam-roll"):
        bench_maximize.case(spec)
