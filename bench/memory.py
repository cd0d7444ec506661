"""``python -m bench.memory``: peak RSS, growth and CPU seconds of chosen stages, alone.

The memory part of the replay (:mod:`bench.replay`) without the rest of the suite, for
measuring one change at a time: the features are produced once per channel count into
``<workdir>/replay<channels>`` (one span and one config per workdir: a call whose
config would produce the data differently, e.g. another partitioner, refuses the
stale data) and kept with the broker's data in
``<workdir>/kafka`` (the broker is stopped at exit and restarted on the next call), and
every call replays them through the chosen stages with its own topics for everything
else (models, quivers, calibrations, timeseries), so calls never see each other's
outputs. A stage that needs another's output (evaluate: models; calibrate: quivers;
timeseries: calibrations) needs that stage in the same call, before it.

Figures per stage: ``peak_rss_mib``, ``final_rss_mib``, ``warm_rss_mib``, ``growth_pct``
(:meth:`bench._infra.Sampled.memory`), ``cpu_s`` and ``x_realtime_cpu`` (span / CPU
seconds of the process, from ``wait4``: the figure to trust on a shared machine),
``wall_s``, and the load averages at start and end. ``--env K=V`` passes an
environment variable to the stages (e.g. ``MALLOC_ARENA_MAX=2``).

Example: ``python -m bench.memory --channels 3000 --span 480 --stages train,evaluate``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import replay
from bench._infra import RunConfig, create_run_topics, read_records, reset_group, write_config
from idq_common.contracts import STAGES
from idq_common.logs import setup_logging

log = logging.getLogger(__name__)


def _data_config(workdir: Path, bootstrap: str, channels: int) -> RunConfig:
    """The config :func:`bench.replay.prepare` writes (its topics hold the data)."""
    return write_config(workdir, f"replay{channels}", bootstrap, channels)


def _run_config(
    workdir: Path,
    bootstrap: str,
    data: RunConfig,
    tag: str,
    overrides: dict[str, str],
    extra_toml: str = "",
) -> RunConfig:
    """A config with its own topics but the data run's features and segments."""
    cfg = write_config(
        workdir,
        f"run{data.channels}_{tag}",
        bootstrap,
        data.channels,
        overrides={**replay.OVERRIDES, **overrides},
    )
    text = cfg.path.read_text()
    for kind in ("features", "segments"):
        text = re.sub(rf'(?m)^{kind} = "bench\.[^"]*"$', f'{kind} = "{data.topics[kind]}"', text)
        cfg.topics[kind] = data.topics[kind]
    cfg.path.write_text(text + extra_toml)
    return cfg


def _every(rss: list[tuple[float, float]], step: float) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for t, m in rss:
        if not out or t >= out[-1][0] + step:
            out.append((round(t, 1), round(m)))
    return out


