"""Several devices: the methods under ``jax.shard_map`` (each device explains its own rows),
on 4 CPU devices (``--xla_force_host_platform_device_count=4``, set before JAX starts: one subprocess runs every
case and reports its numbers; the tests read them)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = r'''
import json, os, sys
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import jaxsal
from model_import import load_keras

assert len(jax.devices()) == 4, jax.devices()
mesh = Mesh(np.array(jax.devices()), ("data",))
rows = NamedSharding(mesh, P("data"))
m = load_keras(os.path.join(sys.argv[1], "tests/fixtures/mnist_cnn_keras3.h5")).with_head("logits")
x = np.load(os.path.join(sys.argv[1], "tests/fixtures/mnist_5k.npz"))["x"][:8]
x = jnp.asarray(x.reshape(8, 28, 28, 1), jnp.float32)
x = x / 255.0 if float(x.max()) > 2 else x
k = jax.random.key(0)
out = {}

def rel(got, want):
    got, want = np.asarray(got), np.asarray(want)
    return float(np.abs(got - want).max() / np.abs(want).max())

def attempt(name, f):
    try:
        out[name] = f()
    except Exception as e:  # reported, the test names it
        out[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}

# jax.shard_map: every device explains its 2 rows; the random methods' draws keyed by the
# global index (index_offset = the shard's position times its size)
per_shard = {
    "saliency": lambda a, off: jaxsal.saliency(m, a, [1, 3, 5]),
    "guided_backprop": lambda a, off: jaxsal.guided_backprop(m, a, [1, 2]),
    "gradcam": lambda a, off: jaxsal.gradcam(m, a, [1, 2]),
    "layercam": lambda a, off: jaxsal.layercam(m, a, [1, 2]),
    "occlusion": lambda a, off: jaxsal.occlusion(m, a, [1, 2], patch=7),
    "fullgrad": lambda a, off: jaxsal.fullgrad(m, a, [1, 2]),
    "neuron_conductance": lambda a, off: jaxsal.neuron_conductance(
        m, a, 1, layer="conv2d_2", neuron=3, steps=4),
    "integrated_gradients_loop": lambda a, off: jaxsal.integrated_gradients(
        m, a, 1, steps=4, batch_steps=1),
    "smoothgrad": lambda a, off: jaxsal.smoothgrad(m, a, 2, key=k, n=4, index_offset=off),
    "rise": lambda a, off: jaxsal.rise(m, a, [1, 2], key=k, n=16, grid=4, index_offset=off),
}
for name, f in per_shard.items():
    def run(f=f):
        want = f(x, 0)
        body = lambda a: f(a, jax.lax.axis_index("data") * a.shape[0])
        got = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=P("data"),
                                    out_specs=P("data")))(jax.device_put(x, rows))
        return {"rel": rel(got, want)}
    attempt("shard_map/" + name, run)

print("RESULTS" + json.dumps(out))
'''


@pytest.fixture(scope="module")
def results():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4")
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS")][-1]
    return json.loads(line[len("RESULTS"):])


def _ok(results, name):
    r = results[name]
    assert "error" not in r, f"{name}: {r['error']}"
    return r


@pytest.mark.parametrize("name", [
    "saliency", "guided_backprop", "gradcam", "layercam", "occlusion", "fullgrad",
    "neuron_conductance", "integrated_gradients_loop", "smoothgrad", "rise"])
def test_shard_map_gives_the_maps_of_one_device(results, name):
    """Under ``jax.shard_map`` (its default ``check_vma=True``) each device explains its own
    rows. The gradient methods were refused (a one-hot cotangent without the scores' mesh
    axes: "expected float32[2,3]{V:data}"), occlusion's and the sampled methods' loops too (a
    carry of zeros that vary over no axis), and Grad-CAM, LayerCAM and FullGrad gave maps 4
    times too large, silently: a perturbation built as plain zeros had its gradient summed
    over the devices. ``index_offset`` from ``jax.lax.axis_index`` keys the random methods'
    draws by the global index, so their rows equal one call too."""
    r = _ok(results, "shard_map/" + name)
    assert r["rel"] < 1e-5, f"{name}: {r['rel']:.2e} of the one-device maps' largest value"

