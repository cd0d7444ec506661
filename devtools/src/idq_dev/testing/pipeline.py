"""Configurations for tests that run whole pipelines against the session's broker.

Each test gets its own topics (a tag prefix), frames folder and store, built from the
demo configuration, so pipelines of different tests never see each other's data.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w

from idq_common.config import Settings, load_settings
from idq_common.io.kafka.settings import TOPIC_KINDS
from idq_common.io.kafka.topics import (
    NO_TIME_RETENTION,
    TopicSpec,
    create_topics,
    settings_topic_specs,
)

DEMO_CONFIG = Path(__file__).resolve().parents[4] / "etc" / "idq-demo.toml"


def pipeline_config(
    workdir: Path,
    bootstrap: str,
    tag: str,
    store: dict[str, Any] | None = None,
    edit: Callable[[dict[str, Any]], None] | None = None,
    env: dict[str, str] | None = None,
) -> tuple[Path, Settings]:
    """Write a test configuration to ``workdir/idq.toml``, create its topics.

    Parameters
    ----------
    workdir : Path
        Where the config and the frames go.
    bootstrap : str
        The broker.
    tag : str
        Prefix of this test's topics (made unique with the process id).
    store : dict, optional
        The ``[store]`` table; default a ``file://`` store in ``workdir``.
    edit : callable, optional
        Changes the TOML document (a dict) before it is written.
    env : dict, optional
        Environment the pipeline's processes get (e.g. the S3 credentials).

    Returns
    -------
    (Path, Settings)
        The file every process of the pipeline reads, and its settings.
    """
    doc = tomllib.loads(DEMO_CONFIG.read_text())
    prefix = f"{tag}{os.getpid()}"
    doc["general"]["tag"] = prefix
    doc["kafka"]["bootstrap_servers"] = bootstrap
    doc["kafka"]["partitions"] = 2
    doc["kafka"]["topics"] = {kind: f"{prefix}.{kind}" for kind in TOPIC_KINDS}
    # idq-ingest's JSON source topic is the test's own too (not created here)
    doc.setdefault("ingest", {})["source_topic"] = f"{prefix}.json"
    doc["store"] = store or {"url": (workdir / "store").as_uri()}
    doc["timeseries"]["output_dir"] = str(workdir / "frames")
    for stage in ("train", "evaluate", "timeseries"):
        doc[stage]["stream"]["timeout"] = 5  # give up on missing data quickly in tests
    # the demo draws 8 clean samples/s for its hour-long FAP floor; a test's short span
    # calibrates on the glitch samples it has, so clean samples follow [samples]
    # random_rate (the default) unless the test's edit sets clean_rate itself
    doc["evaluate"].pop("clean_rate", None)
    if edit is not None:
        edit(doc)
    path = workdir / "idq.toml"
    path.write_text(tomli_w.dumps(doc))
    settings = load_settings(path, env={**os.environ, **(env or {})})
    create_topics(
        settings.kafka.admin_config(),
        settings_topic_specs(settings.general.ifo, settings.kafka, replication=1),
    )
    return path, settings


def create_source_topic(settings: Settings, partitions: int = 1) -> str:
    """Create ``[ingest] source_topic`` (the extractors' JSON topic; old seconds are
    replayed into it, so no deletion by time); returns its name."""
    assert settings.ingest is not None, "pipeline_config always writes an [ingest] section"
    source = settings.ingest.source_topic
    create_topics(
        settings.kafka.admin_config(),
        [TopicSpec(source, partitions=partitions, config=NO_TIME_RETENTION)],
    )
    return source
