"""Every error the project raises, under one root class.

Callers catch :class:`IDQError` to handle anything of ours and let genuine bugs
(``TypeError``, ``KeyError`` ...) propagate.
"""

from __future__ import annotations


class IDQError(Exception):
    """Root of every error raised on purpose by iDQ code."""


# -- configuration -----------------------------------------------------------------
class ConfigError(IDQError):
    """A configuration value is missing, unknown or invalid.

    Parameters
    ----------
    key : str
        Dotted path of the offending key, e.g. ``"train.stream.stride"``.
    problem : str
        What is wrong with it, in words an operator can act on.
    """

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"config error at '{key}': {problem}")


# -- streaming ---------------------------------------------------------------------
class MaxIterError(IDQError):
    """The cadence manager fell further behind real time than allowed.

    ``skipped`` is the ``(start, end)`` GPS span the caller must publish as a gap
    after skipping ahead.
    """

    def __init__(self, message: str, skipped: tuple[float, float]) -> None:
        self.skipped = skipped
        super().__init__(message)


class NoDataError(IDQError):
    """A data source holds nothing for the requested span."""


class StopRequested(IDQError):
    """A stop (SIGTERM) was requested while waiting for data: abandon the stride."""


class BadSpanError(IDQError):
    """A requested span is malformed or not (yet) available from the source."""


class IncompleteDataError(BadSpanError):
    """A span was only partly delivered before the latency timeout ran out."""


class SegmentQueryError(IDQError):
    """Segments could not be obtained from their source (server down, bad answer)."""


# -- wire formats ------------------------------------------------------------------
class DecodeError(IDQError):
    """A message could not be decoded."""


class BadMarkerError(DecodeError):
    """The message does not start with the Avro single-object marker ``C3 01``."""


class UnknownSchemaError(DecodeError):
    """The message's writer-schema fingerprint is not one we know."""


class BodyDecodeError(DecodeError):
    """The marker and fingerprint are fine but the body does not decode."""


class EncodeError(IDQError):
    """A record could not be encoded (unknown kind, or it does not match its schema)."""


class InvalidMessageError(IDQError):
    """A message decoded but its content cannot be used (e.g. inconsistent columns)."""


# -- science -----------------------------------------------------------------------
class ClassifierError(IDQError):
    """A classifier cannot do what was asked."""


class ClassifierParamError(ClassifierError):
    """A classifier parameter is unknown or has a value the classifier would fail on.

    ``param`` names the parameter (a key of ``[classifier.params]``), or a dotted
    configuration key outside it (``features.columns``) when that is the cause.
    """

    def __init__(self, param: str, problem: str) -> None:
        self.param = param
        self.problem = problem
        super().__init__(f"{param}: {problem}")


class NotTrainedError(ClassifierError):
    """The classifier has no model yet."""


class NotCalibratedError(ClassifierError):
    """The classifier has no calibration map yet."""


class CalibrationError(IDQError):
    """A calibration map cannot be fitted or used."""


# -- artifacts ---------------------------------------------------------------------
class StoreError(IDQError):
    """The artifact store failed."""


class ArtifactNotFoundError(StoreError):
    """No artifact under that id or URI."""


class IntegrityError(StoreError):
    """An artifact's bytes do not match its recorded sha256 (truncated or tampered)."""


class FrameError(IDQError):
    """A GWF frame could not be written or read (LALFrame/gwpy failed, not iDQ's frame)."""


# -- infrastructure ----------------------------------------------------------------
class BrokerError(IDQError):
    """The local Kafka broker could not be fetched, started or reached."""


class S3ServerError(IDQError):
    """The local S3-compatible server could not be started or reached."""
