"""What users look at: scores of produced frames against a truth, and reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_report(
    settings: Any, start: float, end: float, path: str | Path, topics: bool = True
) -> Path:
    """Gather ``[start, end)`` and write the self-contained HTML page to ``path``."""
    from idq_common.report.gather import gather
    from idq_common.report.html import render

    data = gather(settings, start, end, topics=topics)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render(data), encoding="utf-8")
    tmp.replace(path)
    return path


def query(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """:func:`idq_common.report.query.query` (imported on use: it needs LALFrame)."""
    from idq_common.report.query import query as _query

    return _query(*args, **kwargs)
