"""The stride computation: features + models + calibrations -> products, bit-identical
whichever strides are computed together and however the rank calls are chunked."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from igwn_segments import segment, segmentlist

from idq_common.contracts import PRODUCTS
from idq_common.science.calibration import CalibrationMap
from idq_common.science.classifiers import make_classifier
from idq_common.science.features import build_features, feature_matrix, grid_times
from idq_common.science.products import INVALID
from idq_common.science.stride import Calibrated, Stride, stride_products
from idq_dev.testing.synthetic import small_model, small_quiver, small_spec

T0 = 1_400_000_000.0
FAST: dict[str, dict[str, Any]] = {
    "ovl": {},
    "random_forest": {"n_estimators": 30, "max_depth": 10},
    "hist_gradient_boosting": {"max_iter": 30},
    "sgd": {"epochs": 3},
    "naive_bayes": {},
}
RATE = 128.0


@pytest.fixture(scope="module")
def model() -> Any:
    return small_model(glitch_rate=0.5)


@pytest.fixture(scope="module")
def calibrated(model: Any) -> dict[str, Calibrated]:
    train = small_quiver(model, span=(T0, T0 + 1000), random_rate=5.0, seed=1)
    calib = small_quiver(model, span=(T0 + 1000, T0 + 2000), random_rate=5.0, seed=2)
    out = {}
    for flavor, params in FAST.items():
        clf = make_classifier(flavor, flavor, params, small_spec(model))
        clf.train(train)
        r = clf.rank(calib.features)
        cmap = CalibrationMap.fit(r[calib.labels == 1], r[calib.labels == 0])
        out[flavor] = Calibrated(clf, cmap)
    return out


def _strides(start: float, n: int, segs: segmentlist) -> list[Stride]:
    return [Stride(start + k, start + k + 1, segs) for k in range(n)]


def test_products_inside_and_outside_segments(model: Any, calibrated: dict[str, Any]) -> None:
    start = T0 + 5000
    segs = segmentlist([segment(start + 0.5, start + 2.25), segment(start + 3, start + 3.5)])
    triggers = model.generate(start - 1, start + 5)
    out = stride_products(triggers, _strides(start, 4, segs), RATE, calibrated)
    assert [o.start for o in out] == [start, start + 1, start + 2, start + 3]
    times = np.concatenate([o.times for o in out])
    np.testing.assert_array_equal(times, grid_times(start, start + 4, RATE))
    inside = np.zeros(times.size, dtype=bool)
    for s in segs:
        inside |= (times >= s[0]) & (times < s[1])
    X = feature_matrix(triggers, times[inside], small_spec(model))
    for name, pair in calibrated.items():
        got = {p: np.concatenate([o.products[name][p] for o in out]) for p in PRODUCTS}
        assert tuple(out[0].products[name]) == PRODUCTS
        np.testing.assert_array_equal(got["OK"], inside.astype(float))
        for product, fill in INVALID.items():
            assert np.all(got[product][~inside] == fill)
        rank = pair.classifier.rank(X)
        np.testing.assert_array_equal(got["RANK"][inside], rank)
        np.testing.assert_array_equal(got["FAP"][inside], pair.calibration.fap(rank))


def test_batching_is_bit_identical(model: Any, calibrated: dict[str, Any]) -> None:
    """One stride at a time, all at once, and tiny rank chunks give the same bits."""
    start = T0 + 6000
    segs = segmentlist([segment(start, start + 5.5), segment(start + 6.25, start + 12)])
    triggers = model.generate(start - 1, start + 13)
    strides = _strides(start, 12, segs)
    together = stride_products(triggers, strides, RATE, calibrated)
    chunked = stride_products(triggers, strides, RATE, calibrated, max_cells=1000)
    for k, stride in enumerate(strides):
        # each stride alone, with only the triggers around it
        own = triggers.select_time(stride.start - 1, stride.end + 1)
        (alone,) = stride_products(own, [stride], RATE, calibrated)
        for name in calibrated:
            for product in PRODUCTS:
                a = alone.products[name][product]
                np.testing.assert_array_equal(together[k].products[name][product], a)
                np.testing.assert_array_equal(
                    chunked[k].products[name][product], a, f"{name}.{product}"
                )
        assert together[k].products["random_forest"]["OK"].any()


def test_nothing_valid_gives_ok_zero(model: Any, calibrated: dict[str, Any]) -> None:
    start = T0 + 7000
    triggers = model.generate(start - 1, start + 3)
    everywhere = segmentlist([segment(start, start + 2)])
    models: dict[str, Any] = {
        "none": None,
        "unhealthy": Calibrated(calibrated["ovl"].classifier, calibrated["ovl"].calibration, False),
        "uncalibrated": Calibrated(calibrated["ovl"].classifier, None),
        "good": calibrated["ovl"],
    }
    out = stride_products(triggers, _strides(start, 2, everywhere), RATE, models)
    for o in out:
        assert set(o.products) == set(models)
        for name in ("none", "unhealthy", "uncalibrated"):
            assert not o.products[name]["OK"].any()
        assert o.products["good"]["OK"].all()
    # no data (a gap) and no valid segments: every sample OK = 0, nothing ranked
    for trig, segs in ((None, everywhere), (triggers, segmentlist())):
        for o in stride_products(trig, _strides(start, 2, segs), RATE, models):
            assert o.times.size == RATE
            assert not any(p["OK"].any() for p in o.products.values())


def test_built_features_rank_like_the_feature_matrix(
    model: Any, calibrated: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each flavor's builder (its columns, its preprocessing per trigger) ranks like the
    feature matrix, bit for bit: windows without triggers, a chunk with no triggers at
    all, unsorted sample times, several chunks."""
    from idq_common.data.triggers import TriggerSet
    from idq_common.science import features

    spec = small_spec(model)
    monkeypatch.setattr(features, "_CHUNK_CELLS", 37 * len(spec.channels))  # 37-row chunks
    times = grid_times(T0 + 8000, T0 + 8004, RATE)[::-1]
    for trig in (model.generate(T0 + 7999, T0 + 8005), TriggerSet.empty(model.channels)):
        X = feature_matrix(trig, times, spec)
        lagged = copy.deepcopy(calibrated["random_forest"].classifier)
        lagged._lags = np.linspace(-0.05, 0.05, len(spec.channels))  # dt - lag per channel
        classifiers = {n: p.classifier for n, p in calibrated.items()} | {"lagged": lagged}
        for name, clf in classifiers.items():
            builder = clf.feature_builder()
            assert builder is not None, name
            built = features.build_features(trig, times, spec, [builder])[0]
            np.testing.assert_array_equal(clf.rank_built(built), clf.rank(X), name)


