"""``idq query --gps T [--window 8] [--classifier C] [--source frames|topic]``.

Answers the alert pipeline's question in JSON on stdout: the minimum FAP and the
maximum PGLITCH over samples with OK = 1 within ``[T - window, T + window]``, over all
classifiers and per classifier (with the GPS times of the extremes and the model and
calibration ids). ``null`` when no sample in the window is OK. Exit status 0 with an
answer, 1 when no frame or message covers the window.
"""

from __future__ import annotations

import argparse

from idq_common.cli.helpformat import HelpFormatter, plain

NAME = "query"
HELP = "min FAP / max PGLITCH with OK = 1 around a GPS time, as JSON"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        NAME,
        help=HELP,
        description=plain(__doc__),
        formatter_class=HelpFormatter,
    )
    p.add_argument("-c", "--config", default="etc/idq.toml", help="TOML configuration")
    p.add_argument("--gps", type=float, required=True, help="GPS time of the candidate")
    p.add_argument("--window", type=float, default=8.0, help="half-width of the window, s")
    p.add_argument(
        "--classifier",
        action="append",
        default=None,
        help="classifier nickname (repeatable; default: every configured one)",
    )
    p.add_argument(
        "--source",
        choices=("frames", "topic"),
        default="frames",
        help="read the GWF frames or the timeseries topic",
    )
    return p


def run(ns: argparse.Namespace) -> int:
    import json
    import sys

    from idq_common.config import load_settings_or_exit
    from idq_common.report.query import query

    settings = load_settings_or_exit(ns.config, check_classifiers=False)
    if ns.window <= 0:
        print("idq query: --window must be positive", file=sys.stderr)
        return 2
    try:
        result = query(settings, ns.gps, ns.window, ns.classifier, ns.source)
    except ValueError as exc:
        print(f"idq query: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    if not any(c["samples"] for c in result["classifiers"].values()):
        print(f"idq query: no {ns.source} data cover the window", file=sys.stderr)
        return 1
    return 0
