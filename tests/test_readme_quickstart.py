"""The README's Quick start block runs as written, with the fixture model for "model.h5",
two digits for ``x`` and 4 maximization steps, and gives the shapes its comments state."""

import pathlib

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _quick_start() -> str:
    s = README.read_text()
    start = s.index("```python", s.index("## Quick start")) + len("```python")
    return s[start:s.index("```", start)]


def test_quick_start_runs_as_written(fixtures_dir, mnist_digits):
    code = _quick_start()
    for old, new in (('"model.h5"', repr(str(fixtures_dir / "mnist_cnn_tfkeras2.h5"))),
                     ("input_range=(0.0, 1.0),", "input_range=(0.0, 1.0), steps=4,")):
        assert old in code
        code = code.replace(old, new)
    scope = {"x": mnist_digits[:2]}
    exec(compile(code, "README.md (Quick start)", "exec"), scope)  # noqa: S102
    assert scope["maps"].shape == (2, 10, 28, 28)
    assert scope["cams"].shape == (2, 2, 28, 28)
    assert scope["sg"].shape == (2, 28, 28)
    assert np.asarray(scope["viz"].images).shape[0] == 10
