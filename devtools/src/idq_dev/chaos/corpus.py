"""The bad-input corpus: messages every input topic must survive.

Each :class:`BadInput` is one kind of bad message for one topic, with what must
happen to it: ``"dead"`` (dead-lettered with a reason by every stage reading that
topic, nothing else changes) or ``"ignored"`` (an at-least-once artefact such as a
duplicated or out-of-order batch: taken care of silently, outputs unchanged, *not*
dead-lettered). Payloads are built from a real message of the run, so they differ
from good ones only in the way the kind says.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from idq_common.io.avro import codec
from idq_common.io.avro.convert import pack, segment_update_to_record

#: the topics a bad message goes to (kinds of ``[kafka.topics]``)
FEATURES, QUIVERS = "features", "quivers"


@dataclass(frozen=True)
class BadInput:
    """One kind of bad message."""

    kind: str
    topic: str
    expect: str  # "dead" | "ignored"
    payload: bytes


def _batch(good: dict[str, Any], **changes: Any) -> bytes:
    rec = dict(good)
    rec.update(changes)
    rec["source"] = "chaos-bad"  # never a real source: a wrongly accepted one is visible
    return codec.encode("feature_batch", rec)


def _f8(values: Any) -> bytes:
    return pack(np.asarray(values, dtype=np.float64), "<f8")


def features_corpus(good: dict[str, Any], good_payload: bytes) -> list[BadInput]:
    """Bad ``feature_batch`` messages built from the decoded good record ``good``.

    ``good`` must hold at least two rows.
    """
    n = len(good["time"]) // 8
    assert n >= 2, "the template batch needs rows"
    time = np.frombuffer(good["time"], "<f8").copy()
    snr = np.frombuffer(good["snr"], "<f8").copy()
    chan = np.frombuffer(good["channel"], "<i4").copy()
    start, end = float(good["start"]), float(good["end"])

    def with_col(arr: np.ndarray, i: int, value: float) -> bytes:
        a = arr.copy()
        a[i] = value
        return _f8(a)

    marker_fp = good_payload[:10]
    cases: list[tuple[str, str, Callable[[], bytes]]] = [
        ("truncated_avro", "dead", lambda: good_payload[: len(good_payload) // 2]),
        ("empty_payload", "dead", lambda: b""),
        ("bad_marker", "dead", lambda: b"\x00\x00" + good_payload[2:]),
        ("unknown_fingerprint", "dead", lambda: codec.MARKER + b"\x13" * 8 + good_payload[10:]),
        ("garbage_bytes", "dead", lambda: bytes(range(256)) * 4),
        ("garbage_json", "dead", lambda: json.dumps({"time": start, "features": {}}).encode()),
        ("huge_message", "dead", lambda: marker_fp + b"\xff" * 900_000),
        (
            "wrong_kind",
            "dead",
            lambda: codec.encode(
                "segment_update",
                segment_update_to_record(good["ifo"], "H1:X:1", [(start, end)], [], start),
            ),
        ),
        ("nan_snr", "dead", lambda: _batch(good, snr=with_col(snr, 0, float("nan")))),
        ("inf_snr", "dead", lambda: _batch(good, snr=with_col(snr, 0, float("inf")))),
        ("negative_snr", "dead", lambda: _batch(good, snr=with_col(snr, 0, -3.0))),
        (
            "nan_frequency",
            "dead",
            lambda: _batch(
                good,
                frequency=with_col(np.frombuffer(good["frequency"], "<f8"), 0, float("nan")),
            ),
        ),
        ("time_after_span", "dead", lambda: _batch(good, time=with_col(time, 0, end + 5.0))),
        ("time_before_span", "dead", lambda: _batch(good, time=with_col(time, 0, start - 5.0))),
        ("nan_time", "dead", lambda: _batch(good, time=with_col(time, 0, float("nan")))),
        ("inverted_span", "dead", lambda: _batch(good, start=end, end=start)),
        (
            "unknown_channel_id",
            "dead",
            lambda: _batch(good, channel=pack(np.where(chan == chan[0], 10_000, chan), "<i4")),
        ),
        (
            "negative_channel_id",
            "dead",
            lambda: _batch(good, channel=pack(np.where(chan == chan[0], -1, chan), "<i4")),
        ),
        ("empty_channel_table", "dead", lambda: _batch(good, channels=[])),
        ("column_length_mismatch", "dead", lambda: _batch(good, snr=_f8(snr[:-1]))),
        ("ragged_column_bytes", "dead", lambda: _batch(good, time=good["time"] + b"\x00\x01")),
        (
            "duplicate_channel_names",
            "dead",
            lambda: _batch(good, channels=[good["channels"][0]] * len(good["channels"])),
        ),
        ("negative_seq", "dead", lambda: _batch(good, seq=-5)),
        # at-least-once artefacts of the real source: dropped by seq, never dead-lettered
        ("duplicated_batch", "ignored", lambda: good_payload),
    ]
    return [BadInput(k, FEATURES, e, make()) for k, e, make in cases]


def out_of_order_batch(payload: bytes) -> BadInput:
    """A real batch sent again much later (an old batch out of order)."""
    return BadInput("out_of_order_batch", FEATURES, "ignored", payload)


def quivers_corpus(good: dict[str, Any], good_payload: bytes) -> list[BadInput]:
    """Bad ``quiver`` messages built from the decoded good record ``good``."""
    n = int(good["n"])
    ranks = np.frombuffer(good["ranks"], "<f8").copy()

    def q(**changes: Any) -> bytes:
        rec = dict(good)
        rec.update(changes)
        rec["seq"] = -1_000_000  # a stride no real quiver has
        return codec.encode("quiver", rec)

    def ranks_with(i: int, value: float) -> bytes:
        r = ranks.copy()
        r[i % max(n, 1)] = value
        return _f8(r)

    cases: list[tuple[str, Callable[[], bytes]]] = [
        ("quiver_truncated_avro", lambda: good_payload[: len(good_payload) // 2]),
        ("quiver_garbage", lambda: b"not avro at all"),
        ("quiver_unknown_fingerprint", lambda: codec.MARKER + b"\x77" * 8 + good_payload[10:]),
        ("quiver_unknown_classifier", lambda: q(classifier="no-such-classifier")),
        ("quiver_rows_mismatch", lambda: q(n=n + 3)),
        ("quiver_nan_rank", lambda: q(ranks=ranks_with(0, float("nan")))),
        ("quiver_rank_above_one", lambda: q(ranks=ranks_with(0, 7.5))),
        ("quiver_bad_label", lambda: q(labels=struct.pack(f"{n}b", *([3] * n)))),
    ]
    return [BadInput(k, QUIVERS, "dead", make()) for k, make in cases]
