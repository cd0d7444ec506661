"""idq demo: the whole pipeline on this machine, on synthetic data, in accelerated time.

Starts a real Kafka broker (KRaft, 127.0.0.1), creates the instrument's topics, runs
the synthetic feature source and the four stage services as separate processes in
replay mode over a fixed span of GPS time (same seed, same start: the same numbers),
prints progress while it runs, then a summary (strides, models, calibrations, frames,
gaps, and the efficiency of the produced timeseries against the generator's truth),
and writes the HTML report. Everything of a run stays under --workdir: frames, store,
logs, broker data, summary.json and report.html.
"""

from __future__ import annotations

import argparse

from idq_common.cli.helpformat import HelpFormatter, plain

NAME = "demo"
HELP = "run broker + synthetic source + the four services locally, then summarise"
#: default start of the replayed span (GPS), aligned to the longest stride
GPS_START = 1_400_000_000.0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from idq_common.cli.cmd_produce import add_model_arguments

    p: argparse.ArgumentParser = subparsers.add_parser(
        NAME, help=HELP, description=plain(__doc__), formatter_class=HelpFormatter
    )
    p.add_argument("-c", "--config", default="etc/idq-demo.toml", help="TOML configuration")
    p.add_argument("--gps-start", type=float, default=GPS_START, help="GPS start of the span")
    p.add_argument("--duration", type=float, default=3600.0, help="seconds of data to replay")
    p.add_argument("--speed", type=float, default=30.0, help="data seconds per wall second")
    p.add_argument(
        "--workdir",
        default=".cache/demo",
        help="every output of the run: frames, store, logs, broker data, summary, report",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="wall seconds allowed for the run (default: 3 x duration / speed + 300)",
    )
    p.add_argument(
        "--progress-every", type=float, default=10.0, help="seconds between progress lines"
    )
    add_model_arguments(p)
    return p


def too_short(settings, duration: float, glitch_rate: float) -> str | None:
    """Why ``duration`` cannot give a model and a calibration, or None when it can.

    An optimistic count: every glitch and every random time becomes a sample. Train
    fits once ``train.min_new_samples`` are in; calibrate once it has
    ``calibrate.min_new_samples`` evaluated by that first model.
    """
    rate = settings.samples.random_rate + glitch_rate
    n_train, n_cal = settings.train.min_new_samples, settings.calibrate.min_new_samples
    need = (n_train + n_cal) / rate + 2 * settings.train.stream.stride
    if duration >= need:
        return None
    return (
        f"--duration {duration:g} s is too short to train: the first model needs "
        f"train.min_new_samples = {n_train} samples and its calibration "
        f"calibrate.min_new_samples = {n_cal} more, at most {rate:g} samples/s "
        f"(samples.random_rate + --glitch-rate), so at least {need:.0f} s of data"
    )


def run(ns: argparse.Namespace) -> int:
    import json
    import logging
    import os
    import shutil
    import sys
    import time
    from pathlib import Path

    from idq_common.cli.cmd_produce import model_from_args
    from idq_common.config import load_settings_or_exit
    from idq_common.contracts import STAGES
    from idq_common.io.frames import find_frames
    from idq_common.io.kafka.topics import create_topics, settings_topic_specs
    from idq_common.progress import Progress
    from idq_common.report import write_report
    from idq_dev.broker import LocalBroker
    from idq_dev.pipeline.local import LocalPipeline
    from idq_dev.pipeline.summary import print_summary, summarize_run

    log = logging.getLogger(__name__)
    t_begin = time.monotonic()
    workdir = Path(ns.workdir).resolve()
    # this run's outputs, all under workdir, whatever paths the configuration names
    env = {
        "IDQ_TIMESERIES__OUTPUT_DIR": str(workdir / "frames"),
        "IDQ_STORE__URL": (workdir / "store").as_uri(),
    }
    settings = load_settings_or_exit(ns.config, env={**os.environ, **env})
    why = too_short(settings, ns.duration, ns.glitch_rate)
    if why:
        print(f"idq demo: {why}", file=sys.stderr)
        return 2
    # a fresh run: old outputs of this workdir would mix with the new ones
    for sub in ("logs", "kafka", "frames", "store"):
        shutil.rmtree(workdir / sub, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    start = float(ns.gps_start)
    end = start + ns.duration

    broker = LocalBroker(workdir / "kafka")
    pipeline = None
    stopped: list[str] = []
    try:
        status = broker.start()
        log.info("broker ready at %s in %.1f s", status.bootstrap, broker.start_seconds or 0)
        env["IDQ_KAFKA__BOOTSTRAP_SERVERS"] = str(status.bootstrap)
        settings = load_settings_or_exit(ns.config, env={**os.environ, **env})
        kafka = settings.kafka
        # no deletion by time: the fixed span's data are older than any retention
        create_topics(
            kafka.admin_config(), settings_topic_specs(settings.general.ifo, kafka, retention_ms=-1)
        )
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
            f"{ns.speed:g}x; everything under {workdir}",
            flush=True,
        )
        pipeline.start()
        ts = settings.timeseries
        strides = int((end - start) // ts.stream.stride)
        progress = Progress("idq demo", strides, unit="strides", every=ns.progress_every)

        def frames_done() -> None:
            n = len(find_frames(ts.output_dir, settings.general.observatory, ts.description))
            progress.update(n)

        timeout = ns.timeout or 3 * ns.duration / ns.speed + 300
        pipeline.wait(["produce", *STAGES], timeout=timeout, on_poll=frames_done, poll=2.0)
        frames_done()
        progress.finish()
        model = model_from_args(ns, settings.general.ifo, settings.samples.target_channel)
        print("idq demo: reading the frames and topics for the summary ...", file=sys.stderr)
        summary = summarize_run(settings, model, start, end)
        summary["wall_seconds"] = round(time.monotonic() - t_begin, 1)
        summary["broker_start_seconds"] = round(broker.start_seconds or 0, 1)
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
        print_summary(summary)
        print("idq demo: writing the report ...", file=sys.stderr, flush=True)
        report = write_report(settings, start, end, workdir / "report.html")
        print(f"frames: {ts.output_dir}  summary: {workdir / 'summary.json'}")
        print(f"report: {report}")
        if not any(summary["models"].values()):
            print("idq demo: no model was trained: see the logs of train", file=sys.stderr)
            return 1
        return 0
    except KeyboardInterrupt:
        stopped = _stop(pipeline, broker)
        print(f"\nidq demo: interrupted; stopped {', '.join(stopped)}", file=sys.stderr)
        return 130
    finally:
        if not stopped:
            _stop(pipeline, broker)


def _stop(pipeline, broker) -> list[str]:
    """Stop the pipeline's processes and the broker; names of what was running."""
    names = []
    if pipeline is not None:
        running = [n for n, p in pipeline.processes.items() if p.running]
        pipeline.stop()
        names += [f"{n} (pid {pipeline.processes[n].proc.pid})" for n in running]
    if broker.stop():
        names.append("the broker")
    return names
