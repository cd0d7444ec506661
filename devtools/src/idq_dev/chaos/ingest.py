"""Ingest under chaos: SNAX/sgnax JSON in, ``feature_batch`` out, against a clean run.

Both runs (their own topics) get the same seeded sgnax JSON messages, one a second,
on their ingest source topic; the chaos run's also carries a corpus of bad JSON
(:func:`json_corpus`) mid-span. ``idq-ingest`` runs to the end of its bounded replay,
in the chaos run under ``kill -9`` (seeded points and right after a feature batch
appears). Pass: the chaos run published the same batches as the clean run -- per
(source, seq) the same bytes, no seq with two contents, none missing -- and every
bad message was dead-lettered by ingest with its reason, nothing else.

This is a side phase: the downstream phases read features published directly (with
the features corpus), so their comparison does not depend on ingest's bin reduction.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from idq_common.config import Settings
from idq_common.data.synthetic import SyntheticModel
from idq_common.gpstime import gps_to_kafka_ms
from idq_common.io.avro import codec
from idq_common.io.kafka.topics import NO_TIME_RETENTION, TopicSpec, create_topics
from idq_dev.pipeline.local import LocalPipeline
from idq_dev.testing.snax_json import message

#: the key of the one feature-extractor job (its source is ``ingest.sgnax``)
JOB = b"sgnax"


def json_corpus(good: bytes, old: bytes, t_next: int, channel_key: str) -> list[tuple[str, bytes]]:
    """(kind, payload) of bad JSON messages; ``good`` is the real message just sent,
    ``old`` an earlier real one, ``t_next`` the next second the real stream sends."""
    doc = json.loads(good)
    row = {"time": t_next + 0.5, "snr": 7.0, "frequency": 100.0}

    def env(**over: Any) -> bytes:
        d: dict[str, Any] = {"time": t_next, "features": {channel_key: [dict(row)]}}
        d.update(over)
        return json.dumps(d).encode()

    def with_row(**over: Any) -> bytes:
        return env(features={channel_key: [{**row, **over}]})

    return [
        ("json_garbage", b"{this is not json"),
        ("json_empty", b""),
        ("json_array", b"[1, 2, 3]"),
        ("json_no_features", json.dumps({"time": t_next}).encode()),
        ("json_both_envelopes", env(timestamp=t_next)),
        ("json_nan_time", env(time=float("nan"))),
        ("json_negative_time", env(time=-5)),
        ("json_fractional_time", env(time=t_next + 0.5)),
        ("json_bad_channel_key", env(features={"no channel here!": [dict(row)]})),
        ("json_other_ifo", env(features={"L1:FOO-BAR_10_2048": [dict(row)]})),
        ("json_row_not_object", env(features={channel_key: [1, 2]})),
        ("json_nan_snr", with_row(snr=float("nan"))),
        ("json_negative_snr", with_row(snr=-1.0)),
        ("json_string_snr", with_row(snr="loud")),
        ("json_time_outside", with_row(time=t_next + 7.0)),
        ("json_duplicate_second", json.dumps(doc).encode()),
        ("json_out_of_order", old),
    ]


def produce_json(
    settings: Settings, model: SyntheticModel, lo: int, hi: int, corpus_at: int | None
) -> list[tuple[str, int]]:
    """The sgnax messages of ``[lo, hi)`` on the ingest source topic (one partition, in
    order); with ``corpus_at``, the bad ones right after that second's message.
    Returns (kind, offset) of the bad ones."""
    assert settings.ingest is not None
    topic = settings.ingest.source_topic
    create_topics(
        settings.kafka.admin_config(), [TopicSpec(topic, partitions=1, config=NO_TIME_RETENTION)]
    )
    p = Producer(settings.kafka.producer_config())
    offsets: dict[int, int] = {}

    def send(i: int, payload: bytes, gps: int) -> None:
        def done(err: Any, msg: Any) -> None:
            if err is None:
                offsets[i] = msg.offset() or 0

        p.produce(
            topic, payload, key=JOB, partition=0, timestamp=gps_to_kafka_ms(gps), on_delivery=done
        )

    bad: list[tuple[str, int]] = []  # (kind, index of the message)
    n = 0
    for gps in range(lo, hi):
        good = message(model, gps, "sgnax")
        send(n, good, gps)
        n += 1
        if gps == corpus_at:
            key = next(iter(json.loads(good)["features"]), f"{model.channels[1]}_10_2048")
            old = message(model, gps - 10, "sgnax")
            for kind, payload in json_corpus(good, old, gps + 1, key):
                send(n, payload, gps)
                bad.append((kind, n))
                n += 1
        p.poll(0)
    p.flush(30)
    if len(offsets) != n:
        raise RuntimeError(f"{n - len(offsets)} JSON messages not delivered")
    return [(kind, offsets[i]) for kind, i in bad]


def ingest_pipeline(
    config: Path, workdir: Path, lo: int, hi: int, env: dict[str, str]
) -> LocalPipeline:
    """A pipeline whose ``service("ingest")`` runs idq-ingest to ``hi``."""
    return LocalPipeline(config, workdir, float(lo), float(hi), env=env)


def compare_batches(
    clean: Settings,
    chaos: Settings,
    read_topic: Callable[[Settings, str], list[tuple[int, int, bytes]]],
) -> dict[str, Any]:
    """Per (source, seq), the chaos run's batch bytes equal the clean run's."""

    def batches(s: Settings) -> tuple[dict[tuple[str, int], bytes], int]:
        out: dict[tuple[str, int], bytes] = {}
        conflicts = 0
        for _, _, value in read_topic(s, "features"):
            _, rec = codec.decode(value)
            key = (rec["source"], int(rec["seq"]))
            if key in out and out[key] != value:
                conflicts += 1
            out.setdefault(key, value)
        return out, conflicts

    (a, _), (b, conflicts) = batches(clean), batches(chaos)
    missing = sorted(k for k in a if k not in b)
    extra = sorted(k for k in b if k not in a)
    differ = sorted(k for k in a if k in b and a[k] != b[k])
    return {
        "clean_batches": len(a),
        "chaos_batches": len(b),
        "missing": missing[:20],
        "extra": extra[:20],
        "differ": differ[:20],
        "conflicting_duplicates": conflicts,
        "ok": bool(a) and not missing and not extra and not differ and not conflicts,
    }


def dead_letter_check(
    chaos: Settings,
    sent: list[tuple[str, int]],
    read_topic: Callable[[Settings, str], list[tuple[int, int, bytes]]],
) -> dict[str, Any]:
    """Every bad JSON message dead-lettered by ingest (with a reason), nothing else."""
    assert chaos.ingest is not None
    topic = chaos.ingest.source_topic
    letters: dict[int, tuple[set[str], str]] = {}
    other = 0
    for _, _, value in read_topic(chaos, "deadletter"):
        _, rec = codec.decode(value)
        if rec["topic"] != topic:
            continue
        stages, _ = letters.setdefault(int(rec["offset"]), (set(), rec["reason"]))
        stages.add(rec["stage"])
    expected = {off for _, off in sent}
    other = sum(1 for off in letters if off not in expected)
    per_kind = {
        kind: {
            "dead_lettered_by": sorted(letters.get(off, (set(), ""))[0]),
            "reason": letters.get(off, (set(), ""))[1],
            "ok": "ingest" in letters.get(off, (set(), ""))[0],
        }
        for kind, off in sent
    }
    return {
        "kinds": len(per_kind),
        "per_kind": per_kind,
        "unexpected_dead_letters": other,
        "ok": bool(per_kind) and all(v["ok"] for v in per_kind.values()) and not other,
    }


def ingest_plan() -> list[tuple[float, str]]:
    """The ingest phase's fault: ``kill -9`` right after its first feature batch
    appears (mid-publish, before its offsets are committed). Once restarted, ingest
    publishes the rest of a short replay in about a second, so a further kill would
    find it finished: one is what a deterministic schedule can promise."""
    return [(0.0, "kill_on_output")]
