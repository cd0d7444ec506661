"""``idq demo``: the whole pipeline on this machine, on synthetic data, in accelerated time.

Starts a real Kafka broker (KRaft, 127.0.0.1), creates the instrument's topics, runs
the synthetic feature source and the four stage services as separate processes in
replay mode over one span of GPS time, then prints a summary (strides, models,
calibrations, frames, gaps, and the efficiency at FAP 1e-2 of the produced
timeseries against the generator's truth) and leaves the frames for gwpy.
"""

from __future__ import annotations

import argparse

NAME = "demo"
HELP = "run broker + synthetic source + the four services locally, then summarise"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from idq_common.cli.cmd_produce import add_model_arguments

    p: argparse.ArgumentParser = subparsers.add_parser(NAME, help=HELP, description=__doc__)
    p.add_argument("-c", "--config", default="etc/idq-demo.toml", help="TOML configuration")
    p.add_argument("--duration", type=float, default=3600.0, help="seconds of data to replay")
    p.add_argument("--speed", type=float, default=30.0, help="data seconds per wall second")
    p.add_argument("--workdir", default=".cache/demo", help="broker data, logs and summary")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="wall seconds allowed for the run (default: 3x duration/speed + 300)",
    )
    add_model_arguments(p)
    return p


def run(ns: argparse.Namespace) -> int:
    import json
    import logging
    import os
    import shutil
    import time
    from pathlib import Path

    from idq_common.cli.cmd_produce import model_from_args
    from idq_common.config import load_settings_or_exit
    from idq_common.contracts import STAGES
    from idq_common.gpstime import gps_now
    from idq_common.io.kafka.topics import create_topics, topic_specs
    from idq_dev.broker import LocalBroker
    from idq_dev.pipeline.local import LocalPipeline
    from idq_dev.pipeline.summary import print_summary, summarize_run

    log = logging.getLogger(__name__)
    t_begin = time.monotonic()
    workdir = Path(ns.workdir).resolve()
    settings = load_settings_or_exit(ns.config)
    # a fresh run: old frames, store, logs and broker state would mix with the new ones
    for sub in ("logs", "kafka"):
        shutil.rmtree(workdir / sub, ignore_errors=True)
    shutil.rmtree(settings.timeseries.output_dir, ignore_errors=True)
    if settings.store.scheme == "file":
        shutil.rmtree(settings.store.url[len("file://") :], ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)

    broker = LocalBroker(workdir / "kafka")
    status = broker.start()
    log.info("broker ready at %s in %.1f s", status.bootstrap, broker.start_seconds or 0)
    env = {"IDQ_KAFKA__BOOTSTRAP_SERVERS": str(status.bootstrap)}
    settings = load_settings_or_exit(ns.config, env={**os.environ, **env})
    pipeline = None
    try:
        kafka = settings.kafka
        create_topics(
            kafka.admin_config(),
            topic_specs(
                settings.general.ifo,
                kafka.topics.as_dict(),
                kafka.partitions,
                kafka.replication_factor,
                kafka.retention_ms,
                kafka.retention_bytes,
            ),
        )
        # an hour that ended ten minutes ago, aligned to the longest stride
        align = 64
        start = float((int(gps_now()) - int(ns.duration) - 600) // align * align)
        end = start + ns.duration
        producer_args = [
            "--witnesses",
            str(ns.witnesses),
            "--noise-channels",
            str(ns.noise_channels),
            "--glitch-rate",
            str(ns.glitch_rate),
            "--background-rate",
            str(ns.background_rate),
            "--seed",
            str(ns.seed),
        ]
        pipeline = LocalPipeline(
            Path(ns.config).resolve(),
            workdir,
            start,
            end,
            env=env,
            speed=ns.speed,
            producer_args=producer_args,
        )
        print(
            f"idq demo: replaying GPS [{start:.0f}, {end:.0f}) ({ns.duration:.0f} s) at "
            f"{ns.speed:g}x; logs in {workdir / 'logs'}",
            flush=True,
        )
        pipeline.start()
        timeout = ns.timeout or 3 * ns.duration / ns.speed + 300
        pipeline.wait(["produce", *STAGES], timeout=timeout)
        model = model_from_args(ns, settings.general.ifo, settings.samples.target_channel)
        summary = summarize_run(settings, model, start, end)
        summary["wall_seconds"] = round(time.monotonic() - t_begin, 1)
        summary["broker_start_seconds"] = round(broker.start_seconds or 0, 1)
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
        print_summary(summary)
        print(f"frames: {settings.timeseries.output_dir}  summary: {workdir / 'summary.json'}")
        return 0
    finally:
        if pipeline is not None:
            pipeline.stop()
        broker.stop()
