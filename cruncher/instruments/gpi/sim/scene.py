"""What reaches each lenslet: star leakage, speckles, satellite spots and planets, per wavelength.

Speckles come from residual wavefront errors: a pupil phase screen, Fourier transformed, gives the
coronagraphic halo at a reference wavelength; at another wavelength the pattern is magnified by
lambda / lambda_ref (that radial motion is what SDI exploits) and fainter by (lambda_ref/lambda)^2.
The screen evolves slowly (a static part plus two components rotating in time), so speckles
decorrelate over tens of minutes. Speckles are fixed to the instrument; planets turn with the sky.
All sources are pixel-integrated Gaussians (FWHM 1.03 lambda/D) or the speckle map; the focal
plane mask removes everything inside its radius except a faint leak of the star.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import map_coordinates
from scipy.special import ndtr

from cruncher.instruments.gpi import optics
from cruncher.instruments.gpi.keywords import BAND_EDGES_UM
from cruncher.instruments.gpi.sim import spectra

FFT_SIZE = 512
FWHM_PER_LAMBDA_D = 1.03
#: Fraction of the star's light leaking through the focal plane mask as a core.
LEAK_FRACTION = 2e-4


@dataclass(frozen=True, kw_only=True)
class Planet:
    """A companion: separation (arcsec), band contrast, type (L or T) and sky PA (deg E of N)."""

    separation_arcsec: float
    contrast: float
    spectral_type: str = "L"
    pa_deg: float = 45.0

    @classmethod
    def parse(cls, text: str, pa_deg: float | None = None) -> Planet:
        """``"0.4,1e-5,T"`` (separation, contrast, type), as the command line gives it."""
        parts = [p.strip() for p in text.split(",")]
        if len(parts) not in (2, 3, 4):
            raise ValueError(f"planet {text!r}: expected sep_arcsec,contrast[,type[,pa_deg]]")
        kind = parts[2].upper() if len(parts) > 2 else "L"
        if kind not in spectra.PLANET_MODELS:
            raise ValueError(f"planet {text!r}: type must be L or T")
        pa = float(parts[3]) if len(parts) > 3 else (45.0 if pa_deg is None else pa_deg)
        return cls(separation_arcsec=float(parts[0]), contrast=float(parts[1]), spectral_type=kind,
                   pa_deg=pa)


def fine_grid(band: str, n: int = 72, margin_um: float = 0.05) -> np.ndarray:
    """Edges of the fine wavelength bins the simulator renders spectra on."""
    lo, hi = BAND_EDGES_UM[band]
    return np.linspace(lo - margin_um, hi + margin_um, n + 1)


def psf_sigma(wavelength_um: np.ndarray | float) -> np.ndarray | float:
    """Gaussian sigma (lenslets) of the PSF core at ``wavelength_um``."""
    return FWHM_PER_LAMBDA_D * optics.lambda_over_d_lenslets(wavelength_um) / 2.3548


def pixel_gaussian(x: np.ndarray, y: np.ndarray, x0: np.ndarray, y0: np.ndarray,
                   sigma: np.ndarray) -> np.ndarray:
    """A unit-flux 2-D Gaussian integrated over unit pixels centred at (x, y)."""
    gx = ndtr((x + 0.5 - x0) / sigma) - ndtr((x - 0.5 - x0) / sigma)
    gy = ndtr((y + 0.5 - y0) / sigma) - ndtr((y - 0.5 - y0) / sigma)
    return gx * gy


class SpeckleField:
    """A slowly evolving coronagraphic speckle halo, in units of the star's peak."""

    def __init__(self, band: str, *, seed: int, contrast_at_025: float = 3e-5,
                 decorrelation_min: float = 120.0) -> None:
        self.band = band
        self.lambda_ref = float(np.mean(BAND_EDGES_UM[band]))
        self.decorrelation_min = decorrelation_min
        rng = np.random.default_rng(seed)
        pupil_px = FFT_SIZE / optics.lambda_over_d_lenslets(self.lambda_ref)
        yy, xx = np.mgrid[0:FFT_SIZE, 0:FFT_SIZE] - FFT_SIZE / 2
        r = np.hypot(xx, yy)
        self.pupil = ((r <= pupil_px / 2) & (r >= 0.14 * pupil_px / 2)).astype(np.float64)
        self.screens = [self._screen(rng, pupil_px) for _ in range(3)]
        self.peak = np.abs(np.fft.fft2(self.pupil)).max() ** 2
        self.scale = 1.0
        self.scale = contrast_at_025 / self._mean_at(self.pattern(0.0), 0.25)

    def _screen(self, rng: np.random.Generator, pupil_px: float) -> np.ndarray:
        """A phase screen whose power drops as k^-2.5, halved inside the AO control radius."""
        k = np.fft.fftfreq(FFT_SIZE) * FFT_SIZE * pupil_px / FFT_SIZE  # cycles per pupil
        kk = np.hypot(*np.meshgrid(k, k))
        amplitude = np.where(kk > 0, (kk + 1.0) ** -1.25, 0.0)
        amplitude *= np.where(kk < 22.0, 0.5, 1.5)
        noise = rng.normal(size=(FFT_SIZE, FFT_SIZE)) + 1j * rng.normal(size=(FFT_SIZE, FFT_SIZE))
        screen = np.fft.ifft2(noise * amplitude).real
        return screen / screen[self.pupil > 0].std()

    def pattern(self, minutes: float) -> np.ndarray:
        """The halo at ``lambda_ref`` at time ``minutes``, star peak = 1, centred at FFT_SIZE/2."""
        phase = 2 * np.pi * minutes / self.decorrelation_min
        screen = (self.screens[0] + 0.6 * np.cos(phase) * self.screens[1]
                  + 0.6 * np.sin(phase) * self.screens[2]) * 0.05
        field = np.fft.fftshift(np.fft.fft2(self.pupil * screen))
        return self.scale * np.abs(field) ** 2 / self.peak

    def _mean_at(self, image: np.ndarray, radius_arcsec: float) -> float:
        yy, xx = np.mgrid[0:FFT_SIZE, 0:FFT_SIZE] - FFT_SIZE / 2
        r = np.hypot(xx, yy) * optics.LENSLET_SCALE
        ring = np.abs(r - radius_arcsec) < 0.02
        return float(image[ring].mean())


