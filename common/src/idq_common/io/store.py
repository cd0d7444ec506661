"""Content-addressed, write-once artifact store over fsspec (``file://`` and ``s3://``).

Models and calibration maps travel between stages as bytes in a shared store; the
Kafka announcement carries only the id, URI and sha256 (DESIGN.md, "Artifact store").

Layout under the store's root, for an artifact of ``kind`` whose content hashes to
``sha``::

    {kind}/{sha[:16]}.bin     the payload, exactly the bytes given to put()
    {kind}/{sha[:16]}.json    the sidecar: meta + sha256 + size + created, written LAST

The sidecar is the publication mark: an artifact exists once its sidecar exists.
Readers that list or look up artifacts go through sidecars, so a crash between the two
writes leaves an invisible orphan payload, never a half-published artifact. On a local
filesystem each file is written to a temporary name in the same directory and renamed
into place (rename is atomic on POSIX), so a reader never sees a partial file; on S3 a
PUT is atomic per object.

The store deals in bytes only. It never unpickles: deserialising (skops, JSON) is the
caller's business, after :meth:`ArtifactStore.get` has verified the sha256.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import fsspec

from idq_common.exceptions import ArtifactNotFoundError, IntegrityError, StoreError
from idq_common.gpstime import Clock, WallClock

__all__ = ["ArtifactRef", "ArtifactStore"]

#: Hex digits of the sha256 used in an artifact id; 64 bits make collisions moot here.
ID_DIGITS = 16
_PAYLOAD_SUFFIX = ".bin"
_SIDECAR_SUFFIX = ".json"


@dataclass(frozen=True)
class ArtifactRef:
    """What an announcement needs to name an artifact, and what a reader needs to check it.

    Attributes
    ----------
    id : str
        ``"{kind}/{sha256[:16]}"``, relative to the store root.
    uri : str
        Full URI of the payload (``file:///...`` or ``s3://bucket/prefix/...``).
    sha256 : str
        Hex sha256 of the payload.
    kind : str
        Artifact family, e.g. ``"model"`` or ``"calibration"``.
    created : float
        GPS time the artifact was first published.
    size : int
        Payload length in bytes.
    meta : Mapping[str, Any]
        The caller's metadata, as stored in the sidecar.
    """

    id: str
    uri: str
    sha256: str
    kind: str
    created: float
    size: int = 0
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False)


def _check_kind(kind: str) -> None:
    # kinds become directory names: keep them to one safe path component
    if (
        not kind
        or "/" in kind
        or kind.startswith(".")
        or not kind.replace("_", "").replace("-", "").isalnum()
    ):
        raise StoreError(f"invalid artifact kind {kind!r}: use letters, digits, '-' and '_'")


def _always(_: ArtifactRef) -> bool:
    return True


def _meta_matches(wanted: Mapping[str, Any], ref: ArtifactRef) -> bool:
    return all(k in ref.meta and ref.meta[k] == v for k, v in wanted.items())


class ArtifactStore:
    """A write-once artifact store rooted at a ``file://`` or ``s3://`` URL.

    Parameters
    ----------
    fs : fsspec.AbstractFileSystem
        The filesystem holding the artifacts.
    root : str
        Root path inside ``fs`` (no protocol), e.g. ``/var/idq/store`` or ``bucket/prefix``.
    protocol : str
        ``"file"`` or ``"s3"``; used to build URIs.
    clock : Clock, optional
        Source of the ``created`` GPS time (default: wall clock).

    Use :meth:`from_url` rather than this constructor.
    """

    def __init__(
        self,
        fs: fsspec.AbstractFileSystem,
        root: str,
        protocol: str,
        clock: Clock | None = None,
    ) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.protocol = protocol
        self.clock: Clock = clock if clock is not None else WallClock()

    # -- construction -------------------------------------------------------------
    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None, **options: Any) -> ArtifactStore:
        """Open the store a URL names.

        Parameters
        ----------
        url : str
            ``file://path`` (relative paths resolve against the current directory;
            ``file:///abs`` is absolute; a bare path counts as ``file://``) or
            ``s3://bucket[/prefix]``.
        clock : Clock, optional
            Source of ``created`` times.
        **options
            For ``s3://``: ``endpoint_url``, ``key``, ``secret``, ``region``; missing
            ones come from ``IDQ_STORE__ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID`` and
            ``AWS_SECRET_ACCESS_KEY``. Other options go to ``s3fs.S3FileSystem``.

        Raises
        ------
        StoreError
            Unknown scheme, or no bucket in an ``s3://`` URL.
        """
        if "://" not in url:
            url = "file://" + url
        scheme, rest = url.split("://", 1)
        if scheme == "file":
            # file://relative/dir and file:///abs/dir both work; the former resolves
            # against the current directory, as the config documents
            root = str(Path(rest).expanduser().resolve())
            fs = fsspec.filesystem("file", auto_mkdir=True)
            fs.makedirs(root, exist_ok=True)
            return cls(fs, root, "file", clock)
        if scheme == "s3":
            parts = urlsplit(url)
            if not parts.netloc:
                raise StoreError(f"s3 store URL needs a bucket: {url!r}")
            root = (parts.netloc + "/" + parts.path.strip("/")).rstrip("/")
            opts = dict(options)
            endpoint = opts.pop("endpoint_url", None) or os.environ.get("IDQ_STORE__ENDPOINT_URL")
            region = opts.pop("region", None) or os.environ.get("AWS_DEFAULT_REGION")
            key = opts.pop("key", None) or os.environ.get("AWS_ACCESS_KEY_ID")
            secret = opts.pop("secret", None) or os.environ.get("AWS_SECRET_ACCESS_KEY")
            client_kwargs: dict[str, Any] = dict(opts.pop("client_kwargs", {}))
            if endpoint:
                client_kwargs.setdefault("endpoint_url", endpoint)
            if region:
                client_kwargs.setdefault("region_name", region)
            # a fresh instance: fsspec's instance cache would share listing caches
            # across stores, which hides objects written by other processes
            fs = fsspec.filesystem(
                "s3",
                key=key,
                secret=secret,
                client_kwargs=client_kwargs,
                skip_instance_cache=True,
                **opts,
            )
            return cls(fs, root, "s3", clock)
        raise StoreError(f"unsupported store URL scheme {scheme!r} in {url!r} (file:// or s3://)")

    @property
    def url(self) -> str:
        """The store's root URL."""
        if self.protocol == "file":
            return "file://" + self.root
        return f"{self.protocol}://{self.root}"

    # -- paths ----------------------------------------------------------------------
    def _path(self, art_id: str, suffix: str) -> str:
        return f"{self.root}/{art_id}{suffix}"

    def _uri(self, art_id: str) -> str:
        return f"{self.url}/{art_id}{_PAYLOAD_SUFFIX}"

    def _id_from(self, ref_or_uri: ArtifactRef | str) -> str:
        """Map a ref, a payload URI of this store or a bare id to an id."""
        if isinstance(ref_or_uri, ArtifactRef):
            return ref_or_uri.id
        text = ref_or_uri
        if "://" in text:
            prefix = self.url + "/"
            if not text.startswith(prefix):
                raise StoreError(f"URI {text!r} is not inside this store ({self.url})")
            text = text[len(prefix) :]
        if text.endswith(_PAYLOAD_SUFFIX):
            text = text[: -len(_PAYLOAD_SUFFIX)]
        kind, _, digest = text.partition("/")
        _check_kind(kind)
        if len(digest) != ID_DIGITS or any(c not in "0123456789abcdef" for c in digest):
            raise StoreError(f"not an artifact id: {text!r}")
        return text

    # -- low-level io -----------------------------------------------------------------
    def _write(self, path: str, data: bytes) -> None:
        try:
            if self.protocol == "file":
                # temp name in the same directory, then an atomic rename into place
                tmp = f"{path}.{uuid.uuid4().hex}.tmp"
                with open(tmp, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            else:
                self.fs.pipe_file(path, data)
        except OSError as exc:
            raise StoreError(f"cannot write {self.protocol}://{path}: {exc}") from exc

    def _read(self, path: str) -> bytes:
        try:
            data = self.fs.cat_file(path)
        except FileNotFoundError as exc:
            raise ArtifactNotFoundError(f"no artifact at {self.protocol}://{path}") from exc
        except OSError as exc:
            raise StoreError(f"cannot read {self.protocol}://{path}: {exc}") from exc
        return bytes(data)

    def _sidecar(self, art_id: str) -> dict[str, Any]:
        raw = self._read(self._path(art_id, _SIDECAR_SUFFIX))
        try:
            side = json.loads(raw)
            side["sha256"], side["created"]
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(f"corrupt sidecar for artifact {art_id}: {exc}") from exc
        if not isinstance(side, dict):
            raise IntegrityError(f"corrupt sidecar for artifact {art_id}")
        return side

    def _ref(self, side: Mapping[str, Any]) -> ArtifactRef:
        art_id = str(side["id"])
        return ArtifactRef(
            id=art_id,
            uri=self._uri(art_id),
            sha256=str(side["sha256"]),
            kind=str(side["kind"]),
            created=float(side["created"]),
            size=int(side.get("size", 0)),
            meta=dict(side.get("meta", {})),
        )

    # -- public API -------------------------------------------------------------------
    def put(self, kind: str, payload: bytes, meta: Mapping[str, Any] | None = None) -> ArtifactRef:
        """Publish ``payload`` once; return its reference.

        Parameters
        ----------
        kind : str
            Artifact family (one path component: letters, digits, ``-``, ``_``).
        payload : bytes
            The artifact's bytes.
        meta : Mapping, optional
            JSON-serialisable metadata kept in the sidecar.

        Returns
        -------
        ArtifactRef
            If the same content was published before, the existing reference (its
            original ``created`` and ``meta``); nothing is rewritten.

        Raises
        ------
        StoreError
            Bad kind, metadata that is not JSON, or the backend failed.
        """
        _check_kind(kind)
        data = bytes(payload)
        sha = hashlib.sha256(data).hexdigest()
        art_id = f"{kind}/{sha[:ID_DIGITS]}"
        try:
            side = self._sidecar(art_id)
        except ArtifactNotFoundError:
            side = None
        if side is not None:
            if side["sha256"] != sha:
                # a 64-bit prefix collision or a tampered sidecar: refuse either way
                raise IntegrityError(f"artifact {art_id} exists with a different sha256")
            return self._ref(side)
        side = {
            "id": art_id,
            "kind": kind,
            "sha256": sha,
            "size": len(data),
            "created": float(self.clock.now()),
            "meta": dict(meta or {}),
        }
        try:
            side_bytes = json.dumps(side, sort_keys=True, indent=1).encode()
        except (TypeError, ValueError) as exc:
            raise StoreError(f"artifact metadata is not JSON-serialisable: {exc}") from exc
        if self.protocol == "file":
            self.fs.makedirs(f"{self.root}/{kind}", exist_ok=True)
        # payload first, sidecar last: the sidecar is what makes the artifact visible
        self._write(self._path(art_id, _PAYLOAD_SUFFIX), data)
        self._write(self._path(art_id, _SIDECAR_SUFFIX), side_bytes)
        return self._ref(side)

    def get(self, ref_or_uri: ArtifactRef | str, sha256: str | None = None) -> bytes:
        """Read an artifact and verify it.

        Parameters
        ----------
        ref_or_uri : ArtifactRef or str
            A reference, the payload URI (as announced) or the id.
        sha256 : str, optional
            Expected hex digest, e.g. from the announcement. Defaults to the ref's;
            for a bare URI or id, to the one recorded in the sidecar.

        Raises
        ------
        ArtifactNotFoundError
            Nothing published under that id.
        IntegrityError
            The bytes do not hash to the expected sha256 (truncated or tampered), or
            the expected sha256 does not belong to this id.
        """
        art_id = self._id_from(ref_or_uri)
        expected = sha256
        if expected is None and isinstance(ref_or_uri, ArtifactRef):
            expected = ref_or_uri.sha256
        if expected is None:
            expected = str(self._sidecar(art_id)["sha256"])
        expected = expected.lower()
        if not expected.startswith(art_id.rsplit("/", 1)[1]):
            raise IntegrityError(f"sha256 {expected} does not belong to artifact {art_id}")
        data = self._read(self._path(art_id, _PAYLOAD_SUFFIX))
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise IntegrityError(
                f"artifact {art_id}: sha256 {actual} != expected {expected} "
                f"({len(data)} bytes read; truncated or tampered)"
            )
        return data

    def ref(self, ref_or_uri: ArtifactRef | str) -> ArtifactRef:
        """The reference (from the sidecar) of a published artifact URI or id."""
        return self._ref(self._sidecar(self._id_from(ref_or_uri)))

    def exists(self, ref_or_uri: ArtifactRef | str) -> bool:
        """Whether the artifact is published (its sidecar exists)."""
        art_id = self._id_from(ref_or_uri)
        return bool(self.fs.exists(self._path(art_id, _SIDECAR_SUFFIX)))

    def list(self, kind: str) -> list[ArtifactRef]:
        """Every published artifact of ``kind``, oldest first (by ``created``, then id)."""
        _check_kind(kind)
        base = f"{self.root}/{kind}"
        self.fs.invalidate_cache(base)
        try:
            names = self.fs.ls(base, detail=False)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"cannot list {self.protocol}://{base}: {exc}") from exc
        refs = []
        for name in names:
            name = str(name)
            if not name.endswith(_SIDECAR_SUFFIX):
                continue  # payloads and temporary files
            art_id = f"{kind}/{name.rsplit('/', 1)[1][: -len(_SIDECAR_SUFFIX)]}"
            try:
                refs.append(self._ref(self._sidecar(art_id)))
            except ArtifactNotFoundError:
                continue  # deleted between ls and read
        refs.sort(key=lambda r: (r.created, r.id))
        return refs

    def latest(
        self,
        kind: str,
        where: Mapping[str, Any] | Callable[[ArtifactRef], bool] | None = None,
    ) -> ArtifactRef | None:
        """The most recently created artifact of ``kind`` matching ``where``.

        Parameters
        ----------
        kind : str
            Artifact family.
        where : Mapping or callable, optional
            A mapping is matched for equality against the artifact's ``meta``
            (e.g. ``{"classifier": "ovl"}``); a callable receives each
            :class:`ArtifactRef` and returns whether it qualifies.

        Returns
        -------
        ArtifactRef or None
            None when nothing matches.
        """
        match: Callable[[ArtifactRef], bool]
        if where is None:
            match = _always
        elif callable(where):
            match = where
        else:
            wanted = dict(where)
            match = functools.partial(_meta_matches, wanted)
        for ref in reversed(self.list(kind)):
            if match(ref):
                return ref
        return None
