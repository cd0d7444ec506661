"""A source's run of consecutive batches (the feature readers' completeness rule)."""

from __future__ import annotations

from idq_common.data.triggers import TriggerSet
from idq_common.streaming.kafka_source import _Batch, _SourceRun


def _batch(seq: int, start: float) -> _Batch:
    return _Batch(seq, start, start + 1.0, TriggerSet.empty())


def test_a_stale_batch_read_first_does_not_anchor_the_run() -> None:
    # the chaos run's case: a re-sent batch of second 824 (seq 8) sits at the end of
    # partition 0 and is read before partition 1's batches around the seek point 927.5
    run = _SourceRun()
    low = 927.5
    run.add(_batch(8, 824.0), low)
    for seq in range(112, 120):  # partition 0: the next block, ahead of the run
        run.add(_batch(seq, 816.0 + seq), low)
    assert run.end == 825.0  # anchored on the stale batch for now
    for seq in range(102, 112):  # partition 1: the batches before and at low
        run.add(_batch(seq, 816.0 + seq), low)
    assert run.end == 816.0 + 120  # complete through the last batch read
    assert [b.seq for b in run.batches] == list(range(102, 120))


def test_in_order_runs_and_duplicates_are_unchanged() -> None:
    run = _SourceRun()
    low = 10.5
    for seq in (10, 11, 11, 12, 10, 14):  # a duplicate, an old one, one ahead
        run.add(_batch(seq, float(seq)), low)
    assert run.last_seq == 12 and run.end == 13.0 and set(run.pending) == {14}
    run.add(_batch(13, 13.0), low)
    assert run.last_seq == 14 and not run.pending


def test_a_gap_after_low_is_waited_for_not_skipped() -> None:
    # a missing batch inside the needed span must keep the run incomplete
    run = _SourceRun()
    low = 10.5
    for seq in (10, 11, 13, 14):
        run.add(_batch(seq, float(seq)), low)
    assert run.end == 12.0 and set(run.pending) == {13, 14}
