"""Shared machinery of the benchmarks: per-run configuration and topics, and service
processes sampled for RSS.

The processes themselves (producer, services, replicas) are started and stopped by the
local pipeline (:mod:`idq_dev.pipeline.local`), the one harness the demo, the tests and
the bench share; this module only adds what a measurement needs on top of it.

Every measurement gets its own topic set (``bench.<run>.<kind>``) on one broker, so
runs never see each other's data, checkpoints or models unless they mean to (the live
run reuses the models and calibrations of the 1,000-channel replay).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from idq_dev.pipeline.local import LocalPipeline, ServiceProcess

REPO = Path(__file__).resolve().parent.parent
BASE_CONFIG = REPO / "etc" / "idq-demo.toml"
KINDS = ("features", "segments", "quivers", "models", "calibrations", "timeseries", "deadletter")
#: witnesses of every benchmark model; the rest of the channels are pure noise
WITNESSES = 10
#: production feature rate: triggers per second per auxiliary channel
ROW_RATE = 16.0
#: bytes per trigger row on the wire (int32 channel + three float64 columns)
ROW_BYTES = 28
#: largest feature batch we send (the broker's default message limit is ~1 MB)
MAX_BATCH_BYTES = 600_000


def machine() -> dict[str, Any]:
    """Cores and CPU model of this machine."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count() or 0,
        "cpu": cpu,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
    }


def batch_seconds(channels: int) -> float:
    """Feature batch span keeping one message under :data:`MAX_BATCH_BYTES`."""
    span = 1.0
    while channels * ROW_RATE * ROW_BYTES * span > MAX_BATCH_BYTES:
        span /= 2
    return span


@dataclass
class RunConfig:
    """One benchmark run's TOML configuration, topics and directories."""

    name: str
    path: Path
    workdir: Path
    topics: dict[str, str]
    channels: int

    @property
    def model_args(self) -> list[str]:
        """``idq produce`` synthetic-model arguments: ~16 rows/s/channel."""
        return [
            "--witnesses",
            str(WITNESSES),
            "--noise-channels",
            str(self.channels - WITNESSES),
            "--background-rate",
            str(ROW_RATE),
            "--glitch-rate",
            "0.3",
            "--seed",
            "1",
        ]

    def pipeline(
        self,
        start: float | None = None,
        end: float | None = None,
        env: dict[str, str] | None = None,
    ) -> LocalPipeline:
        """The run's processes over ``[start, end)`` (no span: live); the producer is
        this run's synthetic model at full speed, in batches under the message limit."""
        return LocalPipeline(
            self.path,
            self.workdir,
            start,
            end,
            env=env or {},
            speed=0.0,
            producer_args=[*self.model_args, "--batch-seconds", repr(batch_seconds(self.channels))],
        )


def write_config(
    workdir: Path,
    name: str,
    bootstrap: str,
    channels: int,
    share: RunConfig | None = None,
    overrides: dict[str, str] | None = None,
) -> RunConfig:
    """The demo configuration with this run's topics, store, frames and broker.

    ``share``: take the models and calibrations topics and the store of that run
    (the live run ranks with the models the replay trained).
    """
    run_dir = (workdir / name).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    text = BASE_CONFIG.read_text()
    topics = {k: f"bench.{name}.{k}" for k in KINDS}
    store = run_dir / "store"
    if share is not None:
        topics["models"] = share.topics["models"]
        topics["calibrations"] = share.topics["calibrations"]
        store = share.workdir / "store"
    text = re.sub(r"(?m)^output_dir = .*$", f'output_dir = "{run_dir / "frames"}"', text)
    text = re.sub(r'(?m)^url = "file://.*$', f'url = "file://{store}"', text)
    text = re.sub(r"(?m)^bootstrap_servers = .*$", f'bootstrap_servers = "{bootstrap}"', text)
    for key, value in (overrides or {}).items():
        # "section.key" -> replace the first `key = ...` after `[section]`
        section, k = key.rsplit(".", 1)
        pat = re.compile(
            rf"(?ms)(^\[{re.escape(section)}\]\n(?:(?!^\[).)*?^){re.escape(k)} = [^\n]*"
        )
        text, n = pat.subn(rf"\g<1>{k} = {value}", text, count=1)
        if n != 1:
            raise KeyError(f"{key} not found in {BASE_CONFIG}")
    text += "\n[kafka.topics]\n" + "".join(f'{k} = "{v}"\n' for k, v in topics.items())
    path = run_dir / "idq.toml"
    path.write_text(text)
    return RunConfig(name, path, run_dir, topics, channels)


