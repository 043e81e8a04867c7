"""The fast KLIP engine against pyKLIP itself, on the same inputs and parameters (CI-sized)."""
from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from cruncher.errors import BadInputError
from cruncher.psfsub import klip, snr
from cruncher.psfsub.fast import derotation, prepare, resample
from cruncher.psfsub.fast.prepare import high_pass
from cruncher.psfsub.job import JobFile
from cruncher.testing.psfjobs import run_job

PLANET = (0.4, 2e-5, 60.0)     # separation (arcsec), contrast, PA (deg)


def field(seed: int = 0, size: int = 61) -> np.ndarray:
    """Smooth images with NaN corners, like a GPI slice."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    images = ndimage.gaussian_filter(rng.standard_normal((3, size, size)), (0, 2, 2)).astype(np.float32)
    y, x = np.indices((size, size))
    images[:, np.hypot(x - size / 2, y - size / 2) > 0.45 * size] = np.nan
    return images


def assert_same(ours, theirs, tolerance):
    assert np.array_equal(np.isnan(ours), np.isnan(theirs))
    assert np.nanmax(np.abs(ours - theirs)) <= tolerance * np.nanstd(theirs)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "banded products"])
@pytest.mark.parametrize("centers, scales, block", [
    ([[30.3, 29.6], [29.9, 30.4], [30.6, 30.1]], [1.0, 1.12, 0.87], resample.BLOCK),
    # far off-centre and strongly scaled: whole blocks of the output fall outside the source
    ([[5.2, 55.7], [58.1, 3.4], [30.0, 30.0]], [0.45, 0.3, 2.6], 8),
])
def test_align_and_scale_is_pyklips(centers, scales, block, compiled, monkeypatch):
    """Both ways of aligning (the compiled loop, and the banded products cupy uses)."""
    from pyklip.klip import align_and_scale

    monkeypatch.setattr(resample, "available", lambda: compiled)

    images = field()
    centers, scales = np.array(centers), np.array(scales, np.float32)
    coeffs, nan = resample.spline_coefficients(images)
    ours = resample.align_and_scale(coeffs, nan, centers, scales, (30.1, 30.0), block=block)
    for k in range(3):
        assert_same(ours[k], align_and_scale(images[k], (30.1, 30.0), centers[k], scales[k]), 1e-5)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "sparse operator"])
@pytest.mark.parametrize("angle, center, new_center, flipx", [
    (23.7, (30.2, 29.8), (30, 30), True), (-141.3, (31.6, 28.9), (30, 30), False),
    (90.0, (30.0, 30.0), None, False)])
def test_derotation_is_pyklips(angle, center, new_center, flipx, compiled):
    """Both ways of derotating (the compiled loop, and the sparse operators cupy uses), with
    an image that is NaN everywhere (pyKLIP returns it unchanged)."""
    from pyklip.klip import rotate

    images = np.concatenate([field(1), np.full((1, 61, 61), np.nan, np.float32)])
    if compiled:
        ours = derotation.rotate(images, angle, center, new_center, flipx)
    else:
        op = resample.rotation_operator(images.shape[1:], angle, center, new_center, flipx)
        ours = resample.rotate(images, op)
    for k in range(3):
        assert_same(ours[k], rotate(images[k], angle, center, new_center=new_center, flipx=flipx),
                    1e-5)
    assert np.isnan(ours[3]).all()


def test_compiled_derotation_is_the_sparse_operators():
    """The compiled loop does the operator's arithmetic: equal to float32 rounding of the
    weights (they agreed bit for bit on every image tried), the same NaNs."""
    rng = np.random.default_rng(7)
    images = rng.standard_normal((5, 81, 81)).astype(np.float32)
    images[:, :6] = np.nan
    images[2, 30:34, 40:45] = np.nan
    for angle, center, flipx in [(37.3, (40.2, 39.7), False), (-123.4, (41.0, 38.2), True)]:
        op = resample.rotation_operator(images.shape[1:], angle, center, (40, 40), flipx)
        sparse = resample.rotate(images, op)
        ours = derotation.rotate(images, angle, center, (40, 40), flipx)
        assert np.array_equal(np.isnan(ours), np.isnan(sparse))
        assert np.nanmax(np.abs(ours - sparse)) <= 1e-6 * np.nanmax(np.abs(sparse))


def test_high_pass_is_pyklips():
    from pyklip.klip import high_pass_filter

    images = field(2)
    size = (images.shape[2] / 11.0) / (2 * np.sqrt(2 * np.log(2)))
    ours, nan = high_pass(images.copy(), 11.0)
    assert np.array_equal(nan, np.isnan(images))
    for k in range(3):
        assert_same(ours[k], high_pass_filter(images[k].copy(), size), 1e-5)


@pytest.mark.skipif(not derotation.available(), reason="needs numba")
@pytest.mark.parametrize("shape", [(3, 4, 9), (2, 61, 61), (1, 281, 120), (2, 37, 5)])
def test_compiled_prefilter_is_scipys_bit_for_bit(shape):
    from scipy import ndimage

    from cruncher.psfsub.fast import prefilter

    rng = np.random.default_rng(sum(shape))
    frames = (rng.standard_normal(shape) * 100).astype(np.float32)
    frames[0, :2, :3] = np.nan
    fill = np.array([np.nanmedian(f) for f in frames], np.float32)
    filled = np.where(np.isnan(frames), fill[:, None, None], frames)
    along_y = ndimage.spline_filter1d(filled, 3, axis=1, output=np.float64, mode="constant")
    expected = ndimage.spline_filter1d(along_y, 3, axis=2, output=np.float64, mode="constant")
    assert np.array_equal(prefilter.coefficients(frames, fill), expected.astype(np.float32))
    coeffs, nan = resample.spline_coefficients(frames)
    assert np.array_equal(coeffs, expected.astype(np.float32)) and nan.sum() == 6


def test_high_pass_in_place_and_coefficients_from_its_mask_are_the_same_numbers():
    images = np.concatenate([field(3), field(4)])
    images[4, 10:14, 20:30] = np.nan                  # a second NaN pattern
    copied, nan = high_pass(images, 11.0)
    given = images.copy()
    in_place, nan_again = high_pass(given, 11.0, threads=2, overwrite=True)
    assert in_place is given and np.array_equal(nan, nan_again)
    assert np.array_equal(copied, in_place, equal_nan=True)
    coeffs, mask = prepare.coefficients(copied)
    coeffs_given, mask_given = prepare.coefficients(copied, 2, nan)
    assert mask_given is nan and np.array_equal(mask, nan)
    assert np.array_equal(coeffs, coeffs_given)


@pytest.mark.parametrize("refs, pixels", [(2, 50), (30, 400), (300, 2000), (300, 120)])
def test_klip_weights_are_those_of_the_full_eigendecomposition(refs, pixels):
    """The CPU weights (sytrd, sterf + stein, the weights carried back by ormqr) against the
    model built from numpy's full eigh, including a rank-deficient covariance (more references
    than pixels) and fewer references than modes."""
    from cruncher.psfsub.fast.weights import first_bad, klip_weights, weights_from_pairs

    rng = np.random.default_rng(refs + pixels)
    data = rng.standard_normal((refs + 1, pixels)) * np.exp(-np.arange(pixels) / 60)[None, :]
    data -= data.mean(axis=1, keepdims=True)
    full = data @ data.T / (pixels - 1)
    cov, cross = full[1:, 1:], full[1:, 0]
    cutoffs = np.clip(np.array([1, 10, 20, 30, 50]) - 1, 0, refs - 1)
    (weights, values), = klip_weights([cov], [cross], [cutoffs])
    want_values, want_vectors = np.linalg.eigh(cov)
    k = int(cutoffs.max()) + 1
    want_values, want_vectors = want_values[::-1][:k], want_vectors[:, ::-1][:, :k]
    assert values.shape == (k,) and weights.shape == (refs, cutoffs.size)
    scale = want_values.max()
    assert np.allclose(values, want_values, rtol=0, atol=1e-12 * scale)
    # the model (weights applied to the references) for cutoffs inside the covariance's rank
    rank = first_bad(np.where(want_values > 1e-9 * scale, want_values, 0))
    inside = cutoffs < (k if rank is None else rank)
    want = weights_from_pairs(want_values, want_vectors, cross, cutoffs)
    model, wanted_model = weights.T @ data[1:], want.T @ data[1:]
    assert np.allclose(model[inside], wanted_model[inside],
                       atol=1e-7 * np.abs(data[0]).max())


@pytest.mark.parametrize("refs, pixels", [(300, 105), (80, 60)])
def test_a_section_of_fewer_pixels_than_references_is_solved_in_pixel_space(refs, pixels):
    """Fewer pixels than references (the innermost annulus): the p x p problem of the pixels
    gives the covariance's eigenvalues and the same model as the n x n problem of the
    references."""
    from cruncher.psfsub.fast.weights import (in_pixel_space, klip_weights, lift,
                                              pixel_space_problem)

    rng = np.random.default_rng(refs)
    data = rng.standard_normal((refs + 1, pixels)) * np.exp(-np.arange(pixels) / 20)[None, :]
    data -= data.mean(axis=1, keepdims=True)
    divisor = pixels + 17.0          # the section's pixel count less 1, NaN-only pixels included
    full = data @ data.T / divisor
    cutoffs = np.array([1, 10, 20, 30, 50]) - 1
    assert in_pixel_space(refs, pixels, cutoffs)
    assert not in_pixel_space(refs, 50, cutoffs) and not in_pixel_space(pixels, refs, cutoffs)
    (weights, values), = klip_weights([full[1:, 1:]], [full[1:, 0]], [cutoffs])
    gram, science = pixel_space_problem(data[1:], data[0], divisor)
    (small, small_values), = klip_weights([gram], [science], [cutoffs])
    assert np.allclose(small_values, values, rtol=1e-9, atol=0)
    model = weights.T @ data[1:]
    assert np.allclose(lift(data[1:], small).T @ data[1:], model,
                       rtol=0, atol=1e-8 * np.abs(data[0]).max())
    # and the residuals are not trivially equal: each cutoff removes more of the science frame
    assert np.all(np.diff(np.linalg.norm(data[0] - model, axis=1)) < 0)


def test_top_tridiagonal_pairs_of_a_split_matrix_with_repeated_eigenvalues():
    """Inverse iteration is asked for one block even where the matrix splits (zero off-diagonal)
    and eigenvalues repeat; what comes back must still be orthonormal eigenpairs, largest first."""
    from cruncher.psfsub.fast.weights import top_tridiagonal_pairs

    diag = np.array([5.0, 3.0, 5.0, 1.0, 3.0, 0.5, 5.0, 2.0])
    off = np.array([0.0, 0.0, 1e-3, 0.0, 0.0, 0.2, 0.0])
    values, vectors = top_tridiagonal_pairs(diag, off, 5)
    matrix = np.diag(diag) + np.diag(off, 1) + np.diag(off, -1)
    assert np.allclose(values, np.linalg.eigvalsh(matrix)[::-1][:5], atol=1e-12)
    assert np.allclose(matrix @ vectors, vectors * values[None, :], atol=1e-10)
    assert np.allclose(vectors.T @ vectors, np.eye(5), atol=1e-10)


def graded_tridiagonal(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A tridiagonal matrix of a covariance like KLIP's: one eigenvalue ~1e5 times the 50th,
    a graded tail, a rank-deficient end (eigenvalues near zero)."""
    from scipy.linalg import lapack

    rng = np.random.default_rng(seed)
    values = np.concatenate([[1e7], 1e3 * np.exp(-np.arange(n - 1) / 25.0)])
    tail = n // 3
    if tail:
        values[n - tail:] = 1e-9 * rng.standard_normal(tail)
    basis, _ = np.linalg.qr(rng.standard_normal((n, n)))
    matrix = (basis * values) @ basis.T
    _, diag, off, _, info = lapack.dsytrd(np.asfortranarray((matrix + matrix.T) / 2), lower=1)
    assert info == 0
    return diag, off


