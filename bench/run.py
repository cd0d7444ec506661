"""``python -m bench.run [--quick|--full] [--out PATH]``: the benchmark suite.

Starts one local Kafka broker (KRaft, 127.0.0.1), then: replay (which also measures
the ceiling on each topic and samples memory), scale-out, live latency and science.
Writes ``bench/results/latest.json`` (shape in issue 6) and prints a table against
the targets. Figures are for comparison within one run: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import replay
from bench._infra import REPO, machine
from idq_common.logs import setup_logging

log = logging.getLogger(__name__)
RESULTS = REPO / "bench" / "results" / "latest.json"

#: channels -> replayed seconds
FULL: dict[str, Any] = {
    # 3,000 channels: >= 50 glitch samples (the calibration's health minimum) need ~400 s
    "replay": {100: 1800.0, 1000: 600.0, 3000: 480.0},
    # bench.scale_out: replayed seconds at 1,000 channels (its own topic)
    "scale_out_span": 1800.0,
    "live_s": 300.0,
    "science_span": 4000.0,
    "invariance_span": 256.0,
    # bench.science.families: span per train/calibrate/test part, scenario seeds
    # (5 and 6 beside the issue's 2-4: a figure met on three seeds may be seed luck)
    "families": {"span": 4000.0, "seeds": (2, 3, 4, 5, 6, 7, 8, 9, 10)},
    # bench.classifiers: training span and prediction grid at 1,000 channels
    "classifiers": {"train_span": 240.0, "predict_s": 16.0, "repeats": 3},
    # bench.query: +-8 s alert queries over a day of one-second frames (cached)
    "query": {"span": 86400.0, "queries": 200},
    # bench.ingest: seconds of SNAX and of sgnax JSON at 1,000 channels through idq-ingest
    "ingest_span": 300.0,
    # models and calibrations must appear within the shortest replay (~0.6 samples/s)
    "overrides": {"train.min_new_samples": "100", "calibrate.min_new_samples": "100"},
}
QUICK: dict[str, Any] = {
    "replay": {1000: 64.0},
    "live_s": 15.0,
    "science_span": 800.0,
    "invariance_span": 32.0,
    "families": {"span": 1500.0, "seeds": (2,)},
    "classifiers": {"train_span": 60.0, "predict_s": 2.0, "repeats": 1},
    "query": {"span": 600.0, "queries": 50},
    "ingest_span": 30.0,
    # a minute of data holds ~40 samples: train and calibrate must fire on fewer
    "overrides": {"train.min_new_samples": "20", "calibrate.min_new_samples": "20"},
}
TARGET_CHANNELS = 1000


def main(args: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.run", description=__doc__)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="reduced suite (< 2 min)")
    g.add_argument("--full", action="store_true", help="the full suite (default)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write the JSON (default: bench/results/latest.json for the "
        "full suite, bench/results/quick.json for --quick, so a quick run "
        "never overwrites the committed full results)",
    )
    p.add_argument("--workdir", type=Path, default=None, help="broker data and logs")
    ns = p.parse_args(args)
    if ns.out is None:
        ns.out = RESULTS.with_name("quick.json") if ns.quick else RESULTS
    # SIGTERM unwinds like Ctrl-C, so the broker and service processes are stopped
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    setup_logging(logging.INFO)
    # the in-process science run would log every stride of the library at INFO
    logging.getLogger("idq_common").setLevel(logging.WARNING)
    plan = QUICK if ns.quick else FULL
    workdir = ns.workdir or Path(tempfile.mkdtemp(prefix="idq-bench-"))
    shutil.rmtree(workdir / "kafka", ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    t_begin = time.monotonic()
    profile_dir = None if ns.quick else ns.out.resolve().parent
    result = run_suite(plan, workdir.resolve(), quick=ns.quick, profile_dir=profile_dir)
    result["wall_s"] = round(time.monotonic() - t_begin, 1)
    overrides: dict[str, str] = dict(plan.get("overrides", {}))
    result["config_overrides"] = {**overrides, **replay.OVERRIDES}
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print_table(result)
    print(f"results: {ns.out}  logs: {workdir}")
    return 0


def run_suite(
    plan: dict[str, Any], workdir: Path, quick: bool, profile_dir: Path | None = None
) -> dict[str, Any]:
    from bench import classifiers, live, scale_out, science
    from bench._infra import write_config
    from idq_common.gpstime import gps_now
    from idq_common.science import _windows
    from idq_dev.broker import LocalBroker

    # the numba kernels compiled (or loaded) once here, into the on-disk cache the stage
    # processes load: no measured process pays a first compile (~1.5-2 s CPU)
    _windows.warm()
    result: dict[str, Any] = {
        "suite": "quick" if quick else "full",
        "machine": machine(),
        "started_unix": round(time.time(), 1),
        # the machine is shared: load averages (1, 5, 15 min) when the run started
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
    }
    broker = LocalBroker(workdir / "kafka")
    status = broker.start()
    bootstrap = str(status.bootstrap)
    try:
        spans = plan["replay"]
        start = float((int(gps_now()) - 7200) // 64 * 64)
        replays: dict[int, dict[str, Any]] = {}
        result["replay"], ceilings = [], {}
        for ch, span in spans.items():
            r = replay.measure(
                workdir,
                bootstrap,
                ch,
                start,
                span,
                timeout=max(300, 10 * span),
                overrides=plan.get("overrides"),
            )
            replays[ch] = r
            result["replay"].extend(r["stages"])
            ceilings[str(ch)] = r["ceiling"]
            result.setdefault("producer", {})[str(ch)] = r["producer"]
        ref = replays[TARGET_CHANNELS]
        result["ceiling"] = {**ceilings[str(TARGET_CHANNELS)], "by_channels": ceilings}
        # memory over the longest replay (most data seconds), every service
        longest = max(replays.values(), key=lambda r: r["span_s"] * r["channels"])
        result["memory"] = [proc.memory() for proc in longest["processes"].values()]
        result["memory_of"] = {"channels": longest["channels"], "span_s": longest["span_s"]}
        result["memory_by_channels"] = {
            str(ch): [proc.memory() for proc in rp["processes"].values()]
            for ch, rp in replays.items()
        }
        cfg = ref["config"]
        # its own topic over a longer span, the one replica measured beside the two
        so_span = plan.get("scale_out_span", ref["span_s"])
        result["scale_out"] = scale_out.run(
            workdir,
            bootstrap,
            cfg,
            start,
            so_span,
            ref["ceiling"]["rows"] / (ref["span_s"] + 2 * replay.MARGIN),
            timeout=max(300, 10 * so_span),
            overrides=plan.get("overrides"),
            own_topic="scale_out_span" in plan,
        )
        if profile_dir is not None:
            from bench.profile import MODULES, profile_stage

            result["profiles"] = {}
            for x in ref["stages"]:
                if x["stage"] in MODULES and x["x_realtime"] < 100:
                    path = profile_stage(
                        cfg,
                        x["stage"],
                        start,
                        start + ref["span_s"],
                        profile_dir,
                        timeout=max(300, 10 * ref["span_s"]),
                    )
                    result["profiles"][x["stage"]] = str(
                        path.relative_to(REPO) if path.is_relative_to(REPO) else path
                    )
        live_cfg = write_config(workdir, "live", bootstrap, TARGET_CHANNELS, share=cfg)
        from bench._infra import create_run_topics

        create_run_topics(live_cfg)
        result["live"] = live.measure(live_cfg, plan["live_s"], warmup_s=5.0 if quick else 10.0)
        from bench import ingest

        result["ingest"] = ingest.measure(workdir, bootstrap, plan["ingest_span"], TARGET_CHANNELS)
    finally:
        broker.stop()
    result["science"] = science.measure(
        plan["science_span"],
        plan["invariance_span"],
        plan["families"]["span"],
        plan["families"]["seeds"],
    )
    result["classifiers"] = classifiers.measure(**plan["classifiers"])
    from bench import query

    q = plan["query"]
    # the quick suite's frames are its own; the full suite's day is cached and reused
    frames = workdir / "query-frames" if quick else None
    result["query"] = query.measure(q["span"], workdir / "query", q["queries"], frames)
    from bench import stride

    # the timeseries computation alone, in CPU time (bench.stride): 1 s strides at 1,000 ch
    result["stride"] = stride.measure(TARGET_CHANNELS, 16 if quick else 64)
    result["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["targets"] = verdicts(result)
    return result


def verdicts(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 6 with the measured figure and met / missed."""
    out = []

    def add(name: str, value: Any, target: str, ok: bool) -> None:
        out.append({"target": name, "value": value, "goal": target, "met": bool(ok)})

    # a replay that ranked nothing (no healthy calibration) is not a throughput figure
    at = [x for x in r["replay"] if x["channels"] == TARGET_CHANNELS and x.get("valid", True)]
    for x in at:
        add(
            f"replay x_realtime {x['stage']} @1000ch",
            x["x_realtime"],
            ">= 100",
            x["x_realtime"] >= 100,
        )
    ingest = [x for x in at if x["input"] == "features"]
    if ingest:
        best = max(x["ratio_to_ceiling"] for x in ingest)
        add("ingest / ceiling (best feature stage @1000ch)", best, ">= 0.5", best >= 0.5)
    # issue 6's goal is the latency the pipeline adds; the absolute p99 (r["live"])
    # includes the configured delay (1 s in the bench), so "<= 1 s" of it cannot be met
    add(
        "live p99 added latency beyond delay (s)",
        r["live"]["added_latency_p99_s"],
        "<= 1",
        r["live"]["added_latency_p99_s"] <= 1,
    )
    for m in r["memory"]:
        # flat = the loop's last quarter against its second (trend_pct, start-up
        # excluded); growth_pct's warm point falls inside start-up in a short replay
        trend = m.get("trend_pct")
        flat = m["growth_pct"] if trend is None else trend
        add(
            f"RSS {m['service']} peak MiB / trend % (growth %)",
            [m["peak_rss_mib"], trend, m["growth_pct"]],
            "<= 1024 / <= 10",
            m["peak_rss_mib"] <= 1024 and flat <= 10,
        )
    so = r["scale_out"]
    add("2 replicas / 1 replica", so["speedup"], ">= 1.7", so["speedup"] >= 1.7)
    for key in ("cpu_ratio_per_replica", "loop_cpu_ratio_per_replica"):
        ratio = so.get(key)
        add(f"scale-out {key}", ratio, "<= 0.6", ratio is not None and ratio <= 0.6)
    sc = r["science"]
    add(
        "stride invariance max |diff|",
        sc["stride_invariance_max_abs_diff"],
        "<= 1e-12",
        sc["stride_invariance_max_abs_diff"] <= 1e-12,
    )
    add(
        f"best classifier ({sc['best_classifier']}) / optimal @FAP 1e-2",
        sc["best_ratio_to_optimal_at_0.01"],
        ">= 0.9",
        sc["best_ratio_to_optimal_at_0.01"] >= 0.9,
    )
    fam = sc.get("families")
    if fam:
        seeds = ",".join(fam["seeds"])
        add(
            f"families (seeds {seeds}): best ({fam['best_classifier']}) / witnessed bound @1e-2",
            fam["best_ratio_to_bound"],
            ">= 0.8",
            fam["best_ratio_to_bound"] >= 0.8,
        )
        if "best_mean_ratio_to_bound" in fam:
            add(
                f"families (seeds {seeds}): best ({fam['best_classifier']}) / witnessed bound"
                " @1e-2, mean over the seeds",
                fam["best_mean_ratio_to_bound"],
                "info: >= 0.8?",
                fam["best_mean_ratio_to_bound"] >= 0.8,
            )
        add(
            f"families (seeds {seeds}): Bayes-optimal / witnessed bound @1e-2 (ceiling)",
            fam["optimal_ratio_to_bound"],
            "info: >= 0.8?",
            fam["optimal_ratio_to_bound"] >= 0.8,
        )
        if "trigger_optimal_ratio_to_bound" in fam:
            add(
                f"families (seeds {seeds}): Bayes-optimal of all triggers / bound @1e-2"
                " (ceiling of any features)",
                fam["trigger_optimal_ratio_to_bound"],
                "info: >= 0.8?",
                fam["trigger_optimal_ratio_to_bound"] >= 0.8,
            )
        add(
            f"families (seeds {seeds}): best ({fam['best_classifier']}) / Bayes-optimal @1e-2",
            fam["best_ratio_to_optimal"],
            ">= 0.9",
            fam["best_ratio_to_optimal"] >= 0.9,
        )
        add(
            f"families (seeds {seeds}): OVL / witnessed bound @1e-2",
            fam["ovl_ratio_to_bound"],
            ">= 0.5",
            fam["ovl_ratio_to_bound"] >= 0.5,
        )
        add(
            f"families (seeds {seeds}): best FA@1e-2, sigmas from 1e-2",
            fam["best_fa_max_sigmas"],
            "<= 3",
            fam["best_fa_max_sigmas"] <= 3,
        )
    hv = sc["hveto"]
    add(
        "OVL eff vs hveto eff @ hveto deadtime",
        [hv.get("ovl_efficiency"), hv.get("efficiency")],
        "ovl >= hveto",
        hv.get("ovl_efficiency", 0) >= hv.get("efficiency", 1),
    )
    for x in r.get("ingest", {}).get("styles", []):
        add(
            f"idq-ingest {x['style']} JSON x_realtime @{x['channels']}ch",
            x["x_realtime"],
            ">= 20",
            x["valid"] and x["x_realtime"] >= 20,
        )
    q = r.get("query")
    if q:
        add(
            f"query p50 latency ms over {q['span_s'] / 3600:g} h of frames",
            q["latency_ms_p50"],
            "< 100",
            q["latency_ms_p50"] < 100,
        )
    return out