def create_run_topics(cfg: RunConfig) -> None:
    """Create the run's topics on the broker its configuration names."""
    from idq_common.config import load_settings
    from idq_common.io.kafka.topics import create_topics, settings_topic_specs

    s = load_settings(cfg.path, env={})
    create_topics(s.kafka.admin_config(), settings_topic_specs(s.general.ifo, s.kafka))


def reset_group(cfg: RunConfig, group: str) -> None:
    """Delete a consumer group's committed offsets (a stage resumes from them otherwise)."""
    from confluent_kafka.admin import AdminClient

    from idq_common.config import load_settings

    s = load_settings(cfg.path, env={})
    admin = AdminClient(s.kafka.admin_config())
    for fut in admin.delete_consumer_groups([group], request_timeout=15).values():
        # the group may not exist yet: then there is nothing to reset
        with contextlib.suppress(Exception):
            fut.result()


@dataclass
class Sampled:
    """A finished process: wall time and its RSS samples (seconds since start, MiB)."""

    name: str
    wall_s: float
    returncode: int
    rss: list[tuple[float, float]] = field(default_factory=list)
    log: Path | None = None
    #: seconds from spawn until its /healthz first answered (imports and start-up done)
    up_s: float | None = None
    #: CPU seconds (user + system) of the process, from its exit status (wait4)
    cpu_s: float | None = None
    #: CPU seconds of the process when its /healthz first answered (start-up: imports,
    #: clients, models), so ``cpu_s - cpu_up_s`` is what the loop cost
    cpu_up_s: float | None = None

    @property
    def loop_s(self) -> float | None:
        """Wall time without interpreter start-up: from /healthz answering to exit."""
        return None if self.up_s is None else self.wall_s - self.up_s

    def _trend(self) -> float | None:
        """Mean RSS of the last quarter of the loop over that of its second quarter, in %.

        The loop is the time after start-up (``up_s``, else the first 20 %). In a replay
        of under a minute ``growth_pct``'s warm point (20 % of the run) falls before the
        first poll and the first model are in, so it reads start-up; RSS also swings by
        a poll's data between samples. Means over quarters of the loop compare like
        with like: ~0 for a flat curve, positive for a ramp. None: too few samples.
        """
        t_end = self.rss[-1][0]
        t0 = self.up_s if self.up_s is not None else 0.2 * t_end
        q = (t_end - t0) / 4
        second = [m for t, m in self.rss if t0 + q <= t < t0 + 2 * q]
        last = [m for t, m in self.rss if t >= t0 + 3 * q]
        if len(second) < 3 or len(last) < 3:
            return None
        a, b = sum(second) / len(second), sum(last) / len(last)
        return round(100.0 * (b - a) / a, 1)

    def memory(self) -> dict[str, Any]:
        """Peak and final RSS and the growth after warm-up.

        Warm-up is the first 20 % of the run (at least 5 s) (imports, first model and calibration
        loaded); growth is (final - RSS at the end of warm-up) / RSS at warm-up.
        """
        if not self.rss:
            return {
                "service": self.name,
                "peak_rss_mib": 0.0,
                "final_rss_mib": 0.0,
                "growth_pct": 0.0,
                "samples": 0,
            }
        t_end = self.rss[-1][0]
        warm = next((m for t, m in self.rss if t >= max(0.2 * t_end, 5.0)), self.rss[-1][1])
        final = self.rss[-1][1]
        return {
            "service": self.name,
            "peak_rss_mib": round(max(m for _, m in self.rss), 1),
            "final_rss_mib": round(final, 1),
            "warm_rss_mib": round(warm, 1),
            "growth_pct": round(100.0 * (final - warm) / warm, 1) if warm else 0.0,
            "trend_pct": self._trend(),
            "samples": len(self.rss),
            "wall_s": round(self.wall_s, 2),
        }


