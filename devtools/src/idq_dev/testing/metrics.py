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


def scrape_by(port: int, name: str, label: str) -> dict[str, float]:
    """Samples of metric ``name`` on 127.0.0.1:port summed by the value of ``label``
    (empty if unreachable), e.g. ``idq_feature_batches_read_total`` by ``partition``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1.0) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for m in re.finditer(rf"^{name}{{([^}}]*)}} (\S+)$", text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if label in labels:
            out[labels[label]] = out.get(labels[label], 0.0) + float(m.group(2))
    return out
