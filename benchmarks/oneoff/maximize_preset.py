"""One-off (issue 6): what ``jaxsal.maximize``'s default options cost per step against the
PyTorch loop's objective (``bench_maximize.presets()["adam-roll"]``: no regularizer, a
wrap-around shift of up to 4 pixels, Adam on clipped pixels), the same model, units and
steps, each program compiled ahead of time; medians of ``REPS`` calls, alternating.

The first GPU run timed jaxsal's defaults against the plain loop (class maximization 1.14x,
1346 vs 1530 ms); the suite now runs the preset on both sides and the defaults as a row of
their own.

    python -m benchmarks.oneoff.maximize_preset [vgg16_224]   # default: VGG16 32x32 and MNIST
"""

import os
import statistics
import sys

os.environ.setdefault("KERAS_BACKEND", "numpy")

import jax  # noqa: E402

from benchmarks import bench_maximize  # noqa: E402
from benchmarks.oneoff.gpu_chunks import interleaved_ms  # noqa: E402

CASES = {  # name: (model spec, units, steps, repetitions)
    "mnist": ({"name": "mnist"}, 10, 200, 5),
    "vgg16_32": ({"name": "vgg16", "size": 32}, 10, 64, 3),
    "vgg16_224": ({"name": "vgg16", "size": 224}, 10, 256, 5),
}


def main(argv):
    names = argv or ["mnist", "vgg16_32"]
    print("device", jax.devices()[0], "jax", jax.__version__, flush=True)
    for name in names:
        model, units, steps, reps = CASES[name]
        spec = {"id": name, "model": model, "method": "maximize", "batch": None,
                "targets": units, "steps": steps}
        cases = {"defaults": bench_maximize.case(spec),
                 "adam-roll": bench_maximize.case(dict(spec, preset="adam-roll"))}
        times = interleaved_ms({k: c.run for k, c in cases.items()}, 1, reps)
        med = {k: statistics.median(v) for k, v in times.items()}
        for k in cases:
            print(f"{name} {units} units x {steps} steps, {k}: {med[k]:.1f} ms "
                  f"({med[k] / steps:.2f} ms per step; {reps} calls "
                  f"{', '.join(f'{t:.0f}' for t in times[k])})", flush=True)
        print(f"{name}: defaults / adam-roll = {med['defaults'] / med['adam-roll']:.2f}",
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
