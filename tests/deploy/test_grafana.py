"""Grafana dashboards: they parse, every panel queries something, and every metric named
in the dashboards and the alert rules is one the code exports (the contract)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from idq_common.contracts import SERVICES
from idq_dev.testing.prometheus import (
    architecture_metric_names,
    extract_expressions,
    metric_names,
)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
RULES = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))


def contract_names() -> set[str]:
    """The metric names of docs/ARCHITECTURE.md; test_prometheus_live.py checks that
    idq_common.metrics exports every one of them."""
    doc = architecture_metric_names(ROOT / "docs" / "ARCHITECTURE.md")
    assert len(doc) >= 20
    return doc


def test_dashboard_files() -> None:
    names = {p.name for p in DASHBOARDS}
    assert names == {"idq-overview.json", *(f"idq-{s}.json" for s in SERVICES)}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_structure(path: Path) -> None:
    doc = json.loads(path.read_text())
    assert doc["uid"] == path.stem and doc["title"].startswith("iDQ / ")
    variables = {v["name"] for v in doc["templating"]["list"]}
    assert {"datasource", "ifo"} <= variables
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)) and ids
    for panel in doc["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert 'ifo=~"$ifo"' in target["expr"], (panel["title"], target["expr"])
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))


def test_overview_covers_the_operator_questions() -> None:
    doc = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "idq-overview.json").read_text())
    used = set().union(*(metric_names(t["expr"]) for p in doc["panels"] for t in p["targets"]))
    for name in (
        "idq_strides_processed_total",
        "idq_latency_seconds",
        "idq_consumer_lag_messages",
        "idq_deadletter_messages_total",
        "idq_gaps_total",
        "idq_model_info",
        "idq_calibration_info",
        "idq_model_age_seconds",
        "idq_calibration_age_seconds",
        "idq_latest_pglitch_max",
        "idq_latest_fap_min",
        "idq_ok_fraction",
    ):
        assert name in used, name


def test_every_metric_used_is_in_the_contract() -> None:
    known = contract_names()
    exprs = extract_expressions(RULES, DASHBOARDS)
    used = set().union(*(metric_names(e.expr, known) for e in exprs))
    assert used, "no metrics found"
    unknown = used - known
    assert not unknown, f"metrics used in deploy/ but not in the contract: {sorted(unknown)}"
    # the dashboards between them show every metric of the contract
    dashboard_used = set().union(
        *(metric_names(e.expr, known) for e in extract_expressions((), DASHBOARDS))
    )
    assert not known - dashboard_used, sorted(known - dashboard_used)


def test_dashboards_are_generated() -> None:
    sys.path.insert(0, str(ROOT / "deploy" / "grafana"))
    try:
        import build_dashboards  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    for name, doc in build_dashboards.build().items():
        on_disk = (ROOT / "deploy" / "grafana" / "dashboards" / name).read_text()
        assert on_disk == build_dashboards.render(doc), (
            f"run deploy/grafana/build_dashboards.py ({name})"
        )
