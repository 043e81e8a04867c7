"""The largest eigenpairs of a symmetric tridiagonal matrix, compiled (numba) for KLIP's sizes.

After the covariance of a science frame's references is reduced to tridiagonal form, KLIP needs
its ``k`` (at most 50) largest eigenpairs. LAPACK's ``sterf`` (every eigenvalue) and ``stein``
(inverse iteration, reorthogonalising within what it takes for one cluster: here all but the first
few eigenvalues, which lie within 1e-3 of the largest) spend about 2.3 ms on a 300 x 300
covariance. Two compiled loops do the same work in about 0.37 ms:

- :func:`_bisect`: the ``k`` largest eigenvalues by bisection on Sturm counts (LAPACK's
  ``dlaebz`` recurrence with its pivot guard), every unfinished eigenvalue a SIMD lane; all but
  the smallest (below 1e-7 |T|, which keep their relative accuracy) are then finished by their
  vectors' Rayleigh quotients;
- :func:`_inverse_iteration`: for each eigenvalue, two solves with ``T - lambda I`` factored by
  Gaussian elimination with partial pivoting (``dgttrf``), again every eigenvalue a lane, from a
  fixed pseudo-random start.

Nothing is reorthogonalised, so the result is checked instead (:func:`top_pairs`): each vector's
residual must be at rounding level and the vectors orthonormal to 1e-8. They are unless two
wanted eigenvalues are equal to rounding (a split matrix with a repeated eigenvalue, say); then
:func:`top_pairs` returns None and the caller uses LAPACK, which handles that case.
"""
from __future__ import annotations

import logging

import numpy as np

from cruncher.psfsub.fast.jit import available, compiled

_log = logging.getLogger(__name__)

EPS = float(np.finfo(np.float64).eps)
SAFE_MIN = float(np.finfo(np.float64).tiny)
#: Accept a vector whose residual ``|T v - lambda v|`` is at most this times ``|T|``.
RESIDUAL_TOLERANCE = 1e-12
#: ... and a set of vectors whose Gram matrix is the identity to this.
ORTHOGONALITY_TOLERANCE = 1e-8
#: Solves per vector: the first amplifies the wanted vector by about 1 / (eps |T|), the second
#: removes what is left of its neighbours.
SOLVES = 2
#: Points of the first Sturm scan, |T| / 2^m: eigenvalues below 2^-63 |T| are bisected from there.
SCAN = 64
#: Eigenvalues above SMALL |T| are bisected to a relative width of LOOSE only (17 steps fewer of
#: the 49), then replaced by their vectors' Rayleigh quotients, exact to about eps |T| (within
#: 2e-12 of such an eigenvalue); the shift error, 1e-10 of the eigenvalue, costs inverse
#: iteration nothing but where two eigenvalues lie within about 1e-6 of each other, and the
#: orthogonality check sends those matrices to LAPACK.
SMALL = 1e-7
LOOSE = 2.0 ** -33


def _count_below(diag, off2, points, pivot_min, below):
    """``below[j]``: how many eigenvalues lie below ``points[j]`` (Sturm counts of the LDL'
    factorisation, LAPACK's ``dlaebz`` recurrence with its pivot guard), every point a lane."""
    n, k = diag.size, points.size
    q = np.empty(k)
    for j in range(k):
        q[j] = diag[0] - points[j]
        below[j] = 1.0 if q[j] < 0 else 0.0
    for i in range(1, n):
        d, e2 = diag[i], off2[i - 1]
        for j in range(k):
            previous = q[j]
            previous = -pivot_min if abs(previous) < pivot_min else previous
            q[j] = (d - points[j]) - e2 / previous
            below[j] += 1.0 if q[j] < 0 else 0.0