def test_linear_cells_sum_like_einsum_of_the_matrix() -> None:
    """SGD's fused decision (``_windows.linear_cells``) is ``einsum("ij,j->i")`` of
    the scaled matrix ``matrix_cells`` makes, bit for bit: widths that are and are not
    multiples of 8 (einsum's block) or 2 (its lanes), sample counts that are not
    multiples of 4 (the kernel's), lags, missing triggers, weights of any magnitude."""
    from idq_common.science import _windows

    rng = np.random.default_rng(7)
    per = 6  # grouped rows per channel: row r belongs to channel r // per
    for nch, kinds, n, shift in [
        (1, [0, 1, -1], 1, False),
        (5, [0, -1], 7, True),
        (8, [0, 1, -1], 4, False),
        (13, [-1, 0, 1], 10, True),
        (300, [0, 1, -1], 33, False),
    ]:
        k, width = len(kinds), nch * len(kinds)
        kinds_a = np.array(kinds, dtype=np.int64)
        t_rows = rng.uniform(-0.2, 0.2, nch * per)
        times = np.sort(rng.uniform(-0.05, 0.05, n))
        best = np.arange(nch) * per + rng.integers(0, per, (n, nch))
        hit = rng.random((n, nch)) < 0.8
        lags = rng.uniform(-0.05, 0.05, nch)
        rowvals = rng.normal(size=(2, nch * per)) * 10.0 ** rng.integers(-3, 4, (2, nch * per))
        mean, scale = rng.normal(size=nch), rng.uniform(0.1, 3.0, nch)
        weights = rng.normal(size=width) * 10.0 ** rng.integers(-4, 4, width)
        args = (best, hit, t_rows, times, 0.1, lags, shift)
        M = np.empty((n, width))
        _windows.matrix_cells(*args, rowvals, kinds_a, _windows.DT_SCALED, mean, scale, M)
        expected = np.einsum("ij,j->i", M, weights)
        prods = np.empty_like(rowvals)
        for j, src in enumerate(kinds):
            if src >= 0:
                prods[src] = rowvals[src] * weights[j::k].repeat(per)
        got = np.empty(n)
        dt_weights = np.ascontiguousarray(weights[kinds.index(-1) :: k])
        _windows.linear_cells(*args, prods, kinds_a, mean, scale, dt_weights, got)
        np.testing.assert_array_equal(got.view(np.int64), expected.view(np.int64))


