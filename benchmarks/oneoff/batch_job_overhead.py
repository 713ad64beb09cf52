"""One-off (issue 6): what a batch job (``jaxsal.explain_to_file``) costs over a plain loop.

A job does per chunk what a loop of calls does not: it hashes the chunk's inputs (to tell a
changed input on resume), checks them and the maps for NaN/inf, writes the rows into the
memory-mapped ``.npy`` and syncs them (``msync``), and replaces its progress file with one
synced first (``fsync`` of the file and of its folder). Here, on the MNIST model with 4,096
real digits read memory-mapped from a ``.npy``: the wall time of a whole fresh job against a
loop that calls the same method on the same chunks and copies the maps into a preallocated
array (both after a warm-up that compiled the program), alternating, medians of the rounds;
then the median time of each of the job's own steps over the chunks of one job.

    python -m benchmarks.oneoff.batch_job_overhead
"""

import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "numpy")

import jax  # noqa: E402
import numpy as np  # noqa: E402

import jaxsal  # noqa: E402
from benchmarks import models  # noqa: E402
from jaxsal._src import batch, job_files  # noqa: E402
from jaxsal._src.finite import non_finite_rows  # noqa: E402

N, ROUNDS = 4096, 5
CASES = {  # label: (method, targets)
    "saliency top-1": (jaxsal.saliency, None),
    "saliency 10 classes": (jaxsal.saliency, list(range(10))),
}


def _loop(method, m, x, targets, b):
    out = None
    for lo in range(0, len(x), b):
        maps = np.asarray(method(m, np.asarray(x[lo:lo + b]), targets))
        if out is None:
            out = np.empty((len(x), *maps.shape[1:]), maps.dtype)
        out[lo:lo + b] = maps
    return out


def _job(method, m, x, targets, b, path):
    for f in (path, path + ".progress.json"):
        if os.path.exists(f):
            os.remove(f)
    return jaxsal.explain_to_file(method, m, x, path, targets=targets, batch_size=b)


def _steps(x, b, maps, folder):
    """Median ms per chunk of the job's own steps, on the chunks of ``x``."""
    out = np.lib.format.open_memmap(os.path.join(folder, "steps.npy"), mode="w+",
                                    dtype=maps.dtype, shape=maps.shape)
    record = {"done": [], "inputs": {}}
    times = {"hash inputs": [], "NaN check of inputs": [], "NaN check of maps": [],
             "write + msync rows": [], "replace progress file (fsyncs)": []}
    for c, lo in enumerate(range(0, len(x), b)):
        parts = [np.asarray(x[lo:lo + b])]
        rows = maps[lo:lo + b]
        for name, step in (
                ("hash inputs", lambda: batch._chunk_digest(parts)),
                ("NaN check of inputs", lambda: non_finite_rows(parts)),
                ("NaN check of maps", lambda: batch._non_finite_maps({"m": rows}, lo)),
                ("write + msync rows", lambda: batch._write(out, lo, lo + b, rows)),
                ("replace progress file (fsyncs)", lambda: job_files._replace_json(
                    os.path.join(folder, "steps.npy.progress.json"), record))):
            t0 = time.perf_counter()
            value = step()
            times[name].append(time.perf_counter() - t0)
            if name == "hash inputs":
                record["done"].append(c)
                record["inputs"][str(c)] = value
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def main(argv):
    m = models.logits_model(models.MNIST)
    digits = np.load(models.MNIST_DATA)["x"][:N].astype(np.float32)
    digits = digits.reshape(N, 28, 28, 1) / (255.0 if digits.max() > 1 else 1.0)
    print("device", jax.devices()[0], "jax", jax.__version__, f"MNIST, {N} digits "
          f"memory-mapped, {ROUNDS} alternating rounds", flush=True)
    with tempfile.TemporaryDirectory(dir=os.getcwd()) as folder:
        np.save(os.path.join(folder, "x.npy"), digits.astype(np.float32))
        x = np.load(os.path.join(folder, "x.npy"), mmap_mode="r")
        path = os.path.join(folder, "maps.npy")
        for label, (method, targets) in CASES.items():
            for b in (64, 256):
                chunks = N // b
                warm = _loop(method, m, x, targets, b)  # compiles the chunk's program
                np.testing.assert_allclose(np.asarray(_job(method, m, x, targets, b, path)),
                                           warm, rtol=1e-6, atol=1e-7)
                loop, job = [], []
                for _ in range(ROUNDS):
                    t0 = time.perf_counter()
                    _loop(method, m, x, targets, b)
                    loop.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    _job(method, m, x, targets, b, path)
                    job.append(time.perf_counter() - t0)
                lm, jm = statistics.median(loop), statistics.median(job)
                print(f"{label}, batch {b} ({chunks} chunks): loop {1e3 * lm:.0f} ms "
                      f"(min {1e3 * min(loop):.0f}, max {1e3 * max(loop):.0f}), job "
                      f"{1e3 * jm:.0f} ms (min {1e3 * min(job):.0f}, max {1e3 * max(job):.0f})"
                      f"; job / loop {jm / lm:.3f}, {1e3 * (jm - lm) / chunks:.2f} ms per "
                      "chunk over the loop", flush=True)
                steps = _steps(x, b, warm, folder)
                print("  the job's steps, median ms per chunk: " + ", ".join(
                    f"{k} {v:.3f}" for k, v in steps.items()), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
