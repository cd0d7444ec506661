"""How often a replay commits its progress (``StreamingStage.replay_commit_s``).

A stage in-process (ManualClock, an in-memory feature source and progress): with
``replay_commit_s`` a replay commits its first batch, then at most that often (wall
seconds), and what it flushed since when the loop ends; never what an exception cut
short. Live, or with 0, every batch is committed, as before.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, ClassVar

import pytest

from idq_common.config import Settings, settings_from_dict
from idq_common.data.synthetic import SyntheticModel
from idq_common.gpstime import ManualClock
from idq_common.stage.loop import MAX_POLL_SECONDS, StageParts, StreamingStage
from idq_common.streaming.processor import FunctionSource, StreamBatch
from idq_dev.testing.fakes import MemoryProgress, memory_runtime

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_300_000_000.0
#: four polls of MAX_POLL_SECONDS one-second strides
SPAN = (T0, T0 + 4 * MAX_POLL_SECONDS)


def _settings() -> Settings:
    with (ROOT / "etc" / "idq-demo.toml").open("rb") as fh:
        doc: dict[str, Any] = tomllib.load(fh)
    # live, the span is behind the clock: not so far that the cadence skips it
    doc["timeseries"]["stream"]["max_lag_strides"] = 10 * int(SPAN[1] - SPAN[0])
    return settings_from_dict(doc, env={})


class Recorder(StreamingStage):
    """Records the strides of each batch (and the commits made before it), or fails."""

    stage = "timeseries"
    fail_at: ClassVar[float | None] = None

    def __init__(self, settings: Settings, parts: StageParts, progress: MemoryProgress) -> None:
        super().__init__(settings, parts)
        self.progress = progress
        self.batches: list[tuple[float, float, int]] = []

    def process(self, batch: StreamBatch) -> None:
        start, end = batch.strides[0][0], batch.strides[-1][1]
        if self.fail_at is not None and start >= self.fail_at:
            raise RuntimeError("a stride failed")
        self.batches.append((start, end, len(self.progress.saves)))


def _run(commit_s: float, replay: bool = True, fail_at: float | None = None) -> Recorder:
    settings = _settings()
    clock = ManualClock(SPAN[1] + 60.0)  # every stride of the span is due
    progress = MemoryProgress()
    model = SyntheticModel(seed=1, n_witness=2, n_noise=2)
    parts = StageParts(
        runtime=memory_runtime("timeseries", "H1", clock, "deadletter"),
        checkpoint=progress,
        source=FunctionSource(model.generate),
        clock=clock,
        start=SPAN[0],
        end=SPAN[1],
        replay=replay,
    )
    stage = type("Stage", (Recorder,), {"replay_commit_s": commit_s, "fail_at": fail_at})(
        settings, parts, progress
    )
    try:
        if fail_at is None:
            assert stage.run() == 0
        else:
            with pytest.raises(RuntimeError, match="a stride failed"):
                stage.run()
    finally:
        stage.close()
    return stage


def test_every_batch_is_committed_by_default() -> None:
    stage = _run(0.0)
    ends = [end for _, end, _ in stage.batches]
    assert len(ends) == 4
    assert [gps for gps, _ in stage.progress.saves] == ends


def test_a_replay_commits_its_first_batch_then_at_most_every_replay_commit_s() -> None:
    stage = _run(3600.0)
    assert len(stage.batches) == 4
    first_end = stage.batches[0][1]
    # the first batch at once, the rest once, when the loop ended: the end of the span
    assert [gps for gps, _ in stage.progress.saves] == [first_end, SPAN[1]]


def test_live_commits_every_batch_whatever_replay_commit_s() -> None:
    stage = _run(3600.0, replay=False)
    assert [gps for gps, _ in stage.progress.saves] == [end for _, end, _ in stage.batches]


def test_after_an_exception_the_progress_not_committed_yet_stays_uncommitted() -> None:
    stage = _run(3600.0, fail_at=SPAN[0] + 2 * MAX_POLL_SECONDS)
    # two batches done, the first committed; the second was flushed but is not
    # committed after the failure of the third (it is redone after a restart)
    assert len(stage.batches) == 2
    assert [gps for gps, _ in stage.progress.saves] == [stage.batches[0][1]]