@pytest.mark.parametrize("n, k, seed", [(300, 50, 0), (300, 1, 1), (40, 25, 2), (2, 2, 3),
                                        (120, 50, 4)])
def test_compiled_tridiagonal_pairs_are_lapacks(n, k, seed):
    """Bisection and inverse iteration (numba) against LAPACK's stemr on graded spectra: the same
    eigenvalues to rounding of the largest, and the same projectors onto the top vectors."""
    from scipy.linalg import eigh_tridiagonal

    from cruncher.psfsub.fast import tridiagonal

    diag, off = graded_tridiagonal(n, seed)
    found = tridiagonal.top_pairs(diag, off, k)
    assert found is not None, "the checks refused a well-separated spectrum"
    values, vectors = found
    want_values, want_vectors = eigh_tridiagonal(diag, off, select="i",
                                                 select_range=(n - k, n - 1))
    want_values, want_vectors = want_values[::-1], want_vectors[:, ::-1]
    norm = np.abs(want_values).max()
    assert np.allclose(values, want_values, rtol=0, atol=1e-13 * norm)
    for cutoff in sorted({1, min(10, k), k}):
        # a projector is defined where the cutoff falls in a gap, which a graded spectrum has
        ours = vectors[:, :cutoff] @ vectors[:, :cutoff].T
        theirs = want_vectors[:, :cutoff] @ want_vectors[:, :cutoff].T
        assert np.abs(ours - theirs).max() < 1e-9


