"""``idq-ingest`` throughput: SNAX and sgnax JSON at 1,000 channels (target >= 20x real time).

For each JSON style, ``span`` seconds of the synthetic model at the production feature
rate (16 rows/s/channel, 1,000 channels split over ``jobs`` extractor jobs, one message
per job per second, as sites run it) are put on a source topic first; then the
``idq-ingest`` service (its own process) ingests them in a bounded run. The processing
time is what the service reports from its first message read to its last commit
(consume, parse, validate, produce, flush, commit); ``x_realtime = span / processing``;
``x_realtime_with_startup`` divides by the whole process's wall time instead;
``x_realtime_cpu`` by the CPU seconds of that processing (all threads of the process)
and ``x_realtime_cpu_with_startup`` by the whole process's (meaningful on a shared,
overloaded machine, where wall-clock figures mostly measure the others). The
features topic is checked to hold every batch (``valid``).

    python -m bench.ingest [--span 60] [--channels 1000] [--out bench/results/ingest.json]
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench._infra import ROW_RATE, WITNESSES, create_run_topics, machine, write_config

STYLES = ("sgnax", "snax")


_BUSY = re.compile(r"([0-9.]+) s from the first message to the last commit \(([0-9.]+) CPU s\)")


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _ingest(config: Path, workdir: Path, gps_end: float) -> tuple[float, float, float, float]:
    """(wall s, processing s and its CPU s as the service reports them, CPU s of the
    whole process)."""
    from idq_dev.pipeline.local import LocalPipeline

    # a bounded run from the start of the source topic (no --gps-start)
    pipeline = LocalPipeline(config, workdir, None, gps_end)
    proc = pipeline.service(
        "ingest",
        ["--metrics-port", "0"],
        program=[sys.executable, "-m", "idq_ingest.cli"],
    )
    pipeline.processes["ingest"] = proc
    t0, cpu0 = time.monotonic(), _children_cpu()
    proc.start()
    try:
        pipeline.wait(["ingest"], timeout=3600.0, poll=0.05)
    finally:
        proc.terminate()
    # the child has been reaped: its CPU time is in RUSAGE_CHILDREN now
    wall, cpu = time.monotonic() - t0, _children_cpu() - cpu0
    found = _BUSY.findall(proc.log_path.read_text(errors="replace"))
    if not found:
        raise RuntimeError(f"idq-ingest reported no processing time; see {proc.log_path}")
    return wall, float(found[-1][0]), float(found[-1][1]), cpu


def _count(settings: Any, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(settings.kafka.consumer_config("bench.ingest.count"))
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        total = 0
        for p in parts:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        c.close()


def measure_style(
    workdir: Path, bootstrap: str, style: str, channels: int, span: float, jobs: int, start: int
) -> dict[str, Any]:
    from confluent_kafka import Producer

    from idq_common.config import load_settings
    from idq_common.data.synthetic import SyntheticModel
    from idq_common.gpstime import gps_to_kafka_ms
    from idq_common.io.kafka.topics import NO_TIME_RETENTION, TopicSpec, create_topics
    from idq_dev.testing.snax_json import message

    cfg = write_config(workdir, f"ingest-{style}", bootstrap, channels)
    source = f"bench.ingest-{style}.json"
    with open(cfg.path, "a") as fh:
        fh.write(f'\n[ingest]\nsource_topic = "{source}"\nformat = "{style}"\n')
    create_run_topics(cfg)
    settings = load_settings(cfg.path, env={})
    create_topics(
        settings.kafka.admin_config(), [TopicSpec(source, partitions=2, config=NO_TIME_RETENTION)]
    )
    model = SyntheticModel(
        seed=1,
        ifo=settings.general.ifo,
        target_channel=settings.samples.target_channel,
        n_witness=WITNESSES,
        n_noise=channels - WITNESSES,
        glitch_rate=0.3,
        witness_background_rate=ROW_RATE,
        noise_background_rate=ROW_RATE,
    )
    n = len(model.channels)
    groups = [range(j * n // jobs, (j + 1) * n // jobs) for j in range(jobs)]
    producer = Producer(settings.kafka.producer_config())
    t0 = time.monotonic()
    json_bytes = rows = 0
    for gps in range(start, start + int(span)):
        for j, group in enumerate(groups):
            payload = message(model, gps, style, channels=group)
            json_bytes += len(payload)
            producer.produce(
                source, payload, key=f"job{j}".encode(), timestamp=gps_to_kafka_ms(gps)
            )
            producer.poll(0)
        rows += len(model.generate(float(gps), float(gps + 1)).time)
    producer.flush(60)
    generate_s = time.monotonic() - t0
    wall_s, processing, processing_cpu, cpu_s = _ingest(cfg.path, cfg.workdir, float(start + span))
    batches = _count(settings, settings.kafka.topics.features)
    processing = max(processing, 1e-3)
    return {
        "style": style,
        "channels": channels,
        "jobs": jobs,
        "span_s": span,
        "rows": rows,
        "json_mib": round(json_bytes / 2**20, 1),
        "generate_s": round(generate_s, 1),
        "processing_s": round(processing, 2),
        "wall_s": round(wall_s, 2),
        "x_realtime": round(span / processing, 1),
        "x_realtime_with_startup": round(span / wall_s, 1),
        # CPU seconds of the processing (every thread of the process, from the first
        # message to the last commit) and of the whole process (start-up included):
        # independent of how many other processes share the cores, unlike wall clock
        "processing_cpu_s": round(processing_cpu, 2),
        "x_realtime_cpu": round(span / max(processing_cpu, 1e-3), 1),
        "cpu_s": round(cpu_s, 2),
        "x_realtime_cpu_with_startup": round(span / max(cpu_s, 1e-3), 1),
        "rows_per_s": round(rows / processing),
        "mib_per_s": round(json_bytes / 2**20 / processing, 1),
        "batches": batches,
        "valid": batches == jobs * int(span),
    }


def measure(
    workdir: Path, bootstrap: str, span: float, channels: int = 1000, jobs: int = 4
) -> dict[str, Any]:
    """Both styles; ``{"styles": [...], "x_realtime_min": ...}``."""
    from idq_common.gpstime import gps_now

    start = int(gps_now()) - 86400
    out = [measure_style(workdir, bootstrap, s, channels, span, jobs, start) for s in STYLES]
    return {"styles": out, "x_realtime_min": min(x["x_realtime"] for x in out)}


def main(args: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.ingest", description=__doc__)
    p.add_argument("--span", type=float, default=60.0)
    p.add_argument("--channels", type=int, default=1000)
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    ns = p.parse_args(args)
    from idq_dev.broker import LocalBroker

    workdir = Path(tempfile.mkdtemp(prefix="idq-bench-ingest-"))
    broker = LocalBroker(workdir / "kafka")
    status = broker.start()
    try:
        r = measure(workdir, str(status.bootstrap), ns.span, ns.channels, ns.jobs)
    finally:
        broker.stop()
    r["machine"] = machine()
    text = json.dumps(r, indent=2)
    print(text)
    if ns.out is not None:
        ns.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
