"""One-off GPU experiment (issue 6): is jaxsal's 10-class saliency on VGG16 (224x224, batch
64) slower than the naive JAX version because it splits the targets into chunks under its
memory budget? Times the same call with the default budget, with a budget large enough for
one chunk, and with chunk_size=10; prints the plan and the medians (5 calls after a
warm-up). Run on the GPU machine after `python -m benchmarks.models vgg16_224`:

    python -m benchmarks.oneoff.gpu_chunks
"""

import statistics
import time

import jax
import numpy as np

import jaxsal
from benchmarks import models


def interleaved_ms(calls: dict, warmup: int = 1, rounds: int = 5) -> dict:
    """Wall milliseconds of each call of ``calls`` (name -> function), each waited for:
    ``warmup`` untimed calls of each (the first compiles), then ``rounds`` rounds of one
    call of each in turn (a slower stretch of a shared VM hits all of them alike)."""
    for fn in calls.values():
        for _ in range(warmup):
            jax.block_until_ready(fn())
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(1e3 * (time.perf_counter() - t0))
    return times


def median_ms(fn, reps=5):
    """Median wall milliseconds of ``reps`` calls of ``fn`` after one warm-up call."""
    return statistics.median(interleaved_ms({"fn": fn}, 1, reps)["fn"])


def main():
    spec = {"name": "vgg16", "size": 224}
    m = models.logits_model(models.build(spec))
    x = np.random.default_rng(0).uniform(0, 255, (64, 224, 224, 3)).astype(np.float32)
    print("device", jax.devices()[0], "default budget", jaxsal.DEFAULT_MEMORY_BUDGET)
    classes = list(range(10))
    for label, kw in (("default budget", {}), ("budget 100 GB", {"memory_budget": 100e9}),
                      ("chunk_size=10", {"chunk_size": 10})):
        t = median_ms(lambda kw=kw: jaxsal.saliency(m, x, classes, **kw))
        print(f"saliency 10 classes b64, {label}: {t:.1f} ms", flush=True)
    t = median_ms(lambda: jaxsal.saliency(m, x, 0))
    print(f"saliency top-1 b64: {t:.1f} ms", flush=True)


if __name__ == "__main__":
    main()
