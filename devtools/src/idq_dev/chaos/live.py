"""Live mode with DQSegDB down, then slow (the chaos run's last scenario).

idq-timeseries runs live (wall clock) on features produced in real time, with its
analysis segments from a local DQSegDB server that knows the flag active at all
times. The models and calibrations of the chaos run are announced again on this
scenario's topics. Timeline: normal, server *down* (HTTP 503) for ``down`` seconds,
then *slow* (every answer ``slow_delay`` s late) for ``slow`` seconds, then normal.

The timeline starts once the stage has written its first frame (a process start can
take tens of seconds on a loaded machine: timed from the start, the outage once came
and went before the stage did anything, and the run was left with one frame).

Pass: every stride of the live window has exactly one frame. Which strides' segments
the stage could know is read from the server's side -- the spans it answered: a
stride outside every answered span must have OK = 0 (the stage could not know its
segments), and every stride short of OK = 1 (those; missing data; a skip ahead) must
be published as a gap (``idq_gap_seconds_total`` at least their sum). The stage
must have met the outage (refused requests); a stride decided once the server was
back is rightly OK = 1, so a stage that waits out its retries loses little. Once the
server is back, OK returns (recovery time measured); while it is slow,
strides still get OK = 1.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Producer
from igwn_segments import segment, segmentlist

from idq_common.config import Settings
from idq_common.gpstime import gps_now
from idq_common.io.avro import codec
from idq_common.io.frames import find_frames, read_frame
from idq_dev.broker import free_port
from idq_dev.chaos.faults import scrape
from idq_dev.pipeline.local import ServiceProcess
from idq_dev.testing.dqsegdb_server import DQSegDBServer
from idq_dev.testing.pipeline import pipeline_config

log = logging.getLogger(__name__)

FLAG = "H1:DMT-ANALYSIS_READY:1"


def _copy_announcements(src: Settings, dst: Settings, read_topic: Any) -> int:
    p = Producer(dst.kafka.producer_config())
    n = 0
    for kind in ("models", "calibrations"):
        for _, _, value in read_topic(src, kind):
            rec = codec.decode(value)[1]
            p.produce(getattr(dst.kafka.topics, kind), value, key=rec["classifier"].encode())
            n += 1
    p.flush(30)
    return n


def _ok_fraction(path: Path) -> float:
    frame = read_frame(path)
    oks = [v for k, v in frame.items() if "-OK_" in k]
    return float(np.mean([np.mean(v) for v in oks])) if oks else 0.0


def live_dqsegdb(
    workdir: Path,
    bootstrap: str,
    chaos: Settings,
    store: dict[str, Any],
    env: dict[str, str],
    edit: Any,
    read_topic: Any,
    normal: float = 20.0,
    down: float = 20.0,
    slow: float = 20.0,
    slow_delay: float = 2.0,
) -> dict[str, Any]:
    """Run the scenario; its part of the report."""
    workdir.mkdir(parents=True, exist_ok=True)
    server = DQSegDBServer({FLAG: {"known": [(0, 2e9)], "active": [(0, 2e9)]}}).start()
    try:

        def live_edit(doc: dict[str, Any]) -> None:
            edit(doc)
            doc["segments"] = {"source": "dqsegdb", "flag": FLAG, "host": server.url}

        config, settings = pipeline_config(
            workdir, bootstrap, "live", store=store, edit=live_edit, env=env
        )
        copied = _copy_announcements(chaos, settings, read_topic)
        bindir = Path(sys.executable).parent
        total = normal + down + slow + normal
        t_data = float(int(gps_now()))
        full_env = {**env, "PYTHONUNBUFFERED": "1"}
        full_env = {**os.environ, **full_env}
        producer = ServiceProcess(
            "produce",
            [str(bindir / "idq"), "produce", "--config", str(config), "--gps-start",
             str(t_data - 8), "--gps-end", str(t_data + total + 330), "--wall-clock",
             "--witnesses", "6", "--noise-channels", "30", "--seed", "5"],
            workdir / "logs" / "produce.log", full_env,
        )  # fmt: skip
        port = free_port()
        ts = ServiceProcess(
            "timeseries",
            [str(bindir / "idq-timeseries"), "--config", str(config), "--metrics-port", str(port)],
            workdir / "logs" / "timeseries.log",
            full_env,
        )
        producer.start()
        ts.start()
        out = Path(settings.timeseries.output_dir)
        obs, desc = settings.general.ifo[0], settings.timeseries.description
        # the timeline starts once the stage works at the frontier (its last stride
        # ended within a few seconds of now): a stage still catching up after a slow
        # start would decide the outage's strides on segments fetched before it
        ready = time.monotonic() + 300
        lag = settings.timeseries.stream.stride + settings.timeseries.stream.delay + 3.0
        while time.monotonic() < ready:
            if ts.proc is not None and ts.proc.poll() is not None:
                break
            done_to = scrape(port, "idq_last_stride_end_gps")
            if done_to is not None and done_to >= gps_now() - lag:
                break
            time.sleep(0.2)
        marks: dict[str, float] = {"at_frontier": gps_now()}
        t0 = time.monotonic()

        def at(seconds: float) -> None:
            while time.monotonic() - t0 < seconds:
                time.sleep(0.1)

        at(normal)
        marks["down_from"] = gps_now()
        server.mode = "down"
        at(normal + down)
        server.mode = "ok"
        server.delay = slow_delay
        marks["down_to"] = marks["slow_from"] = gps_now()
        at(normal + down + slow)
        server.delay = 0.0
        marks["slow_to"] = gps_now()
        at(total)
        # let the stage decide every stride of the timeline (a slow server put it behind)
        marks["end"] = gps_now()
        settle = time.monotonic() + 120
        while time.monotonic() < settle:
            done_to = scrape(port, "idq_last_stride_end_gps")
            if done_to is not None and done_to >= marks["end"]:
                break
            time.sleep(0.2)
        gaps = scrape(port, "idq_gaps_total")
        gap_seconds = scrape(port, "idq_gap_seconds_total")
        ts.terminate()
        producer.terminate()
        frames = find_frames(out, obs, desc)
        starts = [int(p.name.split("-")[-2]) for p in frames]
        stride = settings.timeseries.stream.stride
        window = range(min(starts), max(starts) + 1, int(stride)) if starts else range(0)
        missing = [t for t in window if t not in starts]
        dupes = len(starts) - len(set(starts))
        ok = {t: _ok_fraction(p) for t, p in zip(starts, frames, strict=True)}
        answered = segmentlist(segment(a, b) for a, b in server.answered).coalesce()
        known = {t for t in ok if segment(t, t + stride) in answered}
        unknown = sorted(t for t in ok if t not in known)
        not_ok = sorted(t for t in known if ok[t] < 1)
        # per sample: OK (of any classifier) only where the server had answered; every
        # sample without OK is in a published gap (their seconds at most the gaps')
        rate = settings.timeseries.sample_rate
        wrong_ok: list[int] = []
        dark = 0
        for t, path in zip(starts, frames, strict=True):
            frame = read_frame(path)
            any_ok = np.max([np.asarray(v) > 0.5 for k, v in frame.items() if "-OK_" in k], axis=0)
            times = t + np.arange(len(any_ok)) / rate
            knew = np.array([float(x) in answered for x in times])
            if np.any(any_ok & ~knew):
                wrong_ok.append(t)
            dark += int(np.sum(~any_ok))
        in_slow = [t for t in known if marks["slow_from"] + 4 <= t <= marks["slow_to"] - 2]
        after = [t for t in sorted(ok) if t >= marks["down_to"]]
        first_ok_after = next((t for t in after if ok[t] > 0), None)
        recovery = None if first_ok_after is None else first_ok_after + stride - marks["down_to"]
        report: dict[str, Any] = {
            "announcements_copied": copied,
            "frames": len(starts),
            "missing_strides": missing,
            "duplicate_frames": dupes,
            "timeline_gps": {k: round(v, 1) for k, v in marks.items()},
            "strides_known": len(known),
            "strides_unknown": len(unknown),
            "ok_where_unknown": wrong_ok[:20],
            "seconds_without_ok": dark / rate,
            "known_without_ok": not_ok[:20],
            "strides_while_slow": len(in_slow),
            "ok_while_slow_mean": float(np.mean([ok[t] for t in in_slow])) if in_slow else 0.0,
            "gaps_published": gaps,
            "gap_seconds_published": gap_seconds,
            "dqsegdb_requests": len(server.requests),
            "dqsegdb_answered": len(server.answered),
            "recovery_s": recovery,
        }
        report["ok"] = bool(
            starts
            and not missing
            and not dupes
            # the stage met the outage (requests refused): what this scenario is about
            and len(server.requests) > len(server.answered)
            and not wrong_ok
            # OK = 0 (segments unknown, data missing, skipped) is a published gap
            and (gap_seconds or 0.0) >= dark / rate - 1e-6
            and recovery is not None
            and in_slow
        )
        return report
    finally:
        server.stop()
