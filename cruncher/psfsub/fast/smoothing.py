"""pyKLIP's smoothing of each section before it ranks references, done once per nest of boxes.

pyKLIP smooths every frame's section *box* (``gaussian_filter``, reflected at the box's edges,
NaNs spreading over the kernel's support) and keeps the section's pixels. The boxes of sections
nest: the annuli of one subsection share the corner at the star, so each box lies inside the
outermost one and shares two of its edges. A pixel farther than the kernel's radius from every
edge its box does *not* share with the enclosing box sees the same pixels, reflected the same
way, in both boxes, so the enclosing box's smoothing gives it bit for bit. Only the pixels near
the other edges need their own box, and for them a strip two radii deep along that edge is
enough. At the standard size this smooths about half the pixels that smoothing every box does.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np

from cruncher.psfsub.fast import gaussian
from cruncher.psfsub.fast.sections import Section, copy_columns, runs
from cruncher.xp import ndimage_module

#: Frames smoothed at a time: bounds the temporary box stacks.
SMOOTH_CHUNK = 128
#: scipy's default ``truncate`` of ``gaussian_filter``, which pyKLIP uses.
TRUNCATE = gaussian.TRUNCATE
#: The Gaussian's sigma (pixels): pyKLIP smooths with 1 whatever ``corr_smooth`` is (> 0).
SIGMA = 1.0

Box = tuple[int, int, int, int]      # ymin, ymax, xmin, xmax (inclusive)


@dataclass(frozen=True)
class Piece:
    """Pixels of a section smoothed within ``box``: positions in the section (``into``) and flat
    indices in the box (``take``)."""

    box: Box
    into: np.ndarray
    take: np.ndarray


@dataclass(frozen=True)
class Plan:
    """How to smooth one section: ``shared`` takes pixels from the smoothing of ``parent`` (an
    enclosing box), ``own`` are strips of the section's own box."""

    parent: Box
    shared: Piece | None
    own: tuple[Piece, ...]


def radius(sigma: float, truncate: float = TRUNCATE) -> int:
    """The kernel's half-width in pixels, as scipy computes it."""
    return int(truncate * float(sigma) + 0.5)


def _contains(outer: Box, inner: Box) -> bool:
    return outer[0] <= inner[0] and outer[1] >= inner[1] and outer[2] <= inner[2] \
        and outer[3] >= inner[3]


def _area(box: Box) -> int:
    return (box[1] - box[0] + 1) * (box[3] - box[2] + 1)


def _flat(ys, xs, box: Box) -> np.ndarray:
    return (ys - box[0]) * (box[3] - box[2] + 1) + (xs - box[2])


def plan_section(section: Section, boxes: list[Box], r: int) -> Plan:
    """The :class:`Plan` of ``section`` given every section's box and the kernel radius ``r``."""
    box = section.box
    parent = max((b for b in boxes if _contains(b, box)), key=_area)
    ys, xs = np.divmod(section.pixels, section.width)
    y0, y1, x0, x1 = box
    # for each edge the parent does not share: the strip along it and the pixels it must give
    edges = [(y0 != parent[0], ys - y0 < r, (y0, min(y1, y0 + 2 * r - 1), x0, x1)),
             (y1 != parent[1], y1 - ys < r, (max(y0, y1 - 2 * r + 1), y1, x0, x1)),
             (x0 != parent[2], xs - x0 < r, (y0, y1, x0, min(x1, x0 + 2 * r - 1))),
             (x1 != parent[3], x1 - xs < r, (y0, y1, max(x0, x1 - 2 * r + 1), x1))]
    edges = [(near, strip) for differs, near, strip in edges if differs]
    if sum(_area(strip) for _, strip in edges) >= _area(box):
        # strips would cost more than the box itself
        edges, parent = [], box
    left = np.ones(section.pixels.size, bool)
    own = []
    for near, strip in edges:
        mine = np.flatnonzero(near & left)
        left[mine] = False
        if mine.size:
            own.append(Piece(strip, mine, _flat(ys[mine], xs[mine], strip)))
    rest = np.flatnonzero(left)
    shared = Piece(parent, rest, _flat(ys[rest], xs[rest], parent)) if rest.size else None
    return Plan(parent, shared, tuple(own))


