"""``python -m idq_dev.chaos``: run the chaos suite, write its JSON report."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from idq_dev.chaos.run import ChaosSpec, run, write_report


def main(args: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m idq_dev.chaos", description=__doc__)
    p.add_argument("--quick", action="store_true", help="the reduced form (make test)")
    p.add_argument("--seed", type=int, default=12)
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="report (default bench/results/chaos.json, quick: chaos-quick.json)",
    )
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("-v", "--verbose", action="store_true")
    ns = p.parse_args(args)
    # SIGTERM unwinds like Ctrl-C, so the broker, the store and the services are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.basicConfig(
        level=logging.INFO if ns.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if ns.quick:
        spec = ChaosSpec(
            duration=384.0,
            seed=ns.seed,
            kills_per_service=1,
            broker_bounces=1,
            s3_freeze_seconds=8.0,
            witnesses=6,
            noise_channels=30,
            ingest_seconds=128.0,
        )
    else:
        spec = ChaosSpec(
            duration=1024.0,
            seed=ns.seed,
            kills_per_service=3,
            broker_bounces=2,
            s3_freeze_seconds=30.0,
            witnesses=8,
            noise_channels=60,
        )
    out = ns.out or Path("bench/results") / ("chaos-quick.json" if ns.quick else "chaos.json")
    with tempfile.TemporaryDirectory(prefix="idq-chaos-") as tmp:
        report = run(spec, ns.workdir or Path(tmp))
    write_report(report, out)
    print(
        json.dumps(
            {k: report[k] for k in ("ok", "faults_per_kind", "recovery_seconds", "wall_seconds")}
        )
    )
    for name, check in report["checks"].items():
        print(f"{name:24s} {'ok' if check['ok'] else 'FAILED'}")
    print(f"report: {out}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
