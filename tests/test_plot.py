"""jaxsal.plot: figures are built headless, have the panels and colour bars they promise,
and write PNGs."""

import os
import re
import sys

import jax.numpy as jnp
import matplotlib.image as mpimg
import numpy as np
import pytest

import jaxsal
from jaxsal import plot
from jaxsal._src.architecture import layout_graph
from model_import import load_keras

FIX = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.fixture(scope="module")
def mnist_x(mnist, mnist_digits):
    return mnist, mnist_digits[:3]


def _colorbars(fig):
    return [ax for ax in fig.axes if ax.get_label() == "colorbar"]


def _png_ok(path):
    assert os.path.getsize(path) > 1000
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    assert float(img[..., :3].std()) > 0.01  # not a blank canvas
    return img


def _texts_inside(fig):
    """Every drawn text of the figure lies inside the figure (nothing clipped at an edge)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.image import AxesImage
    from matplotlib.text import Text

    canvas = FigureCanvasAgg(fig)
    for ax in fig.axes:  # the view limits (so the tick labels) as drawn with the images
        ax.get_xlim(), ax.get_ylim()
    # drawn without the images: jaxsal.plot lays the figure out in inches when it builds it,
    # and resampling an image's pixels (a mosaic's: 80x10 panels) was most of this check's time
    images = [im for im in fig.findobj(AxesImage) if im.get_visible()]
    for im in images:
        im.set_visible(False)
    try:
        canvas.draw()  # lays out the text
    finally:
        for im in images:
            im.set_visible(True)
    r = canvas.get_renderer()
    tick_labels, drawn = set(), []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            eps = 1e-9 * max(abs(lo), abs(hi), 1.0)
            for loc, lab in zip(axis.get_majorticklocs(), axis.get_majorticklabels()):
                tick_labels.add(id(lab))
                # ticks outside the limits, or of a hidden axis, are not drawn
                if ax.axison and lo - eps <= loc <= hi + eps:
                    drawn.append(lab)
    drawn += [t for t in fig.findobj(Text) if id(t) not in tick_labels]
    W, H = fig.bbox.width, fig.bbox.height
    boxes = []
    for t in drawn:
        if not (t.get_visible() and t.get_text().strip()):
            continue
        b = t.get_window_extent(r)
        assert b.x0 >= -1 and b.y0 >= -1 and b.x1 <= W + 1 and b.y1 <= H + 1, (
            f"text {t.get_text()!r} at {b} is outside the {W}x{H} figure")
        boxes.append((t.get_text(), b))
    # and no two texts overlap (titles, labels, tick labels, colour-bar labels)
    for i, (ta, a) in enumerate(boxes):
        for tb, b in boxes[i + 1:]:
            ox = min(a.x1, b.x1) - max(a.x0, b.x0)
            oy = min(a.y1, b.y1) - max(a.y0, b.y0)
            assert ox <= 1 or oy <= 1, f"texts {ta!r} and {tb!r} overlap"


def _refused(draw, *cases):
    """``draw(a)`` raises a ValueError matching ``pattern`` for each case ``(a, pattern)``."""
    for a, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            draw(a)


def _maps(R, C, H=12, W=10, signed=False, seed=0):
    a = np.random.RandomState(seed).rand(R, C, H, W).astype(np.float32)
    return a - 0.5 if signed else a


# that neither `import jaxsal` imports matplotlib nor `import jaxsal.plot` pyplot:
# tests/test_api.py::test_import_is_light (one interpreter for both)


_FAKE_GUI_BACKEND = """
from matplotlib.backend_bases import FigureCanvasBase, FigureManagerBase
SHOWN = []


class FigureManager(FigureManagerBase):
    def show(self):  # a window: records the figure its canvas draws
        SHOWN.append(self.canvas.figure)


class FigureCanvas(FigureCanvasBase):
    manager_class = FigureManager


def show(*args, **kwargs):
    from matplotlib._pylab_helpers import Gcf
    for manager in Gcf.get_all_fig_managers():
        manager.show()
