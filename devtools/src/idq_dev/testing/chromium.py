"""Headless Chromium (Debian package ``chromium``) for checking HTML pages as users see them.

Two real renderings of a page: a screenshot (PNG) and the DOM after load, in which a
small script appended to a copy of the page has recorded, for every ``<img>``, whether
it loaded (``complete`` and ``naturalWidth > 0``). No network, no profile reuse.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]

_CHECK = """
<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var out = imgs.map(function (im) {
    return {alt: im.alt, complete: im.complete, w: im.naturalWidth, h: im.naturalHeight};
  });
  var pre = document.createElement("pre");
  pre.id = "idq-image-check";
  pre.textContent = "IDQ-IMAGES:" + JSON.stringify(out) + ":END";
  document.body.appendChild(pre);
});
</script>
"""


def chromium() -> str | None:
    """The chromium executable, or None when the Debian package is not installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(args: list[str], profile: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("chromium is not installed (make system-deps)")
    cmd = [exe, *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def screenshot(
    page: Path, out: Path, width: int = 1200, height: int = 4000, timeout: float = 120
) -> Path:
    """A PNG of ``page`` rendered at ``width`` x ``height``."""
    with tempfile.TemporaryDirectory(prefix="idq-chromium-") as profile:
        r = _run(
            [f"--screenshot={out}", f"--window-size={width},{height}", page.resolve().as_uri()],
            Path(profile),
            timeout,
        )
    if not out.exists():
        raise RuntimeError(
            f"chromium wrote no screenshot (status {r.returncode}): {r.stderr[-2000:]}"
        )
    return out


def image_status(page: Path, timeout: float = 120) -> list[dict[str, Any]]:
    """Per ``<img>`` of ``page``: alt, complete, naturalWidth/Height after load."""
    with tempfile.TemporaryDirectory(prefix="idq-chromium-") as tmp:
        copy = Path(tmp) / page.name
        text = page.read_text(encoding="utf-8")
        copy.write_text(text.replace("</body>", _CHECK + "</body>"), encoding="utf-8")
        r = _run(
            ["--dump-dom", "--virtual-time-budget=10000", copy.as_uri()],
            Path(tmp) / "profile",
            timeout,
        )
    # the element the script added (the script's own text holds the marker too)
    m = re.search(r'<pre id="idq-image-check">IDQ-IMAGES:(.*?):END</pre>', r.stdout, re.S)
    if m is None:
        raise RuntimeError(
            f"the check script did not run (status {r.returncode}): {r.stderr[-2000:]}"
        )
    return json.loads(m.group(1).replace("&quot;", '"'))


def non_blank_fraction(png: Path) -> float:
    """Fraction of pixels of ``png`` that are not (near) white."""
    from PIL import Image

    img = np.asarray(Image.open(png).convert("L"), dtype=np.float64)
    return float((img < 245).mean())
