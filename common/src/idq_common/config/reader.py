"""Typed, key-tracking access to a parsed TOML document, and environment overrides.

Every check raises :class:`~idq_common.exceptions.ConfigError` with the dotted key and
a one-line problem, so that an operator reading ``idq: config error at 'train.stream.stride':
must be > 0, got 0`` knows exactly what to edit. Values that came from an environment
variable say so in the problem.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from idq_common.exceptions import ConfigError

ENV_PREFIX = "IDQ_"
ENV_SEPARATOR = "__"
# Variables of the test suite and of tools, never config overrides.
ENV_IGNORED_PREFIXES: tuple[str, ...] = ("IDQ_TEST_", "IDQ_TEST__")

_MISSING: Any = object()


def suggest(name: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest candidate, or the list of candidates."""
    candidates = sorted(candidates)
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{close[0]}'?"
    if candidates:
        return f"; expected one of: {', '.join(candidates)}"
    return ""


def describe(value: Any) -> str:
    """A value's TOML type and value, for 'expected X, got Y' messages."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"{type(value).__name__} {value!r}"


@dataclass
class Context:
    """What the readers share: where relative paths start, and which keys the env set."""

    base_dir: Path
    env_vars: dict[str, str] = field(default_factory=dict)  # dotted key -> variable name
    env_raw: dict[str, str] = field(default_factory=dict)  # dotted key -> raw string

    def origin(self, key: str) -> str:
        """`` (from environment variable X)`` when the key was set by the environment."""
        var = self.env_vars.get(key)
        return f" (from environment variable {var})" if var else ""

    def error(self, key: str, problem: str) -> ConfigError:
        """A :class:`ConfigError` whose problem also names the env variable, if any."""
        return ConfigError(key, (problem + self.origin(key)).replace("\n", " "))

    def path(self, value: str) -> Path:
        """A path from the config, relative ones taken from the config file's directory."""
        p = Path(value).expanduser()
        return (p if p.is_absolute() else self.base_dir / p).resolve()