def measure(
    workdir: Path,
    bootstrap: str,
    channels: int,
    span: float,
    stages: Sequence[str],
    tag: str,
    overrides: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    start: float | None = None,
    extra_toml: str = "",
    profile: bool = False,
) -> dict[str, Any]:
    """Replay ``stages`` in order over the (produced once) data; memory and CPU figures."""
    data = _data_config(workdir, bootstrap, channels)
    marker = data.workdir / "produced.json"
    # how the data was produced (partitioner, block length, ...): the config without
    # its broker address; data produced under another one is stale (e.g. a features
    # topic partitioned by key read by stages that expect blocks)
    recipe = hashlib.sha256(
        re.sub(r"(?m)^bootstrap_servers = .*$", "", data.path.read_text()).encode()
    ).hexdigest()[:16]
    if marker.exists():
        made = json.loads(marker.read_text())
        if made["span"] != span or made.get("recipe") != recipe:
            raise SystemExit(
                f"{data.workdir} holds data of another span or config "
                f"({made['span']} s, recipe {made.get('recipe')}): use another --workdir"
            )
        start = float(made["start"])
    else:
        from idq_common.gpstime import gps_now

        start = start or float((int(gps_now()) - 7200) // 64 * 64)
        _, prod = replay.prepare(workdir, bootstrap, channels, start, span)
        marker.write_text(json.dumps({"start": start, "span": span, "recipe": recipe, **prod}))
    from idq_common.science import _windows

    _windows.warm()  # compiled into the on-disk cache: no measured stage pays a compile
    cfg = _run_config(workdir, bootstrap, data, tag, overrides or {}, extra_toml)
    create_run_topics(cfg)
    out: dict[str, Any] = {
        "channels": channels,
        "span_s": span,
        "tag": tag,
        "env": env or {},
        "overrides": overrides or {},
        "extra_toml": extra_toml,
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
        "stages": [],
    }
    for stage in stages:
        if profile:
            from bench.profile import profile_stage

            path = profile_stage(
                cfg, stage, start, start + span, cfg.workdir / "profiles", max(300, 10 * span)
            )
            out["stages"].append({"service": stage, "profile": str(path)})
            log.info("bench.memory %s: profile in %s", stage, path)
            continue
        # progress is committed per group on the (shared) features topic: start afresh
        reset_group(cfg, f"idq.H1.{stage}")
        res = replay.run_stage(cfg, stage, start, start + span, max(300, 10 * span), env=env)
        fig = {
            **res.memory(),
            "cpu_s": round(res.cpu_s, 2) if res.cpu_s else None,
            "x_realtime_cpu": round(span / res.cpu_s, 1) if res.cpu_s else None,
            # CPU s when /healthz first answered (imports, config, clients), and after
            "cpu_up_s": round(res.cpu_up_s, 2) if res.cpu_up_s is not None else None,
            "cpu_loop_s": round(res.cpu_s - res.cpu_up_s, 2)
            if res.cpu_s and res.cpu_up_s is not None
            else None,
            **replay.work_done(stage, cfg),
            # the RSS curve every ~5 s (t s, MiB): flat, a ramp or a single peak
            "rss_every_5s": _every(res.rss, 5.0),
        }
        if stage == "train":
            # what train produced, to compare runs of different code (same data)
            fig["models"] = [(r["classifier"], r["model_id"]) for r in read_records(cfg, "models")]
        out["stages"].append(fig)
        log.info("bench.memory %s: %s", stage, fig)
    out["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    return out


def main(args: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.memory", description=__doc__)
    p.add_argument("--channels", type=int, default=3000)
    p.add_argument("--span", type=float, default=480.0)
    p.add_argument("--stages", default="train,evaluate,calibrate", help="comma-separated, in order")
    p.add_argument("--tag", default=None, help="names this call's topics (default: a time stamp)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/idq-bench-memory"))
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--toml", default="", help="TOML text appended to the run's config")
    p.add_argument(
        "--profile",
        action="store_true",
        help="run the stages under pyinstrument instead (text reports under the run's dir)",
    )
    p.add_argument("--out", type=Path, default=None, help="append the JSON figures here")
    ns = p.parse_args(args)
    stages = [s for s in ns.stages.split(",") if s]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        p.error(f"unknown stages {bad}; choose from {list(STAGES)}")
    overrides = {"train.min_new_samples": "100", "calibrate.min_new_samples": "100"}
    overrides.update(dict(kv.split("=", 1) for kv in ns.set))
    env = dict(kv.split("=", 1) for kv in ns.env)
    setup_logging(logging.INFO)
    from idq_dev.broker import LocalBroker

    ns.workdir.mkdir(parents=True, exist_ok=True)
    broker = LocalBroker(ns.workdir.resolve() / "kafka", tie_to_parent=True)
    bootstrap = str(broker.start().bootstrap)
    try:
        tag = ns.tag or time.strftime("%H%M%S")
        result = measure(
            ns.workdir.resolve(),
            bootstrap,
            ns.channels,
            ns.span,
            stages,
            tag,
            overrides,
            env,
            extra_toml=ns.toml.replace("\\n", "\n"),
            profile=ns.profile,
        )
    finally:
        broker.stop()
    text = json.dumps(result)
    print(text)
    if ns.out is not None:
        with ns.out.open("a") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
