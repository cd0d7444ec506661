"""Configuration: example files, environment overrides, secret masking, bad configs, CLI."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from idq_common.config import (
    Settings,
    known_flavors,
    load_settings,
    load_settings_or_exit,
    settings_from_dict,
)
from idq_common.exceptions import ConfigError
from idq_common.io.kafka.settings import KafkaSettings, TopicNames

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "etc" / "idq.toml"
DEMO = ROOT / "etc" / "idq-demo.toml"


@pytest.fixture()
def base() -> dict[str, Any]:
    """The example configuration, parsed, for mutation by each case."""
    with EXAMPLE.open("rb") as fh:
        return tomllib.load(fh)


def _load(doc: dict[str, Any], tmp_path: Path, env: dict[str, str] | None = None) -> Settings:
    return settings_from_dict(doc, base_dir=tmp_path, env=env or {})


# -- the example files ------------------------------------------------------------------


def test_example_config_loads() -> None:
    s = load_settings(EXAMPLE, env={})
    assert s.general.ifo == "H1" and s.general.observatory == "H"
    assert s.samples.target_bounds == {"snr": (10.0, math.inf), "frequency": (10.0, 2048.0)}
    assert s.samples.dirty_bounds == {"snr": (5.5, math.inf)}
    assert s.train.stream.stride == 16.0 and s.train.stream.max_lag_strides == 100
    # [calibrate.stream] is absent: calibrate runs at the evaluate cadence.
    assert s.calibrate.stream == s.evaluate.stream
    assert (s.timeseries.fmin, s.timeseries.fmax) == (10.0, 2048.0)
    assert [c.nickname for c in s.classifiers] == ["ovl", "forest"]
    assert s.kafka.topics.features == "idq.H1.features"
    assert s.kafka.partitions == 4
    assert s.store.url == "file://" + (ROOT / "etc" / "store").as_posix()
    assert s.metrics.port == 0
    assert s.channel_name("FAP", "ovl") == "H1:IDQ-FAP_OVL_10_2048"
    assert s.source == EXAMPLE


def test_demo_config_loads() -> None:
    s = load_settings(DEMO, env={})
    assert (s.train.stream.stride, s.evaluate.stream.stride, s.timeseries.stream.stride) == (
        16.0,
        4.0,
        1.0,
    )
    assert s.train.min_new_samples == 1000 and s.calibrate.min_new_samples == 1200
    assert s.evaluate.clean_rate == 8.0  # clean samples for calibration: FAP 1e-3 reachable
    flavors = {c.flavor for c in s.classifiers}
    assert {"ovl", "random_forest"} <= flavors and flavors & {"sgd", "naive_bayes"}
    assert s.store.url == "file://" + (ROOT / ".cache" / "demo" / "store").as_posix()
    assert s.metrics.port == 0


def test_settings_are_frozen(base: dict[str, Any], tmp_path: Path) -> None:
    s = _load(base, tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.train.stream.stride = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.kafka.bootstrap_servers = "x:1"  # type: ignore[misc]


def test_paths_are_relative_to_the_config_file(base: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "chans.txt").write_text("# witnesses\nH1:AUX-A\n\nH1:AUX-B  # loud\n")
    base["features"]["channels_file"] = "chans.txt"
    cfg = tmp_path / "idq.toml"
    cfg.write_text(_dump_toml(base))
    s = load_settings(cfg, env={})
    assert s.features.channels == ("H1:AUX-A", "H1:AUX-B")
    assert s.timeseries.output_dir == tmp_path / "frames"
    assert s.store.url == f"file://{tmp_path.resolve().as_posix()}/store"


# -- environment overrides ----------------------------------------------------------------


def test_env_overrides_nested_and_typed(base: dict[str, Any], tmp_path: Path) -> None:
    env = {
        "IDQ_KAFKA__BOOTSTRAP_SERVERS": "10.0.0.1:9093,10.0.0.2:9093",
        "IDQ_TRAIN__STREAM__STRIDE": "32",
        "IDQ_CALIBRATE__STREAM__STRIDE": "8",
        "IDQ_GENERAL__TAG": "123",  # a string key keeps the raw text
        "IDQ_KAFKA__TOPICS__FEATURES": "snax.H1",
        "IDQ_KAFKA__LIBRDKAFKA__SOCKET_TIMEOUT_MS": "5000",
        "IDQ_CLASSIFIER__1__PARAMS__N_ESTIMATORS": "7",
        "IDQ_SAMPLES__TARGET_BOUNDS__SNR": "[8.0, inf]",
        # not overrides: no "__", or the test suite's own variables
        "IDQ_KAFKA_HOME": "/opt/kafka",
        "IDQ_SCHEMA_DIR": "/nowhere",
        "IDQ_TEST_BROKER__PORT": "1",
        "PATH": os.environ.get("PATH", ""),
    }
    s = _load(base, tmp_path, env)
    assert s.kafka.bootstrap_servers == "10.0.0.1:9093,10.0.0.2:9093"
    assert s.train.stream.stride == 32.0 and isinstance(s.train.stream.stride, float)
    # calibrate.stream given only a stride: the other keys come from evaluate.stream
    assert s.calibrate.stream.stride == 8.0
    assert s.calibrate.stream.delay == s.evaluate.stream.delay
    assert s.general.tag == "123"
    assert s.kafka.topics.features == "snax.H1" and s.kafka.topics.models == "idq.H1.models"
    assert s.kafka.librdkafka == {"socket.timeout.ms": 5000}
    assert s.kafka.producer_config()["socket.timeout.ms"] == 5000
    assert s.classifier("FOREST").params["n_estimators"] == 7
    assert s.samples.target_bounds["snr"] == (8.0, math.inf)


def test_env_secrets_are_masked(base: dict[str, Any], tmp_path: Path) -> None:
    env = {
        "IDQ_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "IDQ_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "IDQ_KAFKA__SASL_USERNAME": "idq-h1",
        "IDQ_KAFKA__SASL_PASSWORD": "'hunter2-s3cr3t'",  # kept verbatim, quotes and all
        "IDQ_STORE__URL": "s3://idq-models/h1",
        "IDQ_STORE__ENDPOINT_URL": "http://127.0.0.1:8333",
        "IDQ_STORE__KEY": "AKIDEXAMPLE",
        "IDQ_STORE__SECRET": "wJalrXUtnFEMI-s3cr3t",
    }
    s = _load(base, tmp_path, env)
    assert s.kafka.sasl_password == "'hunter2-s3cr3t'"
    assert s.kafka.producer_config()["sasl.password"] == "'hunter2-s3cr3t'"
    assert s.store.storage_options() == {
        "key": "AKIDEXAMPLE",
        "secret": "wJalrXUtnFEMI-s3cr3t",
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:8333"},
    }
    for text in (repr(s), str(s), repr(s.kafka), str(s.store), s.dump()):
        assert "s3cr3t" not in text
    assert "sasl_password='***'" in repr(s.kafka)
    assert "secret='***'" in repr(s.store)
    d = json.loads(s.dump())
    assert d["kafka"]["sasl_password"] == "***" and d["store"]["secret"] == "***"
    assert d["kafka"]["sasl_username"] == "idq-h1"
    assert d["samples"]["target_bounds"]["snr"] == [10.0, "inf"]
    assert s.to_dict(mask_secrets=False)["kafka"]["sasl_password"] == "'hunter2-s3cr3t'"


def test_env_unknown_key_is_an_error_naming_the_variable(
    base: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as info:
        _load(base, tmp_path, {"IDQ_TRAIN__STREAM__STRIDES": "4"})
    assert info.value.key == "train.stream.strides"
    assert "did you mean 'stride'" in info.value.problem
    assert "IDQ_TRAIN__STREAM__STRIDES" in info.value.problem
    with pytest.raises(ConfigError) as info:
        _load(base, tmp_path, {"IDQ_KAFK__BOOTSTRAP_SERVERS": "h:1"})
    assert info.value.key == "kafk" and "did you mean 'kafka'" in info.value.problem


def test_env_bad_value_names_the_variable(base: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _load(base, tmp_path, {"IDQ_EVALUATE__STREAM__STRIDE": "-4"})
    assert info.value.key == "evaluate.stream.stride"
    assert (
        "must be > 0" in info.value.problem and "IDQ_EVALUATE__STREAM__STRIDE" in info.value.problem
    )


@pytest.mark.parametrize(
    ("env", "key", "problem"),
    [
        ({"IDQ_CLASSIFIER__FLAVOR": "sgd"}, "classifier", "like IDQ_CLASSIFIER__0__FLAVOR"),
        ({"IDQ_CLASSIFIER__5__FLAVOR": "sgd"}, "classifier[5]", "no such entry"),
        ({"IDQ_GENERAL__IFO__X": "1"}, "general.ifo", "is not a table"),
        ({"IDQ_TRAIN__STREAM": "3"}, "train.stream", "is a table"),
        (
            {"IDQ_KAFKA__PARTITIONS": "two"},
            "kafka.partitions",
            "expected an integer, got string 'two'",
        ),
    ],
)
def test_env_structural_errors(
    base: dict[str, Any], tmp_path: Path, env: dict[str, str], key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _load(base, tmp_path, env)
    assert info.value.key == key and problem in info.value.problem


# -- bad configurations: each names its key and its problem --------------------------------


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        node[last] = value

    return mutate


def _del(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for p in parents:
            node = node[p]
        del node[last]

    return mutate


def _rename_section(old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        doc[new] = doc.pop(old)

    return mutate


BAD_CASES: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("unknown key", _set("train.stream.strid", 16), "train.stream.strid", "unknown key; did you mean 'stride'?"),
    ("unknown section", _rename_section("kafka", "kafak"), "kafak", "unknown section; did you mean 'kafka'?"),
    ("wrong type", _set("train.stream.stride", "16"), "train.stream.stride", "expected a number, got string '16'"),
    ("bool for int", _set("train.min_new_samples", True), "train.min_new_samples", "expected an integer, got boolean true"),
    ("missing section", _del("evaluate"), "evaluate", "missing required section [evaluate]"),
    ("missing stream", _del("timeseries.stream"), "timeseries.stream", "missing required section [timeseries.stream]"),
    ("missing key", _del("samples.target_channel"), "samples.target_channel", "missing required key"),
    ("stride zero", _set("evaluate.stream.stride", 0), "evaluate.stream.stride", "must be > 0, got 0"),
    ("negative delay", _set("timeseries.stream.delay", -1), "timeseries.stream.delay", "must be >= 0, got -1"),
    ("bad ifo", _set("general.ifo", "H"), "general.ifo", "letter + digit"),
    ("lower-case ifo", _set("general.ifo", "h1"), "general.ifo", "got 'h1'"),
    ("target of other ifo", _set("samples.target_channel", "L1:GDS-CALIB_STRAIN"), "samples.target_channel", "not of instrument H1"),
    ("duplicate nickname", _set("classifier.1.nickname", "OVL"), "classifier[1].nickname", "duplicate nickname 'OVL'"),
    ("nickname chars", _set("classifier.0.nickname", "my_ovl"), "classifier[0].nickname", "only letters and digits"),
    ("unknown flavor", _set("classifier.1.flavor", "random_forrest"), "classifier[1].flavor", "unknown flavor 'random_forrest'; did you mean 'random_forest'?"),
    ("classifier not array", _set("classifier", {"nickname": "a", "flavor": "ovl"}), "classifier", "expected an array of tables [[classifier]]"),
    ("bounds low >= high", _set("samples.target_bounds.frequency", [2048.0, 10.0]), "samples.target_bounds.frequency", "low bound must be < high bound"),
    ("bounds column", _set("samples.dirty_bounds.q", [1.0, 2.0]), "samples.dirty_bounds.q", "unknown key"),
    ("bounds shape", _set("samples.target_bounds.snr", [10.0]), "samples.target_bounds.snr", "expected an array [low, high]"),
    ("dirty_window", _set("samples.dirty_window", 0), "samples.dirty_window", "must be > 0"),
    ("feature column", _set("features.columns", ["snr", "snrr"]), "features.columns", "unknown column 'snrr'"),
    ("duplicate column", _set("features.columns", ["snr", "snr"]), "features.columns", "duplicate entries: snr"),
    ("target in channels", _set("features.channels", ["H1:GDS-CALIB_STRAIN", "H1:AUX"]), "features.channels", "must not include the target channel"),
    ("channels file missing", _set("features.channels_file", "nope.txt"), "features.channels_file", "file not found"),
    ("segments source", _set("segments.source", "segdb"), "segments.source", "unknown value 'segdb'"),
    ("dqsegdb without host", lambda d: d["segments"].update(source="dqsegdb", flag="H1:DMT-ANALYSIS_READY:1"), "segments.host", "missing required key"),
    ("static without segments", _set("segments.source", "static"), "segments.segments", "exactly one of"),
    ("segment start >= end", lambda d: d["segments"].update(source="static", segments=[[10, 5]]), "segments.segments[0]", "start must be < end"),
    ("key unused by source", _set("segments.host", "https://segments.ligo.org"), "segments.host", "not used when segments.source is 'none'"),
    ("sample rate", _set("timeseries.sample_rate", 100), "timeseries.sample_rate", "must be a power of two, got 100"),
    ("fmax infinite", lambda d: d["samples"]["target_bounds"].update(frequency=[10.0, math.inf]), "timeseries.fmax", "is not finite"),
    ("max below min", _set("train.max_samples", 10), "train.max_samples", "must be >= min_new_samples (500)"),
    ("bad calibrate stream", _set("calibrate.stream", {"stride": -1}), "calibrate.stream.stride", "must be > 0"),
    ("store scheme", _set("store.url", "gs://bucket/idq"), "store.url", "unsupported scheme 'gs'; expected file:// or s3://"),
    ("store not url", _set("store.url", "store"), "store.url", "expected a URL starting with file:// or s3://"),
    ("s3 key without secret", lambda d: d["store"].update(url="s3://idq-models", key="AK"), "store.secret", "go together"),
    ("metrics port", _set("metrics.port", 70000), "metrics.port", "must be <= 65535, got 70000"),
    ("kafka servers", _set("kafka.bootstrap_servers", "localhost"), "kafka.bootstrap_servers", "expected host:port"),
    ("sasl without password", lambda d: d["kafka"].update(security_protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="u"), "kafka.sasl_password", "required with sasl_mechanism PLAIN"),
    ("security protocol", _set("kafka.security_protocol", "TLS"), "kafka.security_protocol", "unknown value 'TLS'"),
    ("topic name", _set("kafka.topics.features", "bad topic!"), "kafka.topics.features", "not a legal Kafka topic name"),
    ("topic reused", _set("kafka.topics.models", "idq.H1.features"), "kafka.topics.models", "also used for features"),
    ("managed librdkafka key", _set("kafka.librdkafka", {"sasl.password": "x"}), "kafka.librdkafka.sasl.password", "set by its own [kafka] key"),
    ("partitions", _set("kafka.partitions", 0), "kafka.partitions", "must be >= 1, got 0"),
    ("partitioner", _set("kafka.partitioner", "blocks"), "kafka.partitioner", "unknown value 'blocks'"),
    ("block_seconds", _set("kafka.block_seconds", 0), "kafka.block_seconds", "must be > 0, got 0"),
    ("block not whole strides", lambda d: d["kafka"].update(partitioner="block", block_seconds=6), "kafka.block_seconds", "6 s is not a multiple of the evaluate stride (4 s)"),
    ("block below a stride", lambda d: d["kafka"].update(partitioner="block", block_seconds=2), "kafka.block_seconds", "not a multiple of the evaluate stride"),
    ("unknown classifier param", _set("classifier.1.params.n_estimator", 10), "classifier[1].params.n_estimator", "unknown parameter for flavor 'random_forest'; did you mean 'n_estimators'?"),
    ("classifier param value", _set("classifier.1.params.n_estimators", 0), "classifier[1].params.n_estimators", "must be an int in the range [1, inf)"),
    ("classifier param type", _set("classifier.1.params.max_features", "sqr"), "classifier[1].params.max_features", "Got 'sqr' instead"),
    ("classifier seed", _set("classifier.1.params.seed", -1), "classifier[1].params.seed", "expected an integer >= 0"),
    ("ovl metric", _set("classifier.0.params.metric", "best"), "classifier[0].params.metric", "unknown OVL metric 'best'"),
    ("ovl window beyond features", _set("classifier.0.params.windows", [1.0, 0.5]), "classifier[0].params.windows", "larger than the feature window"),
    ("ovl thresholds", _set("classifier.0.params.thresholds", []), "classifier[0].params.thresholds", "non-empty array of numbers"),
    ("ovl without dt", _set("features.columns", ["snr", "frequency"]), "features.columns", "needs a 'dt' feature column"),
    ("column not carried", _set("features.columns", ["snr", "q"]), "features.columns", "unknown column 'q' (not a column the pipeline carries)"),
    ("unsafe regex", _set("features.unsafe_channels", ["re:H1:(CAL"]), "features.unsafe_channels", "bad regular expression"),
    ("unsafe channel listed", _set("features.channels", ["H1:CAL-DELTAL_EXTERNAL_DQ", "H1:AUX"]), "features.channels", "matches features.unsafe_channels"),
    ("timeseries stride not whole", _set("timeseries.stream.stride", 1.5), "timeseries.stream.stride", "must be a whole number of seconds"),
    ("calibrate min per class", _set("calibrate.min_samples_per_class", 0), "calibrate.min_samples_per_class", "must be >= 1, got 0"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("mutate", "key", "problem"),
    [pytest.param(m, k, p, id=name) for name, m, k, p in BAD_CASES],
)
def test_bad_config(
    base: dict[str, Any],
    tmp_path: Path,
    mutate: Callable[[dict[str, Any]], None],
    key: str,
    problem: str,
) -> None:
    doc = copy.deepcopy(base)
    mutate(doc)
    with pytest.raises(ConfigError) as info:
        _load(doc, tmp_path)
    assert info.value.key == key
    assert problem in info.value.problem
    assert "\n" not in str(info.value)
    assert str(info.value) == f"config error at '{key}': {info.value.problem}"


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[general]\nifo = "H1"\ntag = \n')
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, env={})
    assert info.value.key == str(cfg)
    assert "TOML syntax error" in info.value.problem and "line 3" in info.value.problem


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "absent.toml", env={})
    assert info.value.problem == "file not found"


def test_flavor_set_is_shared() -> None:
    assert set(known_flavors()) >= {
        "ovl",
        "random_forest",
        "hist_gradient_boosting",
        "sgd",
        "naive_bayes",
    }


# -- KafkaSettings ----------------------------------------------------------------------------


def test_kafka_settings_librdkafka_dicts() -> None:
    confluent_kafka = pytest.importorskip("confluent_kafka")
    ks = KafkaSettings(
        bootstrap_servers="127.0.0.1:1",
        topics=TopicNames.for_ifo("L1", deadletter="dlq.L1"),
        client_id="idq-test",
        librdkafka={"socket.timeout.ms": 2000, "linger.ms": 20},
        librdkafka_consumer={"fetch.wait.max.ms": 50},
    )
    prod = ks.producer_config()
    assert prod["acks"] == "all" and prod["enable.idempotence"] is True
    assert prod["compression.type"] in ("lz4", "zstd")
    assert prod["linger.ms"] == 20  # an operator's value wins over our default
    cons = ks.consumer_config("idq-L1-evaluate")
    assert cons["group.id"] == "idq-L1-evaluate"
    assert cons["enable.auto.commit"] is False and cons["enable.auto.offset.store"] is False
    assert cons["auto.offset.reset"] == "earliest" and cons["fetch.wait.max.ms"] == 50
    assert "fetch.wait.max.ms" not in prod
    assert ks.admin_config()["bootstrap.servers"] == "127.0.0.1:1"
    assert ks.topics.as_dict()["features"] == "idq.L1.features"
    assert ks.topics["deadletter"] == "dlq.L1"
    assert ks.topic_config("models") == {"cleanup.policy": "compact"}
    # deleted by size, never by (data) time unless asked: replays of old data survive
    assert ks.topic_config("features")["retention.ms"] == "-1"
    assert ks.topic_config("features")["retention.bytes"] == str(10 * 1024**3)
    # librdkafka itself accepts every key (construction does not need a broker).
    confluent_kafka.Producer(prod)
    consumer = confluent_kafka.Consumer(cons)
    consumer.close()
    confluent_kafka.admin.AdminClient(ks.admin_config())


def test_kafka_settings_repr_masks_password() -> None:
    ks = KafkaSettings.local("127.0.0.1:9092", sasl_password="topsecret")
    assert "topsecret" not in repr(ks) and "topsecret" not in str(ks)
    assert "sasl_password='***'" in repr(ks)
    assert "sasl_password=None" in repr(KafkaSettings.local("127.0.0.1:9092"))


# -- command line ------------------------------------------------------------------------------


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("IDQ_")}


def _run_check(cfg: Path) -> subprocess.CompletedProcess[str]:
    """``idq config check`` on ``cfg`` in a child process, without IDQ_* overrides."""
    return subprocess.run(
        [sys.executable, "-m", "idq_common.config.cli_check", str(cfg)],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=120,
        check=False,
    )


def test_cli_check_bad_file_exits_2_with_one_line(base: dict[str, Any], tmp_path: Path) -> None:
    base["train"]["stream"]["stride"] = 0
    cfg = tmp_path / "bad.toml"
    cfg.write_text(_dump_toml(base))
    proc = _run_check(cfg)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == ["idq: config error at 'train.stream.stride': must be > 0, got 0"]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        ("classifier.1.params.n_estimator", 10, "classifier[1].params.n_estimator"),
        ("features.columns", ["snr", "q", "dt"], "features.columns"),
        ("timeseries.stream.stride", 1.5, "timeseries.stream.stride"),
        ("classifier.0.params.windows", [2.0], "classifier[0].params.windows"),
    ],
)
def test_cli_check_rejects_what_a_service_would_crash_on(
    base: dict[str, Any], tmp_path: Path, path: str, value: Any, key: str
) -> None:
    """``idq config check`` (the CLI path) names the key in one line, exit 2."""
    _set(path, value)(base)
    cfg = tmp_path / "bad.toml"
    cfg.write_text(_dump_toml(base))
    proc = _run_check(cfg)
    assert proc.returncode == 2, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"idq: config error at '{key}': ")
    assert "Traceback" not in proc.stderr


def test_config_defaults_documented(base: dict[str, Any], tmp_path: Path) -> None:
    s = _load(base, tmp_path)
    assert s.calibrate.min_samples_per_class == 50
    assert "*:CAL-*" in s.features.unsafe_channels
    base["calibrate"]["min_samples_per_class"] = 20
    base["features"]["unsafe_channels"] = ["re:H1:PEM-.*"]
    s = _load(base, tmp_path)
    assert s.calibrate.min_samples_per_class == 20
    assert s.features.unsafe_channels == ("re:H1:PEM-.*",)
    text = EXAMPLE.read_text()
    for key in ("unsafe_channels", "min_samples_per_class", "fmin", "fmax"):
        assert key in text, key


def test_cli_check_good_file(capsys: pytest.CaptureFixture[str]) -> None:
    from idq_common.config.cli_check import main

    assert main([str(DEMO)]) == 0
    assert "config OK" in capsys.readouterr().out


def test_load_settings_or_exit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        load_settings_or_exit(tmp_path / "absent.toml", env={})
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err == f"idq: config error at '{tmp_path / 'absent.toml'}': file not found\n"


# -- helpers -----------------------------------------------------------------------------------


def _dump_toml(doc: dict[str, Any]) -> str:
    """A minimal TOML writer for the documents these tests build (no tomli_w needed)."""
    lines: list[str] = []

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float) and math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        raise TypeError(v)

    def table(prefix: str, t: dict[str, Any], header: str) -> None:
        lines.append(header)
        subs = []
        for k, v in t.items():
            if isinstance(v, dict) and prefix and k in ("stream", "params", "topics", "librdkafka"):
                subs.append((k, v))
            else:
                lines.append(f"{k} = {value(v)}")
        for k, v in subs:
            table(f"{prefix}.{k}", v, f"[{prefix}.{k}]")

    for name, section in doc.items():
        if isinstance(section, list):
            for item in section:
                table(name, item, f"[[{name}]]")
        else:
            table(name, section, f"[{name}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("mutate", "key", "problem"),
    [pytest.param(m, k, p, id=name) for name, m, k, p in BAD_CASES],
)
def test_bad_config_cli_exits_2_with_its_message(
    base: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    mutate: Callable[[dict[str, Any]], None],
    key: str,
    problem: str,
) -> None:
    """Every mistake, through the CLI path every command uses: one line, exit status 2."""
    from idq_common.config.cli_check import main

    for var in [v for v in os.environ if v.startswith("IDQ_")]:
        monkeypatch.delenv(var)
    doc = copy.deepcopy(base)
    mutate(doc)
    cfg = tmp_path / "bad.toml"
    import tomli_w

    cfg.write_text(tomli_w.dumps(doc))
    with pytest.raises(SystemExit) as info:
        main([str(cfg)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"idq: config error at '{key}'"), err
    assert problem in err[0]
