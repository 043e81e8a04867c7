"""Images for the chat: the general KLIP reduction and the calibrated contrast curves.

:func:`klip_png` draws one KL-mode image of the general reduction's KL-mode cube
(``pyklip-<tag>-k300a9s4m1-KLmodes-all.fits``) in contrast units, with the quicklook's symmetric
asinh stretch, grey outside the field, compass and scale bar (:mod:`cruncher.psfsub.quicklook`),
axes in arcsec from the star, the brightest point sources circled with their SNR and, when the
calibrated L-type curve ``contrast-<tag>-L.fits`` lies next to it, the contrast at 0.25", 0.4"
and 0.8". pyKLIP writes the cube derotated north up, east left (its WCS says so: PC1_1 < 0,
PC2_2 > 0, no cross terms); a product whose WCS says otherwise is resampled north-up first.
Figures are drawn on Agg canvases without pyplot: no global state, nothing left open.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from cruncher.errors import BadInputError
from cruncher.instruments.gpi import keywords as kw
from cruncher.instruments.gpi.optics import FIDUCIAL_SEPARATIONS, LENSLET_SCALE, fpm_radius_lenslets
from cruncher.psfsub import klip, quicklook, snr

_log = logging.getLogger(__name__)

FIGSIZE = (7.0, 6.4)          # inches; x DPI = 700 x 640 px
CURVE_FIGSIZE = (7.0, 4.5)    # 700 x 450 px
DPI = 100
SNR_THRESHOLD = 5.0
MAX_MARKED = 3                # detections circled and listed
MARK_RADIUS_PX = 7.0
NORTH_UP_TOLERANCE = 0.01     # |A - I| below this (about 0.5 deg): no resampling
REQUIRED = ("OBJECT", "DATE-OBS", "IFSFILT")


@dataclass(frozen=True)
class Summary:
    """What :func:`klip_png` drew, and the chat message that goes with it."""

    png: Path
    title: str
    kl: int
    detections: list[tuple[float, float, float]]      # (sep arcsec, PA deg, SNR), best first
    contrast_at: dict[str, float | None]              # "0.25" / "0.4" / "0.8" -> contrast

    def text(self) -> str:
        lines = [f"{self.title} (general KLIP, KL {self.kl})", detection_line(self.detections),
                 contrast_line(self.contrast_at, sigma="5-sigma")]
        return "\n".join(line for line in lines if line)


@dataclass(frozen=True)
class Product:
    """A KL-mode image ready to draw: north-up, with the facts around it."""

    image: np.ndarray
    centre: tuple[float, float]           # the star (x, y), 0-based pixels
    title: str
    kl: int
    detections: list[dict]                # snr.detect's dicts, x/y in ``image``, best first
    contrast_at: dict[str, float | None]


def detection_line(detections: list[tuple[float, float, float]]) -> str:
    if not detections:
        return f"no point source above SNR {SNR_THRESHOLD:g}"
    n = len(detections)
    listed = "; ".join(f'{sep:.2f}" at PA {pa:.0f} deg, SNR {value:.1f}'
                       for sep, pa, value in detections[:MAX_MARKED])
    more = f"; and {n - MAX_MARKED} fainter" if n > MAX_MARKED else ""
    return f"{n} point source{'s' if n > 1 else ''}: {listed}{more}"


def load(kl_cube: str | Path, *, kl: int | None = None,
         detections: list[dict] | None = None) -> Product:
    """Read a KL-mode cube, pick the KL cutoff, turn it north-up, find or place the detections."""
    path = Path(kl_cube)
    primary, ext, cube = _read(path)
    title, band = title_from(primary, ext, path)
    image, centre, chosen = klip.kl_plane(cube, ext, klip.DEFAULT_KL if kl is None else int(kl))
    if not np.isfinite(image).any():
        raise BadInputError(str(path), f"the KL {chosen} image has no valid pixels")
    image, transform = north_up(image, centre, ext)
    if detections is None:
        found = snr.detect(image, centre, inner_px=fpm_radius_lenslets(band) + 2)
    else:
        found = [_moved(d, centre, transform) for d in detections]
    found = sorted((d for d in found if d["snr"] >= SNR_THRESHOLD), key=lambda d: -d["snr"])
    try:
        at = contrast_at(_curve_next_to(path, primary, band))
    except BadInputError as exc:      # the image is still worth showing
        _log.warning("no contrast caption: %s", exc)
        at = contrast_at(None)
    return Product(image=image, centre=centre, title=title, kl=chosen, detections=found,
                   contrast_at=at)


def _read(path: Path) -> tuple[fits.Header, fits.Header, np.ndarray]:
    """(primary header, cube header, KL-mode cube), read once."""
    if not path.is_file():
        raise BadInputError(str(path), "no such file")
    try:
        with fits.open(path) as hdul:
            hdu = hdul[1] if len(hdul) > 1 and hdul[1].data is not None else hdul[0]
            cube = None if hdu.data is None else np.asarray(hdu.data, np.float64)
            primary, ext = hdul[0].header.copy(), hdu.header.copy()
    except (OSError, ValueError, TypeError) as exc:      # TypeError: a truncated data unit
        raise BadInputError(str(path), f"not a readable FITS file ({exc})") from exc
    if cube is None or cube.ndim != 3:
        shape = () if cube is None else cube.shape
        raise BadInputError(str(path), f"a KL-mode cube is 3-D, this is {shape or 'empty'}")
    return primary, ext, cube


def title_from(primary: fits.Header, ext: fits.Header, path: str | Path) -> tuple[str, str]:
    """(``HD 95086 2016-03-15 H-Spec``, band) from the product's headers."""
    def get(key):
        value = primary.get(key, ext.get(key))
        return str(value).strip() if value not in (None, "") else None

    missing = [k for k in REQUIRED if get(k) is None]
    if missing:
        raise BadInputError(str(path), f"missing header keyword(s) {', '.join(missing)}")
    band = kw.band_from_filter(get("IFSFILT"))
    if band is None:
        raise BadInputError(str(path), f"IFSFILT {get('IFSFILT')!r} is not a GPI band")
    mode = kw.mode_from_disperser(get("DISPERSR")) or "spec"   # KLIP reduces spectral data only
    return f"{get('OBJECT')} {get('DATE-OBS')[:10]} {band}-{mode.capitalize()}", band


