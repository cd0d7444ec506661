"""The umbrella ``idq`` command: what spans services (broker, topics, demo, replay ...).

Subcommands live in their own modules ``cmd_<name>.py``, found at start (no central list
to edit) in ``idq_common.cli`` and in every package named by an ``idq.commands`` entry
point (the development package ``idq_dev`` adds ``kafka`` and ``demo`` this way, so a
service image, which does not install it, carries none of them). Each module exposes::

    NAME: str                                    # optional; default: <name> of the file
    HELP: str                                    # one line for `idq --help`
    def add_parser(subparsers) -> argparse.ArgumentParser
    def run(ns: argparse.Namespace) -> int       # exit status

``add_parser`` calls ``subparsers.add_parser(NAME, help=HELP, ...)`` and adds its
arguments (nested sub-subcommands are fine: ``run`` dispatches on them). Modules import
heavy dependencies (numpy, gwpy ...) inside ``run`` so that ``idq --help`` and
``idq kafka up`` stay fast. A module that fails to import still gets a subcommand, which
reports the import error instead of hiding it or breaking every other subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
import traceback
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from types import ModuleType

from idq_common.exceptions import IDQError
from idq_common.logs import setup_logging

PREFIX = "cmd_"
ENTRY_POINT_GROUP = "idq.commands"


def _command_modules() -> list[tuple[str, ModuleType | BaseException]]:
    """``(name, module or import error)`` for every ``cmd_*`` module, sorted by name."""
    found: list[tuple[str, ModuleType | BaseException]] = []
    for pkg_name in _command_packages():
        pkg = importlib.import_module(pkg_name)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith(PREFIX):
                continue
            default_name = info.name[len(PREFIX) :]
            try:
                mod = importlib.import_module(f"{pkg_name}.{info.name}")
            except Exception as exc:  # reported by the stub subcommand below
                found.append((default_name, exc))
                continue
            found.append((str(getattr(mod, "NAME", default_name)), mod))
    return sorted(found, key=lambda item: item[0])


def _command_packages() -> list[str]:
    """``idq_common.cli`` plus the packages of the ``idq.commands`` entry points."""
    extra = sorted(ep.value for ep in entry_points(group=ENTRY_POINT_GROUP))
    return ["idq_common.cli", *extra]


def _broken(name: str, exc: BaseException) -> Callable[[argparse.Namespace], int]:
    def run(ns: argparse.Namespace) -> int:
        text = "".join(traceback.format_exception(exc))
        print(f"idq {name}: this subcommand failed to load:\n{text}", file=sys.stderr)
        return 2

    return run


def build_parser() -> argparse.ArgumentParser:
    """The ``idq`` argument parser with every discovered subcommand."""
    parser = argparse.ArgumentParser(
        prog="idq",
        description="Streaming iDQ: local infrastructure, demo and tools spanning services.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, mod in _command_modules():
        if isinstance(mod, BaseException):
            sub = subparsers.add_parser(name, help="(failed to load: run it to see why)")
            sub.set_defaults(_run=_broken(name, mod))
            continue
        sub = mod.add_parser(subparsers)
        sub.set_defaults(_run=mod.run)
    return parser


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of ``idq``; returns the exit status (``IDQError`` -> 1 with a message)."""
    parser = build_parser()
    ns = parser.parse_args(args)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(ns.verbose, 2)]
    setup_logging(level, debug_third_party=ns.verbose > 1)
    run = getattr(ns, "_run", None)
    if run is None:
        parser.print_help()
        return 2
    try:
        return int(run(ns))
    except IDQError as exc:
        print(f"idq {ns.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
