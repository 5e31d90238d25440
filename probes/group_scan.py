"""Finding a block's extreme entries, row by row or column by column, without sorting them.

The rows (``axis=1``) or columns (``axis=0``) of a block are cut into strided groups: entries
c, c + w, ..., c + (group - 1) w for w = length // group, so that each group's extremum is an
element-wise maximum or minimum over contiguous memory (several times faster than over
contiguous runs), and the ragged rest is one more group.  A line's entries past a limit lie
only in the groups whose extremum is past it, so only those groups are read again.  The
k-nearest-neighbour lists (`geoscreen.probes.graph.top_columns`, largest similarities) and
TwoNN's shortlist (`geoscreen.probes.dimension.two_nearest`, smallest distances) both scan
their blocks this way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GroupScan:
    """The group extrema of a block's lines and what reading the groups again needs.

    ``extrema``: (lines, groups), each the value of one entry, the ragged rest's extremum
    last; ``body``: the strided groups as a (rows, group, w) view (axis 1) or a (group, w,
    columns) view (axis 0), None when the lines are too short to group (then ``extrema`` is
    the block itself, line by line, every entry its own group); ``tail``: the ragged rest."""

    extrema: np.ndarray
    body: np.ndarray | None
    tail: np.ndarray | None
    whole: int
    axis: int
    largest: bool


def group_extrema(H: np.ndarray, axis: int, largest: bool, group: int = 16) -> GroupScan:
    """The `GroupScan` of the rows (axis 1) or columns (axis 0) of H: the maxima of their
    groups (``largest``) or their minima."""
    whole = H.shape[axis] // group
    if whole < 2:
        return GroupScan(np.ascontiguousarray(H if axis == 1 else H.T), None, None, 0, axis,
                         largest)
    if axis == 1:
        body = H[:, :whole * group].reshape(H.shape[0], group, whole)
        tail = H[:, whole * group:]
    else:
        body = H[:whole * group].reshape(group, whole, H.shape[1])
        tail = H[whole * group:]
    ext = (body.max if largest else body.min)(axis=1 if axis == 1 else 0)
    if tail.shape[axis]:
        rest = (tail.max if largest else tail.min)(axis=axis, keepdims=True)
        ext = np.concatenate([ext, rest], axis=axis)
    return GroupScan(ext if axis == 1 else np.ascontiguousarray(ext.T), body, tail, whole,
                     axis, largest)


def entries_past(scan: GroupScan, limit: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(line, position, value) of every entry at or past its line's `limit` (>= for the
    largest, <= for the smallest), found by reading again only the groups whose extremum is
    at or past it."""
    past = np.greater_equal if scan.largest else np.less_equal
    gl, gp = np.nonzero(past(scan.extrema, limit[:, None]))
    if scan.body is None:
        return gl, gp, scan.extrema[gl, gp]
    inner = gp < scan.whole  # strided groups; gp == whole is the ragged rest
    bl, bp = gl[inner], gp[inner]
    body = scan.body
    group = body.shape[1] if scan.axis == 1 else body.shape[0]
    vals = body[bl, :, bp] if scan.axis == 1 else body[:, bp, bl].T  # (groups, group)
    gi, gj = np.nonzero(past(vals, limit[bl, None]))  # (group read again, place in it)
    line, pos, value = bl[gi], bp[gi] + scan.whole * gj, vals[gi, gj]
    rest = gl[~inner]
    if rest.size:
        T = scan.tail[rest] if scan.axis == 1 else scan.tail[:, rest].T  # (lines, rest)
        tr, tc = np.nonzero(past(T, limit[rest, None]))
        line = np.concatenate([line, rest[tr]])
        pos = np.concatenate([pos, tc + scan.whole * group])
        value = np.concatenate([value, T[tr, tc]])
    return line, pos, value
