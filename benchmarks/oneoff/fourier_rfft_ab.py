"""A/B timing of ``fourier()`` before (the real part of a full complex FFT, the module as of
commit 8194fd6, read with ``git show``) and after (rfft2 / irfft2), in ONE process, the two
compiled programs run alternately (A B A B ...) so that a shared machine's changing load falls
on both alike. ``python benchmarks/oneoff/fourier_rfft_ab.py SIZE [ROUNDS]``: a small conv
model (8 units x 50 steps of a SIZE x SIZE x 3 image, ``fourier()``, no transforms or
regularizers, compiled ahead of time) and the parameterization's own share of a step (the
gradient of ``to_image`` for the 8 images); prints one JSON line of medians, in seconds and
milliseconds."""

import importlib.util
import json
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxsal
from jaxsal._src.maximize import maximize_program

BEFORE = "8194fd6"


def _old_fourier() -> jaxsal.Parameterization:
    src = subprocess.run(["git", "show", f"{BEFORE}:jaxsal/_src/parameterization.py"],
                         capture_output=True, text=True, check=True).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location("_old_parameterization", f.name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return jaxsal.Parameterization(*mod.fourier())


def main(size: int, rounds: int) -> None:
    rs = np.random.RandomState(0)
    params = {"k": jnp.asarray(rs.normal(0, 0.3, (3, 3, 3, 8)), jnp.float32),
              "w": jnp.asarray(rs.normal(0, 0.3, (8, 8)), jnp.float32)}

    def fn(p, x):
        y = jax.nn.relu(jax.lax.conv_general_dilated(
            x, p["k"], (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
        return y.mean(axis=(1, 2)) @ p["w"]

    model = jaxsal.FunctionModel(fn, params, input_shape=(size, size, 3))
    r = (0.0, 1.0)
    progs, grads, nvars = {}, {}, {}
    for name, par in (("full_fft", _old_fourier()), ("rfft", jaxsal.fourier())):
        run_fn, args = maximize_program(model, list(range(8)), steps=50, key=0,
                                        parameterization=par, transforms=jaxsal.identity(),
                                        regularizers=())
        compiled = run_fn.lower(*args).compile()
        jax.block_until_ready(compiled(*args))
        progs[name] = (compiled, args)
        p0 = jax.vmap(lambda k, par=par: par.init(k, (size, size, 3), r))(
            jax.random.split(jax.random.key(0), 8))
        g = jax.jit(jax.vmap(jax.grad(lambda p, par=par: jnp.sum(par.to_image(p, r) ** 2))))
        jax.block_until_ready(g(p0))
        grads[name] = (g, p0)
        nvars[name] = sum(int(np.prod(v.shape)) // 8 for v in jax.tree_util.tree_leaves(p0))
    runs = {n: [] for n in progs}
    pgrad = {n: [] for n in progs}
    for _ in range(rounds):
        for name in progs:
            compiled, args = progs[name]
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            runs[name].append(time.perf_counter() - t0)
            g, p0 = grads[name]
            t0 = time.perf_counter()
            for _ in range(10):
                out = g(p0)
            jax.block_until_ready(out)
            pgrad[name].append((time.perf_counter() - t0) / 10)
    out = {"size": size, "rounds": rounds}
    for name in progs:
        out[name] = {"variables_per_image": nvars[name],
                     "run_s_median": round(float(np.median(runs[name])), 4),
                     "step_ms_median": round(1e3 * float(np.median(runs[name])) / 50, 2),
                     "param_grad_ms_median": round(1e3 * float(np.median(pgrad[name])), 2)}
    ratio = np.asarray(runs["rfft"]) / np.asarray(runs["full_fft"])
    pratio = np.asarray(pgrad["rfft"]) / np.asarray(pgrad["full_fft"])
    out["paired_ratio_run_median"] = round(float(np.median(ratio)), 3)
    out["paired_ratio_param_grad_median"] = round(float(np.median(pratio)), 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 9)