"""


def test_fig_show_displays_where_it_can_and_says_how_to_save_where_not(tmp_path, monkeypatch):
    """fig.show() on a figure built without pyplot raised matplotlib's 'Figure.show works
    only for figures managed by pyplot'. It shows the figure inline in a Jupyter kernel and
    in a window with a GUI backend, and without a display says how to save it."""
    import types

    import matplotlib.pyplot as plt

    (tmp_path / "fake_gui.py").write_text(_FAKE_GUI_BACKEND)
    monkeypatch.syspath_prepend(str(tmp_path))
    import fake_gui

    before = plt.get_backend()
    try:
        plt.switch_backend("module://fake_gui")  # a GUI: the figure goes to a window
        fig = plot.heatmap(np.eye(4))
        fig.show()
        assert fake_gui.SHOWN == [fig]
        fig.savefig(tmp_path / "after.png")  # still saves, through pyplot's canvas now
        _png_ok(tmp_path / "after.png")
        plt.close("all")
        plt.switch_backend("agg")  # no display
        with pytest.raises(RuntimeError, match=(
                r"fig.show\(\): expected a display to show the figure in, got matplotlib's "
                r"'agg' backend.*fig.savefig\('figure.png'\)")):
            plot.heatmap(np.eye(4)).show()
    finally:
        plt.close("all")
        plt.switch_backend(before)
    # in a Jupyter kernel: displayed as a cell's value is (its PNG form)
    fig, shown = plot.heatmap(np.eye(4)), []
    shell = types.SimpleNamespace(kernel=object())
    monkeypatch.setitem(sys.modules, "IPython",
                        types.SimpleNamespace(get_ipython=lambda: shell))
    monkeypatch.setitem(sys.modules, "IPython.display",
                        types.SimpleNamespace(display=shown.append))
    fig.show()
    assert shown == [fig]


def test_grid_shared_scale_one_colorbar(tmp_path):
    maps = _maps(3, 4)
    maps[1] *= 5  # one row much stronger: a shared scale must show it
    p = tmp_path / "g.png"
    fig = plot.grid(maps, row_titles=["a", "b", "c"], col_titles=list("wxyz"),
                    title="T", save=p)
    assert plot.count_panels(fig) == 12
    assert len(_colorbars(fig)) == 1
    clims = {ax.images[-1].get_clim() for ax in plot.panel_axes(fig)}
    assert clims == {(float(maps.min()), float(maps.max()))}
    texts = [t.get_text() for t in fig.texts] + [fig._suptitle.get_text()]
    assert any("one colour scale for all panels" in t for t in texts)
    assert {"a", "b", "c"} <= set(texts)
    assert [ax.get_title() for ax in plot.panel_axes(fig)[:4]] == list("wxyz")
    _texts_inside(fig)
    _png_ok(p)


@pytest.mark.parametrize("scale,n_bars", [("row", 3), ("column", 4), ("panel", 12)])
def test_grid_other_scales(tmp_path, scale, n_bars):
    maps = _maps(3, 4)
    maps[1] *= 5
    fig = plot.grid(maps, scale=scale, save=tmp_path / "g.png")
    assert plot.count_panels(fig) == 12
    assert len(_colorbars(fig)) == n_bars
    clims = np.array([ax.images[-1].get_clim() for ax in plot.panel_axes(fig)]).reshape(3, 4, 2)
    if scale == "row":
        assert np.allclose(clims[1, :, 1], maps[1].max()) and np.allclose(clims[0, :, 1],
                                                                            maps[0].max())
    elif scale == "column":
        assert np.allclose(clims[:, 2, 1], maps[:, 2].max())
    else:
        assert np.allclose(clims[..., 1], maps.max(axis=(2, 3)))
        assert "not comparable" in fig._suptitle.get_text()
    _texts_inside(fig)
    _png_ok(tmp_path / "g.png")


def test_grid_signed_maps_are_centred_at_zero():
    maps = _maps(2, 2, signed=True)
    maps[0, 0] += 0.3  # asymmetric range
    fig = plot.grid(maps)
    for ax in plot.panel_axes(fig):
        lo, hi = ax.images[-1].get_clim()
        assert lo == pytest.approx(-hi) and hi == pytest.approx(np.abs(maps).max())
        assert ax.images[-1].get_cmap().name == plot.DIVERGING_CMAP
    assert "centred at 0" in fig._suptitle.get_text()
    unsigned = plot.grid(np.abs(maps))
    assert plot.panel_axes(unsigned)[0].images[-1].get_cmap().name == "jet"


def test_grid_overlay_and_input_column(tmp_path):
    maps = _maps(2, 3, 8, 8)
    imgs = np.random.RandomState(1).rand(2, 8, 8, 1)
    fig = plot.grid(maps, images=imgs[:, None], inputs=imgs, alpha=0.4, save=tmp_path / "o.png")
    assert plot.count_panels(fig) == 6
    assert plot.count_panels(fig, inputs=True) == 8
    ax = plot.panel_axes(fig)[3]  # row 1, column 0: background is image 1
    assert len(ax.images) == 2
    np.testing.assert_allclose(ax.images[0].get_array(), imgs[1, ..., 0], rtol=1e-6)
    assert ax.images[1].get_alpha() == 0.4
    _png_ok(tmp_path / "o.png")


def test_grid_rejects_bad_input():
    with pytest.raises(ValueError, match="scale"):
        plot.grid(_maps(1, 2), scale="per-head")
    with pytest.raises(ValueError, match="vmin/vmax"):
        plot.grid(_maps(1, 2), scale="row", vmax=1.0)
    bad = _maps(1, 2)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        plot.grid(bad)
    with pytest.raises(ValueError, match="images"):
        plot.grid(_maps(1, 2, 8, 8), images=np.zeros((5, 5)))
    with pytest.raises(ValueError, match="row_titles"):
        plot.grid(_maps(2, 2), row_titles=["one"])
    with pytest.raises(ValueError, match="channel"):
        plot.grid(np.zeros((1, 2, 8, 8, 3)))


def test_grid_mosaic_for_many_panels(tmp_path):
    maps = _maps(20, 10, 8, 8)
    fig = plot.grid(maps, inputs=np.zeros((20, 8, 8, 1)), col_titles=[str(i) for i in range(10)],
                    save=tmp_path / "m.png")
    assert plot.count_panels(fig) == 200
    assert len(_colorbars(fig)) == 1
    _png_ok(tmp_path / "m.png")


@pytest.mark.parametrize("scale", ["row", "column"])
def test_grid_of_many_panels_with_row_or_column_scale_is_not_a_mosaic(scale):
    """More than 150 panels with per-row/column scales: the automatic choice draws panel by
    panel (a mosaic has no per-row or per-column colour bars); mosaic=True is refused."""
    maps = _maps(16, 10, 4, 4)
    fig = plot.grid(maps, scale=scale)
    assert plot.count_panels(fig) == 160
    assert not any(ax.get_label().startswith("mosaic:") for ax in fig.axes)
    assert len(_colorbars(fig)) == (16 if scale == "row" else 10)
    with pytest.raises(ValueError, match=f"got scale='{scale}'; pass mosaic=False"):
        plot.grid(maps, scale=scale, mosaic=True)


def test_heatmap_overlay_diverging(tmp_path, mnist_x):
    _, x = mnist_x
    m = np.abs(np.random.RandomState(0).randn(28, 28)).astype(np.float32)
    f1 = plot.heatmap(m, save=tmp_path / "h.png", cmap="viridis")
    assert plot.count_panels(f1) == 1 and len(_colorbars(f1)) == 1
    assert plot.panel_axes(f1)[0].images[0].get_cmap().name == "viridis"
    f2 = plot.overlay(x[0], m, alpha=0.3, save=tmp_path / "o.png")
    ax = plot.panel_axes(f2)[0]
    assert len(ax.images) == 2 and ax.images[1].get_alpha() == 0.3
    f3 = plot.diverging(m - m.mean(), save=tmp_path / "d.png")
    lo, hi = plot.panel_axes(f3)[0].images[0].get_clim()
    assert lo == pytest.approx(-hi)
    for n in "hod":
        _png_ok(tmp_path / f"{n}.png")
    # images are drawn as stored: row 0 at the top, no transposition
    ax = plot.panel_axes(f1)[0]
    np.testing.assert_array_equal(ax.images[0].get_array(), m)
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # origin="upper"


def test_image_grid(tmp_path):
    imgs = np.random.RandomState(0).rand(10, 9, 9, 1)
    fig = plot.image_grid(imgs, titles=[f"c{i}" for i in range(10)], ncols=5, value_range=(0, 1),
                          save=tmp_path / "i.png")
    assert plot.count_panels(fig) == 10
    assert len(_colorbars(fig)) == 1
    assert [ax.get_title() for ax in plot.panel_axes(fig)][:2] == ["c0", "c1"]
    rgb = plot.image_grid(np.random.RandomState(0).rand(7, 9, 9, 3))
    assert plot.count_panels(rgb) == 7 and not _colorbars(rgb)
    assert "own min..max" in rgb._suptitle.get_text()
    _png_ok(tmp_path / "i.png")


def test_filters_from_model_and_rgb_kernel(tmp_path, mnist_x):
    m, _ = mnist_x
    fig = plot.filters(m, save=tmp_path / "f.png")
    assert plot.count_panels(fig) == 32  # conv2d_1 has 32 filters, 3x3x1
    k = np.asarray(m.layer("conv2d_1").params["kernel"])
    np.testing.assert_allclose(plot.panel_axes(fig)[5].images[0].get_array(), k[:, :, 0, 5])
    assert "conv2d_1" in fig._suptitle.get_text()
    _png_ok(tmp_path / "f.png")
    rgb = plot.filters(np.random.RandomState(0).randn(5, 5, 3, 12), max_filters=8)
    assert plot.count_panels(rgb) == 8
    assert plot.panel_axes(rgb)[0].images[0].get_array().shape == (5, 5, 3)
    with pytest.raises(ValueError, match="kernel"):
        plot.filters(m, layer="flatten_1")
    k5 = np.random.RandomState(0).randn(3, 3, 4, 6)
    # channel=True was input channel 1 and max_filters=2.5 two filters, silently
    for bad in (dict(channel=True), dict(channel=1.0), dict(max_filters=2.5),
                dict(max_filters=True)):
        with pytest.raises(ValueError, match="expected"):
            plot.filters(k5, **bad)
    assert plot.count_panels(plot.filters(k5, channel=np.int64(1), max_filters=np.int32(2))) == 2


def test_feature_maps_match_the_layer_output(tmp_path, mnist_x):
    m, x = mnist_x
    fig = plot.feature_maps(m, x[:1], "conv2d_2", max_maps=20, save=tmp_path / "fm.png")
    assert plot.count_panels(fig) == 20
    acts = np.asarray(m.intermediates(x[:1], ["conv2d_2"])["conv2d_2"])[0]
    np.testing.assert_allclose(plot.panel_axes(fig)[7].images[0].get_array(), acts[..., 7],
                               rtol=1e-5, atol=1e-6)
    assert len(_colorbars(fig)) == 1
    _png_ok(tmp_path / "fm.png")
    f2 = plot.feature_maps(acts, channels=[3, 1], scale="panel")
    assert plot.count_panels(f2) == 2
    with pytest.raises(ValueError, match="dense"):
        plot.feature_maps(m, x[:1], "dense_1")
    with pytest.raises(ValueError, match="one input"):
        plot.feature_maps(m, x, "conv2d_1")


def test_architecture_chain(tmp_path, mnist_x):
    m, _ = mnist_x
    fig = plot.architecture(m, save=tmp_path / "a.png")
    ax = fig.axes[0]
    boxes = [p for p in ax.patches if p.get_label() == "layer"]
    edges = [p for p in ax.patches if p.get_label() == "edge"]
    assert len(boxes) == len(m.layer_names) == 9 and len(edges) == 8
    texts = [t.get_text() for t in ax.texts]
    assert "conv2d_2" in texts and "(24, 24, 64)" in texts and "(9216,)" in texts
    _texts_inside(fig)
    # a long title widens the figure instead of being cut off
    _texts_inside(plot.architecture(m, title="a very long title " * 4))
    _png_ok(tmp_path / "a.png")


def _branched_model(tmp_path):
    keras = pytest.importorskip("keras")
    from model_import import LayerImpl, registered_classes

    L = keras.layers
    inp = keras.Input((8, 8, 2), name="inp")
    a = L.Conv2D(3, 3, padding="same", activation="relu", name="conv_a")(inp)
    b = L.Conv2D(3, 1, name="conv_b")(inp)
    s = L.Add(name="add")([a, b])
    c = L.Conv2D(3, 3, padding="same", name="conv_c")(s)
    res = L.Add(name="residual")([s, L.Activation("relu", name="act")(c)])
    cat = L.Concatenate(name="concat")([res, inp])
    out = L.Dense(2, name="out")(L.GlobalAveragePooling2D(name="gap")(cat))
    path = tmp_path / "branched.keras"
    keras.Model(inp, out, name="branched").save(path)
    custom = {}
    if "Add" not in registered_classes():
        custom["Add"] = lambda cfg, ctx: LayerImpl(call=lambda p, xs, *, rt: sum(xs))
    if "Concatenate" not in registered_classes():
        custom["Concatenate"] = lambda cfg, ctx: LayerImpl(
            call=lambda p, xs, *, rt, _ax=cfg.get("axis", -1): jnp.concatenate(xs, axis=_ax))
    return load_keras(path, custom_layers=custom)


def test_architecture_branches_and_merges(tmp_path):
    m = _branched_model(tmp_path)
    lay = layout_graph(m.graph)
    incoming = {n: sorted(s for s, d in lay.edges if d == n) for n in lay.nodes}
    assert incoming["add"] == ["conv_a", "conv_b"]
    assert incoming["residual"] == ["act", "add"]
    assert incoming["concat"] == ["inp", "residual"]
    assert lay.nodes["conv_a"].rank == lay.nodes["conv_b"].rank == 1
    assert lay.width == 2
    assert lay.nodes["conv_a"].x != lay.nodes["conv_b"].x
    # every edge points down: parents sit in earlier ranks
    assert all(lay.nodes[s].rank < lay.nodes[d].rank for s, d in lay.edges)
    fig = plot.architecture(m, save=tmp_path / "b.png")
    ax = fig.axes[0]
    assert len([p for p in ax.patches if p.get_label() == "edge"]) == len(lay.edges) == 12
    assert "(8, 8, 5)" in [t.get_text() for t in ax.texts]  # concat of 3 + 2 channels
    _texts_inside(fig)
    # the two skip connections (inp -> concat, add -> residual) go around the boxes between
    boxes = [p.get_bbox() for p in ax.patches if p.get_label() == "layer"]
    lanes = [ln.get_xydata() for ln in ax.lines if ln.get_label() == "lane"]
    assert len(lanes) == 2
    for v in lanes:
        x_lane, y0, y1 = v[1, 0], v[0, 1], v[2, 1]
        passed = [b for b in boxes if y0 < (b.y0 + b.y1) / 2 < y1 and
                  abs((b.y0 + b.y1) / 2 - y0) > 1e-6 and abs((b.y0 + b.y1) / 2 - y1) > 1e-6]
        assert passed and all(x_lane > b.x1 for b in passed)
    _png_ok(tmp_path / "b.png")


@pytest.mark.parametrize("case", ["self", "cycle"])
def test_architecture_layer_called_on_its_own_output(tmp_path, case):
    """sh(sh(i)) (a self-edge) and A(B(A(i))) (a cycle through a shared layer) were a KeyError:
    the back edge is left out of the ranking and drawn up a lane left of the boxes."""
    keras = pytest.importorskip("keras")
    inp = keras.Input((3,), name="i")
    if case == "self":
        sh = keras.layers.Dense(3, name="sh")
        out, back = sh(sh(inp)), [("sh", "sh")]
    else:
        a, b = keras.layers.Dense(3, name="A"), keras.layers.Dense(3, name="B")
        out, back = a(b(a(inp))), [("B", "A")]
    k = keras.Model(inp, out)
    k.save(tmp_path / "m.keras")
    m = load_keras(tmp_path / "m.keras")
    lay = layout_graph(m.graph)
    assert sorted(lay.nodes) == sorted(ly.name for ly in k.layers)  # each layer once
    assert list(lay.back_edges) == back
    assert all(lay.nodes[s].rank < lay.nodes[d].rank for s, d in lay.edges if (s, d) not in back)
    fig = plot.architecture(m)
    ax = fig.axes[0]
    assert len([p for p in ax.patches if p.get_label() == "edge"]) == len(lay.edges)
    (lane,) = [ln.get_xydata() for ln in ax.lines if ln.get_label() == "back lane"]
    left = min(p.get_bbox().x0 for p in ax.patches if p.get_label() == "layer")
    assert lane[1, 0] < left and lane[2, 1] < lane[0, 1]  # left of every box, going up
    _texts_inside(fig)


def test_architecture_activation_labels_as_keras_serializes_them():
    """A registered function (Keras 3 saves {"class_name": "function", "config": "pkg>name"})
    was an AttributeError; a layer as activation was labelled with its instance name."""
    keras = pytest.importorskip("keras")
    from jaxsal._src.architecture import _activation

    @keras.saving.register_keras_serializable(package="jaxsal_tests")
    def swishy(t):
        return t * keras.ops.sigmoid(t)

    L = keras.layers
    cases = [(swishy, keras.saving.get_registered_name(swishy)),  # "jaxsal_tests>swishy"
             (L.LeakyReLU(0.2), "LeakyReLU"), ("relu", "relu"), (None, None)]
    for act, want in cases:
        assert _activation(L.Dense(2, activation=act).get_config()) == want, act


def test_grid_row_groups_share_a_scale_per_group():
    maps = _maps(4, 3)
    maps[2:] *= 100  # the second group (e.g. the logits head) is much larger
    fig = plot.grid(maps, scale="row", row_groups=["a", "a", "b", "b"])
    assert len(_colorbars(fig)) == 2
    clims = np.array([ax.images[-1].get_clim() for ax in plot.panel_axes(fig)]).reshape(4, 3, 2)
    assert np.allclose(clims[:2, :, 1], maps[:2].max())
    assert np.allclose(clims[2:, :, 1], maps[2:].max())
    assert "group of rows" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="row_groups"):
        plot.grid(maps, row_groups=["a", "a", "b", "b"])  # needs scale="row"


def test_no_text_is_cut_off_in_busy_layouts(mnist_x):
    m, x = mnist_x
    maps = _maps(4, 10, 28, 28)
    cols = [f"class {c}\np=0.000\nlogit=-3.8" for c in range(10)]
    rows = [f"softmax head\ngradient {i}" for i in range(4)]
    kw = dict(inputs=x[0], row_titles=rows, col_titles=cols, colorbar_label="|d score / d x|",
              title="a two-line\ntitle")
    _texts_inside(plot.grid(maps, scale="row", row_groups=["a", "a", "b", "b"], **kw))
    _texts_inside(plot.grid(maps * 1e-6, scale="panel", **kw))
    _texts_inside(plot.grid(maps, scale="column", **kw))
    _texts_inside(plot.grid(np.tile(maps, (20, 1, 1, 1)), inputs=np.tile(x[:1], (80, 1, 1, 1)),
                            row_titles=[f"{i} (pred 5)" for i in range(80)], col_titles=cols,
                            title="mosaic"))
    _texts_inside(plot.image_grid(np.random.RandomState(0).rand(10, 28, 28, 1), ncols=5,
                                  titles=[f"class {c}: logit 11.5\nclassified as {c}"
                                          for c in range(10)], value_range=(0, 1),
                                  title="activation maximization, logits head, 256 steps"))
    _texts_inside(plot.grid(_maps(8, 2, 32, 32), images=np.zeros((8, 1, 32, 32, 3)),
                            inputs=np.zeros((8, 32, 32, 3)), scale="row", panel_size=1.9,
                            row_titles=["digit 0, class 0\np(class 1) = 0.003"] * 8,
                            col_titles=["Grad-CAM class 1 (digit >= 5)\nsigmoid head",
                                        "Grad-CAM class 0 (digit < 5)\nsigmoid_complement head"],
                            colorbar_label="Grad-CAM", title="binary_cnn_keras3.keras"))
    _texts_inside(plot.grid(_maps(6, 3, 28, 28), inputs=x[:1], panel_size=1.6, vmin=0, vmax=1,
                            row_titles=["label 0\npredicted 0"] * 6,
                            col_titles=["occlusion\n(drop of p, 6x6 gray patch)",
                                        "Grad-CAM\n(conv2d_2, logits)", "saliency\n(logits)"],
                            colorbar_label="each map min-max normalized",
                            title="where the evidence for the predicted class is"))
    _texts_inside(plot.filters(m, ncols=8))
    _texts_inside(plot.feature_maps(m, x[:1], "conv2d_2", max_maps=32, ncols=8))


def test_every_public_function_is_documented():
    for name in plot.__all__:
        doc = getattr(plot, name).__doc__
        assert doc and len(doc.strip()) > 40, f"jaxsal.plot.{name} needs a docstring"


def test_image_grid_layouts():
    rgb = np.random.RandomState(0).rand(6, 9, 9, 3)
    f = plot.image_grid(rgb, ncols=3, row_titles=["a", "b"], col_titles=["x", "y", "z"])
    assert plot.count_panels(f) == 6
    assert plot.panel_axes(f)[0].images[0].get_array().shape == (9, 9, 3)
    f = plot.image_grid(rgb.reshape(2, 3, 9, 9, 3), row_titles=["a", "b"])
    assert plot.count_panels(f) == 6
    gray = plot.image_grid(rgb[..., 0].reshape(2, 3, 9, 9))  # (R, C, H, W)
    assert plot.count_panels(gray) == 6
    with pytest.raises(ValueError, match="row_titles"):
        plot.image_grid(rgb, ncols=3, row_titles=["a", "b", "c"])
    with pytest.raises(ValueError, match="titles"):
        plot.image_grid(rgb, titles=["only one"])


def test_image_grid_of_channels_first_images():
    """maximize returns (T, C, H, W) images for a channels-first model; read as they are,
    they were an explicit grid of C gray panels per image. channels_first=True draws one RGB
    panel per image, the same as the channels-last array."""
    rgb = np.random.RandomState(0).rand(6, 9, 9, 3)
    first = np.moveaxis(rgb, -1, 1)  # (6, 3, 9, 9)
    assert plot.count_panels(plot.image_grid(first)) == 18  # what it was taken for
    f = plot.image_grid(first, ncols=3, channels_first=True)
    assert plot.count_panels(f) == 6
    last = plot.image_grid(rgb, ncols=3)
    np.testing.assert_array_equal(plot.panel_axes(f)[4].images[0].get_array(),
                                  plot.panel_axes(last)[4].images[0].get_array())
    gray = plot.image_grid(first[:, :1], channels_first=True)
    assert plot.count_panels(gray) == 6
    grid = plot.image_grid(first.reshape(2, 3, 3, 9, 9), channels_first=True)
    assert plot.count_panels(grid) == 6
    with pytest.raises(ValueError,
                       match=r"channels_first=True: expected .*got shape \(6, 9, 9, 3\)"):
        plot.image_grid(rgb, channels_first=True)
    with pytest.raises(ValueError, match="True or False"):
        plot.image_grid(first, channels_first="yes")


def test_grid_and_curves_refuse_what_they_cannot_draw():
    """An empty batch failed in NumPy's min, alpha=2 in matplotlib (or drew clipped colours
    as a mosaic), a curves target out of range with an IndexError, target=True and a target
    of curves without a class axis were taken: refused saying what."""
    maps = np.random.default_rng(0).random((2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"expected at least one map, got shape \(0, 3, 4, 4\)"):
        plot.grid(np.zeros((0, 3, 4, 4)))
    for mosaic in (False, True):
        with pytest.raises(ValueError, match=r"grid: expected alpha in \[0, 1\] \(.*\), got 2.0"):
            plot.grid(maps, images=np.ones((4, 4)), alpha=2.0, mosaic=mosaic)

    class Curve:
        fractions, scores, auc = np.linspace(0, 1, 3), np.ones((2, 2, 3)), np.ones((2, 2))

    for target in (5, -3, True, 1.0):  # True was taken as 1, then drawn wrongly by matplotlib
        with pytest.raises(ValueError, match=r"curves: expected target as an int in \[-2, 1\] "
                                             r"\(a column of 'a''s curves of 2 targets\), got"):
            plot.curves({"a": Curve()}, target=target)

    class Flat:  # no class axis: the target was ignored, the mean drawn
        fractions, scores, auc = np.linspace(0, 1, 3), np.ones((2, 3)), np.ones(2)

    with pytest.raises(ValueError, match=r"target=0 picks a column of curves with a class "
                                         r"axis .*shape \(2, 3\), without one; pass "
                                         r"target=None"):
        plot.curves({"a": Flat()}, target=0)


def test_tokens_are_drawn_as_they_are(tmp_path):
    """Tokens with dollar signs (prices, code) were parsed as math: "$$" failed when saved,
    "$x$" was drawn in italics. Drawn as given."""
    words = ["costs", "$$", "5", "$x$", "$_$"]
    fig = plot.tokens(words, np.linspace(-1, 1, 5), row_titles=["$row$"],
                      save=tmp_path / "d.png")
    _png_ok(tmp_path / "d.png")
    assert {t.get_text() for t in fig.axes[0].texts} >= set(words) | {"$row$"}


def test_image_grid_refuses_shapes_it_would_misread():
    """(T, H, W, 2) was drawn as T x H gray panels of H x 2 pixels, one RGB (H, W, 3) image
    as H gray strips: refused, naming the readings and the fix."""
    _refused(plot.image_grid,
             (np.zeros((5, 8, 8, 2)),
              r"\(5, 8, 8, 2\): expected \(T, H, W, c\) with c = 1 or 3 .*got 2 channels"),
             (np.zeros((8, 8, 3)),
              r"one RGB image \(pass images\[None\]\) or 8 gray images 3 pixels wide"))
    assert plot.count_panels(plot.image_grid(np.zeros((8, 8, 3))[None])) == 1


def test_tokens_colours_follow_the_attributions(tmp_path):
    from matplotlib import colors as mcolors

    words = ["the", "film", "was", "not", "extraordinarily", "good", "<pad>"]
    a = np.array([[0.0, 0.1, -0.2, -1.0, 0.3, 1.0, 0.0], [0.2, 0.0, 0.1, 0.5, -0.3, -1.0, 0.0]])
    fig = plot.tokens(words, a, row_titles=["negative", "positive"], title="IG per token",
                      colorbar_label="attribution", save=tmp_path / "t.png")
    _png_ok(tmp_path / "t.png")
    assert len(_colorbars(fig)) == 1
    _texts_inside(fig)
    boxes = {(t.get_text(), round(t.get_position()[1], 2)): t.get_bbox_patch().get_facecolor()
             for t in fig.axes[0].texts if t.get_bbox_patch() is not None}
    assert len(boxes) == 2 * len(words)
    rows = sorted({y for _, y in boxes})
    red, blue = boxes[("good", rows[0])], boxes[("not", rows[0])]
    assert red[0] > red[2] + 0.2 and blue[2] > blue[0] + 0.2  # +1 red, -1 blue
    white = mcolors.to_rgba("white")
    assert np.allclose(boxes[("the", rows[0])], white, atol=0.05)  # 0 is white (centred)
    # long sequences wrap inside the figure
    _texts_inside(plot.tokens([f"token{i}" for i in range(80)], np.linspace(0, 1, 80)))
    with pytest.raises(ValueError, match=r"expected attributions of shape \(7,\)"):
        plot.tokens(words, np.zeros(6))
    with pytest.raises(ValueError, match="2 rows of attributions but 1 row_titles"):
        plot.tokens(words, a, row_titles=["x"])


@pytest.mark.parametrize("dpi", [72, 120, 200])
def test_tokens_wider_than_the_figure_widen_it(tmp_path, dpi):
    """A token wider than the figure (a URL, a long subword run) ran off its right edge,
    under the colour bar, and wide letters overlapped their neighbours: the figure widens to
    the widest token as Agg draws it, at the screen's and the saved file's resolutions."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    for words in (["a", "W" * 120, "b"], ["x" * 60], ["WWWWWWWWWWWWW"] * 8):
        fig = plot.tokens(words, np.linspace(0, 1, len(words)), row_titles=["row"], width=4.0,
                          save=tmp_path / "t.png", dpi=dpi)
        for d in (matplotlib.rcParams["figure.dpi"], dpi):  # on screen, and as saved
            fig.set_dpi(d)
            _texts_inside(fig)
            canvas = FigureCanvasAgg(fig)
            canvas.draw()
            r = canvas.get_renderer()
            bar = next(ax for ax in fig.axes if ax.get_label() == "colorbar")
            bar_x0 = bar.get_window_extent(r).x0
            for t in fig.axes[0].texts:
                if t.get_bbox_patch() is not None:  # a word's box, padding included
                    assert t.get_bbox_patch().get_window_extent(r).x1 < bar_x0, t.get_text()
    # a figure that fits keeps the width asked for
    assert plot.tokens(["short", "words"], [0.0, 1.0], width=4.0).get_size_inches()[0] == 4.0


