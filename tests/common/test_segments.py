"""Segment sources: static, DQSegDB through dqsegdb2 against the local server, topic updates."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from igwn_segments import segment, segmentlist

from idq_common.exceptions import BadSpanError, SegmentQueryError
from idq_common.streaming.segments import AllTime, DQSegDBSegments, StaticSegments, TopicSegments
from idq_dev.testing.dqsegdb_server import DQSegDBServer

FLAG = "H1:DMT-ANALYSIS_READY:1"
KNOWN = [(1000.0, 5000.0)]
ACTIVE = [(1100.0, 1200.5), (1300.0, 2000.0), (2500.0, 6000.0)]


def sl(*pairs: tuple[float, float]) -> segmentlist:
    return segmentlist([segment(a, b) for a, b in pairs])


def test_static_and_all_time(tmp_path: Path) -> None:
    src = StaticSegments([(10, 20), (15, 30), (40, 50)])
    assert src.query(12, 45) == sl((12, 30), (40, 45))
    assert AllTime().query(3, 7) == sl((3, 7))
    f = tmp_path / "segs.txt"
    f.write_text("# start end\n10 20\n\n40 50  # comment\n")
    assert StaticSegments.from_file(f).query(0, 100) == sl((10, 20), (40, 50))
    f.write_text("10 20 30\n")
    with pytest.raises(SegmentQueryError, match=r"segs\.txt:1"):
        StaticSegments.from_file(f)


@pytest.fixture
def server() -> Iterator[DQSegDBServer]:
    with DQSegDBServer({FLAG: {"known": KNOWN, "active": ACTIVE}}) as srv:
        yield srv


def test_dqsegdb_equals_served_segments(server: DQSegDBServer) -> None:
    src = DQSegDBSegments(FLAG, server.url, retries=0)
    # active outside known is not trusted: clipped to known and to the request
    assert src.query(1150, 4500) == sl((1150, 1200.5), (1300, 2000), (2500, 4500))
    known, active = src.query_known(1150, 5500)
    assert known == sl((1150, 5000))
    assert active == sl((1150, 1200.5), (1300, 2000), (2500, 5000))
    with pytest.raises(BadSpanError, match="not known"):  # never "inactive" in silence
        src.query(1150, 5500)
    assert any(p.startswith("/dq/H1/DMT-ANALYSIS_READY/1?") for p in server.requests)
    versionless = DQSegDBSegments("H1:DMT-ANALYSIS_READY", server.url, retries=0)
    assert versionless.query(1000, 1250) == sl((1100, 1200.5))


@pytest.mark.parametrize("mode", ["down", "garbage"])
def test_dqsegdb_failures_retry_with_backoff_then_raise(server: DQSegDBServer, mode: str) -> None:
    server.mode = mode
    sleeps: list[float] = []
    src = DQSegDBSegments(FLAG, server.url, retries=3, backoff=0.5, sleep=sleeps.append)
    with pytest.raises(SegmentQueryError, match=r"failed after 4 attempts"):
        src.query(1000, 2000)
    assert sleeps == [0.5, 1.0, 2.0]
    assert src.attempts == 4
    server.mode = "ok"  # the server recovers: the same source answers again
    assert src.query(1100, 1150) == sl((1100, 1150))


def test_dqsegdb_connection_refused(server: DQSegDBServer) -> None:
    url = server.url
    server.stop()
    sleeps: list[float] = []
    src = DQSegDBSegments(FLAG, url, retries=2, backoff=0.1, timeout=5, sleep=sleeps.append)
    with pytest.raises(SegmentQueryError, match="ConnectionError"):
        src.query(1000, 2000)
    assert sleeps == [0.1, 0.2]


def test_dqsegdb_unknown_flag_fails_at_once(server: DQSegDBServer) -> None:
    sleeps: list[float] = []
    src = DQSegDBSegments("H1:NOPE:1", server.url, retries=3, sleep=sleeps.append)
    with pytest.raises(SegmentQueryError, match="HTTP 404"):
        src.query(1000, 2000)
    assert sleeps == []


def test_topic_segments_updates_and_unknown_spans() -> None:
    src = TopicSegments(None, "idq.H1.segments")
    src.apply(sl((0, 100)), sl((10, 20), (50, 100)))
    assert src.query(0, 60) == sl((10, 20), (50, 60))
    with pytest.raises(BadSpanError, match="not yet known"):
        src.query(90, 110)
    src.apply(sl((60, 200)), sl((150, 200)))  # later update overrides [60, 200)
    assert src.query(0, 200) == sl((10, 20), (50, 60), (150, 200))


def test_dqsegdb_live_unknown_span_is_a_gap_then_asked_again(server: DQSegDBServer) -> None:
    """Live mode: the server knows up to 1006 when strides [1000, 1008) are due.

    Before the fix [1006, 1009) was cached as inactive: no gap for [1006, 1008), and the
    next poll's stride [1008, 1016) lost [1008, 1009) too, silently.
    """
    from idq_common.data.triggers import TriggerSet
    from idq_common.gpstime import ManualClock
    from idq_common.streaming.cadence import CadenceManager
    from idq_common.streaming.processor import FunctionSource, StreamProcessor

    server.set_flag(FLAG, [(900, 1006)], [(900, 2000)])
    clock = ManualClock(1000.0)
    sleeps: list[float] = []
    src = DQSegDBSegments(FLAG, server.url, retries=0, wait=3.0, poll=1.0, sleep=sleeps.append)
    cm = CadenceManager(1000.0, 4, delay=1.0, clock=clock)
    sp = StreamProcessor(cm, FunctionSource(lambda s, e: TriggerSet.empty()), src, pad=1.0)
    clock.advance(9.0)
    b = sp.poll()
    assert b.strides == [(1000, 1004), (1004, 1008)]
    assert b.segs == sl((1000, 1006))
    assert [(g.start, g.end, g.reason) for g in b.gaps] == [(1006, 1008, "segments unavailable")]
    assert sleeps  # it gave the server time to catch up before answering
    server.set_flag(FLAG, [(900, 1100)], [(900, 2000)])  # the server caught up
    clock.advance(8.0)
    b = sp.poll()
    assert b.strides == [(1008, 1012), (1012, 1016)]
    assert b.segs == sl((1008, 1016)) and not b.gaps