def test_compiled_tridiagonal_eigenvalues_are_relatively_accurate():
    """Where frames are zero-filled, a covariance's 50th eigenvalue may be 1e-12 of its first and
    the weights divide by it: bisection must find it to relative, not |T|-absolute, accuracy. A
    scaled diagonally dominant matrix determines its eigenvalues to that accuracy."""
    from scipy.linalg import eigh_tridiagonal

    from cruncher.psfsub.fast import tridiagonal

    n = 60
    diag = 10.0 ** (-np.arange(n) / 4.0)
    off = 0.1 * np.sqrt(diag[:-1] * diag[1:])
    values, _ = tridiagonal.top_pairs(diag, off, 50)
    want = eigh_tridiagonal(diag, off, eigvals_only=True, lapack_driver="stemr")[::-1][:50]
    assert want[-1] < 1e-11 * want[0]
    assert np.allclose(values, want, rtol=1e-12, atol=0)


def test_compiled_tridiagonal_pairs_refuse_a_repeated_eigenvalue():
    """Without reorthogonalisation two equal (or nearly equal) eigenvalues would get the same
    vector: the check refuses them (and :func:`top_tridiagonal_pairs` falls back to LAPACK)."""
    from cruncher.psfsub.fast import tridiagonal
    from cruncher.psfsub.fast.weights import top_tridiagonal_pairs

    diag = np.array([5.0, 3.0, 5.0, 1.0])
    assert tridiagonal.top_pairs(diag, np.zeros(3), 2) is None
    # coupled, the two fives split by 2.5e-5: no longer equal, and accepted; split by 2.5e-7,
    # closer than the compiled path's shifts resolve, refused, and LAPACK serves
    for coupling, compiled in ((1e-2, True), (1e-3, False)):
        off = np.array([0.0, 0.0, coupling])
        assert (tridiagonal.top_pairs(diag, off, 2) is not None) == compiled
        values, vectors = top_tridiagonal_pairs(diag, off, 2)
        matrix = np.diag(diag) + np.diag(off, 1) + np.diag(off, -1)
        assert np.allclose(values, np.linalg.eigvalsh(matrix)[::-1][:2], rtol=0, atol=1e-14)
        assert np.allclose(matrix @ vectors, vectors * values, atol=1e-12)
    # every eigenpair of a rank-deficient matrix: its near-zero cluster is refused, LAPACK serves
    diag, off = graded_tridiagonal(40, 2)
    assert tridiagonal.top_pairs(diag, off, 40) is None
    values, vectors = top_tridiagonal_pairs(diag, off, 40)
    matrix = np.diag(diag) + np.diag(off, 1) + np.diag(off, -1)
    assert np.allclose(vectors.T @ vectors, np.eye(40), atol=1e-10)
    assert np.allclose(matrix @ vectors, vectors * values, atol=1e-12 * np.abs(values).max())


