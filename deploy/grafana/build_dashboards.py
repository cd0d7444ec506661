"""Generate the Grafana dashboards in ``deploy/grafana/dashboards/``.

One overview of an instrument's pipeline and one dashboard per stage. The JSON is
generated so that every panel follows the same conventions (datasource variable,
``ifo`` variable, units); the committed files are the output, and
``tests/deploy/test_grafana.py`` checks that they are up to date. Metric names are the
contract of docs/ARCHITECTURE.md, "Metrics".

Usage: ``python deploy/grafana/build_dashboards.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from idq_common.contracts import SERVICES

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'ifo=~"$ifo"'


def target(expr: str, legend: str = "", instant: bool = False) -> dict[str, Any]:
    """One PromQL query of a panel."""
    t: dict[str, Any] = {"datasource": DS, "expr": expr, "refId": "A", "legendFormat": legend}
    if instant:
        t.update(instant=True, range=False, format="table")
    return t


class Layout:
    """Places panels left to right on Grafana's 24-column grid."""

    def __init__(self) -> None:
        self.x = 0
        self.y = 0
        self.row_h = 0
        self.next_id = 1
        self.panels: list[dict[str, Any]] = []

    def add(
        self,
        title: str,
        targets: list[dict[str, Any]],
        kind: str = "timeseries",
        unit: str = "short",
        w: int = 12,
        h: int = 8,
        description: str = "",
    ) -> None:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        for i, t in enumerate(targets):
            t["refId"] = chr(ord("A") + i)
        panel: dict[str, Any] = {
            "id": self.next_id,
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": {"x": self.x, "y": self.y, "w": w, "h": h},
            "targets": targets,
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {},
        }
        if kind == "table":
            panel["transformations"] = [
                {
                    "id": "organize",
                    "options": {"excludeByName": {"Time": True, "Value": True}},
                }
            ]
        self.panels.append(panel)
        self.next_id += 1
        self.x += w
        self.row_h = max(self.row_h, h)


def dashboard(uid: str, title: str, layout: Layout, tags: list[str]) -> dict[str, Any]:
    """The dashboard document around the panels, with datasource and ifo variables."""
    return {
        "uid": uid,
        "title": title,
        "tags": ["idq", *tags],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "annotations": {"list": []},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                {
                    "name": "ifo",
                    "label": "Instrument",
                    "type": "query",
                    "datasource": DS,
                    "query": {"query": "label_values(idq_ready, ifo)", "refId": "ifo"},
                    "definition": "label_values(idq_ready, ifo)",
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "refresh": 2,
                    "current": {},
                    "hide": 0,
                },
            ]
        },
        "panels": layout.panels,
    }


def pipeline_panels(lay: Layout, sel: str, by: str) -> None:
    """Panels every stage has: progress, speed, latency, lag, dead letters, gaps, health."""
    lay.add(
        "Strides processed per second",
        [
            target(
                f"sum by ({by}) (rate(idq_strides_processed_total{{{sel}}}[$__rate_interval]))",
                f"{{{{{by}}}}}",
            )
        ],
        unit="ops",
        description="Zero means the stage is not advancing (alert IDQStageNotAdvancing).",
    )
    lay.add(
        "Latency behind real time",
        [target(f"max by ({by}) (idq_latency_seconds{{{sel}}})", f"{{{{{by}}}}}")],
        unit="s",
        description="Wall-clock GPS now minus the end of the last processed stride.",
    )
    lay.add(
        "Stride processing time (p50, p95)",
        [
            target(
                f"histogram_quantile(0.5, sum by ({by}, le) (rate(idq_stride_processing_seconds_bucket{{{sel}}}[$__rate_interval])))",
                f"p50 {{{{{by}}}}}",
            ),
            target(
                f"histogram_quantile(0.95, sum by ({by}, le) (rate(idq_stride_processing_seconds_bucket{{{sel}}}[$__rate_interval])))",
                f"p95 {{{{{by}}}}}",
            ),
        ],
        unit="s",
    )
    lay.add(
        "Consumer lag",
        [
            target(
                f"sum by ({by}, topic) (idq_consumer_lag_messages{{{sel}}})",
                f"{{{{{by}}}}} {{{{topic}}}}",
            )
        ],
        description="High watermark minus committed offset; growing lag means the stage falls behind.",
    )
    lay.add(
        "Dead-lettered messages (per 5 min)",
        [
            target(
                f"sum by ({by}, reason) (increase(idq_deadletter_messages_total{{{sel}}}[5m]))",
                f"{{{{{by}}}}} {{{{reason}}}}",
            )
        ],
        kind="timeseries",
    )
    lay.add(
        "Gaps skipped (seconds per hour)",
        [
            target(
                f"sum by ({by}) (increase(idq_gap_seconds_total{{{sel}}}[1h]))", f"{{{{{by}}}}} s"
            ),
            target(f"sum by ({by}) (increase(idq_gaps_total{{{sel}}}[1h]))", f"{{{{{by}}}}} gaps"),
        ],
    )
    lay.add(
        "Loop heartbeat age",
        [
            target(
                f"time() - max by ({by}, instance) (idq_loop_heartbeat_timestamp_seconds{{{sel}}})",
                "{{instance}}",
            )
        ],
        unit="s",
        w=8,
        description="Seconds since the stage loop last turned; /healthz fails when this grows.",
    )
    lay.add(
        "Ready replicas",
        [target(f"sum by ({by}) (idq_ready{{{sel}}})", f"{{{{{by}}}}}")],
        kind="stat",
        w=8,
    )
    lay.add(
        "Last stride end (GPS)",
        [target(f"max by ({by}) (idq_last_stride_end_gps{{{sel}}})", f"{{{{{by}}}}}")],
        kind="stat",
        unit="none",
        w=8,
    )


