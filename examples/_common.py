"""What the MNIST examples share: the command line, the fixture files, saving figures.

Every example runs as ``python examples/<name>.py [--fast] [--out DIR]`` from a checkout of
the repository; the model files and the 5000 MNIST digits are the ones shipped in
``tests/fixtures/`` (nothing is downloaded).
"""

from __future__ import annotations

import argparse
import os
import pathlib

os.environ.setdefault("MPLBACKEND", "Agg")  # headless; jaxsal.plot never needs a display

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"


def parse_args(description: str, default_out: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--fast", action="store_true",
                   help="small sizes: finishes in well under a minute on a CPU")
    p.add_argument("--out", default=default_out, help="folder for the PNG files")
    args = p.parse_args()
    pathlib.Path(args.out).mkdir(parents=True, exist_ok=True)
    return args


def fixture(name: str) -> str:
    path = FIXTURES / name
    if not path.is_file():
        raise SystemExit(f"missing {path}: run the examples from a checkout of the repository")
    return str(path)


def mnist_heldout() -> tuple[np.ndarray, np.ndarray]:
    """The 1000 held-out digits of ``mnist_5k.npz`` as model inputs ``(1000, 28, 28, 1)`` in
    [0, 1] and their labels; ``x[:10]`` are the digits 0..9."""
    d = np.load(fixture("mnist_5k.npz"))
    idx = d["test_idx"]
    return d["x"][idx].astype(np.float32)[..., None] / 255.0, d["y"][idx]


def save(fig, out: str, name: str, dpi: int = 110) -> str:
    """Write ``fig`` to ``out/name`` and print one line saying so, with its map and image
    panels (:func:`jaxsal.plot.count_panels`; none named for a figure of curves, coloured
    words or a diagram, which has none) (the tests read it)."""
    from jaxsal import plot

    path = os.path.join(out, name)
    fig.savefig(path, dpi=dpi, facecolor="white")
    n = plot.count_panels(fig)
    print(f"wrote {path}" + (f" ({n} panels)" if n else ""))
    return path


def squeeze_channels(maps) -> np.ndarray:
    """Maps as ``(..., H, W)``: drop a trailing channel axis of size 1 if there is one."""
    a = np.asarray(maps)
    return a[..., 0] if a.shape[-1] == 1 else a