@pytest.mark.parametrize("annuli, subsections, center, shared", [
    (4, 4, (30.0, 30.0), True),       # quarter sectors: boxes nest and share two edges
    (3, 3, (27.4, 32.2), False),      # sectors off the axes: each box smoothed alone
])
@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "scipy"])
def test_smoothing_shared_by_nested_boxes_is_pyklips_per_box(annuli, subsections, center,
                                                             shared, compiled, monkeypatch):
    """Every section's smoothed pixels equal, bit for bit, pyKLIP's: ``gaussian_filter`` of each
    frame's section box alone, NaNs set to 0 (by the compiled loop, and by scipy as cupy does)."""
    from scipy import ndimage

    from cruncher.psfsub.fast import gaussian
    from cruncher.psfsub.fast.sections import sections
    from cruncher.psfsub.fast.smoothing import Smoother

    monkeypatch.setattr(gaussian, "available", lambda: compiled)

    frames = np.concatenate([field(4), field(5)])
    frames[1, 28:31, 33:36] = np.nan       # a hole inside the field spreads too
    parts = sections(frames.shape[1:], center, 3.0, 28.0, annuli, subsections, "log")
    smoother = Smoother(frames, parts)
    assert any(plan.parent != part.box for plan, part in zip(smoother.plans, parts)) == shared
    for index in smoother.order():
        section = parts[index]
        y0, y1, x0, x1 = section.box
        ys, xs = np.divmod(section.pixels, frames.shape[2])
        expected = np.stack([ndimage.gaussian_filter(frame[y0:y1 + 1, x0:x1 + 1], 1)[ys - y0, xs - x0]
                             for frame in frames]).astype(np.float64)
        expected[np.isnan(expected)] = 0
        np.testing.assert_array_equal(smoother.section(index), expected)


