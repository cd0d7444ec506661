"""Calibrate's batching rule is set by the data, not by timing (issue 12).

The same evaluated quivers must give the same calibrations whatever order they
arrive in (several partitions, evaluate replicas), however consumption is chunked,
however the clock advances between polls, and across a kill -9 and a restart that
rebuilds the sliding windows from the last announcements. Every evaluated sample is
counted exactly once in the announcements (``new_samples`` + ``dropped_samples``) or
is still pending after the last one.
"""

from __future__ import annotations

import random
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from idq_calibrate.stage import CalibrateStage, latest_by_end
from idq_common.config import Settings, settings_from_dict
from idq_common.gpstime import ManualClock
from idq_common.io.avro import codec
from idq_common.io.avro.convert import quiver_to_record
from idq_common.io.store import ArtifactStore
from idq_common.science.quiver import Quiver
from idq_common.stage.announcements import Announcements, CalibrationAnnouncement
from idq_dev.testing.fakes import MemoryConsumer, MemoryProducer, memory_runtime

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_300_000_000.0
STRIDE = 8.0
N_STRIDES = 60
#: stride index where each classifier's model changes (a superseded model drops samples)
SWITCH = 33


def _settings(tmp: Path) -> Settings:
    with (ROOT / "etc" / "idq-demo.toml").open("rb") as fh:
        doc: dict[str, Any] = tomllib.load(fh)
    doc["calibrate"].update(min_new_samples=150, max_samples=400, history_seconds=40.0)
    doc["store"]["url"] = (tmp / "store").as_uri()
    doc["classifier"] = [c for c in doc["classifier"] if c["nickname"] in ("ovl", "forest")]
    return settings_from_dict(doc, env={})


def _quivers() -> list[tuple[str, int, bytes]]:
    """(classifier, stride index, encoded quiver) of every stride, in stride order."""
    rng = np.random.default_rng(3)
    out = []
    for k in range(N_STRIDES):
        for name in ("ovl", "forest"):
            n = int(rng.integers(5, 40))
            labels = (rng.random(n) < 0.3).astype(np.int8)
            ranks = np.clip(0.5 * labels + 0.5 * rng.random(n), 0, 1)
            start = T0 + k * STRIDE
            q = Quiver(
                T0 + k * STRIDE + np.sort(rng.random(n)) * STRIDE, labels, np.zeros((n, 1)),
                ["x"], start, start + STRIDE, ranks=ranks, classifier=name,
                model_id=f"{name}-{'a' if k < SWITCH else 'b'}",
            )  # fmt: skip
            out.append((name, k, codec.encode("quiver", quiver_to_record(q, "H1", k))))
    return out


class Progress:
    """Evaluate's committed progress, advancing by ``step`` seconds at each look."""

    def __init__(self, step: float) -> None:
        self.value, self.step = T0, step

    def load(self) -> float:
        self.value = min(self.value + self.step, T0 + N_STRIDES * STRIDE)
        return self.value


class Chunked(MemoryConsumer):
    """The quivers topic as evaluate fills it: a message exists once evaluate's
    progress has passed its stride or a later-produced one's. Hands out a seeded random
    number of messages per poll, advances the clock by a seeded random poll time, and
    (``die_after``) raises like a kill -9 mid-run."""

    def __init__(
        self, topic: str, clock: ManualClock, seed: int, progress: Progress, die_after: int = 0
    ) -> None:
        super().__init__(topic)
        self.clock, self.rng, self.die_after = clock, random.Random(seed), die_after
        self.progress = progress
        self.ends: list[float] = []

    def add(self, value: bytes, key: str = "") -> None:
        super().add(value, key)
        self.ends.append(codec.decode(value)[1]["end"])

    def high(self) -> int:
        done = [i for i, end in enumerate(self.ends) if end <= self.progress.value]
        return 1 + max(done) if done else 0

    def get_watermark_offsets(
        self, partition: Any, timeout: float = 0.0, cached: bool = False
    ) -> tuple[int, int]:
        return 0, self.high()

    def consume(self, num_messages: int = 1, timeout: float = 0.0) -> list[Any]:
        self.clock.advance(self.rng.uniform(0.0, 3 * timeout))
        if self.die_after and self._next >= self.die_after:
            raise KeyboardInterrupt("kill -9")
        n = min(num_messages, self.rng.randint(1, 7), self.high() - self._next)
        return super().consume(max(0, n), timeout)


