"""``idq config check FILE [--show]``: validate a configuration file.

A thin adapter over :mod:`idq_common.config.cli_check`, so ``idq config check`` and
``python -m idq_common.config.cli_check`` behave the same (exit 2 and one stderr line
on a bad configuration).
"""

from __future__ import annotations

import argparse

NAME = "config"
HELP = "check a TOML configuration (IDQ_* environment overrides applied); --show prints it"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(NAME, help=HELP, description=HELP)
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="validate FILE; exit 2 with one line on error")
    check.add_argument("file", metavar="FILE", help="TOML configuration file")
    check.add_argument("--show", action="store_true", help="print the effective config")
    check.add_argument(
        "--format", choices=("toml", "json"), default="toml", help="of --show (default: toml)"
    )
    return parser


def run(ns: argparse.Namespace) -> int:
    from idq_common.config.cli_check import main

    return main([ns.file, *(["--show"] if ns.show else []), "--format", ns.format])