@pytest.mark.skipif(not derotation.available(), reason="needs numba")
@pytest.mark.parametrize("shape", ["sector", "scattered", "one pixel", "corner"])
def test_compiled_smoothing_of_part_of_a_box_is_scipys_bit_for_bit(shape):
    """Only the rows and columns the wanted pixels need are smoothed: a quarter annulus in its
    box (as KLIP's sections), a few scattered pixels, one pixel, and a corner near the box's
    reflected edges all come out as scipy's ``gaussian_filter`` of the whole box gives them."""
    from scipy import ndimage

    from cruncher.psfsub.fast import gaussian

    frames = np.concatenate([field(8), field(9)])
    frames[1, 30:33, 30:36] = np.nan
    box = (3, 57, 2, 58)
    height, width = box[1] - box[0] + 1, box[3] - box[2] + 1
    y, x = np.indices((height, width))
    radius = np.hypot(y, x)
    wanted = {"sector": (radius > 20) & (radius < 45),
              "scattered": (y * 7 + x * 3) % 97 == 0,
              "one pixel": (y == 30) & (x == 17),
              "corner": (y > height - 6) & (x > width - 5)}[shape]
    take = np.flatnonzero(wanted)
    out = np.empty((len(frames), take.size), np.float32)
    gaussian.smooth_into(out, frames, box, 1.0, take, np.arange(take.size))
    along_y, along_x = gaussian.spans(take, height, width, 4)
    computed = sum(int(h - lo) for lo, h in zip(*along_y)) + sum(int(h - lo) for lo, h in zip(*along_x))
    blocks = -(-height // gaussian.ROWS_AT_ONCE), -(-width // gaussian.ROWS_AT_ONCE)
    everything = blocks[0] * width + blocks[1] * height
    assert computed < (everything / 10 if shape == "one pixel" else everything)
    for frame, row in zip(frames, out):
        want = ndimage.gaussian_filter(frame[box[0]:box[1] + 1, box[2]:box[3] + 1], 1.0)
        np.testing.assert_array_equal(row, np.nan_to_num(want.ravel()[take], nan=0.0))


@pytest.mark.parametrize("box, sigma", [((3, 40, 5, 44), 1.0), ((10, 12, 0, 60), 1.0),
                                        ((0, 60, 58, 60), 1.0), ((7, 33, 2, 29), 1.7),
                                        ((0, 60, 10, 30), 1.0), ((20, 28, 0, 60), 1.0),
                                        ((5, 6, 20, 21), 1.0)])
def test_compiled_smoothing_is_scipys_bit_for_bit(box, sigma):
    """The compiled Gaussian against scipy's ``gaussian_filter`` of each box, float32 frames with
    NaNs (given as 0, as the ranking takes them); boxes thinner than the kernel (reflected more
    than once) and narrow boxes (smoothed along their columns) included."""
    from scipy import ndimage

    from cruncher.psfsub.fast import gaussian

    frames = np.concatenate([field(6), field(7)])
    frames[2, 20:23, 10:14] = np.nan
    y0, y1, x0, x1 = box
    take = np.arange(0, (y1 - y0 + 1) * (x1 - x0 + 1), 3)
    out = np.full((len(frames), take.size + 2), -1.0, np.float32)
    gaussian.smooth_into(out, frames, box, sigma, take, np.arange(take.size) + 2)
    nans = 0
    for frame, row in zip(frames, out):
        want = ndimage.gaussian_filter(frame[y0:y1 + 1, x0:x1 + 1], sigma).ravel()[take]
        nans += np.isnan(want).sum()
        np.testing.assert_array_equal(row[2:], np.nan_to_num(want, nan=0.0))
        assert np.all(row[:2] == -1)
    assert nans > 0


def _small_task():
    """An engine task of 4 exposures x 3 wavelengths of 41 x 41 px, and its wavelength groups."""
    from scipy import ndimage

    from cruncher.psfsub.fast import engine
    from cruncher.psfsub.fast.core import Frames, Settings

    rng = np.random.default_rng(11)
    exposures, wavelengths, size = 4, 3, 41
    images = ndimage.gaussian_filter(rng.standard_normal((exposures * wavelengths, size, size)),
                                     (0, 2, 2)).astype(np.float32)
    y, x = np.indices((size, size))
    images[:, np.hypot(x - 20, y - 20) > 19] = np.nan
    wvs = np.tile(np.array([1.5, 1.6, 1.7], np.float32), exposures)
    coeffs, nanmask = prepare.coefficients(images)
    task = engine.Task(
        coeffs=coeffs, nanmask=nanmask, centers=np.full((len(images), 2), 20.0),
        frames=Frames(np.repeat(np.arange(exposures) * 15.0, wavelengths).astype(np.float32), wvs,
                      np.repeat(np.arange(exposures), wavelengths).astype(np.float32)),
        settings=Settings(mode="ADI+SDI", numbasis=np.array([1, 3]), maxnumbasis=6, minmove=1.0),
        iwa=3.0, owa=None, annuli=2, subsections=2, spacing="constant", flipx=False,
        out_center=(20, 20))
    return task, [(np.arange(len(images)), i, wv) for i, wv in enumerate(np.unique(wvs))]


def test_a_wavelength_shared_among_workers_gives_what_one_process_gives():
    """With an odd number of wavelengths and two workers, the last wavelength's sections are
    split between the workers and put together again: the sums are bit for bit those of one
    process doing every wavelength whole."""
    from cruncher.psfsub.fast import engine

    task, groups = _small_task()
    assert [job[3] for job in engine.schedule(groups, 2)] == [None, None, (0, 2), (1, 2)]
    serial = dict(engine.run_all(task, groups, 1))
    shared = dict(engine.run_all(task, groups, 2))
    assert sorted(shared) == [0, 1, 2]
    for index, (total, count) in serial.items():
        assert count.sum() > 0
        np.testing.assert_array_equal(shared[index][0], total)
        np.testing.assert_array_equal(shared[index][1], count)


def test_gathers_copy_exactly_what_numpy_indexing_gives():
    """A section's pixels copied run by run (without numba; float32 with NaNs, in runs and
    scattered) and a reference set's covariance by the compiled gather (in the references'
    order, not sorted)."""
    from cruncher.psfsub.fast import gather
    from cruncher.psfsub.fast.sections import take_columns

    rng = np.random.default_rng(5)
    frames = rng.standard_normal((7, 900)).astype(np.float32)
    frames[:, ::11] = np.nan
    for index in (np.arange(100, 400), np.sort(rng.choice(900, 250, replace=False)),
                  np.array([3]), np.array([], int)):
        np.testing.assert_array_equal(take_columns(frames, index, np.float64),
                                      frames[:, index].astype(np.float64))
    cov = rng.standard_normal((60, 60))
    cov += cov.T
    for index in (rng.permutation(60)[:25], np.arange(60), np.array([7])):
        np.testing.assert_array_equal(gather.submatrix(cov, index), cov[np.ix_(index, index)])


def test_compiled_centring_is_numpys():
    """A section's pixels centred in the gathering pass: each row less the mean of its finite
    values, NaN -> 0, and where the NaNs were; a row with no finite value gives zeros. And the
    smoothed pixels centred, with their norms, for the ranking."""
    from cruncher.psfsub.fast import gather

    rng = np.random.default_rng(6)
    frames = (rng.standard_normal((6, 500)) + 3).astype(np.float32)
    frames[:, ::7] = np.nan
    frames[4] = np.nan
    index = np.sort(rng.choice(500, 220, replace=False))
    centred, nan = gather.centred_columns(frames, index)
    taken = frames[:, index].astype(np.float64)
    with pytest.warns(RuntimeWarning, match="Mean of empty slice"):      # the all-NaN row
        want = np.nan_to_num(taken - np.nanmean(taken, axis=1, keepdims=True), nan=0.0)
    np.testing.assert_array_equal(nan, np.isnan(taken))
    np.testing.assert_allclose(centred, want, rtol=0, atol=1e-14)
    assert not centred[4].any() and centred[~nan].std() > 0.5
    # the smoothed sections (finite, columns of a wider block) centred for the ranking
    block = (rng.standard_normal((6, 300)) + 2).astype(np.float32)
    rows = block[:, 40:250]
    out = np.empty(rows.shape)
    norms = gather.centred_rows(rows, out)
    want = rows.astype(np.float64) - rows.mean(axis=1, dtype=np.float64, keepdims=True)
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-14)
    np.testing.assert_allclose(norms, np.linalg.norm(want, axis=1), rtol=1e-14)


