"""``idq ingest files``: Omicron or SNAX HDF5 trigger files over a GPS range -> features.

Finds the HDF5 files under the given paths whose names overlap ``[--gps-start,
--gps-end)``, reads them chunk by chunk (``--chunk`` seconds at a time, so a year of
files needs no year of memory), checks the channel names against ``[ingest]
channel_pattern`` and publishes the triggers as ``feature_batch`` messages of
``--batch-seconds`` with the same publisher, keys, timestamps and partitioning as
``idq produce`` and ``idq-ingest``. A progress line (batches done, rate, ETA) goes to
stderr every ``--progress-every`` seconds.
"""

from __future__ import annotations

import argparse
import math
import sys

NAME = "ingest"
HELP = "publish trigger files (Omicron or SNAX HDF5) over a GPS range as features"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(NAME, help=HELP, description=HELP)
    sub = p.add_subparsers(dest="ingest_command", metavar="ACTION", required=True)
    f = sub.add_parser("files", help=HELP, description=__doc__)
    f.add_argument("-c", "--config", required=True, help="TOML configuration (ifo, kafka)")
    f.add_argument("--format", required=True, choices=("omicron", "snax"), help="file layout")
    f.add_argument("--gps-start", type=float, required=True, help="first GPS time")
    f.add_argument("--gps-end", type=float, required=True, help="end of the span")
    f.add_argument("paths", nargs="+", help="files or directories (searched recursively)")
    f.add_argument("--batch-seconds", type=float, default=1.0, help="span of one message")
    f.add_argument("--chunk", type=float, default=3600.0, help="seconds read at a time")
    f.add_argument("--source-id", default="files", help="producer id (message key)")
    f.add_argument(
        "--progress-every", type=float, default=10.0, help="seconds between progress lines"
    )
    return p


def run(ns: argparse.Namespace) -> int:
    import logging

    import numpy as np
    from confluent_kafka import Producer

    from idq_common.config import load_settings_or_exit
    from idq_common.io.publish import FeaturePublisher, partitioning
    from idq_common.io.snax import IngestRejected, JsonFormat
    from idq_common.io.triggerfiles import find_trigger_files, read_triggers
    from idq_common.progress import Progress

    log = logging.getLogger(__name__)
    if not ns.gps_end > ns.gps_start:
        print("idq ingest files: --gps-end must be after --gps-start", file=sys.stderr)
        return 2
    if not ns.batch_seconds > 0 or not ns.chunk >= ns.batch_seconds:
        print("idq ingest files: need 0 < --batch-seconds <= --chunk", file=sys.stderr)
        return 2
    settings = load_settings_or_exit(ns.config)
    ingest = settings.ingest
    assert ingest is not None
    names = JsonFormat(
        ifo=settings.general.ifo,
        target_channel=settings.samples.target_channel,
        channel_pattern=ingest.channel_pattern,
    )
    files = find_trigger_files(ns.paths, ns.gps_start, ns.gps_end)
    if not files:
        print(f"idq ingest files: no HDF5 files in {ns.paths} for the span", file=sys.stderr)
        return 1
    k = settings.kafka
    try:
        publisher = FeaturePublisher(
            Producer(k.producer_config()),
            k.topics.features,
            settings.general.ifo,
            ns.source_id,
            batch_seconds=ns.batch_seconds,
            **partitioning(k),
        )
    except ValueError as exc:  # e.g. batches that would straddle a block
        print(f"idq ingest files: {exc}", file=sys.stderr)
        return 2
    total = math.ceil((ns.gps_end - ns.gps_start) / ns.batch_seconds - 1e-9)
    progress = Progress("ingest files", total, unit="batches", every=ns.progress_every)
    log.info("%d %s files for [%.0f, %.0f)", len(files), ns.format, ns.gps_start, ns.gps_end)
    dropped = 0
    # chunk edges on the batch grid, so batches never straddle two chunks
    per_chunk = max(1, int(ns.chunk // ns.batch_seconds))
    spans = publisher.batch_spans(ns.gps_start, ns.gps_end)
    for c in range(0, len(spans), per_chunk):
        group = spans[c : c + per_chunk]
        cs, ce = group[0][0], group[-1][1]
        ts, extra = read_triggers([f for f in files if f.overlaps(cs, ce)], ns.format, cs, ce)
        try:
            renamed = tuple(names.channel(ch) for ch in ts.channels)
        except IngestRejected as exc:
            print(f"idq ingest files: {exc.reason} ([ingest] channel_pattern)", file=sys.stderr)
            return 1
        if len(set(renamed)) != len(renamed):
            print(f"idq ingest files: channels collide once renamed: {renamed}", file=sys.stderr)
            return 1
        good = np.isfinite(ts.time) & np.isfinite(ts.snr) & np.isfinite(ts.frequency)
        good &= (ts.snr >= 0) & (ts.frequency >= 0)
        for col in extra.values():
            good &= np.isfinite(col)
        dropped += int((~good).sum())
        ts = type(ts)(renamed, ts.channel[good], ts.time[good], ts.snr[good], ts.frequency[good])
        extra = {name: col[good] for name, col in extra.items()}
        edges = np.searchsorted(ts.time, [s for s, _ in group] + [ce])
        for (bs, be), lo, hi in zip(group, edges[:-1], edges[1:], strict=True):
            part = ts.take(np.arange(lo, hi))
            publisher.publish_batch(
                part, bs, be, extra={name: col[lo:hi] for name, col in extra.items()}
            )
            progress.advance()
        publisher.flush()
    progress.finish()
    if dropped:
        log.warning("dropped %d rows with non-finite or negative values", dropped)
    log.info("published %d batches to %s", publisher.sent, k.topics.features)
    return 0
