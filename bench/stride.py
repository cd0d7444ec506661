"""CPU cost of the timeseries computation per stride, in-process (no Kafka).

``python -m bench.stride [channels] [strides]``: the seeded synthetic model at
``channels`` auxiliary channels (10 witnesses, the rest 16 Hz noise), the demo
classifiers trained on 240 s and calibrated on the next 240 s, then ``strides`` strides
of 1 s through :func:`idq_common.science.stride.stride_products`, once one stride per
call and once all strides in one call. Reports **CPU** milliseconds per stride
(``time.process_time``: meaningful on a shared machine, unlike wall time) and checks
that both ways give bit-identical products.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from bench._infra import BASE_CONFIG

T0 = 1_400_000_000.0
RATE = 128.0


def _cpu(fn: Any) -> tuple[float, Any]:
    tic = time.process_time()
    out = fn()
    return time.process_time() - tic, out


def measure(channels: int = 1000, n_strides: int = 64) -> dict[str, Any]:
    """CPU ms per stride, one per call and batched (module docstring)."""
    from igwn_segments import segment, segmentlist

    from idq_common.config import load_settings
    from idq_common.data.synthetic import SyntheticModel, SyntheticSource
    from idq_common.science.calibration import CalibrationMap
    from idq_common.science.classifiers import make_classifier
    from idq_common.science.features import FeatureSpec
    from idq_common.science.quiver import build_quiver
    from idq_common.science.stride import Calibrated, Stride, stride_products

    settings = load_settings(BASE_CONFIG, env={})
    model = SyntheticModel(
        seed=11, n_witness=10, n_noise=channels - 10, noise_background_rate=16.0, glitch_rate=1.0
    )
    spec = FeatureSpec(
        model.aux_channels, settings.features.window, tuple(settings.features.columns)
    )
    smp = settings.samples

    def quiver(start: float, seed: int) -> Any:
        return build_quiver(
            SyntheticSource(model, start, start + 240.0),
            model.target_channel,
            smp.target_bounds,
            2.0,
            smp.dirty_bounds,
            smp.dirty_window,
            seed,
            spec,
        )

    train, calib = quiver(T0, 1), quiver(T0 + 240.0, 2)
    models = {}
    for c in settings.classifiers:
        clf = make_classifier(c.nickname, c.flavor, c.params, spec)
        clf.train(train)
        r = clf.rank(calib.features)
        cmap = CalibrationMap.fit(r[calib.labels == 1], r[calib.labels == 0])
        models[c.nickname] = Calibrated(clf, cmap)
    p0 = T0 + 1000.0
    trig = model.generate(p0 - 1.0, p0 + n_strides + 1.0)
    valid = segmentlist([segment(p0, p0 + n_strides)])
    strides = [Stride(p0 + k, p0 + k + 1.0, valid) for k in range(n_strides)]
    stride_products(trig, strides[:2], RATE, models)  # warm-up
    one_s, one = _cpu(lambda: [stride_products(trig, [s], RATE, models)[0] for s in strides])
    all_s, batched = _cpu(lambda: stride_products(trig, strides, RATE, models))
    identical = all(
        np.array_equal(a.products[n][p], b.products[n][p])
        for a, b in zip(one, batched, strict=True)
        for n in a.products
        for p in a.products[n]
    )
    return {
        "channels": channels,
        "strides": n_strides,
        "classifiers": sorted(models),
        "cpu_ms_per_stride_one_per_call": round(1000 * one_s / n_strides, 2),
        "cpu_ms_per_stride_batched": round(1000 * all_s / n_strides, 2),
        "x_realtime_cpu_batched": round(n_strides / all_s, 1),
        "bit_identical": identical,
    }


if __name__ == "__main__":
    import json

    argv = [int(a) for a in sys.argv[1:]]
    print(json.dumps(measure(*argv), indent=2))
