"""Converters between in-memory types and Avro records, through the real codec."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from igwn_segments import segment, segmentlist

from idq_common.data.triggers import TriggerSet
from idq_common.exceptions import InvalidMessageError
from idq_common.io.avro import decode, encode
from idq_common.io.avro.convert import (
    TIMESERIES_COLUMNS,
    batch_extra,
    batch_to_triggers,
    quiver_to_record,
    record_to_quiver,
    record_to_segment_update,
    record_to_timeseries,
    segment_update_to_record,
    timeseries_to_record,
    triggers_to_batch,
)
from idq_common.science.quiver import Quiver

T0 = 1_000_000_000.0


def _triggers(n: int, seed: int = 3) -> TriggerSet:
    rng = np.random.default_rng(seed)
    return TriggerSet(
        channels=("H1:GDS-CALIB_STRAIN", "H1:ASC-X", "H1:PEM-Y"),
        channel=rng.integers(0, 3, n),
        time=np.sort(T0 + rng.random(n)),
        snr=rng.gamma(2.0, 3.0, n),
        frequency=rng.uniform(10, 2048, n),
    )


def _wire(kind: str, record: dict[str, Any]) -> dict[str, Any]:
    got_kind, got = decode(encode(kind, record))
    assert got_kind == kind
    return got


def test_triggers_roundtrip_bit_identical() -> None:
    ts = _triggers(1000)
    q = np.linspace(4, 100, len(ts))
    record = triggers_to_batch(ts, "H1", "synthetic-0", 7, T0, T0 + 1, extra={"q": q})
    got = _wire("feature_batch", record)
    back = batch_to_triggers(got)
    assert back.channels == ts.channels
    for name in ("channel", "time", "snr", "frequency"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ts, name))
    assert back.channel.dtype == np.int32 and back.time.dtype == np.float64
    np.testing.assert_array_equal(batch_extra(got)["q"], q)


def test_empty_batch_roundtrip() -> None:
    record = triggers_to_batch(TriggerSet.empty(("a", "b")), "H1", "s", 0, T0, T0 + 1)
    back = batch_to_triggers(_wire("feature_batch", record))
    assert len(back) == 0 and back.channels == ("a", "b")


def test_batch_promises_its_span() -> None:
    ts = _triggers(10)
    with pytest.raises(InvalidMessageError, match="outside"):
        triggers_to_batch(ts, "H1", "s", 0, T0, T0 + 0.5)
    record = triggers_to_batch(ts, "H1", "s", 0, T0, T0 + 1)
    with pytest.raises(InvalidMessageError, match="outside"):
        batch_to_triggers({**record, "end": T0 + 0.5})
    nan_time = np.frombuffer(record["time"]).copy()
    nan_time[3] = np.nan
    with pytest.raises(InvalidMessageError):
        batch_to_triggers({**record, "time": nan_time.tobytes()})


@pytest.mark.parametrize(
    ("field", "cut"),
    [("time", 8), ("snr", 3), ("channel", 4), ("frequency", 1)],
)
def test_batch_inconsistent_columns(field: str, cut: int) -> None:
    record = triggers_to_batch(_triggers(20), "H1", "s", 0, T0, T0 + 1)
    with pytest.raises(InvalidMessageError, match=r"rows|multiple"):
        batch_to_triggers({**record, field: record[field][:-cut]})


def test_batch_bad_channel_table() -> None:
    record = triggers_to_batch(_triggers(20), "H1", "s", 0, T0, T0 + 1)
    with pytest.raises(InvalidMessageError, match="channel"):
        batch_to_triggers({**record, "channels": record["channels"][:2]})
    with pytest.raises(InvalidMessageError):
        batch_to_triggers({**record, "channels": ["x", "x", "y"]})
    bad_extra = {**record, "extra": {"q": b"\x00" * 8}}
    with pytest.raises(InvalidMessageError, match="'q'"):
        batch_extra(bad_extra)


def test_timeseries_roundtrip() -> None:
    rng = np.random.default_rng(5)
    cols: dict[str, Any] = {c: rng.random(256) for c in TIMESERIES_COLUMNS if c != "ok"}
    cols["ok"] = rng.random(256) > 0.3
    record = timeseries_to_record(
        "H1", "ovl", T0, T0 + 2, 128.0, cols, model_id="m-1", calibration_id="c-1"
    )
    got = _wire("timeseries_stride", record)
    assert got["model_id"] == "m-1" and got["frame_uri"] is None
    back = record_to_timeseries(got)
    for c in TIMESERIES_COLUMNS:
        np.testing.assert_array_equal(back[c], np.asarray(cols[c], dtype=back[c].dtype))
    assert back["ok"].dtype == np.uint8 and back["fap"].dtype == np.float64
    with pytest.raises(InvalidMessageError):
        timeseries_to_record("H1", "ovl", T0, T0 + 1, 128.0, cols)  # 256 samples for 1 s
    with pytest.raises(InvalidMessageError, match="missing"):
        timeseries_to_record("H1", "ovl", T0, T0 + 2, 128.0, {"fap": cols["fap"]})
    with pytest.raises(InvalidMessageError, match="ok"):
        record_to_timeseries({**got, "ok": b"\x02" * 256})


def test_segment_update_roundtrip() -> None:
    known = segmentlist([segment(T0, T0 + 16)])
    active = segmentlist([segment(T0, T0 + 5), segment(T0 + 10.5, T0 + 20)])
    record = segment_update_to_record("H1", "H1:DMT-ANALYSIS_READY:1", known, active, T0 + 17)
    got_known, got_active = record_to_segment_update(_wire("segment_update", record))
    assert got_known == known
    # Active is clipped to where the state is known.
    assert got_active == segmentlist([segment(T0, T0 + 5), segment(T0 + 10.5, T0 + 16)])
    with pytest.raises(InvalidMessageError):
        record_to_segment_update({**record, "known": {"starts": [T0], "ends": []}})


def test_quiver_roundtrip() -> None:
    rng = np.random.default_rng(9)
    n = 500
    q = Quiver(
        times=np.sort(T0 + 16 * rng.random(n)),
        labels=rng.integers(0, 2, n),
        features=rng.random((n, 6)),
        columns=tuple(f"c{i}" for i in range(6)),
        start=T0,
        end=T0 + 16,
        segs=segmentlist([segment(T0, T0 + 5), segment(T0 + 6, T0 + 16)]),
        ranks=rng.random(n),
        classifier="ovl",
        model_id="m-1",
    )
    record = quiver_to_record(q, "H1", seq=62_500_000)
    back = record_to_quiver(_wire("quiver", record))
    np.testing.assert_array_equal(back.times, q.times)
    np.testing.assert_array_equal(back.labels, q.labels)
    assert back.ranks is not None and q.ranks is not None
    np.testing.assert_array_equal(back.ranks, q.ranks)
    assert back.features.shape == (n, 0) and back.columns == ()
    assert (back.start, back.end, back.segs) == (q.start, q.end, q.segs)
    assert (back.classifier, back.model_id) == ("ovl", "m-1")
    assert back.n_glitch == q.n_glitch


def test_quiver_rejects_unevaluated_and_bad_records() -> None:
    q = Quiver(times=[T0], labels=[1], features=np.zeros((1, 0)), columns=(), start=T0, end=T0 + 1)
    with pytest.raises(InvalidMessageError, match="evaluated"):
        quiver_to_record(q, "H1", 0)
    q.ranks, q.classifier, q.model_id = np.array([0.5]), "ovl", "m"
    record = quiver_to_record(q, "H1", 0)
    with pytest.raises(InvalidMessageError, match="labels"):
        record_to_quiver({**record, "labels": b"\x02"})
    with pytest.raises(InvalidMessageError, match="rows"):
        record_to_quiver({**record, "n": 2})
    with pytest.raises(InvalidMessageError):
        record_to_quiver({**record, "end": T0 - 1})


@pytest.mark.parametrize(
    ("column", "value"),
    [("snr", np.nan), ("snr", np.inf), ("snr", -3.0), ("frequency", np.nan), ("frequency", -1.0)],
)
def test_batch_rejects_non_finite_or_negative_values(column: str, value: float) -> None:
    # found by the chaos corpus: these were accepted, and a NaN or inf snr wins or
    # poisons every "loudest trigger in the window" comparison downstream
    record = triggers_to_batch(_triggers(20), "H1", "s", 0, T0, T0 + 1)
    col = np.frombuffer(record[column], "<f8").copy()
    col[3] = value
    with pytest.raises(InvalidMessageError, match=column):
        batch_to_triggers({**record, column: col.astype("<f8").tobytes()})


@pytest.mark.parametrize("rank", [np.nan, 7.5, -0.1])
def test_quiver_rejects_ranks_outside_unit_interval(rank: float) -> None:
    # found by the chaos corpus: calibrate fitted KDEs on NaN / out-of-range ranks
    t = np.array([T0 + 0.25, T0 + 0.5])
    q = Quiver(t, [1, 0], np.empty((2, 0)), (), T0, T0 + 1, ranks=[0.2, 0.9])
    q.classifier, q.model_id = "ovl", "m"
    record = quiver_to_record(q, "H1", 3)
    ranks = np.frombuffer(record["ranks"], "<f8").copy()
    ranks[1] = rank
    with pytest.raises(InvalidMessageError, match="ranks"):
        record_to_quiver({**record, "ranks": ranks.tobytes()})
