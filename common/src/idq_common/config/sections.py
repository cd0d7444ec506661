"""One validating builder per configuration section.

Each function reads its section from the root :class:`~idq_common.config.reader.Table`
and returns the frozen settings object, raising
:class:`~idq_common.exceptions.ConfigError` at the first bad key.
"""

from __future__ import annotations

import copy
import math
import re
from typing import Any
from urllib.parse import urlparse

from idq_common.config.reader import Table, describe, suggest
from idq_common.config.schema import (
    BOUND_COLUMNS,
    DEFAULT_CHANNEL_PATTERN,
    DEFAULT_UNSAFE_CHANNELS,
    FEATURE_COLUMNS,
    INGEST_FORMATS,
    SEGMENT_SOURCES,
    Bounds,
    CalibrateSettings,
    ClassifierSettings,
    EvaluateSettings,
    FeaturesSettings,
    GeneralSettings,
    IngestSettings,
    MetricsSettings,
    SamplesSettings,
    SegmentsSettings,
    StoreSettings,
    StreamSettings,
    TimeseriesSettings,
    TrainSettings,
    known_flavors,
)
from idq_common.io.kafka.settings import (
    DEFAULT_RETENTION_BYTES,
    MANAGED_LIBRDKAFKA_KEYS,
    PARTITIONERS,
    SASL_MECHANISMS,
    SECURITY_PROTOCOLS,
    TOPIC_KINDS,
    KafkaSettings,
    TopicNames,
    valid_topic_name,
)

_IFO = re.compile(r"^[A-Z][0-9]$")
_CHANNEL = re.compile(r"^([A-Z][0-9]):\S+$")
_FLAG = re.compile(r"^([A-Z][0-9]):[A-Za-z0-9_-]+(:[0-9]+)?$")
_NICKNAME = re.compile(r"^[A-Za-z0-9]+$")
_DESCRIPTION = re.compile(r"^[A-Za-z0-9_]+$")
_LIBRDKAFKA_KEY = re.compile(r"^[a-z0-9]+(\.[a-z0-9]+)*$")
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_STREAM_KEYS = (
    "stride",
    "delay",
    "max_lag_strides",
    "max_lag_seconds",
    "timeout",
    "enforce_integer_strides",
)


def _section(root: Table, name: str, allowed: tuple[str, ...], required: bool = True) -> Table:
    table = root.table(name, allowed, required=required)
    # Optional sections that are absent read as empty tables (every key defaulted).
    return table if table is not None else Table({}, name, root.ctx, allowed)


def _channel(table: Table, name: str, ifo: str) -> str:
    value: str = table.string(name)
    m = _CHANNEL.match(value)
    if not m:
        raise table.error(
            name, f"expected a channel name like '{ifo}:GDS-CALIB_STRAIN', got {value!r}"
        )
    if m.group(1) != ifo:
        raise table.error(name, f"channel {value!r} is not of instrument {ifo} (general.ifo)")
    return value


# -- general, samples, features, segments ----------------------------------------------


def general(root: Table) -> GeneralSettings:
    """``[general]``."""
    t = _section(root, "general", ("ifo", "tag"))
    ifo: str = t.string("ifo")
    if not _IFO.match(ifo):
        raise t.error(
            "ifo",
            f"expected an instrument like 'H1', 'L1', 'V1' or 'K1' (letter + digit), got {ifo!r}",
        )
    tag: str = t.string("tag", "default")
    if any(c.isspace() for c in tag):
        raise t.error("tag", f"must not contain whitespace, got {tag!r}")
    return GeneralSettings(ifo=ifo, tag=tag)


