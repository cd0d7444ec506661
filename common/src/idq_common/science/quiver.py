"""Quivers: labelled feature vectors plus the span and segments they cover.

A quiver travels from sample extraction (``build_quiver``) to training, evaluation
(which fills ``ranks``, ``classifier`` and ``model_id``) and calibration.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from igwn_segments import segmentlist

from idq_common.data.base import ClassifierData, clip_segs
from idq_common.science.features import FeatureSpec, feature_matrix

__all__ = ["CLEAN", "GLITCH", "Quiver", "build_quiver"]

GLITCH = 1
CLEAN = 0


class Quiver:
    """Labelled samples: ``times``, ``labels`` (int8: 1 glitch, 0 clean), ``features``.

    Parameters
    ----------
    times : array-like
        Sample GPS times (float64).
    labels : array-like
        1 for glitch, 0 for clean (int8).
    features : array-like
        2-D float64, one row per sample; may have zero columns (e.g. off the wire).
    columns : sequence of str
        Feature column names (``FeatureSpec.names``).
    start, end : float
        Span the samples were drawn from.
    segs : segmentlist, optional
        Segments covered; default ``[start, end)``. Always kept inside ``[start, end)``:
        setting ``start`` or ``end`` clips them (samples are not touched; see
        :meth:`trim`).
    ranks : array-like, optional
        Classifier ranks in [0, 1] once evaluated.
    classifier, model_id : str, optional
        Which classifier and model produced ``ranks``.
    """

    def __init__(
        self,
        times: Sequence[float] | np.ndarray,
        labels: Sequence[int] | np.ndarray,
        features: np.ndarray,
        columns: Sequence[str],
        start: float,
        end: float,
        segs: Iterable | None = None,
        ranks: Sequence[float] | np.ndarray | None = None,
        classifier: str | None = None,
        model_id: str | None = None,
    ) -> None:
        self.times = np.asarray(times, dtype=np.float64).reshape(-1)
        self.labels = np.asarray(labels, dtype=np.int8).reshape(-1)
        n = self.times.size
        feats = np.asarray(features, dtype=np.float64)
        self.columns = tuple(columns)
        # reshape(n, -1) is ambiguous when there is nothing: use the column count
        self.features = feats.reshape(n, -1) if feats.size else feats.reshape(n, len(self.columns))
        self.ranks = None if ranks is None else np.asarray(ranks, dtype=np.float64).reshape(-1)
        if self.labels.size != n or self.features.shape[0] != n:
            raise ValueError("times, labels and features must have the same number of rows")
        if self.features.shape[1] != len(self.columns):
            raise ValueError(f"{self.features.shape[1]} feature columns, {len(self.columns)} names")
        if self.ranks is not None and self.ranks.size != n:
            raise ValueError("ranks must have one value per sample")
        if end < start:
            raise ValueError(f"end {end} before start {start}")
        self._start, self._end = float(start), float(end)
        self._segs = clip_segs(segs, self._start, self._end)
        self.classifier = classifier
        self.model_id = model_id

    # -- span -----------------------------------------------------------------------
    @property
    def start(self) -> float:
        return self._start

    @start.setter
    def start(self, value: float) -> None:
        if value > self._end:
            raise ValueError(f"start {value} after end {self._end}")
        self._start = float(value)
        self._segs = clip_segs(self._segs, self._start, self._end)

    @property
    def end(self) -> float:
        return self._end

    @end.setter
    def end(self, value: float) -> None:
        if value < self._start:
            raise ValueError(f"end {value} before start {self._start}")
        self._end = float(value)
        self._segs = clip_segs(self._segs, self._start, self._end)

    @property
    def segs(self) -> segmentlist:
        return segmentlist(self._segs)

    @segs.setter
    def segs(self, value: Iterable) -> None:
        self._segs = clip_segs(value, self._start, self._end)

    @property
    def livetime(self) -> float:
        return float(abs(self._segs))

    # -- samples --------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.times.size)

    @property
    def n_glitch(self) -> int:
        return int(np.count_nonzero(self.labels == GLITCH))

    @property
    def n_clean(self) -> int:
        return int(np.count_nonzero(self.labels == CLEAN))

    def select(self, mask: np.ndarray) -> Quiver:
        """Samples where ``mask`` (boolean or indices) holds; span and ids unchanged."""
        return Quiver(
            self.times[mask],
            self.labels[mask],
            self.features[mask],
            self.columns,
            self._start,
            self._end,
            self._segs,
            None if self.ranks is None else self.ranks[mask],
            self.classifier,
            self.model_id,
        )

    def trim(self, start: float, end: float) -> Quiver:
        """Samples inside ``[start, end)`` and the span/segments cut to it."""
        start, end = max(start, self._start), max(min(end, self._end), max(start, self._start))
        q = self.select((self.times >= start) & (self.times < end))
        q._start, q._end = start, end
        q._segs = clip_segs(self._segs, start, end)
        return q

    def newest(self, max_samples: int | None = None, max_span: float | None = None) -> Quiver:
        """The newest samples: within ``max_span`` seconds of ``end``, at most ``max_samples``.

        Unlike :meth:`select`, the span and segments are cut too (to ``[cut, end)``,
        ``cut`` the oldest time kept), so what is announced as the training span and
        what OVL uses as livetime describe the samples actually kept. When several
        samples share the time at the cut they are all kept or all dropped (a sample
        never lies outside its quiver's span), so the count may be just under the cap.
        """
        cut = _newest_cut(self.times, self._start, self._end, max_samples, max_span)
        if cut <= self._start:
            return self
        return self.trim(cut, self._end)

    @staticmethod
    def newest_count(
        quivers: list[Quiver], max_samples: int | None = None, max_span: float | None = None
    ) -> int:
        """``len(Quiver.concat(quivers).newest(max_samples, max_span))``, from times alone."""
        times = np.concatenate([q.times for q in quivers])
        start, end = min(q.start for q in quivers), max(q.end for q in quivers)
        cut = _newest_cut(times, start, end, max_samples, max_span)
        if cut <= start:
            return int(times.size)
        return int(np.count_nonzero((times >= cut) & (times < end)))

    @classmethod
    def concat(cls, quivers: Iterable[Quiver]) -> Quiver:
        """Join quivers: samples sorted by time (stable), span and segments unioned.

        ``ranks`` are kept if every quiver has them; ``classifier`` and ``model_id``
        if every quiver agrees, else ``None``.

        Raises
        ------
        ValueError
            If there are no quivers or their feature columns differ.
        """
        qs = list(quivers)
        if not qs:
            raise ValueError("concat needs at least one quiver")
        cols = qs[0].columns
        if any(q.columns != cols for q in qs):
            raise ValueError("cannot concat quivers with different feature columns")
        times = np.concatenate([q.times for q in qs])
        order = np.argsort(times, kind="stable")
        segs = segmentlist()
        for q in qs:
            segs |= q.segs
        ranks = (
            np.concatenate([q.ranks for q in qs])[order]
            if all(q.ranks is not None for q in qs)
            else None
        )
        classifiers = {q.classifier for q in qs}
        models = {q.model_id for q in qs}
        return cls(
            times[order],
            np.concatenate([q.labels for q in qs])[order],
            np.concatenate([q.features for q in qs])[order],
            cols,
            min(q.start for q in qs),
            max(q.end for q in qs),
            segs,
            ranks,
            classifiers.pop() if len(classifiers) == 1 else None,
            models.pop() if len(models) == 1 else None,
        )

    def __repr__(self) -> str:
        return (
            f"Quiver(n={len(self)}, glitch={self.n_glitch}, clean={self.n_clean}, "
            f"span=[{self._start}, {self._end}), livetime={self.livetime}, "
            f"classifier={self.classifier!r}, model_id={self.model_id!r})"
        )


def _newest_cut(
    times: np.ndarray, start: float, end: float, max_samples: int | None, max_span: float | None
) -> float:
    """The oldest time :meth:`Quiver.newest` keeps (``start``: all are kept)."""
    cut = start
    if max_span is not None:
        cut = max(cut, end - max_span)
    if max_samples is not None:
        inside = np.sort(times[times >= cut])
        if inside.size > max_samples:
            # strictly after the (max_samples+1)-th newest time
            over = inside[inside.size - max_samples - 1]
            cut = max(cut, float(np.nextafter(over, np.inf)))
    return cut


def build_quiver(
    data: ClassifierData,
    target_channel: str,
    target_bounds: Mapping[str, tuple[float, float]] | None,
    random_rate: float,
    dirty_bounds: Mapping[str, tuple[float, float]] | None,
    dirty_window: float,
    seed: int,
    spec: FeatureSpec | None,
    segs: Iterable | None = None,
    max_samples: int | None = None,
    rng_seed: int | None = None,
) -> Quiver:
    """Glitch and clean samples of ``data`` with their feature vectors.

    Parameters
    ----------
    data : ClassifierData
        Source; may be padded beyond ``segs`` so windows near the edges see triggers.
    target_channel, target_bounds
        Glitch samples: target triggers within the bounds.
    random_rate, dirty_bounds, dirty_window, seed
        Clean samples (see :meth:`ClassifierData.random_times`); dirt is measured on
        ``target_channel``.
    spec : FeatureSpec or None
        Feature channels (must not include the target channel), window, columns;
        None: the samples only, with no feature columns (the evaluate stage ranks
        them with :func:`idq_common.science.stride.rank_grid`, which builds the
        features it needs itself).
    segs : segmentlist, optional
        Where samples may lie (e.g. the strides inside a padded umbrella); default
        ``data.segs``. It becomes the quiver's segments and its extent the span.
    max_samples : int, optional
        Cap on the number of samples (a glitch storm must not stall a stage): a
        uniform random subset of that size is kept, drawn with ``rng_seed``.
    rng_seed : int, optional
        Seed of that subset (default ``seed``).

    Raises
    ------
    ValueError
        If the target channel is among the feature channels.
    """
    if spec is not None and target_channel in spec.channels:
        raise ValueError("features never use the target channel")
    use = data.segs if segs is None else (data.segs & segmentlist(segs).coalesce())
    glitch = data.target_times(target_channel, target_bounds, segs=use)
    clean = data.random_times(
        random_rate, target_channel, dirty_bounds, dirty_window, seed, segs=use
    )
    times = np.concatenate([glitch, clean])
    labels = np.concatenate(
        [np.full(glitch.size, GLITCH, dtype=np.int8), np.full(clean.size, CLEAN, dtype=np.int8)]
    )
    order = np.argsort(times, kind="stable")
    times, labels = times[order], labels[order]
    if max_samples is not None and times.size > max_samples:
        rng = np.random.default_rng(seed if rng_seed is None else rng_seed)
        keep = np.sort(rng.choice(times.size, size=max_samples, replace=False))
        times, labels = times[keep], labels[keep]
    if segs is None:
        start, end = data.start, data.end
    else:
        span = segmentlist(segs).coalesce().extent() if len(segmentlist(segs)) else None
        start, end = (float(span[0]), float(span[1])) if span else (data.start, data.start)
    if spec is None:
        return Quiver(times, labels, np.empty((times.size, 0)), (), start, end, use)
    features = feature_matrix(data.triggers(), times, spec)
    return Quiver(times, labels, features, spec.names, start, end, use)