def print_table(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(f"\nidq benchmarks ({r['suite']}) on {m['cores']} cores, {m['cpu']}")
    print(f"ceiling: {r['ceiling']['rows_per_s']:,.0f} rows/s")
    print(f"{'stage':12s}{'channels':>9s}{'x_realtime':>12s}{'rows/s':>12s}{'/ceiling':>10s}")
    for x in r["replay"]:
        print(
            f"{x['stage']:12s}{x['channels']:>9d}{x['x_realtime']:>12.1f}"
            f"{x['rows_per_s']:>12,.0f}{x['ratio_to_ceiling']:>10.3f}"
        )
    cl = r.get("classifiers")
    if cl:
        print(
            f"classifiers @{cl['channels']}ch ({cl['feature_columns']} columns, "
            f"{cl['train_samples']} training samples)"
        )
        print(f"{'flavor':24s}{'model KiB':>11s}{'load s':>9s}{'rank samples/s':>16s}")
        for name, c in cl["flavors"].items():
            print(
                f"{name:24s}{c['model_bytes'] / 1024:>11,.0f}{c['load_s']:>9.4f}"
                f"{c['predict_samples_per_s']:>16,.0f}"
            )
    for x in r.get("ingest", {}).get("styles", []):
        print(
            f"ingest {x['style']} @{x['channels']}ch ({x['jobs']} jobs): {x['x_realtime']}x real "
            f"time ({x['x_realtime_cpu']}x per CPU second), {x['rows_per_s']:,} rows/s, "
            f"{x['mib_per_s']} MiB/s of JSON"
        )
    q = r.get("query")
    if q:
        print(
            f"query +-{q['window_s']:g} s over {q['frames']} frames: p50 {q['latency_ms_p50']} ms, "
            f"p95 {q['latency_ms_p95']} ms (CPU p50 {q['cpu_ms_p50']} ms); "
            f"cold CLI {q['cli_cold_s']} s"
        )
    print(f"{'target':58s}{'value':>24s}  {'goal':16s}met")
    for t in r["targets"]:
        print(
            f"{t['target']:58s}{json.dumps(t['value']):>24s}  {t['goal']:16s}"
            f"{'yes' if t['met'] else 'NO'}"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