def _run(
    settings: Settings,
    messages: list[bytes],
    seed: int,
    step: float,
    start_at: int = 0,
    die_after: int = 0,
    last: dict[str, CalibrationAnnouncement] | None = None,
) -> tuple[list[dict[str, Any]], int, CalibrateStage]:
    """One life of calibrate: its announcements, its last commit, the stage."""
    clock = ManualClock(T0 + 1e4)
    runtime = memory_runtime("calibrate", "H1", clock, settings.kafka.topics.deadletter)
    progress = Progress(step)
    consumer = Chunked(settings.kafka.topics.quivers, clock, seed, progress, die_after)
    for m in messages:
        consumer.add(m)
    consumer._next = start_at  # resumes at the committed offset
    store = ArtifactStore.from_url(settings.store.url)
    stage = CalibrateStage(
        settings, runtime, consumer, Announcements(), progress, store,
        T0 + N_STRIDES * STRIDE, last,
    )  # fmt: skip
    try:
        stage.run()
    except KeyboardInterrupt:
        pass  # killed: no close, no final commit
    else:
        stage.close()
    producer = runtime.producer
    assert isinstance(producer, MemoryProducer)
    anns = [r for _, r in producer.records(settings.kafka.topics.calibrations)]
    return anns, consumer.commits[-1] if consumer.commits else 0, stage


def _summary(anns: list[dict[str, Any]]) -> list[tuple[str, str, float, float]]:
    """Distinct calibrations per classifier in order: id, model, new, dropped."""
    out: dict[str, tuple[str, str, float, float]] = {}
    for a in anns:
        out.setdefault(
            a["calibration_id"],
            (a["classifier"], a["model_id"], a["metrics"]["new_samples"],
             a["metrics"]["dropped_samples"]),
        )  # fmt: skip
    return sorted(out.values(), key=lambda v: (v[0], list(out.values()).index(v)))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, list, list]:
    settings = _settings(tmp_path_factory.mktemp("calib"))
    quivers = _quivers()
    anns, _, _ = _run(settings, [q for _, _, q in quivers], seed=0, step=1e9)
    return settings, quivers, anns


def test_the_data_sets_the_batches_not_the_order_or_the_poll_timing(reference: Any) -> None:
    settings, quivers, clean = reference
    assert len(_summary(clean)) >= 6  # several calibrations per classifier, both models
    for seed in (1, 2):
        shuffled = list(quivers)
        random.Random(seed).shuffle(shuffled)  # partitions interleaved by timing
        anns, _, stage = _run(settings, [q for _, _, q in shuffled], seed, step=8.0 * seed)
        assert _summary(anns) == _summary(clean)
        assert stage.released_to == T0 + N_STRIDES * STRIDE


@pytest.mark.parametrize("die_after", [40, 61, 77, 95])
def test_a_restart_gives_the_same_calibrations_and_counts_each_sample_once(
    reference: Any, die_after: int
) -> None:
    settings, quivers, clean = reference
    messages = [q for _, _, q in quivers]
    first, committed, _ = _run(settings, messages, 5, step=16.0, die_after=die_after)
    assert first  # killed after some calibrations, mid-span
    assert committed > 0 or die_after < 60  # later kills: the windows were pruned
    last = latest_by_end(CalibrationAnnouncement.from_record(a) for a in first)
    second, _, stage = _run(settings, messages, 6, 24.0, start_at=committed, last=last)
    assert _summary(first + second) == _summary(clean)
    # exactly once: announced (used or dropped) + pending after the last == evaluated
    for name in ("ovl", "forest"):
        mine = [a for a in first + second if a["classifier"] == name]
        counted = sum(
            {a["calibration_id"]: a["metrics"]["new_samples"] + a["metrics"]["dropped_samples"]
             for a in mine}.values()
        )  # fmt: skip
        end = max(a["end"] for a in mine)
        total = pending = 0
        for q_name, _, payload in quivers:
            rec = codec.decode(payload)[1]
            if q_name == name:
                total += rec["n"]
                pending += rec["n"] if rec["end"] > end else 0
        assert counted + pending == total, name
        assert stage.consumed >= pending
