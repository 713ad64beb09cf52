"""One-off (issue 6): ``jaxsal explain`` with glibc's default allocator settings and with
the suite's ``tuned`` setting (``GLIBC_TUNABLES``, keeping freed memory in the heap: no page
faults for a buffer allocated again), the same job in fresh processes, run alternately.
Does the setting that speeds up repeated calls in one process help a CLI batch job?

The jobs: the bundled MNIST model (``jaxsal/data``), 1024 inputs (the bundled 10 digits
repeated, ``--batch-size 64``), saliency of the predicted class and of all 10 classes; and
the suite's MobileNetV2 (``benchmarks/.cache/mobilenetv2_96.h5``, alpha 0.35, 96x96, 10
classes, ``weights=None``; ``python -m benchmarks.models mobilenetv2_96`` builds it), 256
random images, ``--batch-size 16``, all 10 classes. Wall time of the whole command
(interpreter start, model load, compilation, the batches, the output file), and the
process's minor page faults (``ru_minflt`` of the child).

    python -m benchmarks.oneoff.cli_allocator
"""

import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks.run import MALLOC
from jaxsal import cli

ROUNDS = 3


def main():
    digits = np.load(cli._data_path("mnist_digits.npz"))["x"]
    mnist = cli._data_path("mnist_cnn_keras3.keras")
    mobilenet = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             ".cache", "mobilenetv2_96.h5")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES')!r}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        def maps(*parts):  # each job's own output: explain resumes an existing file
            return os.path.join(tmp, "maps_" + "_".join(map(str, parts)) + ".npy")

        x_mnist, x_mobilenet = os.path.join(tmp, "mnist.npy"), os.path.join(tmp, "mnv2.npy")
        np.save(x_mnist, np.concatenate([digits] * 103)[:1024])
        np.save(x_mobilenet, np.random.default_rng(0).uniform(
            -1, 1, (256, 96, 96, 3)).astype(np.float32))
        jobs = [("mnist", mnist, x_mnist, "predicted", 64), ("mnist", mnist, x_mnist, "all", 64),
                ("mobilenetv2", mobilenet, x_mobilenet, "all", 16)]
        for name, model, x, targets, batch in jobs:
            times: dict = {"default": [], "tuned": []}
            for r in range(ROUNDS):
                for mode in times:
                    out = maps(name, targets, mode, r)
                    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
                    t0 = time.perf_counter()
                    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
                    env.update(MALLOC[mode])
                    subprocess.run([sys.executable, "-m", "jaxsal.cli", "explain", model, x,
                                    "--method", "saliency", "--targets", targets,
                                    "--batch-size", str(batch), "--out", out],
                                   check=True, capture_output=True, env=env)
                    wall = time.perf_counter() - t0
                    faults = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - before
                    times[mode].append((wall, faults))
            same = np.array_equal(np.load(maps(name, targets, "default", 0)),
                                  np.load(maps(name, targets, "tuned", 0)))
            for mode, runs in times.items():
                print(f"{name}, --targets {targets}, {mode} allocator {MALLOC[mode]}: wall "
                      + ", ".join(f"{w:.2f}" for w, _ in runs) + " s; minor page faults "
                      + ", ".join(f"{f}" for _, f in runs), flush=True)
            print(f"  maps identical between the two: {same}", flush=True)


if __name__ == "__main__":
    main()
