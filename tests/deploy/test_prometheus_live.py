"""A real Prometheus (Debian binary) scraping real /metrics endpoints on 127.0.0.1.

These tests prove the helper of ``idq_dev.testing.prometheus`` (start, scrape, query,
stop) and that every PromQL expression of deploy/ parses in that Prometheus. That the
expressions also return data is asserted by the end-to-end run, where the services run.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from idq_common.contracts import SERVICES
from idq_dev.testing.prometheus import (
    Expression,
    PrometheusError,
    PrometheusServer,
    architecture_metric_names,
    check_expressions,
    extract_expressions,
    metric_names,
)

ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))


@pytest.fixture
def toy_endpoint() -> Iterator[tuple[str, Counter, Gauge]]:
    """A prometheus_client HTTP server on 127.0.0.1 (free port) with two metrics."""
    registry = CollectorRegistry()
    strides = Counter("idq_strides_processed", "strides done", ["stage", "ifo"], registry=registry)
    latency = Gauge("idq_latency_seconds", "latency", ["stage", "ifo"], registry=registry)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{server.server_port}", strides, latency
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_server_scrapes_queries_and_reports(
    prometheus_factory: Callable[..., PrometheusServer],
    toy_endpoint: tuple[str, Counter, Gauge],
) -> None:
    target, strides, latency = toy_endpoint
    strides.labels("evaluate", "H1").inc(3)
    latency.labels("evaluate", "H1").set(4.5)
    prom = prometheus_factory([target])
    assert prom.url.startswith("http://127.0.0.1:")
    prom.wait_for_scrapes(n=2)
    assert prom.targets_up() == {target: True}

    (row,) = prom.wait_for_data('idq_latency_seconds{ifo="H1"}')
    assert row["metric"]["stage"] == "evaluate" and float(row["value"][1]) == 4.5
    # a value that changes is seen on a later scrape
    strides.labels("evaluate", "H1").inc(2)
    prom.wait_until(
        lambda: [float(r["value"][1]) for r in prom.query("idq_strides_processed_total")] == [5.0],
        what="the counter at 5",
    )

    report = check_expressions(
        prom,
        [
            Expression("sum by (stage) (rate(idq_strides_processed_total[1m]))", "ok"),
            "max(idq_latency_seconds) > 100",  # parses, data exists, result empty
            "sum(rate(idq_strides_processed_total[1m]",  # syntax error
            'idq_latency_seconds{stage="train"}',  # no such series
        ],
    )
    assert len(report.checked) == 4
    assert list(report.parse_errors) == ["sum(rate(idq_strides_processed_total[1m]"]
    assert "bad_data" in report.parse_errors["sum(rate(idq_strides_processed_total[1m]"]
    assert report.no_data == {
        'idq_latency_seconds{stage="train"}': ['idq_latency_seconds{stage="train"}']
    }
    assert report.empty == ["max(idq_latency_seconds) > 100"]
    assert not report.ok and "PARSE ERROR" in report.summary()

    with pytest.raises(PrometheusError) as err:
        prom.query("rate(")
    assert err.value.error_type == "bad_data"
    prom.stop()
    with pytest.raises(OSError):
        prom.query("up")


def test_every_deploy_expression_parses(
    prometheus_factory: Callable[..., PrometheusServer],
    toy_endpoint: tuple[str, Counter, Gauge],
) -> None:
    """All rule and dashboard PromQL is accepted by a real Prometheus, rules loaded too."""
    exprs = extract_expressions(RULES, DASHBOARDS)
    assert len(exprs) > 50
    assert len(RULES) >= 1 and len(DASHBOARDS) == 1 + len(SERVICES)
    prom = prometheus_factory([toy_endpoint[0]], rule_files=RULES)
    report = check_expressions(prom, exprs)
    assert report.ok, report.summary()
    # the rules were loaded by the server itself, not only parsed by the query API
    groups = prom.api("rules")["groups"]
    loaded = {r["name"] for g in groups for r in g["rules"]}
    assert {"IDQStageNotAdvancing", "IDQDeadLetters", "idq:strides_processed:rate5m"} <= loaded
    assert all(metric_names(e.expr) for e in exprs if "time()" not in e.expr)


def test_stage_metrics_scraped_by_real_prometheus(
    prometheus_factory: Callable[..., PrometheusServer],
) -> None:
    """The services' own metrics code (MetricsServer + StageMetrics), one server per stage,
    scraped by a real Prometheus: every contract metric is exported, and every dashboard and
    rule expression parses against it. (The e2e run asserts that the expressions return
    data while the real stages run.)"""
    metrics = pytest.importorskip("idq_common.metrics")  # lands in parallel; see report
    from prometheus_client.parser import text_string_to_metric_families

    servers = []
    try:
        for stage in SERVICES:
            sm = metrics.StageMetrics(stage, "H1")
            server = metrics.MetricsServer("127.0.0.1", 0, sm)
            server.start()
            servers.append(server)
            sm.heartbeat()
            sm.set_ready(True)
            sm.stride_done(1_400_000_000.0, 1_400_000_004.0, 0.05, n=1)
            sm.lag(f"idq.H1.{'quivers' if stage == 'calibrate' else 'features'}", 3)
            sm.gap(1_400_000_004.0, 1_400_000_008.0)
            sm.deadletter("decode")
            sm.set_model("ovl", "abc123", 1_400_000_000.0)
            if stage in ("calibrate", "timeseries"):
                sm.set_calibration("ovl", "def456", 1_400_000_000.0)
        targets = [f"127.0.0.1:{s.port}" for s in servers]
        # every contract metric is registered by the code (families show even before use)
        with urllib.request.urlopen(f"http://{targets[-1]}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        families = {f.name for f in text_string_to_metric_families(text)}
        exported = families | {f + "_total" for f in families}
        contract = architecture_metric_names(ROOT / "docs" / "ARCHITECTURE.md")
        assert not contract - exported, sorted(contract - exported)

        prom = prometheus_factory(targets, rule_files=RULES)
        prom.wait_for_scrapes(n=2)
        assert prom.targets_up() == dict.fromkeys(targets, True)
        series = prom.query("count by (stage) (idq_strides_processed_total)")
        assert {r["metric"]["stage"] for r in series} == set(SERVICES)
        report = check_expressions(prom, extract_expressions(RULES, DASHBOARDS))
        assert report.ok, report.summary()
        driven = [
            "idq_strides_processed_total",
            "idq_latency_seconds",
            "idq_consumer_lag_messages",
            "idq_deadletter_messages_total",
            "idq_gaps_total",
            "idq_model_info",
            "idq_ready",
            "idq_loop_heartbeat_timestamp_seconds",
        ]
        for name in driven:
            assert prom.query(name), name
    finally:
        for server in servers:
            server.stop()
