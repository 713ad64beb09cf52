"""Figures for attribution maps, feature visualizations and model architectures (matplotlib).

Import it explicitly (``import jaxsal`` does not import matplotlib)::

    from jaxsal import plot
    fig = plot.grid(maps, images=x, row_titles=..., col_titles=..., save="maps.png")

Every function returns a :class:`matplotlib.figure.Figure` built without ``pyplot`` (so it
works headless, with no display, and is not kept alive by a global figure registry) and
writes a PNG when ``save=`` names a path; ``fig.savefig(...)`` works as well. In Jupyter the
returned figure is displayed as the cell's value (it has a PNG form of its own, so also
without ``%matplotlib inline``); ``fig.show()`` displays it there, or in a window of a GUI
backend through ``pyplot``, and raises where there is no display.

Colour scales are explicit: ``scale="shared"`` gives every panel one ``vmin``/``vmax`` and
draws one colour bar, so maps of different classes, heads or methods stay comparable;
``"row"``/``"column"`` share within a row/column (one bar each); ``"panel"`` scales each
panel on its own and says so in the figure. Signed maps (with negative values, all-negative
ones too) are shown with a diverging colour map centred at zero.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any, Sequence

import matplotlib
import numpy as np
from matplotlib import cm, colors
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from matplotlib.ticker import Formatter

from jaxsal._src import ints, reals

__all__ = [
    "architecture",
    "count_panels",
    "curves",
    "diverging",
    "feature_maps",
    "filters",
    "grid",
    "heatmap",
    "image_grid",
    "overlay",
    "panel_axes",
    "signal",
    "tokens",
]

DEFAULT_CMAP = "jet"  # what keras-vis users expect; "viridis", "inferno", "magma" are perceptual
DIVERGING_CMAP = "RdBu_r"  # negative blue, zero white, positive red
SCALES = ("shared", "row", "column", "panel")

_TITLE_PT = 11
_LABEL_PT = 9
_TICK_PT = 7
_CHAR_IN = 0.075  # width of one 9 pt character, inches (for margins)
_LINE_IN = 0.17  # height of one 9 pt line, inches
#: matplotlib's backends that write files and draw in no window
_FILE_BACKENDS = frozenset({"agg", "cairo", "pdf", "pgf", "ps", "svg", "template"})


# ----------------------------------------------------------------------------- helpers
class _Figure(Figure):
    """A :class:`~matplotlib.figure.Figure` that a notebook shows as the value of a cell.

    Made without ``pyplot``, a plain ``Figure`` has no PNG form of its own: Jupyter draws it
    only once matplotlib's inline backend has registered one (``%matplotlib inline``, or an
    earlier ``import matplotlib.pyplot``), and otherwise printed ``<Figure size ...>``.
    Where the inline backend is active its printer is used, as for any figure."""

    def __repr__(self) -> str:
        # matplotlib's repr names the class: '<Figure size ...>' as for any figure, not '_Figure'
        return super().__repr__().replace(f"<{type(self).__name__} ", "<Figure ", 1)

    def _repr_png_(self) -> bytes:
        import io

        buf = io.BytesIO()
        self.savefig(buf, format="png", facecolor="white")
        return buf.getvalue()

    def show(self, warn: bool = True) -> None:
        """Display the figure: in a Jupyter (IPython kernel) cell inline, as its value would
        be; elsewhere in a window of matplotlib's GUI backend, handed to ``pyplot`` and shown
        with ``pyplot.show()`` (which blocks in a script until the window is closed). Without
        a display (matplotlib's backend is a file backend such as Agg) it raises, saying how
        to save the figure. ``warn`` is accepted as for ``Figure.show``."""
        shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
        if getattr(shell, "kernel", None) is not None:
            from IPython.display import display

            display(self)
            return
        backend = matplotlib.get_backend()  # resolves an automatic choice (a GUI or Agg)
        if backend.lower() in _FILE_BACKENDS:
            raise RuntimeError(
                f"fig.show(): expected a display to show the figure in, got matplotlib's "
                f"{backend!r} backend, which only writes files (no display, or MPLBACKEND="
                f"{backend}). Save it: fig.savefig('figure.png') or save='figure.png' in the "
                "plot call; in Jupyter the figure shows as a cell's value; for a window set a "
                "GUI backend (matplotlib.use('TkAgg') or 'QtAgg') before plotting")
        import matplotlib.pyplot as plt

        # a window pyplot manages, whose canvas then draws this figure
        manager = plt.figure(figsize=self.get_size_inches(), dpi=self.dpi).canvas.manager
        manager.canvas.figure = self
        self.set_canvas(manager.canvas)
        plt.show()


def _np(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def _finish(fig: Figure, save, dpi: int) -> Figure:
    """Write ``fig`` to ``save``: a path (its folder made; the format from its extension) or
    an open binary file (``io.BytesIO``: PNG), as ``Figure.savefig`` takes (a file object
    failed in ``os.fspath``)."""
    if save is not None:
        if isinstance(save, (str, bytes, os.PathLike)):
            os.makedirs(os.path.dirname(os.path.abspath(os.fsdecode(save))), exist_ok=True)
        elif not callable(getattr(save, "write", None)):
            raise TypeError(f"save: expected a path (str or os.PathLike) or a binary file "
                            f"object with .write (io.BytesIO), got {save!r}")
        fig.savefig(save, dpi=dpi, facecolor="white")
    return fig


def _text_width_in(t) -> float:
    """Width of a text's widest line as Agg draws it, inches (measured at 72 dpi)."""
    return max(_widths_in(t.get_text().split("\n"), t.get_fontproperties(), (72.0,)))


def _widths_in(texts: Sequence[str], prop: Any, dpis: Sequence[float]) -> list[float]:
    """Widths of one-line texts in font ``prop`` (a ``FontProperties``, or a size in points
    of the default font) as Agg draws them, inches: the widest at the resolutions ``dpis``
    (Agg rounds each glyph's advance to whole pixels, so a long text's width in inches
    differs by several percent between them)."""
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.font_manager import FontProperties

    if not isinstance(prop, FontProperties):
        prop = FontProperties(size=prop)
    widths = [0.0] * len(texts)
    for d in dict.fromkeys(float(d) for d in dpis):
        r = RendererAgg(1, 1, d)
        widths = [max(w, r.get_text_width_height_descent(t, prop, ismath=False)[0] / d)
                  if t else w for w, t in zip(widths, texts)]
    return widths


def _fit_title(fig: Figure, suptitle=None) -> None:
    """Widen ``fig`` (margins added evenly left and right, every panel keeping its size in
    inches) when its title, or the title of a panel at an edge, is wider than the figure
    allows: a figure of one or two panels cut its title and scale caption ("each panel
    scaled on its own: colours are not comparable") off at both edges, a one-column grid
    its column title."""
    fw, fh = fig.get_size_inches()
    over = 0.0  # the most any centred text reaches beyond an edge, margin included (inches)
    if suptitle is not None and suptitle.get_text():
        over = max(over, _text_width_in(suptitle) / 2 - fw / 2 + 0.15)
    for ax in fig.axes:
        if ax.get_title():
            x0, _, w, _ = ax.get_position(original=True).bounds
            c, half = (x0 + w / 2) * fw, _text_width_in(ax.title) / 2
            over = max(over, half - c + 0.05, c + half - fw + 0.05)
    if over <= 0:
        return
    need = fw + 2 * over
    for ax in fig.axes:
        x0, y0, w, h = ax.get_position(original=True).bounds
        ax.set_position([(x0 * fw + over) / need, y0, w * fw / need, h])
    for t in fig.texts:  # row titles and the title itself, placed in figure fractions
        t.set_x((t.get_position()[0] * fw + over) / need)
    fig.set_size_inches(need, fh)


def _as_map(a: np.ndarray, what: str) -> np.ndarray:
    """(H, W) or (H, W, 1) -> (H, W)."""
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 1:
        raise ValueError(f"{what}: expected a map of shape (H, W) or (H, W, 1), got {a.shape}: "
                         "a 1-D map; draw it with plot.signal(x, map) (plot.tokens for tokens)")
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        raise ValueError(f"{what}: expected a map of shape (H, W) or (H, W, 1), got a trailing "
                         f"shape {a.shape}. Reduce the channel axis first (e.g. "
                         "jaxsal.saliency(..., reduce='max_abs') or a.max(-1)).")
    if a.ndim != 2:
        cf = (f"; a channels-first map ({a.shape[0]}, H, W) (reduce=None of a channels-first "
              "model): jaxsal.reduce_channels(map, axis=0)"
              if a.ndim == 3 and a.shape[0] in (3, 4) else "")
        raise ValueError(f"{what}: expected one map of shape (H, W) or (H, W, 1), got "
                         f"{a.shape}; pick one (maps[i, t] of an (N, T, H, W) batch of maps) "
                         f"or draw them all with plot.grid(maps){cf}")
    return a


#: how far outside [0, 1] an image's values may lie by rounding (an image computed as
#: ``x * std + mean``, a resize) and still be shown as a [0, 1] image (clipped)
_ROUNDING = 1e-5


def _is_integer(a) -> bool:
    """Whether ``a`` (any array-like) holds integers: such images are read on a 0..255 scale."""
    return np.issubdtype(np.asarray(a).dtype, np.integer)


def _display_rule(a, integer: bool) -> str:
    """How images ``a`` (one, or all the images of a figure, colour last) are shown:
    ``"as is"`` when their values lie in [0, 1] (to rounding, 1e-5; clipped), ``"/255"``
    when in 0..255 and integers or floats whose maximum is above 10, else ``"min-max"``
    (each image scaled on its own). An alpha channel (4 channels) is left out; non-finite
    values give ``"min-max"`` (refused per image)."""
    a = _np(a)
    # an image broadcast over the grid (stride 0) is read once, not once per panel
    a = a[tuple(slice(0, 1) if st == 0 else slice(None) for st in a.strides)]
    if a.ndim >= 3 and a.shape[-1] == 4:
        a = a[..., :3]
    if not a.size:
        return "as is"
    lo, hi = float(np.min(a)), float(np.max(a))
    if lo >= -_ROUNDING and hi <= 1.0 + _ROUNDING:  # (1 + 1e-7 was min-max scaled: 0.25 -> 0)
        return "as is"
    if lo >= 0.0 and hi <= 255.0 and (integer or hi > 10.0):
        return "/255"
    return "min-max"


def _as_display_image(a: np.ndarray, what: str = "image", rule: str | None = None) -> np.ndarray:
    """(H, W), (H, W, 1) or (H, W, 3) -> a gray (H, W) or RGB (H, W, 3) image in [0, 1]:
    values in [0, 1] as they are, 0..255 images (integers, or floats whose maximum is above
    10) divided by 255, anything else (a float image in [0, 1.5], a standardized one)
    min-max scaled (a constant one: mid-gray). ``rule`` (:func:`_display_rule` of all the
    images of a figure) decides for the batch, so that a dark 0..255 image among bright ones
    is divided by 255 as they are (on its own, it was min-max scaled: drawn white)."""
    integer = _is_integer(a)
    a = _np(a)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))):
        first = (" (channels first? pass np.moveaxis(image, 0, -1))"
                 if a.ndim == 3 and a.shape[0] in (1, 3, 4) else "")
        raise ValueError(f"{what}: expected (H, W), (H, W, 1) or (H, W, 3), got "
                         f"{a.shape}{first}")
    if a.ndim == 3:
        a = a[..., :3]
    if not np.all(np.isfinite(a)):  # nanmin/nanmax would draw it black or min-max scaled
        raise ValueError(f"{what} contain NaN or inf; expected finite images (replace the "
                         "values first, e.g. np.nan_to_num(image))")
    rule = rule or _display_rule(a, integer)
    if rule == "as is":
        return np.clip(a, 0.0, 1.0)
    if rule == "/255":
        return a / 255.0
    lo, hi = float(np.min(a)), float(np.max(a))
    return (a - lo) / (hi - lo) if hi > lo else np.full_like(a, 0.5)  # constant: gray


