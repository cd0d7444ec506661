"""Block partitioning through the real broker: publisher -> topic -> BlockFeatureSource.

Two sources publish over a two-partition topic with the ``block`` partitioner; replicas
holding partition 0, partition 1 or both stream the same span with the stream
processor. Each replica's own strides see exactly the triggers the generator gives
(data and pad), and a replica decodes only its own partition's batches plus the one or
two batches of pad at each block edge.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from idq_common.data.synthetic import SyntheticModel
from idq_common.data.triggers import TriggerSet
from idq_common.io.avro import codec
from idq_common.io.publish import FeaturePublisher, block_partition
from idq_common.streaming.block_source import BlockFeatureSource
from idq_common.streaming.cadence import CadenceManager, DataClock
from idq_common.streaming.checkpoint import stride_owner
from idq_common.streaming.processor import StreamProcessor
from idq_common.streaming.segments import AllTime

pytestmark = pytest.mark.kafka

T0 = 1_400_000_000.0  # a multiple of BLOCK
BLOCK = 8.0
PAD = 0.5
STRIDE = 1.0
START, END = T0 - BLOCK, T0 + 5 * BLOCK  # published span
SPAN = (T0, T0 + 4 * BLOCK)  # streamed strides
SOURCES = ("synthetic-0", "synthetic-1")


def canon(ts: TriggerSet) -> tuple[np.ndarray, ...]:
    """Rows as (channel name, time, snr) in a canonical order."""
    names = (
        np.array(ts.channels, dtype=object)[ts.channel] if len(ts) else np.zeros(0, dtype=object)
    )
    order = np.lexsort((ts.snr, names.astype(str), ts.time))
    return names[order].astype(str), ts.time[order], ts.snr[order]


def assert_same(a: TriggerSet, b: TriggerSet) -> None:
    for x, y in zip(canon(a), canon(b), strict=True):
        assert np.array_equal(x, y)


@pytest.fixture(scope="module")
def models() -> dict[str, SyntheticModel]:
    return {
        src: SyntheticModel(
            seed=21 + i, n_witness=3, n_noise=4, glitch_rate=0.5, noise_background_rate=2.0
        )
        for i, src in enumerate(SOURCES)
    }


@pytest.fixture
def block_topic(
    kafka_bootstrap: str,
    kafka_topic_factory: Callable[..., str],
    models: dict[str, SyntheticModel],
) -> str:
    topic = kafka_topic_factory("features", partitions=2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for src, model in models.items():
        pub = FeaturePublisher(
            producer, topic, "H1", src, 1.0, "block", partitions=2, block_seconds=BLOCK
        )
        pub.publish(model.generate, START, END)
        pub.flush()
    return topic


def generated(models: dict[str, SyntheticModel], start: float, end: float) -> TriggerSet:
    return TriggerSet.concat([m.generate(start, end) for m in models.values()])


def stream(
    bootstrap: str, topic: str, owned: set[int], polls: list[list[float]] | None = None
) -> tuple[dict[float, TriggerSet], Counter[int]]:
    """Stream SPAN as a replica holding ``owned``: its strides' data, batches read per
    partition (``polls``: gets the own strides of each poll)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    read: Counter[int] = Counter()
    src = BlockFeatureSource(
        consumer,
        topic,
        owned=lambda: owned,
        block_seconds=BLOCK,
        pad=PAD,
        start=SPAN[0] - PAD,
        idle_timeout=15,
    )
    src.on_batch = lambda p: read.update([p])
    clock = DataClock(src, start=SPAN[0] - PAD, idle_timeout=15)
    cadence = CadenceManager(SPAN[0], STRIDE, delay=PAD, clock=clock, max_timestamp=SPAN[1])
    sp = StreamProcessor(cadence, src, AllTime(), pad=PAD)
    mine: dict[float, TriggerSet] = {}
    try:
        while cadence.wait():
            batch = sp.poll()
            assert not batch.gaps
            own = []
            for s, e in batch.strides:
                if stride_owner(round(s / STRIDE), 2, round(BLOCK / STRIDE)) in owned:
                    mine[s] = batch.umbrella.triggers().select_time(s - PAD, e + PAD)
                    own.append(s)
            if polls is not None and own:
                polls.append(own)
            sp.flush()
    finally:
        src.close()
    return mine, read