def artifact_panels(lay: Layout, sel: str, which: tuple[str, ...]) -> None:
    """Ids and ages of the models and calibrations in use."""
    for kind in which:
        lay.add(
            f"{kind.capitalize()} in use",
            [target(f"max by (stage, classifier, id) (idq_{kind}_info{{{sel}}})", instant=True)],
            kind="table",
        )
        lay.add(
            f"{kind.capitalize()} age",
            [
                target(
                    f"max by (stage, classifier) (idq_{kind}_age_seconds{{{sel}}})",
                    "{{stage}} {{classifier}}",
                )
            ],
            unit="s",
            description=f"Now minus the creation of the {kind} in use (alert IDQ{kind.capitalize()}Stale).",
        )


def output_panels(lay: Layout, sel: str) -> None:
    """What the pipeline tells its users: PGLITCH, FAP and OK of the latest strides."""
    lay.add(
        "PGLITCH max of the latest stride",
        [target(f"max by (classifier) (idq_latest_pglitch_max{{{sel}}})", "{{classifier}}")],
        unit="percentunit",
        w=8,
    )
    lay.add(
        "FAP min of the latest stride",
        [target(f"min by (classifier) (idq_latest_fap_min{{{sel}}})", "{{classifier}}")],
        unit="none",
        w=8,
    )
    lay.add(
        "OK fraction of the latest stride",
        [target(f"min by (classifier) (idq_ok_fraction{{{sel}}})", "{{classifier}}")],
        unit="percentunit",
        w=8,
        description="0 for long means the output is flagged unusable (alert IDQOutputNotOK).",
    )


def samples_panels(lay: Layout, sel: str) -> None:
    lay.add(
        "Samples waiting for the next fit",
        [target(f"sum by (classifier) (idq_samples_accumulated{{{sel}}})", "{{classifier}}")],
    )
    lay.add(
        "Samples per second by label",
        [
            target(
                f"sum by (classifier, label) (rate(idq_samples_total{{{sel}}}[$__rate_interval]))",
                "{{classifier}} label={{label}}",
            )
        ],
        unit="ops",
    )


def overview() -> dict[str, Any]:
    lay = Layout()
    pipeline_panels(lay, SEL, "stage")
    output_panels(lay, SEL)
    artifact_panels(lay, SEL, ("model", "calibration"))
    lay.add(
        "Models and calibrations published (per hour)",
        [
            target(
                f"sum by (classifier) (increase(idq_models_published_total{{{SEL}}}[1h]))",
                "models {{classifier}}",
            ),
            target(
                f"sum by (classifier) (increase(idq_calibrations_published_total{{{SEL}}}[1h]))",
                "calibrations {{classifier}}",
            ),
        ],
    )
    lay.add(
        "GWF frames written per minute",
        [target(f"sum (rate(idq_frames_written_total{{{SEL}}}[$__rate_interval])) * 60", "frames")],
    )
    return dashboard("idq-overview", "iDQ / Overview", lay, ["overview"])


def stage_dashboard(stage: str) -> dict[str, Any]:
    sel = f'{SEL}, stage="{stage}"'
    lay = Layout()
    pipeline_panels(lay, sel, "instance")
    if stage in ("train", "calibrate"):
        samples_panels(lay, sel)
    if stage == "train":
        artifact_panels(lay, sel, ("model",))
        lay.add(
            "Models published (per hour)",
            [
                target(
                    f"sum by (classifier) (increase(idq_models_published_total{{{sel}}}[1h]))",
                    "{{classifier}}",
                )
            ],
        )
    elif stage == "evaluate":
        lay.add(
            "Quiver samples per second by label",
            [
                target(
                    f"sum by (classifier, label) (rate(idq_samples_total{{{sel}}}[$__rate_interval]))",
                    "{{classifier}} label={{label}}",
                )
            ],
            unit="ops",
        )
        artifact_panels(lay, sel, ("model",))
    elif stage == "calibrate":
        artifact_panels(lay, sel, ("model", "calibration"))
        lay.add(
            "Calibrations published (per hour)",
            [
                target(
                    f"sum by (classifier) (increase(idq_calibrations_published_total{{{sel}}}[1h]))",
                    "{{classifier}}",
                )
            ],
        )
    elif stage == "ingest":
        lay.add(
            "JSON messages refused per minute, by reason",
            [
                target(
                    f"sum by (reason) (rate(idq_deadletter_messages_total{{{sel}}}[$__rate_interval])) * 60",
                    "{{reason}}",
                )
            ],
        )
    else:
        output_panels(lay, sel)
        artifact_panels(lay, sel, ("model", "calibration"))
        lay.add(
            "GWF frames written per minute",
            [
                target(
                    f"sum by (instance) (rate(idq_frames_written_total{{{sel}}}[$__rate_interval])) * 60",
                    "{{instance}}",
                )
            ],
        )
    return dashboard(f"idq-{stage}", f"iDQ / {stage.capitalize()}", lay, [stage])


def build() -> dict[str, dict[str, Any]]:
    """File name -> dashboard document."""
    out = {"idq-overview.json": overview()}
    for stage in SERVICES:
        out[f"idq-{stage}.json"] = stage_dashboard(stage)
    return out


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, doc in build().items():
        (OUT / name).write_text(render(doc))


if __name__ == "__main__":
    main()
