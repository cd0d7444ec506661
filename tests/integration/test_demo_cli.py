"""``idq demo`` as a user meets it: help, a too-short run, --workdir, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import tomli_w

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "etc" / "idq-demo.toml"
SMALL = ["--witnesses", "4", "--noise-channels", "8", "--seed", "2"]


def _idq(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "idq_common.cli.main", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def test_help_shows_defaults_without_rest_markup() -> None:
    out = _idq("demo", "--help", timeout=120)
    assert out.returncode == 0
    assert "(default: 3600.0)" in out.stdout and "(default: 1400000000.0)" in out.stdout
    assert "``" not in out.stdout and ":func:" not in out.stdout
    assert "(default: None)" not in out.stdout


def test_a_duration_too_short_to_train_says_why() -> None:
    out = _idq("demo", "--duration", "120", "--workdir", "/nonexistent/never-made", timeout=120)
    assert out.returncode == 2
    assert "too short to train" in out.stderr and "train.min_new_samples" in out.stderr
    assert "Traceback" not in out.stderr
    assert not Path("/nonexistent/never-made").exists()


def _small_config(tmp: Path) -> Path:
    """The demo configuration with small sample counts; paths it names stay unused."""
    doc = tomllib.loads(DEMO.read_text())
    doc["train"]["min_new_samples"] = 150
    doc["calibrate"]["min_new_samples"] = 100
    doc["samples"]["random_rate"] = 2.0
    doc["timeseries"]["output_dir"] = str(tmp / "config-frames")
    doc["store"]["url"] = (tmp / "config-store").as_uri()
    path = tmp / "demo.toml"
    path.write_text(tomli_w.dumps(doc))
    return path


@pytest.mark.kafka
@pytest.mark.slow
def test_workdir_holds_every_output_and_the_report(tmp_path: Path) -> None:
    config, work = _small_config(tmp_path), tmp_path / "run"
    out = _idq(
        "demo", "-c", str(config), "--duration", "320", "--speed", "16",
        "--workdir", str(work), "--progress-every", "2", *SMALL,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    for sub in ("frames", "store", "logs", "kafka", "summary.json", "report.html"):
        assert (work / sub).exists(), sub
    assert not (tmp_path / "config-frames").exists() and not (tmp_path / "config-store").exists()
    summary = json.loads((work / "summary.json").read_text())
    assert summary["span"] == [1_400_000_000.0, 1_400_000_320.0]
    assert summary["frames"] == 320 and all(summary["models"].values())
    assert f"report: {work / 'report.html'}" in out.stdout
    assert "idq demo: " in out.stderr and "strides" in out.stderr and "ETA" in out.stderr


@pytest.mark.kafka
@pytest.mark.slow
def test_sigint_says_what_was_stopped(tmp_path: Path) -> None:
    config, work = _small_config(tmp_path), tmp_path / "run"
    cmd = [sys.executable, "-m", "idq_common.cli.main", "demo", "-c", str(config)]
    cmd += ["--duration", "3600", "--speed", "4", "--workdir", str(work), *SMALL]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # printed once the broker and topics are up
    assert "replaying GPS" in line, line
    deadline = time.monotonic() + 120
    while not (work / "logs" / "timeseries.log").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    try:  # stopping four services and the broker is slow on a loaded machine
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"no exit 300 s after SIGINT:\n{err[-3000:]}") from None
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted; stopped" in err and "timeseries (pid" in err and "the broker" in err
    assert "Traceback" not in err