def test_forest_ranks_are_predict_proba(model: Any, calibrated: dict[str, Any]) -> None:
    """The forest's joblib-free sum is scikit-learn's ``predict_proba``, bit for bit."""
    clf = calibrated["random_forest"].classifier
    spec = small_spec(model)
    times = grid_times(T0 + 9000, T0 + 9003, RATE)
    X = feature_matrix(model.generate(T0 + 8999, T0 + 9004), times, spec)
    est = clf._est  # the fitted scikit-learn estimator
    Z = clf._prep(X)  # preprocess with what training learnt (lags, lag_snr, witness_select)
    expected = est.predict_proba(Z)[:, list(est.classes_).index(1)]
    np.testing.assert_array_equal(clf.rank(X), np.clip(expected, 0.0, 1.0))
    # the compiled builder fills exactly the columns the trees split on, each the
    # float32 of the preprocessed column (lag_snr and witness_select ones included)
    assert clf._tol is not None and clf._cols is not None
    builder = clf.feature_builder()
    trig = model.generate(T0 + 8999, T0 + 9004)
    built = build_features(trig, times, spec, [builder])[0]
    assert 0 < builder.used.size <= Z.shape[1]
    np.testing.assert_array_equal(built, Z.astype(np.float32)[:, builder.used])
    np.testing.assert_array_equal(clf.rank_built(built), clf.rank(X))


def test_rank_grid_at_sample_times_is_evaluate(model: Any, calibrated: dict[str, Any]) -> None:
    """The evaluate stage ranks its samples with ``rank_grid`` (the timeseries code path):
    the same ranks, bit for bit, as each classifier's ``evaluate`` on the samples' own
    feature vectors."""
    from idq_common.data.synthetic import SyntheticSource
    from idq_common.science.stride import rank_grid

    span = (T0 + 9000, T0 + 9400)
    samples = small_quiver(model, span=span, random_rate=5.0, seed=3)
    triggers = SyntheticSource(model, *span).triggers()  # what the features were built from
    classifiers = {name: c.classifier for name, c in calibrated.items()}
    ranks = rank_grid(triggers, samples.times, classifiers, max_cells=5000)
    assert samples.n_glitch > 0
    for name, clf in classifiers.items():
        np.testing.assert_array_equal(ranks[name], clf.evaluate(samples), name)


def test_flat_forest_is_predict_proba_on_the_columns_it_reads() -> None:
    """The compiled walk of the flattened trees gives ``predict_proba`` bit for bit,
    on the whole input and on the compact one (only the columns the trees split on,
    features renumbered): shallow trees over many columns leave most columns unused."""
    from sklearn.ensemble import RandomForestClassifier

    from idq_common.science.classifiers.sklearn import FlatForest

    rng = np.random.default_rng(5)
    X = rng.normal(size=(400, 60)).astype(np.float32)
    y = (X[:, 3] + X[:, 41] * 0.5 + rng.normal(size=400) > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=7, max_depth=3, random_state=0).fit(X, y)
    flat = FlatForest.of(forest)
    assert 0 < flat.used.size < X.shape[1]
    test = rng.normal(size=(300, 60)).astype(np.float32)
    root = forest.estimators_[0].tree_
    test[::7, root.feature[0]] = np.float32(root.threshold[0])  # at a split, to the bit
    expected = forest.predict_proba(test)[:, 1]
    np.testing.assert_array_equal(flat.glitch_proba(test, compact=False), expected)
    compact = np.ascontiguousarray(test[:, flat.used])
    np.testing.assert_array_equal(flat.glitch_proba(compact, compact=True), expected)


def test_warm_compiles_every_kernel_signature_the_builders_use(
    model: Any, calibrated: dict[str, Any]
) -> None:
    """``_windows.warm`` (called by the benchmarks before any measured process) compiles
    every signature a stride of every flavor needs: none is added by a real run."""
    from idq_common.science import _windows

    count = _windows.warm()
    start = T0 + 9500
    triggers = model.generate(start - 1, start + 3)
    strides = _strides(start, 2, segmentlist([segment(start, start + 2)]))
    stride_products(triggers, strides, RATE, calibrated)
    feature_matrix(triggers, grid_times(start, start + 1, RATE), small_spec(model))
    assert sum(len(k.signatures) for k in _windows.KERNELS) == count
