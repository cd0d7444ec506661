"""Every service's command line: help, bad configuration, bad arguments.

These run the real console scripts as subprocesses (what an operator types) and the
``main(args)`` functions in-process (what tests and wrappers call).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from idq_calibrate.cli import main as calibrate_main
from idq_common.contracts import STAGES
from idq_evaluate.cli import main as evaluate_main
from idq_timeseries.cli import main as timeseries_main
from idq_train.cli import main as train_main

MAINS = {
    "train": train_main,
    "evaluate": evaluate_main,
    "calibrate": calibrate_main,
    "timeseries": timeseries_main,
}
BIN = Path(sys.executable).parent


@pytest.mark.parametrize("stage", STAGES)
def test_help_names_every_option(stage: str) -> None:
    out = subprocess.run(
        [str(BIN / f"idq-{stage}"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    for option in (
        "--config",
        "--gps-start",
        "--gps-end",
        "--from-start",
        "--metrics-port",
        "--verbose",
        "--quiet",
    ):
        assert option in out, (stage, option)


@pytest.mark.parametrize("stage", STAGES)
def test_bad_config_exits_2_with_one_line(stage: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        (Path(__file__).parents[2] / "etc" / "idq.toml")
        .read_text()
        .replace("stride = 4", "stride = -4")
    )
    proc = subprocess.run(
        [str(BIN / f"idq-{stage}"), "--config", str(bad)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "evaluate.stream.stride" in lines[0] and "Traceback" not in proc.stderr


@pytest.mark.parametrize("stage", STAGES)
def test_unknown_classifier_parameter_exits_2_at_start(stage: str, tmp_path: Path) -> None:
    """A typo in [classifier.params] stops every service at start, not at its first training."""
    bad = tmp_path / "bad.toml"
    text = (Path(__file__).parents[2] / "etc" / "idq.toml").read_text()
    assert "n_estimators = 100" in text
    bad.write_text(text.replace("n_estimators = 100", "n_estimator = 100"))
    proc = subprocess.run(
        [str(BIN / f"idq-{stage}"), "--config", str(bad)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "'classifier[1].params.n_estimator'" in lines[0]
    assert "did you mean 'n_estimators'" in lines[0]


@pytest.mark.parametrize("stage", STAGES)
def test_missing_config_file_exits_2(stage: str, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        MAINS[stage](["--config", str(tmp_path / "nowhere.toml")])
    assert exc.value.code == 2


@pytest.mark.parametrize("stage", STAGES)
def test_gps_end_before_start_is_refused(stage: str, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(Path(__file__).parents[2] / "etc" / "idq-demo.toml")
    status = MAINS[stage](["--config", config, "--gps-start", "100", "--gps-end", "50"])
    assert status == 2
    assert "--gps-end must be after --gps-start" in capsys.readouterr().err


def test_unreachable_broker_is_a_clear_error(tmp_path: Path) -> None:
    """No broker at the configured address: exit 1 with a message, not a hang or traceback.

    The four services start side by side: each waits out its broker probe (~10 s), so
    running them one after the other would only add that wait four times.
    """
    config = Path(__file__).parents[2] / "etc" / "idq-demo.toml"
    env = {"IDQ_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9", "PATH": str(BIN)}
    procs = {}
    for stage in STAGES:
        cwd = tmp_path / stage
        cwd.mkdir()
        cmd = [str(BIN / f"idq-{stage}"), "--config", str(config), "--metrics-port", "0"]
        cmd += ["--gps-start", "1400000000", "--gps-end", "1400000016"]
        procs[stage] = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd
        )
    for stage, proc in procs.items():
        try:
            _, stderr = proc.communicate(timeout=120)
        finally:
            proc.kill()
        assert proc.returncode == 1, (stage, stderr[-2000:])
        assert "cannot start" in stderr and "Traceback" not in stderr, (stage, stderr[-2000:])
