"""The per-example check (jaxsal/_src/per_example.py) against experiment, on every Keras
fixture with recorded inputs: for each output, does the check refuse it, and do its other rows
change when one input of the batch changes? Run by hand (it loads ~190 files, ~1 minute):

    PYTHONPATH=. python scripts/check_per_example_fixtures.py

Prints one line per file and exits 1 where the two disagree: an output refused whose rows
do not move (a false refusal), or an output the check follows to one row per input whose
rows do (a missed mixing). Outputs the check cannot follow (it assumes nothing there) are
not counted either way.
"""

import gzip
import pathlib
import shutil
import sys
import tempfile

import jax
import numpy as np

from jaxsal._src import per_example as pe
from model_import import load_keras

ROOT = pathlib.Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def inputs_for(path: pathlib.Path):
    """The inputs recorded beside a fixture (``x``, or ``x0``, ``x1``...), or ``None``."""
    base = str(path)
    for suffix in (".keras.gz", ".h5.gz", ".keras", ".h5"):
        if base.endswith(suffix):
            base = base[:-len(suffix)]
            break
    npz = pathlib.Path(base + ".expected.npz")
    if not npz.exists():
        return None
    z = np.load(npz)
    if "x" in z.files and "x0" not in z.files:
        return z["x"]
    xs = []  # x0, x1, ...: one array per input (x12, x16: one input at two sizes, skipped)
    while f"x{len(xs)}" in z.files:
        xs.append(z[f"x{len(xs)}"])
    if not xs:
        return None
    return xs[0] if len(xs) == 1 else xs


def rows_move(m, x) -> list[bool]:
    """Per output: do rows 1.. change when input 0 changes (or has it no row per input)?"""
    n = jax.tree_util.tree_leaves(x)[0].shape[0]

    def bump(a):
        a = np.array(a)
        if a.dtype.kind == "f":
            a[0] = a[0] * 1.7 + 0.3
        else:
            a[0] = a[1]
        return a

    f = jax.jit(lambda p, v: m.apply(p, v))
    before = jax.tree_util.tree_leaves(f(m.params, x))
    after = jax.tree_util.tree_leaves(f(m.params, jax.tree_util.tree_map(bump, x)))
    moved = []
    for a, b in zip(before, after):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.ndim == 0 or a.shape[0] != n:
            moved.append(True)
            continue
        a, b = a[1:], b[1:]
        ok = np.isfinite(a) & np.isfinite(b)
        scale = np.abs(a[ok]).max() if ok.any() else 1.0
        moved.append(bool((np.abs(a - b)[ok] > 1e-5 * (1 + scale)).any()
                          or (np.isfinite(a) != np.isfinite(b)).any()))
    return moved


def main() -> int:
    files = sorted(p for p in ROOT.rglob("*") if p.suffix in (".h5", ".keras", ".gz")
                   and ".weights." not in p.name)
    disagree = 0
    with tempfile.TemporaryDirectory() as tmp:
        for f in files:
            path = f
            if f.suffix == ".gz":
                path = pathlib.Path(tmp) / f.name[:-3]
                with gzip.open(f) as src, open(path, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            x = inputs_for(f)
            if x is None:
                continue
            try:
                m = load_keras(path)
            except Exception:  # weights-only or deliberately broken fixtures
                continue
            if jax.tree_util.tree_leaves(x)[0].shape[0] < 2:
                continue
            states = pe.output_states(m, pe._analysis_inputs(x)) or []
            n = jax.tree_util.tree_leaves(x)[0].shape[0]
            moved = rows_move(m, x)
            marks = []
            for (s, shape), mv in zip(states, moved):
                refused = pe.problem(s, shape, n) is not None  # the check's own verdict
                rows = isinstance(s, pe.Rows) and not refused
                bad = (refused and not mv) or (rows and mv)
                disagree += bad
                marks.append(("REFUSED" if refused else "rows" if rows else "?")
                             + ("!" if bad else "") + ("/moves" if mv else ""))
            print(f"{f.relative_to(ROOT)}: {' '.join(marks)}")
    print(f"{disagree} disagreement(s)")
    return 1 if disagree else 0


if __name__ == "__main__":
    sys.exit(main())