class Table:
    """One TOML table, read key by key with type checks.

    Parameters
    ----------
    data : mapping
        The parsed table.
    prefix : str
        Its dotted path (``""`` for the document root).
    ctx : Context
        Shared loading context.
    allowed : iterable of str
        Every key this table may hold; any other key is reported at once, with the
        closest allowed key as a suggestion.
    """

    def __init__(self, data: Mapping[str, Any], prefix: str, ctx: Context, allowed: Iterable[str]):
        self.data = data
        self.prefix = prefix
        self.ctx = ctx
        self.allowed = tuple(allowed)
        for k in data:
            if k not in self.allowed:
                what = "unknown section" if not prefix else "unknown key"
                raise ctx.error(self.key(k), what + suggest(k, self.allowed))

    def key(self, name: str) -> str:
        """Dotted path of a key in this table."""
        return f"{self.prefix}.{name}" if self.prefix else name

    def has(self, name: str) -> bool:
        """Whether the key is present."""
        return name in self.data

    def error(self, name: str, problem: str) -> ConfigError:
        """A :class:`ConfigError` for a key of this table."""
        return self.ctx.error(self.key(name), problem)

    def _get(self, name: str, default: Any, expected: str) -> Any:
        if name in self.data:
            return self.data[name]
        if default is _MISSING:
            raise self.error(name, f"missing required key ({expected})")
        return default

    def _type_error(self, name: str, expected: str, value: Any) -> ConfigError:
        return self.error(name, f"expected {expected}, got {describe(value)}")

    def string(
        self,
        name: str,
        default: Any = _MISSING,
        *,
        choices: Sequence[str] | None = None,
        allow_empty: bool = False,
    ) -> Any:
        """A string. A string key set from the environment takes the variable's text
        verbatim (``123`` stays ``"123"``, quotes in a password are kept)."""
        value = self._get(name, default, "a string")
        raw = self.ctx.env_raw.get(self.key(name))
        if raw is not None and name in self.data:
            value = raw
        if name not in self.data or value is None:
            return value
        if not isinstance(value, str):
            raise self._type_error(name, "a string", value)
        if not allow_empty and not value.strip():
            raise self.error(name, "must not be empty")
        if choices is not None and value not in choices:
            raise self.error(name, f"unknown value {value!r}" + suggest(value, choices))
        return value

    def integer(
        self, name: str, default: Any = _MISSING, *, min: int | None = None, max: int | None = None
    ) -> Any:
        """An integer within ``[min, max]``."""
        value = self._get(name, default, "an integer")
        if name not in self.data or value is None:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._type_error(name, "an integer", value)
        if min is not None and value < min:
            raise self.error(name, f"must be >= {min}, got {value}")
        if max is not None and value > max:
            raise self.error(name, f"must be <= {max}, got {value}")
        return value

    def number(
        self,
        name: str,
        default: Any = _MISSING,
        *,
        gt: float | None = None,
        ge: float | None = None,
        finite: bool = True,
    ) -> Any:
        """A float (TOML integers accepted), optionally bounded below."""
        value = self._get(name, default, "a number")
        if name not in self.data or value is None:
            return value
        value = self.check_number(self.key(name), value, finite=finite)
        if gt is not None and not value > gt:
            raise self.error(name, f"must be > {gt:g}, got {value:g}")
        if ge is not None and not value >= ge:
            raise self.error(name, f"must be >= {ge:g}, got {value:g}")
        return value

    def check_number(self, key: str, value: Any, *, finite: bool = True) -> float:
        """``value`` as a float, or a ConfigError at ``key``."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.ctx.error(key, f"expected a number, got {describe(value)}")
        value = float(value)
        if math.isnan(value) or (finite and math.isinf(value)):
            raise self.ctx.error(key, f"must be a finite number, got {value}")
        return value

    def boolean(self, name: str, default: Any = _MISSING) -> Any:
        """A boolean."""
        value = self._get(name, default, "a boolean")
        if name not in self.data:
            return value
        if not isinstance(value, bool):
            raise self._type_error(name, "a boolean (true or false)", value)
        return value

    def array(self, name: str, default: Any = _MISSING) -> Any:
        """An array (list)."""
        value = self._get(name, default, "an array")
        if name not in self.data or value is None:
            return value
        if not isinstance(value, list):
            raise self._type_error(name, "an array", value)
        return value

    def strings(self, name: str, default: Any = _MISSING) -> Any:
        """A non-empty array of distinct non-empty strings, as a tuple."""
        value = self.array(name, default)
        if name not in self.data or value is None:
            return value
        if not value:
            raise self.error(name, "must not be empty")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise self.error(
                    name, f"item {i}: expected a non-empty string, got {describe(item)}"
                )
        dups = sorted({v for v in value if value.count(v) > 1})
        if dups:
            raise self.error(name, f"duplicate entries: {', '.join(dups)}")
        return tuple(value)

    def table(self, name: str, allowed: Iterable[str], *, required: bool = True) -> Table | None:
        """A sub-table, or ``None`` when absent and not required."""
        if name not in self.data:
            if required:
                raise self.error(name, f"missing required section [{self.key(name)}]")
            return None
        value = self.data[name]
        if not isinstance(value, dict):
            raise self._type_error(name, "a table", value)
        return Table(value, self.key(name), self.ctx, allowed)

    def raw_table(self, name: str) -> dict[str, Any] | None:
        """A sub-table as a plain dict (free-form contents), ``None`` when absent."""
        if name not in self.data:
            return None
        value = self.data[name]
        if not isinstance(value, dict):
            raise self._type_error(name, "a table", value)
        return value


# -- environment overrides --------------------------------------------------------------


def parse_env_value(raw: str) -> Any:
    """Parse an environment value as a TOML value (``16`` -> 16, ``inf`` -> inf,
    ``[1, 2]`` -> list); anything that is not exactly one TOML value stays a string."""
    try:
        parsed = tomllib.loads(f"v = {raw}")
    except tomllib.TOMLDecodeError:
        return raw
    return parsed["v"] if set(parsed) == {"v"} else raw


def apply_env_overrides(data: dict[str, Any], env: Mapping[str, str], ctx: Context) -> None:
    """Write ``IDQ_<SECTION>__<KEY>[__<KEY>...]`` variables into the parsed document.

    Keys are lower-cased; ``[[classifier]]`` entries are addressed by index
    (``IDQ_CLASSIFIER__0__FLAVOR``); under ``kafka.librdkafka`` underscores become dots
    (``IDQ_KAFKA__LIBRDKAFKA__SOCKET_TIMEOUT_MS`` -> ``socket.timeout.ms``). Missing
    tables are created, so an override of an unknown key is then reported as unknown by
    the validation, naming the variable. Variables without ``__`` (``IDQ_KAFKA_HOME``)
    and ``IDQ_TEST_*`` are not overrides.
    """
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or ENV_SEPARATOR not in var:
            continue
        if var.startswith(ENV_IGNORED_PREFIXES):
            continue
        parts = [p.lower() for p in var[len(ENV_PREFIX) :].split(ENV_SEPARATOR)]
        if len(parts) < 2 or not all(parts):
            raise ConfigError(var, "malformed override; expected IDQ_<SECTION>__<KEY>")
        if parts[:2] == ["kafka", "librdkafka"] and len(parts) > 2:
            parts[-1] = parts[-1].replace("_", ".")
        _set_path(data, parts, env[var], var, ctx)


def _set_path(data: dict[str, Any], parts: list[str], raw: str, var: str, ctx: Context) -> None:
    node: Any = data
    dotted = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit():
                example = f"IDQ_{dotted.upper()}__0__{part.upper()}"
                raise ConfigError(
                    dotted, f"is an array of tables; {var} must give an index, like {example}"
                )
            idx = int(part)
            if idx >= len(node):
                raise ConfigError(f"{dotted}[{idx}]", f"no such entry (set by {var})")
            dotted = f"{dotted}[{idx}]"
            if last:
                raise ConfigError(dotted, f"{var} cannot replace a whole table")
            node = node[idx]
            continue
        if not isinstance(node, dict):
            raise ConfigError(dotted, f"is not a table, so {var} cannot set a key inside it")
        dotted = f"{dotted}.{part}" if dotted else part
        if last:
            if isinstance(node.get(part), dict):
                raise ConfigError(dotted, f"is a table; {var} cannot replace it with a value")
            node[part] = parse_env_value(raw)
            ctx.env_vars[dotted] = var
            ctx.env_raw[dotted] = raw
        else:
            node = node.setdefault(part, {})
