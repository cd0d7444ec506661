"""OVL: vectorised counts against brute force, iterative removal, ranks, storage."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from idq_common.exceptions import ClassifierError, ClassifierParamError
from idq_common.science.classifiers import make_classifier
from idq_common.science.classifiers.ovl import OVL
from idq_common.science.features import FeatureSpec

THR = [6.5, 8, 10, 15, 20, 30, 50, 100, 1000]
WIN = [0.1, 0.05, 0.025]


def _matrix(seed: int, n_g: int = 400, n_c: int = 4000, n_ch: int = 6, w: float = 0.1):
    """Channel 0 witnesses 60% of glitches (loud, coincident), channel 1 30%; rest noise."""
    rng = np.random.default_rng(seed)
    n = n_g + n_c
    S = np.zeros((n, n_ch))
    D = np.full((n, n_ch), w)
    bg = rng.random((n, n_ch)) < 0.1
    S[bg] = 5.5 * rng.random(bg.sum()) ** (-1 / 3)
    D[bg] = rng.uniform(-w, w, bg.sum())
    for ch, p in ((0, 0.6), (1, 0.3)):
        hit = np.zeros(n, dtype=bool)
        hit[:n_g] = rng.random(n_g) < p
        S[hit, ch] = 12 * rng.random(hit.sum()) ** (-1 / 2)
        D[hit, ch] = rng.normal(0, 0.01, hit.sum()).clip(-w, w)
    F = np.where(S > 0, 100.0, 0.0)
    X = np.stack([S, F, D], axis=2).reshape(n, -1)
    y = np.r_[np.ones(n_g), np.zeros(n_c)].astype(np.int8)
    spec = FeatureSpec(tuple(f"H1:AUX-{i}" for i in range(n_ch)), w)
    q = SimpleNamespace(features=X, labels=y, start=0.0, end=n / 5.0, segs=None)
    return q, spec


def _ovl(spec: FeatureSpec, **params) -> OVL:
    clf = make_classifier("ovl", "ovl", {"thresholds": THR, "windows": WIN, **params}, spec)
    assert isinstance(clf, OVL)
    return clf


def test_first_veto_is_brute_force_best() -> None:
    q, spec = _matrix(0)
    clf = _ovl(spec)
    clf.train(q)
    S, D, y = q.features[:, 0::3], np.abs(q.features[:, 2::3]), q.labels
    G, C = (y == 1).sum(), (y == 0).sum()
    best, best_cfg = -np.inf, None
    for c in range(S.shape[1]):
        for t in THR:
            for w in sorted(WIN):
                fires = (S[:, c] >= t) & (D[:, c] <= w)
                ng, nc = int((fires & (y == 1)).sum()), int((fires & (y == 0)).sum())
                score = (ng / G) / ((nc + 0.5) / (C + 1))
                if ng >= 3 and score > best:
                    best, best_cfg = score, (spec.channels[c], t, w, ng, nc)
    v = clf.vetoes[0]
    assert (v["channel"], v["threshold"], v["window"], v["n_glitch"], v["n_clean"]) == best_cfg
    assert v["channel"] == "H1:AUX-0"


def test_iterative_removal_is_disjoint_and_ranks_follow_the_list() -> None:
    q, spec = _matrix(1)
    clf = _ovl(spec)
    clf.train(q)
    assert len(clf.vetoes) >= 2
    S, D, y = q.features[:, 0::3], q.features[:, 2::3], q.labels
    left = np.ones(y.size, dtype=bool)
    expect = np.zeros(y.size)
    for v in clf.vetoes:
        c = spec.channels.index(v["channel"])
        near = np.abs(D[:, c] - v["lag"]) <= v["window"]
        fires = (S[:, c] >= v["threshold"]) & near & left
        # counts recorded for a veto are those it newly covers
        assert v["n_glitch"] == int((fires & (y == 1)).sum())
        assert v["n_clean"] == int((fires & (y == 0)).sum())
        expect[fires] = v["rank"]
        left &= ~fires
    assert sum(v["n_glitch"] for v in clf.vetoes) <= (y == 1).sum()
    assert np.array_equal(clf.rank(q.features), expect)
    assert all(0 < v["rank"] < 1 for v in clf.vetoes)
    # witness channels rank glitches far above clean samples
    r = clf.rank(q.features)
    assert r[y == 1].mean() > 5 * r[y == 0].mean()


@pytest.mark.parametrize("metric", ["eff_fap", "use_percentage", "poisson", "combined"])
def test_metrics_train_and_round_trip(metric: str) -> None:
    q, spec = _matrix(2)
    params = {"metric": metric, "weights": {"eff_fap": 1.0, "poisson": 2.0}}
    clf = _ovl(spec, **params)
    m = clf.train(q)
    assert clf.vetoes and clf.vetoes[0]["channel"] in ("H1:AUX-0", "H1:AUX-1")
    other = _ovl(spec, **params)
    other.from_bytes(clf.to_bytes())
    assert np.array_equal(other.rank(q.features), clf.rank(q.features))
    # canonical JSON payload: retraining on the same data gives the same model id
    assert _ovl(spec, **params).train(q).id == m.id


def test_minimums_stop_the_rounds() -> None:
    q, spec = _matrix(3)
    strict = _ovl(spec, min_significance=301)
    strict.train(q)
    assert strict.vetoes == []
    assert np.all(strict.rank(q.features) == 0)
    capped = _ovl(spec, max_rounds=1)
    capped.train(q)
    assert len(capped.vetoes) == 1


def test_windows_beyond_the_feature_window_are_refused() -> None:
    _, spec = _matrix(4)
    with pytest.raises(ClassifierParamError, match="larger than the feature window") as info:
        make_classifier("ovl", "ovl", {"windows": [1.0, 0.5, 0.05]}, spec)
    assert info.value.param == "windows"
    # by default: the production windows that fit (or the feature window itself)
    clf = make_classifier("ovl", "ovl", {}, spec)
    assert isinstance(clf, OVL)
    assert clf.windows.tolist() == [w for w in (0.0625, 0.125, 0.25, 0.5, 1.0) if w <= 0.1]
    tiny = make_classifier("ovl", "ovl", {}, FeatureSpec(("A",), 0.01))
    assert isinstance(tiny, OVL) and tiny.windows.tolist() == [0.01]


def test_bad_params() -> None:
    _, spec = _matrix(5)
    with pytest.raises(ClassifierError, match="weight"):
        make_classifier("ovl", "ovl", {"weights": {"deadtime": 1}}, spec)
    with pytest.raises(ClassifierError, match="dt"):
        make_classifier("ovl", "ovl", {}, FeatureSpec(("A",), 0.1, ("snr",)))


def test_lagged_witness_gets_a_window_centred_on_its_lag() -> None:
    """A witness 0.3 s late: with lags, a narrow window at 0.3 s; without, a 0.5 s one."""
    rng = np.random.default_rng(11)
    spec = FeatureSpec(("H1:A", "H1:B"), 0.5)
    ng, nc = 300, 3000
    X = np.zeros((ng + nc, spec.width))
    X[:, 2::3] = 0.5  # no trigger: dt at the window edge
    # glitches: A fires at 0.3 s +- 0.02 s, loud
    X[:ng, 0] = 20.0
    X[:ng, 2] = 0.3 + rng.uniform(-0.02, 0.02, ng)
    # clean: A fires on its own anywhere in the window, as loud, a third of the time
    on = rng.random(nc) < 0.33
    X[ng:, 0] = np.where(on, 20.0, 0.0)
    X[ng:, 2] = np.where(on, rng.uniform(-0.5, 0.5, nc), 0.5)
    y = np.r_[np.ones(ng), np.zeros(nc)].astype(np.int8)
    q = SimpleNamespace(features=X, labels=y, start=0.0, end=3300.0, segs=None, times=None)
    windows = [0.5, 0.25, 0.125, 0.0625]
    lagged = make_classifier("ovl", "ovl", {"windows": windows}, spec)
    lagged.train(q)
    assert isinstance(lagged, OVL)
    first = lagged.vetoes[0]
    assert first["channel"] == "H1:A" and abs(first["lag"] - 0.3) < 0.02
    assert first["window"] == 0.0625 and first["fap"] < 0.05
    plain = make_classifier("ovl", "ovl", {"windows": windows, "lags": False}, spec)
    plain.train(q)
    assert isinstance(plain, OVL)
    assert all(v["lag"] == 0.0 for v in plain.vetoes)
    assert plain.vetoes[0]["window"] >= 0.25 and plain.vetoes[0]["fap"] > first["fap"]
    # the lag survives the round trip
    other = make_classifier("ovl", "ovl", {"windows": windows}, spec)
    other.from_bytes(lagged.to_bytes())
    assert np.array_equal(other.rank(X), lagged.rank(X))


def test_channels_combine_learns_each_channel_on_all_samples_and_multiplies() -> None:
    """``combine = "channels"``: per-channel lists on all samples; ratios multiply."""
    q, spec = _matrix(6)
    clf = _ovl(spec, combine="channels")
    clf.train(q)
    S, D, y = q.features[:, 0::3], q.features[:, 2::3], q.labels
    G0, C0 = int((y == 1).sum()), int((y == 0).sum())
    left = {c: np.ones(y.size, dtype=bool) for c in spec.channels}
    log_lr = np.zeros(y.size)
    fired = np.zeros(y.size, dtype=bool)
    for v in clf.vetoes:
        c = spec.channels.index(v["channel"])
        fires = (S[:, c] >= v["threshold"]) & (np.abs(D[:, c] - v["lag"]) <= v["window"])
        fires &= left[v["channel"]]
        # counts are those the veto newly covers within its own channel only
        assert v["n_glitch"] == int((fires & (y == 1)).sum())
        assert v["n_clean"] == int((fires & (y == 0)).sum())
        lr = (v["n_glitch"] / G0) / ((v["n_clean"] + 0.5) / (C0 + 1))
        assert v["likelihood_ratio"] == pytest.approx(lr)
        log_lr[fires] += np.log(lr)
        fired |= fires
        left[v["channel"]] &= ~fires
    # both witnesses get a list although they fire on the same glitches
    assert {"H1:AUX-0", "H1:AUX-1"} <= {v["channel"] for v in clf.vetoes}
    expect = np.where(fired, 1 / (1 + np.exp(-log_lr)), 0.0)
    r = clf.rank(q.features)
    np.testing.assert_allclose(r, expect, rtol=1e-12)
    # two witnesses together outrank either alone
    both = fired & (log_lr > max(np.log(v["likelihood_ratio"]) for v in clf.vetoes))
    assert both.any() and r[both].min() > max(v["rank"] for v in clf.vetoes)
    # the rule travels with the payload, whatever the loading classifier's params say
    other = _ovl(spec)
    other.from_bytes(clf.to_bytes())
    assert np.array_equal(other.rank(q.features), r)


def test_confidence_ranks_vetoes_by_poisson_bounds_of_their_counts() -> None:
    q, spec = _matrix(7)
    plain, bounded = _ovl(spec), _ovl(spec, confidence=0.84)
    plain.train(q)
    bounded.train(q)
    # the list is chosen the same way; only the ratios (ranks) are bounded
    key = ("channel", "threshold", "window", "n_glitch", "n_clean")
    assert [[v[k] for k in key] for v in plain.vetoes] == [
        [v[k] for k in key] for v in bounded.vetoes
    ]
    for a, b in zip(plain.vetoes, bounded.vetoes, strict=True):
        assert 0 < b["likelihood_ratio"] < a["likelihood_ratio"]
    # a few glitches and no clean sample: bounded far below their plain ratio
    small = bounded._likelihood_ratio(4, 0, 400, 4000) / plain._likelihood_ratio(4, 0, 400, 4000)
    large = bounded._likelihood_ratio(400, 40, 400, 4000) / plain._likelihood_ratio(
        400, 40, 400, 4000
    )
    assert small < 0.3 < 0.8 < large < 1


def test_bad_combine_and_confidence() -> None:
    _, spec = _matrix(8)
    with pytest.raises(ClassifierParamError, match="combine") as info:
        make_classifier("ovl", "ovl", {"combine": "max"}, spec)
    assert info.value.param == "combine"
    for bad in (1.0, -0.1, True, "0.8"):
        with pytest.raises(ClassifierParamError, match="confidence"):
            make_classifier("ovl", "ovl", {"confidence": bad}, spec)


def test_poisson_logsf_is_scipy_stats_own() -> None:
    # OVL's significance skips scipy.stats' argument machinery; values must not move
    from scipy.stats import poisson

    from idq_common.science.classifiers.ovl import poisson_logsf

    rng = np.random.default_rng(0)
    k = rng.integers(0, 3000, (200, 6, 5)) - 1
    k[rng.random(k.shape) < 0.3] = -1
    mu = rng.random(k.shape) * 50 + 1e-9
    mu[0] = 1e-300
    for scale in (1.0, 0.01, 37.0):
        assert np.array_equal(poisson_logsf(k, mu * scale), poisson.logsf(k, mu * scale))


def test_entries_of_samples_are_their_ranges() -> None:
    # OVL subtracts a veto's newly covered samples' entries from its cell counts
    sample = np.array([0, 0, 2, 2, 2, 3, 5, 5])
    by_sample = np.searchsorted(sample, np.arange(7))
    for chosen in ([], [1], [0, 2], [2, 3, 5], [0, 1, 2, 3, 4, 5]):
        got = OVL._entries_of(np.array(chosen, dtype=np.int64), by_sample)
        assert got.tolist() == [i for i, s in enumerate(sample) if s in chosen]
