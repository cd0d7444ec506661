"""The chaos run: the pipeline under faults against a clean run of the same span.

Both runs get the same synthetic features (one seeded model, same batches) on their
own topics and store prefix, on one real broker and one real SeaweedFS S3 store.
The stages run as OS processes (idq-train ...) phase by phase -- train, evaluate,
calibrate, timeseries -- each to the end of its bounded replay. Phases make the
reference exact: a stage picks the *newest* model or calibration when it processes a
stride, so a concurrent run depends on timing, while a phase starts with its inputs
complete and must give byte-identical outputs however it is interrupted.

In the chaos run each phase gets ``kill -9`` at seeded times and right after an
output appears (a model, a quiver, a calibration, a frame: mid-flush / mid-commit);
the broker is stopped and restarted (evaluate and timeseries phases); the S3 store is
frozen (SIGSTOP) during train; and the bad-input corpus (corpus.py) is on the
features topic (mid-span, plus an out-of-order batch at the end) and the quivers
topic. A supervisor restarts what dies, like Kubernetes. Faults follow each phase's
progress, not the wall clock (:func:`run_phase`), so a fast replay still gets them all.
Ingest runs as a side phase of its own (chaos/ingest.py): seeded JSON, the JSON corpus,
``kill -9`` right after feature batches appear, its batches compared with a clean run's.

Pass (see :func:`checks`): models, quivers, calibrations and frames equal the clean
run's (frames: one per stride, every channel equal, same provenance); every sample
evaluate produced is accounted for once by calibrate's announcements (used, dropped
with a superseded model, or pending after the last: :func:`count_samples`);
every bad message dead-lettered by each stage that reads its topic and nothing else;
no service needed a human (supervisor restarts only); recovery times measured.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from idq_common.config import Settings
from idq_common.data.synthetic import SyntheticModel
from idq_common.gpstime import gps_now, gps_to_kafka_ms
from idq_common.io.avro import codec
from idq_common.io.frames import find_frames, read_frame, read_provenance
from idq_common.io.publish import FeaturePublisher, block_partition, partitioning
from idq_dev.broker import LocalBroker, free_port
from idq_dev.chaos import ingest
from idq_dev.chaos.corpus import BadInput, features_corpus, out_of_order_batch, quivers_corpus
from idq_dev.chaos.faults import Fault, Supervisor
from idq_dev.chaos.live import live_dqsegdb
from idq_dev.pipeline.local import STAGES, LocalPipeline
from idq_dev.testing.pipeline import pipeline_config
from idq_dev.testing.s3_server import S3Server, start_s3_server

log = logging.getLogger(__name__)

#: which output's appearance triggers the "mid-flush / mid-commit" kill, per stage
OUTPUT_TOPIC = {
    "ingest": "features",
    "train": "models",
    "evaluate": "quivers",
    "calibrate": "calibrations",
}
#: stages reading each input topic (they must each dead-letter a bad message on it)
READERS = {"features": ("train", "evaluate", "timeseries"), "quivers": ("calibrate",)}


@dataclass
class ChaosSpec:
    """How big a chaos run is."""

    duration: float = 256.0
    seed: int = 12
    kills_per_service: int = 1
    broker_bounces: int = 2
    broker_down_seconds: float = 5.0
    s3_freeze_seconds: float = 10.0
    witnesses: int = 4
    noise_channels: int = 6
    glitch_rate: float = 0.5
    phase_timeout: float = 900.0
    #: live DQSegDB scenario: seconds normal / down / slow (0 down: no scenario)
    live_normal: float = 15.0
    live_down: float = 20.0
    live_slow: float = 15.0
    #: seconds of JSON the ingest phase replays (0: no ingest phase)
    ingest_seconds: float = 256.0


@dataclass
class World:
    """The shared infrastructure of both runs."""

    workdir: Path
    broker: LocalBroker
    s3: S3Server
    bucket: str


def _edit(doc: dict[str, Any]) -> None:
    doc["samples"]["random_rate"] = 2.0
    doc["train"].update(min_new_samples=120, max_samples=2000, max_stride=3600)
    doc["calibrate"]["min_new_samples"] = 100
    doc["timeseries"]["sample_rate"] = 16
    doc["classifier"] = [c for c in doc["classifier"] if c["nickname"] in ("ovl", "forest", "sgd")]


def _config(world: World, tag: str) -> tuple[Path, Settings]:
    wd = world.workdir / tag
    wd.mkdir(parents=True, exist_ok=True)
    store = {"url": f"s3://{world.bucket}/{tag}", "endpoint_url": world.s3.endpoint_url}
    return pipeline_config(
        wd, world.broker.bootstrap, tag, store=store, edit=_edit, env=world.s3.env()
    )


# -- topics ---------------------------------------------------------------------------
def read_topic(settings: Settings, kind: str) -> list[tuple[int, int, bytes]]:
    """(partition, offset, value) of every message of topic ``kind``, in offset order."""
    topic = getattr(settings.kafka.topics, kind)
    c = Consumer({**settings.kafka.consumer_config("chaos.reader"), "enable.auto.commit": False})
    out: list[tuple[int, int, bytes]] = []
    try:
        for p in sorted(c.list_topics(topic, timeout=10).topics[topic].partitions):
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high <= low:
                continue
            c.assign([TopicPartition(topic, p, low)])
            left = high - low
            while True:
                # ask for exactly what is left: consume() returns as soon as it has it
                msgs = c.consume(max(1, min(1000, left)), timeout=5)
                left -= len(msgs)
                out += [
                    (m.partition() or 0, m.offset() or 0, m.value() or b"")
                    for m in msgs
                    if not m.error()
                ]
                if not msgs or (msgs[-1].offset() or 0) >= high - 1:
                    break
    finally:
        c.close()
    return out


def high_watermark(settings: Settings, kind: str, consumer: Consumer) -> int:
    topic = getattr(settings.kafka.topics, kind)
    parts = consumer.list_topics(topic, timeout=5).topics[topic].partitions
    return sum(
        consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5, cached=False)[1]
        for p in parts
    )


def _produce_raw(
    settings: Settings, kind: str, payloads: list[bytes], gps: float
) -> list[tuple[int, int]]:
    """Send raw messages (in order); their (partition, offset).

    Partition 0, or on a block-partitioned features topic the partition of the block of
    ``gps``: where a producer puts data of that time, so the replica reading that block
    meets them (a block reader skips, undecoded, what lies outside its time ranges).
    """
    topic = getattr(settings.kafka.topics, kind)
    k = settings.kafka
    partition = 0
    if kind == "features" and k.partitioner == "block":
        partition = block_partition(gps, k.block_seconds, k.partitions)
    got: dict[int, tuple[int, int]] = {}
    p = Producer({**settings.kafka.producer_config(), "message.max.bytes": 2_000_000})
    for i, payload in enumerate(payloads):

        def done(err: Any, msg: Any, i: int = i) -> None:
            if err is None:
                got[i] = (msg.partition() or 0, msg.offset() or 0)

        p.produce(
            topic,
            payload,
            key=b"chaos",
            partition=partition,
            timestamp=gps_to_kafka_ms(gps),
            on_delivery=done,
        )
    p.flush(30)
    if len(got) != len(payloads):
        raise RuntimeError(f"{len(payloads) - len(got)} raw messages to {topic} not delivered")
    return [got[i] for i in range(len(payloads))]


def produce_features(
    settings: Settings, model: SyntheticModel, start: float, end: float, corpus_at: float | None
) -> list[tuple[BadInput, int, int]]:
    """The features of ``[start - 16, end + 16)``; with ``corpus_at``, the bad inputs
    go in at that GPS time (between real batches) and an old batch again at the end."""
    k = settings.kafka
    producer = Producer(k.producer_config())
    pub = FeaturePublisher(
        producer, k.topics.features, settings.general.ifo, "synthetic",
        **partitioning(k),
    )  # fmt: skip
    sent: list[tuple[BadInput, int, int]] = []
    lo, hi = start - 16.0, end + 16.0
    if corpus_at is None:
        pub.publish(model.generate, lo, hi)
        pub.flush()
        return sent
    pub.publish(model.generate, lo, corpus_at)
    pub.flush()
    template = [v for _, _, v in read_topic(settings, "features")]
    good = next(v for v in reversed(template) if len(codec.decode(v)[1]["time"]) >= 16)
    bads = features_corpus(codec.decode(good)[1], good)
    for bad, origin in zip(
        bads,
        _produce_raw(settings, "features", [b.payload for b in bads], corpus_at - 0.5),
        strict=True,
    ):
        sent.append((bad, *origin))
    pub.publish(model.generate, corpus_at, hi)
    pub.flush()
    old = out_of_order_batch(template[len(template) // 2])
    sent.append((old, *_produce_raw(settings, "features", [old.payload], start + 1.0)[0]))
    return sent


# -- phases ---------------------------------------------------------------------------
@dataclass
class PhaseResult:
    stage: str
    wall_seconds: float
    restarts: int
    exits: list[int]
    faults: list[Fault] = field(default_factory=list)
    not_injected: list[str] = field(default_factory=list)


def _phase_summary(clean: PhaseResult, chaos: PhaseResult) -> dict[str, Any]:
    """What chaos.json records of one phase: its clean and chaos runs side by side."""
    return {
        "clean_seconds": round(clean.wall_seconds, 1),
        "chaos_seconds": round(chaos.wall_seconds, 1),
        "restarts": chaos.restarts,
        "exit_statuses": chaos.exits,
        "clean_restarts": clean.restarts,
        "faults": [f.as_dict() for f in chaos.faults],
        "faults_not_injected": chaos.not_injected,
    }


def run_phase(
    stage: str,
    pipe: LocalPipeline,
    settings: Settings,
    world: World,
    plan: list[tuple[float, str]],
    spec: ChaosSpec,
    span: tuple[float, float],
    expected_outputs: int = 0,
) -> PhaseResult:
    """Run ``stage`` to the end of its replay, injecting the planned faults.

    ``plan``: (fraction of the phase's progress, fault kind), kinds ``kill``,
    ``kill_on_output`` (the next output after that point: mid-flush / mid-commit),
    ``broker``, ``s3``. Progress is the stage's ``idq_last_stride_end_gps`` over the
    span (calibrate: calibrations announced over ``expected_outputs``).

    The schedule follows the stage's progress, never the wall clock: the first fault
    comes at its seeded fraction, each further one as soon as the stage has recovered
    from the previous one (made progress again). A phase that replays in seconds (an
    idle machine) would otherwise be over before its later faults were due.
    """
    port = free_port()
    sup = Supervisor(stage, lambda: pipe.service(stage, ["--metrics-port", str(port)]), port)
    sup.start()
    t0 = time.monotonic()
    todo = sorted(plan)
    faults: list[Fault] = []
    watcher = Consumer(
        {**settings.kafka.consumer_config("chaos.watch"), "enable.auto.commit": False}
    )
    frames_dir = Path(settings.timeseries.output_dir)
    desc = settings.timeseries.description
    obs = settings.general.ifo[0]
    reached = [0.0]

    last_outputs = [0]

    def outputs() -> int:
        if stage == "timeseries":
            return len(find_frames(frames_dir, obs, desc))
        try:
            last_outputs[0] = high_watermark(settings, OUTPUT_TOPIC[stage], watcher)
        except KafkaException as exc:  # the broker is restarting: the last count stands
            log.info("chaos: %s outputs unknown for now: %s", stage, exc)
        return last_outputs[0]

    def fraction() -> float:
        if stage == "calibrate":
            f = outputs() / max(1, expected_outputs)
        else:
            v = sup.progress()
            f = 0.0 if v is None else (v - span[0]) / (span[1] - span[0])
        reached[0] = max(reached[0], f)
        return reached[0]

    def hold(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            sup.tick()
            time.sleep(0.1)

    def mark() -> float:
        """What grows as the stage makes progress (calibrate: its announcements)."""
        if stage == "calibrate":
            return float(outputs())
        v = sup.progress()
        return -np.inf if v is None else v

    recovered_at: list[float | None] = [None]
    lost: list[str] = []  # faults due when the stage was already done

    def due(frac: float) -> bool:
        # a stage back from a fault (it made progress again) gets the next one at
        # once: a replay that takes seconds is over before a restart's worth later
        return fraction() >= frac or recovered_at[0] is not None

    def pid() -> int | None:
        return sup.proc.proc.pid if sup.proc and sup.proc.proc else None

    def recover(f: Fault, before: float | None, old_pid: int | None) -> None:
        start = time.monotonic()
        n0 = outputs()
        while time.monotonic() - start < 300:
            sup.tick()
            if sup.done:
                break
            if stage == "ingest":
                # ingest reports progress once per read of 200 messages: its output
                # (feature batches, again from the committed offset) shows it is back
                if pid() != old_pid and outputs() > n0:
                    break
                time.sleep(0.1)
                continue
            value = sup.progress()
            if value is not None and (pid() != old_pid or before is None or value > before):
                break
            time.sleep(0.1)
        else:
            log.error("%s did not recover from %s within 300 s", stage, f.kind)
        f.recovery_seconds = time.monotonic() - start
        faults.append(f)
        recovered_at[0] = mark()
        log.info("chaos: %s %s: recovered in %.2f s", f.kind, stage, f.recovery_seconds)

    try:
        while not sup.done:
            if time.monotonic() - t0 > spec.phase_timeout:
                raise RuntimeError(f"{stage} did not finish within {spec.phase_timeout:.0f} s")
            sup.tick()
            if todo and due(todo[0][0]):
                if todo[0][1].startswith("kill") and (
                    pid() is None
                    or sup.proc is None
                    or sup.proc.proc is None
                    or sup.proc.proc.poll() is not None
                ):
                    time.sleep(0.05)
                    continue  # restarting (backoff): kill it once it runs again
                frac, kind = todo.pop(0)
                now = time.monotonic() - t0
                before, old = sup.progress(), pid()
                where = f"at {100 * frac:.0f}% of the phase"
                if kind == "kill":
                    if sup.kill9():
                        recover(Fault("kill9", stage, now, where), None, old)
                    else:
                        lost.append(kind)
                elif kind == "kill_on_output":
                    n0, deadline = outputs(), time.monotonic() + 120
                    killed = False
                    while outputs() == n0 and not sup.done and time.monotonic() < deadline:
                        sup.tick()
                        time.sleep(0.01)
                    what = (
                        "a frame file"
                        if stage == "timeseries"
                        else f"a {OUTPUT_TOPIC[stage]} message"
                    )
                    if sup.kill9():
                        killed = True
                        at = time.monotonic() - t0
                        recover(
                            Fault("kill9_on_output", stage, at, f"right after {what} appeared"),
                            None,
                            old,
                        )
                    if not killed:
                        lost.append(kind)  # the stage finished first
                elif kind == "broker":
                    world.broker.stop()
                    hold(spec.broker_down_seconds)
                    world.broker.start()
                    before = sup.progress()  # recovery: progress after the restart
                    detail = f"down {spec.broker_down_seconds:.0f} s {where}"
                    recover(Fault("broker_restart", stage, now, detail), before, old)
                elif kind == "s3":
                    os.kill(world.s3.process.pid, signal.SIGSTOP)
                    try:
                        hold(spec.s3_freeze_seconds)
                    finally:
                        os.kill(world.s3.process.pid, signal.SIGCONT)
                    before = sup.progress()
                    detail = f"SIGSTOP {spec.s3_freeze_seconds:.0f} s {where}"
                    recover(Fault("s3_freeze", stage, now, detail), before, old)
            time.sleep(0.05)
    finally:
        watcher.close()
        sup.stop()
    missed = lost + [kind for _, kind in todo]
    if missed:
        log.warning("chaos: %s finished before faults %s were due", stage, missed)
    return PhaseResult(stage, time.monotonic() - t0, sup.restarts, sup.exits, faults, missed)


# -- checks -----------------------------------------------------------------------------
def _announcements(settings: Settings, kind: str, id_key: str) -> dict[str, list[str]]:
    """Per classifier, the distinct announced ids in order of first appearance."""
    out: dict[str, list[str]] = defaultdict(list)
    rows = []
    for part, off, value in read_topic(settings, kind):
        try:
            _, rec = codec.decode(value)
        except Exception:
            continue
        rows.append((rec.get("created_gps", 0.0), part, off, rec))
    for _, _, _, rec in sorted(rows, key=lambda r: (r[0], r[1], r[2])):
        if rec[id_key] not in out[rec["classifier"]]:
            out[rec["classifier"]].append(rec[id_key])
    return dict(out)


def _quivers(settings: Settings) -> tuple[dict[tuple[str, int], bytes], int]:
    """(classifier, seq) -> content digest of the quiver; and the count of conflicts."""
    seen: dict[tuple[str, int], bytes] = {}
    conflicts = 0
    for _, _, value in read_topic(settings, "quivers"):
        try:
            _, rec = codec.decode(value)
        except Exception:
            continue
        if rec.get("seq", -1) < 0:
            continue
        key = (rec["classifier"], int(rec["seq"]))
        digest = rec["model_id"].encode() + rec["times"] + rec["labels"] + rec["ranks"]
        if key in seen and seen[key] != digest:
            conflicts += 1
        seen.setdefault(key, digest)
    return seen, conflicts


def count_samples(settings: Settings) -> dict[str, dict[str, float]]:
    """Per classifier: the samples evaluate produced (distinct strides of the quivers
    topic) and what calibrate's announcements account for -- ``new_samples`` (used) +
    ``dropped_samples`` (model superseded first) over the distinct calibrations, plus
    the samples of the strides after the last one (still pending). Exactly once means
    the two are equal: a sample counted twice or lost after a restart shows here."""
    per: dict[str, dict[str, float]] = defaultdict(dict)
    last_end: dict[str, float] = defaultdict(lambda: -np.inf)
    for _, _, value in read_topic(settings, "calibrations"):
        _, rec = codec.decode(value)
        m = rec["metrics"]
        per[rec["classifier"]][rec["calibration_id"]] = float(
            m.get("new_samples", 0) + m.get("dropped_samples", 0)
        )
        last_end[rec["classifier"]] = max(last_end[rec["classifier"]], float(rec["end"]))
    strides: dict[tuple[str, int], tuple[int, float]] = {}
    for _, _, value in read_topic(settings, "quivers"):
        try:
            _, rec = codec.decode(value)
        except Exception:
            continue  # the corpus: dead-lettered
        if rec.get("seq", -1) >= 0:
            strides.setdefault((rec["classifier"], int(rec["seq"])), (int(rec["n"]), rec["end"]))
    out: dict[str, dict[str, float]] = {}
    for name in sorted({c for c, _ in strides} | set(per)):
        evaluated = [(n, end) for (c, _), (n, end) in strides.items() if c == name]
        pending = sum(n for n, end in evaluated if end > last_end[name])
        announced = sum(per[name].values())
        out[name] = {
            "evaluated": float(sum(n for n, _ in evaluated)),
            "announced": announced,
            "pending": float(pending),
            "accounted": announced + pending,
        }
    return out


def _frames(settings: Settings, start: float, end: float) -> dict[int, list[Path]]:
    by_start: dict[int, list[Path]] = defaultdict(list)
    ifo = settings.general.ifo
    for path in find_frames(
        settings.timeseries.output_dir, ifo[0], settings.timeseries.description, start, end
    ):
        by_start[int(path.name.split("-")[-2])].append(path)
    return by_start


def compare_frames(
    clean: Settings, chaos: Settings, start: float, end: float, stride: float
) -> dict[str, Any]:
    a, b = _frames(clean, start, end), _frames(chaos, start, end)
    strides = [int(t) for t in np.arange(start, end, stride)]
    missing = [t for t in strides if len(b.get(t, [])) == 0]
    multiple = [t for t in strides if len(b.get(t, [])) > 1]
    differ: list[int] = []
    for t in strides:
        if t in missing or not a.get(t):
            continue
        if a[t][0].read_bytes() == b[t][0].read_bytes():
            continue  # byte-identical files: nothing to read
        fa, fb = read_frame(a[t][0]), read_frame(b[t][0])
        same = fa.keys() == fb.keys() and all(
            np.array_equal(fa[k], fb[k], equal_nan=True) for k in fa
        )
        if not same or read_provenance(a[t][0]) != read_provenance(b[t][0]):
            differ.append(t)
    return {
        "strides": len(strides),
        "clean_frames": sum(len(v) for v in a.values()),
        "chaos_frames": sum(len(v) for v in b.values()),
        "missing": missing,
        "multiple": multiple,
        "differ": differ,
        "ok": not missing and not multiple and not differ and len(a) == len(strides),
    }


def dead_letter_check(settings: Settings, sent: list[tuple[BadInput, int, int]]) -> dict[str, Any]:
    """Every 'dead' bad input dead-lettered by each reader, nothing else."""
    topics = settings.kafka.topics
    letters: dict[tuple[str, int, int], set[str]] = defaultdict(set)
    reasons: dict[tuple[str, int, int], str] = {}
    for _, _, value in read_topic(settings, "deadletter"):
        _, rec = codec.decode(value)
        origin = (rec["topic"], int(rec["partition"]), int(rec["offset"]))
        letters[origin].add(rec["stage"])
        reasons.setdefault(origin, rec["reason"])
    per_kind: dict[str, Any] = {}
    expected: set[tuple[str, int, int]] = set()
    for bad, part, off in sent:
        origin = (getattr(topics, bad.topic), part, off)
        readers = set(READERS[bad.topic])
        got = letters.get(origin, set())
        if bad.expect == "dead":
            expected.add(origin)
            ok = readers <= got
        else:
            ok = not got
        per_kind[bad.kind] = {
            "topic": bad.topic,
            "expect": bad.expect,
            "dead_lettered_by": sorted(got),
            "reason": reasons.get(origin, ""),
            "ok": ok,
        }
    unexpected = [list(o) for o in letters if o not in expected]
    return {
        "kinds": len(per_kind),
        "per_kind": per_kind,
        "unexpected_dead_letters": unexpected,
        "ok": all(v["ok"] for v in per_kind.values()) and not unexpected,
    }


# -- the whole run ----------------------------------------------------------------------
def _plan(stage: str, spec: ChaosSpec, rng: random.Random, bounce: bool) -> list[tuple[float, str]]:
    """Seeded fault points, as fractions of the phase's progress. The broker restart
    and the store freeze come first (they need a stage in mid-run, not one that is
    restarting), then the kills (see :func:`run_phase` for how they follow)."""
    plan = [(rng.uniform(0.2, 0.85), "kill") for _ in range(spec.kills_per_service)]
    plan.append((rng.uniform(0.1, 0.5), "kill_on_output"))
    if bounce:
        plan.append((rng.uniform(0.02, 0.1), "broker"))
    if stage == "train" and spec.s3_freeze_seconds > 0:
        plan.append((rng.uniform(0.02, 0.1), "s3"))
    return plan


def run(spec: ChaosSpec, workdir: Path, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """One clean and one chaos run; the report (see the module)."""
    t_start = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(spec.seed)
    # a fixed port: a restarted broker must be where the clients look for it
    broker = LocalBroker(workdir / "kafka", port=free_port(), tie_to_parent=True)
    broker.start()
    s3 = start_s3_server(workdir / "s3")
    try:
        world = World(workdir, broker, s3, s3.new_bucket("chaos"))
        start = float((int(gps_now()) - int(spec.duration) - 7200) // 64 * 64)
        end = start + spec.duration
        model = SyntheticModel(
            seed=spec.seed, n_witness=spec.witnesses, n_noise=spec.noise_channels,
            glitch_rate=spec.glitch_rate, noise_background_rate=0.5,
        )  # fmt: skip
        runs: dict[str, tuple[Path, Settings, LocalPipeline]] = {}
        sent: list[tuple[BadInput, int, int]] = []
        for tag in ("clean", "chaos"):
            config, settings = _config(world, tag)
            env = {**s3.env()}
            runs[tag] = (
                config,
                settings,
                LocalPipeline(config, world.workdir / tag, start, end, env=env),
            )
            corpus_at = start + round(spec.duration / 2) + 0.0 if tag == "chaos" else None
            sent += produce_features(settings, model, start, end, corpus_at)
        progress(
            f"chaos: features of [{start:.0f}, {end:.0f}) on both runs; {len(sent)} bad inputs"
        )
        phases: dict[str, Any] = {}
        ingest_checks: dict[str, Any] = {}
        if spec.ingest_seconds > 0:
            ingest_checks = _ingest_phase(world, spec, model, rng, start, phases, progress)
        bounces = spec.broker_bounces
        for stage in STAGES:
            _, clean_settings, clean_pipe = runs["clean"]
            _, chaos_settings, chaos_pipe = runs["chaos"]
            clean = run_phase(stage, clean_pipe, clean_settings, world, [], spec, (start, end))
            if stage == "calibrate":  # the quivers corpus, once evaluate's are all there
                quivers = [v for _, _, v in read_topic(chaos_settings, "quivers")]
                good = next((v for v in quivers if codec.decode(v)[1]["n"] > 2), None)
                if good is None:
                    raise RuntimeError(f"evaluate wrote {len(quivers)} quivers, none with samples")
                bads = quivers_corpus(codec.decode(good)[1], good)
                origins = _produce_raw(
                    chaos_settings, "quivers", [b.payload for b in bads], start + 8
                )
                sent += [(b, *o) for b, o in zip(bads, origins, strict=True)]
            bounce = bounces > 0 and stage in ("evaluate", "timeseries", "calibrate")
            bounces -= int(bounce)
            plan = _plan(stage, spec, rng, bounce)
            n_cal = sum(
                map(len, _announcements(clean_settings, "calibrations", "calibration_id").values())
            )
            chaos = run_phase(
                stage, chaos_pipe, chaos_settings, world, plan, spec, (start, end), n_cal
            )
            phases[stage] = _phase_summary(clean, chaos)
            progress(
                f"chaos: {stage}: clean {clean.wall_seconds:.0f} s, chaos {chaos.wall_seconds:.0f} s, {len(chaos.faults)} faults, {chaos.restarts} restarts"
            )
        clean_s, chaos_s = runs["clean"][1], runs["chaos"][1]
        models = (
            _announcements(clean_s, "models", "model_id"),
            _announcements(chaos_s, "models", "model_id"),
        )
        cals = (
            _announcements(clean_s, "calibrations", "calibration_id"),
            _announcements(chaos_s, "calibrations", "calibration_id"),
        )
        (qa, ca), (qb, cb) = _quivers(clean_s), _quivers(chaos_s)
        samples = (count_samples(clean_s), count_samples(chaos_s))
        frames = compare_frames(clean_s, chaos_s, start, end, clean_s.timeseries.stream.stride)
        dead = dead_letter_check(chaos_s, sent)
        clean_dead = len(read_topic(clean_s, "deadletter"))
        report: dict[str, Any] = {
            "span": [start, end],
            "seed": spec.seed,
            "spec": spec.__dict__,
            "phases": phases,
            "faults_per_kind": _count(f["kind"] for p in phases.values() for f in p["faults"]),
            "checks": {
                "models_equal": {
                    "ok": models[0] == models[1] and bool(models[0]),
                    "clean": models[0],
                    "chaos": models[1],
                },
                "quivers_equal": {
                    "ok": qa == qb and not ca and not cb and bool(qa),
                    "clean": len(qa),
                    "chaos": len(qb),
                    "conflicting_duplicates": cb,
                },
                "calibrations_equal": {
                    "ok": cals[0] == cals[1] and bool(cals[0]),
                    "clean": cals[0],
                    "chaos": cals[1],
                },
                "samples_consumed_once": {
                    "ok": samples[0] == samples[1]
                    and bool(samples[1])
                    and all(v["accounted"] == v["evaluated"] for v in samples[1].values()),
                    "clean": samples[0],
                    "chaos": samples[1],
                },
                "frames": frames,
                "dead_letters": dead,
                "clean_run_dead_letters": {"ok": clean_dead == 0, "count": clean_dead},
                "no_human": {"ok": True, "note": "only the supervisor's automatic restarts"},
                **ingest_checks,
            },
            "wall_seconds": round(time.monotonic() - t_start, 1),
        }
        if spec.live_down > 0:
            store = {"url": f"s3://{world.bucket}/chaos", "endpoint_url": s3.endpoint_url}
            live = live_dqsegdb(
                world.workdir / "live", broker.bootstrap, chaos_s, store, s3.env(), _edit,
                read_topic, normal=spec.live_normal, down=spec.live_down, slow=spec.live_slow,
            )  # fmt: skip
            report["checks"]["live_dqsegdb_down_and_slow"] = live
            if live["recovery_s"] is not None:
                report["phases"]["live_timeseries"] = {
                    "faults": [
                        {"kind": "dqsegdb_down", "target": "timeseries", "detail":
                         f"HTTP 503 for {spec.live_down:.0f} s, then {spec.live_slow:.0f} s slow",
                         "recovery_s": round(live["recovery_s"], 2)}
                    ]
                }  # fmt: skip
            progress(f"chaos: live DQSegDB scenario: {'ok' if live['ok'] else 'FAILED'}")
        report["faults_per_kind"] = _count(
            f["kind"] for p in report["phases"].values() for f in p["faults"]
        )
        report["ok"] = all(c["ok"] for c in report["checks"].values())
        rec = [
            f["recovery_s"]
            for p in phases.values()
            for f in p["faults"]
            if f["recovery_s"] is not None
        ]
        report["recovery_seconds"] = {
            "max": max(rec, default=None),
            "median": float(np.median(rec)) if rec else None,
            "n": len(rec),
        }
        return report
    finally:
        s3.stop()
        broker.stop()


def _ingest_phase(
    world: World,
    spec: ChaosSpec,
    model: SyntheticModel,
    rng: random.Random,
    start: float,
    phases: dict[str, Any],
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """idq-ingest clean and under kill -9 with the JSON corpus (see chaos/ingest.py)."""
    lo, hi = int(start) - 16, int(start + spec.ingest_seconds)
    runs: dict[str, tuple[Settings, LocalPipeline]] = {}
    sent: list[tuple[str, int]] = []
    for tag in ("iclean", "ichaos"):
        config, settings = _config(world, tag)
        corpus_at = (lo + hi) // 2 if tag == "ichaos" else None
        sent += ingest.produce_json(settings, model, lo, hi, corpus_at)
        runs[tag] = (
            settings,
            LocalPipeline(config, world.workdir / tag, lo, hi, env=world.s3.env()),
        )
    clean = run_phase("ingest", runs["iclean"][1], runs["iclean"][0], world, [], spec, (lo, hi))
    plan = ingest.ingest_plan()
    chaos = run_phase("ingest", runs["ichaos"][1], runs["ichaos"][0], world, plan, spec, (lo, hi))
    phases["ingest"] = _phase_summary(clean, chaos)
    progress(f"chaos: ingest: clean {clean.wall_seconds:.0f} s, chaos {chaos.wall_seconds:.0f} s")
    return {
        "ingest_batches_equal": ingest.compare_batches(
            runs["iclean"][0], runs["ichaos"][0], read_topic
        ),
        "ingest_dead_letters": ingest.dead_letter_check(runs["ichaos"][0], sent, read_topic),
    }


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for k in items:
        out[k] += 1
    return dict(out)


def write_report(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str) + "\n")
