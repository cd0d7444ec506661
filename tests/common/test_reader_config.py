"""The features reader's librdkafka properties: what a stage picks, and what an operator
can override."""

from __future__ import annotations

from pathlib import Path

from idq_common.config import load_settings
from idq_common.stage.factory import (
    BLOCK_QUEUED_KBYTES,
    READER_FETCH_BYTES,
    READER_FETCH_QUEUE_BACKOFF_MS,
    READER_QUEUED_KBYTES,
    reader_config,
)

CONFIG = Path(__file__).parents[2] / "etc" / "idq.toml"


def test_whole_topic_reader_fetches_more_per_round_trip_and_pauses_briefly() -> None:
    """librdkafka's 1 MB per partition per fetch and 1 s pause at a full queue starved a
    replay's train loop; a block reader keeps its own, smaller, queue."""
    settings = load_settings(CONFIG, env={}, check_classifiers=False)
    plain = reader_config(settings, "train", blocks=False)
    assert plain["max.partition.fetch.bytes"] == READER_FETCH_BYTES > 2**20
    assert plain["queued.max.messages.kbytes"] == READER_QUEUED_KBYTES < 65536
    assert plain["fetch.queue.backoff.ms"] == READER_FETCH_QUEUE_BACKOFF_MS < 1000
    assert plain["group.id"].endswith("train.reader")
    block = reader_config(settings, "evaluate", blocks=True)
    assert block["queued.max.messages.kbytes"] == BLOCK_QUEUED_KBYTES
    assert "max.partition.fetch.bytes" not in block


def test_operator_settings_win(tmp_path: Path) -> None:
    cfg = tmp_path / "idq.toml"
    text = CONFIG.read_text().replace(
        "# [kafka.librdkafka.consumer]",
        '[kafka.librdkafka.consumer]\n"fetch.queue.backoff.ms" = 500\n'
        '"max.partition.fetch.bytes" = 1048576',
    )
    assert text != CONFIG.read_text()
    cfg.write_text(text)
    settings = load_settings(cfg, env={}, check_classifiers=False)
    plain = reader_config(settings, "train", blocks=False)
    assert plain["fetch.queue.backoff.ms"] == 500
    assert plain["max.partition.fetch.bytes"] == 1048576
    assert plain["queued.max.messages.kbytes"] == READER_QUEUED_KBYTES
