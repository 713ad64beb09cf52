"""One-off (issue 6): the spread of the MNIST top-1 saliency's call time, in one process.

The suite times 5 calls after one warm-up per worker; on the 2-core VM single calls of this
~25 ms program vary by up to 2x. Here: 60 calls after 5 warm-ups, percentiles, in each of
``RUNS`` fresh processes (the suite's model, inputs and call: ``jaxsal.saliency(model, x)``,
64 images, each image's predicted class).

    python -m benchmarks.oneoff.mnist_top1_spread
"""

import os
import subprocess
import sys

RUNS = 3


def suite_inputs(wid: str = "mnist/saliency top1 b64"):
    """``(model, x)`` of the CPU suite's workload ``wid``: its model with the logits head and
    its inputs on the device."""
    import jax.numpy as jnp

    from benchmarks import data, models, suites

    spec = suites.workload(wid)
    return (models.logits_model(models.build(spec["model"])),
            jnp.asarray(data.inputs(spec, spec["batch"])))


def suite_call():
    """The suite's call, ready: ``jaxsal.saliency(model, x)`` on its 64 MNIST images."""
    import jax

    import jaxsal

    model, x = suite_inputs()
    return lambda: jax.block_until_ready(jaxsal.saliency(model, x))


def one() -> None:
    import numpy as np

    from benchmarks.oneoff.gpu_chunks import interleaved_ms

    ts = interleaved_ms({"call": suite_call()}, 5, 60)["call"]
    q = np.percentile(ts, [0, 10, 50, 90, 100])
    print("60 calls, ms at percentiles 0/10/50/90/100: "
          + " / ".join(f"{v:.1f}" for v in q), flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--one"]:
        one()
    else:
        print(f"loadavg {os.getloadavg()[0]:.2f}", flush=True)
        for _ in range(RUNS):
            subprocess.run([sys.executable, "-m", "benchmarks.oneoff.mnist_top1_spread",
                            "--one"], check=True)
