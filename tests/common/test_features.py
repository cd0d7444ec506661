"""feature_matrix against a naive per-sample reference; grids; chunking invariance."""

from __future__ import annotations

import time

import numpy as np
import pytest

from idq_common.data.synthetic import SyntheticModel
from idq_common.data.triggers import TriggerSet
from idq_common.science.features import FeatureSpec, feature_matrix, grid_times


def naive(trig: TriggerSet, times: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """Obvious per-sample loop: loudest in [t-w, t+w], earliest then lowest freq on ties."""
    out = []
    for t in times:
        row = []
        for ch in spec.channels:
            tt, ss, ff = trig.for_channel(ch)
            inside = [i for i in range(tt.size) if t - spec.window <= tt[i] <= t + spec.window]
            if inside:
                i = min(inside, key=lambda i: (-ss[i], tt[i], ff[i]))
                vals = {"snr": ss[i], "frequency": ff[i], "dt": tt[i] - t}
            else:
                vals = {"snr": 0.0, "frequency": 0.0, "dt": spec.window}
            row.extend(vals[c] for c in spec.columns)
        out.append(row)
    return np.array(out).reshape(len(times), spec.width)


@pytest.mark.parametrize("case", range(12))
def test_matches_naive_reference(case):
    rng = np.random.default_rng(case)
    names = ("A", "B", "C", "D")
    n = int(rng.integers(0, 300))
    # Coarse times and snrs (multiples of 1/8, few values) force ties and edge hits.
    t = rng.integers(0, 160, n) / 8.0
    s = rng.integers(6, 10, n).astype(float)
    f = rng.integers(1, 4, n).astype(float)
    ch = rng.integers(0, 3, n)  # channel D never fires
    trig = TriggerSet(names, ch, t, s, f)
    times = np.concatenate([rng.integers(-8, 170, 40) / 8.0, rng.uniform(-1, 21, 40)])
    cols = ("snr", "frequency", "dt") if case % 2 else ("dt", "snr")
    spec = FeatureSpec(names, float(rng.choice([0.125, 0.5, 1.0, 3.0])), cols)
    np.testing.assert_array_equal(feature_matrix(trig, times, spec), naive(trig, times, spec))


def test_defaults_names_and_column_order():
    trig = TriggerSet.from_channels({"A": ([10.0], [7.0], [100.0])})
    spec = FeatureSpec(("A", "B"), 0.5)
    m = feature_matrix(trig, np.array([10.2, 20.0]), spec)
    assert spec.names == ("A.snr", "A.frequency", "A.dt", "B.snr", "B.frequency", "B.dt")
    np.testing.assert_allclose(m[0], [7.0, 100.0, -0.2, 0.0, 0.0, 0.5])
    np.testing.assert_allclose(m[1], [0.0, 0.0, 0.5, 0.0, 0.0, 0.5])
    assert spec.column_index("B", "dt") == 5
    assert feature_matrix(trig, np.zeros(0), spec).shape == (0, 6)
    with pytest.raises(ValueError):
        FeatureSpec(("A",), 0.5, ("q",))
    with pytest.raises(ValueError):
        FeatureSpec(("A",), 0.0)


def test_bit_identical_however_triggers_are_chunked():
    model = SyntheticModel(seed=4, n_witness=4, n_noise=8, noise_background_rate=8.0)
    t0 = 1_400_000_000.0
    whole = model.generate(t0, t0 + 64)
    pieces = [
        model.generate(a, b) for a, b in ((t0 + 40.3, t0 + 64), (t0, t0 + 17), (t0 + 17, t0 + 40.3))
    ]
    glued = TriggerSet.concat(pieces)
    spec = FeatureSpec(model.aux_channels, 1.0)
    times = grid_times(t0, t0 + 64, 128)
    np.testing.assert_array_equal(
        feature_matrix(whole, times, spec), feature_matrix(glued, times, spec)
    )
    # Unsorted sample times give the same rows in the given order.
    perm = np.random.default_rng(0).permutation(times.size)
    np.testing.assert_array_equal(
        feature_matrix(whole, times[perm], spec), feature_matrix(whole, times, spec)[perm]
    )


def test_grid_times_exact():
    g = grid_times(1_400_000_000, 1_400_000_016, 128)
    assert g.size == 2048 and g[1] - g[0] == 1 / 128
    np.testing.assert_array_equal(
        g,
        np.concatenate(
            [
                grid_times(1_400_000_000, 1_400_000_005, 128),
                grid_times(1_400_000_005, 1_400_000_016, 128),
            ]
        ),
    )
    assert grid_times(0.0, 1.0, 3).size == 3
    assert grid_times(0.0, 1.0000001, 3).size == 4
    assert grid_times(5.0, 5.0, 128).size == 0


def test_speed_1000_channels_faster_than_real_time():
    # 1,000 channels at 1 Hz each, 128 Hz grid over 16 s: must be far below 16 s.
    model = SyntheticModel(seed=1, n_witness=10, n_noise=990, noise_background_rate=1.0)
    t0 = 1_400_000_000.0
    trig = model.generate(t0, t0 + 16)
    spec = FeatureSpec(model.aux_channels, 0.5)
    times = grid_times(t0, t0 + 16, 128)
    feature_matrix(trig, times[:10], spec)  # warm the per-channel cache
    tic = time.perf_counter()
    m = feature_matrix(trig, times, spec)
    took = time.perf_counter() - tic
    assert m.shape == (2048, 3000)
    assert took < 4.0, f"{times.size / took:.0f} grid samples/s"


@pytest.mark.parametrize("chunk_cells", [1, 7, 64, 1 << 17])
def test_any_chunking_of_sample_times_matches_naive(monkeypatch, chunk_cells):
    # Unsorted triggers with ties, a spec that skips a channel of the set and names one
    # the set lacks, unsorted sample times with duplicates: every chunk size agrees.
    import idq_common.science.features as features

    rng = np.random.default_rng(7)
    n = 400
    trig = TriggerSet(
        ("A", "B", "C"),
        rng.integers(0, 3, n),
        rng.integers(0, 200, n) / 8.0,
        rng.integers(6, 9, n).astype(float),
        rng.integers(1, 4, n).astype(float),
    )
    times = np.concatenate([rng.integers(-8, 210, 60) / 8.0, rng.uniform(-1, 26, 30)])
    times = np.concatenate([times, times[:10]])
    spec = FeatureSpec(("C", "Z", "A"), 0.375, ("frequency", "dt", "snr"))
    monkeypatch.setattr(features, "_CHUNK_CELLS", chunk_cells)
    np.testing.assert_array_equal(feature_matrix(trig, times, spec), naive(trig, times, spec))
