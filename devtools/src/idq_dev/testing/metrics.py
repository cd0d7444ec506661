"""Read a running service's Prometheus metrics: what tests assert on instead of its logs."""

from __future__ import annotations

import re
import urllib.request


def scrape(port: int, name: str) -> float | None:
    """Sum of the samples of metric ``name`` on 127.0.0.1:port, or None if unreachable."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1.0) as r:
            text = r.read().decode()
    except OSError:
        return None
    total, seen = 0.0, False
    for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M):
        total += float(m.group(1))
        seen = True
    return total if seen else None
