"""One-off (issue 6): jaxsal against the naive version on the CPU suite's MobileNetV2
Grad-CAM (``Conv_1``, 10 classes, 16 images), in one process, calls interleaved.

The suite times each side in its own process, 5 calls after one warm-up; for a program of
about 10 ms that is at the mercy of the VM (the complete run of 2026-12-05 had jaxsal at
0.47x / 0.61x, the Grad-CAM-only run of 2026-12-04 at 1.18-1.36x). Here: both built as the
suite builds them, 5 warm-up calls each, then 100 rounds of one call each, percentiles, in
``RUNS`` fresh processes.

    python -m benchmarks.oneoff.gradcam_mnv2_ab
"""

import subprocess
import sys

RUNS = 2


def one() -> None:
    import numpy as np

    from benchmarks import side_jaxsal, suites
    from benchmarks.oneoff.gpu_chunks import interleaved_ms

    spec = suites.workload("mobilenetv2/gradcam Conv_1 10cls b16")
    cases = {"jaxsal": side_jaxsal.build(spec), "naive": side_jaxsal.build_naive(spec)}
    ts = interleaved_ms({k: c.run for k, c in cases.items()}, 5, 100)
    med = {k: float(np.median(v)) for k, v in ts.items()}
    for k, v in ts.items():
        print(f"{k}: ms at percentiles 0/10/50/90: "
              + " / ".join(f"{q:.1f}" for q in np.percentile(v, [0, 10, 50, 90])), flush=True)
    print(f"naive / jaxsal (medians): {med['naive'] / med['jaxsal']:.2f}", flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--one"]:
        one()
    else:
        for _ in range(RUNS):
            subprocess.run([sys.executable, "-m", "benchmarks.oneoff.gradcam_mnv2_ab", "--one"],
                           check=True)
