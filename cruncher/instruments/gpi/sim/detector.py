"""Rendering lenslet spectra onto the IFS detector, and the detector's own signature.

Each lenslet's spectrum, given as electrons in fine wavelength bins (already smoothed by the line
spread function), is laid along its trace: every bin covers a short stretch of rows, and its
electrons go to the row or rows it overlaps, exactly. Across the dispersion each row's electrons
spread as a Gaussian of the wavecal's ``psf_sigma_x`` centred on the trace. Then the detector adds
dark current (a smooth glow plus hot pixels), photon and read noise, and bad pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from cruncher.instruments.gpi.optics import DETECTOR_SIZE
from cruncher.instruments.gpi.wavecal import Wavecal, trace_columns, trace_rows

GAIN_E_PER_ADU = 2.15
CROSS_COLUMNS = np.arange(-2, 3)


def lsf_matrix(edges: np.ndarray, sigma_um: float) -> np.ndarray:
    """(L, L) matrix moving each fine bin's electrons into bins by a Gaussian line spread."""
    centres = 0.5 * (edges[1:] + edges[:-1])
    cdf = ndtr((edges[None, :] - centres[:, None]) / sigma_um)
    return np.diff(cdf, axis=1)


def line_bins(edges: np.ndarray, lines: list[tuple[float, float]], sigma_um: float) -> np.ndarray:
    """Electrons per fine bin of emission lines ``[(wavelength, electrons)]`` after the LSF."""
    out = np.zeros(len(edges) - 1)
    for wavelength, electrons in lines:
        out += electrons * np.diff(ndtr((edges - wavelength) / sigma_um))
    return out


def channel_masses(masses: np.ndarray, edges: np.ndarray, channel_edges: np.ndarray) -> np.ndarray:
    """Electrons per channel from electrons per fine bin (uniform within each fine bin)."""
    cumulative = np.concatenate([np.zeros((masses.shape[0], 1)), np.cumsum(masses, axis=1)], axis=1)
    idx = np.clip(np.searchsorted(edges, channel_edges) - 1, 0, len(edges) - 2)
    frac = (channel_edges - edges[idx]) / (edges[idx + 1] - edges[idx])
    at_edges = cumulative[:, idx] + frac * (cumulative[:, idx + 1] - cumulative[:, idx])
    return np.diff(at_edges, axis=1)


@dataclass(frozen=True)
class Traces:
    """Per-lenslet trace geometry for one wavecal (shift included)."""

    y0: np.ndarray
    x0: np.ndarray
    lambda0: np.ndarray
    dispersion: np.ndarray
    tilt: np.ndarray

    @classmethod
    def from_wavecal(cls, wavecal: Wavecal, iy: np.ndarray, ix: np.ndarray) -> Traces:
        return cls(*(plane[iy, ix] for plane in wavecal.planes))