def _is_signed(a: np.ndarray) -> bool:
    """Whether ``a`` has negative values (beyond rounding noise of 1e-3 of its largest
    magnitude): drawn with a diverging map centred at 0. All-negative maps too: on a
    sequential map their 0 took the top colour (jet's red) and their strongest values the
    bottom one, so the picture read as its opposite."""
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    return lo < 0.0 and -lo > 1e-3 * max(hi, -lo)


def _limits(a: np.ndarray, signed: bool) -> tuple[float, float]:
    if signed:
        m = float(np.nanmax(np.abs(a))) if a.size else 1.0
        m = m if m > 0 else 1.0
        return -m, m
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


def _hide_ticks(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _inches(v: Any, name: str, where: str = "") -> float:
    """A figure size ``v`` (inches) as a float > 0 by the one rule of reals."""
    return reals.check_real(v, name, low=0, above=True, where=where,
                            kind="a finite number of inches")


def _inches_pair(v: Any, name: str, where: str) -> tuple[float, float]:
    """A ``(width, height)`` figure size in inches, each > 0 by the one rule of reals."""
    if not (isinstance(v, (list, tuple)) or (isinstance(v, np.ndarray) and v.ndim == 1)) \
            or len(v) != 2:
        raise ValueError(f"{where}: expected {name} as (width, height) in inches, got {v!r}; "
                         f"pass e.g. {name}=(6, 3)")
    return (_inches(v[0], f"{name}[0] (width)", where),
            _inches(v[1], f"{name}[1] (height)", where))


def _grid_shape(n: int, ncols: int | None) -> tuple[int, int]:
    ncols = ints.check_int(ncols, "ncols", kind="panels per row; None: about a 3:2 layout",
                           example="5", allow_none=True)
    ncols = ncols if ncols is not None else min(n, max(1, math.ceil(math.sqrt(n * 1.5))))
    return math.ceil(n / ncols), ncols


def _titles_2d(titles, R: int, C: int, what: str):
    if titles is None:
        return None
    t = np.asarray(titles, dtype=object)
    if t.shape == (R * C,):
        t = t.reshape(R, C)
    if t.shape != (R, C):
        raise ValueError(f"{what}: expected {R}x{C} titles, got shape {t.shape}")
    return t


def _lines(s) -> int:
    return 0 if s is None or s == "" else str(s).count("\n") + 1


def _width_in(s) -> float:
    return 0.0 if s is None else max(len(x) for x in str(s).split("\n")) * _CHAR_IN


def panel_axes(fig: Figure, *, inputs: bool = False) -> list:
    """The axes of ``fig`` that show maps or images drawn by this module (colour bars and
    text excluded); with ``inputs=True`` also the input-image column of :func:`grid`."""
    keep = ("panel", "input") if inputs else ("panel",)
    return [ax for ax in fig.axes if ax.get_label() in keep]


def count_panels(fig: Figure, *, inputs: bool = False) -> int:
    """Number of panels in a figure made by this module (a mosaic counts all its tiles)."""
    n = len(panel_axes(fig, inputs=inputs))
    for ax in fig.axes:
        lab = ax.get_label()
        if lab.startswith("mosaic:"):
            r, c = lab[len("mosaic:"):].split("x")
            n += int(r) * int(c)
    return n


# ----------------------------------------------------------------------------- the grid
def _broadcast_images(images, R: int, C: int, H: int, W: int):
    if images is None:
        return None
    im = _np(images)
    # (H, W[, c]) for all panels; (R, 1, H, W[, c]) per row; (1, C, ...) per column; (R, C, ...)
    # one image: (H, W) or (H, W, c) with c = 1, 3 or 4 (a gray batch (R, H, W) of R = H
    # images of width W was read as one image of R channels and refused)
    if im.shape[:2] == (H, W) and (im.ndim == 2 or (im.ndim == 3 and im.shape[-1] in (1, 3, 4))):
        im = im[None, None]
    if im.ndim == 4 and im.shape[1:3] == (H, W) and im.shape[-1] in (1, 3, 4):
        im = im[:, None]
    if im.ndim == 3 and im.shape[1:] == (H, W):
        im = im[:, None]
    if (im.ndim == 4 and im.shape[2:] == (H, W) and im.shape[1] in (3, 4)
            and not (im.shape[0] == 1 < R and im.shape[1] == C)):
        # the (N, C, H, W) inputs of a channels-first model: read as a grid of gray images,
        # they put channel t of each image under the map of class t when T = C. A lone
        # (1, C, H, W) over several rows stays one gray image per column.
        raise ValueError(f"images of shape {im.shape} read as channels-first images "
                         f"(N, {im.shape[1]}, H, W) (x of a channels-first model) or as a "
                         f"{im.shape[0]}x{im.shape[1]} grid of gray images, one per panel; "
                         "for the first pass np.moveaxis(images, 1, -1) (one image per row), "
                         "for the second images[..., None]")
    if im.ndim == 4 and im.shape[2:] == (H, W):
        im = im[..., None]
    if im.ndim != 5 or im.shape[2:4] != (H, W):
        raise ValueError(f"images: expected (H, W[, c]), (R or 1, 1 or C, H, W[, c]) with "
                         f"H, W = {H}, {W} (the maps' size), got {np.shape(images)}. Resize the "
                         "maps to the images' size (jaxsal.resize(maps, image.shape[:2]); "
                         "CAMs: upsample=True) or pass matching images.")
    try:
        return np.broadcast_to(im, (R, C) + im.shape[2:])
    except ValueError:
        first = (" (channels first? pass np.moveaxis(image, 0, -1))"
                 if np.ndim(images) == 3 and np.shape(images)[0] in (3, 4) else "")
        raise ValueError(f"images of shape {np.shape(images)} give {im.shape[:2]} (rows, "
                         f"columns), which do not broadcast to the {R}x{C} grid of maps; pass "
                         "(H, W[, c]) for one image under every map, (R, 1, ...) for one per "
                         f"row, (1, C, ...) for one per column{first}") from None


def _colormap(cmap) -> colors.Colormap:
    """``cmap`` (a name matplotlib knows, or a ``Colormap``) as a ``Colormap``. ``tokens`` and
    ``signal`` looked names up as dictionary keys, so a ``Colormap`` failed there with
    "unhashable type" (``grid`` takes one), and an unknown name raised a ``KeyError`` in
    them and in mosaics, a ``ValueError`` elsewhere."""
    if isinstance(cmap, colors.Colormap):
        return cmap
    if isinstance(cmap, str):
        try:
            return matplotlib.colormaps[cmap]
        except KeyError:
            import difflib

            close = difflib.get_close_matches(cmap, list(matplotlib.colormaps), n=4)
            raise ValueError(
                f"cmap: expected the name of a matplotlib colour map or a Colormap, got "
                f"{cmap!r}" + (f"; did you mean {', '.join(map(repr, close))}?" if close else "")
                + " (perceptually uniform: 'viridis', 'inferno', 'magma', 'cividis'; diverging: "
                "'RdBu_r'; all names: sorted(matplotlib.colormaps))") from None
    raise TypeError(f"cmap: expected the name of a matplotlib colour map (e.g. 'viridis') or a "
                    f"matplotlib.colors.Colormap, got {cmap!r}")


def _centred_cmap(cmap, a: float, b: float):
    """The part of a diverging ``cmap`` that limits ``a < b`` cover when its centre stands
    for 0 and its ends for -m, m (m = max(|a|, |b|)): drawn over ``Normalize(a, b)``, 0 keeps
    the centre colour (white for ``RdBu_r``). With the whole map over asymmetric limits,
    ``vmin=-0.1, vmax=0.5`` put white at 0.2 and drew small positive values blue."""
    base = _colormap(cmap)
    m = max(abs(a), abs(b))
    return colors.ListedColormap(base(np.linspace(0.5 + a / (2 * m), 0.5 + b / (2 * m), 256)),
                                 name=f"{base.name} centred at 0")


def _one_row_hint(one_row: bool, n: int, shape) -> str:
    """What to pass when 3-D maps ``(C, H, W)``, one row, come with one image per map: the
    maps of the predicted class (``targets=None``) of ``C`` inputs, meant one per row."""
    if not (one_row and n == shape[1] > 1):
        return ""
    return (f". The maps {shape[1:]} are one row of {shape[1]} maps; for one map per input "
            f"(e.g. targets=None, the predicted class), one per row, pass maps[:, None] "
            f"({shape[1]}, 1, {shape[2]}, {shape[3]})")


def _scale_caption(scale: str, signed: bool, grouped: bool = False) -> str:
    zero = ", centred at 0" if signed else ""
    return {
        "shared": f"one colour scale for all panels{zero}",
        "row": (f"colour scale shared within each group of rows{zero}" if grouped
                else f"colour scale shared within each row{zero}"),
        "column": f"colour scale shared within each column{zero}",
        "panel": f"each panel scaled on its own{zero}: colours are not comparable across panels",
    }[scale]


#: the most columns :func:`grid` draws: a row of 1000 maps (every ImageNet class) was a
#: figure 500 inches wide, which a notebook shrinks to its width (tiles a few pixels high)
MAX_COLUMNS = 200


def _too_wide(C: int, R: int, H: int, W: int, one_row: bool, shape) -> str:
    """:func:`grid`'s refusal of more than :data:`MAX_COLUMNS` columns, with the fixes."""
    ncols = min((d for d in range(10, MAX_COLUMNS + 1) if C % d == 0),
                key=lambda d: abs(d - math.sqrt(1.5 * C)), default=None)
    sel = "maps" if one_row else "maps[i]"  # one row (C, H, W): one input's maps, say
    one = (f"plot.grid({sel}.reshape({C // ncols}, {ncols}, {H}, {W}))" if ncols
           else f"plot.grid({'maps[:k]' if one_row else 'maps[i, :k]'}.reshape(rows, cols, "
           f"{H}, {W})) with rows * cols = k")
    return (f"maps: expected at most {MAX_COLUMNS} columns, got {C} (maps of shape {shape}"
            f"{', one row' if one_row else ''}): a figure about {C * 0.5:.0f} in wide, which "
            "a viewer or notebook shrinks to its width. "
            + ("For one map per input, one per row, pass maps[:, None]. " if one_row else "")
            + "Explain fewer targets (targets=[...]), or each input's top classes (an (N, k) "
            "array: targets=jnp.argsort(logits, axis=-1)[:, -5:]), or draw one input's maps "
            f"in rows, e.g. {one}")


def grid(maps, *, images=None, inputs=None, row_titles: Sequence[str] | None = None,
         col_titles: Sequence[str] | None = None, titles=None, title: str | None = None,
         scale: str = "shared", signed: bool | None = None, cmap: str | None = None,
         alpha: float = 0.5, vmin: float | None = None, vmax: float | None = None,
         colorbar: bool = True, colorbar_label: str | None = None, input_title: str = "input",
         row_groups: Sequence[Any] | None = None, panel_size: float = 1.4,
         mosaic: bool | None = None, save=None, dpi: int = 120) -> Figure:
    """A grid of maps (classes x methods, classes x images, heads x classes, ...).

    Args:
      maps: ``(R, C, H, W)`` or ``(R, C, H, W, 1)`` (a 3-D ``(C, H, W)`` is one row). Take
        ``jaxsal`` outputs as they come: ``saliency(m, x, targets=range(10))`` is
        ``(N, 10, H, W)``, i.e. images x classes; transpose axes 0 and 1 for classes x images.
      images: background images to overlay the maps on, with ``alpha``: one ``(H, W[, c])``
        for every panel, ``(R, 1, H, W[, c])`` per row, ``(1, C, ...)`` per column or
        ``(R, C, ...)`` per panel. A 4-D ``(N, 3 or 4, H, W)`` is refused as ambiguous
        (channels-first images: ``np.moveaxis(x, 1, -1)``; gray images, one per panel:
        ``(R, C, H, W, 1)``), except ``(1, C, H, W)`` over several rows: one per column.
      inputs: ``(R, H, W[, c])`` (or one ``(H, W[, c])`` for all rows: a 3-D array whose last
        axis is 1, 3 or 4 is one image), shown as an extra first column titled
        ``input_title`` next to each row's maps. Images and inputs must be finite.
      row_titles, col_titles: a label per row (left) and per column (top).
      titles: ``(R, C)`` (or ``R*C``) labels above each panel, e.g. the class probability.
      title: the figure title; a line saying how colours are scaled is added below it.
      scale: ``"shared"`` (one vmin/vmax and one colour bar for every panel: maps stay
        comparable), ``"row"``, ``"column"`` (shared within a row/column, a colour bar each),
        or ``"panel"`` (each panel its own range and colour bar, labelled as not comparable).
      signed: show signed values with a diverging map centred at 0. ``None``: when the maps
        have negative values (all-negative maps too).
      cmap: colour map, a name or a ``matplotlib.colors.Colormap`` (as in every function
        here; an unknown name is a ``ValueError`` naming close ones); default ``"jet"``
        (unsigned) or ``"RdBu_r"`` (signed). Perceptually uniform choices: ``"viridis"``,
        ``"inferno"``, ``"magma"``, ``"cividis"``.
      alpha: opacity of the maps over ``images``.
      row_groups: with ``scale="row"``, a label per row; consecutive rows with the same label
        share one scale and one colour bar (e.g. ``["softmax", "softmax", "logits",
        "logits"]``: one scale per head across two methods).
      vmin, vmax: fixed limits (``scale="shared"`` only).
      colorbar: draw the colour bar(s).
      colorbar_label: text beside the colour bar(s), e.g. ``"|d logit / d x|"``.
      panel_size: width of one panel, inches.
      mosaic: draw all panels as one image (fast for hundreds of panels; ``"shared"`` and
        ``"panel"`` scales only; no per-panel ``titles``). ``None``: when there are more than
        150 panels, the scale is one of those and no ``titles`` are given (``"row"`` and
        ``"column"`` grids, and grids with titles, are drawn panel by panel).
      save: a path to write the figure to (its format by its extension), or a binary file
        object (``io.BytesIO``; PNG).
      dpi: resolution of the saved file.
    Returns:
      the figure.
    """
    m = _np(maps)
    if m.ndim >= 3 and m.shape[-1] == 1 and m.ndim in (4, 5):
        m = m[..., 0]
    one_row = m.ndim == 3  # (C, H, W): one row of C maps
    if one_row:
        m = m[None]
    if m.ndim == 2:
        m = m[None, None]
    if m.ndim != 4:
        # a last axis above 4 may be a width: the maps may be channels-first, which a plain
        # reduce_channels(maps) would reduce over that width (its shape cannot tell)
        cf = m.ndim == 5 and m.shape[-1] > 4
        raise ValueError(f"maps: expected (R, C, H, W) or (R, C, H, W, 1), got "
                         f"{np.shape(maps)}. Reduce channels first ("
                         + ("channels-first maps (N, T, C, H, W), as reduce=None gives for a "
                            "channels-first model: jaxsal.reduce_channels(maps, axis=2); "
                            "channels-last ones (N, T, H, W, C): jaxsal.reduce_channels(maps, "
                            "axis=-1)" if cf
                            else "jaxsal.reduce_channels(maps) or a.max(-1)")
                         + ") and arrange the grid axes first.")
    if np.ndim(maps) == 4 and m.shape[-1] in (3, 4) and min(m.shape[1:3]) >= 4 * m.shape[-1]:
        raise ValueError(f"maps: {np.shape(maps)} reads as (N, H, W, {m.shape[-1]}) maps with "
                         "a colour channel axis (as saliency(..., reduce=None) of an RGB "
                         "model gives), not an (R, C, H, W) grid of maps "
                         f"{m.shape[-1]} pixels wide. Reduce channels first "
                         "(jaxsal.reduce_channels(maps) or a.max(-1)); for a real grid of such "
                         "narrow maps pass them as (R, C, H, W, 1)")
    if scale not in SCALES:
        raise ValueError(f"scale: expected one of {SCALES}, got {scale!r}")
    if (vmin is not None or vmax is not None) and scale != "shared":
        raise ValueError("vmin/vmax fix one scale for every panel: use them with "
                         f"scale='shared', got scale={scale!r}")
    if not m.shape[0] * m.shape[1]:
        raise ValueError(f"maps: expected at least one map, got shape {np.shape(maps)}")
    if not m.size:  # (R, C, 0, W): maps, each of no pixels
        raise ValueError(f"maps: expected maps of at least one pixel, got maps of shape "
                         f"{np.shape(maps)}, each {m.shape[2]}x{m.shape[3]}; drop or "
                         "recompute the empty maps")
    if not np.all(np.isfinite(m)):
        raise ValueError("maps contain NaN or inf (or values beyond float32's range, which "
                         "the figure draws in); nothing sensible can be drawn: clean or "
                         "rescale them (jnp.nan_to_num, jaxsal.normalize)")
    alpha = reals.check_real(alpha, "alpha", low=0, high=1, where="grid",
                             kind="a finite number: the maps' opacity over images")
    panel_size = _inches(panel_size, "panel_size")
    R, C, H, W = m.shape
    if C > MAX_COLUMNS:
        raise ValueError(_too_wide(C, R, H, W, one_row, np.shape(maps)))
    signed = _is_signed(m) if signed is None else bool(signed)
    cmap = _colormap(DIVERGING_CMAP if signed else DEFAULT_CMAP) if cmap is None else (
        _colormap(cmap))
    try:
        bg = _broadcast_images(images, R, C, H, W)
    except ValueError as e:
        n = np.shape(images)[0] if np.ndim(images) in (3, 4) else 0
        raise ValueError(str(e) + _one_row_hint(one_row, n, m.shape)) from None
    # one display rule for all the images, one for all the inputs: a dark 0..255 image among
    # bright ones is divided by 255 too (alone it read as a [0, 1.5]-like image: stretched),
    # and integer images are known as integers (converted to float32 above)
    bg_rule = None if bg is None else _display_rule(bg, _is_integer(images))
    ins = None
    if inputs is not None:
        ins = _np(inputs)
        # one (H, W[, c]) image for every row, also when H equals the number of rows (it
        # was read as R images of (W, c)); a gray batch (R, H, W) of width 1, 3 or 4 is
        # passed as (R, H, W, 1)
        if ins.ndim == 2 or (ins.ndim == 3 and ins.shape[-1] in (1, 3, 4)):
            ins = np.broadcast_to(ins, (R,) + ins.shape)
        elif ins.shape[0] == 1 and R > 1:
            ins = np.broadcast_to(ins, (R,) + ins.shape[1:])
        if ins.shape[0] != R:
            raise ValueError(f"inputs: expected {R} images (one per row), got {ins.shape}"
                             + _one_row_hint(one_row, ins.shape[0], m.shape))
    in_rule = None if ins is None else _display_rule(ins, _is_integer(inputs))
    row_titles = None if row_titles is None else [str(t) for t in row_titles]
    col_titles = None if col_titles is None else [str(t) for t in col_titles]
    if row_titles is not None and len(row_titles) != R:
        raise ValueError(f"row_titles: expected {R}, got {len(row_titles)}")
    if col_titles is not None and len(col_titles) != C:
        raise ValueError(f"col_titles: expected {C}, got {len(col_titles)}")
    ptitles = _titles_2d(titles, R, C, "titles")

    if row_groups is not None:
        if scale != "row":
            raise ValueError(f"row_groups needs scale='row', got scale={scale!r}")
        if len(row_groups) != R:
            raise ValueError(f"row_groups: expected one label per row ({R}), got "
                             f"{len(row_groups)}")
        labels = list(row_groups)
        row_runs = []
        for r in range(R):
            if r and labels[r] == labels[r - 1]:
                row_runs[-1] = (row_runs[-1][0], r + 1)
            else:
                row_runs.append((r, r + 1))
    else:
        row_runs = [(r, r + 1) for r in range(R)]
    # one (lo, hi) per panel
    lo = np.empty((R, C))
    hi = np.empty((R, C))
    if scale == "shared":
        a, b = _limits(m, signed)
        if vmin is not None or vmax is not None:
            a = a if vmin is None else reals.check_real(vmin, "vmin", where="grid")
            b = b if vmax is None else reals.check_real(vmax, "vmax", where="grid")
            if signed and (vmin is None) != (vmax is None):
                a, b = (-abs(b), abs(b)) if vmin is None else (a, -a)
            if not (np.isfinite(a) and np.isfinite(b) and a < b):
                raise ValueError(
                    f"vmin/vmax: expected finite limits with vmin < vmax, got {a:g} .. {b:g}"
                    f" (from vmin={vmin!r}, vmax={vmax!r}"
                    + ("; signed maps centre the scale at 0: a single vmin must be negative"
                       if signed and vmax is None else "") + ")")
        lo[:], hi[:] = a, b
        if signed and a != -b:
            cmap = _centred_cmap(cmap, a, b)
    elif scale == "row":
        for r0, r1 in row_runs:
            lo[r0:r1], hi[r0:r1] = _limits(m[r0:r1], signed)
    elif scale == "column":
        for c in range(C):
            lo[:, c], hi[:, c] = _limits(m[:, c], signed)
    else:
        for r in range(R):
            for c in range(C):
                lo[r, c], hi[r, c] = _limits(m[r, c], signed)

    caption = _scale_caption(scale, signed, grouped=row_groups is not None)
    full_title = caption if not title else f"{title}\n{caption}"
    if mosaic is None:  # a mosaic has one scale or one per panel, no per-row/column bars,
        # no per-panel titles
        mosaic = (R * C > 150 and scale in ("shared", "panel") and ptitles is None
                  and (ins is None or _same_aspect(ins, H, W)))
    if mosaic:
        if ins is not None and not _same_aspect(ins, H, W):
            raise ValueError(f"mosaic=True: expected inputs of the maps' aspect ratio (a "
                             f"mosaic draws them in tiles of the maps' {H}x{W} pixels), got "
                             f"inputs of {ins.shape[1]}x{ins.shape[2]}; pass mosaic=False "
                             "(one panel per map) or maps resized to the inputs' size "
                             "(jaxsal.resize)")
        if ptitles is not None:
            raise ValueError("mosaic=True draws no per-panel titles: pass mosaic=False to "
                             "keep titles=, or leave titles out")
        if scale not in ("shared", "panel"):
            raise ValueError(f"mosaic=True: expected scale='shared' or 'panel' (a mosaic "
                             f"draws no per-row or per-column colour bars), got "
                             f"scale={scale!r}; pass mosaic=False or leave mosaic unset")
        return _mosaic(m, bg, ins, lo, hi, signed, cmap, alpha, row_titles, col_titles,
                       full_title, colorbar, colorbar_label, scale, input_title, panel_size,
                       save, dpi, (bg_rule, in_rule))

    # ---- layout in inches
    pw = panel_size
    ph = panel_size * H / W
    extra_col = ins is not None
    cols = C + (1 if extra_col else 0)
    in_gap = 0.15 if extra_col else 0.0
    cb_panel = colorbar and scale == "panel"
    tick_w = 0.45  # colour bar tick labels
    hgap = 0.08 + (0.12 + tick_w if cb_panel else 0.0)
    title_lines = 0 if ptitles is None else max(_lines(t) for t in ptitles.ravel())
    vgap = 0.08 + title_lines * _LINE_IN
    col_cb = colorbar and scale == "column"  # one bar under each column
    left = 0.12 + (max(_width_in(t) for t in row_titles) + 0.1 if row_titles else 0.0)
    top = 0.1 + _lines(full_title) * 0.2 + (
        max([_lines(t) for t in col_titles or []] + [1]) * _LINE_IN + 0.05
        if col_titles or extra_col else 0)
    top += title_lines * _LINE_IN
    right_cb = colorbar and scale in ("shared", "row")
    cb_label_w = 0.25 if colorbar_label else 0.0
    right = 0.15 + (0.12 + 0.08 + tick_w + cb_label_w if right_cb else 0.0)
    if cb_panel:
        right = 0.12 + tick_w + 0.1
    bottom = 0.12 + (0.12 + 0.35 + cb_label_w if col_cb else 0.0)
    grid_w = cols * pw + (cols - 1) * hgap + in_gap
    # extra space between groups of rows that share a scale
    group_gap = 0.18 if row_groups is not None else 0.0
    row_off = np.zeros(R)
    for r0, _ in row_runs[1:]:
        row_off[r0:] += group_gap
    grid_h = R * ph + (R - 1) * vgap + float(row_off[-1])
    fw = left + grid_w + right
    fh = top + grid_h + bottom
    fig = _Figure(figsize=(fw, fh))

    def box(r, c):  # figure-fraction rectangle of panel (r, c) of the full column set
        x0 = left + c * (pw + hgap) + (in_gap if extra_col and c > 0 else 0.0)
        y0 = fh - top - (r + 1) * ph - r * vgap - row_off[r]
        return [x0 / fw, y0 / fh, pw / fw, ph / fh]

    sup = fig.suptitle(full_title, fontsize=_TITLE_PT if title else _LABEL_PT,
                       y=1 - 0.05 / fh, va="top")
    norms = [[colors.Normalize(lo[r, c], hi[r, c]) for c in range(C)] for r in range(R)]
    axes = np.empty((R, C), dtype=object)
    for r in range(R):
        if extra_col:
            ax = fig.add_axes(box(r, 0), label="input")
            img = _as_display_image(ins[r], "inputs", in_rule)
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1,
                      interpolation="nearest")
            _hide_ticks(ax)
            if r == 0:
                ax.set_title(input_title, fontsize=_LABEL_PT)
        for c in range(C):
            ax = fig.add_axes(box(r, c + (1 if extra_col else 0)), label="panel")
            axes[r, c] = ax
            if bg is not None:
                img = _as_display_image(bg[r, c], "images", bg_rule)
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1,
                          interpolation="nearest")
            # in float64: matplotlib normalizes float32 data in float32, where x - vmin
            # overflows for maps near float32's range (1e38 of a +-3e38 map drawn as the top
            # colour; the mosaic computes in float64 already)
            ax.imshow(m[r, c].astype(np.float64), cmap=cmap, norm=norms[r][c],
                      alpha=alpha if bg is not None else None, interpolation="nearest")
            _hide_ticks(ax)
            t = []
            if r == 0 and col_titles:
                t.append(col_titles[c])
            if ptitles is not None and ptitles[r, c] not in (None, ""):
                t.append(str(ptitles[r, c]))
            if t:
                ax.set_title("\n".join(t), fontsize=_LABEL_PT, pad=3)
            if cb_panel:
                _panel_colorbar(fig, ax, norms[r][c], cmap, fw, fh)
        if row_titles:
            first = box(r, 0)
            fig.text(first[0] - 0.08 / fw, first[1] + first[3] / 2, row_titles[r],
                     ha="right", va="center", fontsize=_LABEL_PT)
    if right_cb:
        x_cb = (left + grid_w + 0.12) / fw
        groups = [(0, R)] if scale == "shared" else row_runs
        for r0, r1 in groups:
            y_top = box(r0, 0)[1] + box(r0, 0)[3]
            y_bot = box(r1 - 1, 0)[1]
            cax = fig.add_axes([x_cb, y_bot, 0.12 / fw, y_top - y_bot], label="colorbar")
            _colorbar(fig, cax, norms[r0][0], cmap, colorbar_label, "vertical",
                      _extend(m[r0:r1], norms[r0][0]))
    if col_cb:
        for c in range(C):
            b = box(R - 1, c + (1 if extra_col else 0))
            cax = fig.add_axes([b[0], b[1] - 0.24 / fh, b[2], 0.1 / fh], label="colorbar")
            _colorbar(fig, cax, norms[0][c], cmap, colorbar_label, "horizontal")
    _fit_title(fig, sup)
    return _finish(fig, save, dpi)


