"""Science quality, in-process on the seeded synthetic model (no Kafka).

* efficiency at FAP 1e-3/1e-2/1e-1 of every classifier of the demo configuration
  (trained on one span, ranked on a held-out span) beside the Bayes-optimal value
  from :meth:`SyntheticModel.optimal_log_likelihood_ratio` on the same samples;
* calibration coverage: a :class:`CalibrationMap` fitted on a third span's ranks,
  then the fraction of held-out clean samples with FAP <= p (ideal: p);
* stride invariance: the timeseries products (the stage's computation,
  :func:`idq_common.science.stride.stride_products`) over one span polled by a
  :class:`StreamProcessor` on ``FunctionSource(model.generate)`` with strides of 1 s,
  16 s and the whole span as one batch; the largest absolute difference of any
  product sample (NaN == NaN counts as equal);
* hveto (PyPI) as an outside reference: rounds found on the training span with
  hveto's own significance search (``hveto.core.find_max_significance``, threshold 5,
  windows = 2x the OVL half-windows, SNR thresholds = OVL's), applied to the held-out
  span; its deadtime and efficiency, and OVL's efficiency at FAP = that deadtime;
* the independent multi-family scenario (:func:`families`): efficiency at FAP 1e-2 as
  a ratio to the witnessed-within-window bound, and FA@1e-2, on seeds the generator
  and the classifiers were not tuned on; beside them the same ratio for the
  Bayes-optimal classifier of the features (the ceiling) and for a logistic reference
  told the generator's witnesses (:func:`_generator_aware_eff`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bench._infra import BASE_CONFIG

FAPS = (1e-3, 1e-2, 1e-1)
T0 = 1_400_000_000.0


def _model(glitch_rate: float = 0.5) -> Any:
    from idq_dev.testing.synthetic import small_model

    return small_model(glitch_rate=glitch_rate)


def _quiver(model: Any, span: tuple[float, float], samples: Any, spec: Any, seed: int) -> Any:
    from idq_common.data.synthetic import SyntheticSource
    from idq_common.science.quiver import build_quiver

    return build_quiver(
        SyntheticSource(model, *span),
        model.target_channel,
        samples.target_bounds,
        5.0,
        samples.dirty_bounds,
        samples.dirty_window,
        seed,
        spec,
    )


def measure(
    span: float = 4000.0,
    invariance_span: float = 256.0,
    families_span: float = 4000.0,
    families_seeds: tuple[int, ...] = (2, 3, 4),
) -> dict[str, Any]:
    from idq_common.config import load_settings
    from idq_common.science.calibration import CalibrationMap
    from idq_common.science.classifiers import make_classifier
    from idq_common.science.features import FeatureSpec
    from idq_common.science.merit import efficiency_at_fap

    settings = load_settings(BASE_CONFIG, env={})
    model = _model()
    spec = FeatureSpec(
        model.aux_channels, settings.features.window, tuple(settings.features.columns)
    )
    smp = settings.samples
    train = _quiver(model, (T0, T0 + span), smp, spec, 1)
    calib = _quiver(model, (T0 + span, T0 + 2 * span), smp, spec, 2)
    test = _quiver(model, (T0 + 2 * span, T0 + 3 * span), smp, spec, 3)
    y = test.labels
    snr_lo = smp.target_bounds.get("snr", (10.0, math.inf))
    llr = model.optimal_log_likelihood_ratio(test.features, spec, target_snr_bounds=tuple(snr_lo))
    optimal = efficiency_at_fap(llr[y == 1], llr[y == 0], FAPS)
    out: dict[str, Any] = {
        "classifiers": {},
        "samples": {
            "train": len(train),
            "test_glitch": int((y == 1).sum()),
            "test_clean": int((y == 0).sum()),
        },
    }
    trained, coverage = {}, {}
    for c in settings.classifiers:
        clf = make_classifier(c.nickname, c.flavor, c.params, spec)
        clf.train(train)
        trained[c.nickname] = clf
        r = clf.rank(test.features)
        eff = efficiency_at_fap(r[y == 1], r[y == 0], FAPS)
        rc = clf.rank(calib.features)
        cmap = CalibrationMap.fit(rc[calib.labels == 1], rc[calib.labels == 0])
        clf.calibration_map = cmap
        fap = cmap.fap(r[y == 0])
        cov = {str(p): round(float(np.mean(fap <= p)), 5) for p in (0.1, 0.01)}
        coverage[c.nickname] = cov
        out["classifiers"][c.nickname] = {
            "flavor": c.flavor,
            "eff_at_fap": {str(f): round(float(e), 4) for f, e in zip(FAPS, eff, strict=True)},
            "optimal_eff_at_fap": {
                str(f): round(float(e), 4) for f, e in zip(FAPS, optimal, strict=True)
            },
            "ratio_to_optimal_at_0.01": round(float(eff[1] / optimal[1]), 4) if optimal[1] else 0,
            "calibration_coverage": cov,
        }
    best = max(out["classifiers"], key=lambda n: out["classifiers"][n]["eff_at_fap"]["0.01"])
    out["best_classifier"] = best
    out["best_ratio_to_optimal_at_0.01"] = out["classifiers"][best]["ratio_to_optimal_at_0.01"]
    out["calibration_coverage"] = coverage[best]
    out["calibration_coverage_of"] = best
    out["stride_invariance_max_abs_diff"], out["stride_invariance"] = _invariance(
        model, trained, settings, invariance_span
    )
    out["hveto"] = _hveto(model, trained.get("ovl"), test, smp, span, settings)
    out["families"] = families(families_span, tuple(families_seeds))
    return out


# -- stride invariance -------------------------------------------------------------
def _products_over(
    model: Any, trained: dict[str, Any], settings: Any, start: float, end: float, stride: float
) -> dict[str, np.ndarray]:
    from idq_common.gpstime import ManualClock
    from idq_common.science.stride import Calibrated, Stride, stride_products
    from idq_common.streaming.cadence import CadenceManager
    from idq_common.streaming.processor import FunctionSource, StreamProcessor
    from idq_common.streaming.segments import AllTime

    pad = float(settings.features.window)
    delay = float(settings.timeseries.stream.delay)
    rate = settings.timeseries.sample_rate
    clock = ManualClock(start)
    cadence = CadenceManager(
        start, stride, delay, clock, max_timestamp=end, enforce_integer_strides=False
    )
    proc = StreamProcessor(cadence, FunctionSource(model.generate), AllTime(), pad=pad)
    models = {name: Calibrated(clf, clf.calibration_map) for name, clf in trained.items()}
    series: dict[str, list[np.ndarray]] = {}
    while not cadence.finished:
        clock.set(cadence.due_at())
        batch = proc.poll()
        # every stride of the poll in one call, as the stage does
        strides = [Stride(s, e, batch.segs) for s, e in batch.strides]
        for out in stride_products(batch.umbrella.triggers(), strides, rate, models):
            for name, products in out.products.items():
                for prod, v in products.items():
                    series.setdefault(f"{name}.{prod}", []).append(v)
        proc.flush()
    return {k: np.concatenate(v) for k, v in series.items()}


def _invariance(
    model: Any, trained: dict[str, Any], settings: Any, span: float
) -> tuple[float, dict[str, Any]]:
    start = T0 + 10_000.0
    runs = {
        str(st): _products_over(model, trained, settings, start, start + span, st)
        for st in (1.0, 16.0, span)
    }
    ref = runs[str(span)]
    worst = 0.0
    detail: dict[str, Any] = {"span_s": span, "strides_s": [1, 16, span]}
    for st in ("1.0", "16.0"):
        for k, v in runs[st].items():
            a, b = v, ref[k]
            if a.shape != b.shape:
                detail[f"shape_mismatch_{st}_{k}"] = [a.shape, b.shape]
                worst = math.inf
                continue
            both_nan = np.isnan(a) & np.isnan(b)
            d = np.where(both_nan, 0.0, np.abs(a - b))
            d = np.where(np.isnan(d), np.inf, d)
            worst = max(worst, float(d.max()) if d.size else 0.0)
    return worst, detail


# -- hveto ---------------------------------------------------------------------------
def _hveto(model: Any, ovl: Any, test: Any, smp: Any, span: float, settings: Any) -> dict[str, Any]:
    try:
        from astropy.table import Table
        from hveto import core
    except ImportError as exc:  # pragma: no cover - hveto is in requirements-dev
        return {"error": f"hveto not importable: {exc}"}
    from igwn_segments import segment, segmentlist

    from idq_common.science.merit import efficiency_at_fap

    ovl_params = next(c.params for c in settings.classifiers if c.flavor == "ovl")
    snrs = [float(x) for x in ovl_params.get("thresholds", [8, 10, 15, 20])]
    windows = [2.0 * float(w) for w in ovl_params.get("windows", [0.1])]
    snr_min = float(smp.target_bounds.get("snr", (10.0, math.inf))[0])

    def tables(start: float, end: float) -> tuple[Any, dict[str, Any]]:
        trig = model.generate(start, end)
        prim = None
        aux = {}
        for name in model.channels:
            t, s, _f = trig.for_channel(name)
            if name == model.target_channel:
                keep = s >= snr_min
                prim = Table({"time": t[keep], "snr": s[keep], "channel": [name] * int(keep.sum())})
            else:
                aux[name] = Table({"time": t, "snr": s, "channel": [name] * len(t)})
        return prim, aux

    tr0, tr1 = T0, T0 + span
    primary, aux = tables(tr0, tr1)
    livetime = span
    winners = []
    for _ in range(20):
        if len(primary) == 0:
            break
        w, _sigs = core.find_max_significance(
            primary, aux, model.target_channel, snrs, windows, livetime
        )
        if w.significance is None or w.significance < 5.0:
            break
        a = aux[w.name]
        segs = w.get_segments(a["time"][a["snr"] >= w.snr]).coalesce()
        winners.append(
            {
                "channel": w.name,
                "snr": w.snr,
                "window": w.window,
                "significance": round(float(w.significance), 2),
            }
        )
        livetime -= abs(segmentlist(segment(s[0], s[1]) for s in segs).coalesce())
        primary = core.veto(primary, segs)[0]  # (kept, vetoed)
        aux = {n: core.veto(t, segs)[0] if len(t) else t for n, t in aux.items()}
    te0, te1 = T0 + 2 * span, T0 + 3 * span
    tprim, taux = tables(te0, te1)
    vetoes = segmentlist()
    for w in winners:
        a = taux[w["channel"]]
        for t in a["time"][a["snr"] >= w["snr"]]:
            vetoes.append(segment(float(t) - w["window"] / 2, float(t) + w["window"] / 2))
    vetoes = vetoes.coalesce() & segmentlist([segment(te0, te1)])
    deadtime = abs(vetoes) / span
    glitch_t = np.asarray(tprim["time"])
    vetoed = sum(1 for t in glitch_t if t in vetoes)
    eff = vetoed / len(glitch_t) if len(glitch_t) else 0.0
    out: dict[str, Any] = {
        "deadtime": round(float(deadtime), 5),
        "efficiency": round(eff, 4),
        "rounds": winners,
        "test_glitches": len(glitch_t),
        "method": (
            "hveto.core.find_max_significance rounds on the training "
            "span (threshold 5), segments applied to the held-out span"
        ),
    }
    if ovl is not None and deadtime > 0:
        r = ovl.rank(test.features)
        y = test.labels
        out["ovl_efficiency"] = round(
            float(efficiency_at_fap(r[y == 1], r[y == 0], [deadtime])[0]), 4
        )
    else:
        out["ovl_efficiency"] = 0.0
    return out


# -- the independent multi-family scenario -------------------------------------------
#: seed the generator and the classifier choices were tuned on; never scored here
#: (the forest's ``balanced = false`` was also chosen on seeds 11-16: score on 2-10)
FAMILIES_TUNING_SEED = 1


def families(span: float = 4000.0, seeds: tuple[int, ...] = (2, 3, 4)) -> dict[str, Any]:
    """Efficiency at FAP 1e-2 on :class:`~idq_common.data.families.FamilyModel` scenarios.

    For each seed (never the tuning seed, :data:`FAMILIES_TUNING_SEED`): the classifiers
    of ``etc/idq.toml`` (the production example: feature window 0.5 s, OVL windows up
    to 0.5 s) trained on one span, calibrated on a second, scored on a third, each
    ``span`` seconds. Quoted per classifier: efficiency at FAP 1e-2 (threshold from the
    held-out clean ranks), its ratio to the witnessed-within-window bound
    (:func:`~idq_common.data.families.witnessed_fraction` over the held-out glitch
    samples, window = the feature window), and FA@1e-2: the fraction of held-out clean
    samples whose calibrated FAP is <= 1e-2, with its binomial sigma. Beside them the
    Bayes-optimal classifier of the same feature rows
    (:meth:`~idq_common.data.families.FamilyModel.optimal_log_likelihood_ratio`, told
    the generator): its ratio to the bound is the most any classifier can reach on
    that seed, and each classifier's ``ratio_to_optimal`` is how close it comes.
    ``trigger_optimal_ratio_to_bound``: the same for the Bayes-optimal classifier of
    every auxiliary trigger
    (:meth:`~idq_common.data.families.FamilyModel.trigger_log_likelihood_ratio`), the
    ceiling of any feature definition; ``ratio_sigma`` the binomial sigma of a ratio
    near it over the held-out glitches. Where it is below 0.8, no classifier of the
    triggers meets the 0.8 target on that seed but by a statistical fluke.
    """
    from idq_common.config import load_settings
    from idq_common.data.families import FamilyModel, FamilySource, witnessed_fraction
    from idq_common.science.calibration import CalibrationMap
    from idq_common.science.classifiers import make_classifier
    from idq_common.science.features import FeatureSpec
    from idq_common.science.merit import efficiency_at_fap
    from idq_common.science.quiver import build_quiver

    settings = load_settings(BASE_CONFIG.with_name("idq.toml"), env={})
    smp, f = settings.samples, settings.features
    out: dict[str, Any] = {
        "generator": "idq_common.data.families.FamilyModel (240 channels, 6 families)",
        "tuning_seed": FAMILIES_TUNING_SEED,
        "span_s": span,
        "window_s": f.window,
        "seeds": {},
    }
    for seed in seeds:
        if seed == FAMILIES_TUNING_SEED:
            raise ValueError("the tuning seed is not a test scenario")
        model = FamilyModel(seed=seed)
        spec = FeatureSpec(model.aux_channels, f.window, tuple(f.columns))

        def quiver(k: int, model: Any = model, spec: Any = spec, seed: int = seed) -> Any:
            a, b = T0 + k * span, T0 + (k + 1) * span
            src = FamilySource(model, a - 2 * f.window, b + 2 * f.window)
            return build_quiver(
                src,
                model.target_channel,
                smp.target_bounds,
                2.0,
                smp.dirty_bounds,
                smp.dirty_window,
                seed * 10 + k,
                spec,
                segs=[(a, b)],
            )

        train, calib, test = quiver(0), quiver(1), quiver(2)
        y = test.labels
        n_clean = int((y == 0).sum())
        bound = witnessed_fraction(model, test.times[y == 1], f.window)
        row: dict[str, Any] = {
            "witnessed_bound": round(bound, 4),
            "test_glitch": int((y == 1).sum()),
            "test_clean": n_clean,
            "fa_sigma": round(math.sqrt(0.01 * 0.99 / n_clean), 5),
            "classifiers": {},
        }
        row["witness_above_clean_q99"] = round(_loud_witnessed(model, test, spec), 4)
        # the Bayes-optimal classifier of the same features (told the generator): the
        # ceiling of any classifier's ratio on this seed (FamilyModel docstring)
        llr = model.optimal_log_likelihood_ratio(test.features, spec, smp.target_bounds["snr"])
        optimal = float(efficiency_at_fap(llr[y == 1], llr[y == 0], [1e-2])[0])
        row["optimal_eff_at_0.01"] = round(optimal, 4)
        row["optimal_ratio_to_bound"] = round(optimal / bound, 4) if bound else 0.0
        # the Bayes-optimal classifier of every trigger (snr, time): the ceiling of any
        # feature definition (more columns, sub-windows, counts), not only this one
        trig = model.generate(test.start - model.reach - 1.0, test.end + model.reach + 1.0)
        llr_t = model.trigger_log_likelihood_ratio(trig, test.times, smp.target_bounds["snr"])
        ceiling = float(efficiency_at_fap(llr_t[y == 1], llr_t[y == 0], [1e-2])[0])
        row["trigger_optimal_ratio_to_bound"] = round(ceiling / bound, 4) if bound else 0.0
        # binomial sigma of an efficiency ratio near the ceiling over these glitches
        n_glitch = max(int((y == 1).sum()), 1)
        row["ratio_sigma"] = (
            round(math.sqrt(ceiling * (1 - ceiling) / n_glitch) / bound, 4) if bound else 0.0
        )
        reference = _generator_aware_eff(model, train, test)
        row["generator_aware_eff_at_0.01"] = round(reference, 4)
        row["generator_aware_ratio_to_bound"] = round(reference / bound, 4) if bound else 0.0
        for c in settings.classifiers:
            clf = make_classifier(c.nickname, c.flavor, c.params, spec)
            clf.train(train)
            r = clf.rank(test.features)
            eff = float(efficiency_at_fap(r[y == 1], r[y == 0], [1e-2])[0])
            rc = clf.rank(calib.features)
            cmap = CalibrationMap.fit(rc[calib.labels == 1], rc[calib.labels == 0])
            fa = float(np.mean(cmap.fap(r[y == 0]) <= 1e-2))
            row["classifiers"][c.nickname] = {
                "flavor": c.flavor,
                "eff_at_0.01": round(eff, 4),
                "ratio_to_bound": round(eff / bound, 4) if bound else 0.0,
                "ratio_to_optimal": round(eff / optimal, 4) if optimal else 0.0,
                "fa_at_0.01": round(fa, 5),
                "fa_sigmas_from_0.01": round((fa - 0.01) / row["fa_sigma"], 2),
            }
        out["seeds"][str(seed)] = row
    rows = out["seeds"].values()
    nick = {c.nickname: c.flavor for c in settings.classifiers}
    mean = {n: float(np.mean([r["classifiers"][n]["ratio_to_bound"] for r in rows])) for n in nick}
    best = max(mean, key=lambda n: mean[n])
    ovl = next((n for n, fl in nick.items() if fl == "ovl"), None)
    out["best_classifier"] = best
    out["best_ratio_to_bound"] = round(
        min(r["classifiers"][best]["ratio_to_bound"] for r in rows), 4
    )
    # the target reads the worst held-out seed; the mean over them is what a scenario
    # pooled from several draws of the generator would show (both are reported)
    out["best_mean_ratio_to_bound"] = round(mean[best], 4)
    out["ovl_ratio_to_bound"] = (
        round(min(r["classifiers"][ovl]["ratio_to_bound"] for r in rows), 4) if ovl else 0.0
    )
    out["best_fa_max_sigmas"] = round(
        max(abs(r["classifiers"][best]["fa_sigmas_from_0.01"]) for r in rows), 2
    )
    out["optimal_ratio_to_bound"] = round(min(r["optimal_ratio_to_bound"] for r in rows), 4)
    out["trigger_optimal_ratio_to_bound"] = round(
        min(r["trigger_optimal_ratio_to_bound"] for r in rows), 4
    )
    out["best_ratio_to_optimal"] = round(
        min(r["classifiers"][best]["ratio_to_optimal"] for r in rows), 4
    )
    out["generator_aware_ratio_to_bound"] = round(
        min(r["generator_aware_ratio_to_bound"] for r in rows), 4
    )
    return out


def _loud_witnessed(model: Any, test: Any, spec: Any, snr_min: float = 6.5) -> float:
    """The part of the bound a single channel can show at a 1 % false-alarm rate.

    Fraction of held-out glitch samples with one of their own witness triggers within
    the window, at snr >= ``snr_min`` and louder than the 99th percentile of that
    channel's feature snr over the held-out clean samples (the loudest trigger of the
    channel in a clean window). The witnessed-within-window bound also counts glitches
    whose only witness is quieter than that (a noisy witness at snr 7, say): no
    classifier of the loudest-trigger features finds those at FAP 1e-2 unless several
    of the glitch's witnesses agree. A diagnostic beside the bound, not a target.
    """
    y = test.labels
    g = test.times[y == 1]
    if g.size == 0:
        return 0.0
    k, window = len(spec.columns), spec.window
    snr = test.features[y == 0, spec.columns.index("snr") :: k]
    q99 = np.quantile(snr, 0.99, axis=0) if snr.shape[0] else np.zeros(snr.shape[1])
    rec = model.witness_records(float(g.min()), float(g.max()) + 1e-6)
    ok = (np.abs(rec.dt) <= window) & (rec.snr >= snr_min) & (rec.snr > q99[rec.channel])
    return float(np.isin(g, rec.glitch_time[ok]).mean())


def _generator_aware_eff(model: Any, train: Any, test: Any) -> float:
    """Efficiency at FAP 1e-2 of a reference that knows the generator's witnesses.

    Not a classifier of the pipeline: it is told every witness (channel, delay, jitter)
    of the scenario and sees, per witness, the loudest trigger of that channel within
    ``[t + delay - jitter, t + delay + jitter]`` straight from the triggers (no feature
    window, no other channel); a balanced logistic regression on their ``log1p(snr)``
    is trained on ``train`` and scored on ``test``. What a classifier that found every
    witness and its lag could reach: the witnessed-within-window bound also counts
    witnesses too quiet to stand out of their channel's background at FAP 1e-2. Not
    the ceiling: it sees one trigger per witness and a linear model of them; the
    Bayes-optimal ratio (``optimal_ratio_to_bound``) is, and exceeds it by up to 0.12
    (seed 2: 0.79 against 0.67).
    """
    from sklearn.linear_model import LogisticRegression

    from idq_common.science.features import FeatureSpec, feature_matrix
    from idq_common.science.merit import efficiency_at_fap

    lay = model.layout

    def columns(q: Any) -> np.ndarray:
        trig = model.generate(q.start - 1.0, q.end + 1.0)
        cols = []
        for c, d, j in zip(lay.w_channel, lay.w_delay, lay.w_jitter, strict=True):
            spec = FeatureSpec((model.aux_channels[c],), float(j), ("snr",))
            cols.append(feature_matrix(trig, q.times + float(d), spec)[:, 0])
        return np.log1p(np.stack(cols, axis=1))

    fit = LogisticRegression(max_iter=3000, class_weight="balanced")
    fit.fit(columns(train), train.labels)
    z = fit.decision_function(columns(test))
    y = test.labels
    return float(efficiency_at_fap(z[y == 1], z[y == 0], [1e-2])[0])