def test_a_wavelength_without_numba_gives_what_the_compiled_loops_give(monkeypatch):
    """Every compiled loop switched off (numba absent) gives the same KLIP sums to rounding:
    the largest difference is 8e-7 of the sums' RMS, from the alignment (the banded products
    round in float32, the compiled loop in float64)."""
    from cruncher.psfsub.fast import (derotation, engine, gather, gaussian, prefilter, resample,
                                      tridiagonal)

    task, groups = _small_task()
    compiled = dict(engine.run_all(task, groups, 1))
    for module in (derotation, gather, gaussian, prefilter, resample, tridiagonal):
        monkeypatch.setattr(module, "available", lambda: False)
    plain = dict(engine.run_all(task, groups, 1))
    for index, (total, count) in compiled.items():
        np.testing.assert_array_equal(plain[index][1], count)
        scale = np.sqrt(np.nanmean(total ** 2))
        assert np.nanmax(np.abs(plain[index][0] - total)) <= 1e-5 * scale


def test_a_section_of_under_five_pixels_gets_no_references():
    """pyKLIP drops references with fewer than 5 finite pixels in a section, counted after their
    NaNs were set to 0: a section of 4 pixels has no references (stays NaN), one of 5 has, even
    when a reference has only 3 finite pixels in it."""
    from cruncher.psfsub.fast.core import Frames, Settings, klip_section
    from cruncher.psfsub.fast.sections import Section

    rng = np.random.default_rng(3)
    aligned = rng.standard_normal((8, 10, 10)).astype(np.float32)
    aligned[5].ravel()[3:] = np.nan
    frames = Frames(parangs=np.arange(8, dtype=np.float32) * 30, wvs=np.ones(8, np.float32),
                    filenums=np.arange(8, dtype=np.float32))
    settings = Settings(mode="ADI", numbasis=np.array([1, 3]), maxnumbasis=7, minmove=1.0,
                        corr_smooth=0.0)

    def residuals(pixels: int):
        section = Section((0.0, 10.0), (-np.pi, np.pi), np.arange(pixels), (0, 0, 0, pixels - 1),
                          10)
        return klip_section(aligned, np.array([0]), section, frames, settings, 0)

    assert residuals(4) is None
    assert np.isfinite(residuals(5)).all()


