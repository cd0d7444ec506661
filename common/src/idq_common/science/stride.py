"""Features of a stride + models + calibrations -> timeseries products (pure, no I/O).

The one computation behind the timeseries stage, the bench's stride-invariance check
and the tests: for each stride ``[start, end)`` a ``rate`` Hz grid
(:func:`~idq_common.science.features.grid_times`), the samples inside the stride's valid
segments, their feature vectors, each classifier's ranks and, through its
calibration, the six products of :mod:`idq_common.science.products`.

Several strides go through one call: feature vectors are computed once per feature
layout for the valid samples of all of them, and each classifier ranks them in a few
large calls instead of one small call per stride (a forest's ``predict_proba`` has a
fixed cost of milliseconds per call). Every feature row depends only on its own sample
time and the triggers around it, and every classifier here ranks rows independently,
so the products of a stride are the same, bit for bit, whichever strides it was
computed with (``tests/common/test_stride.py`` checks it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from igwn_segments import segment, segmentlist

from idq_common.data.triggers import TriggerSet, in_segments
from idq_common.science.features import (
    FeatureBuilder,
    FeatureSpec,
    RawMatrix,
    build_features,
    grid_times,
)
from idq_common.science.products import RankCalibration, compute_products, invalid_products

__all__ = [
    "Calibrated",
    "CalibratedModel",
    "Stride",
    "StrideProducts",
    "rank_grid",
    "stride_products",
]

#: feature cells (rows x columns) ranked per call at most: bounds the memory of one call
#: (the matrix, the classifier's preprocessed copy) whatever the number of strides
MAX_CELLS = 1 << 22


class Layout(Protocol):
    """A feature layout (FeatureSpec, ModelSpec), read-only."""

    @property
    def channels(self) -> tuple[str, ...]: ...

    @property
    def window(self) -> float: ...

    @property
    def columns(self) -> tuple[str, ...]: ...


class Ranker(Protocol):
    """What the products need of a classifier: its feature layout and ``rank``."""

    @property
    def feature_spec(self) -> Layout: ...

    def rank(self, features: np.ndarray) -> np.ndarray: ...

    def feature_builder(self) -> FeatureBuilder | None: ...

    def rank_built(self, built: np.ndarray) -> np.ndarray: ...


class CalibratedModel(Protocol):
    """A classifier with the calibration fitted on its ranks (``stage.models.Pair``)."""

    @property
    def classifier(self) -> Ranker: ...

    @property
    def calibration(self) -> RankCalibration | None: ...

    @property
    def healthy(self) -> bool: ...


@dataclass(frozen=True)
class Calibrated:
    """A plain :class:`CalibratedModel` (bench, tests)."""

    classifier: Any
    calibration: RankCalibration | None
    healthy: bool = True


@dataclass(frozen=True)
class Stride:
    """One stride and where its inputs are valid.

    ``valid`` is clipped to ``[start, end)``; an empty list (a gap, a skipped span)
    makes every sample OK = 0.
    """

    start: float
    end: float
    valid: segmentlist = field(default_factory=segmentlist)


@dataclass(frozen=True)
class StrideProducts:
    """The products of one stride: classifier name -> product name -> samples."""

    start: float
    end: float
    times: np.ndarray
    products: dict[str, dict[str, np.ndarray]]


def _spec_key(spec: Layout) -> tuple[tuple[str, ...], float, tuple[str, ...]]:
    return (tuple(spec.channels), float(spec.window), tuple(spec.columns))


def rank_grid(
    triggers: TriggerSet,
    times: np.ndarray,
    classifiers: Mapping[str, Ranker],
    max_cells: int = MAX_CELLS,
) -> dict[str, np.ndarray]:
    """Ranks of each classifier at ``times`` (the grid of :func:`stride_products`, or the
    evaluate stage's sample times: one ranking code path for both).

    Classifiers sharing a feature layout share the window resolution; each builds
    from it what its model reads (:meth:`Classifier.feature_builder`: OVL its veto
    channels, a forest the columns its trees split on, the scikit-learn flavors their
    preprocessing per trigger instead of per cell), or the feature matrix, built once
    for all classifiers that take it. Rows are ranked in chunks of at most
    ``max_cells`` cells of what is built; the result depends neither on the chunking
    (rows are independent) nor on the building (the same arithmetic on the same values).
    """
    out = {name: np.empty(times.size) for name in classifiers}
    layouts: dict[tuple[Any, ...], list[str]] = {}
    for name, clf in classifiers.items():
        layouts.setdefault(_spec_key(clf.feature_spec), []).append(name)
    for (channels, window, columns), names in layouts.items():
        spec = FeatureSpec(channels, window, columns)
        raw = RawMatrix(spec.columns, spec.width)
        own = {name: classifiers[name].feature_builder() for name in names}
        builders = {name: b if b is not None else raw for name, b in own.items()}
        distinct = list(dict.fromkeys(builders.values()))
        width = sum(b.new(0).shape[1] for b in distinct)
        step = max(1, max_cells // max(1, width))
        for a in range(0, times.size, step):
            built = build_features(triggers, times[a : a + step], spec, distinct)
            for name in names:
                X = built[distinct.index(builders[name])]
                clf = classifiers[name]
                ranks = clf.rank(X) if own[name] is None else clf.rank_built(X)
                out[name][a : a + step] = ranks
    return out


def stride_products(
    triggers: TriggerSet | None,
    strides: Sequence[Stride],
    rate: float,
    models: Mapping[str, CalibratedModel | None],
    max_cells: int = MAX_CELLS,
) -> list[StrideProducts]:
    """The products of every classifier over every stride.

    Parameters
    ----------
    triggers : TriggerSet or None
        Triggers covering every stride plus the feature window on each side; None
        (no data) makes every sample OK = 0.
    strides : sequence of Stride
        The strides, each with its valid segments.
    rate : float
        Sample rate of the grid in Hz.
    models : mapping
        Classifier name -> calibrated model, or None (no model or calibration yet);
        an unhealthy one gives OK = 0 too.
    max_cells : int
        Feature cells per rank call at most (memory bound, see :func:`rank_grid`).

    Returns
    -------
    list of StrideProducts
        One per stride, in order; products keyed like
        :data:`idq_common.contracts.PRODUCTS`, OK = 0 outside ``valid``.
    """
    grids = [grid_times(s.start, s.end, rate) for s in strides]
    inside = [
        in_segments(t, s.valid & segmentlist([segment(s.start, s.end)]))
        for t, s in zip(grids, strides, strict=True)
    ]
    usable = {
        name: m
        for name, m in models.items()
        if m is not None and m.healthy and m.calibration is not None
    }
    ranks: dict[str, np.ndarray] = {}
    if triggers is not None and usable and any(m.any() for m in inside):
        times = np.concatenate([t[m] for t, m in zip(grids, inside, strict=True)])
        classifiers = {name: m.classifier for name, m in usable.items()}
        ranks = rank_grid(triggers, times, classifiers, max_cells)
    # products of every stride in one call per classifier: every product is elementwise
    # in the rank (interpolation, clip, expit), so a stride's values do not depend on the
    # strides computed with it, and one call instead of one per stride saves the fixed
    # cost of ~25 small numpy operations per stride and classifier
    sizes = [t.size for t in grids]
    valid_all = np.concatenate(inside) if grids else np.zeros(0, dtype=bool)
    together: dict[str, dict[str, np.ndarray]] = {}
    for name in ranks:
        rank_all = np.full(valid_all.size, np.nan)
        rank_all[valid_all] = ranks[name]
        together[name] = compute_products(rank_all, valid_all, usable[name].calibration)
    out = []
    at = 0
    for s, times, mask, size in zip(strides, grids, inside, sizes, strict=True):
        n_in = int(mask.sum()) if triggers is not None else 0
        products = {}
        for name in models:
            if name not in ranks or n_in == 0:
                products[name] = invalid_products(times.size)
                continue
            products[name] = {k: v[at : at + size] for k, v in together[name].items()}
        at += size
        out.append(StrideProducts(s.start, s.end, times, products))
    return out
