"""Several devices: the methods under ``jax.shard_map`` (each device explains its own rows),
inputs sharded over the batch axis, and ``explain_to_file(..., sharding=)``, on 4 CPU devices
(``--xla_force_host_platform_device_count=4``, set before JAX starts: one subprocess runs every
case and reports its numbers; the tests read them)."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: ``jax.shard_map`` (option 1 of the README's recipe) is not in the oldest JAX releases
#: ``pyproject.toml`` allows (jax 0.4.38 has only ``jax.experimental.shard_map``)
needs_shard_map = pytest.mark.skipif(not hasattr(jax, "shard_map"),
                                     reason="this JAX release has no jax.shard_map")
#: a traced array's mesh (``jax.typeof(x).sharding``), by which passes under a memory budget
#: hold a multiple of the devices (``base.mesh_devices``), is not in jax 0.4.38 either: there
#: passes of 6 of 12 inputs on 4 devices stay split two ways (0.50 of the work per device)
needs_typeof = pytest.mark.skipif(not hasattr(jax, "typeof"),
                                  reason="this JAX release has no jax.typeof")

SCRIPT = r'''
import json, os, sys, tempfile
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
    "saliency_chunked": lambda a, off: jaxsal.saliency(m, a, [1, 3, 5], chunk_size=1),
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
    # a memory budget of passes of 1 within each device's 2 rows (split_batch's loop: the
    # inputs, their ids and their draws' global indices split; saliency's passes split the
    # inputs and ids, a subset)
    "smoothgrad_passes": lambda a, off: jaxsal.smoothgrad(m, a, 2, key=k, n=4, index_offset=off,
                                                          memory_budget=1 << 20),
    "deeplift_passes": lambda a, off: jaxsal.deeplift(m, a, [1, 2], memory_budget=1 << 20),
    # (a while_loop's flag that started as plain False: refused, "bool[] ... bool[]{V:data}")
    "guided_integrated_gradients": lambda a, off: jaxsal.guided_integrated_gradients(
        m, a, 1, steps=2),
    # (the bounds built as plain arrays: "unexpected JAX type ... float32[2,10]{V:data}")
    "lrp_zbox": lambda a, off: jaxsal.lrp(m, a, 1, rule=jaxsal.lrp_zbox(0.0, 1.0)),
    "lrp_composite_zbox": lambda a, off: jaxsal.lrp(
        m, a, 1, rule=jaxsal.lrp_composite(first=jaxsal.lrp_zbox(-1.0, 2.0))),
}
# the one-device maps under a budget are those without one (test_memory_budget): the
# program already compiled for the case named here is the reference
reference = {"smoothgrad_passes": "smoothgrad"}
for name, f in per_shard.items():
    def run(f=f, name=name):
        want = per_shard[reference.get(name, name)](x, 0)
        body = lambda a: f(a, jax.lax.axis_index("data") * a.shape[0])
        got = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=P("data"),
                                    out_specs=P("data")))(jax.device_put(x, rows))
        return {"rel": rel(got, want)}
    attempt("shard_map/" + name, run)

# XRAI's region selection under jax.shard_map, maps and segments both split over the devices
# (its loops' carries started as plain arrays: refused, "bool[784] ... bool[784]{V:data}"):
# 4 quadrants and 4 columns of 28x7 pixels, per input
cells = np.arange(28)
segs = np.stack([(cells[:, None] // 14 == i) & (cells[None, :] // 14 == j)
                 for i in range(2) for j in range(2)] +
                [np.broadcast_to(cells[None, :] // 7 == j, (28, 28)) for j in range(4)])
segs = np.broadcast_to(segs, (8,) + segs.shape)
with_segments = {
    "xrai_segments": lambda a, s: jaxsal.xrai(m, a, 1, steps=2, segments=s),
    "xrai_regions": lambda a, s: jaxsal.xrai_regions(jnp.abs(a[..., 0] - 0.5), s),
    "xrai_regions_fast": lambda a, s: jaxsal.xrai_regions(jnp.abs(a[..., 0] - 0.5), s,
                                                          algorithm="fast"),
}
for name, f in with_segments.items():
    def run(f=f):
        got = jax.jit(jax.shard_map(f, mesh=mesh, in_specs=(P("data"), P("data")),
                                    out_specs=P("data")))(jax.device_put(x, rows),
                                                          jax.device_put(segs, rows))
        return {"rel": rel(got, f(x, segs))}
    attempt("shard_map/" + name, run)

# the devices split_batch sees: none inside jax.shard_map (its Manual axis: one device's
# rows), the mesh's 4 for the batch sharded under one program
def mesh_seen():
    from jaxsal._src import base
    got = {}
    def look(where):
        def f(a):
            got[where] = base.mesh_devices(a)
            return a
        return f
    jax.jit(jax.shard_map(look("shard_map"), mesh=mesh, in_specs=P("data"),
                          out_specs=P("data")))(jax.device_put(x, rows))
    jax.jit(look("jit"))(jax.device_put(x, rows))
    return got
attempt("mesh_devices", mesh_seen)

# inputs sharded over the batch axis, the method called as usual (several targets: saliency's
# and Grad-CAM's target pullbacks vmapped, scorecam's union; smoothgrad, integrated_gradients,
# occlusion, rise and gradient_shap on sharded inputs: flops/ below, the same program under
# the caller's jit, its maps and their devices checked alike)
global_view = {
    "saliency": lambda a: jaxsal.saliency(m, a, [1, 3, 5]),
    "gradcam": lambda a: jaxsal.gradcam(m, a, [1, 2]),
    "scorecam": lambda a: jaxsal.scorecam(m, a, [1, 2], top_k=4),
    "shapley_value_sampling": lambda a: jaxsal.shapley_value_sampling(m, a, 1, key=k, n=2,
                                                                     patch=7),
    # (its baselines' copies were stacked copy-major: the maps came back replicated)
    "xrai": lambda a: jaxsal.xrai(m, a, 1, steps=2, segments=segs),
}
for name, f in global_view.items():
    def run(f=f):
        got = f(jax.device_put(x, rows))
        return {"rel": rel(got, f(x)), "devices": len(got.sharding.device_set),
                "spec": list(got.sharding.spec)}
    attempt("sharded/" + name, run)

# the caller's own jit with in/out shardings; maximize with its seed images sharded
def user_jit():
    f = lambda a: jaxsal.smoothgrad(m, a, 2, key=k, n=4)
    got = jax.jit(f, in_shardings=rows, out_shardings=rows)(x)
    return {"rel": rel(got, f(x)), "devices": len(got.sharding.device_set),
            "spec": list(got.sharding.spec)}
attempt("sharded/user_jit_smoothgrad", user_jit)

def maximize():
    seeds = jax.random.uniform(jax.random.key(1), (8, 28, 28, 1))
    f = lambda s: jaxsal.maximize(m, list(range(8)), steps=5, key=0, seed_images=s).images
    got = f(jax.device_put(seeds, rows))
    return {"rel": rel(got, f(seeds)), "devices": len(got.sharding.device_set),
            "spec": list(got.sharding.spec)}
attempt("sharded/maximize", maximize)

# the work each device does: XLA's count of the floating-point operations of one device's
# program, inputs sharded over 4 devices, against the program of one device
def flops(f, a):
    """XLA's count of one device's floating-point operations in ``f``'s program, and the
    program's maps of ``a``."""
    program = jax.jit(f).lower(a).compile()
    c = program.cost_analysis()
    c = c[0] if isinstance(c, (list, tuple)) else c
    return float(c["flops"]), program(a)

