"""``idq-calibrate``: fit calibration maps from evaluated quivers."""

from __future__ import annotations

from collections.abc import Sequence

from idq_common.stage.cli import run_service


def main(args: Sequence[str] | None = None) -> int:
    """Run the calibrate stage (see ``idq-calibrate --help``)."""
    from idq_calibrate.stage import CalibrateStage

    return run_service(
        "calibrate",
        "Mini-batch evaluated quivers per classifier, fit calibration maps, store and announce them.",
        CalibrateStage.from_settings,
        args,
    )


if __name__ == "__main__":
    raise SystemExit(main())
