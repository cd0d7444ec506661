"""A real single-node Apache Kafka broker (KRaft, combined broker + controller) on 127.0.0.1.

Run from the Maven Central jars (:mod:`idq_dev.jars`), sized for a small
machine (heap 512 MiB, one partition for the internal topics, replication factor 1).
The broker is detached from the starting process (its own session) so that
``idq kafka up`` can return; its pid and ports go to ``<data_dir>/broker.json`` so that
``idq kafka status`` / ``idq kafka down`` from another process find it.

Ready means "an admin client lists topics", not "the port is open": a KRaft broker
accepts connections before its metadata is loaded.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idq_common.exceptions import BrokerError
from idq_dev.jars import fetch_jars, kafka_home
from idq_dev.processes import free_port, port_free, start_process

log = logging.getLogger(__name__)

STATE_NAME = "broker.json"
LOG_NAME = "broker.log"
OUT_NAME = "broker.out"
JVM_OPTS = (
    "-Xmx512m",
    "-Xms256m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)


def random_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding.

    Like Kafka's own ``Uuid.randomUuid`` we never return one starting with ``-``: the
    storage tool's argument parser would take it for an option.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def admin_lists_topics(bootstrap: str, timeout: float = 2.0) -> bool:
    """True when a confluent_kafka AdminClient at ``bootstrap`` lists topics in time."""
    from confluent_kafka.admin import AdminClient

    quiet = logging.getLogger("idq_dev.broker.librdkafka")
    quiet.setLevel(logging.CRITICAL)
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "logger": quiet,  # librdkafka's connection-refused chatter while the JVM boots
        "socket.timeout.ms": 1000,
    }
    admin = AdminClient(conf)
    try:
        admin.list_topics(timeout=timeout)
    except Exception:
        return False
    return True


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` doing prctl(PR_SET_PDEATHSIG, SIGTERM), or None off Linux.

    libc is loaded here, in the parent: the forked child of a threaded process (the
    librdkafka threads) must not import or dlopen anything, only make the call.
    """
    import ctypes

    try:
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:  # pragma: no cover - runs in the forked child
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return hook


def _pid_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _is_our_broker(pid: int, data_dir: Path) -> bool:
    """True when ``pid`` is alive and is the ``kafka.Kafka`` of ``data_dir``.

    Guards against acting on a recycled pid from a stale state file.
    """
    if not _pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    args = [a.decode(errors="replace") for a in cmdline]
    return "kafka.Kafka" in args and str(data_dir / "server.properties") in args


class _PortTakenError(BrokerError):
    """The JVM could not bind a port that was free when we probed it."""


@dataclass(frozen=True)
class BrokerStatus:
    """What :meth:`LocalBroker.status` found.

    ``running``: the recorded process is alive; ``ready``: an admin client lists topics.
    """

    running: bool
    ready: bool
    pid: int | None
    port: int | None
    bootstrap: str | None
    data_dir: str
    start_seconds: float | None = None


