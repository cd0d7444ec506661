"""The command line every stage service shares.

A service's ``cli.py`` is three lines: it names its stage and its loop class and
calls :func:`run_service`. Arguments, config loading (a bad config prints one line
and exits 2), logging and the ordered lifecycle are here, once.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Protocol

from confluent_kafka import KafkaException

from idq_common import logs
from idq_common.config import Settings, load_settings_or_exit
from idq_common.exceptions import IDQError

log = logging.getLogger(__name__)


class Stage(Protocol):
    """What :func:`run_service` needs of a stage loop."""

    def run(self) -> int:
        """Run until stopped or finished; return the exit status."""
        ...

    def close(self) -> None:
        """Release resources in order."""
        ...


StageFactory = Callable[[Settings, argparse.Namespace], Stage]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def build_parser(stage: str, description: str) -> argparse.ArgumentParser:
    """The argument parser of ``idq-<stage>``."""
    parser = argparse.ArgumentParser(prog=f"idq-{stage}", description=description)
    parser.add_argument("-c", "--config", required=True, help="the TOML configuration file")
    parser.add_argument(
        "--gps-start",
        type=float,
        default=None,
        help="first GPS time to process (replay: the stage follows the data, not the wall clock)",
    )
    parser.add_argument(
        "--gps-end", type=float, default=None, help="stop after this GPS time (a bounded run)"
    )
    parser.add_argument(
        "--from-start",
        action="store_true",
        help="reprocess from --gps-start even if the committed progress is further on",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="override [metrics] port (0: a free port)"
    )
    parser.add_argument(
        "--replicas",
        type=_positive_int,
        default=None,
        help="replicas of this stage sharing its strides (evaluate, timeseries): start once "
        "the group has split the partitions this many ways, at once for 1 (default: once "
        "the group has been quiet for a few seconds)",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    return parser


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """One readable line per event on stderr."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logs.setup_logging(level, debug_third_party=verbose > 1)


def run_service(
    stage: str,
    description: str,
    factory: StageFactory,
    args: Sequence[str] | None = None,
    fits_models: bool = False,
) -> int:
    """Parse ``args``, load the config, build the stage, run it, close it.

    ``fits_models``: the stage fits classifiers (train), so the configuration's
    classifier parameters are also checked against the estimators' own constraints at
    start (importing scikit-learn); the other stages check what they use of them.

    Returns the process exit status: 0 after a clean stop or a finished bounded
    run, 1 on an error of ours (logged without a traceback unless -vv), 2 on a bad
    config or bad arguments.
    """
    ns = build_parser(stage, description).parse_args(args)
    setup_logging(ns.verbose, ns.quiet)
    settings = load_settings_or_exit(ns.config, fit_checks=fits_models)
    if ns.gps_start is not None and ns.gps_end is not None and ns.gps_end <= ns.gps_start:
        print(f"idq-{stage}: --gps-end must be after --gps-start", file=sys.stderr)
        return 2
    try:
        loop = factory(settings, ns)
    except (IDQError, KafkaException) as exc:
        log.error("%s: cannot start: %s", stage, exc, exc_info=ns.verbose > 1)
        return 1
    try:
        return loop.run()
    except (IDQError, KafkaException) as exc:
        log.error("%s: stopped on error: %s", stage, exc, exc_info=ns.verbose > 1)
        return 1
    finally:
        loop.close()
