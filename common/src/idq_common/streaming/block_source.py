"""Read only one replica's blocks of a block-partitioned features topic: :class:`BlockFeatureSource`.

With ``[kafka] partitioner = "block"`` the data of second ``s`` lives in partition
``floor(s / B) % P`` (``B`` = ``[kafka] block_seconds``) and a shared stage's replica
does the strides of the blocks of the partitions it holds
(:class:`~idq_common.streaming.checkpoint.Checkpoint` with ``block_strides``). It needs
the data of those blocks plus ``pad`` seconds on each side, which lie in the
neighbouring blocks' partitions. This source reads exactly that (docs/SCALE_OUT.md):

* **Needed ranges.** Per block ``c`` the part of ``[c B, (c + 1) B)`` within ``pad`` of
  an owned block (the whole block if owned; its head and/or tail otherwise; nothing for
  a block far from every owned one). Each range is one *read*: the block's partition
  alone, sought by time to one batch before the range, consumed until every known
  source is complete over the range. Messages that start at or after the range's end
  (a later block of the same partition) are skipped by their timestamp, undecoded.
* **Completeness** per read is the :class:`~idq_common.streaming.kafka_source.
  KafkaFeatureSource` rule: per source the run of consecutive ``seq`` from an anchor
  batch starting at or before the range start (a source's batches of one block are
  consecutive and in one partition), complete where every known source's run reaches.
* **fetch(start, end)** returns the triggers of the needed ranges inside ``[start,
  end)`` -- outside them nothing, since no stride of this replica looks there -- and
  raises :class:`IncompleteDataError` / :class:`NoDataError` after ``idle_timeout``
  without data, like the other source.
* **Watermark** (the replay clock): the start of the first needed range not read
  yet; it jumps over other replicas' blocks, whose strides this replica only skips.

Ownership can change (a rebalance): the needed ranges are recomputed from ``owned()``
on every call, and a range not read yet is read when a fetch needs it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from confluent_kafka import (
    Consumer,
    KafkaException,
    Message,
    TopicPartition,
)
from igwn_segments import segment, segmentlist

from idq_common.data.triggers import TriggerSet
from idq_common.exceptions import BrokerError, IncompleteDataError, NoDataError, StopRequested
from idq_common.gpstime import gps_to_kafka_ms
from idq_common.io.kafka.clients import consume_queued, partitions_of
from idq_common.io.publish import block_of
from idq_common.streaming.kafka_source import DeadLetter, _SourceRun, decode_message, is_data

log = logging.getLogger(__name__)


@dataclass
class _Read:
    """One needed range ``[x, y)`` of block ``block``, read from ``partition``."""

    block: int
    partition: int
    x: float
    y: float
    runs: dict[str, _SourceRun] = field(default_factory=dict)

    def progress(self, known: set[str]) -> float:
        """How far every known source is complete in the range (``x``: not yet begun)."""
        if not known:
            return self.x
        ends = []
        for src in known:
            run = self.runs.get(src)
            if run is None or run.end is None:
                return self.x
            ends.append(run.end)
        return min(max(self.x, min(ends)), self.y)

    def triggers(self, start: float, end: float) -> list[TriggerSet]:
        return [
            b.triggers
            for r in self.runs.values()
            for b in r.batches
            if b.end > start and b.start < end and len(b.triggers)
        ]


def needed_ranges(
    block: int,
    owned: set[int],
    partitions: int,
    block_seconds: float,
    pad: float,
    done: Mapping[int, float] | None = None,
) -> list[tuple[float, float]]:
    """The parts of block ``block`` a replica holding ``owned`` partitions must read.

    Everything within ``pad`` of a block of an owned partition (block ``b`` is in
    partition ``b % partitions``), clipped to the block. ``done``: committed progress
    per partition; an owned block that ends by then is done (nothing to read for it).
    """
    done = done or {}
    span = segmentlist([segment(block * block_seconds, (block + 1) * block_seconds)])
    reach = math.ceil(pad / block_seconds) + 1
    near = segmentlist(
        segment(b * block_seconds - pad, (b + 1) * block_seconds + pad)
        for b in range(block - reach, block + reach + 1)
        if b % partitions in owned and (b + 1) * block_seconds > done.get(b % partitions, -math.inf)
    ).coalesce()
    return [(float(s[0]), float(s[1])) for s in near & span if s[1] > s[0]]


class BlockFeatureSource:
    """Serve ``fetch(start, end)`` from the blocks one replica needs (see the module).

    Parameters
    ----------
    consumer : confluent_kafka.Consumer
        Partitions are assigned manually, one at a time; the group id only names the client.
    topic : str
        The block-partitioned features topic.
    owned : callable
        The partitions this replica holds now (the checkpoint's ``owned``).
    block_seconds : float
        ``[kafka] block_seconds``.
    pad : float
        Seconds of data a stride needs on each side (the stage's pad).
    start : float, optional
        GPS time the replay clock starts from.
    seek_pad : float
        A read starts this many seconds before its range: at least one batch length,
        so the batch holding the range start (the anchor) is read.
    idle_timeout : float
        Real seconds without any message after which an incomplete range is given up.
    dead_letter : callable, optional
        Receives unusable messages with reason and origin; they are then skipped.
    monotonic : callable
        Real-time clock (injectable).
    """

    def __init__(
        self,
        consumer: Consumer,
        topic: str,
        owned: Callable[[], set[int]],
        block_seconds: float,
        pad: float,
        start: float | None = None,
        seek_pad: float = 1.0,
        idle_timeout: float = 10.0,
        dead_letter: DeadLetter | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer = consumer
        self.topic = topic
        self.owned = owned
        self.block_seconds = float(block_seconds)
        self.pad = float(pad)
        self.seek_pad = seek_pad
        self.idle_timeout = idle_timeout
        self.dead_letter = dead_letter
        self._monotonic = monotonic
        self.partitions = len(partitions_of(consumer, topic))
        self._frontier: float | None = start
        #: the watermark shown to the replay clock: the frontier, held back inside a run
        #: of adjacent ranges that borders a pad (see :meth:`_held`)
        self._shown: float | None = start
        self._reads: dict[tuple[float, float], _Read] = {}
        self._active: _Read | None = None  # the read whose partition is assigned
        self._known: set[str] = set()
        #: channel table of the last batch decoded: what a span with nothing to read
        #: returns its empty set over (see :meth:`fetch`)
        self._channels: tuple[str, ...] = ()
        self.dead_lettered = 0
        self.consumed = 0
        self.skipped = 0  # read past a range's end, not decoded
        self.seeks = 0
        #: polled while waiting for a range: True abandons the wait (a stop was requested)
        self.should_stop: Callable[[], bool] = lambda: False
        #: called with the partition of every feature batch decoded (a metric)
        self.on_batch: Callable[[int], None] = lambda partition: None
        #: committed progress per partition (a taken-over partition's strides before it
        #: are done: not read again); the stage sets the checkpoint's
        self.done: Callable[[], Mapping[int, float]] = dict
        #: waits ``seconds`` while this replica holds no partition: the stage sets the
        #: group membership's poll, so an assignment arriving in a rebalance (revoked
        #: first, assigned later) is taken at once instead of after an idle timeout
        self.unowned_wait: Callable[[float], None] = time.sleep

    # -- ranges -----------------------------------------------------------------------
    def _ranges(self, block: int) -> list[tuple[float, float]]:
        return needed_ranges(
            block, self.owned(), self.partitions, self.block_seconds, self.pad, self.done()
        )

    def _read_of(self, block: int, x: float, y: float) -> _Read:
        read = self._reads.get((x, y))
        if read is None:
            read = _Read(block, block % self.partitions, x, y)
            self._reads[(x, y)] = read
        return read

    def _next_read(self, t: float) -> _Read | None:
        """The first needed range ending after ``t`` (None: this replica owns nothing)."""
        if not self.owned():
            return None
        first = block_of(t, self.block_seconds)
        for block in range(first, first + self.partitions + 2):
            for x, y in self._ranges(block):
                if y > t:
                    return self._read_of(block, x, y)
        return None

    # -- consuming ----------------------------------------------------------------------
    def _assign(self, read: _Read) -> None:
        if self._active is read:
            return
        ms = gps_to_kafka_ms(read.x - self.seek_pad)
        tp = TopicPartition(self.topic, read.partition)
        query = [TopicPartition(self.topic, read.partition, ms)]
        try:
            found = self.consumer.offsets_for_times(query, timeout=10.0)
            if found[0].error is None and found[0].offset < 0:
                # nothing at or after the time yet: then every message from the end
                # *before* a second lookup on is new (a logical OFFSET_END is resolved
                # later, when the fetch starts, and would skip what a live producer sent
                # meanwhile). Read only then: a replay's lookups find their offset, and
                # each round trip queues behind the fetch on the broker connection
                _, high = self.consumer.get_watermark_offsets(tp, timeout=10.0, cached=False)
                found = self.consumer.offsets_for_times(query, timeout=10.0)
        except KafkaException as exc:
            raise BrokerError(f"offsets_for_times on {self.topic} failed: {exc}") from exc
        if found[0].error is not None:
            raise BrokerError(f"offsets_for_times on {self.topic}: {found[0].error}")
        offset = found[0].offset if found[0].offset >= 0 else high
        self.consumer.assign([TopicPartition(self.topic, read.partition, offset)])
        self._active = read
        self.seeks += 1
        log.debug(
            "features %s: reading [%s, %s) of block %d from partition %d at offset %s",
            self.topic,
            read.x,
            read.y,
            read.block,
            read.partition,
            offset,
        )

    def _pump(self, read: _Read, timeout: float, until: float | None = None) -> bool:
        """Consume ``read``'s partition for up to ``timeout`` s, or until every known
        source is complete to ``until`` (default the range's end); True if a batch was added.

        What is queued is taken at once and only an empty queue waits (for one message):
        a range is a few dozen messages, and waiting for a full ``consume`` batch would
        cost its timeout on every range.
        """
        self._assign(read)
        until = read.y if until is None else until
        start_ms, end_ms = gps_to_kafka_ms(read.x - self.seek_pad), gps_to_kafka_ms(read.y)
        got = False
        deadline = self._monotonic() + timeout
        while True:
            left = deadline - self._monotonic()
            msgs = consume_queued(self.consumer, 1000, min(0.1, max(0.0, left)))
            for msg in msgs:
                if self._handle(read, msg, start_ms, end_ms):
                    got = True
            if read.progress(self._known) >= until or self._monotonic() >= deadline:
                return got

    def _handle(self, read: _Read, msg: Message, start_ms: int, end_ms: int) -> bool:
        """Add one message to ``read``; True if it was a batch of the range."""
        if not is_data(msg, self.topic):
            return False
        if msg.partition() != read.partition:
            return False  # fetched for an earlier assignment
        ts = msg.timestamp()[1]
        if ts < start_ms:
            return False  # still queued from an earlier assignment of this partition
        if ts >= end_ms:
            self.skipped += 1  # a later block of this partition: not ours to decode
            return False
        self.consumed += 1
        self.on_batch(read.partition)
        decoded = decode_message(msg, self.topic, self.dead_letter)
        if decoded is None:
            self.dead_lettered += 1
            return False
        src, batch = decoded
        self._known.add(src)
        self._channels = batch.triggers.channels
        read.runs.setdefault(src, _SourceRun()).add(batch, read.x)
        return True

    def _wait(self, read: _Read, until: float) -> None:
        """Read until every known source is complete to ``until`` (or give up)."""
        last = self._monotonic()
        while read.progress(self._known) < until:
            if self.should_stop():
                raise StopRequested(f"features {self.topic} [{read.x}, {until}): stop requested")
            if self._pump(read, 0.2, until):
                last = self._monotonic()
            elif self._monotonic() - last >= self.idle_timeout:
                ends = {k: r.end if (r := read.runs.get(k)) else None for k in self._known}
                lagging = {k: e for k, e in ends.items() if e is None or e < until}
                msg = (
                    f"features {self.topic} [{read.x}, {until}) of partition {read.partition}: "
                    f"incomplete after {self.idle_timeout} s without data; sources behind: "
                    f"{lagging or 'none seen'}"
                )
                log.warning(msg)
                if not read.runs:
                    raise NoDataError(msg)
                raise IncompleteDataError(msg)

    # -- the SpanSource / WatermarkSource interface --------------------------------------
    def seek(self, gps: float) -> None:
        """Forget what was read; the replay clock starts again from ``gps``."""
        self._reads.clear()
        self._active = None
        self._frontier = self._shown = float(gps)

    def advance(self, timeout: float) -> bool:
        """Read on in the next needed range for up to ``timeout`` s; True on progress."""
        if self._frontier is None:
            raise BrokerError("BlockFeatureSource: nothing to read yet (no start and no fetch)")
        read = self._next_read(self._frontier)
        if read is None:
            self.unowned_wait(timeout)  # no partition held (mid-rebalance): nothing to read
            return self._next_read(self._frontier) is not None
        if read.x > self._frontier:
            self._frontier = read.x  # other replicas' blocks: nothing to wait for
            self._show()
            return True
        got = self._pump(read, timeout)
        done = read.progress(self._known)
        self._frontier = max(self._frontier, done)
        if done >= read.y:
            nxt = self._next_read(read.y)
            self._frontier = max(self._frontier, nxt.x if nxt is not None else read.y)
            got = True
        self._show()
        return got

    def _range_after(self, t: float) -> tuple[float, float] | None:
        """The first needed range ending after ``t`` (None: none near)."""
        first = block_of(t, self.block_seconds)
        for block in range(first, first + self.partitions + 2):
            for x, y in self._ranges(block):
                if y > t:
                    return x, y
        return None

    def _held(self, f: float) -> bool:
        """Whether ``f`` lies inside a run of adjacent needed ranges with a pad in it.

        A replica's own block is read as its head pad (the other partition's block
        before it), the block, then its tail pad: three adjacent ranges. Shown as it
        goes, the watermark stopped at the block's end while the tail pad was read,
        and the loop polled the block's strides in two batches (15 + 1), each its own
        rank call (~0.19 calls per own stride against one replica's 0.125). Held at
        the run's start until the run is read, the block's strides are due together.
        Runs of whole blocks (one replica holding every partition) are shown as before.
        """
        r = self._range_after(f)
        if r is None:
            return False
        before = self._range_after(r[0] - 1e-6)
        pred = before if before is not None and before[1] == r[0] else None
        if r[0] >= f and pred is None:
            return False  # the start of a run (the frontier jumped here): show it
        after = self._range_after(r[1])
        succ = after if after is not None and after[0] == r[1] else None
        return any(q is not None and q[1] - q[0] < self.block_seconds for q in (r, pred, succ))

    def _show(self) -> None:
        assert self._frontier is not None
        if self._shown is None or not self._held(self._frontier):
            self._shown = self._frontier

    def watermark(self) -> float | None:
        """GPS time before which every needed range has been read (None: nothing yet)."""
        return self._shown if self._known else None

    def fetch(self, start: float, end: float) -> TriggerSet:
        """The triggers of ``[start, end)`` inside this replica's needed ranges.

        Raises
        ------
        IncompleteDataError
            A source did not deliver a needed range within ``idle_timeout`` of silence,
            or has a hole in it.
        NoDataError
            Nothing at all arrived for a needed range.
        """
        parts: list[TriggerSet] = []
        holes: dict[str, segmentlist] = {}
        last = math.ceil(end / self.block_seconds - 1e-9) - 1  # the block holding end - 0
        for block in range(block_of(start, self.block_seconds), last + 1):
            for x, y in self._ranges(block):
                lo, hi = max(start, x), min(end, y)
                if hi <= lo:
                    continue
                read = self._read_of(block, x, y)
                self._wait(read, hi)
                want = segmentlist([segment(lo, hi)])
                for src in self._known:
                    run = read.runs.get(src)
                    missing = want - (run.covered if run is not None else segmentlist())
                    if abs(missing):
                        holes.setdefault(src, segmentlist()).extend(missing)
                got = read.triggers(lo, hi)
                if got:
                    # the range only: an anchor batch may hold data just before it
                    parts.append(TriggerSet.concat_within(got, lo, hi))
        if self._frontier is None:
            self._frontier = self._shown = start
        # ranges wholly before this span are done with (the processor keeps the pad)
        for key in [k for k in self._reads if k[1] <= start]:
            if self._reads[key] is self._active:
                self._active = None
            del self._reads[key]
        if holes:
            raise IncompleteDataError(
                f"features {self.topic} [{start}, {end}): sources with holes: {holes}"
            )
        if not parts:
            # over the table of the data read: the umbrella of a poll concatenates one
            # chunk per stride, and a replica's many empty chunks (other replicas'
            # strides) over another table sent every concat down the slow path that
            # merges the 1,000-name tables name by name (~1 s CPU per 300 strides)
            return TriggerSet.empty(self._channels)
        return parts[0] if len(parts) == 1 else TriggerSet.concat(parts)

    def sources(self) -> dict[str, float | None]:
        """Known sources (how far each is complete is per range here: None)."""
        return dict.fromkeys(self._known)

    def close(self) -> None:
        log.info(
            "features %s: %d batches decoded, %d read past their range (not decoded), "
            "%d range switches",
            self.topic,
            self.consumed,
            self.skipped,
            self.seeks,
        )
        self.consumer.close()
