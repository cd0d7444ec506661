"""``idq query`` and :func:`idq_common.report.query.query` over GWF frames."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomli_w

from idq_common.config import load_settings
from idq_common.contracts import PRODUCTS, channel_name
from idq_common.io.frames import frame_path, write_frame
from idq_common.report.query import query
from idq_dev.testing.frames import product_columns

T0 = 1_400_000_000
RATE = 128.0
CLASSIFIERS = ("ovl", "forest")
REPO = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path) -> Path:
    import tomllib

    doc = tomllib.loads((REPO / "etc" / "idq.toml").read_text())
    doc["timeseries"]["output_dir"] = str(tmp_path / "frames")
    path = tmp_path / "idq.toml"
    path.write_text(tomli_w.dumps(doc))
    return path


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 one-second frames with a planted minimum FAP, and a lower one where OK = 0."""
    tmp = tmp_path_factory.mktemp("query")
    for k in range(40):
        t = T0 + k
        series = {}
        for i, c in enumerate(CLASSIFIERS):
            cols = product_columns(t, 1.0, RATE, 1000 * i)
            if c == "ovl" and k == 20:
                cols["FAP"][38] = 1e-4  # GPS T0 + 20 + 38/128, OK
                cols["PGLITCH"][40] = 0.99
            if c == "ovl" and k == 25:
                cols["FAP"][0], cols["PGLITCH"][0], cols["OK"][0] = 1e-6, 1.0, 0.0
            if c == "forest" and k == 30:
                cols["OK"][:] = 0.0  # a whole stride without a valid product
            for p in PRODUCTS:
                series[channel_name("H1", p, c, 10, 2048)] = cols[p]
        prov = {c: {"model_id": f"{c}-m", "calibration_id": f"{c}-c"} for c in CLASSIFIERS}
        write_frame(
            frame_path(tmp / "frames", "H", "IDQ_TIMESERIES", t, 1), t, 1, series, RATE, prov
        )
    _config(tmp)
    return tmp


def test_min_fap_and_max_pglitch_count_only_ok_samples(frames: Path) -> None:
    settings = load_settings(frames / "idq.toml")
    r = query(settings, T0 + 22.0, window=8.0)
    ovl = r["classifiers"]["ovl"]
    assert ovl["min_fap"] == 1e-4 and ovl["min_fap_gps"] == T0 + 20 + 38 / RATE
    assert ovl["max_pglitch"] == 0.99  # the 1.0 at T0 + 25 has OK = 0
    assert ovl["samples"] == 16 * 128 + 1 and ovl["ok_samples"] == ovl["samples"] - 1
    assert ovl["model_id"] == "ovl-m" and ovl["calibration_id"] == "ovl-c"
    assert r["min_fap"] == 1e-4 and r["max_pglitch"] == 0.99
    forest = r["classifiers"]["forest"]
    # the window ends at T0 + 30, the first sample of the stride without OK
    assert forest["min_fap"] >= 1e-3 and forest["ok_samples"] == forest["samples"] - 1


def test_one_classifier_and_windows_without_ok(frames: Path) -> None:
    settings = load_settings(frames / "idq.toml")
    r = query(settings, T0 + 30.5, window=0.25, classifiers=["forest"])
    assert list(r["classifiers"]) == ["forest"]
    assert r["min_fap"] is None and r["max_pglitch"] is None
    assert r["classifiers"]["forest"]["samples"] == 65
    with pytest.raises(ValueError, match="unknown classifier"):
        query(settings, T0, classifiers=["nope"])


def test_the_window_crossing_the_end_of_the_data_uses_what_exists(frames: Path) -> None:
    settings = load_settings(frames / "idq.toml")
    r = query(settings, T0 + 39.0, window=8.0)
    assert r["classifiers"]["ovl"]["samples"] == 9 * 128


def _idq(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "idq_common.cli.main", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def test_cli_prints_json_and_exits_1_without_data(frames: Path) -> None:
    cfg = str(frames / "idq.toml")
    out = _idq("query", "--config", cfg, "--gps", str(T0 + 22), "--window", "8")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["min_fap"] == 1e-4 and doc["source"] == "frames"
    out = _idq("query", "-c", cfg, "--gps", str(T0 + 22), "--classifier", "forest")
    assert out.returncode == 0 and list(json.loads(out.stdout)["classifiers"]) == ["forest"]
    out = _idq("query", "-c", cfg, "--gps", str(T0 + 5000))
    assert out.returncode == 1 and "no frames data cover the window" in out.stderr
    out = _idq("query", "-c", cfg, "--gps", str(T0), "--classifier", "nope")
    assert out.returncode == 2 and "unknown classifier" in out.stderr
    assert np.isfinite(doc["max_pglitch"])


def test_query_does_not_import_scikit_learn(frames: Path) -> None:
    """``idq query`` answers alerts: its cold start must not pay for scikit-learn (~1-5 s)."""
    code = (
        "import sys\n"
        "from idq_common.cli.main import main\n"
        f"rc = main(['query', '-c', {str(frames / 'idq.toml')!r}, '--gps', '{T0 + 22}'])\n"
        "heavy = sorted(m for m in ('sklearn', 'skops', 'scipy.stats') if m in sys.modules)\n"
        "print(rc, heavy, file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stderr.strip().splitlines()[-1] == "0 []", out.stderr[-2000:]
