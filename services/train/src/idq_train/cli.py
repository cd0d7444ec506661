"""``idq-train``: accumulate labelled samples, fit classifiers, publish models."""

from __future__ import annotations

from collections.abc import Sequence

from idq_common.stage.cli import run_service


def main(args: Sequence[str] | None = None) -> int:
    """Run the train stage (see ``idq-train --help``)."""
    from idq_train.stage import TrainStage

    return run_service(
        "train",
        "Gather glitch and clean samples from each new stride, train every configured "
        "classifier once enough new samples have accumulated, store and announce the models.",
        TrainStage.from_settings,
        args,
        fits_models=True,
    )


if __name__ == "__main__":
    raise SystemExit(main())