def test_an_unknown_engine_is_refused():
    with pytest.raises(BadInputError, match="unknown KLIP engine"):
        klip.reduction_params("klip_general", {"engine": "magic"})
    assert klip.reduction_params("klip_general")["engine"] == "fast"


def test_a_products_label_says_its_parameters():
    assert klip.reduction_params("klip_general")["label"] == "k300a9s4m1"
    assert klip.reduction_params("klip_tdwarf", {"maxnumbasis": 100})["label"] == "k100a9s4m1methane"
    assert klip.reduction_params("klip_disk", {"movement": 1.5, "label_suffix": "x"})["label"] == \
        "k300a9s4m1.5-disk"


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    """12 cubes (8 channels, 121 px) with one L planet: 96 frames, enough for every movement
    criterion to leave references, small enough for pyKLIP to run the whole suite in CI."""
    from cruncher.instruments.gpi.sim.cubes import simulate_cubes
    from cruncher.instruments.gpi.sim.night import NightPlan, SequencePlan
    from cruncher.instruments.gpi.sim.scene import Planet

    out = tmp_path_factory.mktemp("fastklip")
    planet = Planet(separation_arcsec=PLANET[0], contrast=PLANET[1], spectral_type="L",
                    pa_deg=PLANET[2])
    simulate_cubes(NightPlan(out=out, seed=8, sequences=(SequencePlan(
        target="HR 4796A", frames=12, planets=(planet,)),)), channels=8, crop=121)
    return out, tuple(sorted(str(p) for p in (out / "cubes").glob("*/*_spdc.fits")))


class Reductions:
    """Each job run once per engine and parameters, whichever test asks first. Jobs with default
    parameters share one directory per engine, as the backend's suite of one dataset does, so the
    contrast job finds the reductions and injection runs it calibrates."""

    def __init__(self, sequence):
        self.out, self.cubes = sequence
        self.done: dict[tuple, str] = {}

    def product(self, name: str, engine: str, **params) -> str:
        key = (name, engine, *sorted(params.items()))
        if key not in self.done:
            self.done[key] = self._run(name, engine, params)
        return self.done[key]

    def _run(self, name: str, engine: str, params: dict) -> str:
        tag = "-".join([engine, *map(str, params.values())])
        outdir = self.out / ("suite-" + tag)
        extra = {"lite": True} if engine == "pyklip" else {}
        spec = JobFile(id=f"test:{tag}:{name}", algorithm=name, inputs=self.cubes,
                       outdir=str(outdir), result=str(outdir / f"{name}.json"),
                       params={"name": name, "numthreads": 2, "engine": engine, **extra, **params})
        result = run_job(spec)
        if name == "contrast":
            return {p.extras["planet_type"]: p.path for p in result.products}
        return result.products[0].path


