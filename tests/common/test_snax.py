"""SNAX / sgnax JSON messages -> TriggerSet, and every reason a message is refused."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from idq_common.config import load_settings
from idq_common.data.synthetic import SyntheticModel
from idq_common.exceptions import ConfigError
from idq_common.io.snax import IngestRejected, JsonFormat, SecondTracker, parse_message
from idq_dev.testing.snax_json import expected_triggers, message

TARGET = "L1:GDS-CALIB_STRAIN"
FMT = JsonFormat(ifo="L1", target_channel=TARGET)
GPS = 1_400_000_000


def _model() -> SyntheticModel:
    return SyntheticModel(
        seed=5, ifo="L1", target_channel=TARGET, n_witness=4, n_noise=6, glitch_rate=2.0,
        witness_background_rate=3.0, noise_background_rate=3.0,
    )  # fmt: skip


def _rows(ts):  # (channel name, time, snr, frequency) sorted
    names = np.asarray(ts.channels, dtype=object)[ts.channel]
    return sorted(
        zip(names.tolist(), ts.time.tolist(), ts.snr.tolist(), ts.frequency.tolist(), strict=True)
    )


@pytest.mark.parametrize("style", ["snax", "sgnax"])
def test_generated_messages_round_trip(style: str) -> None:
    model = _model()
    got = []
    for gps in range(GPS, GPS + 8):
        parsed = parse_message(message(model, gps, style), FMT)
        assert parsed.format == style
        assert (parsed.start, parsed.end) == (gps, gps + 1)
        got.extend(_rows(parsed.triggers))
    want = _rows(expected_triggers(model, GPS, GPS + 8, style))
    assert len(want) > 50
    assert sorted(got) == want


def test_sgnax_keeps_band_suffix_and_maps_the_target() -> None:
    doc = {
        "time": GPS,
        "features": {
            "L1:ASC-AUX_012_OUT_DQ_16_256": [{"time": GPS + 0.5, "snr": 7.0, "frequency": 30.0}],
            f"{TARGET}_16_2048": [{"time": GPS + 0.25, "snr": 12.0, "frequency": 100.0}],
        },
    }
    parsed = parse_message(json.dumps(doc), FMT)
    assert set(parsed.triggers.channels) == {"L1:ASC-AUX_012_OUT_DQ_16_256", TARGET}


def test_snax_bins_and_extra_columns() -> None:
    bins: list[dict[str, float] | None] = [None] * 16
    bins[3] = {"time": GPS + 3 / 16, "snr": 8.0, "frequency": 50.0, "q": 9.0, "phase": -1.0}
    bins[9] = {"time": GPS + 9 / 16, "snr": 6.0, "frequency": 40.0, "q": 4.0, "phase": 2.0}
    doc = {"timestamp": GPS, "features": {"L1:PEM-MAG_X": bins, "L1:PEM-MAG_Y": [None] * 16}}
    parsed = parse_message(json.dumps(doc).encode(), FMT)
    assert parsed.format == "snax"
    assert parsed.triggers.channels == ("L1:PEM-MAG_X",)
    np.testing.assert_array_equal(parsed.triggers.snr, [8.0, 6.0])
    np.testing.assert_array_equal(parsed.extra["q"], [9.0, 4.0])
    np.testing.assert_array_equal(parsed.extra["phase"], [-1.0, 2.0])
    assert "duration" not in parsed.extra  # no invented values


def _row(**kw: float) -> dict[str, float]:
    return {"time": GPS + 0.5, "snr": 7.0, "frequency": 30.0, **kw}


BAD = [
    ("bad_json", b"{not json"),
    ("bad_json", b"[1, 2]"),
    ("bad_json", b"\xff\xfe"),
    ("bad_envelope", json.dumps({"gps": GPS, "features": {}})),
    ("bad_envelope", json.dumps({"time": GPS, "timestamp": GPS, "features": {}})),
    ("bad_envelope", json.dumps({"time": "soon", "features": {}})),
    ("bad_envelope", json.dumps({"time": GPS + 0.5, "features": {}})),
    ("bad_envelope", json.dumps({"time": GPS})),
    ("bad_envelope", json.dumps({"time": GPS, "features": {"L1:A-B": {"time": 1}}})),
    ("bad_envelope", json.dumps({"timestamp": GPS, "features": {"L1:A-B": [None] * 15}})),
    ("bad_value", json.dumps({"time": GPS, "features": {"L1:A-B": [_row(snr=-1.0)]}})),
    ("bad_value", json.dumps({"time": GPS, "features": {"L1:A-B": [_row(frequency=-3.0)]}})),
    ("bad_value", json.dumps({"time": GPS, "features": {"L1:A-B": [_row(snr=math.nan)]}})),
    ("bad_value", json.dumps({"time": GPS, "features": {"L1:A-B": [_row(snr=math.inf)]}})),
    ("bad_value", json.dumps({"time": GPS, "features": {"L1:A-B": [_row(q=math.nan)]}})),
    (
        "bad_value",
        json.dumps({"time": GPS, "features": {"L1:A-B": [_row()]}}).replace("7.0", "1e999"),
    ),
    ("bad_value", json.dumps({"time": GPS, "features": {"L1:A-B": [_row(snr="7")]}})),
    ("bad_value", json.dumps({"time": GPS, "features": {"L1:A-B": [_row(snr=None)]}})),
    ("bad_value", json.dumps({"time": GPS, "features": {"L1:A-B": [_row(time=GPS + 1.0)]}})),
    ("bad_value", json.dumps({"time": GPS, "features": {"L1:A-B": [[GPS, 7.0, 30.0]]}})),
    ("bad_channel", json.dumps({"time": GPS, "features": {"H1:A-B": [_row()]}})),
    ("bad_channel", json.dumps({"time": GPS, "features": {"L1:ASC AUX\u00e9": [_row()]}})),
    ("bad_channel", json.dumps({"time": GPS, "features": {"garbled": [_row()]}})),
    (
        "bad_channel",
        json.dumps(
            {"time": GPS, "features": {f"{TARGET}_1_2": [_row()], f"{TARGET}_3_4": [_row()]}}
        ),
    ),
]


@pytest.mark.parametrize(("label", "payload"), BAD, ids=[f"{i}-{b[0]}" for i, b in enumerate(BAD)])
def test_rejections_name_their_reason(label: str, payload: bytes | str) -> None:
    with pytest.raises(IngestRejected) as info:
        parse_message(payload, FMT)
    assert info.value.label == label
    assert info.value.reason.startswith(f"{label}: ")


def test_configured_format_refuses_the_other_envelope() -> None:
    fmt = JsonFormat(ifo="L1", target_channel=TARGET, format="snax")
    with pytest.raises(IngestRejected, match="bad_envelope: a sgnax message"):
        parse_message(json.dumps({"time": GPS, "features": {}}), fmt)


def test_channel_pattern_is_configurable() -> None:
    fmt = JsonFormat(ifo="L1", target_channel=TARGET, channel_pattern=r"L1:PEM-.*")
    parse_message(json.dumps({"time": GPS, "features": {"L1:PEM-X": [_row()]}}), fmt)
    with pytest.raises(IngestRejected, match="bad_channel"):
        parse_message(json.dumps({"time": GPS, "features": {"L1:ASC-X": [_row()]}}), fmt)


def test_second_tracker_refuses_duplicates_and_going_back() -> None:
    tracker = SecondTracker()
    tracker.check(GPS)
    tracker.check(GPS + 2)  # a hole is fine: readers see it as missing data
    with pytest.raises(IngestRejected, match=r"^duplicate"):
        tracker.check(GPS + 2)
    with pytest.raises(IngestRejected, match=r"^out_of_order"):
        tracker.check(GPS + 1)
    tracker.check(GPS + 3)
    assert SecondTracker(last=GPS + 3).last == GPS + 3


ETC = Path(__file__).resolve().parents[2] / "etc" / "idq.toml"


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("[ingest]", "[ingest]\nchannel_pattern = '(unclosed'", "ingest.channel_pattern"),
        ("[ingest]", '[ingest]\nsource_topic = "idq.H1.features"', "ingest.source_topic"),
        ("[ingest]", '[ingest]\nsource_topic = "no spaces"', "ingest.source_topic"),
        ("snax_rate = 16", "snax_rate = 0", "ingest.snax_rate"),
        ("message_seconds = 1.0", "message_seconds = 0.1", "ingest.snax_rate"),
        ('format = "auto"', 'format = "json"', "ingest.format"),
        ("[ingest]", "[ingest]\nbogus = 1", "ingest.bogus"),
    ],
)
def test_ingest_config_is_validated(tmp_path: Path, old: str, new: str, key: str) -> None:
    path = tmp_path / "idq.toml"
    text = ETC.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert info.value.key == key


def test_ingest_config_defaults() -> None:
    ingest = load_settings(ETC, env={}).ingest
    assert ingest is not None
    assert (ingest.source_topic, ingest.format, ingest.source_id) == (
        "idq.H1.snax",
        "auto",
        "ingest",
    )
    assert JsonFormat(ifo="H1", target_channel="H1:X-Y", channel_pattern=ingest.channel_pattern)
