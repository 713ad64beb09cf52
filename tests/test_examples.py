"""Every example runs with --fast, writes the PNGs it promises with the panels it promises,
and example 1's printed numbers match a direct computation with jax.grad."""

import contextlib
import importlib.util
import io
import pathlib
import re
import sys

import jax
import matplotlib.image as mpimg
import numpy as np
import pytest

from model_import import load_keras

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
FIX = ROOT / "tests" / "fixtures"

# example -> {png: panel count with --fast}
EXPECTED = {
    "mnist_heads": {"mnist_heads.png": 40, "mnist_heads_per_map.png": 40},
    "saliency_from_scratch": {"saliency_from_scratch.png": 8},
    "binary_gradcam": {"binary_gradcam.png": 8},
    "cnn_internals": {
        "internals_architecture.png": 0,  # a diagram, no map panels
        "internals_filters.png": 32,
        "internals_feature_maps_conv2d_1.png": 32,
        "internals_feature_maps_conv2d_2.png": 32,
        "internals_class_images.png": 10,
        "internals_occlusion.png": 9,
    },
    "batch_saliency": {"batch_saliency.png": 640},
    "sequences": {
        "sequences_signal_class0.png": 6,  # plot.signal: one panel per map row
        "sequences_signal_class1.png": 6,
        "sequences_signal_class2.png": 6,
        "sequences_tokens_class0.png": 0,  # plot.tokens: coloured words, no map panels
        "sequences_tokens_class1.png": 0,
    },
    "evaluate_maps": {"evaluate_maps_curves.png": 0, "evaluate_maps.png": 24},
}
# (0: the example prints no count, "wrote PATH": a figure of curves, words or a diagram)


def run_example(name, out):
    """``python examples/<name>.py --fast --out OUT`` run in this process (the module loaded
    from its file and its ``main`` called with that command line, in ``OUT``, ``examples/``
    first on ``sys.path`` as for the script); what it printed. In this process the seven
    examples share one start of Python, JAX and matplotlib (about 2.6 s of CPU time each as
    subprocesses) and the programs they compile alike: tests/test_examples.py took 64.0 ->
    45.6 s of CPU time (2-core Intel Xeon VM, lscpu)."""
    source = (EXAMPLES / f"{name}.py").read_text()
    # as a script it runs what is run here
    assert re.search(r'\nif __name__ == "__main__":\n    main\(\)\n*$', source), name
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setenv("MPLBACKEND", "Agg")
        mp.setattr(sys, "argv", [spec.origin, "--fast", "--out", str(out)])
        mp.setattr(sys, "path", [str(EXAMPLES), *sys.path])
        mp.chdir(out)
        spec.loader.exec_module(module)
        module.main()
    return printed.getvalue()


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """Runs every example once; {name: (stdout, out_dir)}."""
    dirs = {name: tmp_path_factory.mktemp(name) for name in EXPECTED}
    return {name: (run_example(name, out), out) for name, out in dirs.items()}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_example_writes_its_figures(outputs, name):
    stdout, out = outputs[name]
    written = {pathlib.Path(p).name: int(n or 0)
               for p, n in re.findall(r"^wrote (\S+\.png)(?: \((\d+) panels\))?$", stdout,
                                      re.M)}
    assert written == EXPECTED[name], stdout
    for png in EXPECTED[name]:
        path = out / png
        assert path.is_file()
        img = mpimg.imread(path)
        assert img.shape[0] > 100 and img.shape[1] > 100
        assert float(img[..., :3].std()) > 0.02, f"{png} looks blank"


def test_a_figure_without_map_panels_is_written_without_a_count(tmp_path, capsys,
                                                                monkeypatch):
    """The examples printed "(0 panels)" for figures they drew (curves, coloured words,
    count_panels counting map and image panels only): such a figure's line names no count."""
    from matplotlib.figure import Figure

    from jaxsal import plot

    monkeypatch.syspath_prepend(str(EXAMPLES))
    import _common

    curves = Figure(figsize=(2, 2))
    curves.add_subplot().plot([0.0, 1.0], [1.0, 0.5])
    _common.save(curves, str(tmp_path), "curves.png", dpi=30)
    grid = plot.grid(np.random.default_rng(0).random((2, 3, 4, 4)))
    _common.save(grid, str(tmp_path), "grid.png", dpi=30)
    assert capsys.readouterr().out.splitlines() == [
        f"wrote {tmp_path / 'curves.png'}", f"wrote {tmp_path / 'grid.png'} (6 panels)"]


