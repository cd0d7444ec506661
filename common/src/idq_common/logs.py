"""The one log format of every iDQ process (services, the ``idq`` command, bench).

One readable line per event: ``<time> <LEVEL> <logger>: <message>``; loggers are
named after their module (``logging.getLogger(__name__)``).
"""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

#: third-party loggers that are only useful when debugging. Not "astropy": creating its
#: logger before astropy is imported makes astropy's own logger setup fail
#: (AttributeError: '_set_defaults') in a process that imports gwpy later.
CHATTY = ("gwpy", "urllib3", "botocore", "s3fs", "fsspec")


def setup_logging(level: int = logging.INFO, debug_third_party: bool = False) -> None:
    """Log at ``level`` to stderr in :data:`LOG_FORMAT` (replacing earlier handlers)."""
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr, force=True)
    if not debug_third_party:
        for name in CHATTY:
            logging.getLogger(name).setLevel(logging.WARNING)
