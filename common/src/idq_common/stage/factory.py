"""Build a stage's parts from the settings and the command line: the only place that does.

A stage takes its runtime, checkpoint, source and clock as arguments
(:class:`~idq_common.stage.loop.StageParts`); this module makes the real ones a
service runs with: a Kafka producer and metrics server, the consumer group's committed
offsets as progress, the features topic as source, and the wall clock live or the data
watermark in a replay. Unit tests build the same parts in memory instead.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

from confluent_kafka import Consumer, KafkaException

from idq_common.config import Settings
from idq_common.contracts import group_id
from idq_common.exceptions import BrokerError, ConfigError
from idq_common.gpstime import Clock, WallClock, gps_now
from idq_common.io.store import ArtifactStore
from idq_common.stage.loop import Progress, StageParts, stage_pad
from idq_common.stage.runtime import ServiceRuntime
from idq_common.streaming.block_source import BlockFeatureSource
from idq_common.streaming.cadence import DataClock
from idq_common.streaming.checkpoint import Checkpoint
from idq_common.streaming.kafka_source import KafkaFeatureSource
from idq_common.streaming.segments import (
    AllTime,
    DQSegDBSegments,
    SegmentSource,
    StaticSegments,
    TopicSegments,
)

log = logging.getLogger(__name__)

#: ``fetch.wait.max.ms`` of a block reader (see :func:`streaming_parts`)
BLOCK_FETCH_WAIT_MS = 20
#: ``fetch.queue.backoff.ms`` of a block reader (librdkafka's default: 1,000)
BLOCK_FETCH_QUEUE_BACKOFF_MS = 20
#: a block reader's pre-fetch cap per partition, ``queued.max.messages.kbytes``
#: (librdkafka's default: 65,536): ~10 feature batches at 1,000 channels, a block is
#: ~40; see :func:`streaming_parts`
BLOCK_QUEUED_KBYTES = 4096
#: seconds a shared stage's group must be quiet before its first stride (the broker's
#: own ``group.initial.rebalance.delay.ms`` is 3 s by default; the local test broker's 0)
SHARED_SETTLE_S = 3.0


def segment_source(
    settings: Settings, runtime: ServiceRuntime, start: float, wait: float
) -> SegmentSource:
    """The segment source ``[segments]`` names.

    ``wait`` (the stage's own ``stream.timeout``) is how long a query may wait for a
    span the source does not know yet (topic not there yet, DQSegDB lagging).
    """
    seg = settings.segments
    if seg.source == "none":
        return AllTime()
    if seg.source == "static":
        if seg.file is not None:
            return StaticSegments.from_file(seg.file)
        return StaticSegments(seg.segments or ())
    if seg.source == "dqsegdb":
        assert seg.flag is not None and seg.host is not None
        return DQSegDBSegments(seg.flag, seg.host, wait=wait)
    if seg.source == "topic":
        cfg = settings.kafka.consumer_config(
            group_id(settings.general.ifo, runtime.stage, "segments")
        )
        return TopicSegments(
            Consumer(cfg),
            settings.kafka.topics.segments,
            flag=seg.flag,
            start=start,
            wait=wait,
            dead_letter=runtime.deadletters.publish,
        )
    raise ConfigError("segments.source", f"unknown source {seg.source!r}")


def start_time(
    stage: str,
    checkpoint: Progress,
    gps_start: float | None,
    stride: float,
    from_start: bool = False,
) -> float:
    """Where a stage starts: ``--from-start``, else the committed progress, else
    ``--gps-start``, else (live, no history) the most recent whole stride."""
    if from_start and gps_start is not None:
        log.info("%s: reprocessing from GPS %.3f (--from-start)", stage, gps_start)
        return gps_start
    resumed = checkpoint.load()
    if resumed is not None and (gps_start is None or resumed >= gps_start):
        log.info("%s: resuming from the committed checkpoint at GPS %.3f", stage, resumed)
        return resumed
    if gps_start is not None:
        return gps_start
    return (gps_now() // stride - 1) * stride


def runtime_for(stage: str, settings: Settings, ns: argparse.Namespace) -> ServiceRuntime:
    """The runtime of ``stage`` (``--metrics-port`` overrides ``[metrics] port``)."""
    return ServiceRuntime.for_stage(stage, settings, getattr(ns, "metrics_port", None))


def store_for(settings: Settings) -> ArtifactStore:
    """The artifact store ``[store]`` names."""
    return ArtifactStore.from_url(settings.store.url, **settings.store.storage_options())


@contextmanager
def closed_on_error(runtime: ServiceRuntime) -> Iterator[ServiceRuntime]:
    """Close ``runtime`` (and what it holds) if building the stage fails halfway.

    A Kafka client that cannot be made (bad configuration, no broker) is a
    :class:`BrokerError`, like every other broker failure.
    """
    try:
        yield runtime
    except KafkaException as exc:
        runtime.close()
        raise BrokerError(f"{runtime.stage}: {exc}") from exc
    except BaseException:
        runtime.close()
        raise


def streaming_parts(
    stage: str, settings: Settings, ns: argparse.Namespace, shared: bool = False
) -> StageParts:
    """The parts of a stride-driven stage as the settings and command line describe them."""
    stream = getattr(settings, stage).stream
    pad = stage_pad(settings)
    ifo = settings.general.ifo
    runtime = runtime_for(stage, settings, ns)
    with closed_on_error(runtime):
        # a block-partitioned topic: shared replicas own strides by block and read
        # only their blocks (docs/SCALE_OUT.md)
        blocks = shared and settings.kafka.partitioner == "block"
        checkpoint = Checkpoint(
            settings.kafka.consumer_config(group_id(ifo, stage)),
            settings.kafka.topics.features,
            shared=shared,
            block_strides=round(settings.kafka.block_seconds / stream.stride) if blocks else None,
            settle=SHARED_SETTLE_S if shared else 0.0,
            replicas=getattr(ns, "replicas", None),
        )
        runtime.on_close(checkpoint.close)
        checkpoint.skip_done = not getattr(ns, "from_start", False)
        start = start_time(
            stage, checkpoint, ns.gps_start, stream.stride, getattr(ns, "from_start", False)
        )
        reader_config = settings.kafka.consumer_config(group_id(ifo, stage, "reader"))
        if blocks:
            # a block reader switches partition at every range edge: a fetch waiting for
            # data (fetch.wait.max.ms, 500 ms by default) would delay each switch and
            # the offset lookup queued behind it on the broker connection
            reader_config.setdefault("fetch.wait.max.ms", BLOCK_FETCH_WAIT_MS)
            # librdkafka pre-fetches an assigned partition up to 64 MB ahead (the later
            # blocks of that partition, ~7 MB per 16-s block at 1,000 channels, which
            # the reader skips) and drops it at the next range switch: its fetch thread
            # cost 2.2-2.9 CPU s per replay, as much in a replica doing half the strides
            # as in one doing all. A cap of a few batches bounds that (CPU, RSS); once
            # the cap is reached librdkafka backs off fetch.queue.backoff.ms (1 s by
            # default) before fetching again -- also when the reader comes back to that
            # partition: a replay waited ~1 s at many range switches. A short backoff
            # refills the queue as soon as it is read.
            reader_config.setdefault("queued.max.messages.kbytes", BLOCK_QUEUED_KBYTES)
            reader_config.setdefault("fetch.queue.backoff.ms", BLOCK_FETCH_QUEUE_BACKOFF_MS)
        reader = Consumer(reader_config)
        source: KafkaFeatureSource | BlockFeatureSource
        if blocks:
            source = BlockFeatureSource(
                reader,
                settings.kafka.topics.features,
                owned=lambda: checkpoint.owned,
                block_seconds=settings.kafka.block_seconds,
                pad=pad,
                start=start - pad,
                # the batch holding a range's start: batches are at most this long
                seek_pad=max(
                    1.0, settings.ingest.message_seconds if settings.ingest is not None else 1.0
                ),
                idle_timeout=stream.timeout,
                dead_letter=runtime.deadletters.publish,
            )
            source.unowned_wait = checkpoint.serve
            source.done = checkpoint.done
        else:
            source = KafkaFeatureSource(
                reader,
                settings.kafka.topics.features,
                start=start - pad,
                idle_timeout=stream.timeout,
                dead_letter=runtime.deadletters.publish,
            )
        source.on_batch = runtime.metrics.feature_batch
        runtime.on_close(source.close)
        source.should_stop = lambda: bool(runtime.stop)
        replay = ns.gps_start is not None
        clock: Clock = (
            DataClock(source, start, idle_timeout=stream.timeout) if replay else WallClock()
        )
        return StageParts(
            runtime=runtime,
            checkpoint=checkpoint,
            source=source,
            clock=clock,
            start=start,
            end=ns.gps_end,
            replay=replay,
            segments=partial(segment_source, settings, runtime, wait=stream.timeout),
        )