def north_up(image: np.ndarray, centre: tuple[float, float], header: fits.Header
             ) -> tuple[np.ndarray, np.ndarray | None]:
    """The image north-up, east-left about the star, and the 2x2 (x, y) map applied (or None).

    ``A`` takes an offset in the output to the offset in the input; it is the identity, and the
    image is returned as it is, when the WCS is already north-up (pyKLIP's products) or absent.
    """
    matrix = _sky_matrix(header)
    if matrix is None:
        _log.info("no celestial WCS: taking the image as derotated north-up by KLIP")
        return image, None
    scale = np.sqrt(abs(np.linalg.det(matrix)))
    transform = np.linalg.solve(matrix, np.diag([-scale, scale]))
    if np.allclose(transform, np.eye(2), atol=NORTH_UP_TOLERANCE):
        return image, None
    from scipy import ndimage

    _log.info("WCS is not north-up (map %s): resampling", np.round(transform, 3).tolist())
    rc = transform[::-1, ::-1]                     # (x, y) -> (row, col) order
    c = np.array(centre[::-1])
    out = ndimage.affine_transform(image, rc, offset=c - rc @ c, order=1, cval=np.nan)
    return out, transform


def _sky_matrix(header: fits.Header) -> np.ndarray | None:
    from astropy.wcs import WCS, FITSFixedWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header, naxis=2)
        if not wcs.has_celestial:
            return None
        matrix = np.asarray(wcs.celestial.pixel_scale_matrix, float)
    except (ValueError, KeyError, TypeError) as exc:    # broken WCS: as if none
        _log.warning("unreadable WCS (%s): taking the image as north-up", exc)
        return None
    return matrix if np.all(np.isfinite(matrix)) and abs(np.linalg.det(matrix)) > 0 else None


