"""``idq-ingest`` against a real broker: JSON in, feature batches and dead letters out.

Good SNAX and sgnax messages interleaved with every kind of bad one; the service
runs as its own process (a bounded run, then a second run that must go on with the
same numbering), and the features topic is read back with the pipeline's own reader.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Producer

from idq_common.data.synthetic import SyntheticModel
from idq_common.gpstime import gps_to_kafka_ms
from idq_common.io.avro.convert import batch_to_triggers
from idq_dev.testing.pipeline import create_source_topic, pipeline_config
from idq_dev.testing.snax_json import expected_triggers, message
from idq_dev.testing.topics import read_topic

pytestmark = [pytest.mark.kafka]

GPS = 1_400_000_000


def _model(settings: Any) -> SyntheticModel:
    return SyntheticModel(
        seed=11, ifo=settings.general.ifo, target_channel=settings.samples.target_channel,
        n_witness=3, n_noise=5, glitch_rate=1.0,
    )  # fmt: skip


def _read(settings: Any, topic: str) -> list[tuple[bytes | None, dict[str, Any], int]]:
    """(key, record, timestamp ms) of every message of ``topic``, in offset order per partition."""
    return [(m.key, m.record, m.timestamp_ms) for m in read_topic(settings.kafka, topic)]


def _run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "idq_ingest.cli", "--config", str(config), *args]
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr
        raise AssertionError(f"idq-ingest did not end:\n{err}") from None


def _bad_row(gps: int, **kw: Any) -> bytes:
    row = {"time": gps + 0.5, "snr": 7.0, "frequency": 30.0, **kw}
    return json.dumps({"time": gps, "features": {"H1:AUX-WIT_000_10_2048": [row]}}).encode()


def test_ingest_publishes_batches_and_dead_letters(kafka_bootstrap: str, tmp_path: Path) -> None:
    config, settings = pipeline_config(tmp_path, kafka_bootstrap, "ingest")
    source = create_source_topic(settings, partitions=1)
    model = _model(settings)
    producer = Producer(settings.kafka.producer_config())
    plan: list[tuple[int | None, bytes, str | None]] = []  # (gps if good, payload, reason)
    for k, gps in enumerate(range(GPS, GPS + 12)):
        plan.append((gps, message(model, gps, "snax" if k % 2 else "sgnax"), None))
        if gps == GPS + 3:
            plan.append((None, b"{garbage", "bad_json"))
            plan.append((None, message(model, gps, "sgnax"), "duplicate"))
            plan.append((None, message(model, gps - 2, "snax"), "out_of_order"))
        if gps == GPS + 6:
            plan.append((None, json.dumps({"gps": gps, "features": {}}).encode(), "bad_envelope"))
            plan.append((None, _bad_row(gps + 1, snr=float("nan")), "bad_value"))
            plan.append((None, _bad_row(gps + 1, snr=-2.0), "bad_value"))
            bad = json.dumps({"time": gps + 1, "features": {"H1:AUX WIT??": []}}).encode()
            plan.append((None, bad, "bad_channel"))
    for gps, payload, _ in plan:
        producer.produce(source, payload, timestamp=gps_to_kafka_ms(gps or GPS))
    producer.flush(10)

    # first run: the first 8 seconds (a bounded run stops at --gps-end)
    proc = _run(config, "--gps-end", str(GPS + 8), "--metrics-port", "0")
    assert proc.returncode == 0, proc.stderr
    # second run goes on from the committed offsets, with the same numbering
    proc = _run(config, "--gps-end", str(GPS + 12), "--metrics-port", "0")
    assert proc.returncode == 0, proc.stderr

    batches = _read(settings, settings.kafka.topics.features)
    records = sorted((r for _, r, _ in batches), key=lambda r: r["seq"])
    assert [r["seq"] for r in records] == list(range(12))
    assert [r["start"] for r in records] == [float(g) for g in range(GPS, GPS + 12)]
    for key, rec, ts in batches:
        assert key == b"ingest" and rec["source"] == "ingest"
        assert ts == gps_to_kafka_ms(rec["start"])  # seek by GPS keeps working
    # both partitions used (round robin by seq, like idq produce)
    assert len({m[1]["seq"] % 2 for m in batches}) == 2

    for k, rec in enumerate(records):
        style = "snax" if k % 2 else "sgnax"
        got = batch_to_triggers(rec)
        want = expected_triggers(model, GPS + k, GPS + k + 1, style)
        names_got = np.asarray(got.channels, dtype=object)[got.channel].tolist()
        names_want = np.asarray(want.channels, dtype=object)[want.channel].tolist()
        assert sorted(zip(names_got, got.time.tolist(), got.snr.tolist(), strict=True)) == sorted(
            zip(names_want, want.time.tolist(), want.snr.tolist(), strict=True)
        )

    letters = [r for _, r, _ in _read(settings, settings.kafka.topics.deadletter)]
    reasons = sorted(r["reason"].split(":")[0] for r in letters)
    assert reasons == sorted(reason for _, _, reason in plan if reason), [
        r["reason"] for r in letters
    ]
    assert all(r["stage"] == "ingest" and r["topic"] == source for r in letters)
    assert {r["payload"] for r in letters} == {p for g, p, reason in plan if reason}


def test_bad_ingest_config_exits_2_with_one_line(tmp_path: Path) -> None:
    src = Path(__file__).parents[2] / "etc" / "idq.toml"
    bad = tmp_path / "bad.toml"
    bad.write_text(src.read_text().replace('format = "auto"', 'format = "snx"'))
    proc = _run(bad)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "ingest.format" in proc.stderr


def test_jobs_are_sources_of_their_own(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Two extractor jobs (message keys) send the same seconds: two sources, no duplicates."""
    config, settings = pipeline_config(tmp_path, kafka_bootstrap, "ingestjobs")
    source = create_source_topic(settings, partitions=2)
    model = _model(settings)
    n = len(model.channels)
    jobs = {"a": range(0, n // 2), "b": range(n // 2, n)}
    producer = Producer(settings.kafka.producer_config())
    for gps in range(GPS, GPS + 6):
        for job, channels in jobs.items():
            payload = message(model, gps, "sgnax", channels=channels)
            producer.produce(source, payload, key=job.encode(), timestamp=gps_to_kafka_ms(gps))
    producer.flush(10)
    proc = _run(config, "--gps-end", str(GPS + 6), "--metrics-port", "0")
    assert proc.returncode == 0, proc.stderr
    batches = _read(settings, settings.kafka.topics.features)
    by_key: dict[bytes | None, list[float]] = {}
    for key, rec, _ in batches:
        assert key is not None and rec["source"] == key.decode()
        by_key.setdefault(key, []).append(rec["start"])
    assert {k: sorted(v) for k, v in by_key.items()} == {
        b"ingest.a": [float(g) for g in range(GPS, GPS + 6)],
        b"ingest.b": [float(g) for g in range(GPS, GPS + 6)],
    }
    assert not _read(settings, settings.kafka.topics.deadletter)


def test_sigterm_commits_and_a_restart_goes_on(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Live (unbounded) run: metrics and health served, SIGTERM exits 0 after committing;
    the next run continues the numbering where the first stopped."""
    import signal
    import time
    import urllib.request

    from idq_dev.processes import free_port

    config, settings = pipeline_config(tmp_path, kafka_bootstrap, "ingestterm")
    source = create_source_topic(settings, partitions=1)
    model = _model(settings)
    producer = Producer(settings.kafka.producer_config())

    def send(first: int, last: int) -> None:
        for gps in range(first, last):
            producer.produce(source, message(model, gps, "sgnax"), timestamp=gps_to_kafka_ms(gps))
        assert producer.flush(30) == 0

    send(GPS, GPS + 10)
    port = free_port()
    argv = [sys.executable, "-m", "idq_ingest.cli", "--config", str(config)]
    proc = subprocess.Popen([*argv, "--metrics-port", str(port)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        done = 0.0
        while done < 10:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, f"only {done} messages ingested"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
            except OSError:
                text = ""
            done = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("idq_strides_processed_total{") and 'stage="ingest"' in line
            )
            time.sleep(0.2)
        for path in ("/healthz", "/readyz"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                assert r.status == 200, path
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    send(GPS + 10, GPS + 15)
    rerun = _run(config, "--gps-end", str(GPS + 15), "--metrics-port", "0")
    assert rerun.returncode == 0, rerun.stderr
    records = [r for _, r, _ in _read(settings, settings.kafka.topics.features)]
    assert sorted(r["seq"] for r in records) == list(range(15))
    assert sorted(r["start"] for r in records) == [float(g) for g in range(GPS, GPS + 15)]
