"""Live latency: real-time synthetic features, the timeseries stage live, 1 s strides.

Set-up: the 1,000-channel model of the replay, published by this process in real time
(``FeaturePublisher`` on the wall clock, one message per 1 s batch, batch ``[s, s+1)``
sent when GPS now reaches ``s + 1``), and one ``idq-timeseries`` process in live mode
ranking with the models and calibrations the replay trained.

Definition. One consumer in this process reads both the features and the timeseries
topics and stamps every message with its local receive time (``time.time()``; one
clock, one process, so the two stamps compare directly). For stride ``[s, s+1)``::

    latency(s) = recv(last timeseries_stride message of s, over all classifiers)
                 - recv(feature batch [s, s+1))

i.e. the time from the stride's last feature data becoming visible to consumers to
all of its products being visible. It includes the stage's configured ``delay``
(1 s in the demo/production config, the wait for the look-ahead window and late
data); ``added_*`` figures subtract it. The first ``warmup_s`` seconds are dropped.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from typing import Any

import numpy as np
from confluent_kafka import Consumer, Producer, TopicPartition

from bench._infra import WITNESSES, RunConfig, run_sampled


def measure(cfg: RunConfig, duration: float, warmup_s: float = 10.0) -> dict[str, Any]:
    from idq_common.config import load_settings
    from idq_common.data.synthetic import SyntheticModel
    from idq_common.gpstime import WallClock, gps_now, gps_to_kafka_ms
    from idq_common.io.publish import FeaturePublisher, partitioning

    s = load_settings(cfg.path, env={})
    model = SyntheticModel(
        seed=1,
        ifo=s.general.ifo,
        target_channel=s.samples.target_channel,
        n_witness=WITNESSES,
        n_noise=cfg.channels - WITNESSES,
        glitch_rate=0.3,
        witness_background_rate=16.0,
        noise_background_rate=16.0,
    )
    n_classifiers = len(s.classifiers)
    delay = s.timeseries.stream.delay
    feat: dict[int, float] = {}
    ts: dict[int, list[float]] = defaultdict(list)
    stop = threading.Event()

    conf = s.kafka.consumer_config(f"bench.live.{time.time_ns()}")
    conf.update({"enable.auto.commit": False})
    consumer = Consumer(conf)
    tps = []
    for kind in ("features", "timeseries"):
        topic = cfg.topics[kind]
        for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
            tps.append(TopicPartition(topic, p, 0))
    consumer.assign(tps)

    def consume() -> None:
        while not stop.is_set():
            for m in consumer.consume(100, timeout=0.2):
                now = time.time()
                if m.error():
                    continue
                ts_ms = m.timestamp()[1]
                if m.topic() == cfg.topics["features"]:
                    feat[ts_ms] = now
                else:
                    ts[ts_ms].append(now)

    t_now = math.floor(gps_now())
    first = t_now - 8.0  # a little history for the first stride's windows
    # publish until told to stop (after the stage has exited): a stage stopping
    # mid-stride must not wait for data that will never come
    last = t_now + duration + warmup_s + 600.0
    publisher = FeaturePublisher(
        Producer(s.kafka.producer_config()),
        cfg.topics["features"],
        s.general.ifo,
        "synthetic",
        batch_seconds=1.0,
        **partitioning(s.kafka),
        clock=WallClock(),
    )

    def publish() -> None:
        for bs, be in publisher.batch_spans(first, last):
            wait = be - gps_now()
            if wait > 0 and stop.wait(wait):
                break
            publisher.publish_batch(model.generate(bs, be), bs, be)
        publisher.flush()

    threads = [
        threading.Thread(target=consume, daemon=True),
        threading.Thread(target=publish, daemon=True),
    ]
    for t in threads:
        t.start()
    # no span: live mode on the wall clock
    proc = cfg.pipeline().service("timeseries", name="timeseries-live")
    live_start = gps_now()

    def stop_after() -> None:
        time.sleep(duration + warmup_s)
        proc.terminate(timeout=50.0)

    threading.Thread(target=stop_after, daemon=True).start()
    sampled = run_sampled({"timeseries": proc}, duration + warmup_s + 60)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    consumer.close()
    if sampled["timeseries"].returncode not in (0, -15):
        raise RuntimeError(
            f"live timeseries exited {sampled['timeseries'].returncode}:\n{proc.tail()}"
        )

    lat = []
    cutoff = gps_to_kafka_ms(live_start + warmup_s)
    for ts_ms, recvs in sorted(ts.items()):
        if ts_ms < cutoff or ts_ms not in feat or len(recvs) < n_classifiers:
            continue
        lat.append(max(recvs) - feat[ts_ms])
    arr = np.array(lat)
    q = (lambda p: round(float(np.percentile(arr, p)), 4)) if arr.size else (lambda p: 0.0)
    return {
        "channels": cfg.channels,
        "stride_s": s.timeseries.stream.stride,
        "duration_s": duration,
        "strides_measured": int(arr.size),
        "latency_p50_s": q(50),
        "latency_p99_s": q(99),
        "latency_max_s": round(float(arr.max()), 4) if arr.size else 0.0,
        "configured_delay_s": delay,
        "added_latency_p50_s": round(q(50) - delay, 4) if arr.size else 0.0,
        "added_latency_p99_s": round(q(99) - delay, 4) if arr.size else 0.0,
        "memory": sampled["timeseries"].memory(),
        "definition": (
            "recv(last timeseries_stride message of stride s) - recv(feature batch "
            "[s, s+1)), both stamped by one consumer in the bench process; includes "
            f"the configured stage delay; first {warmup_s:g} s dropped"
        ),
    }