def _moved(detection: dict, centre: tuple[float, float], transform: np.ndarray | None) -> dict:
    if transform is None:
        return detection
    offset = np.linalg.solve(transform, [detection["x"] - centre[0], detection["y"] - centre[1]])
    return {**detection, "x": centre[0] + offset[0], "y": centre[1] + offset[1]}


def _curve_next_to(path: Path, primary: fits.Header, band: str) -> Path | None:
    match = re.match(r"pyklip-(S\d{8}-[A-Za-z0-9]+)-", path.name)
    tag = match.group(1) if match else \
        f"S{str(primary.get('DATE-OBS', ''))[:10].replace('-', '')}-{band}"
    curve = path.parent / f"contrast-{tag}-L.fits"
    return curve if curve.is_file() else None


def contrast_at(curve_path: Path | None) -> dict[str, float | None]:
    """Contrast at the fiducial separations from a curve file (all None without one)."""
    keys = [f"{sep:g}" for sep in FIDUCIAL_SEPARATIONS]
    if curve_path is None:
        return dict.fromkeys(keys)
    from cruncher.psfsub.contrast import fiducial

    sep, value, _ = read_curve(curve_path)
    values = fiducial({"sep_arcsec": sep, "contrast": value}).values()
    return dict(zip(keys, values))


def read_curve(path: str | Path) -> tuple[np.ndarray, np.ndarray, fits.Header]:
    """(separation arcsec, contrast, primary header) of a ``contrast-<tag>-<L|T>.fits`` table."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(str(path), "no such file")
    try:
        with fits.open(path) as hdul:
            table, header = hdul[1].data, hdul[0].header.copy()
            sep, value = (np.asarray(table[c], float) for c in ("SEP_ARCSEC", "CONTRAST"))
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise BadInputError(str(path), f"not a contrast curve table ({exc})") from exc
    return sep, value, header


def figure(product: Product):
    """The chat figure of ``product`` (an Agg-canvas Figure; the image axes is labelled "image")."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(label="image")
    cx, cy = product.centre
    quicklook._residual_panel(fig, ax, product.image, product.centre, "", LENSLET_SCALE)
    ax.images[0].colorbar.set_label("Contrast")
    ny, nx = product.image.shape
    half = min(cx, nx - 1 - cx, cy, ny - 1 - cy) * LENSLET_SCALE
    step = next((s for s in (0.25, 0.5, 1.0, 2.0) if half / s <= 3), 5.0)
    ticks = np.arange(-np.floor(half / step), np.floor(half / step) + 1) * step
    ax.xaxis.set_major_locator(FixedLocator(cx - ticks / LENSLET_SCALE))   # east (+) to the left
    ax.yaxis.set_major_locator(FixedLocator(cy + ticks / LENSLET_SCALE))
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.set_yticklabels([f"{t:g}" for t in ticks])
    ax.set_xlabel("ΔRA (arcsec, east +)")
    ax.set_ylabel("ΔDec (arcsec)")
    for d in product.detections[:MAX_MARKED]:
        _mark(ax, d["x"], d["y"], f"SNR {d['snr']:.1f}", product.image.shape)
    ax.set_title(f"general KLIP (ADI+SDI), KL {product.kl}", fontsize=11)
    fig.suptitle(product.title, fontsize=14)
    fig.text(0.5, 0.015, contrast_line(product.contrast_at), ha="center", va="bottom", fontsize=10)
    fig.subplots_adjust(left=0.1, right=0.84, bottom=0.13, top=0.9)
    return fig


def _mark(ax, x: float, y: float, label: str, shape: tuple[int, int]) -> None:
    """A circle around (x, y) and its label, on the side that stays inside the image."""
    from matplotlib.patches import Circle
    from matplotlib.patheffects import withStroke

    ny, nx = shape
    outline = [withStroke(linewidth=3, foreground="black")]      # readable on any colour
    ax.add_patch(Circle((x, y), MARK_RADIUS_PX, fill=False, color="cyan", lw=1.5,
                        path_effects=outline))
    right, up = x < 0.75 * nx, y < 0.85 * ny
    ax.text(x + (1 if right else -1) * MARK_RADIUS_PX, y + (1 if up else -1) * MARK_RADIUS_PX,
            label, color="cyan", fontsize=10, ha="left" if right else "right",
            va="bottom" if up else "top", clip_on=True, path_effects=outline)