def _bounds(parent: Table, name: str, default: Bounds | None = None) -> Bounds:
    raw = parent.raw_table(name)
    if raw is None:
        if default is None:
            raise parent.error(name, "missing required key (a table like { snr = [10.0, inf] })")
        return dict(default)
    table = Table(raw, parent.key(name), parent.ctx, BOUND_COLUMNS)
    out: Bounds = {}
    for column, value in raw.items():
        key = table.key(column)
        if not isinstance(value, list) or len(value) != 2:
            raise parent.ctx.error(key, f"expected an array [low, high], got {describe(value)}")
        low = table.check_number(key, value[0], finite=False)
        high = table.check_number(key, value[1], finite=False)
        if not low < high:
            raise parent.ctx.error(key, f"low bound must be < high bound, got [{low:g}, {high:g}]")
        out[column] = (low, high)
    return out


def samples(root: Table, ifo: str) -> SamplesSettings:
    """``[samples]``."""
    t = _section(
        root,
        "samples",
        ("target_channel", "target_bounds", "dirty_bounds", "dirty_window", "random_rate", "seed"),
    )
    target_bounds = _bounds(t, "target_bounds")
    return SamplesSettings(
        target_channel=_channel(t, "target_channel", ifo),
        target_bounds=target_bounds,
        dirty_bounds=_bounds(t, "dirty_bounds", default=target_bounds),
        dirty_window=t.number("dirty_window", gt=0),
        random_rate=t.number("random_rate", gt=0),
        seed=t.integer("seed", 0, min=0),
    )


def features(root: Table, smp: SamplesSettings) -> FeaturesSettings:
    """``[features]``; a ``channels_file`` is read into ``channels`` here."""
    t = _section(
        root, "features", ("window", "columns", "channels", "channels_file", "unsafe_channels")
    )
    columns = t.strings("columns", ("snr", "frequency", "dt"))
    for col in columns:
        if col not in FEATURE_COLUMNS:
            raise t.error(
                "columns",
                f"unknown column {col!r} (not a column the pipeline carries)"
                + suggest(col, FEATURE_COLUMNS).replace("one of", "a subset of"),
            )
    unsafe = t.strings("unsafe_channels", DEFAULT_UNSAFE_CHANNELS)
    for pattern in unsafe:
        if pattern.startswith("re:"):
            try:
                re.compile(pattern[3:])
            except re.error as exc:
                raise t.error(
                    "unsafe_channels", f"bad regular expression {pattern!r}: {exc}"
                ) from None
    channels = t.strings("channels", None)
    channels_file = None
    if t.has("channels_file"):
        if channels is not None:
            raise t.error(
                "channels_file", "give features.channels or features.channels_file, not both"
            )
        channels_file = t.ctx.path(t.string("channels_file"))
        if not channels_file.is_file():
            raise t.error("channels_file", f"file not found: {channels_file}")
        lines = channels_file.read_text().splitlines()
        names = [ln.split("#", 1)[0].strip() for ln in lines]
        channels = tuple(dict.fromkeys(n for n in names if n))
        if not channels:
            raise t.error("channels_file", f"{channels_file} lists no channels")
    if channels is not None:
        where = "channels_file" if channels_file else "channels"
        if smp.target_channel in channels:
            raise t.error(where, f"must not include the target channel {smp.target_channel!r}")
        from idq_common.science.channels import unsafe_matcher

        is_unsafe = unsafe_matcher(unsafe)
        flagged = [c for c in channels if is_unsafe(c)]
        if flagged:
            raise t.error(
                where,
                f"{flagged[0]!r} matches features.unsafe_channels; remove it or the pattern",
            )
    return FeaturesSettings(
        window=t.number("window", gt=0),
        columns=columns,
        channels=channels,
        channels_file=channels_file,
        unsafe_channels=unsafe,
    )


_SEGMENT_KEYS = {
    "none": (),
    "static": ("segments", "file"),
    "dqsegdb": ("flag", "host"),
    "topic": ("flag",),
}


