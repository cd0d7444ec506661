"""Avro wire format: single-object codec over ``schemas/*.avsc`` and converters.

``from idq_common.io.avro import encode, decode`` uses a process-wide codec loaded
on first use (see :mod:`idq_common.io.avro.codec` for where the schemas come from).
"""

from idq_common.io.avro.codec import (
    KINDS,
    MARKER,
    AvroCodec,
    SchemaRegistry,
    decode,
    default_codec,
    encode,
    fingerprint_of,
    kind_of,
    schema_dir,
)

__all__ = [
    "KINDS",
    "MARKER",
    "AvroCodec",
    "SchemaRegistry",
    "decode",
    "default_codec",
    "encode",
    "fingerprint_of",
    "kind_of",
    "schema_dir",
]
