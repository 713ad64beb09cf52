"""One-off (issue 6): where the MNIST top-1 saliency's time goes on XLA:CPU.

``jax.profiler.trace`` around 10 calls of the suite's call (``jaxsal.saliency(model, x)``, 64
images), host events summed per name and divided by the calls: the named ones are XLA's
fusions and the YNNPACK fusions (the dense layers, the first layer's patches), run on the
executor's threads; Eigen's convolutions run on its own pool, whose work the trace does not
name, so what the call waits for beyond the named fusions is theirs (the forward and the
input gradient of ``conv2d_2``, 1.36 GFLOP each). Median of 30 calls first, for scale.

    python -m benchmarks.oneoff.mnist_top1_profile
"""

import collections
import glob
import os
import statistics
import tempfile

import jax

from benchmarks.oneoff.gpu_chunks import interleaved_ms
from benchmarks.oneoff.mnist_top1_spread import suite_call

CALLS = 10


def main():
    from jax.profiler import ProfileData

    call = suite_call()
    times = interleaved_ms({"call": call}, 5, 30)["call"]
    print(f"median of 30 calls {statistics.median(times):.1f} ms", flush=True)
    tmp = tempfile.mkdtemp()
    with jax.profiler.trace(tmp):
        for _ in range(CALLS):
            call()
    path = glob.glob(os.path.join(tmp, "**", "*.xplane.pb"), recursive=True)[0]
    events = collections.Counter()
    for plane in ProfileData.from_file(path).planes:
        for line in plane.lines:
            for ev in line.events:
                events[ev.name] += ev.duration_ns
    wait = events["ThunkExecutor::Execute (wait for completion)"] / CALLS / 1e6
    fusions = {k: v / CALLS / 1e6 for k, v in events.items()
               if not k.startswith(("$", "ThunkExecutor", "end:", "Thread", "Slinky", "Common",
                                    "Pjit", "np.", "Handle", "Parse", "Allocate", "Wait",
                                    "Python", "TfrtCpu", "PjRt"))}
    named = sum(fusions.values())
    print(f"per call: the program {wait:.1f} ms (the host's wait for completion); named "
          f"fusions and kernels {named:.1f} ms (summed over threads); the rest, Eigen's "
          f"convolutions, about {wait - named:.1f} ms")
    for k, v in sorted(fusions.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {v:6.2f} ms  {k}")


if __name__ == "__main__":
    main()