def _bisect(diag, off, k):
    """The ``k`` largest eigenvalues (descending) and the Gershgorin bound on ``|T|``."""
    n = diag.size
    off2 = np.zeros(n)
    lower, upper, largest_off2 = np.inf, -np.inf, 0.0
    for i in range(n):
        radius = 0.0
        if i > 0:
            radius += abs(off[i - 1])
        if i < n - 1:
            radius += abs(off[i])
            off2[i] = off[i] * off[i]
            largest_off2 = max(largest_off2, off2[i])
        lower = min(lower, diag[i] - radius)
        upper = max(upper, diag[i] + radius)
    norm = max(abs(lower), abs(upper))
    pivot_min = SAFE_MIN * max(1.0, largest_off2)
    slack = 2.1 * EPS * norm * n + 2.0 * pivot_min
    # lane j looks for eigenvalue number n-1-j (ascending), which lies at or above x when at
    # most n-1-j eigenvalues are below x. A first scan at norm / 2^m brackets each within a
    # factor of two (KLIP's eigenvalues span five decades and more), which saves the bisection
    # about 20 of its 70 steps.
    scan = np.empty(SCAN)
    for m in range(SCAN):
        scan[m] = norm * 0.5 ** m
    counts = np.empty(SCAN)
    _count_below(diag, off2, scan, pivot_min, counts)
    low = np.empty(k)
    high = np.empty(k)
    for j in range(k):
        wanted = n - 1 - j
        low[j], high[j] = lower - slack, scan[SCAN - 1]
        for m in range(SCAN):
            if counts[m] <= wanted:
                low[j] = scan[m]
                high[j] = upper + slack if m == 0 else scan[m - 1]
                break
    # to relative accuracy (the weights divide by the eigenvalues, the smallest of which may be
    # 1e-12 of the largest where frames are zero-filled), but not below eps^2 |T|; eigenvalues
    # above SMALL |T| only to LOOSE (their Rayleigh quotients finish them, see top_pairs)
    floor = EPS * EPS * norm
    lanes = np.arange(k)            # the unfinished ones, side by side
    middle = np.empty(k)
    below = np.empty(k)
    for _ in range(256):
        m = 0
        for j in lanes:
            large = low[j] >= SMALL * norm
            relative = LOOSE if large else 4.0 * EPS
            tolerance = max(floor, relative * max(abs(low[j]), abs(high[j])))
            if high[j] - low[j] > tolerance:
                lanes[m] = j
                m += 1
        lanes = lanes[:m]
        if m == 0:
            break
        for a in range(m):
            middle[a] = 0.5 * (low[lanes[a]] + high[lanes[a]])
        _count_below(diag, off2, middle[:m], pivot_min, below[:m])
        for a in range(m):
            j = lanes[a]
            if below[a] > n - 1 - j:
                high[j] = middle[a]
            else:
                low[j] = middle[a]
    for j in range(k):
        middle[j] = 0.5 * (low[j] + high[j])
    return middle, norm


def _factor(diag, off, values, tiny, lower, inverse_pivot, upper1, upper2, swapped):
    """``T - value I = P L U`` for every value (lanes), as LAPACK's ``dgttrf`` pivots; pivots
    smaller than ``tiny`` are replaced by ``+-tiny`` (inverse iteration wants them singular
    only to rounding). ``inverse_pivot`` holds 1 / U's diagonal."""
    n, k = diag.size, values.size
    current = np.empty(k)       # U's diagonal entry being formed in row i
    above = np.empty(k)         # its entry right of the diagonal
    for j in range(k):
        current[j] = diag[0] - values[j]
        above[j] = off[0] if n > 1 else 0.0
    for i in range(n - 1):
        below, next_diag = off[i], diag[i + 1]
        next_off = off[i + 1] if i < n - 2 else 0.0
        for j in range(k):
            a, u, c = current[j], above[j], next_diag - values[j]
            swap = abs(a) < abs(below)
            pivot = below if swap else a
            pivot = (tiny if pivot >= 0 else -tiny) if abs(pivot) < tiny else pivot
            r = 1.0 / pivot
            factor = (a if swap else below) * r
            lower[i, j] = factor
            inverse_pivot[i, j] = r
            swapped[i, j] = 1.0 if swap else 0.0
            upper1[i, j] = c if swap else u
            upper2[i, j] = next_off if swap else 0.0
            current[j] = (u - factor * c) if swap else (c - factor * u)
            above[j] = (-factor * next_off) if swap else next_off
    for j in range(k):
        a = current[j]
        a = (tiny if a >= 0 else -tiny) if abs(a) < tiny else a
        inverse_pivot[n - 1, j] = 1.0 / a


def _solve(x, lower, inverse_pivot, upper1, upper2, swapped):
    """``x <- (P L U)^-1 x`` for every lane (column) of ``x``, then each column normalised."""
    n, k = x.shape
    carry = np.empty(k)
    for j in range(k):
        carry[j] = x[0, j]
    for i in range(n - 1):
        row, following = x[i], x[i + 1]
        for j in range(k):
            here, there = carry[j], following[j]
            swap = swapped[i, j] > 0.5
            row[j] = there if swap else here
            carry[j] = (here - lower[i, j] * there) if swap else (there - lower[i, j] * here)
    after1 = np.empty(k)
    after2 = np.empty(k)
    for j in range(k):
        after2[j] = carry[j] * inverse_pivot[n - 1, j]
        x[n - 1, j] = after2[j]
    if n > 1:
        for j in range(k):
            after1[j] = (x[n - 2, j] - upper1[n - 2, j] * after2[j]) * inverse_pivot[n - 2, j]
            x[n - 2, j] = after1[j]
    for i in range(n - 3, -1, -1):
        row = x[i]
        for j in range(k):
            value = (row[j] - upper1[i, j] * after1[j] - upper2[i, j] * after2[j]) \
                * inverse_pivot[i, j]
            row[j] = value
            after2[j] = after1[j]
            after1[j] = value
    norm = np.zeros(k)
    for i in range(n):
        for j in range(k):
            norm[j] += x[i, j] * x[i, j]
    for j in range(k):
        norm[j] = 1.0 / np.sqrt(norm[j])
    for i in range(n):
        for j in range(k):
            x[i, j] *= norm[j]