@pytest.fixture(scope="module")
def reductions(sequence):
    return Reductions(sequence)


CASES = {"general": ("klip_general", {}),
         "general, 60 most correlated references": ("klip_general", {"maxnumbasis": 60}),
         "T-dwarf": ("klip_tdwarf", {}), "disk": ("klip_disk", {})}


def pair(reductions, case: str) -> tuple[str, str]:
    """One case reduced by both engines: (fast KL-mode cube, pyKLIP's)."""
    name, params = CASES[case]
    return tuple(reductions.product(name, engine, **params) for engine in ("fast", "pyklip"))


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_residual_maps_agree_with_pyklip_per_kl_cutoff(reductions, case):
    ours, theirs = (fits.getdata(p) for p in pair(reductions, case))
    for k in range(theirs.shape[0]):
        assert np.array_equal(np.isnan(ours[k]), np.isnan(theirs[k])), f"NaN masks, slice {k}"
        valid = np.isfinite(theirs[k])
        difference = np.sqrt(np.mean((ours[k] - theirs[k])[valid] ** 2))
        print(f"{case}, KL slice {k}: difference RMS / residual RMS = "
              f"{difference / np.sqrt(np.mean(theirs[k][valid] ** 2)):.2e}")
        assert difference <= 1e-3 * np.sqrt(np.mean(theirs[k][valid] ** 2)), f"slice {k}"


@pytest.mark.slow
def test_planet_snr_and_contrast_curve_agree_with_pyklip(reductions):
    from pyklip.klip import meas_contrast

    from cruncher.instruments.gpi.optics import LENSLET_SCALE

    measured = []
    for path in pair(reductions, "general"):
        image, centre, _ = klip.kl_image(path, klip.DEFAULT_KL)
        sep = PLANET[0] / LENSLET_SCALE
        x = centre[0] - sep * np.sin(np.radians(PLANET[2]))
        y = centre[1] + sep * np.cos(np.radians(PLANET[2]))
        significance = snr.snr_map(image, centre)
        xi, yi = int(round(x)), int(round(y))
        peak = float(np.nanmax(significance[yi - 1:yi + 2, xi - 1:xi + 2]))
        seps, curve = meas_contrast(image, 10, 60, 3.5, center=centre, low_pass_filter=False)
        measured.append((peak, curve))
        print(f"{path}: planet SNR {peak:.2f}")
    (snr_fast, curve_fast), (snr_ref, curve_ref) = measured
    assert snr_ref > 5                     # the planet is there to be measured
    worst = float(np.nanmax(np.abs(curve_fast / curve_ref - 1)))
    print(f"planet SNR {snr_fast:.3f} vs {snr_ref:.3f}; KL-20 5-sigma curve: largest relative "
          f"difference {worst:.2e}")
    assert abs(snr_fast / snr_ref - 1) <= 0.02
    assert worst <= 0.05


FAKES = ("fakes_L_0", "fakes_L_45", "fakes_T_0", "fakes_T_45")


@pytest.mark.slow
def test_calibrated_contrast_curves_agree_with_pyklip(reductions):
    """The whole contrast calibration (reductions, four injection runs, the contrast job) with
    each engine: the L and T curves agree within 5 % at every separation."""
    curves = {}
    for engine in ("fast", "pyklip"):
        for name in ("klip_general", "klip_tdwarf", *FAKES):
            reductions.product(name, engine)
        curves[engine] = {planet_type: fits.getdata(path, 1)["CONTRAST"]
                          for planet_type, path in reductions.product("contrast", engine).items()}
    for planet_type in ("L", "T"):
        ours, theirs = curves["fast"][planet_type], curves["pyklip"][planet_type]
        good = np.isfinite(theirs)
        assert np.array_equal(good, np.isfinite(ours)) and good.sum() > 20
        worst = float(np.max(np.abs(ours[good] / theirs[good] - 1)))
        print(f"{planet_type} contrast curve: largest relative difference {worst:.2e}")
        assert worst <= 0.05
