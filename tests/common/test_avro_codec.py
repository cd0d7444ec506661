"""Avro single-object codec: round trips, header layout, errors, schema evolution."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import fastavro
import pytest

from idq_common.exceptions import (
    BadMarkerError,
    BodyDecodeError,
    ConfigError,
    DecodeError,
    EncodeError,
    UnknownSchemaError,
)
from idq_common.io.avro import KINDS, AvroCodec, decode, encode, fingerprint_of, kind_of, schema_dir
from idq_common.io.avro.codec import MARKER
from idq_dev.testing.avro_samples import sample_records

SCHEMAS = schema_dir()


def _rabin(data: bytes) -> int:
    """CRC-64-AVRO written out from the Avro specification, to check fastavro's."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def _single_object(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    """Encode like an independent writer would, straight from a schema file."""
    buf = io.BytesIO()
    buf.write(MARKER + fingerprint_of(schema))
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema, named_schemas={}), record)
    return buf.getvalue()


# -- schemas -------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_schema_documented_and_namespaced(kind: str) -> None:
    schema = json.loads((SCHEMAS / f"{kind}.avsc").read_text())
    assert schema["namespace"] == "idq.v1"
    assert schema["doc"].strip()
    for field in schema["fields"]:
        assert field.get("doc", "").strip(), f"{kind}.{field['name']} has no doc"


def test_every_kind_has_a_sample() -> None:
    assert set(sample_records()) == set(KINDS)


def test_fingerprint_matches_spec_and_independent_rabin() -> None:
    # The Avro spec / Java SchemaNormalization value for the schema "null".
    assert int.from_bytes(fingerprint_of('"null"'), "little") == 7195948357588979594
    for kind in KINDS:
        raw = json.loads((SCHEMAS / f"{kind}.avsc").read_text())
        canonical = fastavro.schema.to_parsing_canonical_form(raw)
        assert int.from_bytes(fingerprint_of(raw), "little") == _rabin(canonical.encode())


# -- round trips ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_roundtrip_every_kind(kind: str) -> None:
    record = sample_records()[kind]
    data = encode(kind, record)
    assert data[:2] == b"\xc3\x01"
    codec = AvroCodec(SCHEMAS)
    assert data[2:10] == codec.fingerprint(kind)
    assert kind_of(data) == kind
    assert decode(data) == (kind, record)


def test_defaults_filled_on_encode() -> None:
    record = dict(sample_records()["dead_letter"])
    del record["key"]
    assert decode(encode("dead_letter", record))[1]["key"] is None


def test_encode_rejects_unknown_kind_and_bad_records() -> None:
    good = sample_records()["dead_letter"]
    with pytest.raises(EncodeError, match="unknown message kind"):
        encode("no_such_kind", good)
    with pytest.raises(EncodeError):
        encode("dead_letter", {**good, "unexpected": 1})
    with pytest.raises(EncodeError):
        encode("dead_letter", {k: v for k, v in good.items() if k != "payload"})
    with pytest.raises(EncodeError):
        encode("dead_letter", {**good, "offset": "not a number"})


# -- errors --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "data", [b"", b"\xc3", b"\xc3\x01\x00", b'{"ifo": "H1"}', b"\xc3\x02" + b"\x00" * 20]
)
def test_bad_marker(data: bytes) -> None:
    with pytest.raises(BadMarkerError):
        decode(data)


def test_unknown_fingerprint_names_it() -> None:
    data = bytearray(encode("dead_letter", sample_records()["dead_letter"]))
    data[2:10] = bytes.fromhex("0011223344556677")
    with pytest.raises(UnknownSchemaError, match="0011223344556677"):
        decode(bytes(data))


@pytest.mark.parametrize("kind", KINDS)
def test_truncated_body(kind: str) -> None:
    data = encode(kind, sample_records()[kind])
    for cut in (11, len(data) // 2, len(data) - 1):
        with pytest.raises(BodyDecodeError, match=kind):
            decode(data[:cut])


def test_trailing_garbage_and_error_hierarchy() -> None:
    data = encode("quiver", sample_records()["quiver"])
    with pytest.raises(BodyDecodeError, match="trailing"):
        decode(data + b"\x00")
    assert issubclass(BodyDecodeError, DecodeError)
    assert issubclass(UnknownSchemaError, DecodeError)
    assert issubclass(BadMarkerError, DecodeError)


# -- schema evolution ----------------------------------------------------------------
def test_old_feature_batch_without_extra_gets_default() -> None:
    v1 = json.loads((SCHEMAS / "history" / "feature_batch.v1.avsc").read_text())
    record = {k: v for k, v in sample_records()["feature_batch"].items() if k != "extra"}
    data = _single_object(v1, record)
    assert data[2:10] != AvroCodec(SCHEMAS).fingerprint("feature_batch")
    kind, got = decode(data)
    assert kind == "feature_batch"
    assert got == {**record, "extra": {}}


def test_old_producer_codec_to_new_consumer(tmp_path: Path) -> None:
    """A producer still shipping the v1 schemas talks to a consumer on the current ones."""
    old = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, old, ignore=shutil.ignore_patterns("history"))
    shutil.copy(SCHEMAS / "history" / "model_announcement.v1.avsc", old / "model_announcement.avsc")
    producer = AvroCodec(old)
    record = {k: v for k, v in sample_records()["model_announcement"].items() if k != "metrics"}
    data = producer.encode("model_announcement", record)
    assert decode(data) == ("model_announcement", {**record, "metrics": {}})
    # Without the history file the consumer cannot know the old writer schema.
    bare = tmp_path / "bare"
    shutil.copytree(SCHEMAS, bare, ignore=shutil.ignore_patterns("history"))
    with pytest.raises(UnknownSchemaError):
        AvroCodec(bare).decode(data)


@pytest.mark.parametrize("path", sorted((SCHEMAS / "history").glob("*.avsc")), ids=lambda p: p.stem)
def test_every_history_version_decodes_with_defaults(path: Path) -> None:
    """A message from any kept older writer decodes; fields it lacks get their defaults."""
    old = json.loads(path.read_text())
    kind = path.name.split(".v")[0]
    current = json.loads((SCHEMAS / f"{kind}.avsc").read_text())
    sample = sample_records()[kind]
    old_fields = {f["name"] for f in old["fields"]}
    data = _single_object(old, {k: v for k, v in sample.items() if k in old_fields})
    got_kind, got = decode(data)
    assert got_kind == kind
    expected = {
        f["name"]: sample[f["name"]] if f["name"] in old_fields else f["default"]
        for f in current["fields"]
    }
    assert got == expected


# -- schema directory ----------------------------------------------------------------
def test_schema_dir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDQ_SCHEMA_DIR", str(SCHEMAS))
    assert schema_dir() == SCHEMAS
    monkeypatch.setenv("IDQ_SCHEMA_DIR", str(tmp_path / "missing"))
    with pytest.raises(ConfigError):
        schema_dir()
    with pytest.raises(ConfigError, match="missing"):
        AvroCodec(tmp_path)