def test_example1_numbers_match_a_direct_computation(outputs):
    stdout, _ = outputs["mnist_heads"]
    rows = re.findall(r"^head=(\w+) method=(\w+) class=(\d) sum=(\S+) max=(\S+) min=(\S+)$",
                      stdout, re.M)
    assert len(rows) == 2 * 2 * 10
    m = load_keras(FIX / "mnist_cnn_tfkeras2.h5")
    d = np.load(FIX / "mnist_5k.npz")
    y = d["y"][d["test_idx"]]
    first7 = d["test_idx"][np.argmax(y == 7)]
    x = d["x"][first7].astype(np.float32)[None, ..., None] / 255.0
    grads = {}  # one jitted gradient per (head, method), the class an argument
    for head, method, c, s, mx, mn in rows:
        if (head, method) not in grads:
            mm = m.with_head(head).with_backprop("guided" if method == "guided" else "standard")
            grads[head, method] = jax.jit(jax.grad(
                lambda x, c, mm=mm: mm.apply(mm.params, x)[0, c]))
        g = grads[head, method](x, int(c))
        sal = np.abs(np.asarray(g)).max(axis=-1)[0]  # max |gradient| over channels
        scale = float(sal.max())
        np.testing.assert_allclose(float(s), sal.sum(), rtol=1e-4)
        np.testing.assert_allclose(float(mx), sal.max(), rtol=1e-4)
        np.testing.assert_allclose(float(mn), sal.min(), rtol=1e-4, atol=1e-6 * scale)


def test_example2_matches_jaxsal(outputs):
    stdout, _ = outputs["saliency_from_scratch"]
    diff = float(re.search(r"max \|from scratch - jaxsal.saliency\| = (\S+)", stdout).group(1))
    assert diff < 1e-5


def test_example7_finds_the_planted_truth(outputs):
    """Grad-CAM peaks inside the planted signal pattern, integrated gradients at the embedding
    put the most on the keyword, and padded tokens get exactly 0."""
    stdout, _ = outputs["sequences"]

    def number(pattern):
        return float(re.search(pattern, stdout, re.M).group(1))

    assert number(r"^signals: accuracy (\S+)") >= 0.95
    assert number(r"^tokens: accuracy (\S+)") >= 0.95
    assert number(r"^signal localization gradcam: (\S+)") >= 0.9  # 1.000 measured
    assert number(r"^token localization integrated_gradients: (\S+)") >= 0.9  # 1.000
    assert number(r"^mean \|attribution\| on padding positions: (\S+)") == 0.0


def _kernel(tmp_path, monkeypatch) -> str:
    """A Jupyter kernel spec pointing at this interpreter, whatever kernels the machine has;
    its name."""
    import json

    spec = tmp_path / "jupyter" / "kernels" / "jaxsal-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "jaxsal test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "jaxsal-test"


def test_tour_notebook_executes(tmp_path, monkeypatch):
    """examples/tour.ipynb runs headless, top to bottom, in a kernel on this Python."""
    import nbformat
    from nbclient import NotebookClient

    kernel = _kernel(tmp_path, monkeypatch)
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    nb = nbformat.read(EXAMPLES / "tour.ipynb", as_version=4)
    saved_images = sum("image/png" in o.get("data", {}) for c in nb.cells
                       if c.cell_type == "code" for o in c.outputs)
    assert saved_images >= 7, "the committed notebook should carry its outputs"
    NotebookClient(nb, timeout=300, kernel_name=kernel,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outs) == saved_images


def test_a_figure_is_shown_in_a_notebook_without_the_inline_backend(tmp_path, monkeypatch):
    """A cell whose value is a jaxsal.plot figure, in a kernel where neither %matplotlib
    inline nor pyplot ran, showed '<Figure size ... with 2 Axes>' and no picture."""
    import nbformat
    from nbclient import NotebookClient

    kernel = _kernel(tmp_path, monkeypatch)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import sys, numpy as np\nfrom jaxsal import plot\n"
        "fig = plot.heatmap(np.random.RandomState(0).rand(8, 8))\n"
        "assert 'matplotlib.pyplot' not in sys.modules\nfig")]
    NotebookClient(nb, timeout=120, kernel_name=kernel,
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    (out,) = nb.cells[0].outputs
    assert out.output_type == "execute_result" and "image/png" in out.data, out


def test_example8_ranks_faithful_maps_above_a_random_order(outputs):
    """Integrated gradients and occlusion delete the class faster than a random pixel order
    and restore it faster by insertion (16 digits, 28 steps)."""
    stdout, _ = outputs["evaluate_maps"]
    auc = {name.strip(): (float(d), float(i)) for name, d, i in re.findall(
        r"^\s*([\w -]+): deletion auc (\S+)  insertion auc (\S+)$", stdout, re.M)}
    assert len(auc) == 7, stdout
    rand_d, rand_i = auc["random"]
    for name in ("integrated gradients", "occlusion", "gradient x input"):
        d, i = auc[name]
        assert d < 0.5 * rand_d and i > rand_i + 0.1, (name, auc)