@dataclass(frozen=True, kw_only=True)
class FrameScene:
    """Everything that varies from frame to frame."""

    star_centre: tuple[float, float]
    pyklip_angle_deg: float
    minutes: float
    star_electrons: float


@dataclass(kw_only=True)
class SceneModel:
    """A star with speckles, satellite spots and planets, seen by one band of the IFS."""

    band: str
    speckles: SpeckleField
    planets: tuple[Planet, ...] = ()
    spot_angle_deg: float = 0.0
    lambda_edges: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.lambda_edges is None:
            self.lambda_edges = fine_grid(self.band)
        self.lam = 0.5 * (self.lambda_edges[1:] + self.lambda_edges[:-1])
        self.width = np.diff(self.lambda_edges)
        star = spectra.star_photons(self.lam) * spectra.filter_transmission(self.band, self.lam)
        lo, hi = BAND_EDGES_UM[self.band]
        inband = (self.lam >= lo) & (self.lam <= hi)
        # photons per micron per unit of star_electrons (the star's photons inside the band)
        self.star_density = star / np.sum(star[inband] * self.width[inband])
        self.planet_ratio = [spectra.planet_to_star_ratio(p.spectral_type, self.band, self.lam,
                                                          p.contrast) for p in self.planets]

    def spot_positions(self, centre: tuple[float, float]) -> np.ndarray:
        """(4, n_lambda, 2) satellite spot (x, y) in pyKLIP's order: (-,+), (-,-), (+,+), (+,-)."""
        signs = np.array([(-1, 1), (-1, -1), (1, 1), (1, -1)], dtype=np.float64) / np.sqrt(2)
        a = np.radians(self.spot_angle_deg)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        unit = signs @ rot.T
        radius = optics.spot_radius(self.lam)
        return np.asarray(centre)[None, None, :] + unit[:, None, :] * radius[None, :, None]

    def planet_positions(self, frame: FrameScene) -> list[tuple[float, float]]:
        out = []
        for planet in self.planets:
            sep_px = planet.separation_arcsec / optics.LENSLET_SCALE
            dx, dy = optics.sky_to_cube_offset(sep_px, planet.pa_deg, frame.pyklip_angle_deg)
            out.append((frame.star_centre[0] + dx, frame.star_centre[1] + dy))
        return out

    def lenslet_spectra(self, frame: FrameScene, ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
        """Electrons per micron at each lenslet (N) and fine wavelength (L): shape (N, L)."""
        cx, cy = frame.star_centre
        star = frame.star_electrons * self.star_density            # (L,)
        sigma = psf_sigma(self.lam)                                  # (L,)
        peak = 1.0 / (2 * np.pi * sigma ** 2)                       # star peak per lenslet
        ref = self.speckles.lambda_ref
        halo = self.speckles.pattern(frame.minutes)
        scale = ref / self.lam
        xs = FFT_SIZE / 2 + (ix[None, :] - cx) * scale[:, None]
        ys = FFT_SIZE / 2 + (iy[None, :] - cy) * scale[:, None]
        speckle = map_coordinates(halo, [ys.ravel(), xs.ravel()], order=1, mode="constant")
        speckle = speckle.reshape(len(self.lam), -1) * (scale ** 2 * peak)[:, None]
        out = speckle * star[:, None]
        for k, (px, py) in enumerate(self.planet_positions(frame)):
            out += self._gaussian(ix, iy, px, py, sigma) * (star * self.planet_ratio[k])[:, None]
        out *= self._mask_transmission(ix, iy, cx, cy)[None, :]
        out += self._gaussian(ix, iy, cx, cy, sigma) * (star * LEAK_FRACTION)[:, None]
        ratio = optics.SPOT_RATIO[self.band]
        for spot in self.spot_positions(frame.star_centre):
            out += self._gaussian(ix, iy, spot[:, 0], spot[:, 1], sigma) * (star * ratio)[:, None]
        return out.T

    def _gaussian(self, ix, iy, x0, y0, sigma) -> np.ndarray:
        """(L, N) pixel-integrated Gaussian, evaluated only near its centre."""
        x0 = np.broadcast_to(np.asarray(x0, dtype=np.float64), sigma.shape)
        y0 = np.broadcast_to(np.asarray(y0, dtype=np.float64), sigma.shape)
        out = np.zeros((len(sigma), len(ix)))
        reach = 6 * sigma.max() + 1
        near = np.nonzero((np.abs(ix - x0.mean()) < reach + np.ptp(x0))
                          & (np.abs(iy - y0.mean()) < reach + np.ptp(y0)))[0]
        if near.size:
            out[:, near] = pixel_gaussian(ix[near][None, :], iy[near][None, :], x0[:, None],
                                          y0[:, None], sigma[:, None])
        return out

    def _mask_transmission(self, ix, iy, cx, cy) -> np.ndarray:
        radius = optics.fpm_radius_lenslets(self.band)
        r = np.hypot(ix - cx, iy - cy)
        return np.clip(r - radius + 0.5, 0.0, 1.0)