split = {
    "saliency": lambda a: jaxsal.saliency(m, a, 1),
    "gradcam": lambda a: jaxsal.gradcam(m, a, 1),
    "smoothgrad": lambda a: jaxsal.smoothgrad(m, a, 1, key=k, n=4),
    "integrated_gradients": lambda a: jaxsal.integrated_gradients(m, a, 1, steps=8),
    "rise": lambda a: jaxsal.rise(m, a, 1, key=k, n=16, grid=4),
    "occlusion": lambda a: jaxsal.occlusion(m, a, 1, patch=7),
    "gradient_shap": lambda a: jaxsal.gradient_shap(m, a, 1, key=k, n=3),
    "kernel_shap": lambda a: jaxsal.kernel_shap(m, a, 1, key=k, n=16, patch=7),
    # a memory budget of about 4 inputs' forward passes: 2 passes of 4 inputs (strided)
    "saliency_passes": lambda a: jaxsal.saliency(m, a, 1, memory_budget=9 << 20),
    "smoothgrad_passes": lambda a: jaxsal.smoothgrad(m, a, 1, key=k, n=4,
                                                     memory_budget=9 << 20),
    # their copies stacked input-major too (they were stacked copy-major)
    "deeplift": lambda a: jaxsal.deeplift(m, a, 1),
    "deeplift_shap": lambda a: jaxsal.deeplift_shap(m, a, 1, baselines=refs),
    "layer_conductance": lambda a: jaxsal.layer_conductance(m, a, 1, layer="conv2d_2",
                                                            steps=4),
    "blur_integrated_gradients": lambda a: jaxsal.blur_integrated_gradients(m, a, 1, steps=4),
    "guided_integrated_gradients": lambda a: jaxsal.guided_integrated_gradients(
        m, a, [1, 2], steps=4),
    "infidelity": lambda a: jaxsal.infidelity(m, a, jnp.abs(a[..., 0] - 0.5), 1, key=k, n=4),
    "deletion": lambda a: jaxsal.deletion(m, a, jnp.abs(a[..., 0] - 0.5), 1, steps=8).scores,
    "insertion": lambda a: jaxsal.insertion(m, a, jnp.abs(a[..., 0] - 0.5), 1,
                                            steps=8).scores,
}
refs = jax.random.uniform(jax.random.key(2), (3, 28, 28, 1))  # DeepLIFT-SHAP's references
for name, f in split.items():
    def run(f=f):
        (sharded, got), (one, want) = flops(f, jax.device_put(x, rows)), flops(f, x)
        return {"ratio": sharded / one, "rel": rel(got, want),
                "devices": len(got.sharding.device_set)}
    attempt("flops/" + name, run)

