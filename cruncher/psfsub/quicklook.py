"""Quicklook displays of PSF-subtracted images: what observers watch during the night (seed 004, 2.3).

The cADI quicklook is a four-panel plot: the two cADI reductions on top, their SNR maps below;
:func:`two_panel` shows one reduction and its SNR map. Images are north-up, east-left already
(the arrays' x runs east to west), so they are shown as they are with ``origin="lower"``, with a
compass and a 0.5" scale bar. Residual images use a symmetric asinh stretch with limits from the
pixels near the star (the field edge and the masked core would set them otherwise); SNR maps use
a fixed range so that one night's displays compare at a glance. matplotlib (Agg) is imported
only when a figure is drawn: the jobs that never plot do not pay for it.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from cruncher.instruments.gpi.optics import LENSLET_SCALE

#: Fixed colour range of SNR panels.
SNR_RANGE = (-5.0, 10.0)
#: Stretch limits come from the pixels between these radii (px) of the star.
LIMIT_RADII = (8.0, 80.0)
#: Percentile of |value| the residual stretch saturates at.
LIMIT_PERCENTILE = 99.5
SCALE_BAR_ARCSEC = 0.5
DPI = 100


def title(target: str, band: str, date: str, n_cubes: int, rotation_deg: float) -> str:
    """``HD 95086  H  2016-03-15  40 cubes  rotation 21.3 deg``."""
    if len(date) == 8 and date.isdigit():
        date = dt.date(int(date[:4]), int(date[4:6]), int(date[6:])).isoformat()
    return f"{target}  {band}  {date}  {n_cubes} cubes  rotation {rotation_deg:.1f} deg"


def robust_limit(image: np.ndarray, centre: tuple[float, float] | None = None,
                 radii: tuple[float, float] = LIMIT_RADII,
                 percentile: float = LIMIT_PERCENTILE) -> float:
    """The ``percentile`` of |value| of finite pixels between ``radii`` of ``centre``."""
    centre = _centre(image, centre)
    y, x = np.indices(image.shape)
    r = np.hypot(x - centre[0], y - centre[1])
    values = np.abs(image[(r >= radii[0]) & (r <= radii[1]) & np.isfinite(image)])
    if values.size == 0:
        values = np.abs(image[np.isfinite(image)])
    limit = float(np.percentile(values, percentile)) if values.size else 1.0
    return limit if limit > 0 else 1.0


def four_panel(path: str | Path, images: Mapping[str, tuple[np.ndarray, np.ndarray]],
               title: str, *, centre: tuple[float, float] | None = None,
               scale_arcsec: float = LENSLET_SCALE) -> Path:
    """Write the quicklook PNG: each (image, SNR) pair of ``images`` is a column, SNR below.

    Made for two reductions (a 1400 x 1300 px figure); any number of columns works.
    """
    return _draw(path, images, title, centre=centre, scale_arcsec=scale_arcsec,
                 size_in=(7.0 * len(images), 13.0))


def two_panel(path: str | Path, image: np.ndarray, snr: np.ndarray, title: str, *,
              label: str = "", centre: tuple[float, float] | None = None,
              scale_arcsec: float = LENSLET_SCALE) -> Path:
    """Write a PNG of one reduction and its SNR map side by side (1400 x 650 px)."""
    return _draw(path, {label: (image, snr)}, title, centre=centre, scale_arcsec=scale_arcsec,
                 size_in=(14.0, 6.5), rows_are_pairs=True)


def _draw(path: str | Path, images: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str, *,
          centre: tuple[float, float] | None, scale_arcsec: float, size_in: tuple[float, float],
          rows_are_pairs: bool = False) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A Figure on an Agg canvas, without pyplot: no global backend switch, nothing to close,
    # safe in a worker thread.
    fig = Figure(figsize=size_in, dpi=DPI)
    FigureCanvasAgg(fig)
    n = len(images)
    grid = fig.add_gridspec(n, 2) if rows_are_pairs else fig.add_gridspec(2, n)
    for col, (label, (image, snr)) in enumerate(images.items()):
        spots = ((col, 0), (col, 1)) if rows_are_pairs else ((0, col), (1, col))
        star = _centre(image, centre)
        _residual_panel(fig, fig.add_subplot(grid[spots[0]]), image, star, label, scale_arcsec)
        _snr_panel(fig, fig.add_subplot(grid[spots[1]]), snr, star,
                   f"{label} SNR" if label else "SNR", scale_arcsec)
    fig.suptitle(title, fontsize=15)
    fig.subplots_adjust(left=0.04, right=0.95, bottom=0.04, top=0.91, wspace=0.2, hspace=0.15)
    return save_png(fig, path, DPI)


def save_png(fig, path: str | Path, dpi: int) -> Path:
    """Write ``fig`` as a PNG atomically: a viewer polling the file never sees half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=dpi)
    tmp.replace(path)
    return path