def segments(root: Table, ifo: str) -> SegmentsSettings:
    """``[segments]`` (absent: ``source = "none"``)."""
    t = _section(root, "segments", ("source", "flag", "host", "file", "segments"), required=False)
    source: str = t.string("source", "none", choices=SEGMENT_SOURCES)
    used = _SEGMENT_KEYS[source]
    for k in t.data:
        if k != "source" and k not in used:
            raise t.error(k, f"not used when segments.source is {source!r}")
    flag = host = file = segs = None
    if source in ("dqsegdb", "topic"):
        flag = t.string("flag")
        m = _FLAG.match(flag)
        if not m:
            raise t.error(
                "flag", f"expected a flag like '{ifo}:DMT-ANALYSIS_READY:1', got {flag!r}"
            )
        if m.group(1) != ifo:
            raise t.error("flag", f"flag {flag!r} is not of instrument {ifo} (general.ifo)")
    if source == "dqsegdb":
        host = t.string("host")
        parsed = urlparse(host)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise t.error("host", f"expected an http:// or https:// URL, got {host!r}")
    if source == "static":
        if t.has("segments") == t.has("file"):
            raise t.error(
                "segments", "static source needs exactly one of segments.segments or segments.file"
            )
        if t.has("file"):
            file = t.ctx.path(t.string("file"))
            if not file.is_file():
                raise t.error("file", f"file not found: {file}")
        else:
            segs = _segment_list(t)
    return SegmentsSettings(source=source, flag=flag, host=host, file=file, segments=segs)


def _segment_list(t: Table) -> tuple[tuple[float, float], ...]:
    items = t.array("segments")
    out = []
    for i, seg in enumerate(items):
        key = f"{t.key('segments')}[{i}]"
        if not isinstance(seg, list) or len(seg) != 2:
            raise t.ctx.error(key, f"expected [start, end], got {describe(seg)}")
        start, end = (t.check_number(key, v) for v in seg)
        if not start < end:
            raise t.ctx.error(key, f"start must be < end, got [{start:g}, {end:g}]")
        out.append((start, end))
    return tuple(out)


# -- stages -----------------------------------------------------------------------------


def stream(t: Table) -> StreamSettings:
    """A ``[<stage>.stream]`` table."""
    return StreamSettings(
        stride=t.number("stride", gt=0),
        delay=t.number("delay", 0.0, ge=0),
        max_lag_strides=t.integer("max_lag_strides", None, min=1),
        max_lag_seconds=t.number("max_lag_seconds", None, gt=0),
        timeout=t.number("timeout", 30.0, gt=0),
        enforce_integer_strides=t.boolean("enforce_integer_strides", True),
    )


def _stream_of(t: Table) -> StreamSettings:
    sub = t.table("stream", _STREAM_KEYS, required=True)
    assert sub is not None
    return stream(sub)


def _sample_counts(t: Table) -> tuple[int, int]:
    min_new = t.integer("min_new_samples", min=1)
    max_samples = t.integer("max_samples", 20000, min=1)
    if max_samples < min_new:
        raise t.error("max_samples", f"must be >= min_new_samples ({min_new}), got {max_samples}")
    return min_new, max_samples


def train(root: Table) -> TrainSettings:
    """``[train]`` + ``[train.stream]``."""
    t = _section(root, "train", ("min_new_samples", "max_samples", "max_stride", "stream"))
    min_new, max_samples = _sample_counts(t)
    return TrainSettings(
        min_new_samples=min_new,
        max_samples=max_samples,
        max_stride=t.number("max_stride", 86400.0, gt=0),
        stream=_stream_of(t),
    )


def evaluate(root: Table) -> EvaluateSettings:
    """``[evaluate]`` + ``[evaluate.stream]``."""
    t = _section(root, "evaluate", ("max_samples", "clean_rate", "stream"))
    return EvaluateSettings(
        max_samples=t.integer("max_samples", 1000, min=1),
        stream=_stream_of(t),
        clean_rate=t.number("clean_rate", None, gt=0.0),
    )


