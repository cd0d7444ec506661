"""``idq report --gps-start S --gps-end E [--config C] [--output report.html]``.

Writes one self-contained HTML page (figures embedded): per classifier the ROC curve
from the evaluated samples, the calibration coverage (observed vs nominal FAP with a
3-sigma band), the model and calibration history, OVL's veto list or the other
classifiers' most important channels; the FAP and PGLITCH timeseries with OK = 0
shaded and the target triggers; gaps and dead letters. Reads the quivers, models,
calibrations and deadletter topics, the artifact store and the frames.
"""

from __future__ import annotations

import argparse

from idq_common.cli.helpformat import HelpFormatter, plain

NAME = "report"
HELP = "write an HTML report (ROC, calibration, timeseries, models, vetoes, gaps)"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        NAME, help=HELP, description=plain(__doc__), formatter_class=HelpFormatter
    )
    p.add_argument("-c", "--config", default="etc/idq.toml", help="TOML configuration")
    p.add_argument("--gps-start", type=float, required=True, help="GPS start of the span")
    p.add_argument("--gps-end", type=float, required=True, help="GPS end of the span")
    p.add_argument("-o", "--output", default="idq-report.html", help="HTML file to write")
    p.add_argument(
        "--no-topics",
        action="store_true",
        help="frames only: do not read Kafka (no broker needed)",
    )
    return p


def run(ns: argparse.Namespace) -> int:
    import sys

    from idq_common.config import load_settings_or_exit
    from idq_common.report import write_report

    if ns.gps_end <= ns.gps_start:
        print("idq report: --gps-end must be after --gps-start", file=sys.stderr)
        return 2
    settings = load_settings_or_exit(ns.config)
    path = write_report(settings, ns.gps_start, ns.gps_end, ns.output, topics=not ns.no_topics)
    print(path.resolve())
    return 0
