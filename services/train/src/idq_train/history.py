"""What train has gathered: the accumulated samples and, per classifier, the unseen ones.

A supervised classifier trains on the accumulated set (pruned to the newest
``max_samples`` samples within ``max_span`` seconds); an incremental one on the
samples it has not learned yet. A classifier skipped for lack of one class keeps its
unseen samples for the next round instead of losing them.

The set survives restarts: :meth:`TrainingSet.to_bytes` is stored in the artifact
store when a round of models is out, and the committed checkpoint names it, so a
restarted train resumes with the same history the models were trained on (before,
the next supervised model after a restart saw only ~``min_new_samples`` samples).
The bytes are a numpy ``.npz`` read with ``allow_pickle=False`` (never unpickled).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from idq_common.science.quiver import Quiver

__all__ = ["TrainingSet"]

_FORMAT = 1


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    """An uncompressed ``.npz`` (``np.savez``; ``np.load`` reads it as it read the deflated).

    Stored with every round of models. The feature matrix is nearly all of it and is
    measured floats (a trigger in almost every cell at 16 Hz background): deflate at
    level 1 took 0.41 CPU s for 541 samples x 3,000 columns to shrink it only to 0.78
    (13.1 -> 10.2 MB); stored, 0.03 s.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, value in arrays.items():
            with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)
    return buf.getvalue()


class TrainingSet:
    """Accumulated and per-classifier unseen samples, with the pruning rule.

    Parameters
    ----------
    incremental : iterable of str
        Names of the incremental classifiers (each keeps its own unseen samples).
    max_samples : int
        Cap on the samples kept (the newest).
    max_span : float
        Samples older than ``max_span`` seconds before the newest span end are dropped.
    """

    def __init__(self, incremental: Iterable[str], max_samples: int, max_span: float) -> None:
        self.names = tuple(incremental)
        self.max_samples = int(max_samples)
        self.max_span = float(max_span)
        # kept quivers as parts (the stride quivers added since the last join): joining
        # and pruning once when read gives the same quiver as after every stride (the
        # newest-samples cut only moves forward), without copying the whole kept set
        # per stride (up to max_samples x columns: 120 MB at 1,000 channels, twice with
        # an incremental classifier, and a second copy alive during each join)
        self._acc: list[Quiver] = []
        self._unseen: dict[str, list[Quiver]] = {}
        #: samples added since the last training round
        self.n_new = 0

    def __len__(self) -> int:
        # from the parts' times: the stage logs the count per batch, and joining there
        # copied the whole kept set each time (what the parts avoid)
        return Quiver.newest_count(self._acc, self.max_samples, self.max_span) if self._acc else 0

    def _prune(self, q: Quiver) -> Quiver:
        return q.newest(self.max_samples, self.max_span)

    def _join(self, parts: list[Quiver]) -> None:
        """Parts -> one pruned quiver, in place (pruning a pruned quiver returns it)."""
        if parts:
            parts[:] = [self._prune(parts[0] if len(parts) == 1 else Quiver.concat(parts))]

    def _add_to(self, parts: list[Quiver], quiver: Quiver) -> None:
        parts.append(quiver)
        # join once the parts hold more than max_samples / 4 beyond the kept set (a
        # round reads and joins them anyway): the parts stay within 1.25 x max_samples
        # and each sample is copied a few times, not once per stride
        if sum(len(p) for p in parts[1:]) > max(1, self.max_samples // 4):
            self._join(parts)

    @property
    def accumulated(self) -> Quiver | None:
        """Every kept sample (the newest ``max_samples`` within ``max_span``), or None."""
        self._join(self._acc)
        return self._acc[0] if self._acc else None

    @accumulated.setter
    def accumulated(self, q: Quiver | None) -> None:
        self._acc = [] if q is None else [q]

    @property
    def unseen(self) -> dict[str, Quiver]:
        """Per incremental classifier, the kept samples it has not learned yet."""
        for parts in self._unseen.values():
            self._join(parts)
        return {k: v[0] for k, v in self._unseen.items() if v}

    @unseen.setter
    def unseen(self, value: dict[str, Quiver]) -> None:
        self._unseen = {k: [q] for k, q in value.items()}

    def add(self, quiver: Quiver) -> None:
        """Take in the samples of new strides."""
        self._add_to(self._acc, quiver)
        for name in self.names:
            self._add_to(self._unseen.setdefault(name, []), quiver)
        self.n_new += len(quiver)

    def data_for(self, name: str, incremental: bool) -> Quiver:
        """What classifier ``name`` trains on in this round."""
        if incremental:
            return self.unseen[name]  # KeyError: not declared incremental
        acc = self.accumulated
        assert acc is not None
        return acc

    def trained(self, name: str) -> None:
        """Classifier ``name`` has learned its unseen samples."""
        self._unseen.pop(name, None)

    def round_done(self) -> None:
        """A training round is over (classifiers not trained keep their unseen samples)."""
        self.n_new = 0

    def relayout(self, fn: Callable[[Quiver], Quiver]) -> None:
        """Apply ``fn`` to every kept quiver (new feature channels: new columns)."""
        acc = self.accumulated
        if acc is not None:
            self.accumulated = fn(acc)
        self.unseen = {k: fn(v) for k, v in self.unseen.items()}

    # -- persistence ----------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """An ``.npz`` of every quiver (times, labels, features, span, segments)."""
        arrays: dict[str, np.ndarray] = {}
        parts = {
            "accumulated": self.accumulated,
            **{f"unseen/{k}": v for k, v in self.unseen.items()},
        }
        listed: list[dict[str, Any]] = []
        header = {"format": _FORMAT, "n_new": self.n_new, "quivers": listed}
        for i, (key, q) in enumerate(parts.items()):
            if q is None:
                continue
            listed.append(
                {"key": key, "i": i, "columns": list(q.columns), "start": q.start, "end": q.end}
            )
            arrays[f"{i}.times"] = q.times
            arrays[f"{i}.labels"] = q.labels
            arrays[f"{i}.features"] = q.features
            arrays[f"{i}.segs"] = np.array([[s, e] for s, e in q.segs], dtype=np.float64).reshape(
                -1, 2
            )
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        return _npz(arrays)

    def restore(self, data: bytes) -> None:
        """Replace the state with one from :meth:`to_bytes` (unknown classifiers ignored)."""
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            header = json.loads(z["header"].tobytes().decode())
            if header.get("format") != _FORMAT:
                raise ValueError(f"unknown training-set format {header.get('format')!r}")
            self.accumulated = None
            self.unseen = {}
            for item in header["quivers"]:
                i = item["i"]
                q = Quiver(
                    z[f"{i}.times"],
                    z[f"{i}.labels"],
                    z[f"{i}.features"],
                    item["columns"],
                    item["start"],
                    item["end"],
                    [tuple(row) for row in z[f"{i}.segs"]],
                )
                key = item["key"]
                if key == "accumulated":
                    self.accumulated = q
                elif key.startswith("unseen/") and key[7:] in self.names:
                    self._unseen[key[7:]] = [q]
            self.n_new = int(header.get("n_new", 0))

    def before(self, gps: float) -> None:
        """Forget samples at or after ``gps`` (strides to be redone after a restart)."""

        def cut(q: Quiver) -> Quiver | None:
            if q.end <= gps:
                return q
            if q.start >= gps:
                return None
            return q.trim(q.start, gps)

        self.accumulated = None if self.accumulated is None else cut(self.accumulated)
        self.unseen = {k: c for k, v in self.unseen.items() if (c := cut(v)) is not None}
