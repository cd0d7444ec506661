"""The umbrella: a time-ordered collection of data chunks acting as one source.

Stream stages append each new stride's data on the right (:meth:`Umbrella.extend_child`)
and strip old chunks from the left (:meth:`Umbrella.strip_child`); the umbrella's span
and segments follow. The method names are those of iDQ's ``UmbrellaClassifierData``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from igwn_segments import segment, segmentlist

from idq_common.data.base import ClassifierData, clip_segs
from idq_common.data.triggers import TriggerSet

__all__ = ["Umbrella"]


class Umbrella(ClassifierData):
    """Children :class:`ClassifierData` in time order, seen as one source.

    Parameters
    ----------
    children : iterable of ClassifierData, optional
        Time-ordered chunks. Children should not overlap in time (their triggers are
        concatenated, so overlap would duplicate rows).
    start, end : float, optional
        Span; default from the children (``0, 0`` when there are none).
    segs : segmentlist, optional
        Segments; default the union of the children's segments.
    channels : iterable of str, optional
        Channels to keep; default all of the children's.
    """

    def __init__(
        self,
        children: Iterable[ClassifierData] = (),
        start: float | None = None,
        end: float | None = None,
        segs: Iterable | None = None,
        channels: Iterable[str] | None = None,
    ) -> None:
        kids = deque(children)
        if start is None:
            start = min((c.start for c in kids), default=0.0)
        if end is None:
            end = max((c.end for c in kids), default=start)
        if segs is None:
            segs = segmentlist()
            for c in kids:
                segs |= c.segs
        super().__init__(start, end, segs, channels)
        self._children: deque[ClassifierData] = kids

    # -- children -------------------------------------------------------------------
    @property
    def children(self) -> tuple[ClassifierData, ...]:
        return tuple(self._children)

    def __len__(self) -> int:
        return len(self._children)

    @property
    def all_channels(self) -> tuple[str, ...]:
        """Union of the children's channels, in order of first appearance."""
        seen: dict[str, None] = {}
        for c in self._children:
            for n in c.channels:
                seen.setdefault(n, None)
        return tuple(seen)

    @property
    def columns(self) -> tuple[str, ...]:
        """Columns every child has (in the first child's order)."""
        if not self._children:
            return super().columns
        common = set.intersection(*(set(c.columns) for c in self._children))
        return tuple(c for c in self._children[0].columns if c in common)

    @property
    def all_columns(self) -> tuple[str, ...]:
        """Columns any child has, in order of first appearance."""
        seen: dict[str, None] = {}
        for c in self._children:
            for n in c.columns:
                seen.setdefault(n, None)
        return tuple(seen) if seen else super().columns

    def _cover(self, child: ClassifierData) -> None:
        # Grow the span and segments to include a new child.
        if not self._children and abs(self._segs) == 0 and self._start == self._end:
            self._start, self._end = child.start, child.end
        self._start = min(self._start, child.start)
        self._end = max(self._end, child.end)
        self._segs = clip_segs(self._segs | child.segs, self._start, self._end)
        self.invalidate()

    def append_children(self, *children: ClassifierData) -> None:
        """Add children on the right (no order check), growing span and segments."""
        for c in children:
            self._cover(c)  # before adding: an empty umbrella takes the child's span
            self._children.append(c)

    def appendleft_children(self, *children: ClassifierData) -> None:
        """Add children on the left, each becoming the new oldest child."""
        for c in children:
            self._cover(c)
            self._children.appendleft(c)

    def extend_child(self, child: ClassifierData) -> None:
        """Add the newest child on the right, bumping ``end`` and ``segs``.

        Raises
        ------
        ValueError
            If the child starts before the current newest child (not time-ordered).
        """
        if self._children and child.start < self._children[-1].start:
            raise ValueError(
                f"child starting at {child.start} is older than the newest child "
                f"({self._children[-1].start}); umbrellas are time-ordered"
            )
        self.append_children(child)

    def extend_children(self, children: Iterable[ClassifierData]) -> None:
        """:meth:`extend_child` for each child in turn."""
        for c in children:
            self.extend_child(c)

    def strip_child(self) -> ClassifierData:
        """Remove and return the oldest child, shrinking ``start`` and ``segs``.

        Raises
        ------
        IndexError
            If the umbrella has no children.
        """
        old = self._children.popleft()
        self._start = self._children[0].start if self._children else self._end
        self._segs = clip_segs(self._segs, self._start, self._end)
        self.invalidate()
        return old

    def restrict_segments(self, segs: Iterable) -> None:
        """Restrict every child's segments and the umbrella's own."""
        segs = segmentlist(segs).coalesce()
        for c in self._children:
            c.restrict_segments(segs)
        super().restrict_segments(segs)

    # -- triggers -------------------------------------------------------------------
    def _read(self) -> TriggerSet:
        if not self._children:
            return TriggerSet.empty(self._channels or ())
        return TriggerSet.concat(c.triggers() for c in self._children)

    def span(self) -> segment:
        return segment(self._start, self._end)