def calibrate(root: Table) -> CalibrateSettings:
    """``[calibrate]``; ``[calibrate.stream]`` keys not given come from ``[evaluate.stream]``."""
    t = _section(
        root,
        "calibrate",
        (
            "min_new_samples",
            "max_samples",
            "grid_points",
            "history_seconds",
            "max_history_samples",
            "min_samples_per_class",
            "stream",
        ),
    )
    min_new, max_samples = _sample_counts(t)
    own = t.raw_table("stream") or {}
    evaluate_stream = root.data["evaluate"]["stream"]  # validated by evaluate() already
    merged = {**evaluate_stream, **own}
    return CalibrateSettings(
        min_new_samples=min_new,
        max_samples=max_samples,
        grid_points=t.integer("grid_points", 501, min=2),
        min_samples_per_class=t.integer("min_samples_per_class", 50, min=1),
        stream=stream(Table(merged, t.key("stream"), t.ctx, _STREAM_KEYS)),
        history_seconds=float(t.number("history_seconds", 0.0, ge=0.0)),
        max_history_samples=t.integer("max_history_samples", 500_000, min=1),
    )


def timeseries(root: Table, smp: SamplesSettings) -> TimeseriesSettings:
    """``[timeseries]`` + ``[timeseries.stream]``; fmin/fmax default to the target band."""
    t = _section(
        root, "timeseries", ("sample_rate", "description", "output_dir", "fmin", "fmax", "stream")
    )
    rate: int = t.integer("sample_rate", 128, min=1)
    if not rate & (rate - 1) == 0:
        raise t.error("sample_rate", f"must be a power of two, got {rate}")
    description: str = t.string("description", "IDQ_TIMESERIES")
    if not _DESCRIPTION.match(description):
        raise t.error(
            "description",
            f"only letters, digits and '_' (it is part of frame file names), got {description!r}",
        )
    band = smp.target_bounds.get("frequency")
    fmin = t.number("fmin", None, ge=0)
    fmax = t.number("fmax", None, gt=0)
    for name, value, index in (("fmin", fmin, 0), ("fmax", fmax, 1)):
        if value is None:
            if band is None:
                raise t.error(
                    name,
                    "not given, and samples.target_bounds has no 'frequency' bound to default to",
                )
            if math.isinf(band[index]):
                raise t.error(
                    name,
                    f"not given, and samples.target_bounds.frequency bound {band[index]} is not finite",
                )
    fmin = band[0] if fmin is None and band else fmin
    fmax = band[1] if fmax is None and band else fmax
    assert fmin is not None and fmax is not None
    if not fmin < fmax:
        raise t.error("fmax", f"must be > fmin ({fmin:g}), got {fmax:g}")
    cadence = _stream_of(t)
    if cadence.stride != int(cadence.stride):
        # frames are named <obs>-<description>-<gpsstart>-<duration>.gwf with integers
        raise t.error(
            "stream.stride",
            f"must be a whole number of seconds (frames are named by integer GPS start "
            f"and duration), got {cadence.stride:g}",
        )
    samples_per_stride = cadence.stride * rate
    if not math.isclose(samples_per_stride, round(samples_per_stride), abs_tol=1e-9):
        raise t.error(
            "stream.stride", f"{cadence.stride:g} s at {rate} Hz is not a whole number of samples"
        )
    return TimeseriesSettings(
        sample_rate=rate,
        description=description,
        output_dir=t.ctx.path(t.string("output_dir", "frames")),
        fmin=fmin,
        fmax=fmax,
        stream=cadence,
    )


# -- classifiers, kafka, store, metrics -----------------------------------------------------


