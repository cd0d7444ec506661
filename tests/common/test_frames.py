"""GWF frames: LIGO directory layout, finding a span's frames, one TimeSeries over a day."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from idq_common.io.frames import find_frames, frame_path, read_span, write_frame

CH = "H1:IDQ-FAP_OVL_10_2048"


def test_frame_path_is_the_ligo_layout_and_idempotent(tmp_path: Path) -> None:
    p = frame_path(tmp_path, "H", "IDQ_TIMESERIES", 1_234_567_890, 1)
    assert p == tmp_path / "H-IDQ_TIMESERIES-12345" / "H-IDQ_TIMESERIES-1234567890-1.gwf"
    # the same stride -> the same path, whatever the float form of its start
    assert frame_path(tmp_path, "H", "IDQ_TIMESERIES", 1_234_567_890.0, 1.0) == p
    with pytest.raises(ValueError):
        frame_path(tmp_path, "H", "IDQ_TIMESERIES", 1_234_567_890.5, 1)


def _write(directory: Path, start: int, duration: int, rate: float) -> None:
    n = round(duration * rate)
    values = start + np.arange(n) / rate  # each sample holds its own GPS time
    path = frame_path(directory, "H", "IDQ_TIMESERIES", start, duration)
    write_frame(path, start, duration, {CH: values}, rate, {"ovl": {"model_id": "m"}})


def test_a_day_of_frames_reads_as_one_timeseries_across_directories(tmp_path: Path) -> None:
    # a day of hour-long frames that crosses a GPS // 100000 directory boundary
    start, hour, rate = 1_000_050_000, 3600, 1.0
    for k in range(24):
        _write(tmp_path, start + k * hour, hour, rate)
    (tmp_path / "H-IDQ_TIMESERIES-10000").joinpath(".H-IDQ_TIMESERIES-1-1.gwf.tmp9").touch()
    dirs = sorted(p.name for p in tmp_path.iterdir())
    assert dirs == ["H-IDQ_TIMESERIES-10000", "H-IDQ_TIMESERIES-10001"]
    assert len(find_frames(tmp_path, "H", "IDQ_TIMESERIES")) == 24
    # a span's frames: the overlapping ones only, in GPS order
    span = find_frames(tmp_path, "H", "IDQ_TIMESERIES", start + 1800, start + 2 * hour + 1)
    assert [p.name for p in span] == [
        f"H-IDQ_TIMESERIES-{start + k * hour}-3600.gwf" for k in range(3)
    ]
    day = read_span(tmp_path, "H", "IDQ_TIMESERIES", [CH], start, start + 24 * hour)[CH]
    assert day.t0.value == start and day.duration.value == 24 * hour
    np.testing.assert_array_equal(day.value, start + np.arange(24 * hour))
    part = read_span(tmp_path, "H", "IDQ_TIMESERIES", [CH], start + 100, start + 200)[CH]
    np.testing.assert_array_equal(part.value, start + 100 + np.arange(100))


def test_a_hole_in_the_span_is_an_error_not_data(tmp_path: Path) -> None:
    for k in (0, 2):
        _write(tmp_path, 1_000_000_000 + k * 16, 16, 4.0)
    with pytest.raises(ValueError):
        read_span(tmp_path, "H", "IDQ_TIMESERIES", [CH], 1_000_000_000, 1_000_000_048)
    with pytest.raises(FileNotFoundError):
        read_span(tmp_path, "H", "IDQ_TIMESERIES", [CH], 2_000_000_000, 2_000_000_016)


def test_read_channels_gives_what_gwpy_reads(tmp_path: Path) -> None:
    from idq_common.io.frames import read_channels, read_frame

    _write(tmp_path, 1_000_000_000, 16, 4.0)
    path = frame_path(tmp_path, "H", "IDQ_TIMESERIES", 1_000_000_000, 16)
    np.testing.assert_array_equal(read_channels(path, [CH])[CH], read_frame(path, [CH])[CH])


@pytest.mark.parametrize("compress", ["auto", "all", "none"])
def test_every_compression_reads_back_bit_identical(tmp_path: Path, compress: str) -> None:
    from idq_common.io.frames import read_channels, read_frame, read_provenance

    rng = np.random.default_rng(3)
    series = {
        CH: rng.random(128),  # continuous: "auto" writes it raw
        "H1:IDQ-OK_OVL_10_2048": np.ones(128),  # constant: "auto" compresses it
        "H1:IDQ-RANK_OVL_10_2048": np.repeat([0.1, np.nan, -0.0, 1e300], 32),
    }
    path = frame_path(tmp_path, "H", "IDQ_TIMESERIES", 1_000_000_000, 1)
    prov = {"ovl": {"model_id": "m", "calibration_id": "c"}}
    write_frame(path, 1_000_000_000, 1, series, 128.0, prov, compress=compress)
    for back in (read_frame(path), read_channels(path, list(series))):
        assert set(back) == set(series)
        for name, values in series.items():  # same bits (NaN, -0.0 included)
            assert back[name].tobytes() == values.tobytes()
    assert read_provenance(path) == prov
    tsd = read_span(tmp_path, "H", "IDQ_TIMESERIES", list(series), 1_000_000_000, 1_000_000_001)
    assert tsd[CH].dt.value == 1 / 128 and tsd[CH].t0.value == 1_000_000_000


def test_auto_compression_keeps_the_saving_of_held_channels(tmp_path: Path) -> None:
    series = {f"H1:IDQ-OK_C{k}_10_2048": np.ones(128) for k in range(6)}
    sizes = {}
    for compress in ("auto", "all", "none"):
        path = tmp_path / f"{compress}.gwf"
        write_frame(path, 1_000_000_000, 1, series, 128.0, {}, compress=compress)
        sizes[compress] = path.stat().st_size
    # constant channels are compressed under "auto" as under "all": far below raw
    assert sizes["auto"] == sizes["all"] < sizes["none"] - 6 * 900
    with pytest.raises(ValueError, match="compress"):
        write_frame(tmp_path / "x.gwf", 1_000_000_000, 1, series, 128.0, {}, compress="zstd")


def _strides(n: int) -> list[dict[str, np.ndarray]]:
    """Strides whose channels change kind between frames: continuous, held, constant,
    back to an earlier content, 0.0 vs -0.0 (equal values, different bits)."""
    rng = np.random.default_rng(7)
    out = []
    for k in range(n):
        held = np.repeat(rng.random(4), 32)
        ok = np.ones(128) if k % 3 else np.zeros(128)
        out.append(
            {
                CH: rng.random(128) if k % 4 else held,  # raw, then compressed, ...
                "H1:IDQ-OK_OVL_10_2048": ok,  # a content seen before: kept compressed
                "H1:IDQ-RANK_OVL_10_2048": np.full(128, -0.0 if k % 2 else 0.0),
                "H1:IDQ-EFF_OVL_10_2048": held if k % 5 else rng.random(128),
            }
        )
    return out


@pytest.mark.parametrize("compress", ["auto", "all", "none"])
def test_a_held_writer_writes_the_bytes_of_a_fresh_build(tmp_path: Path, compress: str) -> None:
    import time

    from idq_common.io.frames import FrameWriter, read_channels, read_provenance

    writer = FrameWriter(compress, keep=2)
    # the file LALFrame writes itself (lalframe.FrameWrite), from fresh channels
    lal_file = FrameWriter(compress, keep=0)
    lal_file.in_memory = False
    assert writer.in_memory, "FrameL backend: frames are built in memory"
    strides = _strides(12)
    for k, series in enumerate(strides):
        start = 1_000_000_000 + k
        prov = {"ovl": {"model_id": f"m{k}", "calibration_id": "c"}}
        paths = {
            kind: frame_path(tmp_path / kind, "H", "IDQ_TIMESERIES", start, 1)
            for kind in ("fresh", "held", "lal")
        }
        for _ in range(5):  # LALFrame stamps the wall-clock second: all in the same one
            second = int(time.time())
            write_frame(paths["fresh"], start, 1, series, 128.0, prov, compress=compress)
            writer.write(paths["held"], start, 1, series, 128.0, prov)
            lal_file.write(paths["lal"], start, 1, series, 128.0, prov)
            if int(time.time()) == second:
                break
        held = paths["held"]
        assert held.read_bytes() == paths["fresh"].read_bytes() == paths["lal"].read_bytes(), k
        back = read_channels(held, list(series))
        assert all(back[c].tobytes() == v.tobytes() for c, v in series.items())
        assert read_provenance(held) == prov
    if compress == "auto":  # contents seen before were not compressed again
        fresh_count = sum(
            np.count_nonzero(v[1:] != v[:-1]) < 32 for s in strides for v in s.values()
        )
        assert 0 < writer.compressions < fresh_count


def test_a_held_writer_remakes_a_directory_removed_under_it(tmp_path: Path) -> None:
    import shutil

    from idq_common.io.frames import FrameWriter, read_channels

    writer = FrameWriter()
    series = _strides(1)[0]
    path = frame_path(tmp_path, "H", "IDQ_TIMESERIES", 1_000_000_000, 1)
    writer.write(path, 1_000_000_000, 1, series, 128.0, {})
    shutil.rmtree(path.parent)  # e.g. retention emptied the directory and removed it
    writer.write(path, 1_000_000_000, 1, series, 128.0, {})
    assert read_channels(path, [CH])[CH].tobytes() == series[CH].tobytes()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left
    writer.in_memory = False  # the same through lalframe.FrameWrite
    shutil.rmtree(path.parent)
    writer.write(path, 1_000_000_000, 1, series, 128.0, {})
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_a_frame_larger_than_the_first_buffer_is_still_written_whole(tmp_path: Path) -> None:
    """The in-memory image's buffer is sized from the channels and samples; a frame that
    does not fit (FrameL then writes nothing past the buffer) is built again in a larger
    one, or written by lalframe.FrameWrite: either way whole."""
    from idq_common.io import frames

    rng = np.random.default_rng(11)
    series = {f"H1:IDQ-X{k}_OVL_10_2048": rng.random(16) for k in range(300)}
    writer = frames.FrameWriter("all")
    first = writer._image  # a first buffer too small for the frame
    writer._image = lambda frame, channels, samples: first(frame, 1, 1)  # type: ignore
    path = frame_path(tmp_path, "H", "IDQ_TIMESERIES", 1_000_000_000, 1)
    writer.write(path, 1_000_000_000, 1, series, 16.0, {})
    assert writer._buffer is not None and len(writer._buffer) == 4 * (512 + 16 + (1 << 16))
    back = frames.read_channels(path, list(series))
    assert all(back[c].tobytes() == v.tobytes() for c, v in series.items())


def test_provenance_from_the_header_bytes_is_lalframes_and_a_cut_file_is_unreadable(
    tmp_path: Path,
) -> None:
    import lal
    import lalframe

    from idq_common.exceptions import FrameError
    from idq_common.io.frames import _header_name, read_provenance

    prov = {"ovl": {"model_id": "m-é", "calibration_id": None}}  # non-ASCII, null
    path = tmp_path / "H-IDQ_TIMESERIES-1000000000-1.gwf"
    write_frame(path, 1_000_000_000, 1, _strides(1)[0], 128.0, prov)
    stream = lalframe.FrameUFrFileOpen(str(path), "r")
    name = lalframe.FrameUFrameHQueryName(lalframe.FrameUFrameHRead(stream, 0))
    assert _header_name(path) == name and read_provenance(path) == prov
    # a gwpy/LAL frame of another writer: its own header name, not iDQ provenance
    other = tmp_path / "other.gwf"
    frame = lalframe.FrameNew(lal.LIGOTimeGPS(1_000_000_000), 1.0, "LIGO", 0, 0, 0)
    lalframe.FrameWrite(frame, str(other))
    assert _header_name(other) == "LIGO"
    with pytest.raises(FrameError, match="not iDQ provenance"):
        read_provenance(other)
    # a cut file (never left by write_frame, which renames whole files) or not a frame
    cut = tmp_path / "cut.gwf"
    cut.write_bytes(path.read_bytes()[:-100])
    text = tmp_path / "text.gwf"
    text.write_text("not a frame")
    for bad in (cut, text):
        assert _header_name(bad) is None
        with pytest.raises(FrameError, match="unreadable"):
            read_provenance(bad)