class LocalBroker:
    """A local KRaft Kafka broker living in ``data_dir``.

    Parameters
    ----------
    data_dir : Path or str
        Holds the config, the log dirs, the broker log and the state file.
    port : int, optional
        Client port; default: a free one (or the one used last time in this data dir,
        when still free).
    home : Path, optional
        Kafka jar cache (default :func:`idq_dev.jars.kafka_home`).
    start_timeout : float
        Seconds allowed from launch to ready.
    tie_to_parent : bool
        Linux: the broker gets SIGTERM when the starting process dies (test sessions,
        so a killed pytest leaves no broker behind). ``idq kafka up`` leaves it False.
    extra_props : mapping, optional
        More ``server.properties`` entries (override the defaults), e.g. the test
        broker's short ``log.retention.check.interval.ms``.
    """

    def __init__(
        self,
        data_dir: Path | str,
        port: int | None = None,
        *,
        home: Path | None = None,
        start_timeout: float = 90.0,
        tie_to_parent: bool = False,
        extra_props: Mapping[str, str] | None = None,
    ) -> None:
        self.extra_props = dict(extra_props or {})
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.requested_port = port
        self.home = home or kafka_home()
        self.start_timeout = start_timeout
        self.tie_to_parent = tie_to_parent
        self.port: int | None = None
        self.controller_port: int | None = None
        self.pid: int | None = None
        self.start_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_marks: dict[Path, int] = {}

    # -- paths -------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.data_dir / STATE_NAME

    @property
    def log_file(self) -> Path:
        return self.data_dir / LOG_NAME

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise BrokerError("the broker has no port yet: call start() first")
        return f"127.0.0.1:{self.port}"

    # -- state -------------------------------------------------------------------------
    def read_state(self) -> dict[str, object] | None:
        """The recorded state of this data dir, or None."""
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _write_state(self, cluster_id: str) -> None:
        state = {
            "pid": self.pid,
            "port": self.port,
            "controller_port": self.controller_port,
            "bootstrap": self.bootstrap,
            "cluster_id": cluster_id,
            "data_dir": str(self.data_dir),
            "start_seconds": self.start_seconds,
            "started_unix": time.time(),
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.state_file)

    def status(self, *, check_ready: bool = True) -> BrokerStatus:
        """Look at the recorded process: alive? answering an admin client?"""
        state = self.read_state() or {}
        pid = state.get("pid")
        port = state.get("port")
        running = isinstance(pid, int) and _is_our_broker(pid, self.data_dir)
        bootstrap = f"127.0.0.1:{port}" if isinstance(port, int) else None
        ready = bool(running and check_ready and bootstrap and admin_lists_topics(bootstrap))
        start = state.get("start_seconds")
        return BrokerStatus(
            running=running,
            ready=ready,
            pid=pid if isinstance(pid, int) else None,
            port=port if isinstance(port, int) else None,
            bootstrap=bootstrap,
            data_dir=str(self.data_dir),
            start_seconds=float(start) if isinstance(start, int | float) else None,
        )

    # -- config ------------------------------------------------------------------------
    def _choose_ports(self, state: dict[str, object]) -> None:
        old_port = state.get("port")
        old_cport = state.get("controller_port")
        if self.requested_port is not None:
            self.port = self.requested_port
            if not port_free(self.port):
                raise BrokerError(f"port {self.port} on 127.0.0.1 is already in use")
        elif isinstance(old_port, int) and port_free(old_port):
            self.port = old_port  # keep the bootstrap stable across restarts
        else:
            self.port = free_port()
        if isinstance(old_cport, int) and old_cport != self.port and port_free(old_cport):
            self.controller_port = old_cport
        else:
            cport = free_port()
            while cport == self.port:
                cport = free_port()
            self.controller_port = cport

    def _write_config(self) -> Path:
        logs = self.data_dir / "logs"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(logs),
            "auto.create.topics.enable": "false",
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # the cleaner's dedupe map is 128 MiB by default: far too much for 512 MiB heap
            "log.cleaner.dedupe.buffer.size": str(2 * 1024 * 1024),
            "log.cleaner.threads": "1",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "background.threads": "2",
            "log.segment.bytes": str(64 * 1024 * 1024),
            **self.extra_props,
        }
        path = self.data_dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def _write_log4j(self) -> Path:
        path = self.data_dir / "log4j2.properties"
        path.write_text(
            "status = warn\n"
            "appender.file.type = File\n"
            "appender.file.name = FILE\n"
            f"appender.file.fileName = {self.log_file}\n"
            "appender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = INFO\n"
            "rootLogger.appenderRefs = file\n"
            "rootLogger.appenderRef.file.ref = FILE\n"
            "logger.state.name = state.change.logger\n"
            "logger.state.level = WARN\n"
        )
        return path

    def _java(self, main: str, *args: str, log4j: Path) -> list[str]:
        return [
            "java",
            *JVM_OPTS,
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={self.data_dir}",
            "-cp",
            str(self.home / "libs" / "*"),
            main,
            *args,
        ]

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the broker log and of the JVM's own output."""
        out: list[str] = []
        for path in (self.log_file, self.data_dir / OUT_NAME):
            try:
                text = path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            out.append(f"--- {path} ---")
            out.extend(text[-lines:])
        return "\n".join(out) or "(no broker log yet)"

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> BrokerStatus:
        """Start the broker (format storage first time) and wait until it is ready.

        Idempotent: if this data dir's broker already runs, return its status.

        Raises
        ------
        BrokerError
            Java missing, formatting failed, the process died or was not ready in time;
            the message quotes the broker log tail.
        """
        current = self.status(check_ready=False)
        if current.running:
            self.pid, self.port = current.pid, current.port
            self.start_seconds = current.start_seconds
            return self.status()
        t0 = time.monotonic()
        fetch_jars(self.home)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        state = self.read_state() or {}
        self._choose_ports(state)
        config = self._write_config()
        log4j = self._write_log4j()
        meta = self.data_dir / "logs" / "meta.properties"
        cluster_id = str(state.get("cluster_id") or "")
        if not meta.is_file():
            cluster_id = random_cluster_id()
            cmd = self._java(
                "kafka.tools.StorageTool",
                "format",
                "--cluster-id",
                cluster_id,
                "--config",
                str(config),
                log4j=log4j,
            )
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
            except FileNotFoundError as exc:
                raise BrokerError("'java' is not on PATH: install a JDK 17") from exc
            if proc.returncode != 0:
                raise BrokerError(
                    f"formatting the Kafka storage failed:\n{proc.stdout}\n{proc.stderr}"
                )
        elif not cluster_id:
            for line in meta.read_text().splitlines():
                if line.startswith("cluster.id="):
                    cluster_id = line.split("=", 1)[1].strip()
        for attempt in range(3):
            try:
                self._launch(config, log4j, cluster_id, t0)
                break
            except _PortTakenError:
                # auto-chosen ports can be grabbed between our probe and the JVM's bind
                # on a busy machine; an operator's --port is theirs to fix
                if self.requested_port is not None or attempt == 2:
                    raise
                log.warning("kafka ports were taken before the broker bound them: retrying")
                self._choose_ports({})
                config = self._write_config()
        self.start_seconds = round(time.monotonic() - t0, 3)
        self._write_state(cluster_id)
        log.info("kafka broker ready at %s in %.1f s", self.bootstrap, self.start_seconds)
        return BrokerStatus(
            running=True,
            ready=True,
            pid=self.pid,
            port=self.port,
            bootstrap=self.bootstrap,
            data_dir=str(self.data_dir),
            start_seconds=self.start_seconds,
        )

    def _launch(self, config: Path, log4j: Path, cluster_id: str, t0: float) -> None:
        cmd = self._java("kafka.Kafka", str(config), log4j=log4j)
        self._log_marks = {
            p: p.stat().st_size if p.exists() else 0
            for p in (self.log_file, self.data_dir / OUT_NAME)
        }
        try:
            # own session: survives the CLI that started it, and Ctrl-C in the
            # terminal does not reach it (``idq kafka down`` stops it)
            self._proc = start_process(
                cmd,
                self.data_dir / OUT_NAME,
                cwd=self.data_dir,
                preexec_fn=_die_with_parent_hook() if self.tie_to_parent else None,
            )
        except FileNotFoundError as exc:
            raise BrokerError("'java' is not on PATH: install a JDK 17") from exc
        self.pid = self._proc.pid
        self._write_state(cluster_id)
        self._wait_ready(t0)

    def _log_since_launch(self) -> str:
        """What the broker logged since the last launch (the logs append across runs)."""
        text = []
        for path, mark in self._log_marks.items():
            try:
                with open(path, "rb") as f:
                    f.seek(mark)
                    text.append(f.read().decode(errors="replace"))
            except OSError:
                continue
        return "\n".join(text)

    def _wait_ready(self, t0: float) -> None:
        deadline = t0 + self.start_timeout
        delay = 0.1
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                tail = self.log_tail()
                if "Address already in use" in self._log_since_launch():
                    self._clear_pid()
                    raise _PortTakenError(f"a broker port was already in use:\n{tail}")
                raise BrokerError(
                    f"the Kafka broker exited with code {self._proc.returncode} before it was "
                    f"ready:\n{self.log_tail()}"
                )
            if admin_lists_topics(self.bootstrap, timeout=min(2.0, self.start_timeout)):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(
                    f"the Kafka broker at {self.bootstrap} was not ready within "
                    f"{self.start_timeout:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(delay)  # polling a real external process: a real wait is the point
            delay = min(delay * 1.5, 1.0)

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker: SIGTERM (clean shutdown), SIGKILL after ``timeout`` seconds.

        Returns True if a running broker was stopped, False if none was running.
        """
        state = self.read_state() or {}
        pid = self.pid if self.pid is not None else state.get("pid")
        if not isinstance(pid, int) or not _is_our_broker(pid, self.data_dir):
            self._clear_pid()
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not self._wait_gone(pid, timeout):
            log.warning("kafka broker %d ignored SIGTERM for %.0f s: killing it", pid, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._wait_gone(pid, 10.0)
        self._clear_pid()
        return True

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def _clear_pid(self) -> None:
        self.pid = None
        self._proc = None
        state = self.read_state()
        if state is not None and state.get("pid") is not None:
            state["pid"] = None
            self.state_file.write_text(json.dumps(state, indent=2) + "\n")

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def local_bootstrap() -> str | None:
    """Bootstrap address of the broker ``idq kafka up`` runs, or None when none runs."""
    from idq_dev.jars import kafka_home

    status = LocalBroker(kafka_home() / "data").status(check_ready=False)
    return status.bootstrap if status.running else None
