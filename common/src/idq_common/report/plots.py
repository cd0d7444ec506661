"""The report's figures (matplotlib, Agg backend), each returned as a base64 PNG.

PNG embedded in the page as ``data:`` URIs: the page is one self-contained file that
can be mailed, archived or served as is.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

from idq_common.report.gather import ClassifierReport, ReportData, roc

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def to_png(fig: Any) -> str:
    """The figure as a base64 PNG (and closes it)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _plt().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def roc_figure(rep: ClassifierReport, max_models: int = 3) -> str:
    """Efficiency vs FAP (log x) from the quivers, for the newest models."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 4.0))
    order = [a["model_id"] for a in rep.models if a["model_id"] in rep.samples]
    order += [m for m in rep.samples if m not in order]
    shown = 0
    for i, model_id in enumerate(order[-max_models:][::-1]):
        fap, eff = roc(rep.samples[model_id])
        if fap.size == 0:
            continue
        n_g = int((rep.samples[model_id][1] == 1).sum())
        n_c = int((rep.samples[model_id][1] == 0).sum())
        ax.step(
            np.maximum(fap, 1.0 / (n_c + 1)),
            eff,
            where="post",
            color=COLORS[i % len(COLORS)],
            label=f"{model_id[:12]} ({n_g} glitch, {n_c} clean)",
        )
        shown += 1
    lo = 1e-4
    ax.plot([lo, 1], [lo, 1], ls=":", color="0.5", label="chance")
    ax.set(xscale="log", xlim=(lo, 1), ylim=(0, 1.02), xlabel="FAP", ylabel="efficiency")
    ax.set_title(f"{rep.name}: ROC from evaluated samples")
    ax.grid(True, which="both", alpha=0.3)
    if shown:
        ax.legend(fontsize=7, loc="lower right")
    else:
        _empty(ax, "no evaluated samples with both classes in the span")
    return to_png(fig)


def coverage_figure(rep: ClassifierReport) -> tuple[str, str]:
    """Observed vs nominal FAP of the newest calibration, with the binomial 3-sigma band.

    The clean samples of the model the calibration was fitted for, ranked after the
    calibration's span when there are enough of them (out of sample), else all of
    them (in sample; said in the note).
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 4.0))
    note = ""
    nominal = np.logspace(-4, 0, 60)
    cal = rep.calibration
    samples = rep.samples.get(rep.calibration_model or "")
    if cal is None or samples is None:
        _empty(ax, "no calibration, or no evaluated samples of its model")
        note = "no calibration with evaluated samples of its model in the span"
    else:
        t, y, r = samples
        after = rep.calibrations[-1]["end"]
        clean_after = r[(y == 0) & (t >= after)]
        if clean_after.size >= 100:
            ranks, note = clean_after, f"{clean_after.size} clean samples after the calibration"
        else:
            ranks = r[y == 0]
            note = f"{ranks.size} clean samples (in sample: fewer than 100 after the calibration)"
        if ranks.size:
            fap = np.asarray(cal.fap(ranks))
            observed = (fap[None, :] <= nominal[:, None]).mean(axis=1)
            sigma = np.sqrt(nominal * (1 - nominal) / ranks.size)
            ax.fill_between(
                nominal,
                np.maximum(nominal - 3 * sigma, 1e-5),
                nominal + 3 * sigma,
                color="0.85",
                label="3-sigma (binomial)",
            )
            ax.plot(nominal, np.maximum(observed, 1e-5), color=COLORS[0], label="observed")
        ax.plot(nominal, nominal, ls=":", color="0.3", label="ideal")
        ax.legend(fontsize=7, loc="lower right")
    ax.set(xscale="log", yscale="log", xlim=(1e-4, 1), ylim=(1e-5, 1.5))
    ax.set(xlabel="nominal FAP", ylabel="observed fraction of clean samples")
    ax.set_title(f"{rep.name}: calibration coverage")
    ax.grid(True, which="both", alpha=0.3)
    return to_png(fig), note


def timeseries_figure(data: ReportData) -> str:
    """FAP (log) and PGLITCH of every classifier, OK = 0 shaded, target triggers over it."""
    plt = _plt()
    fig, (a_fap, a_pg) = plt.subplots(2, 1, figsize=(10, 5.2), sharex=True)
    t0 = data.start
    any_bins = False
    for i, rep in enumerate(data.classifiers.values()):
        b = rep.bins
        if not b or b["t"].size == 0:
            continue
        any_bins = True
        x = b["t"] - t0
        c = COLORS[i % len(COLORS)]
        a_fap.plot(x, b["fap"], color=c, lw=0.8, label=rep.name)
        a_pg.plot(x, b["pglitch"], color=c, lw=0.8, label=rep.name)
    # shade where no classifier has a valid product (OK = 0 everywhere)
    reps = [r for r in data.classifiers.values() if r.bins]
    if reps:
        x = reps[0].bins["t"] - t0
        ok = np.max([r.bins["ok"] for r in reps], axis=0)
        for ax in (a_fap, a_pg):
            ax.fill_between(
                x,
                0,
                1,
                where=ok < 0.5,
                step="post",
                color="0.85",
                transform=ax.get_xaxis_transform(),
                label="OK = 0",
            )
    if data.glitch_times.size:
        for ax in (a_fap, a_pg):
            ax.vlines(
                data.glitch_times - t0,
                0.9,
                1.0,
                transform=ax.get_xaxis_transform(),
                color="k",
                lw=0.6,
                label="target triggers",
            )
    a_fap.set(yscale="log", ylabel="min FAP per s", ylim=(1e-4, 1.2))
    a_pg.set(ylabel="max PGLITCH per s", ylim=(0, 1.02))
    a_pg.set(xlabel=f"seconds after GPS {t0:.0f}", xlim=(0, data.end - t0))
    for ax in (a_fap, a_pg):
        ax.grid(True, alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles, strict=True))
        if uniq:
            ax.legend(uniq.values(), uniq.keys(), fontsize=7, loc="lower left", ncol=5)
    if not any_bins:
        _empty(a_fap, "no frames in the span")
    a_fap.set_title(f"{data.ifo} iDQ timeseries")
    return to_png(fig)


def importance_figure(
    name: str, method: str, ranked: list[tuple[str, float]], top: int = 15
) -> str:
    """Horizontal bars of the most important channels."""
    plt = _plt()
    rows = ranked[:top][::-1]
    fig, ax = plt.subplots(figsize=(6.5, 0.28 * max(len(rows), 3) + 1.0))
    if rows:
        ax.barh([c for c, _ in rows], [v for _, v in rows], color=COLORS[0])
        ax.tick_params(axis="y", labelsize=7)
    else:
        _empty(ax, "no importances for this model")
    ax.set(xlabel=f"share of importance ({method})")
    ax.set_title(f"{name}: most important channels")
    return to_png(fig)
