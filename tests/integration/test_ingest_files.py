"""HDF5 round trip: Omicron / SNAX files -> ``idq ingest files`` -> features topic -> the same triggers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from idq_common.cli.main import main
from idq_common.data.synthetic import SyntheticModel
from idq_common.gpstime import gps_to_kafka_ms
from idq_common.io.avro.convert import batch_extra, batch_to_triggers
from idq_common.io.triggerfiles import omicron_channel
from idq_dev.testing.pipeline import pipeline_config
from idq_dev.testing.topics import read_topic
from idq_dev.testing.trigger_files import expected, omicron_name, write_omicron, write_snax

pytestmark = [pytest.mark.kafka]

START = 1_300_000_000
SPAN = (START + 10, START + 150)  # inside the files, not on their edges


def test_omicron_file_names() -> None:
    name = omicron_name("L1:ASC-AUX_012_OUT_DQ", 1400000000, 64)
    assert name == "L1-ASC_AUX_012_OUT_DQ_OMICRON-1400000000-64.h5"
    assert omicron_channel(name) == "L1:ASC-AUX_012_OUT_DQ"


@pytest.mark.parametrize("fmt", ["omicron", "snax"])
def test_hdf5_round_trip(
    fmt: str, kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, settings = pipeline_config(tmp_path, kafka_bootstrap, f"files{fmt}")
    model = SyntheticModel(
        seed=4, ifo="H1", target_channel=settings.samples.target_channel, n_witness=3,
        n_noise=4, glitch_rate=1.0,
    )  # fmt: skip
    write = write_omicron if fmt == "omicron" else write_snax
    write(model, tmp_path / "triggers", START, START + 192, file_seconds=64)
    # a file outside the span must not be opened (its name says so): make it unreadable
    (tmp_path / "triggers" / "H-SNAX_FEATURES-1200000000-64.h5").write_text("not hdf5")
    args = ["ingest", "files", "-c", str(config), "--format", fmt, "--chunk", "50"]
    args += ["--gps-start", str(SPAN[0]), "--gps-end", str(SPAN[1]), "--progress-every", "0"]
    assert main([*args, str(tmp_path / "triggers")]) == 0
    err = capsys.readouterr().err
    assert "ingest files: 140 batches in" in err and "ETA" in err  # the progress line

    batches = [
        (m.record, m.timestamp_ms)
        for m in read_topic(settings.kafka, settings.kafka.topics.features)
    ]
    assert sorted(r["seq"] for r, _ in batches) == list(range(140))
    assert all(ts == gps_to_kafka_ms(r["start"]) for r, ts in batches)
    names, cols = [], {c: [] for c in ("time", "snr", "frequency", "q", "phase", "duration")}
    for record, _ in batches:
        ts = batch_to_triggers(record)
        extra = batch_extra(record)
        names.extend(np.asarray(ts.channels, dtype=object)[ts.channel].tolist())
        for c, v in (
            ("time", ts.time),
            ("snr", ts.snr),
            ("frequency", ts.frequency),
            *extra.items(),
        ):
            cols[c].append(np.asarray(v))
    got = {c: np.concatenate(v) for c, v in cols.items()}
    order = np.lexsort((np.asarray(names), got["time"]))
    want = expected(model, START, START + 192, file_seconds=64, fmt=fmt)
    keep = (want["time"] >= SPAN[0]) & (want["time"] < SPAN[1])
    want_names = np.asarray(model.channels, dtype=object)[want["channel"][keep].astype(int)]
    want_order = np.lexsort((want_names.astype(str), want["time"][keep]))
    assert len(order) == int(keep.sum()) > 100
    assert np.asarray(names, dtype=object)[order].tolist() == want_names[want_order].tolist()
    for c in cols:  # identical, bit for bit
        np.testing.assert_array_equal(got[c][order], want[c][keep][want_order])
