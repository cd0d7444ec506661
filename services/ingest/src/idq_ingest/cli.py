"""``idq-ingest``: SNAX/sgnax JSON feature messages -> ``feature_batch`` on the features topic."""

from __future__ import annotations

from collections.abc import Sequence

from idq_common.stage.cli import run_service


def main(args: Sequence[str] | None = None) -> int:
    """Run the ingest adapter (see ``idq-ingest --help``)."""
    from idq_ingest.stage import IngestStage

    return run_service(
        "ingest",
        "Read SNAX/sgnax JSON feature messages from [ingest] source_topic, validate them "
        "and publish them as feature batches on the features topic.",
        IngestStage.from_settings,
        args,
    )


if __name__ == "__main__":
    raise SystemExit(main())
