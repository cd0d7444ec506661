"""The frozen, validated settings of one instrument's pipeline.

Every class here is a plain frozen dataclass built by :mod:`idq_common.config.load`
after all checks passed, so code holding a :class:`Settings` may trust every value.
Library modules take plain arguments; only the stages' ``cli.py``/``stage.py`` glue
reads these objects.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from idq_common.contracts import channel_name
from idq_common.io.kafka.settings import MASK, KafkaSettings, is_secret, masked_repr

# -- vocabularies, kept in one place ------------------------------------------------

#: Trigger columns a sample-selection bound may constrain (the TriggerSet columns).
BOUND_COLUMNS: tuple[str, ...] = ("snr", "frequency")

#: Columns a feature vector may hold per channel: the columns triggers carry through
#: the pipeline (``TriggerSet``: snr, frequency) plus ``dt``; ``q``/``duration`` of
#: Omicron rows are not carried, so a feature cannot be built from them.
FEATURE_COLUMNS: tuple[str, ...] = ("snr", "frequency", "dt")

#: Default ``[features] unsafe_channels``: channels that see the strain itself (iDQ's
#: unsafe-channel list: calibration, DARM and the output mode cleaner's photodiodes),
#: whose "witness" of a glitch would also witness a gravitational wave.
DEFAULT_UNSAFE_CHANNELS: tuple[str, ...] = (
    "*:GDS-*",
    "*:CAL-*",
    "*:LSC-DARM*",
    "*:OMC-DCPD*",
)

#: Where analysis segments come from.
SEGMENT_SOURCES: tuple[str, ...] = ("none", "static", "dqsegdb", "topic")

#: Classifier flavors the configuration accepts. The classifier factory maps each to an
#: implementation; a new flavor is added with :func:`register_flavor` (before loading).
_FLAVORS: list[str] = ["ovl", "random_forest", "hist_gradient_boosting", "sgd", "naive_bayes"]


def known_flavors() -> tuple[str, ...]:
    """Classifier flavors accepted in ``[[classifier]].flavor``."""
    return tuple(_FLAVORS)


def register_flavor(name: str) -> None:
    """Accept one more classifier flavor (idempotent); the factory calls this."""
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"bad flavor name {name!r}")
    if name not in _FLAVORS:
        _FLAVORS.append(name)


Bounds = dict[str, tuple[float, float]]


# -- sections -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GeneralSettings:
    """``[general]``: the instrument and a free tag for this pipeline."""

    ifo: str
    tag: str = "default"

    @property
    def observatory(self) -> str:
        """One-letter observatory code (``H`` for ``H1``), used in frame file names."""
        return self.ifo[0]


@dataclass(frozen=True, slots=True)
class SamplesSettings:
    """``[samples]``: how glitch and clean samples are chosen.

    Bounds are inclusive low, exclusive high, per trigger column.
    """

    target_channel: str
    target_bounds: Bounds
    dirty_bounds: Bounds
    dirty_window: float
    random_rate: float
    seed: int


@dataclass(frozen=True, slots=True)
class FeaturesSettings:
    """``[features]``: how a feature vector is built around a sample time.

    ``channels`` is ``None`` when every channel seen in the data (but the target) is
    used; when ``channels_file`` is given its lines have already been read into
    ``channels``. ``unsafe_channels`` are patterns (shell globs, or regular expressions
    written ``re:<pattern>``) of channels never used as features.
    """

    window: float
    columns: tuple[str, ...] = ("snr", "frequency", "dt")
    channels: tuple[str, ...] | None = None
    channels_file: Path | None = None
    unsafe_channels: tuple[str, ...] = DEFAULT_UNSAFE_CHANNELS


@dataclass(frozen=True, slots=True)
class SegmentsSettings:
    """``[segments]``: the source of analysis segments and its parameters."""

    source: str = "none"
    flag: str | None = None
    host: str | None = None
    file: Path | None = None
    segments: tuple[tuple[float, float], ...] | None = None


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """A ``[<stage>.stream]`` section: the stage's cadence."""

    stride: float
    delay: float
    max_lag_strides: int | None = None
    max_lag_seconds: float | None = None
    timeout: float = 30.0
    enforce_integer_strides: bool = True


@dataclass(frozen=True, slots=True)
class TrainSettings:
    """``[train]`` + ``[train.stream]``."""

    min_new_samples: int
    max_samples: int
    max_stride: float
    stream: StreamSettings


@dataclass(frozen=True, slots=True)
class EvaluateSettings:
    """``[evaluate]`` + ``[evaluate.stream]``."""

    max_samples: int
    stream: StreamSettings
    #: clean (random-time) samples per second drawn for calibration; None: ``[samples]
    #: random_rate``. The FAP floor of a calibration is ~1 / (clean samples of its model
    #: + 1), and a model lives ``train.min_new_samples / random_rate`` seconds: a higher
    #: rate here is what lets FAP 1e-3 and below be reached within one model's life
    clean_rate: float | None = None


