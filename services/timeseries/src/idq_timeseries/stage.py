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
from urllib.parse import quote

import numpy as np
from igwn_segments import segment, segmentlist

from idq_common.config import Settings
from idq_common.contracts import PRODUCTS, channel_name
from idq_common.exceptions import FrameError
from idq_common.io.avro.convert import timeseries_to_record
from idq_common.io.frames import FrameWriter, frame_path, read_provenance
from idq_common.science.stride import MAX_CELLS, Stride, StrideProducts, stride_products
from idq_common.stage.factory import closed_on_error, streaming_parts
from idq_common.stage.loop import StageParts, StreamingStage, loading_kernels
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
        self.writer = FrameWriter()
        # per classifier: (product, frame channel name), the same every stride
        self._channels = {
            name: [
                (product, channel_name(self.ifo, product, name, self.fmin, self.fmax))
                for product in PRODUCTS
            ]
            for name in self.names
        }
        self._dir_uris: dict[Path, str] = {}

    @classmethod
    def from_settings(cls, settings: Settings, ns: argparse.Namespace) -> Self:
        """The stage as the settings and command line describe it (Kafka, store, clock).

        The feature kernels load in the background meanwhile (as evaluate's), and
        scipy.special (the products' posterior, imported on the first stride).
        """
        with loading_kernels(("scipy.special",)) as preload:
            parts = streaming_parts(cls.stage, settings, ns, shared=cls.shared)
            with closed_on_error(parts.runtime):
                book = ModelBook.from_settings(settings, parts.runtime, calibrations=True)
                stage = cls(settings, parts, book)
        stage._preload = preload
        return stage

    def ready(self) -> bool:
        return all(self.book.pair(n) is not None for n in self.names)

    def process(self, batch: StreamBatch) -> None:
        self.book.refresh()
        pairs = {name: self.book.pair(name) for name in self.names}
        todo: list[Stride] = []
        for gap in batch.gaps:
            # skipped spans lie outside the polled strides: write their frames as OK = 0
            for start in np.arange(gap.start, gap.end, self.stream.stride):
                if self.owns(start) and not any(s <= start < e for s, e in batch.strides):
                    end = float(min(start + self.stream.stride, gap.end))
                    todo.append(Stride(float(start), end, segmentlist()))
        for start, end in batch.strides:
            if self.owns(start):  # else another replica's stride
                todo.append(Stride(start, end, batch.segs & segmentlist([segment(start, end)])))
        # consecutive strides with the same models go through one computation (one rank
        # call per classifier for many strides); a group's sample count is bounded so
        # its memory is too
        per_group = max(self.rate * self.stream.stride, MAX_CELLS // self._widest(pairs))
        group: list[tuple[Stride, Path, dict[str, Pair | None]]] = []
        for stride in todo:
            path, used = self._target(stride, pairs)
            if group and (
                _ids(used) != _ids(group[0][2])
                or (stride.end - group[0][0].start) * self.rate > per_group
            ):
                self._compute(batch, group)
                group = []
            group.append((stride, path, used))
        if group:
            self._compute(batch, group)

    def _widest(self, pairs: dict[str, Pair | None]) -> int:
        widths = [
            len(p.classifier.feature_spec.channels) * len(p.classifier.feature_spec.columns)
            for p in pairs.values()
            if p is not None
        ]
        return max([1, *widths])

    def _target(
        self, stride: Stride, pairs: dict[str, Pair | None]
    ) -> tuple[Path, dict[str, Pair | None]]:
        """The frame of a stride and the models to compute it with."""
        start, end = stride.start, stride.end
        obs = self.settings.general.observatory
        path = frame_path(self.output_dir, obs, self.description, start, end - start)
        if path.exists():
            # a stride done before a restart: redo it with the model and calibration it
            # used then, so the frame and messages come out the same
            return path, self._pairs_of(path)
        return path, pairs

    def _compute(
        self, batch: StreamBatch, group: list[tuple[Stride, Path, dict[str, Pair | None]]]
    ) -> None:
        strides = [g[0] for g in group]
        triggers = None
        if any(abs(s.valid) for s in strides):
            triggers = self.stride_data(batch, strides[0].start, strides[-1].end).triggers()
        results = stride_products(triggers, strides, self.rate, group[0][2])
        for (_, path, used), result in zip(group, results, strict=True):
            self._emit(result, path, used)

    def _emit(self, result: StrideProducts, path: Path, pairs: dict[str, Pair | None]) -> None:
        start, end = result.start, result.end
        series: dict[str, np.ndarray] = {}
        provenance: dict[str, dict[str, str | None]] = {}
        records = []
        metrics = self.runtime.metrics
        for name in self.names:
            pair = pairs.get(name)
            products = result.products[name]
            for product, channel in self._channels[name]:
                series[channel] = products[product]
            ids = {
                "model_id": pair.model_id if pair else None,
                "calibration_id": pair.calibration_id if pair else None,
            }
            provenance[name] = ids
            ok_fraction = float(products["OK"].mean())
            records.append((name, products, ids, ok_fraction))
            metrics.stride_products(
                name, ok_fraction, float(products["PGLITCH"].max()), float(products["FAP"].min())
            )
        path = self.writer.write(path, start, end - start, series, self.rate, provenance)
        self.frames_written += 1
        metrics.frame_written()
        uri = self._uri(path)
        for name, products, ids, _ in records:
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
        # a line per stride live; a replay writes hundreds a second and has its progress
        # line (strides done, rate, ETA every 30 s) instead: its strides log at DEBUG
        level = logging.DEBUG if self.replay else logging.INFO
        if log.isEnabledFor(level):
            oks = ", ".join(f"{n}={ok:.2f}" for n, _, _, ok in records)
            log.log(
                level, "timeseries: stride [%.0f, %.0f) -> %s (OK %s)", start, end, path.name, oks
            )

    def _uri(self, path: Path) -> str:
        """``path.resolve().as_uri()``, resolving each frame directory once, not each frame."""
        prefix = self._dir_uris.get(path.parent)
        if prefix is None:
            prefix = self._dir_uris[path.parent] = path.parent.resolve().as_uri()
        return f"{prefix}/{quote(path.name)}"

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


def _ids(pairs: dict[str, Pair | None]) -> tuple[tuple[str, str | None, bool], ...]:
    """What makes two strides' models the same: ids and health per classifier."""
    return tuple(
        (n, p.calibration_id if p else None, p.healthy if p else False)
        for n, p in sorted(pairs.items())
    )
