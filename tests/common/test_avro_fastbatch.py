"""The fast ``feature_batch`` reader agrees with fastavro, value for value and
error for error (``AvroCodec.decode_fast`` against ``AvroCodec.decode``)."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import pytest

from idq_common.data.triggers import TriggerSet
from idq_common.exceptions import DecodeError
from idq_common.io.avro import AvroCodec, schema_dir
from idq_common.io.avro.codec import HEADER_SIZE, MARKER
from idq_common.io.avro.convert import batch_extra, batch_to_triggers, triggers_to_batch
from idq_common.io.avro.fastbatch import TABLES, FeatureBatchReader
from idq_dev.testing.avro_samples import sample_records

SCHEMAS = schema_dir()


def _batch(rows: int, names: tuple[str, ...], seed: int = 0, extra: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    ts = TriggerSet(
        names,
        rng.integers(0, len(names), rows).astype(np.int32),
        np.sort(100.0 + rng.random(rows)),
        rng.random(rows) * 10,
        rng.random(rows) * 100,
    )
    cols = {"q": rng.random(rows), "phase": rng.random(rows)} if extra else None
    record = triggers_to_batch(ts, "H1", "job-ü", 7, 100.0, 101.0, extra=cols)
    return AvroCodec(SCHEMAS).encode("feature_batch", record)


def _same(fast: tuple[str, dict[str, Any]], slow: tuple[str, dict[str, Any]]) -> None:
    assert fast[0] == slow[0]
    a, b = fast[1], slow[1]
    assert a.keys() == b.keys()
    for k, v in b.items():
        if k == "channels":
            assert list(a[k]) == v
        elif k == "extra":
            assert {n: bytes(x) for n, x in a[k].items()} == v
        else:
            got = bytes(a[k]) if isinstance(a[k], memoryview) else a[k]
            assert got == v and type(got) is type(v), k


@pytest.mark.parametrize(
    ("rows", "extra"), [(0, False), (1, False), (500, False), (500, True), (3, True)]
)
def test_same_record_as_fastavro(rows: int, extra: bool) -> None:
    codec = AvroCodec(SCHEMAS)
    data = _batch(rows, ("H1:A", "H1:Ω-B", "H1:C"), seed=rows, extra=extra)
    _same(codec.decode_fast(data), codec.decode(data))
    _, record = codec.decode_fast(data)
    # columns are views of the message, not copies
    assert isinstance(record["time"], memoryview) and record["time"].obj is data
    a, b = batch_to_triggers(record), batch_to_triggers(codec.decode(data)[1])
    assert a.channels == b.channels
    for col in ("channel", "time", "snr", "frequency"):
        assert np.array_equal(getattr(a, col), getattr(b, col))
    assert {k: v.tolist() for k, v in batch_extra(record).items()} == {
        k: v.tolist() for k, v in batch_extra(codec.decode(data)[1]).items()
    }


def test_table_shared_between_messages_and_cache_bounded() -> None:
    codec = AvroCodec(SCHEMAS)
    first = codec.decode_fast(_batch(10, ("a", "b"), seed=1))[1]["channels"]
    again = codec.decode_fast(_batch(20, ("a", "b"), seed=2))[1]["channels"]
    assert again is first
    # more distinct tables than remembered: every one still decoded right
    for i in range(TABLES + 3):
        names = tuple(f"c{i}-{j}" for j in range(i + 1))
        data = _batch(5, names, seed=i)
        assert codec.decode_fast(data)[1]["channels"] == names
    # a table that extends a remembered one is not mistaken for it
    assert codec.decode_fast(_batch(5, ("a", "b", "c")))[1]["channels"] == ("a", "b", "c")
    assert codec.decode_fast(_batch(5, ("a",)))[1]["channels"] == ("a",)


def _long(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _string(s: str) -> bytes:
    raw = s.encode()
    return _long(len(raw)) + raw


def test_blocked_arrays_and_maps_with_byte_counts() -> None:
    """Arrays and maps written in several blocks, some with negative counts + sizes
    (legal Avro that fastavro's writer does not produce), read as fastavro reads them."""
    codec = AvroCodec(SCHEMAS)
    n = 2
    cols = [np.array([0, 2], "<i4"), np.array([1.0, 2.0]), np.array([3.0, 4.0]), np.ones(2)]
    items = _string("H1:A") + _string("H1:B")
    body = _string("H1") + _string("src") + _long(3)
    body += np.array([100.0, 101.0], "<f8").tobytes()
    body += _long(-2) + _long(len(items)) + items + _long(1) + _string("H1:C") + _long(0)
    for c in cols:
        body += _long(c.nbytes) + c.tobytes()
    q = np.arange(n, dtype="<f8").tobytes()
    entry = _string("q") + _long(len(q)) + q
    body += _long(-1) + _long(len(entry)) + entry + _long(0)
    data = MARKER + codec.fingerprint("feature_batch") + body
    _same(codec.decode_fast(data), codec.decode(data))
    assert codec.decode_fast(data)[1]["channels"] == ("H1:A", "H1:B", "H1:C")


def _outcome(fn: Any, data: bytes) -> Any:
    try:
        return ("ok", fn(data))
    except DecodeError as exc:
        return ("error", type(exc).__name__, str(exc))


def test_broken_bodies_fail_as_in_fastavro() -> None:
    """Truncated, padded and randomly corrupted messages: the same record or the same
    error (type and reason) as the plain decode."""
    codec = AvroCodec(SCHEMAS)
    data = _batch(6, ("H1:A", "H1:B"), seed=3, extra=True)
    cases = [data[:cut] for cut in range(HEADER_SIZE, len(data))] + [data + b"\x00"]
    rng = random.Random(4)
    for _ in range(400):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            mutated[rng.randrange(HEADER_SIZE, len(data))] = rng.randrange(256)
        cases.append(bytes(mutated))
    for case in cases:
        fast, slow = _outcome(codec.decode_fast, case), _outcome(codec.decode, case)
        assert fast[0] == slow[0], case
        if fast[0] == "ok":
            _same(fast[1], slow[1])
        else:
            assert fast == slow


def test_other_kinds_and_old_writers_take_the_plain_path() -> None:
    codec = AvroCodec(SCHEMAS)
    for kind, record in sample_records().items():
        data = codec.encode(kind, record)
        if kind != "feature_batch":
            assert codec.decode_fast(data) == codec.decode(data)
    v1 = json.loads((SCHEMAS / "history" / "feature_batch.v1.avsc").read_text())
    record = {k: v for k, v in sample_records()["feature_batch"].items() if k != "extra"}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(v1), record)
    from idq_common.io.avro.codec import fingerprint_of

    data = MARKER + fingerprint_of(v1) + buf.getvalue()
    assert codec.decode_fast(data) == ("feature_batch", {**record, "extra": {}})


def test_an_evolved_layout_disables_the_reader(tmp_path: Path) -> None:
    schema = json.loads((SCHEMAS / "feature_batch.avsc").read_text())
    schema["fields"].append({"name": "new", "type": "long", "default": 0})
    assert not FeatureBatchReader(fastavro.parse_schema(schema)).enabled
    assert FeatureBatchReader(AvroCodec(SCHEMAS).registry.current("feature_batch").parsed).enabled
