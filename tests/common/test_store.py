"""ArtifactStore against a local directory and a real S3 server (SeaweedFS)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from idq_common.exceptions import ArtifactNotFoundError, IntegrityError, StoreError
from idq_common.gpstime import ManualClock
from idq_common.io.store import ArtifactRef, ArtifactStore
from idq_dev.testing.s3_server import S3Server

T0 = 1_400_000_000.0

# A backend is (store, overwrite) where overwrite(relative_key, data) changes an object
# behind the store's back, as a faulty disk or a meddling operator would.
Overwrite = Callable[[str, bytes], None]


def _file_backend(tmp_path: Path, clock: ManualClock) -> tuple[ArtifactStore, Overwrite]:
    store = ArtifactStore.from_url(f"file://{tmp_path / 'store'}", clock=clock)

    def overwrite(key: str, data: bytes) -> None:
        (Path(store.root) / key).write_bytes(data)

    return store, overwrite


def _s3_backend(
    server: S3Server, bucket: str, clock: ManualClock
) -> tuple[ArtifactStore, Overwrite]:
    store = ArtifactStore.from_url(
        f"s3://{bucket}/idq/artifacts", clock=clock, **server.store_options()
    )
    client = server.client()

    def overwrite(key: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=f"idq/artifacts/{key}", Body=data)

    return store, overwrite


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.s3)])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[ArtifactStore, Overwrite, ManualClock]:
    clock = ManualClock(T0)
    if request.param == "file":
        return (*_file_backend(tmp_path, clock), clock)
    server: S3Server = request.getfixturevalue("s3_server")
    bucket: str = request.getfixturevalue("s3_bucket")
    return (*_s3_backend(server, bucket, clock), clock)


def _payload(seed: int, n: int = 50_000) -> bytes:
    return np.random.default_rng(seed).bytes(n)


def test_round_trip(backend: tuple[ArtifactStore, Overwrite, ManualClock]) -> None:
    store, _, _ = backend
    data = _payload(1)
    ref = store.put("model", data, {"classifier": "ovl", "span": [T0 - 100, T0]})
    sha = hashlib.sha256(data).hexdigest()
    assert ref.sha256 == sha
    assert ref.id == f"model/{sha[:16]}"
    assert ref.uri == f"{store.url}/{ref.id}.bin"
    assert ref.kind == "model" and ref.created == T0 and ref.size == len(data)
    # by ref, by announced URI + sha256, by id
    assert store.get(ref) == data
    assert store.get(ref.uri, ref.sha256) == data
    assert store.get(ref.id) == data
    assert store.ref(ref.uri).meta == {"classifier": "ovl", "span": [T0 - 100, T0]}
    assert store.exists(ref)


def test_write_once(backend: tuple[ArtifactStore, Overwrite, ManualClock]) -> None:
    store, _, clock = backend
    data = _payload(2)
    first = store.put("model", data, {"classifier": "ovl"})
    clock.advance(60)
    again = store.put("model", data, {"classifier": "other"})
    # same content, same id; the first publication stands (created and meta unchanged)
    assert again == first
    assert again.created == T0 and again.meta == {"classifier": "ovl"}
    assert [r.id for r in store.list("model")] == [first.id]
    other = store.put("model", _payload(3), {"classifier": "ovl"})
    assert other.id != first.id


def test_tampered_object_refused(backend: tuple[ArtifactStore, Overwrite, ManualClock]) -> None:
    store, overwrite, _ = backend
    data = _payload(4)
    ref = store.put("calibration", data, {})
    tampered = bytearray(data)
    tampered[1234] ^= 0xFF
    overwrite(f"{ref.id}.bin", bytes(tampered))
    with pytest.raises(IntegrityError, match="tampered"):
        store.get(ref)
    with pytest.raises(IntegrityError):
        store.get(ref.uri, ref.sha256)
    # even the sidecar's own record refuses it when no sha256 is supplied
    with pytest.raises(IntegrityError):
        store.get(ref.id)


def test_truncated_object_refused(backend: tuple[ArtifactStore, Overwrite, ManualClock]) -> None:
    store, overwrite, _ = backend
    data = _payload(5)
    ref = store.put("model", data, {})
    overwrite(f"{ref.id}.bin", data[: len(data) // 2])
    with pytest.raises(IntegrityError, match="truncated"):
        store.get(ref.uri, ref.sha256)


def test_wrong_expected_sha_refused(backend: tuple[ArtifactStore, Overwrite, ManualClock]) -> None:
    store, _, _ = backend
    a = store.put("model", _payload(6), {})
    b = store.put("model", _payload(7), {})
    # an announcement pairing one artifact's URI with another's sha256
    with pytest.raises(IntegrityError):
        store.get(a.uri, b.sha256)


def test_missing(backend: tuple[ArtifactStore, Overwrite, ManualClock]) -> None:
    store, _, _ = backend
    ghost = "model/" + "0" * 16
    with pytest.raises(ArtifactNotFoundError):
        store.get(ghost, "0" * 64)
    with pytest.raises(ArtifactNotFoundError):
        store.get(f"{store.url}/{ghost}.bin")
    assert not store.exists(ghost)
    assert store.list("model") == []
    assert store.latest("model") is None


def test_list_and_latest(backend: tuple[ArtifactStore, Overwrite, ManualClock]) -> None:
    store, _, clock = backend
    refs: list[ArtifactRef] = []
    for i, clf in enumerate(["ovl", "forest", "ovl", "forest"]):
        refs.append(store.put("model", _payload(10 + i, 1000), {"classifier": clf, "n": i}))
        clock.advance(10)
    store.put("calibration", _payload(99, 1000), {"classifier": "ovl"})
    listed = store.list("model")
    assert [r.id for r in listed] == [r.id for r in refs]
    assert [r.created for r in listed] == [T0, T0 + 10, T0 + 20, T0 + 30]
    assert store.latest("model") == refs[3]
    assert store.latest("model", where={"classifier": "ovl"}) == refs[2]
    assert store.latest("model", where=lambda r: r.meta["n"] < 2) == refs[1]
    assert store.latest("model", where={"classifier": "svm"}) is None
    assert len(store.list("calibration")) == 1


def test_file_layout_is_atomic_and_sidecar_last(tmp_path: Path) -> None:
    """Only published artifacts are visible: a payload without its sidecar is ignored,
    and no temporary file is left behind."""
    store = ArtifactStore.from_url(f"file://{tmp_path}", clock=ManualClock(T0))
    ref = store.put("model", b"payload", {"k": 1})
    files = sorted(p.name for p in (tmp_path / "model").iterdir())
    assert files == [f"{ref.id.split('/')[1]}.bin", f"{ref.id.split('/')[1]}.json"]
    side = json.loads((tmp_path / f"{ref.id}.json").read_text())
    assert side["sha256"] == ref.sha256 and side["size"] == 7 and side["meta"] == {"k": 1}
    # an orphan payload (crash before the sidecar) is not an artifact
    orphan = hashlib.sha256(b"orphan").hexdigest()[:16]
    (tmp_path / "model" / f"{orphan}.bin").write_bytes(b"orphan")
    assert [r.id for r in store.list("model")] == [ref.id]
    # publishing it for real completes it
    assert store.put("model", b"orphan", {}).id == f"model/{orphan}"
    assert len(store.list("model")) == 2


def test_file_write_once_does_not_rewrite(tmp_path: Path) -> None:
    store = ArtifactStore.from_url(f"file://{tmp_path}", clock=ManualClock(T0))
    ref = store.put("model", b"x" * 100, {})
    payload = tmp_path / f"{ref.id}.bin"
    before = payload.stat().st_mtime_ns, payload.stat().st_ino
    store.put("model", b"x" * 100, {})
    assert (payload.stat().st_mtime_ns, payload.stat().st_ino) == before


def test_relative_file_url_resolves_against_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = ArtifactStore.from_url("file://artifacts")
    assert store.root == str(tmp_path / "artifacts")
    ref = store.put("model", b"abc", {})
    assert (tmp_path / "artifacts" / f"{ref.id}.bin").read_bytes() == b"abc"


def test_bad_inputs(tmp_path: Path) -> None:
    store = ArtifactStore.from_url(f"file://{tmp_path}")
    with pytest.raises(StoreError):
        ArtifactStore.from_url("ftp://host/x")
    with pytest.raises(StoreError):
        store.put("../escape", b"x", {})
    with pytest.raises(StoreError):
        store.put("model", b"x", {"bad": object()})
    with pytest.raises(StoreError):
        store.get("s3://elsewhere/model/0000000000000000.bin")
    with pytest.raises(StoreError):
        store.get("model/not-hex")


@pytest.mark.s3
def test_s3_credentials_from_environment(
    s3_server: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    store = ArtifactStore.from_url(f"s3://{s3_bucket}")
    ref = store.put("model", b"from env", {})
    assert store.get(ref.uri, ref.sha256) == b"from env"
    # the object really is on the server, under the id
    body = s3_server.client().get_object(Bucket=s3_bucket, Key=f"{ref.id}.bin")["Body"].read()
    assert body == b"from env"
    # wrong secret: the server refuses, surfaced as a StoreError
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong" + os.urandom(4).hex())
    with pytest.raises(StoreError):
        ArtifactStore.from_url(f"s3://{s3_bucket}").get(ref.uri, ref.sha256)
