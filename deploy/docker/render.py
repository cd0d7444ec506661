"""Render ``services/<stage>/Dockerfile`` from ``deploy/docker/Dockerfile.template``.

The four service images differ only in the stage name, so one template keeps them
identical; ``tests/deploy/test_dockerfiles.py`` checks that the committed files match.

Usage: ``python deploy/docker/render.py`` from anywhere.
"""

from __future__ import annotations

from pathlib import Path

from idq_common.contracts import STAGES

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = Path(__file__).with_name("Dockerfile.template")


def render(stage: str) -> str:
    """Return the Dockerfile text of one stage."""
    return TEMPLATE.read_text().replace("@STAGE@", stage)


def main() -> None:
    """Write every service's Dockerfile."""
    for stage in STAGES:
        (ROOT / "services" / stage / "Dockerfile").write_text(render(stage))


if __name__ == "__main__":
    main()
