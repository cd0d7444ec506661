"""CPU cost and size of writing one timeseries GWF frame, in-process.

``python -m bench.frame_write [frames]``: ``frames`` one-second frames of the demo
timeseries stage's shape (3 classifiers x 6 products = 18 channels at 128 Hz) through
:func:`idq_common.io.frames.write_frame`, once per compression policy. The products
mimic the stage's: OK constant, OVL a few held levels, forest and SGD continuous.
Reports CPU milliseconds per frame (``time.process_time``) and mean file size, and
checks that gwpy reads every channel back bit-identical. ``"auto_held"``: ``"auto"``
through one :class:`~idq_common.io.frames.FrameWriter` for every frame, as the
timeseries stage writes (channel structures reused, a constant OK channel compressed
once); ``"compressions"`` counts the channels it compressed.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RATE = 128
T0 = 1_400_000_000
PRODUCTS = ("PGLITCH", "LOGLIKE", "FAP", "EFF", "RANK", "OK")


def products(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One stride's 18 channels, shaped like the timeseries stage's products."""
    out: dict[str, np.ndarray] = {}
    for name in ("OVL", "FOREST", "SGD"):
        if name == "OVL":  # a few levels held between vetoes
            edges = np.sort(rng.integers(0, RATE, 5))
            p = rng.random(6)[np.searchsorted(edges, np.arange(RATE), side="right")]
        else:
            p = np.clip(0.5 + np.cumsum(rng.normal(0, 0.02, RATE)), 1e-6, 1)
        values = {"PGLITCH": p, "LOGLIKE": np.log(p), "FAP": 1 - p, "EFF": p**2}
        values |= {"RANK": p / 2, "OK": np.ones(RATE)}
        out |= {f"H1:IDQ-{k}_{name}_10_2048": values[k] for k in PRODUCTS}
    return out


def measure(n_frames: int = 200) -> dict[str, Any]:
    """CPU ms per frame and KiB per frame, per compression policy (module docstring)."""
    from idq_common.io.frames import FrameWriter, read_frame, write_frame

    rng = np.random.default_rng(0)
    strides = [products(rng) for _ in range(n_frames)]
    result: dict[str, Any] = {"frames": n_frames, "channels": len(strides[0]), "rate": RATE}
    with tempfile.TemporaryDirectory() as tmp:
        for policy in ("all", "auto", "none", "auto_held"):
            paths = [Path(tmp, f"{policy}-{k}.gwf") for k in range(n_frames)]
            writer = FrameWriter("auto")
            tic = time.process_time()
            for k, (path, series) in enumerate(zip(paths, strides, strict=True)):
                prov = {"ovl": {"model_id": "m"}}
                if policy == "auto_held":
                    writer.write(path, T0 + k, 1, series, RATE, prov)
                else:
                    write_frame(path, T0 + k, 1, series, RATE, prov, policy)
            cpu = time.process_time() - tic
            back = read_frame(paths[-1])
            identical = all(np.array_equal(back[c], v) for c, v in strides[-1].items())
            result[policy] = {
                "cpu_ms_per_frame": round(1000 * cpu / n_frames, 3),
                "kib_per_frame": round(sum(p.stat().st_size for p in paths) / n_frames / 1024, 2),
                "bit_identical": identical,
            }
        result["auto_held"]["compressions"] = writer.compressions
    return result


def main(args: list[str] | None = None) -> int:
    """Print the figures as JSON."""
    import json

    argv = sys.argv[1:] if args is None else args
    print(json.dumps(measure(int(argv[0]) if argv else 200), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
