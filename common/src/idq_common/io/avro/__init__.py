"""Avro wire format: single-object codec over ``schemas/*.avsc`` and converters.

``from idq_common.io.avro import encode, decode`` uses a process-wide codec loaded
on first use (see :mod:`idq_common.io.avro.codec` for where the schemas come from).
"""

from idq_common.io.avro import codec
from idq_common.io.avro.codec import *  # noqa: F403  (the package's names are the codec's)

__all__ = ["codec", *codec.__all__]