def _answers(port: int) -> bool:
    """Whether a metrics server on ``port`` answers ``/healthz`` (any HTTP status)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=0.2):
            return True
    except urllib.error.HTTPError:
        return True  # 503 while not alive yet is still an answer: the server is up
    except (urllib.error.URLError, OSError):
        return False


def run_sampled(
    services: dict[str, ServiceProcess],
    timeout: float,
    interval: float = 0.5,
    ports: dict[str, int] | None = None,
    on_sample: Callable[[], None] | None = None,
) -> dict[str, Sampled]:
    """Start processes and wait for them, sampling each one's RSS every ``interval`` seconds.

    With ``ports`` (a service's ``--metrics-port``), also when its server first answers
    (:attr:`Sampled.up_s`), polled every 0.05 s until then. Past ``timeout`` the ones
    still running are stopped and count as failed (return code -9). ``on_sample`` is
    called at every sample (e.g. to scrape the services' metrics while they run).
    """
    t0 = time.monotonic()
    for sp in services.values():
        sp.start()
    procs = {n: sp.proc for n, sp in services.items() if sp.proc is not None}
    handles = {n: psutil.Process(p.pid) for n, p in procs.items()}
    out = {n: Sampled(n, 0.0, 0, log=services[n].log_path) for n in procs}
    done: set[str] = set()
    stop = threading.Event()
    from idq_common.progress import Progress

    # a periodic line so a long benchmark is never silent for minutes
    progress = Progress(f"bench: {', '.join(procs)} exited", len(procs), "processes", every=15.0)
    while len(done) < len(procs):
        now = time.monotonic() - t0
        progress.update(len(done))
        for n, p in procs.items():
            if n in done:
                continue
            # wait4 reaps it with its resource usage: the exact CPU seconds of the
            # process, the figure that means something on a loaded shared machine
            with contextlib.suppress(ChildProcessError):
                pid, status, usage = os.wait4(p.pid, os.WNOHANG)
                if pid == p.pid:
                    p.returncode = os.waitstatus_to_exitcode(status)
                    out[n].cpu_s = usage.ru_utime + usage.ru_stime
            if p.poll() is not None:
                out[n].wall_s, out[n].returncode = now, p.returncode
                done.add(n)
                continue
            if ports and n in ports and out[n].up_s is None and _answers(ports[n]):
                out[n].up_s = now
                with contextlib.suppress(psutil.Error):
                    t = handles[n].cpu_times()
                    out[n].cpu_up_s = t.user + t.system
            with contextlib.suppress(psutil.Error):
                mib = handles[n].memory_info().rss / 2**20
                if mib > 1:  # an exiting (zombie) process reports 0
                    out[n].rss.append((now, mib))
        if on_sample is not None:
            on_sample()
        if now > timeout:
            for n in procs:
                if n not in done:
                    services[n].terminate(timeout=5.0)
                    # a timed-out measurement is void, however the process then exits
                    out[n].wall_s, out[n].returncode = now, -9
            break
        waiting = ports and any(out[n].up_s is None and n not in done for n in ports)
        stop.wait(0.05 if waiting else interval)
    progress.done = float(len(done))
    progress.finish()
    return out


def read_records(cfg: RunConfig, kind: str) -> list[dict[str, Any]]:
    """Every record of the run's ``kind`` topic (decoded), partition by partition."""
    from idq_common.config import load_settings
    from idq_dev.testing.topics import read_topic

    kafka = load_settings(cfg.path, env={}).kafka
    return [m.record for m in read_topic(kafka, cfg.topics[kind], "bench.reader")]
