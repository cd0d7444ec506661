"""``idq-evaluate``: rank fresh samples with the newest model and publish them."""

from __future__ import annotations

from collections.abc import Sequence

from idq_common.stage.cli import run_service


def main(args: Sequence[str] | None = None) -> int:
    """Run the evaluate stage (see ``idq-evaluate --help``)."""
    from idq_evaluate.stage import EvaluateStage

    return run_service(
        "evaluate",
        "Build glitch and clean samples per stride, rank them with the newest announced "
        "model and publish the evaluated quivers for calibration.",
        EvaluateStage.from_settings,
        args,
    )


if __name__ == "__main__":
    raise SystemExit(main())