def test_signal_panels(tmp_path):
    x = np.stack([np.sin(np.linspace(0, 9, 120)), np.cos(np.linspace(0, 9, 120))], -1)
    maps = np.abs(np.random.default_rng(0).normal(size=(3, 120)))
    fig = plot.signal(x, maps, row_titles=["A", "B", "C"], title="Grad-CAM",
                      save=tmp_path / "s.png")
    _png_ok(tmp_path / "s.png")
    panels = [ax for ax in fig.axes if ax.get_label() == "panel"]
    assert len(panels) == 3 and len(_colorbars(fig)) == 1
    assert len(panels[0].lines) == 2  # one line per channel
    np.testing.assert_allclose(panels[1].images[0].get_array()[0], maps[1])
    _texts_inside(fig)
    with pytest.raises(ValueError, match=r"\(120,\) or \(R, 120\)"):
        plot.signal(x, np.zeros((2, 100)))


def test_curves_draws_one_mean_line_per_name_with_its_area():
    import jaxsal

    rng = np.random.default_rng(0)
    fr = np.linspace(0, 1, 5, dtype=np.float32)

    def c(scores):
        s = np.asarray(scores, np.float32)
        return jaxsal.Curves(fr, s, (s[..., 1:] + s[..., :-1]).sum(-1) / 8)

    a, b = c(rng.random((3, 2, 5))), c(rng.random((3, 2, 5)))
    fig = plot.curves({"a": a, "random": b}, title="deletion")
    lines = fig.axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == [f"a ({float(np.mean(a.auc)):.3f})",
                                               f"random ({float(np.mean(b.auc)):.3f})"]
    np.testing.assert_allclose(lines[0].get_ydata(), a.scores.reshape(6, 5).mean(0), rtol=1e-6)
    one = plot.curves({"a": a}, target=1)
    np.testing.assert_allclose(one.axes[0].get_lines()[0].get_ydata(), a.scores[:, 1].mean(0),
                               rtol=1e-6)
    from matplotlib.figure import Figure

    host = Figure()
    ax = host.add_subplot(1, 2, 2)
    assert plot.curves({"a": a}, ax=ax) is host and len(ax.get_lines()) == 1
    with pytest.raises(TypeError, match="not a Curves result"):
        plot.curves({"a": a.scores})
    with pytest.raises(ValueError, match="at least one entry"):
        plot.curves({})


