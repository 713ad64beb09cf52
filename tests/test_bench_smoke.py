"""The benchmark harness in smoke mode: runs end to end and writes a valid result JSON."""

import json
import os
import subprocess
import sys

import pytest

import jaxsal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # benchmarks/ is a top-level folder of the repo, not installed
from benchmarks import run as bench_run  # noqa: E402
METHOD_FN = {"saliency": "saliency", "gradcam": "gradcam", "guided": "guided_backprop",
             "scorecam": "scorecam"}
TIMING_FIELDS = ("first_call_s", "median_s", "min_s", "max_s", "reps", "times_s",
                 "throughput", "unit", "items", "peak_rss_bytes", "versions", "device")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    p = subprocess.run([sys.executable, "-m", "benchmarks.run", "--suite", "smoke", "--out",
                        str(out), "--quiet"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    with open(out) as f:
        return json.load(f)


def test_smoke_json_has_run_metadata(smoke):
    assert smoke["suite"] == "smoke" and smoke["schema"] == bench_run.SCHEMA
    assert smoke["date"].startswith("20")
    assert smoke["machine"]["cpu_count"] >= 1
    assert smoke["devices"] and all(d.startswith("cpu") for d in smoke["devices"])
    assert {"jax", "jaxlib", "jaxsal"} <= set(smoke["versions"]["jaxsal"])
    assert set(smoke["malloc_variants"]) == {"default", "tuned"}


def test_smoke_results_are_measurements(smoke):
    ids = [w["spec"]["id"] for w in smoke["workloads"]]
    assert ids == [s["id"] for s in bench_run.suites.SMOKE]
    for w in smoke["workloads"]:
        spec = w["spec"]
        for r in w["results"]:
            fn = METHOD_FN.get(spec["method"])
            if r["side"] == "jaxsal" and fn and not hasattr(jaxsal, fn):
                assert r["status"] == "skipped"   # the method has not landed yet
                continue
            assert r["status"] == "ok", r
            for k in TIMING_FIELDS:
                assert k in r, k
            assert r["reps"] >= 5 and len(r["times_s"]) == r["reps"]
            assert 0 < r["min_s"] <= r["median_s"] <= r["max_s"]
            assert r["throughput"] == pytest.approx(r["items"] / r["median_s"])
            assert r["peak_rss_bytes"] > 10 * 2**20
            assert r["first_call_s"] > 0
            if spec["method"] in ("forward", "saliency", "gradcam"):
                # the compiled program's own memory (the T-class / top-1 ratio's measure)
                pm = r["program_memory"]
                assert pm["bytes"] == (pm["argument_bytes"] + pm["output_bytes"]
                                       + pm["temp_bytes"] - pm["alias_bytes"]) > 0, pm


def test_smoke_forward_reports_flops_and_compile_time(smoke):
    fwd = [r for w in smoke["workloads"] if w["spec"]["method"] == "forward"
           for r in w["results"]]
    assert fwd
    for r in fwd:
        assert r["compile_s"] > 0
        assert r["info"]["fwd_flops_per_image"] > 1e6     # MNIST CNN: ~24 MFLOP per image
        assert r["achieved_flops_per_s"] == pytest.approx(r["flops"] / r["median_s"])


def test_readme_table_regenerates_from_json(smoke, tmp_path):
    path = tmp_path / "README.md"
    path.write_text("# bench\n\nhand-written text\n")
    bench_run.write_readme(smoke, str(path))
    bench_run.write_readme(smoke, str(path))   # idempotent: one table, text kept
    text = path.read_text()
    assert text.count("<!-- table:smoke:start -->") == 1
    assert "hand-written text" in text
    for w in smoke["workloads"]:
        assert w["spec"]["id"] in text


def test_forward_flops_count_convolutions_and_matmuls_by_hand():
    """The harness's FLOP count (TFLOP/s next to the device's peak) is 2 x the multiply-
    accumulates of every convolution and matrix product, nested calls included: what a GPU
    compiler's cost analysis misses (cuDNN calls count 0)."""
    import jax
    import jax.numpy as jnp

    from benchmarks import side_jaxsal

    w = jnp.ones((3, 3, 4, 8))
    d = jnp.ones((6 * 6 * 8, 5))

    @jax.jit  # a nested call: its jaxpr is counted too
    def head(h):
        return h.reshape(h.shape[0], -1) @ d

    def f(x):
        h = jax.lax.conv_general_dilated(x, w, (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return head(jax.nn.relu(h))

    jaxpr = jax.make_jaxpr(f)(jnp.ones((2, 8, 8, 4))).jaxpr
    conv = 2 * (2 * 6 * 6 * 8) * (4 * 3 * 3)
    dense = 2 * (2 * 5) * (6 * 6 * 8)
    assert side_jaxsal.jaxpr_matmul_flops(jaxpr) == conv + dense


@pytest.mark.parametrize("argv, says", [
    (["--sides", "tfkvs"], "invalid choice: 'tfkvs'"),
    (["--only", "no-such-workload"], "no workload of suite 'smoke'"),
    (["--sides", "tfkv"], "no workload of suite 'smoke'"),  # the smoke suite is jaxsal's only
    # a selection that runs would replace the README's table with its own rows alone
    (["--only", "forward", "--write-readme"], "would replace it with the selected rows"),
    (["--sides", "jaxsal", "--write-readme"], "would replace it with the selected rows"),
])
def test_a_selection_that_runs_nothing_is_refused(tmp_path, capsys, argv, says):
    # a typo in --sides or --only ran nothing and, with --write-readme, would have replaced
    # the README's measured table with an empty one
    out = tmp_path / "x.json"
    with pytest.raises(SystemExit) as e:
        bench_run.main(["--suite", "smoke", "--out", str(out), "--quiet", *argv])
    assert e.value.code == 2 and says in capsys.readouterr().err and not out.exists()


def test_flop_count_runs_in_a_fresh_interpreter():
    """``jaxpr_matmul_flops`` names ``jax.extend.core``, which ``import jax`` alone does not
    load: it raised AttributeError when nothing else had imported ``jax.extend`` first."""
    code = ("import jax, jax.numpy as jnp\n"
            "from benchmarks.side_jaxsal import jaxpr_matmul_flops\n"
            "j = jax.make_jaxpr(lambda a, b: a @ b)(jnp.ones((2, 3)), jnp.ones((3, 4)))\n"
            "print(jaxpr_matmul_flops(j.jaxpr))\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT), timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split() == [str(2 * 2 * 4 * 3)]  # 2 x (2 x 4 outputs) x 3 products each


def test_flops_up_to_a_layer_count_only_the_layers_before_it(tmp_path):
    """Activation maximization of a layer's channels runs the model up to that layer (XLA
    drops the rest; the PyTorch peer runs the net up to it): its nominal FLOPs are those of
    the truncated forward pass, counted by hand here, not the whole model's."""
    import keras

    from benchmarks import side_jaxsal
    from model_import import load_keras

    m = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3, name="c1"),
                          keras.layers.Conv2D(4, 3, name="c2"), keras.layers.Flatten(),
                          keras.layers.Dense(5, name="d")])
    m.save(tmp_path / "m.h5")
    model = load_keras(str(tmp_path / "m.h5"))
    c1 = 2 * (4 * 4 * 3) * (2 * 3 * 3)   # 2 x outputs x (input channels x kernel)
    c2 = 2 * (2 * 2 * 4) * (3 * 3 * 3)
    d = 2 * 5 * (2 * 2 * 4)
    count = side_jaxsal.forward_flops_per_image
    assert count(model, (6, 6, 2)) == c1 + c2 + d
    assert count(model, (6, 6, 2), layer="c1") == c1
    assert count(model, (6, 6, 2), layer="c2") == c1 + c2


def test_layer_maximize_is_charged_the_flops_up_to_its_layer():
    spec = {"id": "vgg16/maximize block3_conv3 2 filters x4 steps", "method": "maximize",
            "model": {"name": "vgg16", "size": 224}, "batch": None, "targets": 2, "steps": 4,
            "layer": "block3_conv3", "sides": ("jaxsal", "torch")}
    whole, upto = 30.9e9, 18.7e9

    def results(info):
        return [{"side": s, "status": "ok", "median_s": 0.5, "env": {}, "info": dict(info)}
                for s in ("jaxsal", "torch")]

    key = bench_run.models.model_key(spec["model"])
    rs = results({"fwd_flops_per_image_to_layer": upto})
    bench_run._summarize(spec, rs, {key: whole})
    for r in rs:  # 2 filters x 4 steps x (forward + input gradient) up to the layer
        assert r["flops"] == 2 * 4 * 2 * upto
        assert r["achieved_flops_per_s"] == r["flops"] / 0.5
    rs = results({})  # not counted: no figure rather than the whole model's
    bench_run._summarize(spec, rs, {key: whole})
    assert all(r.get("flops") is None and r.get("achieved_flops_per_s") is None for r in rs)
