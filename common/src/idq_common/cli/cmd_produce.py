"""``idq produce``: publish synthetic features to the features topic.

The synthetic source of the demo and of replays/benchmarks: a seeded
:class:`~idq_common.data.synthetic.SyntheticModel` (Poisson glitches on the target
channel, witnesses, pure-noise channels) published as ``feature_batch`` messages,
in real time, accelerated (``--speed``) or as fast as possible (``--speed 0``).
"""

from __future__ import annotations

import argparse
import sys

NAME = "produce"
HELP = "publish synthetic features (seeded) to the features topic"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(NAME, help=HELP, description=__doc__)
    p.add_argument("-c", "--config", required=True, help="TOML configuration (ifo, target, kafka)")
    p.add_argument("--gps-start", type=float, required=True, help="first GPS second of data")
    p.add_argument("--gps-end", type=float, required=True, help="end of the data")
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="data seconds per wall second (1: real time; 0: as fast as possible)",
    )
    p.add_argument(
        "--wall-clock",
        action="store_true",
        help="live: publish each batch once GPS now passes its end (as a detector does; "
        "a late start catches up at once) instead of timing from this process's start",
    )
    add_model_arguments(p)
    p.add_argument("--batch-seconds", type=float, default=1.0, help="span of one message")
    p.add_argument("--source-id", default="synthetic", help="producer id (message key)")
    return p


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of the synthetic model, shared with ``idq demo``."""
    g = p.add_argument_group("synthetic model")
    g.add_argument("--witnesses", type=int, default=10, help="witness channels")
    g.add_argument("--noise-channels", type=int, default=90, help="pure-noise channels")
    g.add_argument("--glitch-rate", type=float, default=0.5, help="target glitches per second")
    g.add_argument(
        "--background-rate",
        type=float,
        default=0.5,
        help="noise triggers per second per auxiliary channel",
    )
    g.add_argument("--seed", type=int, default=1, help="generator seed")


def model_from_args(ns: argparse.Namespace, ifo: str, target_channel: str):  # -> SyntheticModel
    """The :class:`SyntheticModel` the arguments describe."""
    from idq_common.data.synthetic import SyntheticModel

    return SyntheticModel(
        seed=ns.seed,
        ifo=ifo,
        target_channel=target_channel,
        n_witness=ns.witnesses,
        n_noise=ns.noise_channels,
        glitch_rate=ns.glitch_rate,
        witness_background_rate=ns.background_rate,
        noise_background_rate=ns.background_rate,
    )


def run(ns: argparse.Namespace) -> int:
    import logging

    from confluent_kafka import Producer

    from idq_common.config import load_settings_or_exit
    from idq_common.gpstime import Clock, ScaledClock, WallClock
    from idq_common.io.publish import FeaturePublisher, partitioning

    log = logging.getLogger(__name__)
    settings = load_settings_or_exit(ns.config, check_classifiers=False)
    model = model_from_args(ns, settings.general.ifo, settings.samples.target_channel)
    clock: Clock | None = ScaledClock(ns.gps_start, ns.speed) if ns.speed > 0 else None
    if getattr(ns, "wall_clock", False):
        clock = WallClock()
    try:
        publisher = FeaturePublisher(
            Producer(settings.kafka.producer_config()),
            settings.kafka.topics.features,
            settings.general.ifo,
            ns.source_id,
            batch_seconds=ns.batch_seconds,
            **partitioning(settings.kafka),
            clock=clock,
        )
    except ValueError as exc:  # e.g. batches that would straddle a block
        print(f"idq produce: {exc}", file=sys.stderr)
        return 2
    log.info(
        "producing [%.0f, %.0f) of %d channels at %s",
        ns.gps_start,
        ns.gps_end,
        len(model.channels),
        f"{ns.speed}x" if ns.speed > 0 else "full speed",
    )
    n = publisher.publish(model.generate, ns.gps_start, ns.gps_end)
    publisher.flush()
    log.info("produced %d batches", n)
    return 0