def test_grid_refuses_rgb_channel_maps_and_bad_limits():
    """(N, H, W, 3) channel maps were drawn as N x H panels 3 pixels wide; vmin/vmax that
    invert or empty the scale were passed on (a lone positive vmin on signed maps gave
    (0.5, -0.5), which the colour bar turned into another range)."""
    rgb = np.random.RandomState(0).rand(2, 28, 28, 3).astype(np.float32)
    with pytest.raises(ValueError, match=r"reads as \(N, H, W, 3\) maps.*reduce_channels"):
        plot.grid(rgb)
    assert plot.count_panels(plot.grid(rgb[..., None])) == 2 * 28  # the escape hatch
    signed = _maps(1, 2) - 0.5
    for kw in (dict(vmin=0.5), dict(vmin=1.0, vmax=0.0), dict(vmin=0.5, vmax=0.5)):
        with pytest.raises(ValueError, match="vmin < vmax"):
            plot.grid(signed, **kw)
    lo, hi = plot.panel_axes(plot.grid(signed, vmin=-0.2))[0].images[0].get_clim()
    assert (lo, hi) == (-0.2, 0.2)


def test_many_panels_with_titles_keep_them():
    """A grid of > 150 panels with titles= is drawn panel by panel (a mosaic dropped every
    title); mosaic=True with titles is refused."""
    maps = _maps(16, 10, 4, 4)
    titles = [[f"{r},{c}" for c in range(10)] for r in range(16)]
    fig = plot.grid(maps, titles=titles)
    assert not any(ax.get_label().startswith("mosaic:") for ax in fig.axes)
    drawn = {ax.get_title() for ax in plot.panel_axes(fig)}
    assert {t for row in titles for t in row} <= drawn
    with pytest.raises(ValueError, match="no per-panel titles"):
        plot.grid(maps, titles=titles, mosaic=True)


