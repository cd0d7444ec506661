"""The report as one self-contained HTML page (figures embedded as base64 PNG)."""

from __future__ import annotations

import datetime as _dt
from collections import Counter
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

import numpy as np

from idq_common.report import plots
from idq_common.report.gather import ClassifierReport, ReportData, channel_importance

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
.figs { display: flex; flex-wrap: wrap; gap: 1em; } .note { color: #666; font-size: 0.85em; }
.bad { color: #b00; }
"""


def _img(png: str, alt: str) -> str:
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{png}">'


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]], left: int = 1) -> str:
    out = ["<table><tr>"]
    out += [f'<th class="{"l" if i < left else ""}">{escape(h)}</th>' for i, h in enumerate(head)]
    out.append("</tr>")
    n = 0
    for row in rows:
        n += 1
        cells = [
            f'<td class="{"l" if i < left else ""}">{escape(_fmt(v))}</td>'
            for i, v in enumerate(row)
        ]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "".join(out) if n else '<p class="note">none</p>'


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not np.isfinite(v):
            return str(v)
        if abs(v) >= 1e5:  # GPS times: whole seconds
            return f"{v:.0f}"
        return f"{v:.3g}"
    return str(v)


def _fap_floor(ann: dict[str, Any]) -> tuple[float | None, str]:
    """The calibration's FAP floor: announced if the announcement carries it, else 1/(n+1)."""
    for where in (ann, ann.get("metrics") or {}):
        # 0: a record from before the field existed (not recorded)
        if where.get("fap_floor"):
            return float(where["fap_floor"]), "announced"
    n = ann.get("n_clean")
    return (1.0 / (int(n) + 1), "1/(n_clean+1)") if n is not None else (None, "")


def _history(rep: ClassifierReport) -> str:
    models = _table(
        ["model id", "created GPS", "span start", "span end", "samples", "metrics"],
        (
            [
                a["model_id"],
                a["created_gps"],
                a["start"],
                a["end"],
                a["n_samples"],
                ", ".join(f"{k}={v:.3g}" for k, v in sorted((a.get("metrics") or {}).items())),
            ]
            for a in rep.models
        ),
    )
    cal_rows = []
    for a in rep.calibrations:
        floor, how = _fap_floor(a)
        cal_rows.append(
            [
                a["calibration_id"],
                a["model_id"],
                a["created_gps"],
                a["start"],
                a["end"],
                a["n_glitch"],
                a["n_clean"],
                a["healthy"],
                floor,
                how,
            ]
        )
    cals = _table(
        [
            "calibration id",
            "model id",
            "created GPS",
            "span start",
            "span end",
            "glitch",
            "clean",
            "healthy",
            "FAP floor",
            "floor from",
        ],
        cal_rows,
        left=2,
    )
    return f"<h3>models ({len(rep.models)})</h3>{models}<h3>calibrations ({len(rep.calibrations)})</h3>{cals}"


def _ovl(rep: ClassifierReport) -> str:
    vetoes = getattr(rep.classifier, "vetoes", None)
    if vetoes is None:
        return '<p class="note">no OVL model loaded</p>'
    rows, cum_eff, cum_dt = [], 0.0, 0.0
    for v in vetoes:
        # each round's counts are of the samples the earlier vetoes left: they add up
        cum_eff += float(v["eff"])
        cum_dt += float(v["fap"])
        rows.append(
            [
                v["channel"],
                v["window"],
                v["threshold"],
                v["eff"],
                v["fap"],
                cum_eff,
                cum_dt,
                v["n_glitch"],
                v["n_clean"],
            ]
        )
    return _table(
        [
            "channel",
            "window s",
            "SNR threshold",
            "efficiency",
            "deadtime",
            "cumul. eff.",
            "cumul. deadtime",
            "glitches",
            "clean",
        ],
        rows,
    ) + (
        '<p class="note">deadtime: fraction of clean samples a veto removes (its FAP); '
        "vetoes in the order OVL applies them, each counted on what the earlier ones left.</p>"
    )


def _importance(rep: ClassifierReport) -> str:
    method, ranked = channel_importance(rep.classifier)
    if not ranked:
        return '<p class="note">no importances for this model</p>'
    fig = _img(plots.importance_figure(rep.name, method, ranked), f"{rep.name} importances")
    table = _table(["channel", "share"], ranked[:10])
    return f'<div class="figs">{fig}{table}</div>'


def _gaps(data: ReportData) -> str:
    parts = [
        f"<p>{data.frames} frames for {data.strides} strides; "
        f"{len(data.missing_strides)} spans without frames.</p>",
        _table(
            ["start GPS", "end GPS", "seconds"], ([a, b, b - a] for a, b in data.missing_strides)
        ),
    ]
    rows = []
    for rep in data.classifiers.values():
        ok = rep.bins.get("ok", np.zeros(0))
        rows.append([rep.name, float(ok.mean()) if ok.size else None, int((ok < 0.5).sum())])
    parts.append(_table(["classifier", "OK fraction", "seconds mostly OK = 0"], rows))
    return "".join(parts)


def _deadletters(data: ReportData) -> str:
    if not data.deadletters:
        return '<p class="note">none</p>'
    counts = Counter((d["stage"], d["reason"].split(":")[0][:80]) for d in data.deadletters)
    summary = _table(
        ["stage", "reason", "messages"], ([s, r, n] for (s, r), n in counts.most_common()), 2
    )
    first = _table(
        ["stage", "reason", "topic", "partition", "offset", "payload bytes"],
        (
            [d["stage"], d["reason"][:160], d["topic"], d["partition"], d["offset"], d["payload"]]
            for d in data.deadletters[:50]
        ),
        left=3,
    )
    return f"{summary}<h3>first {min(50, len(data.deadletters))}</h3>{first}"


def render(data: ReportData) -> str:
    """The whole page."""
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = [
        f"<h1>iDQ report: {escape(data.ifo)} GPS [{data.start:.0f}, {data.end:.0f})</h1>",
        f'<p class="note">{data.end - data.start:.0f} s; generated {now}; '
        f"{len(data.glitch_times)} target triggers (glitch samples) in the span</p>",
        *(f'<p class="note">{escape(n)}</p>' for n in data.notes),
        "<h2>timeseries</h2>",
        _img(plots.timeseries_figure(data), "FAP and PGLITCH timeseries"),
    ]
    for rep in data.classifiers.values():
        body.append(f"<h2>{escape(rep.name)} ({escape(rep.flavor)})</h2>")
        if rep.load_error:
            body.append(
                f'<p class="bad">cannot load the newest artifacts: {escape(rep.load_error)}</p>'
            )
        cov_png, cov_note = plots.coverage_figure(rep)
        body.append(
            '<div class="figs">'
            + _img(plots.roc_figure(rep), f"{rep.name} ROC")
            + _img(cov_png, f"{rep.name} calibration coverage")
            + "</div>"
            + f'<p class="note">coverage: {escape(cov_note)}</p>'
        )
        if rep.flavor == "ovl":
            body.append("<h3>veto list (newest model)</h3>" + _ovl(rep))
        else:
            body.append("<h3>most important channels (newest model)</h3>" + _importance(rep))
        body.append(_history(rep))
    body += ["<h2>gaps</h2>", _gaps(data), "<h2>dead letters</h2>", _deadletters(data)]
    title = f"iDQ report {data.ifo} {data.start:.0f}-{data.end:.0f}"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n"
    )
