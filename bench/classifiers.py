"""Per-classifier cost at 1,000 channels: model size, load time, prediction rate (issue 4).

For every flavor of :data:`idq_common.science.classifiers.factory.FLAVORS`, in-process on the
seeded synthetic model at 1,000 auxiliary channels (10 witnesses, 990 noise channels,
16 Hz background each, so 3,000 feature columns):

* ``train_s``: ``Classifier.train`` on one quiver (glitch + clean samples of the span);
* ``model_bytes``: ``len(Model.to_bytes())``, what the store holds;
* ``load_s``: ``Model.from_bytes(data)`` then ``classifier.model = model`` on a fresh
  classifier (what a stage does when a new model id arrives), best of ``repeats``;
* ``predict_samples_per_s``: ``Classifier.rank`` of a 128 Hz grid over ``predict_s``
  seconds (feature matrix built beforehand, not timed), best of ``repeats``; for
  reference the real-time need at 128 Hz is 128 samples/s per classifier.

Parameters are the demo configuration's for the flavors it lists (ovl, random_forest,
sgd) and the flavor defaults for the others.
"""

from __future__ import annotations

import time
from typing import Any

from bench._infra import BASE_CONFIG

T0 = 1_400_000_000.0
RATE = 128


def _best(fn: Any, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - tic)
    return best


def measure(
    train_span: float = 240.0, predict_s: float = 16.0, repeats: int = 3, channels: int = 1000
) -> dict[str, Any]:
    """Cost figures per flavor (module docstring); keys are flavor names."""
    from idq_common.config import load_settings
    from idq_common.data.synthetic import SyntheticModel, SyntheticSource
    from idq_common.science.classifiers import make_classifier
    from idq_common.science.classifiers.base import Model
    from idq_common.science.classifiers.factory import FLAVORS
    from idq_common.science.features import FeatureSpec, feature_matrix, grid_times
    from idq_common.science.quiver import build_quiver

    settings = load_settings(BASE_CONFIG, env={})
    n_witness = 10
    model = SyntheticModel(
        seed=11,
        n_witness=n_witness,
        n_noise=channels - n_witness,
        noise_background_rate=16.0,
        glitch_rate=1.0,
    )
    spec = FeatureSpec(
        model.aux_channels, settings.features.window, tuple(settings.features.columns)
    )
    smp = settings.samples
    tic = time.perf_counter()
    quiver = build_quiver(
        SyntheticSource(model, T0, T0 + train_span),
        model.target_channel,
        smp.target_bounds,
        2.0,
        smp.dirty_bounds,
        smp.dirty_window,
        1,
        spec,
    )
    quiver_s = time.perf_counter() - tic
    p0 = T0 + train_span + 10.0
    trig = model.generate(p0 - 1.0, p0 + predict_s + 1.0)
    X = feature_matrix(trig, grid_times(p0, p0 + predict_s, RATE), spec)
    params = {c.flavor: c.params for c in settings.classifiers}
    out: dict[str, Any] = {
        "channels": channels,
        "feature_columns": spec.width,
        "train_samples": len(quiver),
        "train_glitch": int((quiver.labels == 1).sum()),
        "quiver_build_s": round(quiver_s, 3),
        "predict_samples": int(X.shape[0]),
        "flavors": {},
    }
    for flavor in FLAVORS:
        clf = make_classifier(flavor, flavor, params.get(flavor), spec)
        tic = time.perf_counter()
        clf.train(quiver)
        train_s = time.perf_counter() - tic
        data = clf.model.to_bytes()

        def load(data: bytes = data, flavor: str = flavor) -> None:
            fresh = make_classifier(flavor, flavor, params.get(flavor), spec)
            fresh.model = Model.from_bytes(data)

        load_s = _best(load, repeats)
        ranks = clf.rank(X)  # warm-up, and a check that it ranks every sample
        assert ranks.shape == (X.shape[0],)
        rank_s = _best(lambda clf=clf: clf.rank(X), repeats)
        out["flavors"][flavor] = {
            "train_s": round(train_s, 3),
            "model_bytes": len(data),
            "load_s": round(load_s, 4),
            "predict_samples_per_s": round(X.shape[0] / rank_s, 1),
        }
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(measure(), indent=2))