def _inverse_iteration(diag, off, values, norm, start, solves):
    """(n, k): a unit eigenvector for each of ``values``."""
    n, k = diag.size, values.size
    lower = np.empty((n, k))
    inverse_pivot = np.empty((n, k))
    upper1 = np.empty((n, k))
    upper2 = np.empty((n, k))
    swapped = np.empty((n, k))
    _factor(diag, off, values, EPS * norm, lower, inverse_pivot, upper1, upper2, swapped)
    x = np.empty((n, k))
    for i in range(n):
        for j in range(k):
            x[i, j] = start[i]
    for _ in range(solves):
        _solve(x, lower, inverse_pivot, upper1, upper2, swapped)
    return x


def _rayleigh(diag, off, values, vectors, norm):
    """Each eigenvalue above SMALL |T| replaced by its unit vector's Rayleigh quotient."""
    n, k = vectors.shape
    for j in range(k):
        if values[j] < SMALL * norm:
            continue
        quotient = 0.0
        for i in range(n):
            t = diag[i] * vectors[i, j]
            if i > 0:
                t += off[i - 1] * vectors[i - 1, j]
            if i < n - 1:
                t += off[i] * vectors[i + 1, j]
            quotient += vectors[i, j] * t
        values[j] = quotient


def _residual(diag, off, values, vectors):
    """max over rows of ``|T v - lambda v|`` for each column."""
    n, k = vectors.shape
    out = np.zeros(k)
    for i in range(n):
        for j in range(k):
            r = (diag[i] - values[j]) * vectors[i, j]
            if i > 0:
                r += off[i - 1] * vectors[i - 1, j]
            if i < n - 1:
                r += off[i] * vectors[i + 1, j]
            out[j] = max(out[j], abs(r))
    return out


_count_below = compiled(_count_below)
_bisect = compiled(_bisect)
_factor = compiled(_factor)
_solve = compiled(_solve)
_inverse_iteration = compiled(_inverse_iteration)
_residual = compiled(_residual)
_rayleigh = compiled(_rayleigh)

_STARTS: dict[int, np.ndarray] = {}


def _start(n: int) -> np.ndarray:
    """A fixed start vector with no zero and no symmetry (a vector of ones is orthogonal to
    some eigenvectors of symmetric matrices)."""
    if n not in _STARTS:
        _STARTS[n] = np.random.default_rng(n).uniform(0.5, 1.5, n) \
            * np.where(np.arange(n) % 3 == 1, -1.0, 1.0)
    return _STARTS[n]


def top_pairs(diag: np.ndarray, off: np.ndarray, k: int):
    """``(values, vectors)``: the ``k`` largest eigenpairs, descending, of the symmetric
    tridiagonal matrix (``diag``, ``off``); or None when they fail the checks (then use LAPACK)
    or numba is not installed."""
    n = diag.size
    if not available() or n < 2 or not 1 <= k <= n:
        return None
    diag = np.ascontiguousarray(diag, dtype=np.float64)
    off = np.ascontiguousarray(off, dtype=np.float64)
    values, norm = _bisect(diag, off, k)
    if norm == 0 or not np.isfinite(norm):
        return None
    vectors = _inverse_iteration(diag, off, values, norm, _start(n), SOLVES)
    _rayleigh(diag, off, values, vectors, norm)
    if not np.all(np.diff(values) <= 0):    # the quotients must keep the order
        return None
    if not np.all(_residual(diag, off, values, vectors) <= RESIDUAL_TOLERANCE * norm):
        return None
    gram = vectors.T @ vectors
    gram[np.diag_indices(k)] -= 1.0
    if not np.abs(gram).max() <= ORTHOGONALITY_TOLERANCE:
        return None
    return values, vectors


def warm_up() -> None:
    """Compile (or load from numba's cache) before worker processes fork, so each does not."""
    if available():
        top_pairs(np.array([2.0, 1.0, 0.5]), np.array([0.1, 0.1]), 2)
