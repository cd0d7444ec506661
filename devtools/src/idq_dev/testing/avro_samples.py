"""Seeded sample records of every Avro message kind, for tests of the wire format.

Realistic values (GPS times, packed columns of the documented dtypes) so that a
codec or broker round trip exercises the real layouts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["sample_records"]


def _f8(rng: np.random.Generator, n: int) -> bytes:
    return rng.normal(size=n).astype("<f8").tobytes()


def sample_records(seed: int = 7) -> dict[str, dict[str, Any]]:
    """One realistic record of every kind (seeded)."""
    rng = np.random.default_rng(seed)
    n = 100
    segs = {"starts": [1e9, 1e9 + 10.5], "ends": [1e9 + 5.0, 1e9 + 16.0]}
    return {
        "feature_batch": {
            "ifo": "H1",
            "source": "synthetic-0",
            "seq": 42,
            "start": 1e9,
            "end": 1e9 + 1,
            "channels": ["H1:GDS-CALIB_STRAIN", "H1:ASC-X", "H1:PEM-Y"],
            "channel": rng.integers(0, 3, n).astype("<i4").tobytes(),
            "time": np.sort(1e9 + rng.random(n)).astype("<f8").tobytes(),
            "snr": _f8(rng, n),
            "frequency": _f8(rng, n),
            "extra": {"q": _f8(rng, n), "phase": _f8(rng, n)},
        },
        "segment_update": {
            "ifo": "L1",
            "flag": "L1:DMT-ANALYSIS_READY:1",
            "known": {"starts": [1e9], "ends": [1e9 + 16.0]},
            "active": segs,
            "published_at": 1e9 + 17.25,
        },
        "quiver": {
            "ifo": "H1",
            "classifier": "ovl",
            "model_id": "m-0123abcd",
            "seq": 62_500_000,
            "start": 1e9,
            "end": 1e9 + 16,
            "segments": segs,
            "n": n,
            "times": _f8(rng, n),
            "labels": rng.integers(0, 2, n).astype("i1").tobytes(),
            "ranks": rng.random(n).astype("<f8").tobytes(),
        },
        "model_announcement": {
            "ifo": "H1",
            "classifier": "forest",
            "flavor": "random_forest",
            "model_id": "m-0123abcd",
            "uri": "s3://idq/models/m-0123abcd",
            "sha256": "ab" * 32,
            "created_gps": 1e9 + 100.5,
            "start": 1e9 - 3600,
            "end": 1e9,
            "n_samples": 12345,
            "metrics": {"n_glitch": 120.0, "train_seconds": 3.25},
        },
        "calibration_announcement": {
            "ifo": "H1",
            "classifier": "forest",
            "calibration_id": "c-77",
            "model_id": "m-0123abcd",
            "model_uri": "s3://idq/models/m-0123abcd",
            "model_sha256": "ab" * 32,
            "uri": "file:///tmp/store/calibrations/c-77",
            "sha256": "cd" * 32,
            "created_gps": 1e9 + 200,
            "start": 1e9 - 600,
            "end": 1e9,
            "n_glitch": 300,
            "n_clean": 3000,
            "healthy": True,
            "fap_floor": 1 / 3001,
            "metrics": {"bandwidth_glitch": 0.03},
        },
        "timeseries_stride": {
            "ifo": "H1",
            "classifier": "ovl",
            "start": 1e9,
            "end": 1e9 + 1,
            "sample_rate": 128.0,
            "model_id": "m-0123abcd",
            "calibration_id": None,
            "frame_uri": "file:///tmp/H-IDQ_TIMESERIES-1000000000-1.gwf",
            **{c: _f8(rng, 128) for c in ("pglitch", "loglike", "fap", "eff", "rank")},
            "ok": rng.integers(0, 2, 128).astype("u1").tobytes(),
        },
        "dead_letter": {
            "stage": "evaluate",
            "reason": "bad_marker",
            "topic": "idq.H1.features",
            "partition": 3,
            "offset": 2**40,
            "timestamp_ms": 1_700_000_000_000,
            "key": b"synthetic-0",
            "payload": b"\x00\x01not avro",
        },
    }
