"""Local ports and child processes: the one copy the broker, test servers, pipeline and bench use.

A free port is only free when asked: a server that loses the race reports it and its
caller retries with another (the broker and Prometheus do).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack, closing
from pathlib import Path

log = logging.getLogger(__name__)


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports on 127.0.0.1 free right now (held open together so they differ)."""
    with ExitStack() as stack:
        socks = [
            stack.enter_context(closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)))
            for _ in range(n)
        ]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    return free_ports(1)[0]


def port_free(port: int) -> bool:
    """True when ``port`` can be bound on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # as a listening server binds (Kafka does): connections of a just-stopped
        # broker in TIME_WAIT must not make its own port look taken on restart
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def start_process(
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    new_session: bool = True,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` with stdout and stderr appended to ``log_path``.

    ``new_session`` (the default) gives the child its own process group, so Ctrl-C in a
    terminal does not reach it and :func:`stop_process` can signal the whole group.

    Raises
    ------
    FileNotFoundError
        If the program does not exist.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=new_session,
            preexec_fn=preexec_fn,
        )


def stop_process(
    proc: subprocess.Popen[bytes] | None,
    timeout: float = 20.0,
    group: bool = False,
    name: str = "",
) -> int | None:
    """SIGTERM ``proc`` (its process group if ``group``), SIGKILL after ``timeout`` s.

    Returns the exit status (None when there was no process).
    """
    return stop_processes({name or "process": proc}, timeout, group)[name or "process"]


def stop_processes(
    procs: Mapping[str, subprocess.Popen[bytes] | None],
    timeout: float = 20.0,
    group: bool = False,
) -> dict[str, int | None]:
    """SIGTERM every process of ``procs`` at once, then wait; SIGKILL what outlives ``timeout``.

    Signalling all first lets their graceful shutdowns (final commits, flushes) overlap,
    so stopping a pipeline costs one service's shutdown time, not the sum. Returns
    each name's exit status (None when there was no process).
    """
    for proc in procs.values():
        if proc is not None and proc.poll() is None:
            _signal(proc, signal.SIGTERM, group)
    deadline = time.monotonic() + timeout
    statuses: dict[str, int | None] = {}
    for name, proc in procs.items():
        if proc is None:
            statuses[name] = None
            continue
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s: killing it", name, timeout)
            _signal(proc, signal.SIGKILL, group)
            proc.wait(30)
        statuses[name] = proc.returncode
    return statuses


def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals, group: bool) -> None:
    try:
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    except ProcessLookupError:
        pass
