"""A small local DQSegDB server speaking the REST paths ``dqsegdb2`` uses.

Paths (DQSegDB API, LIGO-T1300625 section 5.1, as built by ``dqsegdb2.api``)::

    GET /dq                                   {"Ifos": [...]}
    GET /dq/{ifo}                             {"results": [names]}
    GET /dq/{ifo}/{name}                      {"resource_type": "version", "version": [...]}
    GET /dq/{ifo}/{name}/{version}?s=&e=&include=known,active[,metadata]
                                              {"ifo", "name", "version", "known": [[s, e], ...],
                                               "active": [...], "metadata": {...},
                                               "query_information": {...}}

Segments are clipped to ``[s, e)`` like the real server. Modes for failure tests:
``"ok"``; ``"down"`` (HTTP 503 on every request); ``"garbage"`` (HTTP 200 with a body
that is not JSON); and ``delay`` seconds before every answer (a slow server). :meth:`DQSegDBServer.stop` then a request gives connection refused.
Binds 127.0.0.1 on a free port; runs in a daemon thread.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

Segs = list[tuple[float, float]]


def _clip(segs: Segs, s: float, e: float) -> list[list[float]]:
    out = []
    for a, b in segs:
        lo, hi = max(a, s), min(b, e)
        if hi > lo:
            out.append([lo, hi])
    return out


class DQSegDBServer:
    """Serve configured flags over HTTP on 127.0.0.1.

    Parameters
    ----------
    flags : mapping
        ``{"H1:NAME:1": {"known": [(s, e), ...], "active": [(s, e), ...]}}``.
    """

    def __init__(
        self, flags: dict[str, dict[str, Iterable[Sequence[float]]]] | None = None
    ) -> None:
        self.flags: dict[tuple[str, str, int], dict[str, Segs]] = {}
        for flag, segs in (flags or {}).items():
            self.set_flag(flag, segs["known"], segs["active"])
        self.mode = "ok"
        self.delay = 0.0
        self.requests: list[str] = []  # paths served, for tests
        #: (start, end) of every flag query answered with segments (what a client knew)
        self.answered: list[tuple[float, float]] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def set_flag(
        self, flag: str, known: Iterable[Sequence[float]], active: Iterable[Sequence[float]]
    ) -> None:
        """Define ``IFO:NAME:VERSION`` with its known and active segments."""
        ifo, name, version = flag.split(":")
        self.flags[(ifo, name, int(version))] = {
            "known": [(float(s), float(e)) for s, e in known],
            "active": [(float(s), float(e)) for s, e in active],
        }

    # -- lifecycle -----------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> DQSegDBServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._serve(self)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="dqsegdb-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> DQSegDBServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request handling ------------------------------------------------------------
    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.requests.append(h.path)
            mode = self.mode
        if self.delay > 0:  # a slow server (chaos): every answer takes this long
            time.sleep(self.delay)
        if mode == "down":
            return self._send(h, 503, b'{"error": "service unavailable"}')
        if mode == "garbage":
            return self._send(h, 200, b"<html>this is not json")
        url = urlsplit(h.path)
        parts = [p for p in url.path.split("/") if p]
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if not parts or parts[0] != "dq":
            return self._json(h, 404, {"error": f"unknown path {url.path}"})
        parts = parts[1:]
        if not parts:
            return self._json(h, 200, {"Ifos": sorted({k[0] for k in self.flags})})
        if len(parts) == 1:
            names = sorted({k[1] for k in self.flags if k[0] == parts[0]})
            return self._json(h, 200, {"results": names})
        ifo, name = parts[0], parts[1]
        versions = sorted(k[2] for k in self.flags if k[:2] == (ifo, name))
        if not versions:
            return self._json(h, 404, {"error": f"flag {ifo}:{name} not found"})
        if len(parts) == 2:
            return self._json(h, 200, {"resource_type": "version", "version": versions})
        try:
            version = int(parts[2])
            data = self.flags[(ifo, name, version)]
            s = float(query.get("s", "-inf"))
            e = float(query.get("e", "inf"))
        except (ValueError, KeyError):
            return self._json(h, 404, {"error": f"bad resource {url.path}?{url.query}"})
        include = query.get("include", "known,active").split(",")
        body: dict[str, Any] = {"ifo": ifo, "name": name, "version": version}
        for key in ("known", "active"):
            if key in include:
                body[key] = _clip(data[key], s, e)
        if "metadata" in include:
            body["metadata"] = {
                "active_indicates_ifo_badness": False,
                "comment": "local test server",
            }
        body["query_information"] = {"uri": h.path, "start": s, "end": e, "server": "idq-local"}
        with self._lock:
            self.answered.append((s, e))
        return self._json(h, 200, body)

    @staticmethod
    def _json(h: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        DQSegDBServer._send(h, status, json.dumps(body).encode())

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, payload: bytes) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)