class Smoother:
    """Smoothed section pixels of every frame, as pyKLIP computes them for its ranking.

    Ask for sections grouped by :attr:`Plan.parent` (:meth:`order`): the first section of a
    parent box has the box smoothed once and its pixels, with those of the strips of every
    section that takes from it, written straight into one block; each section's array is a view
    of that block, which is let go when the next parent is needed.
    """

    def __init__(self, aligned, parts: list[Section], xp: ModuleType = np, sigma: float = SIGMA):
        self.aligned, self.parts, self.sigma, self.xp = aligned, parts, float(sigma), xp
        boxes = [s.box for s in parts]
        self.plans = [plan_section(s, boxes, radius(sigma)) for s in parts]
        # each section's columns in its parent's block
        self._members: dict[Box, list[int]] = {}
        self._start: dict[int, int] = {}
        self._width: dict[Box, int] = {}
        for index in self.order():
            parent = self.plans[index].parent
            self._members.setdefault(parent, []).append(index)
            self._start[index] = self._width.get(parent, 0)
            self._width[parent] = self._start[index] + parts[index].pixels.size
        self._block: tuple[Box, object] | None = None

    def order(self) -> list[int]:
        """Section indices grouped by parent box (each parent is smoothed once)."""
        return sorted(range(len(self.plans)), key=lambda i: self.plans[i].parent)

    def section(self, index: int):
        """(F, p), of the frames' dtype (scipy's output dtype): the section's smoothed pixels,
        NaN -> 0 (a view of its parent's block)."""
        block = self._nest(self.plans[index].parent)
        start = self._start[index]
        return block[:, start:start + self.parts[index].pixels.size]

    def _nest(self, parent: Box):
        """(F, n): the smoothed pixels of every section of ``parent``, side by side."""
        if self._block is None or self._block[0] != parent:
            self._block = None      # release the previous parent first
            members = self._members[parent]
            block = self.xp.empty((len(self.aligned), self._width[parent]), self.aligned.dtype)
            shared = [i for i in members if self.plans[i].shared is not None]
            if shared:
                take = np.concatenate([self.plans[i].shared.take for i in shared])
                into = np.concatenate([self._start[i] + self.plans[i].shared.into
                                       for i in shared])
                self._smooth_into(block, parent, take, into)
            for index in members:
                for piece in self.plans[index].own:
                    self._smooth_into(block, piece.box, piece.take, self._start[index] + piece.into)
            if not self._compiled():        # the compiled smoothing has zeroed them
                block[self.xp.isnan(block)] = 0
            self._block = (parent, block)
        return self._block[1]

    def _compiled(self) -> bool:
        return self.xp is np and gaussian.available() and self.aligned.dtype == np.float32

    def _smooth_into(self, out, box: Box, take: np.ndarray, into: np.ndarray) -> None:
        """``out[:, into]``: every frame's box smoothed as pyKLIP does, at flat box pixels
        ``take``."""
        if self._compiled():
            gaussian.smooth_into(out, self.aligned, box, self.sigma, take, into)
            return
        y0, y1, x0, x1 = box
        column_runs = runs(take, into)
        smooth = ndimage_module(self.xp).gaussian_filter
        for lo in range(0, len(self.aligned), SMOOTH_CHUNK):
            boxes = smooth(self.aligned[lo:lo + SMOOTH_CHUNK, y0:y1 + 1, x0:x1 + 1],
                           (0, self.sigma, self.sigma))
            copy_columns(out[lo:lo + SMOOTH_CHUNK], boxes.reshape(len(boxes), -1), column_runs)