def _extend(data: np.ndarray, norm) -> str:
    # a colour bar whose limits clip the data says so with a pointed end
    lo, hi = float(np.min(data)), float(np.max(data))
    tol = 1e-6 * max(abs(norm.vmin), abs(norm.vmax), 1e-30)
    below, above = lo < norm.vmin - tol, hi > norm.vmax + tol
    return {(False, False): "neither", (True, False): "min", (False, True): "max",
            (True, True): "both"}[(below, above)]


def _colorbar(fig, cax, norm, cmap, label, orientation, extend="neither"):
    sm = cm.ScalarMappable(norm=norm, cmap=cmap)
    w, h = cax.get_position().size * fig.get_size_inches()
    length = w if orientation == "horizontal" else h  # inches
    cb = fig.colorbar(sm, cax=cax, orientation=orientation, extend=extend,
                      extendfrac=min(0.05, 0.15 / max(length, 1e-3)))
    cb.ax.tick_params(labelsize=_TICK_PT)
    if orientation == "horizontal":
        cb.ax.xaxis.set_major_locator(_Locator(3))
    _format_bar(cb, orientation)
    if label:
        cb.set_label(label, fontsize=_LABEL_PT)
    return cb


def _Locator(n):
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(n)


class _BarFormatter(Formatter):
    """Colour-bar tick labels in one notation per bar: with an exponent on every tick when the
    largest tick is below 1e-2 or from 1e4 on (no offset text, "1e-5", floating above a bar),
    plain decimals otherwise; as many digits as the ticks need, the same on every tick (a bar
    mixed "8.0e-03" with "0.01", and printed a 1.25e-03 tick as "1.2e-03"). A module-level
    class, so that figures stay picklable."""

    ticks = ()

    def set_locs(self, locs):  # the axis's ticks, given before they are labelled
        self.ticks = tuple(float(t) for t in locs)

    def __call__(self, v, pos=None):
        ticks = [t for t in self.ticks if t != 0] or [float(v)]
        big = max(abs(t) for t in ticks)
        if v == 0 or big == 0:
            return "0"
        tol = 1e-9 * big
        if big < 1e-2 or big >= 1e4:
            p = next((p for p in range(1, 5) if all(
                abs(float(f"{t:.{p}e}") - t) <= tol for t in ticks)), 4)
            return f"{v:.{p}e}"
        d = next((d for d in range(0, 7) if all(abs(round(t, d) - t) <= tol for t in ticks)), 6)
        return f"{v:.{d}f}"


