"""The umbrella CLI's failure paths and what it prints: config --show, topics, kafka up."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from idq_common.config import load_settings
from idq_dev.processes import free_port

REPO = Path(__file__).resolve().parents[2]
ETC = REPO / "etc" / "idq.toml"


def _idq(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDQ_")}
    cmd = [sys.executable, "-m", "idq_common.cli.main", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def test_show_prints_readable_toml_or_json() -> None:
    out = _idq("config", "check", str(ETC), "--show")
    assert out.returncode == 0, out.stderr
    doc = tomllib.loads(out.stdout)  # valid TOML in the file's layout
    assert doc["general"]["ifo"] == "H1" and doc["classifier"][0]["nickname"] == "ovl"
    assert "# unset (no value):" in out.stdout and "store.secret" in out.stdout
    assert len(out.stdout.splitlines()) > 40  # one key a line, not one long line
    js = _idq("config", "check", str(ETC), "--show", "--format", "json")
    assert json.loads(js.stdout)["kafka"]["partitions"] == doc["kafka"]["partitions"]


def _documented(text: str) -> set[str]:
    """``section.key`` of every key and table named in the file, commented out or not."""
    section, out = "", set()
    for line in text.splitlines():
        m = re.match(r"^\s*#?\s*\[\[?([a-z_.]+)\]\]?", line)
        if m:
            section = m.group(1)
            out.add(section)
            continue
        m = re.match(r'^\s*#?\s*"?([a-z_.]+)"?\s*=', line)
        if m:
            out.add(f"{section}.{m.group(1)}" if section else m.group(1))
    return out


def _shown(d: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for k, v in d.items():
        path = f"{prefix}.{k}" if prefix else k
        if not prefix and k == "classifiers":
            for c in v:
                keys |= _shown(c, "classifier")
        elif not prefix and k == "source":
            continue  # the file itself
        elif isinstance(v, dict) and v and k.endswith("topics") | (k == "stream") | (not prefix):
            keys |= _shown(v, path)
        else:
            keys.add(path)
    return keys


def test_etc_idq_toml_documents_every_key_show_prints() -> None:
    documented = _documented(ETC.read_text())
    shown = _shown(load_settings(ETC, env={}).to_dict(mask_secrets=True))

    def known(path: str) -> bool:
        # the [*.stream] tables share their keys; librdkafka_<kind> is [kafka.librdkafka.<kind>]
        stream = re.sub(r"^\w+\.stream\.", "", path) if ".stream." in path else None
        path = re.sub(r"librdkafka_(\w+)$", r"librdkafka.\1", path)
        if stream is not None:
            return any(d.endswith(f".stream.{stream}") for d in documented)
        return path in documented

    missing = sorted(p for p in shown if not known(p))
    assert not missing, f"etc/idq.toml does not document: {missing}"


def test_topics_list_without_a_broker_is_one_line() -> None:
    out = _idq("topics", "list", "--bootstrap", f"127.0.0.1:{free_port()}")
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1, out.stderr
    assert "no Kafka broker answers at 127.0.0.1:" in out.stderr
    assert "Traceback" not in out.stderr and "FAIL" not in out.stderr


@pytest.mark.kafka
def test_topics_create_warns_when_existing_topics_have_fewer_partitions(
    kafka_bootstrap: str,
) -> None:
    ifo = f"P{os.getpid() % 10}"
    first = _idq("topics", "create", "--bootstrap", kafka_bootstrap, "--ifo", ifo)
    assert first.returncode == 0, first.stderr
    again = _idq(
        "topics", "create", "--bootstrap", kafka_bootstrap, "--ifo", ifo, "--partitions", "3"
    )
    assert again.returncode == 0, again.stderr
    assert f"exists   idq.{ifo}.features  partitions=1" in again.stdout
    assert f"warning: idq.{ifo}.features has 1 partition(s), the config wants 3" in again.stderr


@pytest.mark.kafka
@pytest.mark.slow
def test_kafka_up_prints_the_export_line(tmp_path: Path) -> None:
    data = str(tmp_path / "kafka")
    try:
        up = _idq("kafka", "up", "--data-dir", data, timeout=300)
        assert up.returncode == 0, up.stderr
        m = re.search(r"^export IDQ_KAFKA__BOOTSTRAP_SERVERS=(127\.0\.0\.1:\d+)$", up.stdout, re.M)
        assert m, up.stdout
        again = _idq("kafka", "up", "--data-dir", data)
        assert f"export IDQ_KAFKA__BOOTSTRAP_SERVERS={m.group(1)}" in again.stdout
    finally:
        _idq("kafka", "down", "--data-dir", data)


@pytest.mark.parametrize(
    "args",
    [
        ("report", "--gps-start", "1400000000", "--gps-end", "1400000100", "-o", "{tmp}/r.html"),
        ("query", "--gps", "1400000000", "--source", "topic"),
    ],
    ids=["report", "query"],
)
def test_report_and_query_without_a_broker_are_one_line(tmp_path: Path, args: tuple) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDQ_")}
    env["IDQ_KAFKA__BOOTSTRAP_SERVERS"] = f"127.0.0.1:{port}"
    argv = [a.format(tmp=tmp_path) for a in args]
    cmd = [sys.executable, "-m", "idq_common.cli.main", argv[0], "-c", str(ETC), *argv[1:]]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1, out.stderr
    assert f"no Kafka broker answers at 127.0.0.1:{port}" in out.stderr