def test_display_range_of_background_images():
    """A float image in [0, 1.5] is min-max scaled (it was divided by 255: black); 0..255
    images (uint8, or floats above 10) are divided by 255; [0, 1] is kept."""
    from jaxsal.plot import _as_display_image

    img = np.linspace(0, 1.5, 64, dtype=np.float32).reshape(8, 8)
    np.testing.assert_allclose(_as_display_image(img), img / 1.5, rtol=1e-6)
    u8 = (np.arange(64) * 2).astype(np.uint8).reshape(8, 8)  # 0..126: still 0..255 scale
    np.testing.assert_allclose(_as_display_image(u8), u8 / 255.0, rtol=1e-6)
    f255 = u8.astype(np.float32)
    np.testing.assert_allclose(_as_display_image(f255), f255 / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(_as_display_image(img / 1.5), img / 1.5)
    with pytest.raises(ValueError, match=r"channels first\? pass np.moveaxis"):
        _as_display_image(np.zeros((3, 8, 8), np.float32))


def test_image_grid_nan_and_rgba():
    """A NaN image was taken for padding and dropped (2 of 3 panels drawn); RGBA images were
    read as a (T, H, W) grid of 4-pixel-wide panels."""
    imgs = np.random.RandomState(0).rand(3, 8, 8).astype(np.float32)
    imgs[1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        plot.image_grid(imgs, titles=["a", "b", "c"])
    rgba = np.random.RandomState(1).rand(2, 16, 16, 4).astype(np.float32)
    assert plot.count_panels(plot.image_grid(rgba)) == 2
    zeros = np.zeros((3, 8, 8), np.float32)  # all-zero images are images, not padding
    assert plot.count_panels(plot.image_grid(zeros, ncols=2)) == 3


def test_feature_maps_padding_keeps_the_shared_scale(mnist_x):
    """The padding panels (zeros) pulled the shared scale down to 0 for activations in
    [5, 10]; the scale is now the shown channels' own."""
    acts = 5 + 5 * np.random.RandomState(0).rand(6, 6, 10).astype(np.float32)
    fig = plot.feature_maps(acts)
    assert plot.count_panels(fig) == 10
    lo, hi = plot.panel_axes(fig)[0].images[0].get_clim()
    assert lo == pytest.approx(acts.min()) and hi == pytest.approx(acts.max())
    m, x = mnist_x
    with pytest.raises(ValueError, match="max_maps"):
        plot.feature_maps(acts, max_maps=0)
    with pytest.raises(ValueError, match="max_filters"):
        plot.filters(m, "conv2d_1", max_filters=0)
    with pytest.raises(ValueError, match=r"filters: expected channel as an int in \[0, 31\] "
                                         r"\(an input channel of the kernel\) or None, got 99"):
        plot.filters(m, "conv2d_2", channel=99)
    with pytest.raises(TypeError, match="floating-point"):
        plot.feature_maps(m, (np.asarray(x[:1]) * 255).astype(np.uint8), "conv2d_1")


@pytest.mark.parametrize("value_range", [(1.0, 0.0), (0.5, 0.5), (0.0, np.nan), (0.0,)])
def test_image_grid_refuses_a_value_range_that_is_not_lo_below_hi(value_range):
    # (1, 0) drew every image in [0, 1) black (its values minus 1, clipped), silently
    with pytest.raises(ValueError, match=r"image_grid: expected value_range(\[1\] \(high\))? as "):
        plot.image_grid(np.zeros((2, 8, 8)), value_range=value_range)


def test_one_input_image_for_every_row_whatever_the_number_of_rows():
    """One (H, W, c) input with as many rows as the grid has rows was read as R images of
    (W, c): strips one pixel wide. It is one image, shown whole beside every row."""
    img = np.random.RandomState(0).rand(8, 8, 1).astype(np.float32)
    for inputs in (img, np.repeat(img, 3, -1)):
        fig = plot.grid(_maps(8, 2, 8, 8), inputs=inputs)
        shown = [ax for ax in plot.panel_axes(fig, inputs=True) if ax.get_label() == "input"]
        assert len(shown) == 8
        assert all(ax.images[0].get_array().shape[:2] == (8, 8) for ax in shown)


def test_background_images_channels_first_or_not_finite_are_refused():
    """A channels-first (3, H, W) image under a map failed with "(3, 1) do not broadcast to
    the 1x1 grid"; a NaN image was drawn black without a word (a RuntimeWarning at most)."""
    img = np.random.RandomState(0).rand(8, 8, 3).astype(np.float32)
    m = _maps(1, 1, 8, 8)[0, 0]
    with pytest.raises(ValueError, match=r"channels first\? pass np.moveaxis\(image, 0, -1\)"):
        plot.overlay(np.moveaxis(img, -1, 0), m)
    bad = img.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="images contain NaN or inf"):
        plot.overlay(bad, m)
    with pytest.raises(ValueError, match="inputs contain NaN or inf"):
        plot.grid(_maps(1, 2, 8, 8), inputs=bad)


def test_sequences_refuse_what_cannot_be_drawn():
    """NaN attributions were drawn as gaps (white tokens) without a word where grid refuses
    them; a NaN signal failed inside matplotlib; no tokens failed in NumPy's fmin."""
    a = np.array([0.5, np.nan, -0.2])
    with pytest.raises(ValueError, match="tokens: attributions contain NaN or inf"):
        plot.tokens(["a", "b", "c"], a)
    with pytest.raises(ValueError, match="signal: attributions contain NaN or inf"):
        plot.signal(np.zeros(3), a)
    with pytest.raises(ValueError, match="signal: x contains NaN or inf"):
        plot.signal(np.array([0.0, np.inf, 1.0]), np.zeros(3))
    with pytest.raises(ValueError, match=r"tokens: expected at least one token, got 0"):
        plot.tokens([], np.zeros(0))


def test_counts_of_the_image_grids_are_checked():
    """ncols=-1 failed in a reshape, 2.5 and True in math, 0 was read as the default;
    feature_maps' max_maps=2.5 failed in a slice, channels=[] divided by zero and
    channels=[1.5] showed channel 1."""
    imgs = np.random.RandomState(0).rand(4, 8, 8, 1)
    for fn, arg in ((plot.image_grid, imgs), (plot.feature_maps, imgs[0].repeat(4, -1)),
                    (plot.filters, imgs[..., 0].transpose(1, 2, 0)[:3, :3, None])):
        for bad in (-1, 0, 2.5, True):
            with pytest.raises(ValueError, match=rf"expected ncols as an int >= 1 .*{bad!r}"):
                fn(arg, ncols=bad)
        assert plot.count_panels(fn(arg, ncols=np.int64(3))) == 4
    acts = imgs[0].repeat(4, -1)
    with pytest.raises(ValueError, match=r"feature_maps: expected max_maps as an int >= 1 .*2\.5"):
        plot.feature_maps(acts, max_maps=2.5)
    with pytest.raises(ValueError, match=r"channels: expected channel indices \(ints\).*1\.5"):
        plot.feature_maps(acts, channels=[1.5])
    with pytest.raises(ValueError, match=r"channels: expected at least one channel, got \[\]"):
        plot.feature_maps(acts, channels=[])


def test_one_map_functions_say_how_to_draw_other_shapes():
    """heatmap of an (N, T, H, W) batch or of a 1-D map said "Reduce the channel axis
    first", which does not apply."""
    rng = np.random.RandomState(0)
    with pytest.raises(ValueError, match=r"got \(2, 3, 8, 8\).*maps\[i, t\].*plot.grid"):
        plot.heatmap(rng.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"got \(16,\).*plot.signal"):
        plot.heatmap(rng.rand(16))
    with pytest.raises(ValueError, match=r"\(8, 8, 3\).*Reduce the channel axis"):
        plot.heatmap(rng.rand(8, 8, 3))


def test_title_of_a_narrow_figure_is_not_cut_off():
    """A figure of one or two panels was narrower than its title and scale caption, which
    were cut off at both edges (scale="panel"'s warning that colours are not comparable
    among them); the figure widens, the panels keep their size."""
    rs = np.random.RandomState(0)
    one = plot.grid(rs.rand(1, 1, 20, 20), scale="panel")
    _texts_inside(one)
    assert "not comparable" in one._suptitle.get_text()
    w = plot.panel_axes(one)[0].get_position().width * one.get_size_inches()[0]
    assert abs(w - 1.4) < 1e-6  # panel_size, inches
    _texts_inside(plot.image_grid(rs.rand(1, 20, 20, 3)))
    _texts_inside(plot.image_grid(rs.rand(2, 20, 20, 3), title="class 3, 256 steps"))
    _texts_inside(plot.heatmap(rs.rand(20, 20), size=1.0))
    _texts_inside(plot.filters(rs.randn(3, 3, 1, 2).astype(np.float32)))
    _texts_inside(plot.filters(rs.randn(3, 3, 3, 2).astype(np.float32)))


def test_channels_first_images_under_maps_are_refused_not_split_into_channels():
    """The (N, 3, H, W) inputs of a channels-first model passed as images= under maps of 3
    classes were read as a grid of gray images: panel t showed channel t of the image (a red
    square seen only under class 0). They are refused with both readings' fixes; moved
    channels-last they draw each image in colour under every class of its row."""
    H, W = 12, 16
    x = np.zeros((2, H, W, 3), np.float32)
    x[:, 2:6, 9:14, 0] = 1.0  # a red square, only in channel 0
    maps = np.zeros((2, 3, H, W), np.float32)
    maps[..., 0, 0] = 1.0  # non-constant maps, 0 under the square
    cf = np.moveaxis(x, -1, 1)  # (2, 3, H, W)
    for m_, bad in ((maps, cf), (maps[:1], cf[:1])):
        with pytest.raises(ValueError, match=r"channels-first.*np\.moveaxis\(images, 1, -1\)"):
            plot.grid(m_, images=bad)
    with pytest.raises(ValueError, match="channels-first"):  # 10 classes: no longer a
        plot.grid(np.zeros((2, 10, H, W)) + maps[:, :1], images=cf)  # bare broadcast error
    fig = plot.grid(maps, images=np.moveaxis(cf, 1, -1), alpha=0.5)
    for ax in plot.panel_axes(fig):
        bg = np.asarray(ax.get_images()[0].get_array())
        np.testing.assert_array_equal(bg[3, 10], [1.0, 0.0, 0.0])  # red under every class
    # a real grid of gray images, one per panel, is passed with its trailing axis
    fig = plot.grid(maps, images=cf[..., None], alpha=0.5)
    shown = [np.asarray(ax.get_images()[0].get_array())[3, 10] for ax in plot.panel_axes(fig)]
    assert shown == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    # channels-first gray images (N, 1, H, W) are one image per row, as before
    fig = plot.grid(maps, images=cf[:, :1])
    assert [float(np.asarray(ax.get_images()[0].get_array())[3, 10])
            for ax in plot.panel_axes(fig)] == [1.0] * 6


def test_images_of_another_size_name_resize():
    with pytest.raises(ValueError, match=r"jaxsal\.resize\(maps, image\.shape\[:2\]\)"):
        plot.overlay(np.zeros((24, 36, 3)), np.random.RandomState(0).rand(4, 6))


def test_one_row_of_maps_with_one_image_per_map_names_the_fix():
    """Maps of the predicted class (targets=None) are (N, H, W): one row of N maps. Passed
    with the N inputs, grid said only 'expected 1 images'; the error now names maps[:, None],
    which draws one row per input."""
    rs = np.random.RandomState(0)
    x = rs.rand(4, 12, 12, 1)
    maps = rs.rand(4, 12, 12)
    fix = re.escape("pass maps[:, None] (4, 1, 12, 12)")
    for kw in (dict(inputs=x), dict(inputs=x[..., 0]), dict(images=x), dict(images=x[..., 0])):
        with pytest.raises(ValueError, match=fix):
            plot.grid(maps, **kw)
    fig = plot.grid(maps[:, None], inputs=x, images=x)
    assert plot.count_panels(fig) == 4 and plot.count_panels(fig, inputs=True) == 8
    with pytest.raises(ValueError) as e:  # 3 images for one row of 4 maps: no such hint
        plot.grid(maps, inputs=x[:3])
    assert "maps[:, None]" not in str(e.value)


def test_mosaic_with_inputs_larger_than_the_maps():
    """More than 150 low-resolution maps (CAMs without upsampling) with their full-size
    inputs failed in the mosaic with NumPy's 'could not broadcast (28,28,1) into (7,7,3)',
    where 150 of them drew. The map tiles are enlarged k times (nearest, as panels draw
    them) and the inputs fill tiles of that size; inputs of another aspect ratio are drawn
    panel by panel (mosaic=True refuses them)."""
    rs = np.random.RandomState(0)
    x = rs.rand(16, 28, 28, 1)
    maps = rs.rand(16, 10, 7, 7)
    fig = plot.grid(maps, inputs=x, vmin=0, vmax=1, cmap="gray")
    (ax,) = [a for a in fig.axes if a.get_label() == "mosaic:16x10"]
    big = np.asarray(ax.get_images()[0].get_array())
    sep = 2  # max(1, H // 14) of the 28-pixel tiles
    for r in (0, 15):
        y = r * (28 + sep)
        np.testing.assert_allclose(big[y:y + 28, :28, 0], x[r, ..., 0], atol=1e-6)
        for c in (0, 9):
            x0 = (c + 1) * (28 + sep) + 2 * sep
            tile = np.repeat(np.repeat(maps[r, c], 4, 0), 4, 1)  # gray cmap: value = level
            np.testing.assert_allclose(big[y:y + 28, x0:x0 + 28, 0], tile, atol=2 / 255)
    # inputs of 14x14: map tiles enlarged 2x, the inputs drawn as they are
    fig = plot.grid(maps, inputs=x[:, ::2, ::2], vmin=0, vmax=1, cmap="gray")
    big = np.asarray(fig.axes[0].get_images()[0].get_array())
    np.testing.assert_allclose(big[:14, :14, 0], x[0, ::2, ::2, 0], atol=1e-6)
    # inputs larger than tiles of 64 pixels: 96 -> 64 pixels, each the mean of those in it
    x96 = np.repeat(np.repeat(x, 4, 1), 4, 2)[:, :96, :96]
    fig = plot.grid(rs.rand(16, 10, 8, 8), inputs=x96, vmin=0, vmax=1)
    big = np.asarray(fig.axes[0].get_images()[0].get_array())
    np.testing.assert_allclose(big[:64, :64, 0].mean(), x96[0].mean(), atol=0.02)
    # another aspect ratio: panel by panel, not distorted into square tiles
    fig = plot.grid(maps, inputs=rs.rand(16, 28, 56, 3))
    assert plot.count_panels(fig) == 160 and not any(
        a.get_label().startswith("mosaic:") for a in fig.axes)
    with pytest.raises(ValueError, match="aspect ratio.*mosaic=False"):
        plot.grid(maps, inputs=rs.rand(16, 28, 56, 3), mosaic=True)


def test_signal_channels_first_x_is_named_not_blamed_on_the_attributions():
    """A channels-first Conv1D model's input (C, L) passed to signal failed with 'expected
    attributions of shape (2,) or (R, 2)', blaming correct attributions; the error now says x
    reads as 2 samples and names x.T, which draws."""
    rs = np.random.RandomState(0)
    x_cf, att = rs.rand(2, 64), rs.rand(3, 64)
    for a in (att, att[0]):
        with pytest.raises(ValueError, match=r"x of shape \(2, 64\).*pass x\.T"):
            plot.signal(x_cf, a)
    fig = plot.signal(x_cf.T, att)
    assert plot.count_panels(fig) == 3
    lines = plot.panel_axes(fig)[0].get_lines()
    np.testing.assert_allclose(lines[0].get_ydata(), x_cf[0])  # channel 0 over time
    with pytest.raises(ValueError, match="expected attributions of shape"):  # wrong length
        plot.signal(x_cf.T, rs.rand(3, 16))


def test_constant_images_are_not_drawn_black():
    """image_grid stretches each image to its own min..max; a constant image (a filter that
    never fires, an all-white input) has none and was drawn black whatever its value. It is
    drawn at its value where that lies in [0, 1], mid-gray otherwise; likewise a constant
    input column outside [0, 1] (was black)."""
    vals = [1.0, 0.0, 0.3, 7.0, -2.0]
    imgs = np.stack([np.full((8, 8, 3), v, np.float32) for v in vals])
    fig = plot.image_grid(imgs)
    shown = [float(np.asarray(ax.get_images()[0].get_array())[4, 4, 0])
             for ax in plot.panel_axes(fig)]
    np.testing.assert_allclose(shown, [1.0, 0.0, 0.3, 0.5, 0.5], atol=1e-6)
    gray = plot.image_grid(imgs[:, ..., :1])
    shown = [float(np.asarray(ax.get_images()[0].get_array())[4, 4])
             for ax in plot.panel_axes(gray)]
    np.testing.assert_allclose(shown, [1.0, 0.0, 0.3, 0.5, 0.5], atol=1e-6)
    fig = plot.grid(np.random.RandomState(0).rand(1, 2, 8, 8), inputs=np.full((8, 8), -2.0))
    (ax,) = plot.panel_axes(fig, inputs=True)[:1]
    assert float(np.asarray(ax.get_images()[0].get_array())[0, 0]) == 0.5


def _bar_labels(fig, ticks=None):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.ticker import FixedLocator

    (cax,) = _colorbars(fig)
    if ticks is not None:
        cax.yaxis.set_major_locator(FixedLocator(ticks))
    FigureCanvasAgg(fig).draw()
    lo, hi = cax.get_ylim()
    return [lab.get_text() for t, lab in zip(cax.get_yticks(), cax.get_yticklabels())
            if lo <= t <= hi]


def test_colour_bar_ticks_share_one_notation_and_enough_digits():
    """A bar up to 0.0175 labelled its ticks '8.0e-03' and then '0.01', '0.012' (two
    notations on one bar), and a 1.25e-03 tick read '1.2e-03'. Ticks now share one notation
    and carry the digits they need."""
    m = np.random.RandomState(0).rand(10, 10) * 0.0175
    labels = _bar_labels(plot.heatmap(m, vmin=0, vmax=0.0175))
    assert len(labels) >= 4 and not any("e" in t for t in labels), labels
    assert len({len(t.split(".")[1]) for t in labels if t != "0"}) == 1, labels  # decimals
    ticks = [0, 2.5e-4, 5e-4, 7.5e-4, 1e-3, 1.25e-3]
    labels = _bar_labels(plot.heatmap(m * 0.1, vmin=0, vmax=1.3e-3), ticks)
    assert labels == ["0", "2.50e-04", "5.00e-04", "7.50e-04", "1.00e-03", "1.25e-03"]
    assert [float(t) for t in labels] == ticks
    labels = _bar_labels(plot.heatmap(m * 1e6, vmin=0, vmax=17500))
    assert all("e+0" in t for t in labels if t != "0"), labels
    assert _bar_labels(plot.heatmap(m, vmin=0, vmax=1), [0, 0.5, 1]) == ["0", "0.5", "1.0"]


def test_all_negative_map_is_drawn_diverging_not_inverted():
    """A map with only negative values (a class every pixel argues against, signed
    gradient x input) was drawn on jet from its min to 0: the zero background took jet's top
    colour (dark red) and the strongest pixels its bottom one (dark blue), a picture that
    reads as its opposite. It is now signed: diverging, centred at 0, so 0 is white and the
    strongest pixels the darkest blue."""
    import matplotlib

    yy, xx = np.mgrid[0:12, 0:16]
    m = -np.exp(-((yy - 3) ** 2 + (xx - 11) ** 2) / 8.0)  # peak -1 at (3, 11), ~0 elsewhere
    rdbu = matplotlib.colormaps["RdBu_r"]
    for fig in (plot.heatmap(m), plot.grid(np.stack([m, 0.5 * m])[None])):
        ax = plot.panel_axes(fig)[0]
        im = ax.get_images()[0]
        rgba = im.to_rgba(np.asarray(im.get_array()))
        np.testing.assert_allclose(rgba[11, 0], rdbu(0.5), atol=0.02)  # 0: the centre
        np.testing.assert_allclose(rgba[3, 11], rdbu(0.0), atol=1e-6)  # -1: darkest blue
        assert "centred at 0" in fig._suptitle.get_text()
    # all-positive maps keep the sequential default; rounding noise below 0 does not count
    p = -m
    p[0, 0] = -1e-6
    assert plot.heatmap(p).axes[0].get_images()[0].get_cmap().name == "jet"


def test_shape_errors_name_channels_first_and_swapped_arguments():
    """Maps kept channels-first (reduce=None of a channels-first model) were told to
    a.max(-1), which reduces a spatial axis; overlay(map, image) was told to reduce the
    image's channels. The errors now name the channel axis and the argument order."""
    rs = np.random.RandomState(0)
    with pytest.raises(ValueError, match=r"reduce_channels\(maps, axis=2\)"):
        plot.grid(rs.rand(2, 3, 3, 12, 12))
    with pytest.raises(ValueError, match=r"reduce_channels\(maps\) or a\.max\(-1\)"):
        plot.grid(rs.rand(2, 3, 12, 12, 3))
    with pytest.raises(ValueError, match=r"reduce_channels\(map, axis=0\)"):
        plot.heatmap(rs.rand(3, 12, 12))
    with pytest.raises(ValueError) as e:  # ten maps are not channels
        plot.heatmap(rs.rand(10, 12, 12))
    assert "reduce_channels" not in str(e.value)
    for gray in (rs.rand(12, 12), rs.rand(12, 12, 1)):
        with pytest.raises(ValueError, match=r"image first and the map \(H, W\) second"):
            plot.overlay(gray, rs.rand(12, 12, 3))
    assert plot.count_panels(plot.overlay(rs.rand(12, 12, 3), rs.rand(12, 12))) == 1


def test_grid_names_the_channel_axis_of_maps_that_may_be_channels_first():
    """Maps (N, T, C, H, W) of a channels-first model of 2 channels (reduce=None) were told to
    jaxsal.reduce_channels(maps) or a.max(-1), which reduce their width (the grid then drew
    (2, 2, 2, 12) as 2x12 maps). A last axis above 4 may be a width: the error names axis=2
    for channels-first maps and axis=-1 for channels-last ones."""
    maps = np.random.RandomState(1).rand(2, 2, 2, 12, 10)
    with pytest.raises(ValueError) as e:
        plot.grid(maps)
    assert "reduce_channels(maps, axis=2)" in str(e.value)
    assert "reduce_channels(maps) or" not in str(e.value)
    assert "(N, T, H, W, C): jaxsal.reduce_channels(maps, axis=-1)" in str(e.value)
    reduced = jaxsal.reduce_channels(maps, axis=2)
    np.testing.assert_allclose(reduced, np.abs(maps).max(2), rtol=1e-6)
    assert plot.count_panels(plot.grid(reduced)) == 4


def test_signed_maps_with_asymmetric_limits_keep_white_at_zero():
    """vmin=-0.1, vmax=0.5 on signed maps spread the whole diverging map over [-0.1, 0.5]:
    white fell at 0.2 and small positive values were drawn blue, as if negative, under a
    caption saying 'centred at 0'. The part of the map the limits cover is used, so 0 stays
    white and each value keeps the colour it has on the symmetric scale [-0.5, 0.5]."""
    import matplotlib

    rdbu = matplotlib.colormaps["RdBu_r"]
    maps = np.zeros((1, 2, 6, 6))
    maps[0, 0, 0, :4] = [-0.1, 0.0, 0.1, 0.5]
    maps[0, 1, 0, :3] = [-1.0, 0.25, 1.0]  # beyond the limits: clipped to their colours
    want = {(0, 0): 0.4, (0, 1): 0.5, (0, 2): 0.6, (0, 3): 1.0}
    for mosaic in (False, True):
        fig = plot.grid(maps, vmin=-0.1, vmax=0.5, mosaic=mosaic)
        if mosaic:
            big = np.asarray(fig.axes[0].get_images()[0].get_array())
            panel = big[:6, :6]
        else:
            im = plot.panel_axes(fig)[0].get_images()[0]
            panel = im.to_rgba(np.asarray(im.get_array()))[..., :3]
        for (i, j), pos in want.items():
            np.testing.assert_allclose(panel[i, j], rdbu(pos)[:3], atol=0.01)
        assert "centred at 0" in fig._suptitle.get_text()
    # an all-negative map with vmin=-1, vmax=0: white at 0, the darkest blue at -1
    im = plot.panel_axes(plot.heatmap(-np.eye(5), vmin=-1, vmax=0))[0].get_images()[0]
    rgba = im.to_rgba(np.asarray(im.get_array()))
    np.testing.assert_allclose(rgba[0, 1], rdbu(0.5), atol=0.01)
    np.testing.assert_allclose(rgba[0, 0], rdbu(0.0), atol=0.01)


def test_gray_images_one_per_row_when_their_number_equals_the_height():
    """images= of R gray images (R, H, W) with R == H (28 MNIST digits) was read as one
    (H, W, c) image of 28 channels and refused; it is one image per row, as for R != H."""
    rs = np.random.RandomState(0)
    x = rs.rand(28, 28, 28)
    fig = plot.grid(rs.rand(28, 2, 28, 28), images=x, mosaic=False)
    panels = plot.panel_axes(fig)
    for r in (0, 27):
        for c in (0, 1):
            bg = np.asarray(panels[2 * r + c].get_images()[0].get_array())
            np.testing.assert_allclose(bg, x[r], atol=1e-6)
    # one (H, W, c) image for every panel still reads as such
    one = rs.rand(28, 28, 3)
    fig = plot.grid(rs.rand(3, 2, 28, 28), images=one)
    np.testing.assert_allclose(
        np.asarray(plot.panel_axes(fig)[5].get_images()[0].get_array()), one, atol=1e-6)


def test_figures_have_a_png_form_for_notebooks_without_the_inline_backend():
    """A figure made without pyplot was shown in Jupyter as '<Figure size 392x342 with 2
    Axes>' unless matplotlib's inline backend had been activated (%matplotlib inline, or an
    import of pyplot): IPython's PNG formatter found no printer and no _repr_png_. Every
    figure of this module now has one: the figure as drawn."""
    PNGFormatter = pytest.importorskip("IPython.core.formatters").PNGFormatter
    rs = np.random.RandomState(0)
    figs = [plot.heatmap(rs.rand(8, 8)), plot.grid(_maps(2, 3)),
            plot.image_grid(rs.rand(2, 8, 8, 3)), plot.tokens(["a", "b"], [0.1, 0.2]),
            plot.signal(rs.rand(16), rs.rand(16))]
    for fig in figs:
        data = PNGFormatter()(fig)  # a formatter with no type printers: IPython's default
        assert isinstance(data, bytes) and data[:8] == b"\x89PNG\r\n\x1a\n"
        import io

        img = mpimg.imread(io.BytesIO(data))
        w, h = fig.get_size_inches() * fig.dpi
        # the figure's own size in pixels (matplotlib 3.7 truncates, later ones round)
        assert abs(img.shape[0] - h) < 1 and abs(img.shape[1] - w) < 1, (img.shape, h, w)
        assert float(img[..., :3].std()) > 0.01


def test_a_figure_reads_as_a_figure():
    """A cell's text form of a figure (and repr()) read '<_Figure size 392x342 with 2 Axes>'
    (62e7cd3's private subclass, seen in examples/tour.ipynb); it reads as matplotlib's own."""
    from matplotlib.figure import Figure

    fig = plot.heatmap(np.random.RandomState(0).rand(8, 8))
    w, h = fig.get_size_inches() * fig.dpi
    assert repr(fig) == repr(Figure(figsize=fig.get_size_inches())).replace("0 Axes", "2 Axes")
    assert repr(fig) == f"<Figure size {w:g}x{h:g} with 2 Axes>"


def test_long_titles_of_narrow_figures_are_not_cut_off():
    """The column title of a one-column grid, and the title of a tokens, signal or curves
    figure narrower than it, were cut off at both edges; the figure widens."""
    rs = np.random.RandomState(0)
    long = "integrated gradients at the embedding, class 1 (GOOD, GREAT), sentence 17"
    fig = plot.grid(rs.rand(2, 1, 8, 8), col_titles=[long], row_titles=["a", "b"])
    _texts_inside(fig)
    w = plot.panel_axes(fig)[0].get_position().width * fig.get_size_inches()[0]
    assert abs(w - 1.4) < 1e-6  # the panel keeps its size
    _texts_inside(plot.tokens(list("abcdef"), rs.rand(6), title=long, width=4))
    _texts_inside(plot.signal(rs.rand(64), rs.rand(2, 64), title=long * 2))

    class C:  # a Curves result
        fractions, scores, auc = np.linspace(0, 1, 5), rs.rand(3, 5), rs.rand(3)

    _texts_inside(plot.curves({"saliency": C()}, title=long))


def test_one_gray_image_per_column_of_three_is_still_drawn():
    """ca6d086 refuses (N, 3, H, W) images (a channels-first model's x); a lone (1, C, H, W)
    over several rows, the documented one gray image per column, is not that and draws."""
    rs = np.random.RandomState(0)
    cols = rs.rand(1, 3, 10, 12)
    fig = plot.grid(rs.rand(2, 3, 10, 12), images=cols)
    for i, ax in enumerate(plot.panel_axes(fig)):
        np.testing.assert_allclose(np.asarray(ax.get_images()[0].get_array()), cols[0, i % 3],
                                   atol=1e-6)
    with pytest.raises(ValueError, match="channels-first"):  # one row: x[:1] of such a model
        plot.grid(rs.rand(1, 3, 10, 12), images=cols)


def test_figures_pickle():
    """Figures pickle (to cache or send them), colour bars included: 6b987ca's tick
    formatter, a class local to a function, could not be pickled."""
    import pickle

    rs = np.random.RandomState(0)
    for fig in (plot.heatmap(rs.rand(8, 8)), plot.grid(_maps(2, 2, signed=True), scale="column"),
                plot.image_grid(rs.rand(2, 8, 8, 1), value_range=(0, 1)),
                plot.grid(_maps(20, 10))):
        again = pickle.loads(pickle.dumps(fig))
        assert plot.count_panels(again) == plot.count_panels(fig)
        assert again._repr_png_()[:4] == b"\x89PNG"


def test_dark_0_255_images_are_divided_by_255_like_the_others():
    """A uint8 image whose maximum is at most 10 (a dark photo) was min-max scaled, drawn
    white: grid converted the images to float32 first, and overlay/heatmap too, so they were
    not known as integers. A dark float 0..255 image among bright ones was stretched while
    the others were divided by 255. The display rule is now read from the dtype and from all
    the images (or inputs) of a figure."""
    dark = np.zeros((8, 8), np.uint8)
    dark[2:5, 2:5] = 8
    rs = np.random.RandomState(0)
    maps = rs.rand(1, 2, 8, 8)
    shown = plot.panel_axes(plot.overlay(dark, maps[0, 0]))[0].images[0].get_array()
    np.testing.assert_allclose(shown, dark / 255.0, rtol=1e-6)
    for mosaic in (False, True):
        f = plot.grid(maps, inputs=dark, mosaic=mosaic)
        drawn = (plot.panel_axes(f, inputs=True)[0].images[0].get_array() if not mosaic
                 else f.axes[0].images[0].get_array()[:8, :8, 0])
        np.testing.assert_allclose(drawn, dark / 255.0, rtol=1e-6)
    x = (rs.rand(3, 8, 8) * 255).astype(np.float32)
    x[1] *= 0.03  # max about 7.6: alone it reads as a [0, 1.5]-like image
    f = plot.grid(rs.rand(3, 1, 8, 8), images=x[:, None], inputs=x)
    for ax, want in zip(plot.panel_axes(f), x):
        np.testing.assert_allclose(ax.images[0].get_array(), want / 255.0, rtol=1e-6)
    inputs = [ax for ax in plot.panel_axes(f, inputs=True) if ax.get_label() == "input"]
    for ax, want in zip(inputs, x):
        np.testing.assert_allclose(ax.images[0].get_array(), want / 255.0, rtol=1e-6)


def test_colour_maps_by_name_or_object_everywhere():
    """tokens and signal looked cmap up as a dictionary key: a matplotlib Colormap (which grid
    takes) failed with "unhashable type", and an unknown name raised a KeyError there and in
    mosaics (a ValueError elsewhere). Every function takes both and refuses an unknown name
    with a ValueError naming close ones."""
    import matplotlib

    viridis = matplotlib.colormaps["viridis"]
    a = np.linspace(0.0, 1.0, 5)
    f = plot.tokens(list("abcde"), a, cmap=viridis, colorbar=False)
    boxes = [t.get_bbox_patch().get_facecolor() for t in f.axes[0].texts]
    np.testing.assert_allclose(boxes[-1], viridis(1.0))
    f = plot.signal(a, a, cmap=viridis)
    assert plot.panel_axes(f)[0].images[0].get_cmap() is viridis
    maps = np.random.RandomState(0).rand(2, 2, 4, 4)
    calls = [lambda c: plot.tokens(list("abcde"), a, cmap=c),
             lambda c: plot.signal(a, a, cmap=c),
             lambda c: plot.grid(maps, cmap=c),
             lambda c: plot.grid(maps, cmap=c, mosaic=True),
             lambda c: plot.image_grid(np.zeros((2, 8, 8)), cmap=c, value_range=(0, 1))]
    for call in calls:
        with pytest.raises(ValueError, match=r"cmap: expected .* got 'viridsi'; did you mean "
                                             r"'viridis'"):
            call("viridsi")
    with pytest.raises(TypeError, match="cmap: expected the name"):
        plot.grid(maps, cmap=3)


def test_save_to_a_file_object():
    """save= took paths only (os.fspath of an io.BytesIO raised a TypeError); Figure.savefig
    writes to a binary file object too, as PNG."""
    import io

    buf = io.BytesIO()
    plot.heatmap(np.random.RandomState(0).rand(8, 8), save=buf)
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(TypeError, match=r"save: expected a path .* got 3"):
        plot.heatmap(np.zeros((8, 8)), save=3)


def test_image_grid_refuses_no_images_and_names_channels_first_from_the_titles():
    """No images failed with a ZeroDivisionError; (T, 3, H, W) images (a channels-first
    model's maximize result) with one title per image failed with "expected Tx3 titles",
    without the fix (channels_first=True), although the titles say they are T images."""
    for empty in (np.zeros((0, 8, 8)), np.zeros((0, 8, 8, 3)), np.zeros((2, 0, 8, 8))):
        with pytest.raises(ValueError, match=r"images: expected at least one image"):
            plot.image_grid(empty)
    first = np.random.RandomState(0).rand(4, 3, 8, 8)
    with pytest.raises(ValueError, match=r"expected 4x3 titles .* pass channels_first=True"):
        plot.image_grid(first, titles=list("abcd"))
    f = plot.image_grid(first, titles=list("abcd"), channels_first=True)
    assert [ax.get_title() for ax in plot.panel_axes(f)] == list("abcd")
    assert plot.count_panels(plot.image_grid(first, titles=np.arange(12).reshape(4, 3))) == 12


def test_a_0_1_image_off_by_rounding_is_not_stretched():
    """An image in [0.25, 1] whose maximum is 1 + 1e-7 (computed as x * std + mean, or
    resized) read as 'anything else' and was min-max scaled: 0.25 drawn black. Values within
    1e-5 of [0, 1] are a [0, 1] image, clipped."""
    from jaxsal.plot import _as_display_image

    img = np.linspace(0.25, 1, 64, dtype=np.float32).reshape(8, 8)
    img[-1, -1] = np.nextafter(np.float32(1), np.float32(2))
    np.testing.assert_array_equal(_as_display_image(img), np.clip(img, 0, 1))
    low = img - 0.25 - 1e-7  # min just below 0
    np.testing.assert_array_equal(_as_display_image(low), np.clip(low, 0, 1))
    wide = img * 1.01  # beyond rounding: min-max scaled, as documented
    assert float(_as_display_image(wide).min()) == 0.0


def _mosaic_pixels(fig):
    (ax,) = [a for a in fig.axes if a.get_label().startswith("mosaic:")]
    return np.asarray(ax.get_images()[0].get_array()).astype(np.float64)


def test_image_grid_of_many_images_is_one_mosaic(tmp_path):
    """image_grid drew one axes per image: the 1000 classes of ImageNet took about 20 s and
    600 MB (2-core VM). More than 150 images without titles are one picture: tiles of at
    most 64 pixels a side, larger images averaged down (analytic: 2x2 block means), each
    scaled as its panel would be; titles keep the panels, and mosaic=True refuses them."""
    rng = np.random.default_rng(0)
    imgs = rng.uniform(size=(151, 6, 5, 3)).astype(np.float32)
    fig = plot.image_grid(imgs, value_range=(0, 1), ncols=10, save=tmp_path / "m.png")
    assert plot.count_panels(fig) == 151
    big = _mosaic_pixels(fig)
    sep = 1
    for i in (0, 37, 150):
        r, c = divmod(i, 10)
        tile = big[r * (6 + sep):r * (6 + sep) + 6, c * (5 + sep):c * (5 + sep) + 5]
        np.testing.assert_allclose(tile, imgs[i] * 255, atol=0.51)
    assert "rows labelled by their first image (10 per row)" in fig._suptitle.get_text()
    _png_ok(tmp_path / "m.png")
    large = rng.uniform(-2, 2, size=(151, 128, 64)).astype(np.float32)  # own min..max each
    big = _mosaic_pixels(plot.image_grid(large, ncols=10, cmap="gray"))
    i = 23
    v = (large[i] - large[i].min()) / (large[i].max() - large[i].min())
    want = v.reshape(64, 2, 32, 2).mean(axis=(1, 3))
    r, c = divmod(i, 10)
    sep = 64 // 14
    tile = big[r * (64 + sep):r * (64 + sep) + 64, c * (32 + sep):c * (32 + sep) + 32, 0]
    np.testing.assert_allclose(tile, want * 255, atol=1.5)  # the colour map's 256 steps
    titles = [str(k) for k in range(151)]
    small = imgs[:, :2, :2]
    fig = plot.image_grid(small, titles=titles)
    assert plot.count_panels(fig) == 151
    assert not any(a.get_label().startswith("mosaic:") for a in fig.axes)
    with pytest.raises(ValueError, match="mosaic=True draws no per-image titles"):
        plot.image_grid(small, titles=titles, mosaic=True)
    assert plot.count_panels(plot.image_grid(small[:4], mosaic=True)) == 4


def test_empty_maps_are_named_as_given():
    """heatmap of an (0, 4) map said 'expected at least one map, got shape (1, 1, 0, 4)'
    (its internal grid), grid's maps of zero pixels 'at least one map'; overlay's and
    diverging's said 'heatmap:'."""
    with pytest.raises(ValueError, match=r"heatmap: expected a map of at least one pixel, "
                                         r"got shape \(0, 4\)"):
        plot.heatmap(np.zeros((0, 4)))
    # overlay and diverging (which draw a heatmap) named heatmap, not the function called
    for name, draw in (("overlay", lambda m: plot.overlay(np.zeros((0, 4, 3)), m)),
                       ("diverging", plot.diverging)):
        with pytest.raises(ValueError, match=rf"^{name}: expected a map of at least one "
                                             r"pixel, got shape \(1, 0, 4\)"):
            draw(np.zeros((1, 0, 4)))
        with pytest.raises(ValueError, match=rf"^{name}: expected a map of shape \(H, W\) "
                                             r"or \(H, W, 1\), got \(4,\)"):
            draw(np.zeros(4))
    with pytest.raises(ValueError, match=r"maps of at least one pixel.*\(2, 3, 4, 0\)"):
        plot.grid(np.zeros((2, 3, 4, 0)))
    with pytest.raises(ValueError, match=r"at least one map, got shape \(0, 3, 4, 4\)"):
        plot.grid(np.zeros((0, 3, 4, 4)))


def test_grid_of_more_columns_than_a_figure_can_show_names_the_fixes():
    """maps (N, 1000, H, W) (every ImageNet class) were drawn as a mosaic 500 inches wide
    (60,000 pixels at 120 dpi), which a notebook shrinks to its width. More than 200 columns
    are refused with the fixes: fewer or per-input top targets, or one input's maps in rows
    (a divisor of the count as the row length where there is one)."""
    _refused(plot.grid,
             (np.ones((2, 1000, 2, 2)), r"at most 200 columns, got 1000.*targets=.*"
                                        r"plot\.grid\(maps\[i\]\.reshape\(25, 40, 2, 2\)\)"),
             (np.ones((997, 2, 2)),
              r"one row.*maps\[:, None\].*maps\[:k\]\.reshape\(rows, cols, 2, 2\)"))
    assert plot.count_panels(plot.grid(np.ones((1, 200, 2, 2)))) == 200


def test_maps_near_float32s_range_are_coloured_by_value():
    """matplotlib normalizes float32 data in float32: for a signed map spanning +-3e38,
    x - vmin overflowed and 1e38 took the top colour (inf) in grid's panels and signal's
    rows, and tokens' words. Want (v - vmin) / (vmax - vmin) = (v + m) / 2m, m = max |v|."""
    v = np.array([-3e38, 0.0, 1e38, 3e38], np.float32)
    m = float(np.abs(v).max())
    want = (v.astype(np.float64) + m) / (2 * m)
    im = plot.panel_axes(plot.heatmap(v.reshape(2, 2)))[0].get_images()[-1]
    np.testing.assert_allclose(im.norm(im.get_array()).ravel(), want, rtol=1e-6)
    (im,) = plot.panel_axes(plot.signal(np.zeros(4), v))[0].get_images()
    np.testing.assert_allclose(im.norm(im.get_array()).ravel(), want, rtol=1e-6)
    fig = plot.tokens(["a", "b", "c", "d"], v, colorbar=False)
    got = [t.get_bbox_patch().get_facecolor() for t in fig.axes[0].texts
           if t.get_bbox_patch() is not None]
    cmap = plot._colormap(plot.DIVERGING_CMAP)
    np.testing.assert_allclose(got, cmap(want), atol=1e-6)


def test_one_map_functions_refuse_the_maps_of_several_inputs_clearly():
    """``heatmap``/``overlay`` given a multi-input call's maps (a list or dict, one array per
    input) failed with NumPy's "setting an array element with a sequence" or "float()
    argument must be ... not 'dict'": refused, saying which input's map to draw."""
    img, vec = np.ones((2, 1, 5, 5), np.float32), np.ones((2, 1, 4), np.float32)
    with pytest.raises(ValueError, match=r"heatmap: expected one map \(H, W\), got a list of "
                       r"2 arrays: the maps of several inputs.*maps\[0\]\[i, t\]"):
        plot.heatmap([img, vec])
    with pytest.raises(ValueError, match=r"overlay: .*got a dict of 2 \(img, vec\).*"
                       r"maps\['img'\]\[i, t\]"):
        plot.overlay(np.ones((5, 5, 3)), {"img": img, "vec": vec})
