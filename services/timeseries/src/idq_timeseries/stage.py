"""The timeseries stage loop.

For every stride: the products of DOMAIN.md (PGLITCH, LOGLIKE, FAP, EFF, RANK, OK)
for each configured classifier on a ``sample_rate`` grid, one GWF frame exactly one
stride long, and one ``timeseries_stride`` message per classifier. OK is 0 outside
segments, in gaps (missing data, skipped spans), and where the classifier has no
model, no calibration, or an unhealthy one. Frames record the model and calibration
ids they used. A skipped span (the stage fell too far behind) still gets its frames,
all OK = 0, so downstream sees the gap instead of a hole.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Self

import numpy as np
from igwn_segments import segment, segmentlist

from idq_common.config import Settings
from idq_common.contracts import PRODUCTS, channel_name
from idq_common.data.triggers import in_segments
from idq_common.exceptions import FrameError
from idq_common.io.avro.convert import timeseries_to_record
from idq_common.io.frames import frame_path, read_provenance, write_frame
from idq_common.science.features import FeatureSpec, feature_matrix, grid_times
from idq_common.science.products import compute_products, invalid_products
from idq_common.stage.factory import closed_on_error, streaming_parts
from idq_common.stage.loop import StageParts, StreamingStage
from idq_common.stage.models import ModelBook, Pair
from idq_common.streaming.processor import StreamBatch

log = logging.getLogger(__name__)


class TimeseriesStage(StreamingStage):
    """The timeseries service: features in, frames and timeseries messages out."""

    stage = "timeseries"
    shared = True

    def __init__(self, settings: Settings, parts: StageParts, book: ModelBook) -> None:
        super().__init__(settings, parts)
        ts = settings.timeseries
        self.rate = ts.sample_rate
        self.output_dir = Path(ts.output_dir)
        self.description = ts.description
        self.fmin, self.fmax = ts.fmin, ts.fmax
        self.names = [c.nickname for c in settings.classifiers]
        self.book = book
        self.book.refresh(timeout=2.0)
        self.frames_written = 0

    @classmethod
    def from_settings(cls, settings: Settings, ns: argparse.Namespace) -> Self:
        """The stage as the settings and command line describe it (Kafka, store, clock)."""
        parts = streaming_parts(cls.stage, settings, ns, shared=cls.shared)
        with closed_on_error(parts.runtime):
            book = ModelBook.from_settings(settings, parts.runtime, calibrations=True)
            return cls(settings, parts, book)

    def ready(self) -> bool:
        return all(self.book.pair(n) is not None for n in self.names)

    def process(self, batch: StreamBatch) -> None:
        self.book.refresh()
        pairs = {name: self.book.pair(name) for name in self.names}
        for gap in batch.gaps:
            # skipped spans lie outside the polled strides: write their frames as OK = 0
            for start in np.arange(gap.start, gap.end, self.stream.stride):
                if self.owns(start) and not any(s <= start < e for s, e in batch.strides):
                    self._emit(
                        float(start),
                        float(min(start + self.stream.stride, gap.end)),
                        None,
                        segmentlist(),
                        pairs,
                    )
        if not batch.strides:
            return
        for start, end in batch.strides:
            if not self.owns(start):
                continue  # another replica's stride
            valid = batch.segs & segmentlist([segment(start, end)])
            self._emit(start, end, self.stride_data(batch, start, end).triggers(), valid, pairs)

    def _emit(
        self, start: float, end: float, triggers, valid: segmentlist, pairs: dict[str, Pair | None]
    ) -> None:
        obs = self.settings.general.observatory
        path = frame_path(self.output_dir, obs, self.description, start, end - start)
        fname = path.name
        if path.exists():
            # a stride done before a restart: redo it with the model and calibration it
            # used then, so the frame and messages come out the same
            pairs = self._pairs_of(path)
        times = grid_times(start, end, self.rate)
        inside = in_segments(times, valid)
        features: dict[object, np.ndarray] = {}
        series: dict[str, np.ndarray] = {}
        provenance: dict[str, dict[str, str | None]] = {}
        records = []
        for name in self.names:
            pair = pairs.get(name)
            if triggers is None or pair is None or not pair.healthy or not inside.any():
                products = invalid_products(times.size)
            else:
                spec = pair.classifier.feature_spec
                key = (spec.channels, spec.window, spec.columns)
                if key not in features:
                    fspec = FeatureSpec(spec.channels, spec.window, spec.columns)
                    features[key] = feature_matrix(triggers, times, fspec)
                rank = np.full(times.size, np.nan)
                rank[inside] = pair.classifier.rank(features[key][inside])
                products = compute_products(rank, inside, pair.calibration)
            for product in PRODUCTS:
                series[channel_name(self.ifo, product, name, self.fmin, self.fmax)] = products[
                    product
                ]
            ids = {
                "model_id": pair.model_id if pair else None,
                "calibration_id": pair.calibration_id if pair else None,
            }
            provenance[name] = ids
            records.append((name, products, ids))
            ok_fraction = float(products["OK"].mean())
            self.runtime.metrics.stride_products(
                name, ok_fraction, float(products["PGLITCH"].max()), float(products["FAP"].min())
            )
        path = write_frame(path, start, end - start, series, self.rate, provenance)
        self.frames_written += 1
        self.runtime.metrics.frame_written()
        uri = path.resolve().as_uri()
        for name, products, ids in records:
            record = timeseries_to_record(
                ifo=self.ifo,
                classifier=name,
                start=start,
                end=end,
                sample_rate=float(self.rate),
                columns={k.lower(): v for k, v in products.items()},
                model_id=ids["model_id"],
                calibration_id=ids["calibration_id"],
                frame_uri=uri,
            )
            self.runtime.produce(
                self.topics.timeseries,
                "timeseries_stride",
                record,
                key=f"{name}:{start:.0f}",
                timestamp_ms=self.kafka_ms(start),
            )
        oks = ", ".join(f"{n}={float(p['OK'].mean()):.2f}" for n, p, _ in records)
        log.info("timeseries: stride [%.0f, %.0f) -> %s (OK %s)", start, end, fname, oks)

    def _pairs_of(self, path: Path) -> dict[str, Pair | None]:
        try:
            prov = read_provenance(path)
        except FrameError as exc:
            log.warning("timeseries: %s exists but is unreadable (%s): rewriting it", path, exc)
            return {n: self.book.pair(n) for n in self.names}
        log.info("timeseries: redoing %s with the ids it recorded", path.name)
        return {
            n: self.book.pair_for_ids(n, prov.get(n, {}).get("calibration_id")) for n in self.names
        }