# 12 inputs under a budget of 6 inputs' passes (2 passes of 6, which 4 devices do not split
# evenly): on the mesh, 3 passes of 4, one input of each on every device
def passes_of_six():
    from jaxsal._src import base
    x12 = jnp.concatenate([x, x[:4]])
    budget = base.forward_bytes(m, x12[:1]) * 2 * 6 + 10
    assert base.batch_chunk(12, base.forward_bytes(m, x12[:1]), budget) == 6
    f = lambda a: jaxsal.saliency(m, a, 1, memory_budget=budget)
    (sharded, got), (one, want) = flops(f, jax.device_put(x12, rows)), flops(f, x12)
    return {"ratio": sharded / one, "rel": rel(got, want), "devices": len(got.sharding.device_set)}
attempt("flops/saliency_passes_of_6", passes_of_six)

# explain_to_file: each chunk placed with the sharding the job is given
def job():
    d = tempfile.mkdtemp()
    seen = []
    def spy(model, a, targets=None, **kw):
        seen.append([list(a.sharding.spec), len(a.sharding.device_set)]
                    if isinstance(a, jax.Array) else type(a).__name__)
        return jaxsal.smoothgrad(model, a, targets, **kw)
    spy.__signature__ = __import__("inspect").signature(jaxsal.smoothgrad)
    xn = np.asarray(x)[:6]
    want = np.asarray(jaxsal.smoothgrad(m, xn, 1, key=k, n=3))
    got = jaxsal.explain_to_file(spy, m, xn, os.path.join(d, "a.npy"), targets=1,
                                 batch_size=4, sharding=rows, resume=False, key=k, n=3)
    small = jaxsal.explain_to_file(spy, m, xn[:3], os.path.join(d, "b.npy"), targets=1,
                                   batch_size=8, sharding=rows, resume=False, key=k, n=3)
    try:
        jaxsal.explain_to_file(jaxsal.saliency, m, xn, os.path.join(d, "c.npy"),
                               batch_size=6, sharding=rows)
        refused = ""
    except ValueError as e:
        refused = str(e)
    # a sharding that splits another axis than the batch unevenly (rows of 28 over 3 devices,
    # 1 channel over 4), and one over an Explicit mesh axis: refused before any work
    three = Mesh(np.array(jax.devices()[:3]), ("d",))
    others = {"rows": NamedSharding(three, P(None, "d")),
              "channels": NamedSharding(mesh, P(None, None, None, "data"))}
    if hasattr(jax.sharding, "AxisType"):
        others["explicit"] = NamedSharding(
            jax.make_mesh((4,), ("e",), axis_types=(jax.sharding.AxisType.Explicit,)), P("e"))
    other_refusals = {}
    for what, sh in others.items():
        try:
            jaxsal.explain_to_file(jaxsal.saliency, m, xn, os.path.join(d, what + ".npy"),
                                   targets=1, batch_size=4, sharding=sh)
            other_refusals[what] = ""
        except ValueError as e:
            other_refusals[what] = str(e)
    return {"rel": rel(got, want), "rel_small": rel(small, want[:3]), "seen": seen,
            "small_shape": list(small.shape), "refused": refused,
            "other_refusals": other_refusals}
