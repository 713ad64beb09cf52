"""Shared test configuration: CPU-only JAX, the Keras backend for differential tests, fixtures.

The differential tests' reference is real Keras 3 on its NumPy backend (its reference
implementation of every op) unless ``KERAS_BACKEND`` says otherwise: the saved files are the
same whatever the backend, and the NumPy backend builds a ``keras.applications`` model in
about a second where the JAX backend compiles one XLA program per initializer and op shape
(EfficientNetB0: 36 s). ``KERAS_BACKEND=jax`` runs them against the JAX backend.
"""

import os
import pathlib
import random
import sys
import zlib

os.environ.setdefault("KERAS_BACKEND", "numpy")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def _seeded_global_rngs(request):
    """Seeds Python's ``random``, NumPy's global generator and Keras's (when imported) from the
    test's own id before each test, so a model a test builds without a seed (Keras draws its
    initial weights from the global generator, and ``perturb_keras(kernels=True)`` scales its
    draws by them) is the same whatever ran before it in its pytest-xdist worker, and the same
    when the test runs alone. A Keras imported later in the test seeds its generator from
    Python's ``random``, seeded here."""
    seed = zlib.crc32(request.node.nodeid.encode()) % 2**31
    keras = sys.modules.get("keras")
    if keras is not None:
        keras.utils.set_random_seed(seed)  # also random and np.random
    else:
        random.seed(seed)
        np.random.seed(seed)


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
    return FIXTURES


@pytest.fixture(scope="session")
def mnist():
    """The MNIST CNN written by tf.keras 2 (saved softmax head); models are immutable, so
    one instance serves every test."""
    from model_import import load_keras

    return load_keras(FIXTURES / "mnist_cnn_tfkeras2.h5")


@pytest.fixture(scope="session")
def rgb_logits():
    """The RGB classifier of the reference comparisons (reference_models/rgb.keras), with
    the ``logits`` head."""
    from model_import import load_keras

    return load_keras(FIXTURES / "reference_models" / "rgb.keras").with_head("logits")


@pytest.fixture(scope="session")
def mnist_digits():
    """The held-out MNIST digits of ``mnist_5k.npz`` as ``(N, 28, 28, 1)`` float32 in [0, 1]."""
    import numpy as np

    d = np.load(FIXTURES / "mnist_5k.npz")
    return (d["x"][d["test_idx"]].astype(np.float32) / 255.0)[..., None]


class CompileCounter:
    """Counts XLA backend compilations while it is registered (``jax.monitoring``)."""

    def __init__(self):
        self.n = 0
        self.active = True

    def __call__(self, event, duration, **kw):
        if self.active and event == "/jax/core/compile/backend_compile_duration":
            self.n += 1


@pytest.fixture
def compiles():
    """A :class:`CompileCounter` listening for the duration of one test."""
    import jax

    counter = CompileCounter()
    jax.monitoring.register_event_duration_secs_listener(counter)
    try:
        yield counter
    finally:
        unregister = getattr(jax.monitoring, "unregister_event_duration_listener", None)
        if unregister is not None:
            unregister(counter)
        else:  # JAX 0.4.38 cannot unregister a listener
            counter.active = False


@pytest.fixture(scope="module", autouse=True)
def _fresh_caches_per_module():
    """After each test file, drop JAX's and jaxsal's caches of traced and compiled programs.
    Kept, they grow to over a million Python objects in a worker that has run many files,
    and every full garbage collection (automatic, or Keras's own ``gc.collect()`` when a
    layer drops a variable) walks them all: on 9 of the heavier files in one process, 32 of
    291 s were full collections; with the caches dropped per file, 15 of 263 s. A test file
    never relies on another file's compiled programs."""
    yield
    import jax

    import jaxsal

    jax.clear_caches()
    jaxsal.clear_caches()
