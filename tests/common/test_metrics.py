"""StageMetrics and MetricsServer over real HTTP on a free port."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from idq_common.gpstime import ManualClock, gps_to_unix
from idq_common.metrics import MetricsServer, StageMetrics

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_400_000_000.0


def contract_names() -> set[str]:
    """Metric names of the table in docs/ARCHITECTURE.md, "Metrics"."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| idq_"):
            names.update(re.findall(r"idq_[a-z_]+", line.split("|")[1]))
    return names


def get(url: str) -> tuple[int, str]:
    """Status and body of a GET, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Parsed exposition: (sample name, labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def lab(**kw: str) -> frozenset[tuple[str, str]]:
    return frozenset({"stage": "timeseries", "ifo": "L1", **kw}.items())


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def served(clock: ManualClock) -> Iterator[tuple[StageMetrics, MetricsServer]]:
    metrics = StageMetrics("timeseries", "L1", clock=clock)
    server = MetricsServer("127.0.0.1", 0, metrics, liveness_timeout=60.0).start()
    try:
        yield metrics, server
    finally:
        server.stop()


def test_contract_table_is_parsed() -> None:
    names = contract_names()
    assert len(names) == 22  # 17 rows, five of which name two metrics
    assert {"idq_gap_seconds_total", "idq_calibration_info", "idq_ready"} <= names


def test_every_contract_metric_is_exposed(served: tuple[StageMetrics, MetricsServer]) -> None:
    metrics, server = served
    assert server.port > 0
    metrics.heartbeat()
    metrics.stride_done(T0 - 8, T0 - 4, 0.2)
    metrics.lag("idq.L1.features", 7)
    metrics.deadletter("decode")
    metrics.gap(T0 - 4, T0)
    metrics.accumulated("ovl", 12)
    metrics.samples("ovl", "glitch", 3)
    metrics.model_published("ovl")
    metrics.calibration_published("ovl")
    metrics.set_model("ovl", "model/abc", T0 - 100)
    metrics.set_calibration("ovl", "calibration/def", T0 - 50)
    metrics.frame_written()
    metrics.stride_products("ovl", 0.75, 0.9, 0.001)
    metrics.set_ready(True)
    status, text = get(f"{server.url}/metrics")
    assert status == 200
    families = {f.name for f in text_string_to_metric_families(text)}
    names = {s[0] for s in samples(text)}
    missing = {n for n in contract_names() if n not in names and n not in families}
    assert not missing, sorted(missing)
    # every series carries stage and ifo
    for (name, labels), _ in samples(text).items():
        keys = dict(labels)
        assert keys.get("stage") == "timeseries" and keys.get("ifo") == "L1", name


def test_values(served: tuple[StageMetrics, MetricsServer], clock: ManualClock) -> None:
    metrics, server = served
    metrics.stride_done(T0 - 8, T0 - 4, 0.2)
    metrics.stride_done(T0 - 4, T0, 0.4, n=2)
    metrics.gap(T0, T0 + 16)
    metrics.samples("ovl", "glitch", 3)
    metrics.samples("ovl", "clean", 5)
    metrics.samples("ovl", "clean", 5)
    metrics.deadletter("decode")
    metrics.deadletter("decode")
    metrics.set_model("ovl", "model/a", T0 - 100)
    metrics.set_model("ovl", "model/b", T0 - 30)  # replaces a
    metrics.stride_products("ovl", 0.5, 0.8, 0.01)
    metrics.lag("idq.L1.features", 4)
    clock.advance(10)
    s = samples(get(f"{server.url}/metrics")[1])
    assert s[("idq_strides_processed_total", lab())] == 3
    assert s[("idq_stride_processing_seconds_count", lab())] == 2
    assert s[("idq_stride_processing_seconds_sum", lab())] == pytest.approx(0.6)
    assert s[("idq_last_stride_end_gps", lab())] == T0
    assert s[("idq_gaps_total", lab())] == 1
    assert s[("idq_gap_seconds_total", lab())] == 16
    assert s[("idq_samples_total", lab(classifier="ovl", label="glitch"))] == 3
    assert s[("idq_samples_total", lab(classifier="ovl", label="clean"))] == 10
    assert s[("idq_deadletter_messages_total", lab(reason="decode"))] == 2
    assert s[("idq_consumer_lag_messages", lab(topic="idq.L1.features"))] == 4
    assert s[("idq_ok_fraction", lab(classifier="ovl"))] == 0.5
    assert s[("idq_latest_pglitch_max", lab(classifier="ovl"))] == 0.8
    assert s[("idq_latest_fap_min", lab(classifier="ovl"))] == 0.01
    # only the id in use is reported
    assert s[("idq_model_info", lab(classifier="ovl", id="model/b"))] == 1
    assert ("idq_model_info", lab(classifier="ovl", id="model/a")) not in s
    # computed at scrape time from the clock
    assert s[("idq_latency_seconds", lab())] == 10
    assert s[("idq_model_age_seconds", lab(classifier="ovl"))] == 40
    clock.advance(5)
    s = samples(get(f"{server.url}/metrics")[1])
    assert s[("idq_latency_seconds", lab())] == 15
    assert s[("idq_model_age_seconds", lab(classifier="ovl"))] == 45


def test_liveness_transitions(
    served: tuple[StageMetrics, MetricsServer], clock: ManualClock
) -> None:
    metrics, server = served
    # alive from start
    assert get(f"{server.url}/healthz")[0] == 200
    clock.advance(59)
    assert get(f"{server.url}/healthz")[0] == 200
    clock.advance(2)
    status, body = get(f"{server.url}/healthz")
    assert status == 503 and "stalled" in body and "61.0s" in body
    metrics.heartbeat()
    assert get(f"{server.url}/healthz")[0] == 200
    s = samples(get(f"{server.url}/metrics")[1])
    assert s[("idq_loop_heartbeat_timestamp_seconds", lab())] == gps_to_unix(T0 + 61)
    clock.advance(120)
    assert get(f"{server.url}/healthz")[0] == 503


def test_readiness_transitions(served: tuple[StageMetrics, MetricsServer]) -> None:
    metrics, server = served
    assert get(f"{server.url}/readyz")[0] == 503
    metrics.set_ready(True)
    assert get(f"{server.url}/readyz") == (200, "ready\n")
    assert samples(get(f"{server.url}/metrics")[1])[("idq_ready", lab())] == 1
    metrics.set_ready(False)
    assert get(f"{server.url}/readyz")[0] == 503
    assert get(f"{server.url}/nope")[0] == 404


def test_independent_registries_and_ordered_stop(clock: ManualClock) -> None:
    """Two stages in one process do not collide; stop() frees the port and is idempotent."""
    a = StageMetrics("train", "H1", clock=clock)
    b = StageMetrics("evaluate", "H1", clock=clock)
    with MetricsServer("127.0.0.1", 0, a) as sa, MetricsServer("127.0.0.1", 0, b) as sb:
        a.stride_done(T0 - 4, T0, 0.1)
        assert sa.port != sb.port
        ta, tb = get(f"{sa.url}/metrics")[1], get(f"{sb.url}/metrics")[1]
        assert 'stage="train"' in ta and 'stage="evaluate"' not in ta
        assert (
            samples(tb)[
                (
                    "idq_strides_processed_total",
                    frozenset({"stage": "evaluate", "ifo": "H1"}.items()),
                )
            ]
            == 0
        )
        url = sa.url
    sa.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/metrics", timeout=5)
