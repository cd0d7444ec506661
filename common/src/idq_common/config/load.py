"""Read the TOML configuration, apply environment overrides, validate, freeze.

The whole document is checked before anything runs: the first problem found stops
loading with a :class:`~idq_common.exceptions.ConfigError` naming the dotted key.
Relative paths (``features.channels_file``, ``segments.file``, ``timeseries.output_dir``,
``file://`` store URLs) are taken from the directory of the configuration file, so a
service behaves the same whatever its working directory.
"""

from __future__ import annotations

import copy
import os
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from idq_common.config import sections
from idq_common.config.reader import Context, Table, apply_env_overrides
from idq_common.config.schema import Settings
from idq_common.exceptions import ConfigError

SECTIONS: tuple[str, ...] = (
    "general",
    "samples",
    "features",
    "segments",
    "train",
    "evaluate",
    "calibrate",
    "timeseries",
    "classifier",
    "kafka",
    "store",
    "metrics",
    "ingest",
)


def load_settings(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    *,
    check_classifiers: bool = True,
    fit_checks: bool = True,
) -> Settings:
    """Load, override from the environment, validate and freeze a configuration file.

    Parameters
    ----------
    path : path-like
        The TOML file.
    env : mapping, optional
        Environment to take ``IDQ_<SECTION>__<KEY>`` overrides from (default
        ``os.environ``; pass ``{}`` for none).
    check_classifiers : bool
        Build each classifier to check its parameters (the default, what services and
        ``idq config check`` do). Commands that never build one (``idq query``,
        ``idq produce``) pass False and skip importing scikit-learn (~1 s).
    fit_checks : bool
        Also check the parameters against the estimators' own constraints (scikit-learn's
        parameter validation: imports scikit-learn, ~2 CPU s). Stages that never fit a
        model (evaluate, timeseries, calibrate) pass False: what they read of a
        classifier's parameters is still checked, the fitting ones are train's to check.

    Raises
    ------
    ConfigError
        On an unreadable file, a TOML syntax error (with its line) or any invalid value.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(str(path), "file not found") from None
    except IsADirectoryError:
        raise ConfigError(str(path), "is a directory, not a TOML file") from None
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), "is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"TOML syntax error: {exc}") from None
    return settings_from_dict(
        data,
        base_dir=path.resolve().parent,
        env=os.environ if env is None else env,
        source=path.resolve(),
        check_classifiers=check_classifiers,
        fit_checks=fit_checks,
    )


def load_settings_or_exit(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    *,
    check_classifiers: bool = True,
    fit_checks: bool = True,
) -> Settings:
    """:func:`load_settings` for command-line programs.

    On a configuration error print exactly one line,
    ``idq: config error at '<key>': <problem>``, to stderr and exit with status 2
    (no traceback).
    """
    try:
        return load_settings(path, env, check_classifiers=check_classifiers, fit_checks=fit_checks)
    except ConfigError as exc:
        _exit(exc)


def _exit(exc: ConfigError) -> NoReturn:
    print(f"idq: {exc}".replace("\n", " "), file=sys.stderr, flush=True)
    raise SystemExit(2) from None


def settings_from_dict(
    data: Mapping[str, Any],
    *,
    base_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    source: Path | None = None,
    check_classifiers: bool = True,
    fit_checks: bool = True,
) -> Settings:
    """Validate an already parsed document (tests, generated configs).

    Parameters
    ----------
    data : mapping
        The parsed TOML document; it is not modified.
    base_dir : path-like, optional
        Where relative paths start (default: the working directory).
    env : mapping, optional
        Environment overrides to apply (default: none).
    source : Path, optional
        Recorded as :attr:`Settings.source`.
    check_classifiers, fit_checks : bool
        See :func:`load_settings`.
    """
    doc: dict[str, Any] = copy.deepcopy(dict(data))
    ctx = Context(base_dir=Path(base_dir).resolve() if base_dir is not None else Path.cwd())
    if env:
        apply_env_overrides(doc, env, ctx)
    root = Table(doc, "", ctx, SECTIONS)

    general = sections.general(root)
    samples = sections.samples(root, general.ifo)
    features = sections.features(root, samples)
    segments = sections.segments(root, general.ifo)
    train = sections.train(root)
    evaluate = sections.evaluate(root)
    calibrate = sections.calibrate(root)
    timeseries = sections.timeseries(root, samples)
    classifiers = sections.classifiers(root, features, check_classifiers, fit_checks)
    kafka = sections.kafka(root, general.ifo)
    store = sections.store(root)
    metrics = sections.metrics(root)
    ingest = sections.ingest(root, general.ifo, kafka.topics)
    sections.check_blocks(
        root,
        kafka,
        {
            "the evaluate stride": evaluate.stream.stride,
            "the timeseries stride": timeseries.stream.stride,
            **({"ingest.message_seconds": ingest.message_seconds} if ingest else {}),
        },
    )
    return Settings(
        general=general,
        samples=samples,
        features=features,
        segments=segments,
        train=train,
        evaluate=evaluate,
        calibrate=calibrate,
        timeseries=timeseries,
        classifiers=classifiers,
        kafka=kafka,
        store=store,
        metrics=metrics,
        ingest=ingest,
        source=source,
    )
