"""``idq config check FILE``: validate a configuration file, optionally print it.

Other command-line programs reuse :func:`add_config_argument` and
:func:`~idq_common.config.load_settings_or_exit` so every CLI reports a bad
configuration the same way: one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from idq_common.config.load import load_settings_or_exit

#: Environment variable naming the config file when ``--config`` is not given.
CONFIG_ENV = "IDQ_CONFIG"


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``-c/--config FILE`` (default ``$IDQ_CONFIG``, required if that is unset)."""
    default = os.environ.get(CONFIG_ENV)
    parser.add_argument(
        "-c",
        "--config",
        default=default,
        required=default is None,
        metavar="FILE",
        help=f"TOML configuration file (default: ${CONFIG_ENV})",
    )


def build_parser(prog: str = "idq config check") -> argparse.ArgumentParser:
    """The argument parser of :func:`main`."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Validate an iDQ configuration file (with IDQ_* environment overrides).",
    )
    parser.add_argument("file", metavar="FILE", help="TOML configuration file")
    parser.add_argument(
        "--show",
        action="store_true",
        help="print the effective configuration (secrets masked)",
    )
    parser.add_argument(
        "--format",
        choices=("toml", "json"),
        default="toml",
        help="of --show: TOML in the file's layout, or indented JSON",
    )
    return parser


def show(settings: Any, fmt: str = "toml") -> str:
    """The effective configuration as readable TOML (the file's layout) or JSON.

    TOML has no null: unset optional keys are listed as comments, so every key the
    program knows is visible either way.
    """
    import json

    doc = settings.to_dict(mask_secrets=True)
    source = doc.pop("source", None)
    if fmt == "json":
        return json.dumps(doc, indent=2)
    import tomli_w

    classifiers = doc.pop("classifiers", [])
    unset: list[str] = []

    def clean(d: dict[str, Any], path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            if v is None:
                unset.append(f"{path}{k}")
            elif isinstance(v, dict):
                out[k] = clean(v, f"{path}{k}.")
            elif v in ("inf", "-inf"):
                out[k] = float(v)
            elif isinstance(v, list):
                out[k] = [float(x) if x in ("inf", "-inf") else x for x in v]
            else:
                out[k] = v
        return out

    body = clean(doc, "")
    body["classifier"] = [clean(c, "classifier.") for c in classifiers]
    head = [f"# effective configuration of {source}" if source else "# effective configuration"]
    if unset:
        head.append("# unset (no value): " + ", ".join(unset))
    return "\n".join(head) + "\n\n" + tomli_w.dumps(body)


def main(args: Sequence[str] | None = None) -> int:
    """Check a configuration file; 0 if valid, exit status 2 with one stderr line if not."""
    ns = build_parser().parse_args(args)
    settings = load_settings_or_exit(ns.file)
    if ns.show:
        print(show(settings, ns.format))
    else:
        names = ", ".join(f"{c.nickname} ({c.flavor})" for c in settings.classifiers)
        print(f"idq: config OK: {ns.file} (ifo {settings.general.ifo}; classifiers {names})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