class TraceRenderer:
    """Lays spectra along a fixed set of traces; the geometry is computed once and reused.

    Parameters
    ----------
    traces
        Geometry of the N lenslets' traces (flexure shift included).
    edges
        Edges (microns) of the L fine wavelength bins the spectra are given in.
    psf_sigma_x
        Gaussian sigma (pixels) of a trace across the dispersion.
    """

    def __init__(self, traces: Traces, edges: np.ndarray, psf_sigma_x: float,
                 shape: tuple[int, int] = (DETECTOR_SIZE, DETECTOR_SIZE)) -> None:
        t = traces
        self.shape = shape
        y_edges = trace_rows(t.y0[:, None], t.lambda0[:, None], t.dispersion[:, None],
                             t.tilt[:, None], edges[None, :])      # (N, L+1), decreasing
        y_hi, y_lo = y_edges[:, :-1], y_edges[:, 1:]
        row_hi = np.floor(y_hi + 0.5)
        boundary = row_hi - 0.5
        self.share_hi = np.where(y_lo >= boundary, 1.0, (y_hi - boundary) / (y_hi - y_lo))
        top = row_hi[:, :1]
        self.n_rows = int(np.max(top - np.floor(y_edges[:, -1:] + 0.5))) + 2
        self.n = len(t.y0)
        base = (np.arange(self.n) * self.n_rows)[:, None]
        self.bin_row = (base + (top - row_hi).astype(np.int64)).ravel()
        row_y = top - np.arange(self.n_rows)[None, :]               # (N, R) detector rows
        x_c = trace_columns(t.x0[:, None], t.y0[:, None], t.tilt[:, None], row_y)
        first = np.rint(x_c) + CROSS_COLUMNS[0]
        col_edges = first[:, :, None] + np.arange(len(CROSS_COLUMNS) + 1) - 0.5
        cdf = ndtr((col_edges - x_c[:, :, None]) / psf_sigma_x)
        weights = np.diff(cdf, axis=2)                               # (N, R, 5)
        cols = first[:, :, None] + np.arange(len(CROSS_COLUMNS))
        flat = (row_y[:, :, None] * shape[1] + cols).astype(np.int64)
        ok = ((row_y[:, :, None] >= 0) & (row_y[:, :, None] < shape[0]) & (cols >= 0)
              & (cols < shape[1]))
        self.flat = flat[ok]
        self.weights = weights[ok]
        self.source = np.broadcast_to(np.arange(self.n * self.n_rows).reshape(
            self.n, self.n_rows)[:, :, None], ok.shape)[ok]

    def rows(self, masses: np.ndarray) -> np.ndarray:
        """(N, R) electrons per trace row, top (shortest wavelength) row first."""
        size = self.n * self.n_rows
        hi = np.bincount(self.bin_row, (masses * self.share_hi).ravel(), minlength=size)
        lo = np.bincount(self.bin_row + 1, (masses * (1 - self.share_hi)).ravel(),
                         minlength=size + 1)[:size]
        return (hi + lo).reshape(self.n, self.n_rows)

    def __call__(self, masses: np.ndarray) -> np.ndarray:
        """Electrons on the detector from ``masses`` (N lenslets x L fine bins)."""
        rows = self.rows(masses).ravel()
        image = np.bincount(self.flat, rows[self.source] * self.weights,
                            minlength=self.shape[0] * self.shape[1])
        return image.reshape(self.shape)


@dataclass(frozen=True, kw_only=True)
class DetectorModel:
    """The detector's fixed signature: dark current pattern and bad pixels."""

    dark_current: np.ndarray
    bad: np.ndarray
    read_noise_e: float = 6.0
    gain: float = GAIN_E_PER_ADU

    @classmethod
    def make(cls, seed: int, shape: tuple[int, int] = (DETECTOR_SIZE, DETECTOR_SIZE)) -> DetectorModel:
        """A detector with amplifier glow, hot pixels, dead pixels and a few bad clusters."""
        rng = np.random.default_rng(seed + 1000)
        yy, xx = np.mgrid[0:shape[0], 0:shape[1]] / shape[0]
        dark = 0.02 + 0.3 * np.exp(-xx / 0.05) + 0.1 * np.exp(-(1 - yy) / 0.08)   # e-/s
        hot = rng.random(shape) < 0.002
        dark = dark + hot * rng.uniform(0.5, 5.0, shape)
        bad = rng.random(shape) < 0.001
        for _ in range(4):
            r, c = rng.integers(200, shape[0] - 200, size=2)
            h, w = rng.integers(2, 6, size=2)
            bad[r:r + h, c:c + w] = True
        return cls(dark_current=dark.astype(np.float32), bad=bad)

    def expose(self, electrons: np.ndarray, seconds: float, rng: np.random.Generator,
               *, noise: bool = True) -> np.ndarray:
        """Raw frame in ADU: signal + dark, photon and read noise, bad pixels spoiled."""
        signal = electrons + self.dark_current * seconds
        if noise:
            signal = signal + np.sqrt(np.clip(signal, 0, None)) * rng.standard_normal(signal.shape)
            signal = signal + self.read_noise_e * rng.standard_normal(signal.shape)
        adu = (signal / self.gain).astype(np.float32)
        spoiled = rng.choice(np.array([0.0, 3e4, -500.0], np.float32), size=int(self.bad.sum()))
        adu[self.bad] = spoiled
        return adu