attempt("explain_to_file", job)

# the command line's --devices: each chunk split over a 1-D mesh of the local devices
def command_line():
    import contextlib, io
    from jaxsal import cli
    d = tempfile.mkdtemp()
    xs, maps = os.path.join(d, "x.npy"), os.path.join(d, "maps.npy")
    np.save(xs, np.asarray(x))
    np.save(maps, np.asarray(jnp.abs(x[..., 0] - 0.5)))
    model = os.path.join(sys.argv[1], "tests/fixtures/mnist_cnn_keras3.h5")
    explain = ["explain", model, xs, "--method", "smoothgrad", "--seed", "0", "--option",
               "n=3", "--targets", "1"]
    evaluate = ["evaluate", model, xs, maps, "--metric", "deletion", "--targets", "1",
                "--steps", "4", "--batch-size", "8"]
    seen, orig = [], jaxsal.explain_to_file
    def spy(*a, sharding=None, **kw):  # the sharding the command hands the job
        seen.append(None if sharding is None else
                    [len(sharding.device_set), list(sharding.spec)])
        return orig(*a, sharding=sharding, **kw)
    def run(args):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                rc = cli.main(args)
            except SystemExit as e:  # argparse's refusals
                rc = e.code
        return rc, " ".join(err.getvalue().split())
    jaxsal.explain_to_file = spy
    try:
        # (a count N: --devices 3 below, the first N devices' mesh as for all)
        rcs = [run(explain + ["--batch-size", "4"] + more + ["--out", os.path.join(d, f)])[0]
               for more, f in (([], "one.npy"), (["--devices", "all"], "all.npy"))]
        rcs += [run(evaluate + more + ["--out", os.path.join(d, f)])[0]
                for more, f in (([], "d1.npy"), (["--devices", "all"], "d4.npy"))]
        # no --batch-size on 3 devices: the default 64 made 63 (one chunk of 9, padded)
        three = run(explain + ["--devices", "3", "--out", os.path.join(d, "three.npy")])
        bad = os.path.join(d, "bad.npy")
        refused = {"batch": run(explain + ["--batch-size", "6", "--devices", "all", "--out",
                                           bad]),
                   "many": run(explain + ["--devices", "5", "--out", bad]),
                   "zero": run(explain + ["--devices", "0", "--out", bad]),
                   "word": run(explain + ["--devices", "some", "--out", bad])}
    finally:
        jaxsal.explain_to_file = orig
    load = lambda f: np.load(os.path.join(d, f))
    return {"rcs": rcs, "seen": seen, "all": rel(load("all.npy"), load("one.npy")),
            "three_run": three,
            "three": rel(load("three.npy"), load("one.npy")) if three[0] == 0 else None,
            "deletion": rel(load("d4.npy"), load("d1.npy")),
            "areas": rel(load("d4.auc.npy"), load("d1.auc.npy")),
            "bad_written": os.path.exists(bad), "refused": refused}
attempt("command_line", command_line)
# the README's recipe, as written (RISE's masks fewer, the file in a temporary folder)
def readme():
    text = open(os.path.join(sys.argv[1], "README.md")).read()
    code = text.split("\n### Several devices\n", 1)[1].split("```python\n", 1)[1]
    code = code.split("```", 1)[0]
    d = tempfile.mkdtemp()
    for old, new in (('"rise.npy", key=0,', f'{os.path.join(d, "rise.npy")!r}, key=0, n=16,'),):
        assert old in code, old
        code = code.replace(old, new)
    scope = dict(jax=jax, jaxsal=jaxsal, m=m, x=x, inputs=np.asarray(x))
    exec(compile(code, "README.md", "exec"), scope)
    want = jaxsal.gradcam(m, x, targets=[3, 5])
    rise = np.load(os.path.join(d, "rise.npy"))
    return {"rel": rel(scope["maps"], want), "spec": list(scope["maps"].sharding.spec),
            "rise": rel(rise, jaxsal.rise(m, x, key=0, n=16))}
