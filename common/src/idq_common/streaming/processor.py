"""The stream processor: due strides -> an umbrella of data with its segments and gaps.

:class:`StreamProcessor` closes the loose ends the seed admitted ("padding logic is
not actually implemented", "flush everything because we're ignoring edge effects"):

* **Padding.** The returned umbrella holds ``pad`` seconds of data on both sides of
  the polled strides: history kept from the previous poll on the left, look-ahead on
  the right. The look-ahead is read only once the cadence says the stride is due,
  at ``end + delay``, so ``delay >= pad`` is required (checked at construction).
  Data is fetched in contiguous chunks ``[F, end + pad)`` (``F``: fetched so far),
  never twice, so a feature near a stride edge sees exactly the triggers a one-batch
  computation would see.
* **Gaps.** A chunk the source cannot deliver (:class:`NoDataError`,
  :class:`BadSpanError`, :class:`IncompleteDataError`) or whose segments cannot be
  queried is *bad*: outputs within ``pad`` of it would be wrong, so that part of the
  strides is left out of :attr:`StreamBatch.segs` and reported in
  :attr:`StreamBatch.gaps` with the reason. When the cadence falls too far behind
  (:class:`MaxIterError`) the processor skips ahead and reports the skipped span
  as a gap. Nothing is lost silently.
* **Segments** are queried once per buffer (:meth:`new_buffer`, as in the seed) over
  everything due, and extended only if the clock moved on while polling.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from igwn_segments import segment, segmentlist

from idq_common.data.base import InMemoryData
from idq_common.data.triggers import TriggerSet
from idq_common.data.umbrella import Umbrella
from idq_common.exceptions import (
    BadSpanError,
    ConfigError,
    IncompleteDataError,
    MaxIterError,
    NoDataError,
    SegmentQueryError,
)
from idq_common.streaming.cadence import CadenceManager, Span
from idq_common.streaming.segments.base import SegmentSource

log = logging.getLogger(__name__)

# log templates, so every stride reads the same way in the logs (the seed cared)
_STRIDE = (
    "stream: stride [%s, %s) #%d of this poll: data [%s, %s) %d triggers, livetime %.3f/%.3f s"
)
#: the gap reason of strides whose analysis segments could not be had
SEGMENTS_UNAVAILABLE = "segments unavailable"
_GAP = "stream: gap [%s, %s) (%.3f s): %s"


class SpanSource(Protocol):
    """A feature source that can deliver every trigger of a GPS span."""

    def fetch(self, start: float, end: float) -> TriggerSet:
        """All triggers with time in ``[start, end)``.

        Raises
        ------
        NoDataError
            Nothing for the span.
        BadSpanError
            The span cannot be delivered (not yet available, or incomplete:
            :class:`IncompleteDataError`).
        """
        ...


class FunctionSource:
    """A :class:`SpanSource` from a callable ``(start, end) -> TriggerSet``.

    E.g. ``FunctionSource(model.generate)`` for a synthetic model, whose output does
    not depend on how the time is chunked.
    """

    def __init__(self, fn: Callable[[float, float], TriggerSet]) -> None:
        self.fn = fn

    def fetch(self, start: float, end: float) -> TriggerSet:
        return self.fn(start, end)

    def seek(self, gps: float) -> None:
        """Nothing to do: a function serves any span, in any order."""


@dataclass(frozen=True)
class Gap:
    """A span with no valid output, and why."""

    start: float
    end: float
    reason: str

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class StreamBatch:
    """What one :meth:`StreamProcessor.poll` returns.

    Attributes
    ----------
    umbrella : Umbrella
        Data over the strides plus ``pad`` on both sides (and any retained
        history); its ``segs`` are the analysis segments where data is present.
    segs : segmentlist
        Where outputs are valid inside the polled strides: analysis segments, minus
        everything within ``pad`` of missing data. Draw sample times here.
    gaps : list of Gap
        Spans of the strides (or skipped spans) with no valid output.
    strides : list of (start, end)
        The strides processed, in order (kept separate, e.g. one frame each).
    """

    umbrella: Umbrella
    segs: segmentlist
    gaps: list[Gap] = field(default_factory=list)
    strides: list[Span] = field(default_factory=list)

    @property
    def livetime(self) -> float:
        return float(abs(self.segs))

    @property
    def span(self) -> Span | None:
        """``(first stride start, last stride end)`` or None when nothing was due."""
        return (self.strides[0][0], self.strides[-1][1]) if self.strides else None


class StreamProcessor:
    """Poll due strides from a source into an umbrella, with segments and gaps.

    Parameters
    ----------
    cadence : CadenceManager
        Which strides are due; its ``delay`` must be >= ``pad``.
    source : SpanSource
        Where triggers come from (``fetch(start, end)``).
    segment_source : SegmentSource
        Analysis segments (``AllTime()`` for none).
    pad : float
        Seconds of data kept on both sides of the strides; at least the feature
        window, so features near stride edges match a one-batch computation.
    retain : int
        Previous buffers (polls) kept in the umbrella when a new one starts; the
        ``pad`` of history needed for correctness is always kept regardless.
    max_strides : int, optional
        Cap on the strides of one poll; a stage catching up then works in bounded
        batches instead of one batch as long as the backlog.
    max_rows : int, optional
        Cap on the trigger rows read by one poll: no further stride is added once the
        poll's chunks hold this many (a poll has at least one stride). Memory then
        follows rows, not seconds: 64 s at 3,000 channels is ~3 M rows, held a few
        times over (chunks, umbrella, time-sorted copy). Outputs do not depend on
        poll grouping (every stage works stride by stride), so this is a memory bound only.
    """

    def __init__(
        self,
        cadence: CadenceManager,
        source: SpanSource,
        segment_source: SegmentSource,
        pad: float,
        retain: int = 0,
        max_strides: int | None = None,
        max_rows: int | None = None,
    ) -> None:
        if pad < 0:
            raise ConfigError("pad", f"must be >= 0, got {pad}")
        if cadence.delay < pad:
            raise ConfigError(
                "stream.delay",
                f"the cadence delay ({cadence.delay} s) must be >= pad ({pad} s): the "
                "look-ahead after a stride is only complete that long after it ends",
            )
        if retain < 0:
            raise ConfigError("retain", f"must be >= 0, got {retain}")
        self.cadence = cadence
        self.source = source
        self.segment_source = segment_source
        self.pad = float(pad)
        self.retain = retain
        #: at most this many strides per poll (bounds a catching-up batch's memory)
        self.max_strides = max_strides
        #: stop adding strides to a poll once it read this many rows
        self.max_rows = max_rows
        self._chunks: deque[InMemoryData] = deque()
        self._fetched_to: float | None = None
        self._buffers: deque[Span] = deque()  # strides span of each poll
        self._bad: list[tuple[segment, str]] = []  # chunks we could not use, and why
        self._seg_known = segmentlist()  # spans queried successfully
        self._seg_active = segmentlist()
        self._seg_failed = segmentlist()  # spans whose query failed in this buffer

    # -- properties (the seed exposed the cadence's) -----------------------------------
    @property
    def timestamp(self) -> float:
        return self.cadence.timestamp

    @property
    def stride(self) -> float:
        return self.cadence.stride

    @property
    def delay(self) -> float:
        return self.cadence.delay

    @property
    def finished(self) -> bool:
        return self.cadence.finished

    def umbrella(self) -> Umbrella:
        """The data currently held, as one umbrella."""
        return Umbrella(list(self._chunks))

    # -- buffers ---------------------------------------------------------------------
    def new_buffer(self, until: float | None = None) -> None:
        """Start a buffer: drop old ones beyond ``retain``, query segments once for all
        that is due (up to ``until``, default what is due now)."""
        self.flush(self.retain)
        self._seg_failed = segmentlist()  # a new buffer may retry a failed server
        start = self.cadence.timestamp - self.pad
        end = (self.cadence.latest_due_end() if until is None else until) + self.pad
        if end > start:
            self._query_segments(start, end)
        # spans whose segments were unknown at the last poll and are known now count
        # from now on (a look-ahead the server did not know yet is not a gap forever)
        bad: list[tuple[segment, str]] = []
        for seg, reason in self._bad:
            rest = [seg] if reason != SEGMENTS_UNAVAILABLE else segmentlist([seg]) - self._seg_known
            bad += [(r, reason) for r in rest]
        self._bad = bad

    def flush(self, retain: int | None = None) -> None:
        """Drop data of all but the ``retain`` most recent buffers (default: ``self.retain``).

        The last ``pad`` seconds of history (and the look-ahead already read) are
        always kept: the next stride's features need them.
        """
        retain = self.retain if retain is None else retain
        while len(self._buffers) > retain:
            self._buffers.popleft()
        if self._fetched_to is None:
            return
        keep_from = self._buffers[0][0] if self._buffers else self.cadence.timestamp
        keep_from -= self.pad
        while self._chunks and self._chunks[0].end <= keep_from:
            self._chunks.popleft()
        if self._chunks and self._chunks[0].start < keep_from:
            old = self._chunks.popleft()
            self._chunks.appendleft(_trim(old, keep_from))
        self._bad = [(s, r) for s, r in self._bad if s[1] > keep_from - self.pad]
        cut = segmentlist([segment(keep_from - self.pad, float("inf"))])
        self._seg_known &= cut
        self._seg_active &= cut

    # -- segments --------------------------------------------------------------------
    def _query_segments(self, start: float, end: float) -> None:
        todo = segmentlist([segment(start, end)]) - self._seg_known - self._seg_failed
        if not todo:
            return
        lo, hi = todo.extent()
        span = segmentlist([segment(lo, hi)])
        # a source that can say what it does not know yet (DQSegDB) is cached only where
        # it knows: the rest is asked again on the next poll, never taken as inactive
        query_known = getattr(self.segment_source, "query_known", None)
        try:
            if query_known is not None:
                known, active = query_known(lo, hi)
            else:
                known, active = span, self.segment_source.query(lo, hi)
        except (SegmentQueryError, BadSpanError) as exc:
            log.warning("stream: segments for [%s, %s) unavailable: %s", lo, hi, exc)
            self._seg_failed |= span
            return
        unknown = span - segmentlist(known)
        if abs(unknown):
            log.warning("stream: segments over %s not known yet: asked again later", unknown)
            self._seg_failed |= unknown
        log.info(
            "stream: segments [%s, %s) from %r: %.3f s active",
            lo,
            hi,
            self.segment_source,
            abs(active),
        )
        self._seg_known |= span - unknown
        self._seg_active |= segmentlist(active) - unknown
        self._seg_known.coalesce()
        self._seg_active.coalesce()

    def _segments(self, start: float, end: float) -> tuple[segmentlist, segmentlist]:
        """(active, unknown) over ``[start, end)``, querying what is not known yet."""
        self._query_segments(start, end)
        span = segmentlist([segment(start, end)])
        return self._seg_active & span, span - self._seg_known

    # -- fetching ----------------------------------------------------------------------
    def _fetch(self, start: float, end: float) -> InMemoryData:
        """Read ``[start, end)`` into a chunk; record what could not be read as bad."""
        active, unknown = self._segments(start, end)
        for seg in unknown:
            self._bad.append((seg, SEGMENTS_UNAVAILABLE))
        try:
            trig = self.source.fetch(start, end)
        except (NoDataError, BadSpanError) as exc:
            kind = "incomplete data" if isinstance(exc, IncompleteDataError) else "no data"
            log.warning("stream: data [%s, %s) unusable (%s): %s", start, end, kind, exc)
            self._bad.append((segment(start, end), f"{kind}: {exc}"))
            return InMemoryData(TriggerSet.empty(), start, end, segmentlist())
        return InMemoryData(trig, start, end, active - unknown)

    def _advance_to(self, stride: Span) -> InMemoryData:
        s, e = stride
        if self._fetched_to is None or abs(self._fetched_to - (s + self.pad)) > 1e-9:
            if self._fetched_to is not None:
                log.info(
                    "stream: discontinuity at %s (data read to %s); dropping history",
                    s,
                    self._fetched_to,
                )
            self._chunks.clear()
            self._bad.clear()
            self._fetched_to = s - self.pad
        chunk = self._fetch(self._fetched_to, e + self.pad)
        self._chunks.append(chunk)
        self._fetched_to = e + self.pad
        return chunk

    def _valid(self, strides: Iterable[Span]) -> tuple[segmentlist, list[Gap]]:
        """Valid output segments of ``strides`` and the gaps, from the bad chunks."""
        segs = segmentlist()
        gaps: list[Gap] = []
        for s, e in strides:
            span = segmentlist([segment(s, e)])
            stride_ok = self._seg_active & span
            for bad, reason in self._bad:
                # outputs within pad of missing data would be wrong: widen by pad (not
                # for unknown segments: they gate outputs at their own times only)
                w = 0.0 if reason == SEGMENTS_UNAVAILABLE else self.pad
                lost = span & segmentlist([segment(bad[0] - w, bad[1] + w)])
                for g in lost:
                    gaps.append(Gap(float(g[0]), float(g[1]), reason))
                stride_ok -= lost
            segs |= stride_ok
        return segs.coalesce(), _merge(gaps)

    # -- polling -----------------------------------------------------------------------
    def poll(self) -> StreamBatch:
        """Process every due stride into one batch (may hold no strides if none is due).

        Returns
        -------
        StreamBatch
            Umbrella with ``pad`` of data on both sides, valid segments, gaps
            (missing data, unavailable segments, skipped spans) and the strides.
        """
        # the strides due *now*: in live mode fetching a stride can take as long as a
        # stride (data arriving in real time, a slow segment server), and a poll that
        # took every stride that became due meanwhile never ended: no output for a
        # whole max_strides batch. Fixed before the segment query: strides that became
        # due while a slow or failing server was asked (7 s of retries) were queried
        # one by one in the same poll -- each as slow -- and nothing was written meanwhile
        limit = self.cadence.latest_due_end()
        self.new_buffer(limit)
        strides: list[Span] = []
        skipped: list[Gap] = []
        rows = 0
        while True:
            try:
                for stride in self.cadence.poll():
                    chunk = self._advance_to(stride)
                    strides.append(stride)
                    ok = self._seg_active & segmentlist([segment(*stride)])
                    log.info(
                        _STRIDE,
                        stride[0],
                        stride[1],
                        len(strides),
                        chunk.start,
                        chunk.end,
                        len(chunk.triggers()),
                        abs(ok),
                        stride[1] - stride[0],
                    )
                    rows += len(chunk.triggers())
                    if self.max_strides is not None and len(strides) >= self.max_strides:
                        break  # the cadence resumes at the next stride on the next poll
                    if self.max_rows is not None and rows >= self.max_rows:
                        break
                    if stride[1] >= limit:
                        break
                break
            except MaxIterError as exc:
                span = self.cadence.skip_ahead()
                log.warning("stream: %s", exc)
                skipped.append(Gap(span[0], span[1], "behind real time: skipped ahead"))
        if strides:
            self._buffers.append((strides[0][0], strides[-1][1]))
        segs, gaps = self._valid(strides)
        gaps = sorted(gaps + skipped, key=lambda g: g.start)
        for g in gaps:
            log.warning(_GAP, g.start, g.end, g.duration, g.reason)
        if strides:
            log.info(
                "stream: polled %d strides [%s, %s): livetime %.3f s, %d gaps; umbrella [%s, %s)",
                len(strides),
                strides[0][0],
                strides[-1][1],
                abs(segs),
                len(gaps),
                self._chunks[0].start if self._chunks else None,
                self._fetched_to,
            )
        return StreamBatch(umbrella=self.umbrella(), segs=segs, gaps=gaps, strides=strides)


def _trim(chunk: InMemoryData, start: float) -> InMemoryData:
    """The part of ``chunk`` from ``start`` on."""
    trig = chunk.triggers().select_time(start, chunk.end)
    return InMemoryData(
        trig, start, chunk.end, chunk.segs & segmentlist([segment(start, chunk.end)])
    )


def _merge(gaps: list[Gap]) -> list[Gap]:
    """Coalesce touching gaps with the same reason."""
    out: list[Gap] = []
    for g in sorted(gaps, key=lambda g: (g.reason, g.start)):
        if out and out[-1].reason == g.reason and g.start <= out[-1].end:
            last = out.pop()
            out.append(Gap(last.start, max(last.end, g.end), g.reason))
        else:
            out.append(g)
    return sorted(out, key=lambda g: g.start)
