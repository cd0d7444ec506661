"""The fast JSON decoding path gives the checked path's output byte for byte, and the
same dead-letter reason for every malformed message (generated corpus + mutations)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from idq_common.data.synthetic import SyntheticModel
from idq_common.io import snax
from idq_common.io.avro import codec
from idq_common.io.avro.convert import triggers_to_batch
from idq_common.io.snax import IngestRejected, JsonFormat, parse_message
from idq_dev.testing.snax_json import message

TARGET = "L1:GDS-CALIB_STRAIN"
GPS = 1_400_000_000
Doc = dict[str, Any]


def _model() -> SyntheticModel:
    return SyntheticModel(
        seed=11, ifo="L1", target_channel=TARGET, n_witness=5, n_noise=35, glitch_rate=1.0,
        witness_background_rate=4.0, noise_background_rate=4.0,
    )  # fmt: skip


def _outcome(payload: bytes, fmt: JsonFormat, fast: bool) -> tuple[str, bytes | str]:
    """The encoded feature_batch, or the dead-letter reason."""
    try:
        p = parse_message(payload, fmt, fast=fast)
    except IngestRejected as exc:
        return "rejected", exc.reason
    record = triggers_to_batch(p.triggers, "L1", "src", 7, p.start, p.end, extra=p.extra)
    return p.format, codec.encode("feature_batch", record)


def _rows_of(doc: Doc) -> Iterator[dict[str, Any]]:
    for rows in doc["features"].values():
        yield from (r for r in rows if isinstance(r, dict))


def _first_row(doc: Doc) -> dict[str, Any]:
    return next(_rows_of(doc))


def _last_row(doc: Doc) -> dict[str, Any]:
    return list(_rows_of(doc))[-1]


def _set_all(col: str, value: Callable[[dict[str, Any]], Any]) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        for r in _rows_of(doc):
            r[col] = value(r)

    return mutate


def _first_key(doc: Doc) -> str:
    return next(iter(doc["features"]))


def _rename_first(new: str) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        key = _first_key(doc)
        doc["features"] = {(new if k == key else k): v for k, v in doc["features"].items()}

    return mutate


def _bins(doc: Doc) -> None:
    doc["features"][_first_key(doc)].pop()


def _dup_target(doc: Doc) -> None:
    rows = doc["features"][_first_key(doc)]
    doc["features"][f"{TARGET}_1_2"] = copy.deepcopy(rows)
    doc["features"][f"{TARGET}_3_4"] = copy.deepcopy(rows)


def _trigger_time(doc: Doc) -> None:
    for r in _rows_of(doc):
        r["trigger_time"] = r.pop("time")


MUTATIONS: dict[str, Callable[[Doc], None]] = {
    "nan_snr": lambda d: _first_row(d).update(snr=float("nan")),
    "inf_time": lambda d: _last_row(d).update(time=float("inf")),
    "negative_frequency": lambda d: _last_row(d).update(frequency=-1.0),
    "bool_snr": lambda d: _first_row(d).update(snr=True),
    "string_time": lambda d: _first_row(d).update(time=str(_first_row(d)["time"])),
    "null_frequency": lambda d: _last_row(d).update(frequency=None),
    "no_snr": lambda d: _last_row(d).pop("snr"),
    "huge_int_snr": lambda d: _first_row(d).update(snr=10**400),
    "int_snr": _set_all("snr", lambda r: round(r["snr"])),
    "time_past_end": lambda d: _last_row(d).update(time=d.get("time", d.get("timestamp")) + 1),
    "time_before_start": lambda d: _first_row(d).update(time=GPS - 10.0),
    "trigger_time": _trigger_time,
    "one_trigger_time": lambda d: _last_row(d).update(trigger_time=_last_row(d).pop("time")),
    "q_everywhere": _set_all("q", lambda r: r["snr"] / 2),
    "q_phase_duration": lambda d: [
        _set_all(c, v)(d)
        for c, v in (("q", lambda r: 8.0), ("phase", lambda r: -1.5), ("duration", lambda r: 0.1))
    ],
    "q_not_last": lambda d: (_set_all("q", lambda r: 3.0)(d), _last_row(d).pop("q")),
    "q_null_last": lambda d: (_set_all("q", lambda r: 3.0)(d), _last_row(d).update(q=None)),
    "q_string": lambda d: (_set_all("q", lambda r: 3.0)(d), _last_row(d).update(q="3")),
    "negative_duration": lambda d: (
        _set_all("duration", lambda r: 0.1)(d),
        _last_row(d).update(duration=-0.1),
    ),
    "row_is_list": lambda d: d["features"][_first_key(d)].append([1, 2, 3]),
    "channel_not_list": lambda d: d["features"].update({_first_key(d): {"time": 1}}),
    "garbled_key": _rename_first("L1:bad channel!"),
    "other_ifo": _rename_first("H1:ASC-AUX_OUT_DQ"),
    "target_twice": _dup_target,
    "snax_short_bins": _bins,
    "empty_features": lambda d: d.update(features={}),
    "quiet_channels": lambda d: d.update(
        features={k: ([None] * len(v) if None in v else []) for k, v in d["features"].items()}
    ),
}


@pytest.mark.parametrize("style", ["sgnax", "snax"])
def test_fast_path_equals_checked_path(style: str) -> None:
    model = _model()
    fmt = JsonFormat(ifo="L1", target_channel=TARGET, format=style)
    clean = [message(model, gps, style) for gps in range(GPS, GPS + 6)]
    # a job with half the channels: another key layout in the same format's cache
    clean += [message(model, gps, style, channels=range(0, 40, 2)) for gps in range(GPS, GPS + 3)]
    seen: dict[str, set[str]] = {"ok": set(), "rejected": set()}
    for i, payload in enumerate(clean):
        fast = _outcome(payload, fmt, fast=True)
        assert fast == _outcome(payload, fmt, fast=False)
        assert fast[0] == style
        # the clean messages take the fast path (the comparison is not checked vs checked)
        doc = orjson.loads(payload)
        rows = snax._rows(doc["features"], style, fmt)
        assert rows is not None and snax._columns(rows, GPS + i % 6, GPS + i % 6 + 1) is not None
        for name, mutate in MUTATIONS.items():
            doc = json.loads(payload)
            mutate(doc)
            bad = json.dumps(doc).encode()
            fast = _outcome(bad, fmt, fast=True)
            assert fast == _outcome(bad, fmt, fast=False), name
            seen["ok" if fast[0] == style else "rejected"].add(name)
        # after the mutations (same keys cached), the clean message still decodes the same
        assert _outcome(payload, fmt, fast=True) == _outcome(payload, fmt, fast=False)
    # the corpus exercises both outcomes
    assert {"int_snr", "q_everywhere", "q_phase_duration", "trigger_time"} <= seen["ok"]
    assert {"nan_snr", "bool_snr", "garbled_key", "huge_int_snr", "target_twice"} <= seen[
        "rejected"
    ]


def test_huge_integer_is_a_bad_value() -> None:
    fmt = JsonFormat(ifo="L1", target_channel=TARGET)
    row = {"time": GPS + 0.5, "snr": 10**400, "frequency": 30.0}
    payload = json.dumps({"time": GPS, "features": {"L1:ASC-AUX_OUT_DQ": [row]}})
    with pytest.raises(IngestRejected, match=r"^bad_value: snr"):
        parse_message(payload, fmt)
