"""The extraction on its own: noiseless truth, flux conservation, bad rows, the aperture."""
from __future__ import annotations

import numpy as np
import pytest

from cruncher.drp import extraction
from cruncher.instruments.gpi import optics
from cruncher.instruments.gpi.sim import detector as det
from cruncher.instruments.gpi.sim.geometry import master_wavecal
from cruncher.instruments.gpi.sim.scene import fine_grid


@pytest.fixture(scope="module")
def setup():
    wavecal = master_wavecal("J").shifted(0.31, -0.27)
    iy, ix = wavecal.lenslets()
    edges = fine_grid("J")
    lam = 0.5 * (edges[1:] + edges[:-1])
    rng = np.random.default_rng(3)
    # smooth spectra of varied slope and curvature, different in every lenslet
    a, b, c = (rng.uniform(-1, 1, (3, len(iy), 1)))
    x = (lam - lam.mean()) / np.ptp(lam)
    density = 1e4 * (1.5 + 0.5 * a * x + 0.3 * b * x ** 2 + 0.1 * c * np.sin(6 * x))
    masses = (density * np.diff(edges)) @ det.lsf_matrix(edges, 0.8 * 0.0142)
    renderer = det.TraceRenderer(det.Traces.from_wavecal(wavecal, iy, ix), edges, 0.5)
    image = renderer(masses)
    truth = det.channel_masses(masses, edges, optics.channel_edges("J"))
    plan = extraction.make_plan(wavecal, optics.channel_edges("J"))
    return wavecal, image, truth, plan


def test_noiseless_extraction_recovers_the_truth(setup):
    _, image, truth, plan = setup
    channels = extraction.rebin(extraction.box_samples(image, plan), plan)
    rel = np.abs(channels - truth) / truth
    assert np.median(rel) < 0.002 and np.percentile(rel, 99) < 0.02


def test_a_wrong_flexure_is_visible(setup):
    wavecal, image, truth, plan = setup

    def error(p):
        return np.median(np.abs(extraction.rebin(extraction.box_samples(image, p), p) - truth)
                         / truth)

    wrong = extraction.make_plan(wavecal.shifted(0.0, 0.5), optics.channel_edges("J"))
    assert error(wrong) > 5 * error(plan)


def test_rebinning_conserves_each_rows_flux():
    samples = np.array([[1.0, 2.0, 4.0, 3.0, 1.0, 5.0]])
    plan = extraction.ExtractionPlan(iy=np.array([0]), ix=np.array([0]), pixel_index=None,
                                     row_valid=None, aperture=None, top=np.array([[0.0]]),
                                     edge_position=np.array([[0.0, 1.5, 2.0, 3.5, 6.0]]), n_rows=6)
    channels = extraction.rebin(samples, plan)
    assert channels.sum() == pytest.approx(samples.sum())
    assert channels[0, 1] + channels[0, 0] == pytest.approx(1 + 2 + 0.0, abs=1.0)


def test_a_bad_row_spoils_only_the_channels_touching_it():
    samples = np.array([[1.0, 2.0, np.nan, 3.0, 1.0, 5.0]])
    plan = extraction.ExtractionPlan(iy=np.array([0]), ix=np.array([0]), pixel_index=None,
                                     row_valid=None, aperture=None, top=np.array([[0.0]]),
                                     edge_position=np.array([[0.0, 1.0, 2.0, 3.0, 4.0, 6.0]]),
                                     n_rows=6)
    channels = extraction.rebin(samples, plan)[0]
    assert np.isnan(channels[2]) and np.isfinite(channels[[0, 1, 3, 4]]).all()
    assert channels[4] == pytest.approx(6.0)


def test_the_aperture_correction_follows_the_subpixel_offset(setup):
    _, _, _, plan = setup
    assert 0.95 < plan.aperture.min() <= plan.aperture.max() <= 1.0
    assert plan.aperture.max() - plan.aperture.min() > 0.01