attempt("readme", readme)
# an Explicit mesh axis (jax.make_mesh's default in recent JAX): inputs sharded over it are
# refused at the method's entry (eager, the plan of the same call made on Auto axes above,
# and under the caller's jit), nothing compiled; a plan made under an Auto mesh is not reused
# under an Explicit one
typed_meshes = hasattr(jax.sharding, "AxisType") and hasattr(jax, "set_mesh")
def outcomes(calls):
    """Per name, "ran" or the exception each call raised (the message, for the test)."""
    got = {}
    for name, f in calls.items():
        try:
            f()
            got[name] = "ran"
        except Exception as e:
            got[name] = f"{type(e).__name__}: {e}"
    return got
def explicit():
    from jax.sharding import AxisType
    ex = jax.make_mesh((4,), ("e",), axis_types=(AxisType.Explicit,))
    xs = jax.device_put(x, NamedSharding(ex, P("e")))
    job = os.path.join(tempfile.mkdtemp(), "maps.npy")
    return outcomes({"eager": lambda: jaxsal.saliency(m, xs, [1, 3, 5]),
                     "jit": lambda: jax.jit(lambda a: jaxsal.gradcam(m, a, [1, 2]))(xs),
                     "job": lambda: jaxsal.explain_to_file(jaxsal.saliency, m, xs, job,
                                                           targets=1, batch_size=2)})
if typed_meshes:
    attempt("explicit", explicit)
