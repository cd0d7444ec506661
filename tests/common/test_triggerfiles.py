"""Omicron HDF5 files as the LIGO tools write and read them -> ``read_triggers``.

The layout (pyomicron, hveto, gwsumm): one file per channel and chunk, archived as
``<archive>/<IFO>/<SUBSYS>_<NAME>_OMICRON/<gps5>/<IFO>-<SUBSYS>_<NAME>_OMICRON-<gps>-<dur>.h5``
(pyomicron's ``get_archive_filename``), holding a top-level table ``triggers`` with
float64 columns ``time, frequency, tstart, tend, fstart, fend, snr, q, amplitude,
phase``, which hveto reads with ``EventTable.read(f, format="hdf5", path="triggers",
columns=["time", "frequency", "snr"])``. Files here are written by gwpy itself
(``EventTable.write(format="hdf5", path="triggers")``), so the test checks the layout
the tools exchange, not one of our own making.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from idq_common.exceptions import InvalidMessageError
from idq_common.io.triggerfiles import find_trigger_files, omicron_channel, read_triggers

OMICRON_COLUMNS = (
    "time", "frequency", "tstart", "tend", "fstart", "fend", "snr", "q", "amplitude", "phase",
)  # fmt: skip
START, DUR = 1_300_000_000, 64


def _omicron_table(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    time = np.sort(START + DUR * rng.random(n))
    duration = rng.uniform(0.01, 0.5, n)
    freq = np.exp(rng.uniform(np.log(10.0), np.log(2048.0), n))
    snr = 5.0 * rng.random(n) ** -0.5
    return {
        "time": time,
        "frequency": freq,
        "tstart": time - duration / 2,
        "tend": time + duration / 2,
        "fstart": freq * 0.8,
        "fend": freq * 1.2,
        "snr": snr,
        "q": rng.uniform(3.3166, 150.0, n),
        "amplitude": snr * 1e-22,
        "phase": rng.uniform(-np.pi, np.pi, n),
    }


def _archive_path(archive: Path, channel: str, start: int, duration: int) -> Path:
    """pyomicron's ``get_archive_filename(channel, start, duration, ext="h5")``."""
    ifo, _, name = channel.partition(":")
    description = f"{name.replace('-', '_').replace(':', '_')}_OMICRON"
    filename = f"{ifo}-{description}-{start}-{duration}.h5"
    return archive / ifo / description / str(start)[:5] / filename


def test_pyomicron_file_names_give_the_channel() -> None:
    # the example of pyomicron's get_archive_filename docstring
    assert omicron_channel("H1-GDS_CALIB_STRAIN_OMICRON-1234567890-100.h5") == "H1:GDS-CALIB_STRAIN"
    path = _archive_path(Path("/triggers"), "L1:ASC-AUX_012_OUT_DQ", START, DUR)
    assert str(path) == (
        "/triggers/L1/ASC_AUX_012_OUT_DQ_OMICRON/13000/"
        "L1-ASC_AUX_012_OUT_DQ_OMICRON-1300000000-64.h5"
    )
    assert omicron_channel(path) == "L1:ASC-AUX_012_OUT_DQ"
    with pytest.raises(InvalidMessageError, match="not an Omicron file name"):
        omicron_channel("H1-GDS_CALIB_STRAIN-1234567890-100.h5")


def test_reads_omicron_files_written_by_gwpy(tmp_path: Path) -> None:
    import h5py
    from gwpy.table import EventTable

    archive = tmp_path / "triggers"
    channels = ("H1:ISI-HAM4_BLND_GS13Z_IN1_DQ", "H1:LSC-POP_A_LF_OUT_DQ")
    tables, paths = {}, {}
    for i, channel in enumerate(channels):
        cols = _omicron_table(200 + 50 * i, seed=i)
        path = _archive_path(archive, channel, START, DUR)
        path.parent.mkdir(parents=True)
        table = EventTable([cols[c] for c in OMICRON_COLUMNS], names=OMICRON_COLUMNS)
        table.write(str(path), format="hdf5", path="triggers", serialize_meta=True)
        with h5py.File(path, "a") as h5:  # the analysed segments travel beside the triggers
            h5.create_dataset(
                "segments",
                data=np.array([(START, START + DUR)], dtype=[("start", "<f8"), ("end", "<f8")]),
            )
        tables[channel], paths[channel] = cols, path
    # a chunk outside the span is not even opened
    late = _archive_path(archive, channels[0], START + 10 * DUR, DUR)
    late.parent.mkdir(parents=True, exist_ok=True)
    late.write_text("not hdf5")

    a, b = START + 5.0, START + 60.0
    files = find_trigger_files([archive], a, b)
    assert sorted(f.path for f in files) == sorted(paths.values())
    triggers, extra = read_triggers(files, "omicron", a, b)

    assert set(triggers.channels) == set(channels)
    assert set(extra) == {"q", "phase", "duration"}
    for channel in channels:
        cols = tables[channel]
        keep = (cols["time"] >= a) & (cols["time"] < b)
        t, s, f = triggers.for_channel(channel)
        rows = triggers.channel == triggers.channels.index(channel)
        np.testing.assert_array_equal(t, cols["time"][keep])
        np.testing.assert_array_equal(s, cols["snr"][keep])
        np.testing.assert_array_equal(f, cols["frequency"][keep])
        np.testing.assert_array_equal(extra["q"][rows], cols["q"][keep])
        np.testing.assert_array_equal(extra["phase"][rows], cols["phase"][keep])
        np.testing.assert_array_equal(
            extra["duration"][rows], (cols["tend"] - cols["tstart"])[keep]
        )
        # what hveto reads from the same file (its default Omicron read options)
        hveto = EventTable.read(
            str(paths[channel]),
            format="hdf5",
            path="triggers",
            columns=["time", "frequency", "snr"],
        )
        sel = (np.asarray(hveto["time"]) >= a) & (np.asarray(hveto["time"]) < b)
        np.testing.assert_array_equal(np.asarray(hveto["time"])[sel], t)
        np.testing.assert_array_equal(np.asarray(hveto["snr"])[sel], s)


def test_reads_tables_converted_from_sngl_burst(tmp_path: Path) -> None:
    """LIGO_LW ``sngl_burst`` columns: peak_time + peak_time_ns, peak_frequency."""
    import h5py

    n = 50
    rng = np.random.default_rng(7)
    ns = np.sort(rng.integers(0, 10**9, n))
    rows = np.zeros(
        n,
        dtype=[
            ("peak_time", "<i4"),
            ("peak_time_ns", "<i4"),
            ("peak_frequency", "<f4"),
            ("snr", "<f4"),
            ("duration", "<f4"),
        ],
    )
    rows["peak_time"] = START + 3
    rows["peak_time_ns"] = ns
    rows["peak_frequency"] = rng.uniform(10, 2048, n)
    rows["snr"] = rng.uniform(5, 50, n)
    rows["duration"] = rng.uniform(0.01, 1, n)
    path = tmp_path / "L1-PEM_EY_MAG_OMICRON-1300000000-64.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("triggers", data=rows)
    triggers, extra = read_triggers([path], "omicron", START, START + DUR)
    assert triggers.channels == ("L1:PEM-EY_MAG",)
    np.testing.assert_array_equal(triggers.time, (START + 3) + 1e-9 * ns.astype(np.float64))
    np.testing.assert_array_equal(triggers.frequency, rows["peak_frequency"].astype(np.float64))
    assert set(extra) == {"duration"}
