"""Calibrate's sample history: the newest ``max_samples``, plus ``history_seconds`` of
the model's older samples (what makes low FAPs reachable), bounded in count."""

from __future__ import annotations

import numpy as np

from idq_calibrate.stage import MiniBatch


def _batch(n_quivers: int, per_quiver: int = 100, stride: float = 4.0) -> MiniBatch:
    batch = MiniBatch("m")
    for k in range(n_quivers):
        labels = np.zeros(per_quiver, dtype=np.int8)
        batch.add(
            np.full(per_quiver, k / n_quivers), labels, (k * stride, (k + 1) * stride), (0, k)
        )
    return batch


def test_without_history_only_the_newest_max_samples_stay() -> None:
    batch = _batch(50)
    batch.prune(1000)
    assert batch.size == 1000 and batch.spans[-1] == (196.0, 200.0)


def test_history_keeps_older_quivers_within_the_window() -> None:
    batch = _batch(50)  # quivers end at 4, 8, ..., 200
    batch.prune(1000, history_seconds=100.0, max_history=100_000)
    # ends > 200 - 100 stay: 104 .. 200, 25 quivers
    assert batch.size == 2500 and batch.spans[0] == (100.0, 104.0)
    assert np.concatenate(batch.ranks).size == 2500


def test_history_is_bounded_in_count() -> None:
    batch = _batch(50)
    batch.prune(1000, history_seconds=1e9, max_history=1500)
    assert batch.size == 1500
    # never below max_samples whatever the bound
    batch.prune(1000, history_seconds=1e9, max_history=10)
    assert batch.size == 1000