def classifiers(
    root: Table, feats: FeaturesSettings, check_params: bool = True, fit_checks: bool = True
) -> tuple[ClassifierSettings, ...]:
    """Every ``[[classifier]]``; nicknames unique once upper-cased (they name channels).

    Parameters are checked by the classifier itself (unknown names, and values its
    estimator would refuse at the first training, e.g. OVL windows larger than the
    feature window), so a service stops at start, not at its first training.
    ``check_params=False`` skips that check (it imports scikit-learn) for commands
    that never build a classifier, e.g. ``idq query``; ``fit_checks=False`` skips only the
    estimator's own constraints (scikit-learn's, imported for it) for stages that never fit.
    """
    from idq_common.exceptions import ClassifierError, ClassifierParamError

    if not root.has("classifier"):
        raise root.error("classifier", "missing required section; add at least one [[classifier]]")
    items = root.data["classifier"]
    if not isinstance(items, list):
        raise root.error(
            "classifier", f"expected an array of tables [[classifier]], got {describe(items)}"
        )
    if not items:
        raise root.error("classifier", "at least one [[classifier]] is required")
    out: list[ClassifierSettings] = []
    seen: dict[str, int] = {}
    flavors = known_flavors()
    for i, item in enumerate(items):
        prefix = f"classifier[{i}]"
        if not isinstance(item, dict):
            raise root.ctx.error(prefix, f"expected a table, got {describe(item)}")
        t = Table(item, prefix, root.ctx, ("nickname", "flavor", "params"))
        nickname: str = t.string("nickname")
        if not _NICKNAME.match(nickname):
            raise t.error(
                "nickname",
                f"only letters and digits (it goes into channel names), got {nickname!r}",
            )
        if nickname.upper() in seen:
            raise t.error(
                "nickname",
                f"duplicate nickname {nickname!r} (classifier[{seen[nickname.upper()]}] has it; "
                "compared upper-cased as in channel names)",
            )
        seen[nickname.upper()] = i
        flavor: str = t.string("flavor")
        if flavor not in flavors:
            raise t.error("flavor", f"unknown flavor {flavor!r}" + suggest(flavor, flavors))
        params: dict[str, Any] = copy.deepcopy(t.raw_table("params") or {})
        try:
            if check_params:
                from idq_common.science.classifiers.factory import check_classifier

                check_classifier(
                    nickname, flavor, params, feats.window, feats.columns, fit=fit_checks
                )
        except ClassifierParamError as exc:
            key = exc.param if "." in exc.param else f"{prefix}.params.{exc.param}"
            raise root.ctx.error(key, exc.problem) from None
        except ClassifierError as exc:
            raise root.ctx.error(f"{prefix}.params", str(exc)) from None
        out.append(ClassifierSettings(nickname=nickname, flavor=flavor, params=params))
    return tuple(out)


_KAFKA_KEYS = (
    "bootstrap_servers",
    "security_protocol",
    "sasl_mechanism",
    "sasl_username",
    "sasl_password",
    "ssl_ca_location",
    "client_id",
    "partitions",
    "replication_factor",
    "partitioner",
    "block_seconds",
    "retention_hours",
    "retention_bytes",
    "topics",
    "librdkafka",
)
_CLIENT_KINDS = ("producer", "consumer", "admin")