def contrast_line(values: dict[str, float | None], planet_type: str = "L",
                  sigma: str = "5σ") -> str:
    """``5σ contrast (L-type): 6.0e-05 at 0.25", ...``; empty without any value."""
    if all(v is None for v in values.values()):
        return ""
    return f"{sigma} contrast ({planet_type}-type): " + ", ".join(
        f'{"n/a" if v is None else f"{v:.1e}"} at {sep}"' for sep, v in values.items())


def planet_pixel(fig, x: float, y: float) -> tuple[int, int]:
    """(column, row) in the saved PNG of image pixel (x, y) of ``fig``'s image axes."""
    ax = next(a for a in fig.axes if a.get_label() == "image")
    if fig.stale:
        fig.canvas.draw()            # the aspect and the layout settle when drawn
    px, py = ax.transData.transform((x, y))
    height = fig.get_size_inches()[1] * fig.dpi
    return int(np.rint(px)), int(np.rint(height - py))


def klip_png(kl_cube: str | Path, out: str | Path, *, kl: int | None = None,
             detections: list[dict] | None = None) -> Summary:
    """Draw the general KLIP product ``kl_cube`` (its KL-mode cube) as a PNG at ``out``.

    Parameters
    ----------
    kl
        The KL cutoff to show (the cube's nearest); default: the one nearest
        :data:`cruncher.psfsub.klip.DEFAULT_KL`, which detection uses.
    detections
        The product's detections (``snr.detect`` dicts); ``None``: detect on the image shown.

    Raises
    ------
    BadInputError
        A missing or unreadable file, missing header keywords, an image without valid pixels.
    """
    product = load(kl_cube, kl=kl, detections=detections)
    png = _save(figure(product), out)
    found = [(float(d["sep_arcsec"]), float(d["pa_deg"]), float(d["snr"]))
             for d in product.detections]
    _log.info("drew %s (KL %d, %d detections)", png, product.kl, len(found))
    return Summary(png=png, title=product.title, kl=product.kl, detections=found,
                   contrast_at=product.contrast_at)


def contrast_png(curves: list[str | Path], out: str | Path) -> Path:
    """Draw calibrated contrast curves (``contrast-<tag>-<L|T>.fits``) on one log plot."""
    return _save(contrast_figure(curves), out)


def contrast_figure(curves: list[str | Path]):
    """The figure of :func:`contrast_png` (an Agg-canvas Figure)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curves:
        raise BadInputError("<contrast curves>", "no contrast curve to draw")
    fig = Figure(figsize=CURVE_FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    title = None
    for path in curves:
        sep, value, header = read_curve(path)
        title = title or title_from(header, header, path)[0]
        kind = str(header.get("PLNTTYPE") or Path(path).stem.rsplit("-", 1)[-1])
        good = np.isfinite(value) & (value > 0)
        if not good.any():
            raise BadInputError(str(path), "the contrast curve has no valid values")
        ax.semilogy(sep[good], value[good], label=f"{kind}-type")
    ax.set_xlabel("separation (arcsec)")
    ax.set_ylabel("5σ contrast")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.12, top=0.9)
    return fig


def _save(fig, out: str | Path) -> Path:
    return quicklook.save_png(fig, out, DPI)


def png_for(product: str | Path) -> Path:
    """Where a product's chat image is drawn: next to it, or in a temporary directory when its
    directory cannot be written (someone else's tree)."""
    target = Path(product).with_suffix(".png")
    if os.access(target.parent, os.W_OK) and (not target.exists() or os.access(target, os.W_OK)):
        return target
    return Path(tempfile.gettempdir()) / "cruncher-chat" / target.name
