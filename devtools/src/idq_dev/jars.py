"""Fetch the Apache Kafka jars from Maven Central into a local cache folder.

The broker is run straight from the jars (no tarball, no Docker): ``pom.xml`` beside
this module names ``org.apache.kafka:kafka_2.13`` plus the log4j2 SLF4J binding, and
``maven-dependency-plugin:copy-dependencies`` copies the whole runtime closure into
``<home>/libs``. A stamp file keyed on the pom's sha256 makes :func:`fetch_jars`
idempotent and cheap when the jars are already there.

``<home>`` is ``$IDQ_KAFKA_HOME`` when set, else ``<repo>/.cache/kafka``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from idq_common.exceptions import BrokerError

#: Environment variable overriding where the jars (and the default data dir) live.
HOME_ENV = "IDQ_KAFKA_HOME"
STAMP_NAME = ".stamp"


def repo_root(start: Path | None = None) -> Path:
    """Return the repository root, or the current directory outside a checkout.

    The root is the first parent holding both ``Makefile`` and ``common/pyproject.toml``
    (an editable install); from an installed wheel we fall back to the cwd.
    """
    here = (start or Path(__file__)).resolve()
    for parent in here.parents:
        if (parent / "Makefile").is_file() and (parent / "common" / "pyproject.toml").is_file():
            return parent
    return Path.cwd()


def kafka_home() -> Path:
    """Folder of the Kafka cache: ``$IDQ_KAFKA_HOME`` or ``<repo>/.cache/kafka``."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return repo_root() / ".cache" / "kafka"


def pom_bytes() -> bytes:
    """The packaged ``pom.xml`` naming the broker's jars."""
    return resources.files("idq_dev").joinpath("pom.xml").read_bytes()


def pom_hash() -> str:
    """sha256 of the packaged pom: the stamp key (a version bump re-fetches)."""
    return hashlib.sha256(pom_bytes()).hexdigest()


def libs_dir(home: Path | None = None) -> Path:
    """Folder holding the jars, ``<home>/libs``."""
    return (home or kafka_home()) / "libs"


def jars_ready(home: Path | None = None) -> bool:
    """True when ``<home>/libs`` holds the jars of the current pom."""
    libs = libs_dir(home)
    stamp = libs / STAMP_NAME
    try:
        return stamp.read_text().strip() == pom_hash() and any(libs.glob("kafka_2.13-*.jar"))
    except OSError:
        return False


def fetch_jars(home: Path | None = None, *, force: bool = False, timeout: float = 900.0) -> Path:
    """Make sure the Kafka jars are in ``<home>/libs`` and return that folder.

    Runs ``mvn -q -B dependency:copy-dependencies`` on a copy of the packaged pom
    (the package folder may be read-only). Works with a warm or cold ``~/.m2``.
    Concurrent callers serialise on a lock file; the second finds the stamp and returns.

    Parameters
    ----------
    home : Path, optional
        Cache folder; default :func:`kafka_home`.
    force : bool
        Re-fetch even when the stamp matches.
    timeout : float
        Seconds allowed for Maven.

    Raises
    ------
    BrokerError
        Maven is missing or failed (its output is quoted).
    """
    home = home or kafka_home()
    home.mkdir(parents=True, exist_ok=True)
    libs = libs_dir(home)
    with open(home / ".fetch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and jars_ready(home):
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("Maven ('mvn') is not on PATH: install maven (and a JDK 17) first")
        pom = home / "pom.xml"
        pom.write_bytes(pom_bytes())
        # Copy into a fresh folder and swap it in, so a failed or interrupted fetch
        # never leaves a half-filled libs/ with a valid-looking stamp.
        staging = home / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            f"-Didq.kafka.libs={staging}",
            "dependency:copy-dependencies",
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"'mvn' did not finish within {timeout:.0f} s") from exc
        if proc.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
            raise BrokerError(f"fetching the Kafka jars failed ({' '.join(cmd)}):\n{tail}")
        (staging / STAMP_NAME).write_text(pom_hash() + "\n")
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        shutil.rmtree(home / "target", ignore_errors=True)
        return libs