def kafka(root: Table, ifo: str) -> KafkaSettings:
    """``[kafka]`` + ``[kafka.topics]`` + ``[kafka.librdkafka]``."""
    t = _section(root, "kafka", _KAFKA_KEYS)
    servers: str = t.string("bootstrap_servers")
    for server in servers.split(","):
        host, _, port = server.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise t.error(
                "bootstrap_servers", f"expected host:port[,host:port...], got {servers!r}"
            )
    protocol: str = t.string("security_protocol", "PLAINTEXT", choices=SECURITY_PROTOCOLS)
    mechanism = t.string("sasl_mechanism", None, choices=SASL_MECHANISMS)
    username = t.string("sasl_username", None)
    password = t.string("sasl_password", None, allow_empty=True)
    ca = t.string("ssl_ca_location", None)
    if protocol.startswith("SASL_"):
        if mechanism is None:
            raise t.error("sasl_mechanism", f"required when security_protocol is {protocol}")
        if mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            if username is None:
                raise t.error(
                    "sasl_username",
                    f"required with sasl_mechanism {mechanism} (set IDQ_KAFKA__SASL_USERNAME)",
                )
            if not password:
                raise t.error(
                    "sasl_password",
                    f"required with sasl_mechanism {mechanism} (set IDQ_KAFKA__SASL_PASSWORD)",
                )
    else:
        for k in ("sasl_mechanism", "sasl_username", "sasl_password"):
            if t.has(k):
                raise t.error(k, f"only used with SASL_PLAINTEXT or SASL_SSL, not {protocol}")
    if ca is not None:
        if not protocol.endswith("SSL"):
            raise t.error("ssl_ca_location", f"only used with SSL or SASL_SSL, not {protocol}")
        if not t.ctx.path(ca).is_file():
            raise t.error("ssl_ca_location", f"file not found: {t.ctx.path(ca)}")
        ca = str(t.ctx.path(ca))
    extras = _librdkafka(t)
    return KafkaSettings(
        bootstrap_servers=servers,
        topics=_topics(t, ifo),
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_username=username,
        sasl_password=password,
        ssl_ca_location=ca,
        client_id=t.string("client_id", "idq"),
        partitions=t.integer("partitions", 1, min=1),
        replication_factor=t.integer("replication_factor", 1, min=1),
        partitioner=t.string("partitioner", "round_robin", choices=PARTITIONERS),
        block_seconds=t.number("block_seconds", 16.0, gt=0),
        retention_hours=t.number("retention_hours", None, gt=0),
        retention_bytes=t.integer("retention_bytes", DEFAULT_RETENTION_BYTES, min=1024**2),
        librdkafka=extras[""],
        librdkafka_producer=extras["producer"],
        librdkafka_consumer=extras["consumer"],
        librdkafka_admin=extras["admin"],
    )


def check_blocks(root: Table, kafka: KafkaSettings, strides: dict[str, float]) -> None:
    """``[kafka] block_seconds`` must be a whole number of every shared stage's strides
    (and of the ingest's batches).

    A stride then never straddles two blocks, so it belongs to exactly one partition
    and its replica finds its data there (plus the pad at block edges); a batch never
    straddles a block edge either.
    """
    if kafka.partitioner != "block":
        return
    block = kafka.block_seconds
    for what, seconds in strides.items():
        n = block / seconds
        if n < 1 or not math.isclose(n, round(n), rel_tol=0, abs_tol=1e-9):
            raise root.ctx.error(
                "kafka.block_seconds",
                f"{block:g} s is not a multiple of {what} ({seconds:g} s)",
            )


def _topics(t: Table, ifo: str) -> TopicNames:
    sub = t.table("topics", TOPIC_KINDS, required=False)
    overrides: dict[str, str] = {}
    if sub is not None:
        for kind in sub.data:
            name: str = sub.string(kind)
            if not valid_topic_name(name):
                raise sub.error(
                    kind, f"not a legal Kafka topic name (1-249 of [A-Za-z0-9._-]): {name!r}"
                )
            overrides[kind] = name
    names = TopicNames.for_ifo(ifo, **overrides)
    by_name: dict[str, str] = {}
    for kind, name in names.as_dict().items():
        if name in by_name:
            raise t.error(f"topics.{kind}", f"topic {name!r} is also used for {by_name[name]}")
        by_name[name] = kind
    return names


def _librdkafka(t: Table) -> dict[str, dict[str, Any]]:
    raw = t.raw_table("librdkafka") or {}
    out: dict[str, dict[str, Any]] = {"": {}, **{k: {} for k in _CLIENT_KINDS}}
    prefix = t.key("librdkafka")

    def scalar(scope: str, key: str, value: Any, where: str) -> None:
        dotted = f"{where}.{key}"
        if isinstance(value, dict | list):
            raise t.ctx.error(
                dotted, f"expected a string, number or boolean, got {describe(value)}"
            )
        if not _LIBRDKAFKA_KEY.match(key):
            raise t.ctx.error(
                dotted, "not a librdkafka property name (lower-case words joined by '.')"
            )
        if key in MANAGED_LIBRDKAFKA_KEYS:
            raise t.ctx.error(dotted, "set by its own [kafka] key or by the stage; remove it here")
        out[scope][key] = value

    for key, value in raw.items():
        if key in _CLIENT_KINDS and isinstance(value, dict):
            for k, v in value.items():
                scalar(key, k, v, f"{prefix}.{key}")
        else:
            scalar("", key, value, prefix)
    return out


