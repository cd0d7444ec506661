"""The pipeline's configuration: one TOML file -> frozen, validated :class:`Settings`.

::

    from idq_common.config import load_settings_or_exit
    settings = load_settings_or_exit(args.config)     # CLIs: exit 2 with one line on error
    settings = load_settings(path, env={})            # library/tests: raises ConfigError

Environment variables ``IDQ_<SECTION>__<KEY>`` (nested tables joined with ``__``,
e.g. ``IDQ_KAFKA__BOOTSTRAP_SERVERS``, ``IDQ_TRAIN__STREAM__STRIDE``) override the
file before validation; their values are parsed as TOML values when possible.
"""

from idq_common.config.load import (
    SECTIONS,
    load_settings,
    load_settings_or_exit,
    settings_from_dict,
)
from idq_common.config.schema import (
    BOUND_COLUMNS,
    FEATURE_COLUMNS,
    SEGMENT_SOURCES,
    CalibrateSettings,
    ClassifierSettings,
    EvaluateSettings,
    FeaturesSettings,
    GeneralSettings,
    MetricsSettings,
    SamplesSettings,
    SegmentsSettings,
    Settings,
    StoreSettings,
    StreamSettings,
    TimeseriesSettings,
    TrainSettings,
    known_flavors,
    register_flavor,
)
from idq_common.io.kafka.settings import KafkaSettings, TopicNames

__all__ = [
    "BOUND_COLUMNS",
    "FEATURE_COLUMNS",
    "SECTIONS",
    "SEGMENT_SOURCES",
    "CalibrateSettings",
    "ClassifierSettings",
    "EvaluateSettings",
    "FeaturesSettings",
    "GeneralSettings",
    "KafkaSettings",
    "MetricsSettings",
    "SamplesSettings",
    "SegmentsSettings",
    "Settings",
    "StoreSettings",
    "StreamSettings",
    "TimeseriesSettings",
    "TopicNames",
    "TrainSettings",
    "known_flavors",
    "load_settings",
    "load_settings_or_exit",
    "register_flavor",
    "settings_from_dict",
]