@dataclass(frozen=True, slots=True)
class CalibrateSettings:
    """``[calibrate]`` + ``[calibrate.stream]`` (default: the evaluate cadence)."""

    min_new_samples: int
    max_samples: int
    grid_points: int
    stream: StreamSettings
    #: samples (of the model in use) also kept while within this many seconds of the
    #: newest, beyond ``max_samples``: the clean ones set the smallest FAP a map can
    #: claim, 1 / (n_clean + 1), so hours of them make FAP 1e-3 and below reachable
    history_seconds: float = 0.0
    #: bound on what the history keeps (memory: ~9 bytes per sample)
    max_history_samples: int = 500_000
    min_samples_per_class: int = 50


@dataclass(frozen=True, slots=True)
class TimeseriesSettings:
    """``[timeseries]`` + ``[timeseries.stream]``.

    ``fmin``/``fmax`` name the output channels; by default they are the target
    frequency bounds.
    """

    sample_rate: int
    description: str
    output_dir: Path
    fmin: float
    fmax: float
    stream: StreamSettings


@dataclass(frozen=True, slots=True)
class ClassifierSettings:
    """One ``[[classifier]]`` table."""

    nickname: str
    flavor: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, repr=False)
class StoreSettings:
    """``[store]``: the artifact store. ``url`` is absolute (``file:///...`` or ``s3://...``)."""

    url: str
    endpoint_url: str | None = None
    key: str | None = None
    secret: str | None = field(default=None, metadata={"secret": True})

    __repr__ = masked_repr
    __str__ = masked_repr

    @property
    def scheme(self) -> str:
        """``file`` or ``s3``."""
        return self.url.split("://", 1)[0]

    def storage_options(self) -> dict[str, Any]:
        """Keyword arguments for ``fsspec.filesystem(self.scheme, ...)``."""
        if self.scheme != "s3":
            return {}
        options: dict[str, Any] = {}
        if self.key is not None:
            options["key"] = self.key
        if self.secret is not None:
            options["secret"] = self.secret
        if self.endpoint_url is not None:
            options["client_kwargs"] = {"endpoint_url": self.endpoint_url}
        return options


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """``[metrics]``: where the Prometheus/health server listens (port 0: any free port)."""

    host: str = "127.0.0.1"
    port: int = 0


#: JSON feature formats ``idq-ingest`` reads (``auto``: recognised by the envelope key).
INGEST_FORMATS: tuple[str, ...] = ("auto", "snax", "sgnax")

#: Default ``[ingest] channel_pattern``: ``<IFO>:<SUBSYSTEM>-<NAME>``, optionally with the
#: ``_<flow>_<fhigh>`` band suffix sgnax appends (e.g. ``L1:ASC-AUX_012_OUT_DQ_16_256``).
DEFAULT_CHANNEL_PATTERN = r"^[A-Z][0-9]:[A-Z0-9]+-[A-Za-z0-9_]+$"


@dataclass(frozen=True, slots=True)
class IngestSettings:
    """``[ingest]``: the SNAX/sgnax JSON source ``idq-ingest`` turns into features.

    ``channel_pattern`` is a regular expression every channel key must match in full
    (keys are kept as they come, band suffix included: each band is its own feature
    channel); a key whose name minus the ``_<flow>_<fhigh>`` suffix is the target
    channel is published as the target channel.
    """

    source_topic: str
    format: str = "auto"
    channel_pattern: str = DEFAULT_CHANNEL_PATTERN
    source_id: str = "ingest"
    message_seconds: float = 1.0
    snax_rate: int = 16


@dataclass(frozen=True, slots=True)
class Settings:
    """The whole validated configuration of one instrument's pipeline."""

    general: GeneralSettings
    samples: SamplesSettings
    features: FeaturesSettings
    segments: SegmentsSettings
    train: TrainSettings
    evaluate: EvaluateSettings
    calibrate: CalibrateSettings
    timeseries: TimeseriesSettings
    classifiers: tuple[ClassifierSettings, ...]
    kafka: KafkaSettings
    store: StoreSettings
    metrics: MetricsSettings
    ingest: IngestSettings | None = None
    source: Path | None = None

    def classifier(self, nickname: str) -> ClassifierSettings:
        """The classifier with this nickname (case-insensitive).

        Raises
        ------
        KeyError
            If there is none.
        """
        for c in self.classifiers:
            if c.nickname.lower() == nickname.lower():
                return c
        raise KeyError(nickname)

    def channel_name(self, product: str, nickname: str) -> str:
        """Output channel name, e.g. ``H1:IDQ-FAP_OVL_10_2048``."""
        ts = self.timeseries
        return channel_name(self.general.ifo, product, nickname, ts.fmin, ts.fmax)

    def to_dict(self, mask_secrets: bool = True) -> dict[str, Any]:
        """Plain, JSON-able nested dict of the settings; secrets shown as ``'***'``."""
        out = _plain(self, mask_secrets)
        assert isinstance(out, dict)
        return out

    def dump(self) -> str:
        """One-line JSON of :meth:`to_dict` (secrets masked), for the start-up log."""
        return json.dumps(self.to_dict(mask_secrets=True), sort_keys=False)


def _plain(value: Any, mask: bool) -> Any:
    """Recursively convert dataclasses/paths/tuples to JSON-able values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            out[f.name] = MASK if (mask and is_secret(f) and v is not None) else _plain(v, mask)
        return out
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v, mask) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, mask) for v in value]
    if isinstance(value, float) and math.isinf(value):
        # JSON has no infinity; keep the TOML spelling.
        return "inf" if value > 0 else "-inf"
    return value
