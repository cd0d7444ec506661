"""The end-of-run summary of a local pipeline: what was produced and how good it is."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from idq_common.config import Settings
from idq_common.data.synthetic import SyntheticModel
from idq_common.report.truth import efficiency_summary, frame_files, load_series
from idq_dev.testing.topics import read_topic


def count_messages(settings: Settings, topic: str) -> list[dict[str, Any]]:
    """Decode every message of ``topic`` (small topics: announcements); undecodable ones
    are the dead letters' business, a summary goes on."""
    return [m.record for m in read_topic(settings.kafka, topic, "idq.summary", True)]


def summarize_run(
    settings: Settings, model: SyntheticModel, start: float, end: float
) -> dict[str, Any]:
    """Counts from the topics and frames, and the efficiency against ``model``'s truth."""
    from idq_common.data.synthetic import SyntheticSource

    ts = settings.timeseries
    names = [c.nickname for c in settings.classifiers]
    files = frame_files(ts.output_dir, settings.general.observatory, ts.description)
    series = load_series(files, settings.general.ifo, names, ts.fmin, ts.fmax, ts.sample_rate)
    models = count_messages(settings, settings.kafka.topics.models)
    calibrations = count_messages(settings, settings.kafka.topics.calibrations)
    quivers = count_messages(settings, settings.kafka.topics.quivers)
    deadletters = count_messages(settings, settings.kafka.topics.deadletter)
    truth = SyntheticSource(model, start, end)
    s = settings.samples
    glitches = truth.target_times(s.target_channel, s.target_bounds)
    clean = truth.random_times(1.0, s.target_channel, s.dirty_bounds, s.dirty_window, s.seed + 7)
    stride = ts.stream.stride
    expected = math.ceil((end - start) / stride)
    ok_any = [bool(np.any(v["OK"])) for v in _per_frame_ok(series, names, len(files))]
    return {
        "span": [start, end],
        "strides_expected": expected,
        "frames": len(files),
        "frames_with_output": int(sum(ok_any)),
        "models": {n: sum(1 for m in models if m["classifier"] == n) for n in names},
        "calibrations": {n: sum(1 for c in calibrations if c["classifier"] == n) for n in names},
        "evaluated_samples": int(sum(q["n"] for q in quivers)),
        "dead_letters": len(deadletters),
        "glitches_in_truth": int(glitches.size),
        "classifiers": efficiency_summary(series, glitches, clean),
    }


def _per_frame_ok(series: dict, names: list[str], n_frames: int) -> list[dict[str, np.ndarray]]:
    if not names or n_frames == 0:
        return []
    ok = np.zeros_like(series[names[0]].products["OK"])
    for n in names:
        ok = np.maximum(ok, series[n].products["OK"])
    return [{"OK": chunk} for chunk in np.array_split(ok, n_frames)]


def print_summary(summary: dict[str, Any]) -> None:
    """A short, readable table on stdout."""
    s = summary
    print(f"\nspan            GPS [{s['span'][0]:.0f}, {s['span'][1]:.0f})")
    print(
        f"frames          {s['frames']} of {s['strides_expected']} strides "
        f"({s['frames_with_output']} with OK=1 somewhere; the rest precede the first "
        "model and calibration, or are gaps)"
    )
    print(f"models          {s['models']}")
    print(f"calibrations    {s['calibrations']}")
    print(f"evaluated       {s['evaluated_samples']} samples; dead letters {s['dead_letters']}")
    print(f"truth           {s['glitches_in_truth']} glitches")
    print(
        f"\n{'classifier':<12}{'OK frac':>8}{'glitches':>10}{'eff@1e-3':>10}{'eff@1e-2':>10}"
        f"{'eff@1e-1':>10}{'FA@1e-2':>10}"
    )
    for name, c in s["classifiers"].items():
        e, fa = c["efficiency"], c["false_alarm"]
        print(
            f"{name:<12}{c['ok_fraction']:>8.2f}{c['n_glitch_ok']:>10d}{e['0.001']:>10.3f}"
            f"{e['0.01']:>10.3f}{e['0.1']:>10.3f}{fa['0.01']:>10.4f}"
        )
    if "wall_seconds" in s:
        print(f"\nwall time       {s['wall_seconds']} s")