def test_batches_go_to_the_partition_of_their_block(block_topic: str, kafka_bootstrap: str) -> None:
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "check"})
    seen = 0
    try:
        for p in (0, 1):
            low, high = consumer.get_watermark_offsets(TopicPartition(block_topic, p), timeout=10)
            consumer.assign([TopicPartition(block_topic, p, low)])
            offset = low
            while offset < high:
                for m in consumer.consume(1000, 1.0):
                    assert m.error() is None
                    _, record = codec.decode(m.value())
                    assert block_partition(record["start"], BLOCK, 2) == p
                    # no batch straddles a block edge
                    assert block_partition(record["end"] - 1e-6, BLOCK, 2) == p
                    offset, seen = m.offset() + 1, seen + 1
    finally:
        consumer.close()
    assert seen == len(SOURCES) * (END - START)


@pytest.mark.parametrize("owned", [{0}, {1}, {0, 1}], ids=["p0", "p1", "both"])
def test_a_replica_reads_its_blocks_and_their_pads_only(
    block_topic: str, kafka_bootstrap: str, models: dict[str, SyntheticModel], owned: set[int]
) -> None:
    polls: list[list[float]] = []
    mine, read = stream(kafka_bootstrap, block_topic, owned, polls)
    blocks = [b for b in range(int(SPAN[0] // BLOCK), int(SPAN[1] // BLOCK)) if b % 2 in owned]
    want = {T0 + k * STRIDE for k in range(int((SPAN[1] - SPAN[0]) / STRIDE))}
    want = {t for t in want if int(t // BLOCK) in blocks}
    assert set(mine) == want
    for t, got in mine.items():  # data and pad of every own stride, as generated
        assert_same(got, generated(models, t - PAD, t + STRIDE + PAD))
    per_block = len(SOURCES) * BLOCK
    if owned == {0, 1}:
        # everything once (plus the anchor batch before the first range)
        assert sum(read.values()) <= len(SOURCES) * (SPAN[1] - SPAN[0] + 2 * BLOCK)
        return
    (p,) = owned
    other = 1 - p
    # the replay clock is held over the pads bordering an own block: its strides are
    # due together, one poll per block (one rank call per block, not two)
    assert sorted(len({int(t // BLOCK) for t in own}) for own in polls) == [1] * len(polls)
    assert len(polls) == len(blocks)
    # its own blocks in full (and the block of the first pad's batch, at most once)
    assert read[p] <= (len(blocks) + 1) * per_block
    # of the other partition only the pad batches at each block edge: 2 edges x
    # (the batch holding the pad + the anchor batch before it) x sources
    assert 0 < read[other] <= len(blocks) * 2 * 2 * len(SOURCES)
    assert read[other] < 0.3 * read[p]


def test_a_span_no_own_stride_needs_is_empty_over_the_table_read(
    block_topic: str, kafka_bootstrap: str
) -> None:
    """Another replica's strides: nothing is read, and the empty set has the channel
    table of the data read, so a poll's umbrella (one chunk per stride) concatenates
    its chunks without merging tables name by name."""
    consumer = Consumer(
        {"bootstrap.servers": kafka_bootstrap, "group.id": "empty", "fetch.wait.max.ms": 10}
    )
    src = BlockFeatureSource(
        consumer, block_topic, owned=lambda: {0}, block_seconds=BLOCK, pad=PAD, idle_timeout=15
    )
    try:
        assert block_partition(T0, BLOCK, 2) == 0
        own = src.fetch(T0, T0 + STRIDE)
        # the middle of partition 1's next block: beyond the pad of every block of ours
        other = src.fetch(T0 + BLOCK + 2 * STRIDE, T0 + BLOCK + 3 * STRIDE)
    finally:
        src.close()
    assert len(own) > 0 and len(other) == 0
    assert other.channels == own.channels
