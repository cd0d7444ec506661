"""``bench.query`` runs and reports latencies (the full day is `make bench`'s job)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.query import measure  # noqa: E402


def test_query_bench_over_two_minutes_of_frames(tmp_path: Path) -> None:
    r = measure(120.0, tmp_path / "work", queries=10, frames=tmp_path / "frames")
    assert r["frames"] == 120 and r["frames_written"]["written"] == 120
    assert 0 < r["latency_ms_p50"] <= r["latency_ms_p95"] <= r["latency_ms_max"]
    assert r["cpu_ms_p50"] > 0 and r["cli_cold_s"] > 0
    # written once: a second run reuses the frames
    assert measure(120.0, tmp_path / "work", 2, tmp_path / "frames")["frames_written"]["reused"]
