"""KLIP's model of one science frame as weights on its references, from their covariance.

pyKLIP projects the science frame on the first K eigenvectors ``v_k`` (eigenvalues ``l_k``) of
the references' covariance. In the space of references, the model for cutoff K is the
combination ``sum_{k<=K} v_k (v_k . c) / l_k`` of the reference frames, where ``c`` holds the
science frame's products with the references. Only these weights are needed, one column per
cutoff, so on the CPU they are computed without forming the eigenvectors:

- the covariance is reduced to a tridiagonal matrix ``T = Q' C Q`` (LAPACK ``sytrd``, blocked);
- the wanted eigenpairs of ``T`` come from compiled bisection and inverse iteration
  (:mod:`~cruncher.psfsub.fast.tridiagonal`, about 5x faster than LAPACK here), or, where its
  checks fail or numba is missing, from LAPACK: ``sterf`` for the eigenvalues and ``stein``,
  which reorthogonalises vectors of close eigenvalues;
- ``c`` is carried into the tridiagonal basis, the weights are summed there and only the
  ``len(numbasis)`` weight columns are carried back (``ormqr``), instead of ``max(numbasis)``
  eigenvectors.

Where a section has fewer pixels ``p`` than the frame has references ``n`` (the innermost
annulus: 105 pixels against 300 references at the standard size), the covariance has rank below
``p``, and its nonzero eigenpairs are those of the ``p x p`` product of the pixels
(:func:`pixel_space_problem`, then :func:`lift`): ``C = R R' / d`` and ``G = R' R / d`` share
their eigenvalues, and ``C``'s eigenvectors are ``R u / sqrt(d l)``, so the weights are ``R``
times ``G``'s weights for the science pixels ``s / d``. A ``p x p`` problem instead of an
``n x n`` one: 10x less work there.

The mathematics is pyKLIP's (``scipy.linalg.eigh`` of the covariance, largest eigenpairs first);
only the rounding differs. On a GPU, cupy's batched ``eigh`` gives the eigenvectors instead.
"""
from __future__ import annotations

from types import ModuleType

import numpy as np

from cruncher.psfsub.fast import tridiagonal
from cruncher.xp import to_numpy


def weights_from_pairs(values, vectors, cross, cutoffs: np.ndarray, xp: ModuleType = np):
    """The model's weights (n, n_cutoffs) from descending eigenpairs; a non-positive eigenvalue
    contributes nothing (its cutoffs are marked by :func:`first_bad`)."""
    bad = values <= 0
    with np.errstate(divide="ignore", invalid="ignore"):
        coef = (vectors.T @ cross) / values
    coef = xp.where(bad, 0, coef)
    return xp.cumsum(vectors * coef[None, :], axis=1)[:, xp.asarray(cutoffs)]


def first_bad(values) -> int | None:
    """Index of the first non-positive eigenvalue (pyKLIP gives NaN from that mode on)."""
    bad = np.flatnonzero(to_numpy(values) <= 0)
    return int(bad[0]) if bad.size else None


def klip_weights(covs: list, crosses: list, cutoffs: list[np.ndarray], xp: ModuleType = np,
                 overwrite: bool = False):
    """For each (covariance, cross products, cutoffs): ``(weights (n, n_cut), values (k,))``.

    ``cutoffs`` are 0-based mode indices already clipped to the number of references; ``values``
    are the ``max(cutoffs) + 1`` largest eigenvalues, descending. With ``overwrite`` the
    covariances (exactly symmetric) may be overwritten, which saves a copy of each.
    """
    if xp is np:
        return [_weights_lapack(c, x, cut, overwrite)
                for c, x, cut in zip(covs, crosses, cutoffs)]
    out: list = [None] * len(covs)
    sizes: dict[int, list[int]] = {}
    for i, cov in enumerate(covs):
        sizes.setdefault(cov.shape[0], []).append(i)
    for members in sizes.values():
        values, vectors = xp.linalg.eigh(xp.stack([covs[i] for i in members]))
        for i, v, w in zip(members, values, vectors):
            k = int(cutoffs[i].max()) + 1
            v, w = v[::-1][:k], w[:, ::-1][:, :k]
            out[i] = (weights_from_pairs(v, w, crosses[i], cutoffs[i], xp), v)
    return out