def _residual_panel(fig, ax, image: np.ndarray, centre: tuple[float, float], label: str,
                    scale_arcsec: float) -> None:
    from matplotlib.colors import AsinhNorm

    limit = robust_limit(image, centre)
    norm = AsinhNorm(linear_width=limit / 10.0, vmin=-limit, vmax=limit)
    shown = ax.imshow(image, origin="lower", cmap=_cmap("inferno"), norm=norm,
                      interpolation="nearest")
    bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
    # An asinh colour bar's own ticks crowd around zero; five labelled levels read better.
    bar.set_ticks([-limit, -limit / 10, 0.0, limit / 10, limit])
    bar.set_ticklabels([f"{v:.1e}" if v else "0" for v in
                        (-limit, -limit / 10, 0.0, limit / 10, limit)])
    _decorate(ax, image.shape, centre, label, scale_arcsec)


def _snr_panel(fig, ax, snr: np.ndarray, centre: tuple[float, float], label: str,
               scale_arcsec: float) -> None:
    shown = ax.imshow(snr, origin="lower", cmap=_cmap("viridis"), vmin=SNR_RANGE[0],
                      vmax=SNR_RANGE[1], interpolation="nearest")
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02, label="SNR")
    _decorate(ax, snr.shape, centre, label, scale_arcsec)


def _cmap(name: str):
    import matplotlib

    # Outside the field: grey, not the colour of zero.
    return matplotlib.colormaps[name].with_extremes(bad="0.25")


def _decorate(ax, shape: tuple[int, ...], centre: tuple[float, float], label: str,
              scale_arcsec: float) -> None:
    """Title, star marker, compass (N up, E left) and a scale bar; no pixel ticks."""
    ax.set_title(label, fontsize=13)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.plot(centre[0], centre[1], marker="+", color="white", markersize=8, alpha=0.6)
    ny, nx = shape[-2], shape[-1]
    arm = 0.12 * min(nx, ny)
    x0, y0 = 0.92 * nx, 0.72 * ny
    style = {"color": "white", "width": 0.4, "head_width": 3.0, "length_includes_head": True}
    ax.arrow(x0, y0, 0.0, arm, **style)
    ax.arrow(x0, y0, -arm, 0.0, **style)
    ax.text(x0, y0 + arm + 3, "N", color="white", ha="center", va="bottom", fontsize=11)
    ax.text(x0 - arm - 3, y0, "E", color="white", ha="right", va="center", fontsize=11)
    bar = SCALE_BAR_ARCSEC / scale_arcsec
    bx, by = 0.06 * nx, 0.06 * ny
    ax.plot([bx, bx + bar], [by, by], color="white", linewidth=3)
    ax.text(bx + bar / 2, by + 4, f'{SCALE_BAR_ARCSEC:g}"', color="white", ha="center",
            va="bottom", fontsize=11)
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(-0.5, ny - 0.5)


def _centre(image: np.ndarray, centre: tuple[float, float] | None) -> tuple[float, float]:
    return centre if centre is not None else (float(image.shape[-1] // 2),
                                              float(image.shape[-2] // 2))
