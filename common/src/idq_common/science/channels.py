"""Which auxiliary channels become features: every channel seen, minus unsafe ones.

With sparse feature messages (sgnax sends only channels that fired) the channels of
the first batch a stage reads are not all the channels there are: a witness that has
not fired yet would be missing from the model for good. :class:`ChannelSet` collects
every channel seen so far; the train stage builds each new model on the set as it is
at that training, so a channel that first fires later joins at the next retrain.

Unsafe channels (iDQ's unsafe-channel list: channels that see the strain itself, so
their "witness" of a glitch would witness a gravitational wave as well) never become
features. Patterns are shell globs (``fnmatch``, case-sensitive, e.g. ``*:CAL-*``) or,
written ``re:<pattern>``, regular expressions that must match the whole name.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable

import numpy as np

from idq_common.science.features import FeatureSpec
from idq_common.science.quiver import Quiver

__all__ = ["ChannelSet", "relayout", "unsafe_matcher"]


def unsafe_matcher(patterns: Iterable[str]) -> Callable[[str], bool]:
    """A predicate: does a channel name match any of ``patterns``?

    Raises
    ------
    re.error
        On a malformed ``re:`` pattern.
    """
    parts = []
    for p in patterns:
        parts.append(p[3:] if p.startswith("re:") else fnmatch.translate(p))
    if not parts:
        return lambda name: False
    rx = re.compile("|".join(f"(?:{p})" for p in parts))
    return lambda name: rx.fullmatch(name) is not None


class ChannelSet:
    """Every safe auxiliary channel seen so far, in sorted order.

    Parameters
    ----------
    exclude : iterable of str
        Channels never used (the target channel).
    unsafe : iterable of str
        Unsafe-channel patterns (module docstring).
    fixed : iterable of str, optional
        A configured channel list: when given, it is the set, whatever is seen.
    """

    def __init__(
        self,
        exclude: Iterable[str] = (),
        unsafe: Iterable[str] = (),
        fixed: Iterable[str] | None = None,
    ) -> None:
        self._exclude = set(exclude)
        self._is_unsafe = unsafe_matcher(unsafe)
        self._fixed = tuple(fixed) if fixed is not None else None
        self._seen: set[str] = set()
        #: unsafe channels seen and left out (for the log)
        self.rejected: set[str] = set()

    def update(self, channels: Iterable[str]) -> list[str]:
        """Add the channels of new data; returns the ones that are new and kept."""
        if self._fixed is not None:
            return []
        new = []
        for name in channels:
            if name in self._seen or name in self._exclude or name in self.rejected:
                continue
            if self._is_unsafe(name):
                self.rejected.add(name)
                continue
            self._seen.add(name)
            new.append(name)
        return sorted(new)

    @property
    def channels(self) -> tuple[str, ...]:
        """The feature channels now (sorted, or the configured list as given)."""
        if self._fixed is not None:
            return self._fixed
        return tuple(sorted(self._seen))


def relayout(quiver: Quiver, spec: FeatureSpec) -> Quiver:
    """``quiver`` with its feature columns laid out by ``spec``.

    Columns ``spec`` has and the quiver lacks get the "no trigger" defaults of
    :mod:`idq_common.science.features` (snr 0, frequency 0, dt = window): exact for a
    channel first seen after these samples were taken, since it had no trigger then.
    Columns the quiver has and ``spec`` lacks are dropped.
    """
    names = spec.names
    if tuple(quiver.columns) == names:
        return quiver
    have = {name: i for i, name in enumerate(quiver.columns)}
    out = np.zeros((len(quiver), len(names)))
    for j, name in enumerate(names):
        i = have.get(name)
        if i is not None:
            out[:, j] = quiver.features[:, i]
        elif name.endswith(".dt"):
            out[:, j] = spec.window
    return Quiver(
        quiver.times,
        quiver.labels,
        out,
        names,
        quiver.start,
        quiver.end,
        quiver.segs,
        quiver.ranks,
        quiver.classifier,
        quiver.model_id,
    )
