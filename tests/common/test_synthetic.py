"""SyntheticModel: determinism, chunk invariance, truth, and the optimal ratio."""

from __future__ import annotations

import numpy as np
import pytest

from idq_common.data.synthetic import SyntheticModel
from idq_common.data.triggers import TriggerSet
from idq_common.science.features import FeatureSpec, feature_matrix
from idq_common.science.merit import efficiency_at_fap
from idq_dev.testing.synthetic import small_model

T0 = 1_400_000_000.0


def _same(a: TriggerSet, b: TriggerSet) -> None:
    assert a.channels == b.channels
    for k in ("channel", "time", "snr", "frequency"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))


@pytest.mark.parametrize("cut", [T0 + 16, T0 + 37.25, T0 + 100.0001])
def test_generate_chunk_invariant(cut):
    m = small_model()
    _same(
        m.generate(T0, T0 + 160),
        TriggerSet.concat([m.generate(T0, cut), m.generate(cut, T0 + 160)]),
    )


def test_generate_deterministic_and_seeded():
    a = small_model(seed=5).generate(T0, T0 + 64)
    b = small_model(seed=5).generate(T0, T0 + 64)
    _same(a, b)
    c = small_model(seed=6).generate(T0, T0 + 64)
    assert not np.array_equal(a.time, c.time)


def test_names_rates_and_threshold():
    m = SyntheticModel(seed=1, n_witness=3, n_noise=5, band_suffix=True, noise_background_rate=2.0)
    assert m.witness_channels[0] == "H1:AUX-WIT_000_10_2048"
    assert m.noise_channels[4] == "H1:AUX-NOISE_0004_10_2048"
    trig = m.generate(T0, T0 + 512)
    counts = trig.counts()
    n = counts[m.noise_channels[0]]
    assert 2.0 * 512 * 0.8 < n < 2.0 * 512 * 1.2
    assert trig.snr.min() >= m.snr_threshold
    assert trig.frequency.min() >= 10 and trig.frequency.max() <= 2048
    truth = m.truth(T0, T0 + 512)
    assert counts[m.target_channel] == truth.time.size
    np.testing.assert_array_equal(np.sort(truth.time), trig.for_channel(m.target_channel)[0])


def test_witness_fire_probability_matches_model():
    m = small_model(glitch_rate=0.5, witness_background_rate=0.01)
    trig = m.generate(T0, T0 + 2000)
    truth = m.truth(T0, T0 + 2000)
    loud = truth.time[truth.snr >= 30]  # loud: the witness snr is far above threshold
    spec = FeatureSpec(m.witness_channels, 0.15)
    seen = feature_matrix(trig, loud, spec)[:, 0::3] > 0
    frac = seen.mean(axis=0)
    np.testing.assert_allclose(frac, m.probabilities, atol=0.12)


def test_scales_to_many_channels():
    m = SyntheticModel(seed=2, n_witness=10, n_noise=990, noise_background_rate=16.0)
    trig = m.generate(T0, T0 + 16)
    assert 0.9 * 16 * 16 * 990 < len(trig) < 1.1 * 16 * 16 * 1000


def test_optimal_ratio_separates_glitches_from_clean():
    m = small_model(seed=11, glitch_rate=0.2)
    start, end = T0, T0 + 3000
    trig = m.generate(start - 2, end + 2)
    truth = m.truth(start, end)
    glitch = truth.time[truth.snr >= 10]
    rng = np.random.default_rng(0)
    clean = np.sort(rng.uniform(start, end, 4000))
    clean = clean[np.abs(clean[:, None] - m.truth(start - 2, end + 2).time).min(1) > 0.5]
    spec = FeatureSpec(m.aux_channels, 0.25)
    lg = m.optimal_log_likelihood_ratio(feature_matrix(trig, glitch, spec), spec)
    lc = m.optimal_log_likelihood_ratio(feature_matrix(trig, clean, spec), spec)
    assert np.median(lg) > 2 > 0 > np.median(lc)
    eff = efficiency_at_fap(lg, lc, (1e-2, 1e-1))
    # At least the strong witness (p=0.9) is caught; never above 1.
    assert eff[0] > 0.6 and eff[1] >= eff[0] and eff[1] <= 1
    # The optimum does at least as well as simple rules on the same features.
    fg, fc = feature_matrix(trig, glitch, spec), feature_matrix(trig, clean, spec)
    for rule in (lambda f: f[:, 0], lambda f: f[:, 0 : 3 * m.n_witness : 3].sum(axis=1)):
        simple = efficiency_at_fap(rule(fg), rule(fc), (1e-2, 1e-1))
        assert np.all(eff >= simple - 0.02)
    # Noise channels carry no information: dropping them changes nothing.
    wit = FeatureSpec(m.witness_channels, 0.25)
    np.testing.assert_allclose(
        m.optimal_log_likelihood_ratio(feature_matrix(trig, glitch, wit), wit), lg
    )
