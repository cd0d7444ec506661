"""A whole pipeline on this machine, each service its own OS process.

Used by ``idq demo``, the end-to-end tests and the benchmarks: a real Kafka broker,
the topics of one instrument, the synthetic feature source (``idq produce``) and the
four stage services (``idq-train`` ...), all in replay mode over one GPS span, so
an hour of data runs in minutes.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from idq_common.contracts import STAGES
from idq_common.exceptions import IDQError
from idq_dev.processes import start_process, stop_process, stop_processes

log = logging.getLogger(__name__)

#: seconds of synthetic data produced before and after the replayed span
MARGIN = 16.0


@dataclass
class ServiceProcess:
    """One running service (or the producer) and its log file."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = start_process(self.argv, self.log_path, env=self.env)
        log.info("started %s (pid %d): %s", self.name, self.proc.pid, " ".join(self.argv))

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; returns the exit status."""
        return stop_process(self.proc, timeout, name=self.name)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class LocalPipeline:
    """Producer and services over ``[gps_start, gps_end)`` against a running broker.

    Parameters
    ----------
    config : Path
        The TOML configuration every process reads.
    workdir : Path
        Logs go to ``workdir/logs``.
    gps_start, gps_end : float or None
        The replayed span; a service started without ``gps_start`` runs live (wall
        clock), without ``gps_end`` unbounded.
    env : mapping
        Extra environment (``IDQ_KAFKA__BOOTSTRAP_SERVERS``, ``IDQ_STORE__URL`` ...).
    speed : float
        Data seconds per wall second of the synthetic producer.
    producer_args : sequence of str
        Synthetic-model arguments for ``idq produce``.
    """

    config: Path
    workdir: Path
    gps_start: float | None
    gps_end: float | None
    env: Mapping[str, str] = field(default_factory=dict)
    speed: float = 30.0
    producer_args: Sequence[str] = ()
    processes: dict[str, ServiceProcess] = field(default_factory=dict)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _bin(self, name: str) -> str:
        return str(Path(sys.executable).with_name(name))

    def service(
        self,
        stage: str,
        extra: Sequence[str] = (),
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        program: Sequence[str] | None = None,
    ) -> ServiceProcess:
        """The (not yet started) process of ``stage``.

        Parameters
        ----------
        stage : str
            The stage (or service) name: runs ``idq-<stage>`` unless ``program`` says otherwise.
        extra : sequence of str
            More command-line arguments (``--metrics-port 0`` ...).
        name : str, optional
            Process name and log file stem when several run of one stage (replicas).
        env : mapping, optional
            Environment of this process only, on top of the pipeline's.
        program : sequence of str, optional
            The command instead of the console script (``python -m idq_ingest.cli``, a
            profiler wrapping the stage ...); the arguments follow it.
        """
        argv = [*(program or [self._bin(f"idq-{stage}")]), "--config", str(self.config)]
        if self.gps_start is not None:
            argv += ["--gps-start", repr(self.gps_start)]
        if self.gps_end is not None:
            argv += ["--gps-end", repr(self.gps_end)]
        name = name or stage
        proc_env = {**self._env(), **(env or {})}
        return ServiceProcess(
            name, [*argv, *extra], self.workdir / "logs" / f"{name}.log", proc_env
        )

    def producer(self) -> ServiceProcess:
        # data reach MARGIN seconds beyond the span on both sides: the first stride's
        # windows look back, the last one's look ahead (features cross stride edges)
        if self.gps_start is None or self.gps_end is None:
            raise IDQError("the synthetic producer needs a bounded span (gps_start, gps_end)")
        argv = [
            self._bin("idq"),
            "produce",
            "--config",
            str(self.config),
            "--gps-start",
            repr(self.gps_start - MARGIN),
            "--gps-end",
            repr(self.gps_end + MARGIN),
            "--speed",
            repr(self.speed),
            *self.producer_args,
        ]
        return ServiceProcess("produce", argv, self.workdir / "logs" / "produce.log", self._env())

    def start(self, stages: Sequence[str] = STAGES, with_producer: bool = True) -> None:
        """Start the services, then the producer."""
        for stage in stages:
            self.processes[stage] = self.service(stage)
            self.processes[stage].start()
        if with_producer:
            self.processes["produce"] = self.producer()
            self.processes["produce"].start()

    def restart(self, stage: str) -> int | None:
        """SIGTERM one service and start it again; returns the stopped one's exit status."""
        old = self.processes[stage]
        status = old.terminate()
        self.processes[stage] = ServiceProcess(stage, old.argv, old.log_path, old.env)
        self.processes[stage].start()
        return status

    def wait(
        self,
        names: Sequence[str],
        timeout: float,
        poll: float = 0.5,
        on_poll: Callable[[], None] | None = None,
    ) -> None:
        """Wait until the named processes have exited; raise if one failed or time ran out.

        ``on_poll`` is called at every poll (e.g. a progress line).
        """
        deadline = time.monotonic() + timeout
        while True:
            if on_poll is not None:
                on_poll()
            for name in names:
                p = self.processes[name]
                if p.proc is not None and p.proc.poll() not in (None, 0):
                    raise IDQError(f"{name} exited with status {p.proc.returncode}:\n{p.tail()}")
            if all(not self.processes[n].running for n in names):
                return
            if time.monotonic() > deadline:
                running = [n for n in names if self.processes[n].running]
                raise IDQError(f"still running after {timeout:.0f} s: {running}")
            time.sleep(poll)

    def stop(self, timeout: float = 20.0) -> dict[str, int | None]:
        """SIGTERM everything still running at once; returns each exit status."""
        return stop_processes({n: p.proc for n, p in self.processes.items()}, timeout)
