"""One-off (issue 6): the host time of a jaxsal call, apart from its device work.

JAX dispatches asynchronously, so the time until a call *returns* (its result not waited
for) is the host's: validation, planning, the input's NaN check (a small program whose
answer the host waits for) and the dispatch of the compiled program. Medians over 100 calls,
each after the previous result is ready, of: the call with its plan (``jaxsal._src.plans``,
the steady state), the call with the plans forgotten before each call (the full path:
validation and planning every time), the compiled program alone (what the naive version
pays) and the input check alone. VGG16 (weights=None) at 32x32, one image (the host time
hardly depends on the input's size, the device time does; ``vgg16_224`` as an argument for
224x224), after ``python -m benchmarks.models vgg16_32``:

    python -m benchmarks.oneoff.host_overhead [vgg16_224]
"""

import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "numpy")

import jax  # noqa: E402
import numpy as np  # noqa: E402

import jaxsal  # noqa: E402
from benchmarks import models, side_jaxsal  # noqa: E402
from jaxsal._src import plans, validate  # noqa: E402


def returns_ms(fn, reps=100, before=None):
    """Median ms until ``fn()`` returns; its result is waited for outside the timing."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(reps):
        if before is not None:
            before()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        jax.block_until_ready(out)
    return 1e3 * statistics.median(times)


def main(argv):
    size = 224 if argv[:1] == ["vgg16_224"] else 32
    m = models.logits_model(models.build({"name": "vgg16", "size": size}))
    x = jax.device_put(np.random.default_rng(0).uniform(0, 1, (1, size, size, 3))
                       .astype(np.float32))
    print("device", jax.devices()[0], "jax", jax.__version__, f"VGG16 {size}x{size}, 1 image",
          flush=True)
    calls = {"saliency top-1": lambda: jaxsal.saliency(m, x),
             "saliency 10 classes": lambda: jaxsal.saliency(m, x, list(range(10))),
             "gradcam 10 classes": lambda: jaxsal.gradcam(m, x, list(range(10)),
                                                          layer="block5_conv3")}
    for label, call in calls.items():
        full = returns_ms(call, before=plans.PLANS.clear)
        planned = returns_ms(call)
        plan = side_jaxsal.last_plan()[1]  # this call's, the one used last
        program = returns_ms(lambda: plan.fn(m.params, x, plan.ids))
        check = returns_ms(lambda: validate.check_input(m, x, **plan.check))
        print(f"{label}: call with its plan {planned:.3f} ms, full path {full:.3f} ms, "
              f"compiled program alone {program:.3f} ms, input check alone {check:.3f} ms",
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