# every other array argument sharded over the Explicit axis: refused where it is checked,
# naming it, before anything compiles (they crashed inside: a MaxPooling2D reshape, a gather,
# maximize's vmap over the units)
def explicit_arguments():
    from jax.sharding import AxisType
    ex = jax.make_mesh((4,), ("e",), axis_types=(AxisType.Explicit,))
    E = lambda a: jax.device_put(np.asarray(a), NamedSharding(ex, P("e")))
    xn = np.asarray(x)
    maps = np.ones((8, 1, 28, 28), np.float32)
    ids = np.arange(8)[:, None] % 10
    mask = np.broadcast_to((np.arange(28)[:, None] // 14 * 2 + np.arange(28) // 14)[..., None],
                           (8, 28, 28, 1)).astype(np.int32)
    params = jax.tree_util.tree_map(lambda a: E(a) if a.ndim == 1 and a.shape[0] % 4 == 0
                                    else a, m.params)
    job = os.path.join(tempfile.mkdtemp(), "maps.npy")
    cases = {
        "maps": lambda: jaxsal.deletion(m, xn, E(maps), ids),
        "fill": lambda: jaxsal.deletion(m, xn, maps, ids, fill=E(xn * 0)),
        "baseline": lambda: jaxsal.insertion(m, xn, maps, ids, baseline=E(xn * 0)),
        "fill/occlusion": lambda: jaxsal.occlusion(m, xn, 1, patch=7, fill=E(xn * 0)),
        "baseline/integrated_gradients": lambda: jaxsal.integrated_gradients(
            m, xn, 1, baseline=E(xn * 0), steps=2),
        "baseline/deeplift": lambda: jaxsal.deeplift(m, xn, 1, baseline=E(xn * 0)),
        "baselines": lambda: jaxsal.gradient_shap(m, xn, 1, baselines=E(xn[:4] * 0), key=0,
                                                  n=2),
        "baselines/deeplift_shap": lambda: jaxsal.deeplift_shap(m, xn, 1,
                                                                baselines=E(xn[:4] * 0)),
        "maps/infidelity": lambda: jaxsal.infidelity(m, xn, E(maps), ids, key=0, n=2),
        "feature_mask": lambda: jaxsal.kernel_shap(m, xn, 1, feature_mask=E(mask), key=0, n=4),
        "segments": lambda: jaxsal.xrai(m, xn[:4], 1, segments=E(np.ones((4, 2, 28, 28), bool)),
                                        steps=2),
        "maps/xrai_regions": lambda: jaxsal.xrai_regions(E(maps[:4, 0]),
                                                         np.ones((4, 2, 28, 28), bool)),
        "seed_images": lambda: jaxsal.maximize(m, [1, 2, 3, 4], steps=2, key=0,
                                               seed_images=E(np.zeros((4, 28, 28, 1)))),
        "direction": lambda: jaxsal.direction_objective("conv2d_1", E(np.ones(32))),
        "targets": lambda: jaxsal.saliency(m, xn, E(ids)),
        "targets/jit": lambda: jax.jit(lambda t: jaxsal.gradcam(m, xn, t))(E(ids)),
        "fill/jit": lambda: jax.jit(lambda f: jaxsal.rise(m, xn, 1, key=0, n=4, fill=f))(
            E(xn * 0)),
        "params": lambda: jaxsal.saliency(jaxsal.FunctionModel(m.apply, params), xn, 1),
        "baseline/explain_to_file": lambda: jaxsal.explain_to_file(
            jaxsal.integrated_gradients, m, xn, job, targets=1, batch_size=4,
            baseline=E(xn * 0), steps=2),
    }
    return outcomes(cases)
if typed_meshes:
    attempt("explicit_arguments", explicit_arguments)
def plan_meshes():
    from jax.sharding import AxisType
    ex = jax.make_mesh((4,), ("e",), axis_types=(AxisType.Explicit,))
    xn = np.asarray(x)
    with jax.set_mesh(mesh):
        first = jaxsal.saliency(m, xn, [0, 4])
    with jax.set_mesh(ex):
        second = jaxsal.saliency(m, xn, [0, 4])
    want = jaxsal.saliency(m, xn, [0, 4])
    return {"auto": rel(first, want), "explicit": rel(second, want)}
if typed_meshes:
    attempt("plan_meshes", plan_meshes)
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


@needs_shard_map
@pytest.mark.parametrize("name", [
    "saliency", "saliency_chunked", "guided_backprop", "gradcam", "layercam", "occlusion",
    "fullgrad", "neuron_conductance", "integrated_gradients_loop", "smoothgrad", "rise",
    "smoothgrad_passes", "deeplift_passes", "guided_integrated_gradients", "xrai_segments",
    "xrai_regions", "xrai_regions_fast", "lrp_zbox", "lrp_composite_zbox"])
def test_shard_map_gives_the_maps_of_one_device(results, name):
    """Under ``jax.shard_map`` (its default ``check_vma=True``) each device explains its own
    rows. The gradient methods were refused (a one-hot cotangent without the scores' mesh
    axes: "expected float32[2,3]{V:data}"), occlusion's and the sampled methods' loops too (a
    carry of zeros that vary over no axis; classes in chunks, ``chunk_size=1``, too), as were Guided
    IG's path loop (its flag and starting point; its one-hot cotangent), XRAI's region selection
    (``xrai`` with ``segments=``, ``xrai_regions``, both algorithms: its masks and gains) and
    ``lrp_zbox`` (its bounds, also as ``lrp_composite``'s first rule), and Grad-CAM, LayerCAM and
    FullGrad gave maps 4 times too large, silently: a perturbation built as plain zeros had its
    gradient summed over the devices. ``index_offset`` from ``jax.lax.axis_index`` keys the random
    methods' draws by the global index, so their rows equal one call too."""
    r = _ok(results, "shard_map/" + name)
    assert r["rel"] < 1e-5, f"{name}: {r['rel']:.2e} of the one-device maps' largest value"


@needs_shard_map
def test_split_batch_sees_the_mesh_but_not_shard_maps_axes(results):
    """``base.mesh_devices``: inside ``jax.shard_map`` a method holds one device's rows (its
    axis ``Manual``), and a budget's passes are not made multiples of the mesh's 4 devices
    there; under one program over the sharded batch it sees the 4."""
    assert _ok(results, "mesh_devices") == {"shard_map": 1, "jit": 4}


@pytest.mark.parametrize("name", [
    "saliency", "gradcam", "scorecam", "shapley_value_sampling", "user_jit_smoothgrad",
    "maximize", "xrai"])
def test_inputs_sharded_over_the_batch_give_the_maps_of_one_device(results, name):
    """A method called as usual on inputs sharded over the batch (the caller's jit with
    in/out shardings too) gives one device's maps, on the 4 devices. The methods with a
    case in :func:`test_each_device_does_a_quarter_of_the_work` are checked there the same
    way (their maps and devices), under ``jax.jit`` of the call."""
    r = _ok(results, "sharded/" + name)
    assert r["rel"] < 1e-5, f"{name}: {r['rel']:.2e}"
    assert r["devices"] == 4  # the maps stay on the mesh
    # sharded over the batch as the inputs, not replicated (XRAI's were: every device then
    # selected the regions of the whole batch)
    assert r["spec"][:1] == ["data"], f"{name}: maps sharded {r['spec']}"


def test_explain_to_file_places_each_chunk_with_the_sharding_given(results):
    r = _ok(results, "explain_to_file")
    assert r["rel"] == 0 and r["rel_small"] == 0  # the file of one device
    # chunks of 4 rows (the last, 2 rows, padded), and 3 inputs padded to 4, all split
    assert r["seen"] == [[["data"], 4]] * 3, r["seen"]
    assert r["small_shape"] == [3, 28, 28]
    assert "multiple of the device count" in r["refused"] and "batch_size=6" in r["refused"]
    # another axis split unevenly: named, with its size; no batch size fixes it (each was
    # refused as a batch_size that is not a multiple of the device count)
    other = r["other_refusals"]
    for what, axis, size, parts in (("rows", 1, 28, 3), ("channels", 3, 1, 4)):
        msg = other[what]
        assert msg.startswith(f"sharding= splits axis {axis} of each chunk (size {size}) into "
                              f"{parts} shards"), (what, msg)
        assert "no batch_size can fix that" in msg and "expected batch_size" not in msg, msg
    # an Explicit mesh axis: sharding= named (it said "x is sharded", of NumPy inputs)
    if "explicit" in other:
        msg = other["explicit"]
        assert msg.startswith("sharding= splits each chunk over Explicit mesh axes ('e',)"), msg
        assert "AxisType.Auto" in msg and "Refused before" not in msg, msg


def test_the_command_line_splits_each_chunk_over_the_devices(results):
    """``jaxsal explain`` / ``evaluate --devices N|all``: each chunk's batch axis split over a
    1-D mesh of the first N (or all) local devices, the file that of one device (SmoothGrad's
    noise keyed by each input's global index); a ``--batch-size`` that does not split into
    whole shards, more devices than the machine has and a count that is not one are refused
    before any work, naming the flag and what to pass; without ``--batch-size`` the default
    is made a multiple of the device count (``--devices 3`` runs)."""
    r = _ok(results, "command_line")
    assert r["rcs"] == [0] * 4, r["rcs"]
    assert r["seen"] == [None, [4, ["batch"]], None, [4, ["batch"]], [3, ["batch"]]]
    assert r["all"] == 0, r["all"]
    # without --batch-size, 3 devices run: the default (64) rounded down to a multiple (63)
    assert r["three_run"][0] == 0 and r["three"] == 0, r["three_run"]
    assert r["deletion"] < 1e-6 and r["areas"] < 1e-6, (r["deletion"], r["areas"])
    refused = r["refused"]
    assert refused["batch"][0] == 2 and "--batch-size 6 does not split over --devices all" \
        in refused["batch"][1] and "pass e.g. --batch-size 8" in refused["batch"][1]
    assert refused["many"][0] == 2 and "--devices 5: this machine has 4 CPU devices" \
        in refused["many"][1]
    for what in ("zero", "word"):
        assert refused[what][0] == 2 and "expected 'all' or a positive int" \
            in refused[what][1], refused[what]
    assert not r["bad_written"]


@pytest.mark.parametrize("name", [
    "saliency", "gradcam", "smoothgrad", "integrated_gradients", "rise", "occlusion",
    "gradient_shap", "kernel_shap", "saliency_passes", "smoothgrad_passes", "deeplift",
    "deeplift_shap", "layer_conductance", "blur_integrated_gradients",
    "guided_integrated_gradients", "infidelity", "deletion", "insertion",
    pytest.param("saliency_passes_of_6", marks=needs_typeof)])
def test_each_device_does_a_quarter_of_the_work(results, name):
    """Inputs sharded over 4 devices: each device's program does about a quarter of the
    one-device program's floating-point operations (XLA's cost analysis of the compiled
    programs). SmoothGrad's noisy copies, the path points of integrated gradients and
    GradientSHAP, the masked inputs of RISE, occlusion and KernelSHAP (LIME's and the Shapley
    methods' too) were stacked sample-major, ``(S N, ...)``: XLA gathered the batch and every
    device ran every pass (ratio 0.95-1.00). Under a memory budget (``*_passes``: 2 passes of
    4 inputs) the passes took contiguous rows, each needing two devices' inputs: 0.50; they
    take rows strided through the batch (``base.split_batch``), each device's own. Passes of
    6 of 12 inputs, which 4 devices do not split evenly, were split two ways (0.50); on a
    mesh the passes hold a multiple of its devices, 3 passes of 4 (XLA's count is of one
    pass of the loop: 1 input against the one-device program's 6, 0.17; a quarter of the
    inputs in all).
    DeepLIFT's input and reference halves (0.37), DeepLIFT-SHAP's, layer conductance's,
    Blur IG's and Guided IG's copies, infidelity's perturbed and the deletion and insertion
    curves' masked inputs (0.84-1.00) were stacked copy-major too; Guided IG's one target
    was already split, its two targets (rows target-major) were not. The maps, on the 4
    devices, are those of one device."""
    r = _ok(results, "flops/" + name)
    assert r["ratio"] < 0.3, f"{name}: each device does {r['ratio']:.2f} of the work"
    # (KernelSHAP's least-squares solve rounds otherwise in the split program: README)
    # (infidelity's squared differences of scores: 1.3e-5 with jax 0.4.38, 4.3e-5 with 0.12.1)
    tol = 5e-4 if name == "kernel_shap" else 1e-4 if name == "infidelity" else 1e-5
    assert r["rel"] < tol, f"{name}: {r['rel']:.2e} of the one-device maps' largest value"
    assert r["devices"] == 4


@needs_shard_map
def test_the_readme_recipe_runs_as_written(results):
    r = _ok(results, "readme")
    assert r["rel"] < 1e-5 and r["spec"] == ["data"]
    assert r["rise"] < 1e-5


needs_typed_meshes = pytest.mark.skipif(
    not (hasattr(jax.sharding, "AxisType") and hasattr(jax, "set_mesh")),
    reason="this JAX release has no Explicit mesh axes")


@needs_typed_meshes
def test_inputs_sharded_over_explicit_axes_are_refused(results):
    """Inputs sharded over an ``Explicit`` mesh axis crashed deep inside the methods (JAX's
    ShardingTypeErrors: a class chunk's ``dynamic_update_slice``, the importer's
    ``MaxPooling2D`` reshape); they are refused at the entry, eager (the plan of the same
    call made on Auto axes too) and under the caller's ``jax.jit``, naming the axis and the
    fixes."""
    r = _ok(results, "explicit")
    for where in ("eager", "jit", "job"):  # (a batch job sliced them first, where JAX raised)
        msg = r[where]
        x = "inputs" if where == "job" else "x"
        assert msg.startswith(f"ValueError: {x} is sharded over Explicit mesh axes ('e',)"), msg
        assert "AxisType.Auto" in msg and "jax.shard_map" in msg and "device_put" in msg, msg


@needs_typed_meshes
def test_every_array_argument_sharded_over_explicit_axes_is_refused(results):
    """Only ``x`` was refused on ``Explicit`` mesh axes: every other array argument sharded
    over them (a ``fill``, a ``baseline``, evaluation ``maps``, ``baselines``, a
    ``feature_mask``, ``segments``, ``seed_images``, targets given as an array, eager or under
    the caller's ``jax.jit``, a model's ``params``, an ``explain_to_file`` option) crashed
    deep inside with JAX's sharding errors (an imported ``MaxPooling2D``'s reshape, a gather,
    maximize's vmap over the units). Each is refused where it is checked, naming it, with the
    fixes given for ``x``."""
    r = _ok(results, "explicit_arguments")
    assert len(r) == 19, sorted(r)
    for case, msg in r.items():
        arg = case.split("/")[0]
        if arg == "params":
            arg = "params["  # (the leaf named: params['conv2d_1']['bias'])
        assert msg.startswith(f"ValueError: {arg}") and " is sharded over Explicit mesh axes " \
            "('e',)" in msg, (case, msg)
        assert "AxisType.Auto" in msg and "jax.shard_map" in msg and "device_put" in msg, msg


@needs_typed_meshes
def test_a_plan_is_not_reused_under_another_mesh(results):
    """A call's plan (its targets' ids placed as the mesh in context then typed them) was
    kept by the call's static description alone: made under an Auto mesh, it was reused
    under an Explicit one for the same NumPy inputs and failed there ("context mesh ...
    should match the aval mesh"). The plan's key holds the abstract mesh in context."""
    r = _ok(results, "plan_meshes")
    assert r["auto"] < 1e-6 and r["explicit"] < 1e-6, r
