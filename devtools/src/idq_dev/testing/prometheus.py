"""A real Prometheus for tests, and a checker of the PromQL in deploy/.

:class:`PrometheusServer` runs the Prometheus binary (Debian package ``prometheus``;
``make system-deps``) on ``127.0.0.1`` on a free port with a generated configuration that
scrapes the given targets every second, storage in a temporary directory. It waits until
``/-/ready`` answers, offers :meth:`~PrometheusServer.query` over the HTTP API, and stops
the process on exit.

:func:`extract_expressions` pulls every PromQL expression out of the alert/recording rule
files and the Grafana dashboards; :func:`check_expressions` runs them against a server and
reports which fail to parse and which reference metrics that have no data.

Pytest: the ``prometheus_factory`` fixture (registered in ``tests/conftest.py``) returns a
callable ``factory(targets) -> PrometheusServer`` and stops every server at teardown.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from idq_common.exceptions import IDQError
from idq_dev.processes import free_port, start_process, stop_process

__all__ = [
    "GRAFANA_VARIABLES",
    "Expression",
    "ExpressionReport",
    "PrometheusError",
    "PrometheusServer",
    "architecture_metric_names",
    "check_expressions",
    "extract_expressions",
    "metric_names",
    "metric_selectors",
    "prometheus_factory",
    "substitute_variables",
]

# Values for the Grafana variables used in deploy/grafana, so the expressions run as-is.
GRAFANA_VARIABLES: dict[str, str] = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
    "ifo": ".*",
    "datasource": "prometheus",
}

# A metric name (not a recording rule name, which holds ':'), optionally with matchers.
_SELECTOR = re.compile(r"(?<![\w:])(idq_[a-zA-Z0-9_]+)(\{[^}]*\})?")
_SUFFIXES = ("_bucket", "_sum", "_count", "_created")


class PrometheusError(IDQError):
    """Prometheus could not be started, or a query failed (``error_type`` from the API)."""

    def __init__(self, message: str, error_type: str = "") -> None:
        super().__init__(message)
        self.error_type = error_type


class PrometheusServer:
    """A Prometheus process scraping ``targets`` (``host:port``) every ``scrape_interval`` s.

    Parameters
    ----------
    targets : sequence of str
        ``host:port`` of the ``/metrics`` endpoints to scrape (job ``idq``).
    workdir : path
        Directory for the generated configuration, the TSDB and the log.
    scrape_interval : float
        Seconds between scrapes (also the rule evaluation interval).
    rule_files : sequence of path, optional
        Rule files to load (e.g. deploy/prometheus/rules/idq.rules.yml).
    binary : str, optional
        The Prometheus executable (default: ``prometheus`` on ``PATH``).
    startup_timeout : float
        Seconds to wait for ``/-/ready``.
    """

    def __init__(
        self,
        targets: Sequence[str],
        workdir: str | os.PathLike[str],
        *,
        scrape_interval: float = 1.0,
        rule_files: Sequence[str | os.PathLike[str]] = (),
        binary: str | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.targets = list(targets)
        self.workdir = Path(workdir)
        self.scrape_interval = scrape_interval
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.binary = binary or shutil.which("prometheus") or ""
        self.startup_timeout = startup_timeout
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the HTTP API, e.g. ``http://127.0.0.1:41234``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    def write_config(self) -> Path:
        """Write the scrape configuration (JSON is valid YAML) and return its path."""
        interval = f"{max(int(self.scrape_interval * 1000), 100)}ms"
        config = {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": interval,
            },
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {"job_name": "idq", "static_configs": [{"targets": self.targets}]},
            ],
        }
        path = self.workdir / "prometheus.yml"
        path.write_text(json.dumps(config, indent=2))
        return path

    def start(self) -> PrometheusServer:
        """Start the process and wait until it is ready; retries on a port taken meanwhile."""
        if not self.binary:
            raise PrometheusError(
                "prometheus binary not found: run `make system-deps` (Debian package prometheus)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.write_config()
        last = ""
        for _attempt in range(3):
            self.port = free_port()
            self._proc = start_process(
                [
                    self.binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1d",
                    "--log.level=warn",
                ],
                self.log_path,
                new_session=False,
            )
            try:
                self._wait_ready()
                return self
            except PrometheusError as exc:
                last = str(exc)
                self.stop()
                if "address already in use" not in self.log_path.read_text(errors="replace"):
                    break
        raise PrometheusError(f"prometheus did not start: {last}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        assert self._proc is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise PrometheusError(f"exited with {self._proc.returncode}: {tail}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)  # polling a condition (readiness), not pacing logic
        raise PrometheusError(f"not ready after {self.startup_timeout} s")

    def stop(self) -> None:
        """Terminate the process (kill after 10 s)."""
        proc, self._proc = self._proc, None
        stop_process(proc, timeout=10, name="prometheus")

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- HTTP API ------------------------------------------------------------------------

    def api(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET ``/api/v1/<path>``; return ``data`` or raise :class:`PrometheusError`."""
        query = "?" + urllib.parse.urlencode(params) if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=30) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:  # 400/422: the body still says why
            body = json.load(exc)
        if body.get("status") != "success":
            raise PrometheusError(body.get("error", "query failed"), body.get("errorType", ""))
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query; the result as a list of ``{"metric": {...}, "value": [t, v]}``.

        A scalar or string result comes back as one element with an empty ``metric``.
        """
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def targets_up(self) -> dict[str, bool]:
        """``instance -> health == up`` of the active targets."""
        data = self.api("targets", {"state": "active"})
        return {t["labels"]["instance"]: t["health"] == "up" for t in data["activeTargets"]}

    def wait_until(
        self, predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition"
    ) -> None:
        """Poll ``predicate`` until it is true; raise :class:`PrometheusError` on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(min(self.scrape_interval / 4, 0.25))
        raise PrometheusError(f"timed out after {timeout} s waiting for {what}")

    def wait_for_scrapes(self, n: int = 2, timeout: float = 30.0) -> None:
        """Wait until every target has been scraped successfully at least ``n`` times.

        A target need not be up at the end: a replaying service exits when its span is
        done, and what it exported until then is what the caller wants to see.
        """

        def done() -> bool:
            # up is 1 for a successful scrape, 0 for a failed one: the sum counts successes
            counts = self.query("sum_over_time(up[1h])")
            return len(counts) >= len(self.targets) and all(
                float(r["value"][1]) >= n for r in counts
            )

        self.wait_until(done, timeout, f"{n} scrapes of {self.targets}")

    def wait_for_data(self, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until ``expr`` returns a non-empty result, and return it."""
        box: list[list[dict[str, Any]]] = []

        def has_data() -> bool:
            box[:] = [self.query(expr)]
            return bool(box[0])

        self.wait_until(has_data, timeout, f"data for {expr}")
        return box[0]


# -- expressions of deploy/ ---------------------------------------------------------------


@dataclass(frozen=True)
class Expression:
    """One PromQL expression and where it comes from (file and panel/rule)."""

    expr: str
    source: str


@dataclass
class ExpressionReport:
    """The outcome of :func:`check_expressions`.

    ``parse_errors`` maps expression -> error; ``no_data`` maps expression -> the metric
    selectors in it that return no series; ``empty`` lists expressions that parse and whose
    metrics have data but whose whole result is empty (normal for a quiet alert).
    """

    checked: list[Expression] = field(default_factory=list)
    parse_errors: dict[str, str] = field(default_factory=dict)
    no_data: dict[str, list[str]] = field(default_factory=dict)
    empty: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every expression parsed (data is judged separately)."""
        return not self.parse_errors

    def summary(self) -> str:
        lines = [f"{len(self.checked)} expressions checked"]
        lines += [f"PARSE ERROR {e!r}: {err}" for e, err in self.parse_errors.items()]
        lines += [f"NO DATA {e!r}: {', '.join(sel)}" for e, sel in self.no_data.items()]
        return "\n".join(lines)


def substitute_variables(expr: str, values: Mapping[str, str] = GRAFANA_VARIABLES) -> str:
    """Replace Grafana ``$name`` / ``${name}`` / ``[[name]]`` variables by ``values``."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in values:
            raise KeyError(f"no value for Grafana variable {name!r} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]", repl, expr)


def _dashboard_panels(panels: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _dashboard_panels(panel.get("panels", []))  # rows hold panels


def extract_expressions(
    rule_files: Iterable[str | os.PathLike[str]] = (),
    dashboards: Iterable[str | os.PathLike[str]] = (),
    variables: Mapping[str, str] = GRAFANA_VARIABLES,
) -> list[Expression]:
    """Every ``expr`` of the rule files and of the dashboards' panel targets.

    Dashboard expressions have their Grafana variables substituted (``variables``).
    """
    import yaml  # PyYAML: a test-time dependency (requirements-dev.txt)

    out: list[Expression] = []
    for path in map(Path, rule_files):
        doc = yaml.safe_load(path.read_text())
        for group in doc.get("groups", []):
            for rule in group.get("rules", []):
                name = rule.get("alert") or rule.get("record")
                out.append(Expression(str(rule["expr"]).strip(), f"{path.name}:{name}"))
    for path in map(Path, dashboards):
        doc = json.loads(path.read_text())
        for panel in _dashboard_panels(doc.get("panels", [])):
            for target in panel.get("targets", []):
                if "expr" in target:
                    expr = substitute_variables(target["expr"], variables)
                    out.append(Expression(expr, f"{path.name}:{panel.get('title', '')}"))
    return out


def metric_selectors(expr: str) -> list[str]:
    """The ``idq_*`` instant-vector selectors (name plus matchers) in ``expr``."""
    return [m.group(0) for m in _SELECTOR.finditer(expr)]


def metric_names(expr: str, known: Iterable[str] = ()) -> set[str]:
    """Metric family names used in ``expr``; ``_bucket``/``_sum``/``_count`` are folded into
    their family when the family is in ``known``."""
    known_set = set(known)
    names = set()
    for m in _SELECTOR.finditer(expr):
        name = m.group(1)
        for suffix in _SUFFIXES:
            if name.endswith(suffix) and name[: -len(suffix)] in known_set:
                name = name[: -len(suffix)]
        names.add(name)
    return names


def architecture_metric_names(path: str | os.PathLike[str]) -> set[str]:
    """Metric names of the table in docs/ARCHITECTURE.md, section "Metrics"."""
    text = Path(path).read_text()
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| idq_"):
            names.update(re.findall(r"idq_[a-z0-9_]+", line.split("|")[1]))
    return names


def check_expressions(
    prom: PrometheusServer, exprs: Iterable[Expression | str]
) -> ExpressionReport:
    """Run every expression against ``prom``; report parse errors and metrics without data.

    An expression "has data" when every ``idq_*`` selector in it returns at least one
    series; alerts legitimately return nothing while the system is healthy, so the
    result of the whole expression is only recorded in ``empty``.
    """
    report = ExpressionReport()
    selector_cache: dict[str, bool] = {}
    for item in exprs:
        e = item if isinstance(item, Expression) else Expression(item, "")
        report.checked.append(e)
        try:
            result = prom.query(e.expr)
        except PrometheusError as exc:
            report.parse_errors[e.expr] = f"{exc.error_type}: {exc}"
            continue
        missing = []
        for sel in metric_selectors(e.expr):
            if sel not in selector_cache:
                selector_cache[sel] = bool(prom.query(sel))
            if not selector_cache[sel]:
                missing.append(sel)
        if missing:
            report.no_data[e.expr] = missing
        elif not result:
            report.empty.append(e.expr)
    return report


@pytest.fixture
def prometheus_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., PrometheusServer]]:
    """``factory(targets, **kwargs) -> PrometheusServer`` (started); all stopped at teardown."""
    servers: list[PrometheusServer] = []

    def factory(targets: Sequence[str], **kwargs: Any) -> PrometheusServer:
        server = PrometheusServer(targets, tmp_path_factory.mktemp("prometheus"), **kwargs)
        servers.append(server)
        return server.start()

    yield factory
    for server in servers:
        server.stop()