def in_pixel_space(n_refs: int, pixels: int, cutoffs: np.ndarray) -> bool:
    """Whether a science frame's model is cheaper in the space of the section's pixels: fewer
    pixels than references, and every cutoff inside the rank of the covariance (at most
    ``pixels - 1``, the rows being centred), where the two spaces' eigenpairs are the same."""
    return pixels < n_refs and int(np.max(cutoffs)) + 1 < pixels


def pixel_space_problem(refs, science, divisor: float):
    """(``G = R' R / d``, ``s / d``): the eigenproblem :func:`klip_weights` solves for a section
    of fewer pixels than references (``refs`` R: (n, p) centred pixels, ``science`` s: (p,));
    :func:`lift` turns its weights into the references' weights."""
    return (refs.T @ refs) / divisor, science / divisor


def lift(refs, weights):
    """The references' weights (n, n_cut) from those of :func:`pixel_space_problem`: ``R a``."""
    return refs @ weights


#: Columns per block of LAPACK's tridiagonal reduction. ``dsytrd`` takes its block from the
#: workspace it is given; its own choice (32, for large matrices) is slower at KLIP's size:
#: 1.50 ms against 1.33 ms with 8 to 14 columns per 300 x 300 covariance (the blocked update
#: does less of the work, the matrix-vector products, which stay in cache, more).
TRIDIAGONAL_BLOCK = 12


def _tridiagonal_workspace(n: int) -> int:
    return max(1, n * TRIDIAGONAL_BLOCK)


def _weights_lapack(cov: np.ndarray, cross: np.ndarray, cutoffs: np.ndarray,
                    overwrite: bool = False):
    from scipy.linalg import lapack

    n = cov.shape[0]
    k = int(cutoffs.max()) + 1
    if n < 3:
        values, vectors = np.linalg.eigh(cov)
        values, vectors = values[::-1][:k], vectors[:, ::-1][:, :k]
        return weights_from_pairs(values, vectors, cross, cutoffs), values
    # the matrix in Fortran order (its transpose, as it is symmetric) that LAPACK may overwrite
    fortran = cov.T if overwrite and cov.flags.c_contiguous else np.array(cov, order="F")
    reduced, diag, off, tau, info = lapack.dsytrd(fortran, lower=1,
                                                  lwork=_tridiagonal_workspace(n), overwrite_a=1)
    values, vectors = top_tridiagonal_pairs(diag, off, k)
    # Q = diag(1, H_1 ... H_{n-1}): its reflectors act on rows 1..n-1 only
    householder = reduced[1:, :n - 1]
    carried = np.array(cross, dtype=np.float64).reshape(n, 1)
    carried[1:] = _apply_q(householder, tau, carried[1:], "T")
    weights = weights_from_pairs(values, vectors, carried[:, 0], cutoffs)
    weights = np.asfortranarray(weights)
    weights[1:] = _apply_q(householder, tau, weights[1:], "N")
    return weights, values


def _apply_q(householder, tau, block: np.ndarray, trans: str) -> np.ndarray:
    from scipy.linalg import lapack

    out, _, info = lapack.dormqr("L", trans, householder, tau, block,
                                 lwork=max(1, 64 * block.shape[1]))
    if info != 0:
        raise np.linalg.LinAlgError(f"ormqr failed ({info})")
    return out


def top_tridiagonal_pairs(diag: np.ndarray, off: np.ndarray, k: int):
    """The ``k`` largest eigenpairs (descending) of a symmetric tridiagonal matrix."""
    compiled = tridiagonal.top_pairs(diag, off, k)
    return compiled if compiled is not None else lapack_tridiagonal_pairs(diag, off, k)


def lapack_tridiagonal_pairs(diag: np.ndarray, off: np.ndarray, k: int):
    """:func:`top_tridiagonal_pairs` by LAPACK (``sterf`` + ``stein``, else ``stemr``)."""
    from scipy.linalg import eigh_tridiagonal, lapack

    n = diag.size
    values, info = lapack.dsterf(diag.copy(), off.copy())
    if info == 0:
        top = np.ascontiguousarray(values[n - k:])
        split = np.zeros(n, np.int32)
        split[0] = n
        vectors, info = lapack.dstein(diag, off, top, np.ones(n, np.int32), split)
        if info == 0:
            return top[::-1], vectors[:, ::-1]
    # inverse iteration did not converge (a cluster of equal eigenvalues): MRRR instead
    values, vectors = eigh_tridiagonal(diag, off, select="i", select_range=(n - k, n - 1),
                                       check_finite=False, lapack_driver="stemr")
    return values[::-1], vectors[:, ::-1]
