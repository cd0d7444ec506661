"""The segment-source protocol and the two sources that need no server."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from igwn_segments import segment, segmentlist

from idq_common.exceptions import SegmentQueryError


@runtime_checkable
class SegmentSource(Protocol):
    """Anything that can say where the analysis flag is active."""

    def query(self, start: float, end: float) -> segmentlist:
        """Active segments in ``[start, end)``, coalesced and clipped to it.

        Raises
        ------
        SegmentQueryError
            The source could not answer (server down, bad answer).
        BadSpanError
            The source does not know the span yet (e.g. the topic has not reached it).
        """
        ...


def clip(segs: Iterable[Sequence[float]], start: float, end: float) -> segmentlist:
    """Coalesce ``segs`` and intersect them with ``[start, end)``."""
    out = segmentlist(segment(float(s), float(e)) for s, e in segs if e > s).coalesce()
    if end <= start:
        return segmentlist()
    return out & segmentlist([segment(float(start), float(end))])


class AllTime:
    """No segment source configured: every time is analysable."""

    def query(self, start: float, end: float) -> segmentlist:
        return clip([(start, end)], start, end)

    def __repr__(self) -> str:
        return "AllTime()"


class StaticSegments:
    """A fixed segment list, given directly or read from a two-column text file.

    Parameters
    ----------
    segs : iterable of (start, end)
        The active segments (any order, may overlap).
    """

    def __init__(self, segs: Iterable[Sequence[float]]) -> None:
        self.segs = clip(segs, float("-inf"), float("inf"))

    @classmethod
    def from_file(cls, path: str | Path) -> StaticSegments:
        """Read ``start end`` per line (``#`` comments and blank lines ignored).

        Raises
        ------
        SegmentQueryError
            The file is missing or a line is not two numbers with end >= start.
        """
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise SegmentQueryError(f"cannot read segment file {path}: {exc}") from exc
        rows: list[tuple[float, float]] = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.replace(",", " ").split()
            try:
                if len(parts) != 2:
                    raise ValueError(f"expected 2 columns, got {len(parts)}")
                s, e = float(parts[0]), float(parts[1])
                if e < s:
                    raise ValueError(f"end {e} < start {s}")
            except ValueError as exc:
                raise SegmentQueryError(
                    f"{path}:{lineno}: bad segment line {line!r}: {exc}"
                ) from exc
            rows.append((s, e))
        return cls(rows)

    def query(self, start: float, end: float) -> segmentlist:
        return clip(self.segs, start, end)

    def __repr__(self) -> str:
        return f"StaticSegments({len(self.segs)} segments)"
