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
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from idq_common.science.quiver import Quiver

__all__ = ["TrainingSet"]

_FORMAT = 1


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
        self.accumulated: Quiver | None = None
        self.unseen: dict[str, Quiver] = {}
        #: samples added since the last training round
        self.n_new = 0

    def __len__(self) -> int:
        return 0 if self.accumulated is None else len(self.accumulated)

    def _prune(self, q: Quiver) -> Quiver:
        return q.newest(self.max_samples, self.max_span)

    def add(self, quiver: Quiver) -> None:
        """Take in the samples of new strides."""
        acc = self.accumulated
        self.accumulated = self._prune(quiver if acc is None else Quiver.concat([acc, quiver]))
        for name in self.names:
            old = self.unseen.get(name)
            self.unseen[name] = self._prune(quiver if old is None else Quiver.concat([old, quiver]))
        self.n_new += len(quiver)

    def data_for(self, name: str, incremental: bool) -> Quiver:
        """What classifier ``name`` trains on in this round."""
        if incremental:
            return self.unseen[name]  # KeyError: not declared incremental
        assert self.accumulated is not None
        return self.accumulated

    def trained(self, name: str) -> None:
        """Classifier ``name`` has learned its unseen samples."""
        self.unseen.pop(name, None)

    def round_done(self) -> None:
        """A training round is over (classifiers not trained keep their unseen samples)."""
        self.n_new = 0

    def relayout(self, fn: Callable[[Quiver], Quiver]) -> None:
        """Apply ``fn`` to every kept quiver (new feature channels: new columns)."""
        if self.accumulated is not None:
            self.accumulated = fn(self.accumulated)
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
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
        return buf.getvalue()

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
                    self.unseen[key[7:]] = q
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