def _format_bar(cb, orientation):
    axis = cb.ax.xaxis if orientation == "horizontal" else cb.ax.yaxis
    axis.set_major_formatter(_BarFormatter())


def _panel_colorbar(fig, ax, norm, cmap, fw, fh):
    x0, y0, w, h = ax.get_position().bounds
    cax = fig.add_axes([x0 + w + 0.04 / fw, y0, 0.08 / fw, h], label="colorbar")
    cb = fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), cax=cax)
    cb.ax.tick_params(labelsize=_TICK_PT - 1, length=2, pad=1)
    cb.ax.yaxis.set_major_locator(_Locator(3))
    _format_bar(cb, "vertical")
    return cb


def _fit_pixels(img: np.ndarray, H: int, W: int) -> np.ndarray:
    """An ``(h, w[, c])`` image as ``(H, W[, c])``: the mean of the pixels falling in each
    output pixel where it shrinks, the nearest pixel where it grows."""
    for axis, n in ((0, H), (1, W)):
        n_in = img.shape[axis]
        if n_in > n:
            starts = np.searchsorted(np.arange(n_in) * n // n_in, np.arange(n))
            counts = np.diff(np.append(starts, n_in))
            img = np.add.reduceat(img, starts, axis=axis) / np.expand_dims(
                counts, tuple(range(1, img.ndim - axis)))
        elif n_in < n:
            img = np.take(img, np.arange(n) * n_in // n, axis=axis)
    return img


def _same_aspect(ins, H: int, W: int) -> bool:
    """Whether input images ``(R, h, w[, c])`` have the maps' aspect ratio (to 1%)."""
    h, w = ins.shape[1:3]
    return abs(h * W - w * H) <= 0.01 * h * W


def _mosaic(m, bg, ins, lo, hi, signed, cmap, alpha, row_titles, col_titles, full_title,
            colorbar, colorbar_label, scale, input_title, panel_size, save, dpi, rules):
    R, C, H, W = m.shape
    if ins is not None and ins.shape[1:3] != (H, W):
        # inputs of another size than the maps (CAMs without upsampling): every map tile is
        # enlarged k times (nearest, as the panels draw them), k up to the inputs' size and
        # tiles of at most 64 pixels, and the inputs resampled to the tiles
        k = int(np.clip(round(ins.shape[1] / H), 1, max(1, 64 // max(H, W))))
        m = np.repeat(np.repeat(m, k, 2), k, 3)
        if bg is not None:
            bg = np.repeat(np.repeat(bg, k, 2), k, 3)
        R, C, H, W = m.shape
    fit = ins is not None and ins.shape[1:3] != (H, W)
    sep = max(1, H // 14)
    cmap_fn = _colormap(cmap)
    extra = 1 if ins is not None else 0
    cols = C + extra
    big = np.ones((R * H + (R - 1) * sep, cols * W + (cols - 1) * sep + (sep * 2 if extra else 0),
                   3), np.float32)
    for r in range(R):
        y0 = r * (H + sep)
        if ins is not None:
            img = _as_display_image(ins[r], "inputs", rules[1])
            img = _fit_pixels(img, H, W) if fit else img
            big[y0:y0 + H, :W] = img[..., None] if img.ndim == 2 else img
        for c in range(C):
            x0 = (c + extra) * (W + sep) + (sep * 2 if extra else 0)
            v = (m[r, c] - lo[r, c]) / (hi[r, c] - lo[r, c])
            rgb = cmap_fn(np.clip(v, 0, 1))[..., :3]
            if bg is not None:
                img = _as_display_image(bg[r, c], "images", rules[0])
                img = np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img
                rgb = (1 - alpha) * img + alpha * rgb
            big[y0:y0 + H, x0:x0 + W] = rgb
    xl = list(col_titles) if col_titles else [""] * C
    xt = [(c + extra) * (W + sep) + (sep * 2 if extra else 0) + W / 2 - 0.5 for c in range(C)]
    if ins is not None:
        xl, xt = [input_title] + xl, [W / 2 - 0.5] + xt
    yl = list(row_titles) if row_titles else [""] * R
    fig, sup, cax = _mosaic_figure(big, H, W, sep, xt, xl, yl, C, full_title,
                                   title_pt=_LABEL_PT + 1, max_tile_in=0.5,
                                   panel_size=panel_size, colorbar=colorbar, bar_room_in=0.8,
                                   bar_gap_in=0.12, label=f"mosaic:{R}x{C}")
    if cax is not None:
        if scale == "shared":
            norm = colors.Normalize(lo[0, 0], hi[0, 0])
        else:
            norm = colors.Normalize(-1 if signed else 0, 1)
            colorbar_label = ("each panel / its max |value|" if signed
                              else "each panel min-max scaled")
        _colorbar(fig, cax, norm, cmap, colorbar_label, "vertical",
                  _extend(m, norm) if scale == "shared" else "neither")
    _fit_title(fig, sup)
    return _finish(fig, save, dpi)


def _mosaic_figure(pic, h, w, sep, xt, xl, yl, C, full_title, *, title_pt, max_tile_in,
                   panel_size, colorbar, bar_room_in, bar_gap_in, label):
    """The figure of a mosaic (:func:`grid`'s and :func:`image_grid`'s): the picture ``pic``
    ``(rows, cols, 3)``, rows of tiles ``h x w`` pixels ``sep`` apart, on one axes named
    ``label`` (read by :func:`count_panels`); the column titles ``xl`` above it at ``xt``
    (pixels), the row titles ``yl`` (one per tile row) on its left, in smaller type past 20
    (``C``: the columns of tiles), and ``full_title`` (``title_pt`` points) above. A tile is
    ``min(panel_size, max_tile_in)`` inches wide, wider to fit the column titles, taller to
    fit the row titles. With ``colorbar``, ``bar_room_in`` inches on the right hold the axes
    of a colour bar, ``bar_gap_in`` from the picture. Returns ``(figure, suptitle, colour
    bar axes or None)``."""
    R = len(yl)
    col_pt = _LABEL_PT if C <= 20 else _TICK_PT
    row_pt = _LABEL_PT if R <= 20 else _TICK_PT
    tile_w = max(min(panel_size, max_tile_in),
                 max(_width_in(t) for t in xl) * col_pt / _LABEL_PT + 0.06)
    tile_h = max(_lines(t) for t in yl) * _LINE_IN * row_pt / _LABEL_PT + 0.02
    scale_px = max(tile_w / (w + sep), tile_h / (h + sep))  # inches per picture pixel
    left = 0.15 + max(_width_in(t) for t in yl) * row_pt / _LABEL_PT + 0.1
    top = (0.15 + _lines(full_title) * 0.2
           + max(_lines(t) for t in xl) * _LINE_IN * col_pt / _LABEL_PT + 0.1)
    right = 0.2 + (bar_room_in if colorbar else 0)
    gw, gh = pic.shape[1] * scale_px, pic.shape[0] * scale_px
    fw, fh = left + gw + right, top + gh + 0.15
    fig = _Figure(figsize=(fw, fh))
    ax = fig.add_axes([left / fw, 0.15 / fh, gw / fw, gh / fh], label=label)
    ax.imshow(pic, interpolation="nearest")
    ax.xaxis.tick_top()
    ax.set_xticks(xt, xl, fontsize=col_pt)
    ax.set_yticks([r * (h + sep) + h / 2 - 0.5 for r in range(R)], yl, fontsize=row_pt)
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    sup = fig.suptitle(full_title, fontsize=title_pt, y=1 - 0.05 / fh, va="top")
    cax = None
    if colorbar:
        bar_h = min(gh, 4.0)  # a tall mosaic gets a bar of readable length at its top
        cax = fig.add_axes([(left + gw + bar_gap_in) / fw, (0.15 + gh - bar_h) / fh, 0.12 / fw,
                            bar_h / fh], label="colorbar")
    return fig, sup, cax


# ----------------------------------------------------------------------------- single maps
def _one_map(map, what: str) -> np.ndarray:
    """The ``(H, W)`` map of :func:`heatmap` (a leading batch axis of 1 dropped), checked;
    ``what``: the function the user called, for its errors."""
    if isinstance(map, dict) or (isinstance(map, (list, tuple)) and len(map) > 1
                                 and all(hasattr(a, "shape") for a in map)):
        first = repr(next(iter(map))) if isinstance(map, dict) else "0"
        got = (f"a dict of {len(map)} ({', '.join(str(k) for k in map)})"
               if isinstance(map, dict) else f"a {type(map).__name__} of {len(map)} arrays")
        raise ValueError(f"{what}: expected one map (H, W), got {got}: the maps of several "
                         f"inputs, one array each. Draw one input's map, maps[{first}][i, t] "
                         "for image i and target t (once per input for each input's)")
    a = _np(map)
    while a.ndim > 2 and a.shape[0] == 1 and not (a.ndim == 3 and a.shape[-1] == 1):
        a = a[0]
    a = _as_map(a, what)
    if not a.size:  # (reported with the shape given, not the grid's (1, 1, h, w))
        raise ValueError(f"{what}: expected a map of at least one pixel, got shape "
                         f"{np.shape(map)}")
    return a


def heatmap(map, *, image=None, title: str | None = None, cmap: str | None = None,
            signed: bool | None = None, alpha: float = 0.5, vmin: float | None = None,
            vmax: float | None = None, colorbar: bool = True, colorbar_label: str | None = None,
            size: float = 3.0, save=None, dpi: int = 120) -> Figure:
    """One map as a heatmap (``jet`` by default), optionally over ``image`` with ``alpha``.

    Args:
      map: ``(H, W)`` or ``(H, W, 1)`` (a leading batch axis of 1 is dropped).
      image: ``(H, W[, c])`` to draw underneath (see :func:`overlay`).
      signed: diverging colours centred at 0 (``None``: when the map has negative values).
      Other arguments as in :func:`grid`.
    """
    size = _inches(size, "size", "heatmap")
    a = _one_map(map, "heatmap")
    im = None if image is None else np.asarray(image)  # (integer images keep their dtype)
    if im is not None and im.ndim == 4 and im.shape[0] == 1:
        im = im[0]
    return grid(a[None, None], images=im, title=title, cmap=cmap, signed=signed, alpha=alpha,
                vmin=vmin, vmax=vmax, colorbar=colorbar, colorbar_label=colorbar_label,
                panel_size=size, save=save, dpi=dpi)


def overlay(image, map, *, alpha: float = 0.5, cmap: str | None = None, **kwargs) -> Figure:
    """``map`` drawn over ``image`` with opacity ``alpha`` (the input stays visible).

    ``image`` is ``(H, W)``, ``(H, W, 1)`` (gray) or ``(H, W, 3)`` (RGB; values in [0, 1]
    as they are, 0..255 (integers, or floats whose maximum is above 10) divided by 255,
    anything else min-max scaled for display); ``map`` has the same
    ``H, W`` (CAMs: ``upsample=True``). Other keywords as in :func:`heatmap`.
    """
    if (np.ndim(map) == 3 and np.shape(map)[-1] in (3, 4) and np.ndim(image) in (2, 3)
            and np.shape(image)[-1] not in (3, 4)):
        raise ValueError(f"overlay(image, map): got an image of shape {np.shape(image)} and a "
                         f"map of shape {np.shape(map)}, which looks like an RGB image; "
                         "expected the image first and the map (H, W) second: "
                         "overlay(image, map)")
    _one_map(map, "overlay")  # (its errors name overlay, not the heatmap it draws)
    return heatmap(map, image=image, alpha=alpha, cmap=cmap, **kwargs)


def diverging(map, *, image=None, cmap: str = DIVERGING_CMAP, **kwargs) -> Figure:
    """A signed map (e.g. gradient x input, integrated gradients without ``abs``) with a
    diverging colour map centred at 0: negative blue, zero white, positive red."""
    _one_map(map, "diverging")  # (its errors name diverging, not heatmap)
    return heatmap(map, image=image, cmap=cmap, signed=True, **kwargs)


# ----------------------------------------------------------------------------- sequences
def _rows(a: np.ndarray, length: int | None, what: str) -> np.ndarray:
    """``(L,)`` or ``(R, L)`` attributions -> ``(R, L)``, checked against ``length``."""
    a = _np(a)
    a = a[None] if a.ndim == 1 else a
    if a.ndim != 2 or (length is not None and a.shape[1] != length):
        want = "(L,) or (R, L)" if length is None else f"({length},) or (R, {length})"
        raise ValueError(f"{what}: expected attributions of shape {want}, got {a.shape}")
    if not np.all(np.isfinite(a)):  # as grid: a NaN was drawn as a gap, without a word
        raise ValueError(f"{what}: attributions contain NaN or inf; nothing sensible can be "
                         "drawn (find where they come from, or np.nan_to_num them)")
    return a


def _sequence_norm(a: np.ndarray, signed: bool | None, cmap: str | None):
    signed = _is_signed(a) if signed is None else signed
    lo, hi = _limits(a, signed)
    return signed, colors.Normalize(lo, hi), _colormap(
        (DIVERGING_CMAP if signed else "Reds") if cmap is None else cmap)


def tokens(words: Sequence[str], attributions, *, row_titles: Sequence[str] | None = None,
           title: str | None = None, cmap: str | None = None, signed: bool | None = None,
           colorbar: bool = True, colorbar_label: str | None = None, width: float = 8.0,
           save=None, dpi: int = 120) -> Figure:
    """Per-token attributions as coloured words, one block per row (e.g. per class).

    Args:
      words: the ``L`` tokens as strings, in input order (padding positions included, so
        that they line up with the attributions; pass ``""`` to hide one); drawn as they are
        (``$`` is no math mode).
      attributions: ``(L,)`` or ``(R, L)``, e.g. one input's
        ``jaxsal.integrated_gradients(m, ids, [0, 1], layer="embedding")[i]``.
      row_titles: ``R`` labels (``"class 0"``, ...).
      signed: diverging colours centred at 0 (``None``: when some values are negative);
        otherwise white to red. One colour scale for all rows.
      width: figure width in inches; long sequences wrap, and a token wider than the
        figure allows widens it (tokens keep one font size and are never cut).
    """
    width = _inches(width, "width", "tokens")
    words = [str(w) for w in words]
    if not words:
        raise ValueError("tokens: expected at least one token, got 0 (an empty sequence has "
                         "nothing to draw)")
    a = _rows(attributions, len(words), "tokens")
    if row_titles is not None and len(row_titles) != len(a):
        raise ValueError(f"tokens: {len(a)} rows of attributions but {len(row_titles)} "
                         "row_titles")
    signed, norm, cmap_ = _sequence_norm(a, signed, cmap)
    left = 0.15 + (_CHAR_IN * max(len(t) for t in row_titles) if row_titles else 0.0)
    bar = 0.9 if colorbar else 0.0
    # each word's box as Agg draws it (inches): the text and its padding
    # (at the screen's and the saved file's resolutions)
    dpis = (72, matplotlib.rcParams["figure.dpi"], dpi)
    widths = [max(wd, _CHAR_IN) + 0.12 for wd in _widths_in(words, _LABEL_PT, dpis)]
    # a word wider than the figure allows widens it, as a title does: words are not cut
    width = max(width, left + bar + 0.15 + max(widths))
    usable = max(width - left - bar - 0.15, 1.0)
    # lay the words out once (inches): every row wraps the same way
    places, x, line = [], 0.0, 0
    for w, wd in zip(words, widths):
        if x > 0 and x + wd > usable:
            x, line = 0.0, line + 1
        places.append((x, line))
        x += wd + 0.05
    lines = line + 1
    row_h = lines * 0.3 + 0.15
    top = 0.35 if title else 0.1
    height = top + len(a) * row_h + 0.1
    fig = _Figure(figsize=(width, height))
    ax = fig.add_axes([0, 0, 1, 1], label="tokens")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    for r, row in enumerate(a):
        y0 = top + r * row_h
        if row_titles is not None:
            ax.text(0.1, y0 + 0.15, row_titles[r], fontsize=_LABEL_PT, va="center", ha="left",
                    parse_math=False)
        for (x, ln), w, v in zip(places, words, row):
            rgba = cmap_(norm(float(v)))  # (float64: see grid)
            dark = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] < 0.5
            ax.text(left + x, y0 + 0.15 + 0.3 * ln, w, fontsize=_LABEL_PT, va="center",
                    ha="left", color="white" if dark else "black", parse_math=False,
                    bbox=dict(boxstyle="round,pad=0.15", facecolor=rgba, edgecolor="none"))
    sup = fig.suptitle(title, fontsize=_TITLE_PT, y=1 - 0.05 / height, va="top") if title else None
    if colorbar:
        cax = fig.add_axes([(width - 0.65) / width, 0.1 / height, 0.12 / width,
                            (height - top - 0.2) / height], label="colorbar")
        _colorbar(fig, cax, norm, cmap_, colorbar_label, "vertical", _extend(a, norm))
    _fit_title(fig, sup)
    return _finish(fig, save, dpi)


def signal(x, attributions, *, row_titles: Sequence[str] | None = None,
           title: str | None = None, cmap: str | None = None, signed: bool | None = None,
           colorbar: bool = True, colorbar_label: str | None = None,
           panel_size: tuple[float, float] = (6.0, 1.3), save=None, dpi: int = 120) -> Figure:
    """A 1-D signal with its attribution maps drawn behind it, one panel per map row.

    Args:
      x: the signal, ``(L,)`` or ``(L, C)`` (one line per channel).
      attributions: ``(L,)`` or ``(R, L)``: e.g. ``jaxsal.gradcam(m, x[None], [0, 1])[0]``
        for a ``Conv1D`` model.
      row_titles: ``R`` labels; other arguments as in :func:`tokens`.
    """
    panel_size = _inches_pair(panel_size, "panel_size", "signal")
    sig = _np(x)
    sig = sig[:, None] if sig.ndim == 1 else sig
    if sig.ndim != 2:
        raise ValueError(f"signal: expected x of shape (L,) or (L, C), got {_np(x).shape}")
    if not np.all(np.isfinite(sig)):
        raise ValueError("signal: x contains NaN or inf; expected a finite signal to draw "
                         "(np.nan_to_num(x), or interpolate the gaps)")
    att = np.shape(attributions)
    if (sig.ndim == 2 and len(att) in (1, 2) and att[-1] == sig.shape[1] != sig.shape[0]):
        raise ValueError(f"signal: x of shape {sig.shape} reads as (L, C) = {sig.shape[0]} "
                         f"samples of {sig.shape[1]} channels, but the attributions {att} have "
                         f"{att[-1]} positions; for a channels-first signal (C, L) (the input "
                         "of a channels-first Conv1D model) pass x.T")
    a = _rows(attributions, sig.shape[0], "signal")
    if row_titles is not None and len(row_titles) != len(a):
        raise ValueError(f"signal: {len(a)} rows of attributions but {len(row_titles)} "
                         "row_titles")
    signed, norm, cmap_ = _sequence_norm(a, signed, cmap)
    pw, ph = panel_size
    left = 0.5 + (_CHAR_IN * max(len(t) for t in row_titles) if row_titles else 0.0)
    bar = 0.9 if colorbar else 0.2
    top = 0.4 if title else 0.15
    fw, fh = left + pw + bar, top + len(a) * (ph + 0.15) + 0.35
    fig = _Figure(figsize=(fw, fh))
    lo, hi = float(sig.min()), float(sig.max())
    pad = 0.05 * (hi - lo or 1.0)
    length = sig.shape[0]
    for r, row in enumerate(a):
        y = 1 - (top + r * (ph + 0.15) + ph) / fh
        ax = fig.add_axes([left / fw, y, pw / fw, ph / fh], label="panel")
        ax.imshow(row[None, :].astype(np.float64), aspect="auto", cmap=cmap_, norm=norm,
                  interpolation="nearest",
                  extent=(-0.5, length - 0.5, lo - pad, hi + pad))
        ax.plot(np.arange(length), sig, color="black", linewidth=0.8)
        ax.set_xlim(-0.5, length - 0.5)
        ax.set_ylim(lo - pad, hi + pad)
        ax.tick_params(labelsize=_TICK_PT)
        if r != len(a) - 1:
            ax.set_xticklabels([])
        if row_titles is not None:
            ax.set_ylabel(row_titles[r], fontsize=_LABEL_PT, rotation=0, ha="right",
                          va="center")
    sup = fig.suptitle(title, fontsize=_TITLE_PT, y=1 - 0.05 / fh, va="top") if title else None
    if colorbar:
        cax = fig.add_axes([(left + pw + 0.15) / fw, 0.35 / fh, 0.12 / fw,
                            (fh - top - 0.35) / fh], label="colorbar")
        _colorbar(fig, cax, norm, cmap_, colorbar_label, "vertical", _extend(a, norm))
    _fit_title(fig, sup)
    return _finish(fig, save, dpi)


# ----------------------------------------------------------------------------- images
def image_grid(images, *, titles=None, ncols: int | None = None, title: str | None = None,
               value_range: tuple[float, float] | None = None, cmap: str = "gray",
               colorbar: bool | None = None, row_titles: Sequence[str] | None = None,
               col_titles: Sequence[str] | None = None, panel_size: float = 1.2,
               mosaic: bool | None = None, save=None, dpi: int = 120,
               channels_first: bool = False) -> Figure:
    """A grid of images: activation-maximization results, filter visualizations, inputs.

    Args:
      images: ``(T, H, W, c)`` (c = 1 or 3; RGBA, c = 4, drawn without alpha, for images at
        least 16 pixels a side: a smaller ``(T, H, W, 4)`` reads as an explicit grid of gray
        images 4 pixels wide, and is refused as ambiguous) or
        ``(T, H, W)``, laid out ``ncols`` per row; or ``(R, C, H, W, c)`` (or gray
        ``(R, C, H, W)``) for an explicit grid.
      channels_first: the images are ``(T, c, H, W)`` (or ``(R, C, c, H, W)``), as
        :func:`jaxsal.maximize` returns them for a channels-first model; without it a
        ``(T, c, H, W)`` array reads as an explicit grid of ``c`` gray images per row.
      titles: one label per image (``T`` or ``(R, C)``), e.g. the class and the score reached.
      value_range: ``(lo, hi)`` that black/white (or 0/1 per RGB channel) stand for, e.g. the
        ``input_range`` of :func:`jaxsal.maximize`; ``None`` stretches each image to its own
        min..max (said in the figure). ``lo < hi``, both finite, else a ``ValueError``.
      cmap: for one-channel images.
      colorbar: one colour bar for one-channel images with ``value_range`` (default then).
      row_titles, col_titles: labels for an explicit ``(R, C, ...)`` grid.
      mosaic: draw all images as one picture, each a tile of at most 64 pixels a side
        (larger images averaged down), rows labelled by the index of their first image: a
        second or two for the 1000 classes of ImageNet, where one panel per image took
        about 20 s and 600 MB. No per-image ``titles``. ``None``: for more than 150 images
        without ``titles`` (with them, panel by panel: pass a subset or the top classes to
        keep such a figure readable).
    """
    a = _np(images)
    cmap = _colormap(cmap)
    if not isinstance(channels_first, (bool, np.bool_)):
        raise ValueError(f"channels_first: expected True or False, got {channels_first!r}")
    if channels_first:
        if a.ndim not in (4, 5) or a.shape[-3] not in (1, 3, 4):
            raise ValueError(f"channels_first=True: expected (T, c, H, W) or (R, C, c, H, W) "
                             f"images with c = 1, 3 or 4, got shape {a.shape}")
        a = np.moveaxis(a, -3, -1)
    if not np.all(np.isfinite(a)):  # (a NaN image was taken for a padding panel and dropped)
        raise ValueError("images contain NaN or inf; nothing sensible can be drawn")
    if a.ndim >= 3 and not a.size:  # (was a ZeroDivisionError, or a figure of empty panels)
        raise ValueError(f"images: expected at least one image of at least one pixel, got "
                         f"shape {a.shape}")
    if a.ndim == 4 and a.shape[-1] == 4 and min(a.shape[1:3]) >= 16:
        a = a[..., :3]  # (T, H, W, 4): RGBA images, drawn without their alpha channel
    shown = None  # the panels holding an image (a list's last row is padded)
    # (T, H, W) and (T, H, W, c<=3) are lists laid out ncols per row; (R, C, H, W) with
    # W > 4 and (R, C, H, W, c) are explicit grids
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        raise ValueError(f"images of shape {a.shape}: one {'RGB' if a.shape[-1] == 3 else 'RGBA'} "
                         f"image (pass images[None]) or {a.shape[0]} gray images "
                         f"{a.shape[-1]} pixels wide (pass images[..., None])?")
    if a.ndim == 4 and a.shape[-1] in (2, 4):
        raise ValueError(f"images of shape {a.shape}: expected (T, H, W, c) with c = 1 or 3 "
                         f"(RGBA, 4, for images of at least 16x16), got {a.shape[-1]} channels; "
                         "or an explicit grid (R, C, H, W) of gray images wider than 4 pixels")
    if a.ndim == 3 or (a.ndim == 4 and a.shape[-1] in (1, 3)):
        if a.ndim == 3:
            a = a[..., None]
        T = shown = a.shape[0]
        R, C = _grid_shape(T, ncols)
        pad = R * C - T
        tiles = np.concatenate([a, np.zeros((pad,) + a.shape[1:], np.float32)])
        tiles = tiles.reshape((R, C) + a.shape[1:])
        if titles is not None and len(titles) != T:
            raise ValueError(f"titles: expected {T} (one per image), got {len(titles)}")
        t = None if titles is None else list(titles) + [""] * pad
    elif a.ndim in (4, 5):
        if a.ndim == 4:
            a = a[..., None]
        R, C = a.shape[:2]
        T = R * C
        tiles = a
        t = titles
        if (titles is not None and np.ndim(images) == 4 and C in (3, 4) and not channels_first
                and np.shape(titles) == (R,)):
            # one title per image: (T, c, H, W) images of a channels-first model, read as an
            # explicit grid of c gray images per row (the titles failed as "expected Rx3")
            raise ValueError(f"titles: expected {R}x{C} titles for images {np.shape(images)} "
                             f"read as an explicit {R}x{C} grid of gray images, got {R} (one "
                             f"per row); for {R} channels-first images (T, {C}, H, W), as "
                             "maximize returns for a channels-first model, pass "
                             "channels_first=True")
    else:
        raise ValueError(f"images: expected (T, H, W[, c]) or (R, C, H, W[, c]), got {a.shape}")
    if row_titles is not None and len(row_titles) != R:
        raise ValueError(f"row_titles: expected {R} (the grid has {R} rows of {C}), got "
                         f"{len(row_titles)}; pass ncols= or an (R, C, H, W, c) array")
    if col_titles is not None and len(col_titles) != C:
        raise ValueError(f"col_titles: expected {C}, got {len(col_titles)}")
    if tiles.shape[-1] not in (1, 3):
        raise ValueError(f"images: expected 1 or 3 channels, got {tiles.shape[-1]}")
    H, W, ch = tiles.shape[2:]
    ptitles = _titles_2d(t, R, C, "titles")
    panel_size = _inches(panel_size, "panel_size", "image_grid")
    if value_range is not None:
        lo, hi = reals.check_interval(
            value_range, "value_range", where="image_grid",
            kind="the values black and white stand for, e.g. (0, 1) or (0, 255)")
    if colorbar is None:
        colorbar = value_range is not None and ch == 1
    caption = ("each image stretched to its own min..max" if value_range is None
               else f"values {value_range[0]:g} .. {value_range[1]:g}")
    full_title = caption if not title else f"{title}\n{caption}"
    n_images = R * C if shown is None else shown
    if mosaic is not None and not isinstance(mosaic, (bool, np.bool_)):
        raise ValueError(f"mosaic: expected True, False or None (automatic), got {mosaic!r}")
    if mosaic is None:  # hundreds of axes take seconds each hundred to build and save
        mosaic = n_images > 150 and ptitles is None
    if mosaic:
        if ptitles is not None:
            raise ValueError("mosaic=True draws no per-image titles: pass mosaic=False to keep "
                             "titles= (slow for hundreds of images: pass a subset, e.g. the "
                             "top classes), or leave titles out")
        return _image_mosaic(tiles, n_images, value_range, cmap, colorbar, row_titles,
                             col_titles, full_title, bool(title), shown is not None,
                             panel_size, save, dpi)
    title_lines = 0 if ptitles is None else max(_lines(x) for x in ptitles.ravel())
    pw, ph = panel_size, panel_size * H / W
    hgap, vgap = 0.06, 0.06 + title_lines * _LINE_IN
    left = 0.1 + (max(_width_in(x) for x in row_titles) + 0.1 if row_titles else 0)
    top = 0.1 + _lines(full_title) * 0.2 + title_lines * _LINE_IN + (
        max(_lines(x) for x in col_titles) * _LINE_IN if col_titles else 0)
    right = 0.1 + (0.75 if colorbar else 0)
    fw = left + C * pw + (C - 1) * hgap + right
    fh = top + R * ph + (R - 1) * vgap + 0.1
    fig = _Figure(figsize=(fw, fh))
    sup = fig.suptitle(full_title, fontsize=_TITLE_PT if title else _LABEL_PT,
                       y=1 - 0.05 / fh, va="top")
    lo, hi = (None, None) if value_range is None else map(float, value_range)
    for r in range(R):
        for c in range(C):
            img = tiles[r, c]
            if shown is not None and r * C + c >= shown:
                continue  # padding
            x0, y0 = left + c * (pw + hgap), fh - top - (r + 1) * ph - r * vgap
            ax = fig.add_axes([x0 / fw, y0 / fh, pw / fw, ph / fh], label="panel")
            v = _unit_image(img, value_range)
            if ch == 1:
                ax.imshow(v[..., 0], cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(v, interpolation="nearest")
            _hide_ticks(ax)
            lab = []
            if r == 0 and col_titles:
                lab.append(str(col_titles[c]))
            if ptitles is not None and ptitles[r, c] not in (None, ""):
                lab.append(str(ptitles[r, c]))
            if lab:
                ax.set_title("\n".join(lab), fontsize=_LABEL_PT, pad=3)
            if c == 0 and row_titles:
                fig.text((x0 - 0.08) / fw, (y0 + ph / 2) / fh, str(row_titles[r]), ha="right",
                         va="center", fontsize=_LABEL_PT)
    if colorbar:
        gh = R * ph + (R - 1) * vgap
        cax = fig.add_axes([(fw - right + 0.1) / fw, (fh - top - gh) / fh, 0.12 / fw, gh / fh],
                           label="colorbar")
        _colorbar(fig, cax, colors.Normalize(lo if lo is not None else 0,
                                             hi if hi is not None else 1), cmap, None,
                  "vertical")
    _fit_title(fig, sup)
    return _finish(fig, save, dpi)


def _unit_image(img: np.ndarray, value_range) -> np.ndarray:
    """An image ``(H, W, c)`` in 0..1 as :func:`image_grid` draws it: ``value_range``
    ``(lo, hi)`` (``None``: the image's own min..max) mapped to 0..1 and clipped; a constant
    image, which has no min..max, at its value where that is in 0..1, else mid-gray."""
    lo, hi = ((float(img.min()), float(img.max())) if value_range is None
              else (float(value_range[0]), float(value_range[1])))
    if hi > lo:
        return np.clip((img - lo) / (hi - lo), 0, 1)
    return np.full_like(img, lo if 0.0 <= lo <= 1.0 else 0.5)


def _image_mosaic(tiles, n, value_range, cmap, colorbar, row_titles, col_titles,
                  full_title, titled, listed, panel_size, save, dpi):
    """:func:`image_grid`'s images ``tiles`` ``(R, C, H, W, c)`` (the first ``n`` shown)
    as one picture: tiles of at most 64 pixels a side, each image scaled as the panels
    scale it (``value_range``, or its own min..max), rows labelled by ``row_titles`` or, for
    a list of images (``listed``), the index of their first image."""
    R, C, H, W, ch = tiles.shape
    f = min(1.0, 64 / max(H, W))
    th, tw = max(1, round(H * f)), max(1, round(W * f))
    sep = max(1, th // 14)
    big = np.ones((R * th + (R - 1) * sep, C * tw + (C - 1) * sep, 3), np.float32)
    cmap_fn = _colormap(cmap)
    for i in range(n):
        r, c = divmod(i, C)
        v = _fit_pixels(_unit_image(tiles[r, c], value_range), th, tw)
        rgb = cmap_fn(v[..., 0])[..., :3] if ch == 1 else v
        big[r * (th + sep):r * (th + sep) + th, c * (tw + sep):c * (tw + sep) + tw] = rgb
    if row_titles is not None:
        yl = [str(t) for t in row_titles]
    else:
        yl = [str(r * C) if listed else "" for r in range(R)]
    xl = [str(t) for t in col_titles] if col_titles is not None else [""] * C
    if listed and row_titles is None:
        full_title += f"\nrows labelled by their first image ({C} per row)"
    # as 8-bit RGB, which matplotlib resamples several times faster than floats; counted by
    # count_panels as 1 x n tiles: the images, not the padding of a last row
    fig, sup, cax = _mosaic_figure(np.round(big * 255).astype(np.uint8), th, tw, sep,
                                   [c * (tw + sep) + tw / 2 - 0.5 for c in range(C)], xl, yl,
                                   C, full_title, title_pt=_TITLE_PT if titled else _LABEL_PT,
                                   max_tile_in=0.6, panel_size=panel_size, colorbar=colorbar,
                                   bar_room_in=0.75, bar_gap_in=0.1, label=f"mosaic:1x{n}")
    if cax is not None:
        lo, hi = (0.0, 1.0) if value_range is None else map(float, value_range)
        _colorbar(fig, cax, colors.Normalize(lo, hi), cmap_fn, None, "vertical")
    _fit_title(fig, sup)
    return _finish(fig, save, dpi)


def _kernel_of(model_or_kernel, layer):
    """``(kernel (kh, kw, in, out), layer)``: a model's conv layer read in its own Keras
    layout (``Conv2DTranspose``, depthwise and separable ones too), or a kernel as given."""
    if hasattr(model_or_kernel, "apply") and hasattr(model_or_kernel, "params"):
        from jaxsal._src.features import find_conv_kernel

        layer, k = find_conv_kernel(model_or_kernel, layer, "filters")
        return _np(k), layer
    return _np(model_or_kernel), layer


def filters(model_or_kernel, layer: str | None = None, *, channel: int | None = None,
            max_filters: int | None = None, ncols: int | None = None,
            title: str | None = None, panel_size: float = 0.9, save=None,
            dpi: int = 120) -> Figure:
    """The weights of a convolution layer's filters as images (first-layer filters).

    Args:
      model_or_kernel: a model from ``load_keras`` (then ``layer`` names the conv layer:
        ``Conv2D``, ``Conv2DTranspose`` (its ``(kh, kw, filters, in)`` kernel is read as
        such), ``DepthwiseConv2D`` (one single-channel filter per output channel) or
        ``SeparableConv2D`` (the equivalent full kernel); default: the first one) or a kernel
        ``(kh, kw, in_channels, filters)``.
      channel: for kernels with neither 1 nor 3 input channels, which input channel to show
        (default: the mean over input channels, said in the title).
      max_filters: show only the first ones.
    Returns:
      a figure: RGB filters (3 input channels) each min-max scaled on its own, as is usual
      for first-layer filters; one-channel filters in a diverging map with one symmetric
      scale for all of them and a colour bar, so the sign of every weight is visible.
    """
    k, layer = _kernel_of(model_or_kernel, layer)
    if k.ndim != 4:
        raise ValueError(f"expected a 2-D conv kernel (kh, kw, in, out), got shape {k.shape}")
    kh, kw, cin, cout = k.shape
    max_filters = ints.check_int(max_filters, "max_filters", where="filters",
                                 kind="filters shown", allow_none=True)
    channel = ints.check_int(channel, "channel", low=0, high=cin - 1, where="filters",
                             kind="an input channel of the kernel", allow_none=True)
    n = cout if max_filters is None else min(cout, int(max_filters))
    name = f"{layer}: " if layer else ""
    head = title or f"{name}{n} of {cout} filters, {kh}x{kw}x{cin}"
    if cin == 3 and channel is None:
        imgs = np.moveaxis(k[..., :n], -1, 0)  # (n, kh, kw, 3)
        return image_grid(imgs, titles=[f"#{i}" for i in range(n)], ncols=ncols, title=head,
                          panel_size=panel_size, save=save, dpi=dpi)
    if cin == 1:
        w = k[:, :, 0, :n]
    elif channel is not None:
        w = k[:, :, int(channel), :n]
        head += f", input channel {channel}"
    else:
        w = k[..., :n].mean(axis=2)
        head += ", mean over input channels"
    w = np.moveaxis(w, -1, 0)  # (n, kh, kw)
    R, C = _grid_shape(n, ncols)
    tiles = np.zeros((R * C, kh, kw), np.float32)
    tiles[:n] = w
    tiles = tiles.reshape(R, C, kh, kw)
    t = np.array([f"#{i}" if i < n else "" for i in range(R * C)], dtype=object).reshape(R, C)
    fig = grid(tiles, titles=t, title=head, signed=True, cmap=DIVERGING_CMAP,
               colorbar_label="weight", panel_size=panel_size, save=None, dpi=dpi)
    # blank the padding panels
    for ax, i in zip(panel_axes(fig), range(R * C)):
        if i >= n:
            ax.remove()
    return _finish(fig, save, dpi)


def feature_maps(model_or_activations, x=None, layer: str | None = None, *,
                 channels: Sequence[int] | None = None, max_maps: int | None = 64,
                 ncols: int | None = None, scale: str = "shared", cmap: str = "viridis",
                 title: str | None = None, panel_size: float = 0.9, save=None,
                 dpi: int = 120) -> Figure:
    """The feature maps (channels of one layer's output) for one input.

    Args:
      model_or_activations: a model from ``load_keras`` (with ``x`` and ``layer``; a
        channels-first layer's ``(K, h, w)`` maps are shown as they are), or the
        activations ``(H, W, K)`` / ``(1, H, W, K)`` themselves, channels last
        (``jaxsal.feature_maps`` returns channels first, ``(K, h, w)``: show those with
        :func:`image_grid`, or pass ``np.moveaxis(maps, 0, -1)``).
      x: one input, ``(1, H, W, C)`` or ``(H, W, C)`` (in the model's own layout); for a
        model of several inputs, a list, tuple or dict of them (one example of each).
      layer: the layer name.
      channels: which channels to show (default: the first ``max_maps``).
      scale: ``"shared"`` (one scale and colour bar: a weak channel looks weak) or
        ``"panel"`` (each channel stretched on its own, labelled so).
    """
    if x is not None or layer is not None:
        if x is None or layer is None:
            raise ValueError("pass both x and layer with a model (or the activations alone)")
        model = model_or_activations
        import jax

        from jaxsal._src.features import _one_example, layer_maps

        # one example (its own dtype: integer images are refused by layer_maps), or a batch
        # of one; a model of several inputs takes a list, tuple or dict of them
        if not _one_example(model, x):
            sizes = [np.shape(a)[:1] for a in jax.tree.leaves(x)]
            if any(size != (1,) for size in sizes):
                raise ValueError(f"feature_maps shows one input: expected x of shape (1, ...) "
                                 f"(or one example), got shapes "
                                 f"{[np.shape(a) for a in jax.tree.leaves(x)]}; pass x[:1]")
        maps, _ = layer_maps(model, x, layer)  # (1, K, h, w) whatever the layer's layout
        a = np.moveaxis(_np(maps)[0], 0, -1)
        name = f"{layer} "
    else:
        a = _np(model_or_activations)
        if a.ndim == 4 and a.shape[0] == 1:
            a = a[0]
        name = f"{layer} " if layer else ""
    if a.ndim != 3:
        raise ValueError(f"expected spatial activations (H, W, K), got {a.shape}; "
                         "dense layers have no feature maps")
    K = a.shape[-1]
    max_maps = ints.check_int(max_maps, "max_maps", where="feature_maps",
                              kind="channels shown; None: every channel", allow_none=True)
    if channels is not None:
        given = channels
        channels = list(np.asarray(channels).reshape(-1)) if np.ndim(channels) else [channels]
        if not all(_is_int(c) for c in channels):
            raise ValueError(f"channels: expected channel indices (ints), got {given!r}")
        if not channels:
            raise ValueError("channels: expected at least one channel, got []; pass None for "
                             "the first max_maps channels")
    idx = list(range(K))[: (max_maps or K)] if channels is None else [int(c) for c in channels]
    bad = [c for c in idx if not 0 <= c < K]
    if bad:
        raise ValueError(f"channels {bad} out of range for a layer with {K} channels")
    n = len(idx)
    R, C = _grid_shape(n, ncols)
    shown = np.moveaxis(a[..., idx], -1, 0)
    # the padding panels (removed below) hold a shown value, so that the shared scale is
    # the shown channels' own (zeros pulled it down to 0 for activations in [5, 10])
    tiles = np.full((R * C,) + a.shape[:2], shown.min(), np.float32)
    tiles[:n] = shown
    t = np.array([f"#{c}" for c in idx] + [""] * (R * C - n), dtype=object).reshape(R, C)
    head = title or f"{name}feature maps ({n} of {K} channels, {a.shape[0]}x{a.shape[1]})"
    fig = grid(tiles.reshape((R, C) + a.shape[:2]), titles=t, title=head, scale=scale,
               signed=False if a.min() >= 0 else None, cmap=cmap, colorbar_label="activation",
               panel_size=panel_size, save=None, dpi=dpi)
    for ax, i in zip(panel_axes(fig), range(R * C)):
        if i >= n:
            ax.remove()
    return _finish(fig, save, dpi)


# ----------------------------------------------------------------------------- architecture
_CLASS_COLOURS = {
    "InputLayer": "#e8e8e8",
    "Conv": "#cfe3f7",
    "Pool": "#d9f0d3",
    "Dense": "#fde0c5",
    "Dropout": "#f2f2f2",
    "Merge": "#f6d5e5",
    "Model": "#fff3b0",
    "Norm": "#e5dcf5",
}


def _colour_for(cls: str) -> str:
    if cls == "InputLayer":
        return _CLASS_COLOURS["InputLayer"]
    if cls in ("Functional", "Sequential", "Model"):
        return _CLASS_COLOURS["Model"]
    if "Conv" in cls:
        return _CLASS_COLOURS["Conv"]
    if "Pool" in cls:
        return _CLASS_COLOURS["Pool"]
    if cls in ("Dense",):
        return _CLASS_COLOURS["Dense"]
    if "Dropout" in cls or "Noise" in cls:
        return _CLASS_COLOURS["Dropout"]
    if cls in ("Add", "Concatenate", "Multiply", "Average", "Maximum", "Minimum", "Subtract",
               "Dot"):
        return _CLASS_COLOURS["Merge"]
    if "Normalization" in cls:
        return _CLASS_COLOURS["Norm"]
    return "#ffffff"


def _shape_str(s) -> str:
    if s is None:
        return "?"
    if isinstance(s, tuple) and s and isinstance(s[0], tuple):
        return ", ".join(_shape_str(t) for t in s)
    if len(s) == 1:
        return f"({s[0]},)"
    return "(" + ", ".join("None" if d is None else str(d) for d in s) + ")"


def architecture(model, *, show_shapes: bool = True, show_activations: bool = True,
                 title: str | None = None, save=None, dpi: int = 120) -> Figure:
    """A diagram of the model's layers and connections (like Keras's ``plot_model``), drawn
    with matplotlib alone.

    Each box is a layer: its name, class (and fused activation) and output shape without the
    batch axis. Arrows follow the tensors, so branches (one output feeding several layers)
    and merges (``Add``/``Concatenate`` of several inputs) are visible; arrows that skip
    ranks (residual connections) run down a lane right of the boxes in between. A nested model
    is one box. A layer called on its own output (``sh(sh(x))``) is one box with a loop on its
    left; a call that closes a cycle through a shared layer (``A(B(A(x)))``) runs up a lane
    left of the boxes.

    Args:
      model: a :class:`model_import.KerasModel` (from ``load_keras``).
      show_shapes: print the output shapes.
      show_activations: print fused activations next to the class.
    """
    from jaxsal._src.architecture import layout_graph

    graph = getattr(model, "graph", None)
    if graph is None or not hasattr(graph, "calls"):
        raise TypeError(f"expected a model from load_keras (with a .graph), got "
                        f"{type(model).__name__}")
    shapes = {}
    if show_shapes:
        try:
            shapes = {n: model.layer(n).output_shape for n in graph.layers}
        except Exception:  # shapes unknown (free input dims): draw without them
            shapes = {}
        for r, s in zip(graph.inputs, graph.input_shapes):
            shapes.setdefault(r.layer, s)
    lay = layout_graph(graph, shapes)

    def label(n):
        cls = n.class_name
        if show_activations and n.activation:
            cls = f"{cls} · {n.activation}"
        lines = [n.name, cls]
        if show_shapes:
            lines.append(_shape_str(n.output_shape))
        return lines

    texts = {k: label(n) for k, n in lay.nodes.items()}
    box_w = max(1.7, max(len(s) for t in texts.values() for s in t) * 0.085 + 0.3)  # inches
    box_h = 0.22 * (3 if show_shapes else 2) + 0.12
    gap_x, gap_y = 0.45, 0.38
    head = title or f"{model.name}: {len(lay.nodes)} layers"
    top = 0.55
    # node centres in inches, the widest rank centred at x = 0 for now
    centre = {k: (n.x * (box_w + gap_x), top + n.y * (box_h + gap_y) + box_h / 2)
              for k, n in lay.nodes.items()}
    # edges that skip ranks run down a lane right of every box they pass (no crossing)
    lane_gap = 0.16
    skips, lanes = [], []
    backs, back_lanes = [], []  # self-edges and edges closing a cycle: up a lane on the left
    for s_, d_ in lay.back_edges:
        r0, r1 = lay.nodes[d_].rank, lay.nodes[s_].rank  # r0 <= r1: the lane goes up
        passed = [centre[k][0] for k, n in lay.nodes.items() if r0 <= n.rank <= r1]
        left = min(passed) - box_w / 2
        lane = 0
        while any(l_ == lane and not (b1 < r0 or r1 < b0) for l_, b0, b1 in back_lanes):
            lane += 1
        back_lanes.append((lane, r0, r1))
        backs.append((s_, d_, left - lane_gap * (lane + 1)))
    for s_, d_ in lay.edges:
        r0, r1 = lay.nodes[s_].rank, lay.nodes[d_].rank
        if r1 - r0 <= 1:
            continue
        between = [centre[k][0] for k, n in lay.nodes.items() if r0 < n.rank < r1]
        right = max(between + [centre[s_][0], centre[d_][0]]) + box_w / 2
        lane = 0  # first lane not used by an overlapping skip edge
        while any(l_ == lane and not (b1 <= r0 or r1 <= b0) for l_, b0, b1 in lanes):
            lane += 1
        lanes.append((lane, r0, r1))
        skips.append((s_, d_, right + lane_gap * (lane + 1)))
    half = (lay.width * box_w + (lay.width - 1) * gap_x) / 2
    x_max = max([half] + [x for *_, x in skips])
    x_min = min([-half] + [x for *_, x in backs])
    content_w = x_max - x_min  # from the leftmost lane or box to the rightmost
    title_w = len(head) * 0.1 + 0.4  # 11 pt characters
    fw = max(3.5, content_w + 1.0, title_w)
    fh = top + lay.n_ranks * box_h + (lay.n_ranks - 1) * gap_y + 0.25
    x_shift = (fw - content_w) / 2 - x_min
    centre = {k: (x + x_shift, y) for k, (x, y) in centre.items()}
    fig = _Figure(figsize=(fw, fh))
    ax = fig.add_axes([0, 0, 1, 1], label="architecture")
    ax.set_xlim(0, fw)
    ax.set_ylim(fh, 0)  # y grows downwards: inputs at the top
    ax.axis("off")
    ax.text(fw / 2, 0.15, head, ha="center", va="top", fontsize=_TITLE_PT)
    for k, n in lay.nodes.items():
        cx, cy = centre[k]
        ax.add_patch(FancyBboxPatch((cx - box_w / 2, cy - box_h / 2), box_w, box_h,
                                    boxstyle="round,pad=0,rounding_size=0.06",
                                    facecolor=_colour_for(n.class_name), edgecolor="#444444",
                                    linewidth=0.8, label="layer"))
        t = texts[k]
        n_lines = len(t)
        for i, s in enumerate(t):
            y = cy + (i - (n_lines - 1) / 2) * 0.22
            ax.text(cx, y, s, ha="center", va="center",
                    fontsize=_LABEL_PT if i else _LABEL_PT + 0.5,
                    fontweight="bold" if i == 0 else "normal",
                    family="monospace" if i == 2 else None, color="#222222")
    arrow = dict(arrowstyle="-|>", mutation_scale=10, color="#555555", linewidth=1.0,
                 shrinkA=0, shrinkB=1, label="edge")
    lane_of = {(s_, d_): x for s_, d_, x in skips}
    back_of = {(s_, d_): x for s_, d_, x in backs}
    for s, d in lay.edges:
        (x0, y0), (x1, y1) = centre[s], centre[d]
        if (s, d) in back_of:
            xl = back_of[(s, d)] + x_shift
            if s == d:  # a layer called on its own output: a loop on its left side
                y0, y1 = y0 + box_h / 4, y1 - box_h / 4
            # out of the source's left side, up the lane, into the destination's left side
            ax.plot([x0 - box_w / 2, xl, xl], [y0, y0, y1], color=arrow["color"],
                    linewidth=arrow["linewidth"], solid_joinstyle="miter", label="back lane")
            ax.add_patch(FancyArrowPatch((xl, y1), (x1 - box_w / 2, y1), **arrow))
        elif (s, d) in lane_of:
            xl = lane_of[(s, d)] + x_shift
            # out of the source's right side, down the lane, into the destination's right side
            ax.plot([x0 + box_w / 2, xl, xl], [y0, y0, y1], color=arrow["color"],
                     linewidth=arrow["linewidth"], solid_joinstyle="miter", label="lane")
            ax.add_patch(FancyArrowPatch((xl, y1), (x1 + box_w / 2, y1), **arrow))
        else:  # the source's bottom edge to the destination's top edge
            ax.add_patch(FancyArrowPatch((x0, y0 + box_h / 2), (x1, y1 - box_h / 2), **arrow))
    return _finish(fig, save, dpi)


# ----------------------------------------------------------------------------- curves
def curves(named: dict, *, target: int | None = None, title: str | None = None,
           ylabel: str = "score of the target", size: tuple[float, float] = (5.0, 3.6),
           ax=None, save=None, dpi: int = 120) -> Figure:
    """Deletion or insertion curves (:func:`jaxsal.deletion`, :func:`jaxsal.insertion`) of
    several maps, each averaged over the inputs, one line per name with its mean area in the
    legend.

    Args:
      named: ``{name: Curves}``, e.g. ``{"integrated gradients": jaxsal.deletion(...),
        "random": ...}``; all with the same steps.
      target: for curves with a class axis ``(N, T, steps + 1)``, the target (column) to
        draw, an int (bools refused); ``None`` averages over the targets too. Curves
        without a class axis refuse a target.
      ylabel, title: the axis label and the figure's title.
      ax: draw into this matplotlib axes (e.g. one of several subplots) instead of a new
        figure; its figure is returned.
    """
    size = _inches_pair(size, "size", "curves")
    if not isinstance(named, dict) or not named:
        raise ValueError("curves: expected a dict {name: Curves} of at least one entry, got "
                         f"{type(named).__name__}")
    own = ax is None
    if own:
        fig = _Figure(figsize=size)
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure
    for name, c in named.items():
        if not all(hasattr(c, f) for f in ("fractions", "scores", "auc")):
            raise TypeError(f"curves: {name!r} is not a Curves result (fractions, scores, "
                            f"auc), got {type(c).__name__}")
        scores, auc = _np(c.scores), _np(c.auc)
        if scores.ndim != 3 and target is not None:  # drawn as if target had been None
            raise ValueError(f"curves: target={target!r} picks a column of curves with a "
                             f"class axis (N, T, steps + 1), but {name!r}'s curves are of "
                             f"shape {scores.shape}, without one; pass target=None (or the "
                             "curves of all targets)")
        if scores.ndim == 3:  # (N, T, steps + 1)
            if target is not None:
                t = scores.shape[1]
                target = ints.check_int(target, "target", low=-t, high=t - 1, where="curves",
                                        kind=f"a column of {name!r}'s curves of {t} targets")
                scores, auc = scores[:, target], auc[:, target]
            else:
                scores, auc = scores.reshape(-1, scores.shape[-1]), auc.ravel()
        style = {"ls": "--", "color": "grey"} if name == "random" else {}
        ax.plot(_np(c.fractions), scores.mean(0), label=f"{name} ({auc.mean():.3f})", **style)
    ax.set_xlabel("fraction of positions changed", fontsize=_LABEL_PT)
    ax.set_ylabel(ylabel, fontsize=_LABEL_PT)
    ax.tick_params(labelsize=_TICK_PT)
    ax.set_xlim(0.0, 1.0)
    ax.legend(fontsize=_TICK_PT, title="mean area", title_fontsize=_TICK_PT)
    if title:
        ax.set_title(title, fontsize=_TITLE_PT)
    if len(fig.axes) == 1:
        fig.tight_layout()
    if own:
        _fit_title(fig)
    return _finish(fig, save, dpi)