def store(root: Table) -> StoreSettings:
    """``[store]``: ``file://`` (made absolute) or ``s3://bucket[/prefix]``."""
    t = _section(root, "store", ("url", "endpoint_url", "key", "secret"))
    url: str = t.string("url")
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise t.error("url", f"expected a URL starting with file:// or s3://, got {url!r}")
    if scheme == "file":
        if not rest:
            raise t.error("url", "file:// URL has no path")
        url = "file://" + t.ctx.path(rest).as_posix()
    elif scheme == "s3":
        bucket = rest.split("/", 1)[0]
        if not _S3_BUCKET.match(bucket):
            raise t.error("url", f"bad S3 bucket name {bucket!r} in {url!r}")
    else:
        raise t.error("url", f"unsupported scheme {scheme!r}; expected file:// or s3://")
    for k in ("endpoint_url", "key", "secret"):
        if scheme != "s3" and t.has(k):
            raise t.error(k, f"only used with s3:// URLs, not {scheme}://")
    endpoint = t.string("endpoint_url", None)
    if endpoint is not None:
        parsed = urlparse(endpoint)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise t.error("endpoint_url", f"expected an http:// or https:// URL, got {endpoint!r}")
    key, secret = t.string("key", None), t.string("secret", None)
    if (key is None) != (secret is None):
        missing = "secret" if secret is None else "key"
        raise t.error(
            missing,
            "store.key and store.secret go together (set IDQ_STORE__KEY and IDQ_STORE__SECRET)",
        )
    return StoreSettings(url=url, endpoint_url=endpoint, key=key, secret=secret)


def metrics(root: Table) -> MetricsSettings:
    """``[metrics]`` (absent: 127.0.0.1, a free port)."""
    t = _section(root, "metrics", ("host", "port"), required=False)
    return MetricsSettings(
        host=t.string("host", "127.0.0.1"), port=t.integer("port", 0, min=0, max=65535)
    )


def ingest(root: Table, ifo: str, topics: TopicNames) -> IngestSettings:
    """``[ingest]`` (absent: every key defaulted, source topic ``idq.<ifo>.snax``)."""
    t = _section(
        root,
        "ingest",
        (
            "source_topic",
            "format",
            "channel_pattern",
            "source_id",
            "message_seconds",
            "snax_rate",
        ),
        required=False,
    )
    topic: str = t.string("source_topic", f"idq.{ifo}.snax")
    if not valid_topic_name(topic):
        raise t.error(
            "source_topic", f"not a legal Kafka topic name (1-249 of [A-Za-z0-9._-]): {topic!r}"
        )
    for kind, name in topics.as_dict().items():
        if name == topic:
            raise t.error("source_topic", f"topic {topic!r} is the pipeline's {kind} topic")
    pattern: str = t.string("channel_pattern", DEFAULT_CHANNEL_PATTERN)
    try:
        re.compile(pattern)
    except re.error as exc:
        raise t.error("channel_pattern", f"not a valid regular expression: {exc}") from None
    source_id: str = t.string("source_id", "ingest")
    if any(c.isspace() for c in source_id):
        raise t.error("source_id", f"must not contain whitespace, got {source_id!r}")
    seconds = t.number("message_seconds", 1.0, gt=0)
    rate: int = t.integer("snax_rate", 16, min=1)
    if not math.isclose(seconds * rate, round(seconds * rate), abs_tol=1e-9):
        raise t.error("snax_rate", f"{rate} Hz is not a whole number of bins per {seconds:g} s")
    return IngestSettings(
        source_topic=topic,
        format=t.string("format", "auto", choices=INGEST_FORMATS),
        channel_pattern=pattern,
        source_id=source_id,
        message_seconds=seconds,
        snax_rate=rate,
    )
