"""``idq-timeseries``: calibrated glitch probabilities on a regular grid, as GWF frames."""

from __future__ import annotations

from collections.abc import Sequence

from idq_common.stage.cli import run_service


def main(args: Sequence[str] | None = None) -> int:
    """Run the timeseries stage (see ``idq-timeseries --help``)."""
    from idq_timeseries.stage import TimeseriesStage

    return run_service(
        "timeseries",
        "Rank a regular grid with the current model and calibration; write one GWF frame "
        "per stride and publish the products.",
        TimeseriesStage.from_settings,
        args,
    )


if __name__ == "__main__":
    raise SystemExit(main())
