"""Dataset files: where they live, their checksums, and their official downloads.

Files are looked up in the data directory (``--data-dir``, else ``FEDSIM_DATA_DIR``,
else ``~/.cache/fedsim``). A missing file is downloaded from its official source
when the network allows; every file is checked against its SHA-256 before use.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from fedsim.errors import DataError

log = logging.getLogger(__name__)

ENV_DATA_DIR = "FEDSIM_DATA_DIR"


@dataclass(frozen=True)
class RemoteFile:
    """One dataset file: its place under the data directory, checksum and source.

    ``sha256`` is the digest of the file as stored; with ``payload_gzip`` it is the
    digest of the decompressed payload instead (Fashion-MNIST is distributed
    re-compressed by some mirrors, so only the payload digest is source-independent).
    ``members`` names the path inside a (possibly nested) zip archive at ``url``.
    """

    relpath: str
    sha256: str
    url: str
    members: tuple[str, ...] = ()
    payload_gzip: bool = False


def data_dir(explicit: str | Path | None = None) -> Path:
    """Resolve the data directory: argument, then ``FEDSIM_DATA_DIR``, then the cache."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "fedsim"


_verified: dict[tuple[str, int, int], bool] = {}


def sha256_of(path: Path, *, gunzip: bool = False) -> str:
    """SHA-256 of a file (of its gzip payload with ``gunzip``)."""
    digest = hashlib.sha256()
    opener = gzip.open if gunzip else open
    try:
        with opener(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except (OSError, EOFError) as exc:  # truncated gzip streams end up here
        raise DataError(_corrupt(path, f"cannot be read ({exc})")) from None
    return digest.hexdigest()


def fetch(spec: RemoteFile, root: str | Path | None = None) -> Path:
    """Return the verified local path of ``spec``, downloading it if missing.

    Raises
    ------
    DataError
        If the file is missing and cannot be downloaded, or its checksum differs.
    """
    base = data_dir(root)
    path = base / spec.relpath
    if not path.is_file():
        _download(spec, path)
    verify(spec, path)
    return path


def verify(spec: RemoteFile, path: Path) -> None:
    """Check ``path`` against the expected SHA-256 (cached per size and mtime)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if _verified.get(key):
        return
    actual = sha256_of(path, gunzip=spec.payload_gzip)
    if actual != spec.sha256:
        raise DataError(_corrupt(path, f"has SHA-256 {actual[:12]}…, expected {spec.sha256[:12]}…"))
    _verified[key] = True


def _corrupt(path: Path, what: str) -> str:
    return (
        f"dataset file {path} {what}: it is corrupt or truncated; delete it and run again "
        "to re-download it, or replace it with the original file"
    )


def _download(spec: RemoteFile, path: Path) -> None:
    log.info("downloading %s to %s", spec.url, path)
    try:
        with urllib.request.urlopen(spec.url, timeout=60) as resp:  # noqa: S310 (fixed URLs)
            payload = resp.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DataError(
            f"dataset file {spec.relpath} not found in {path.parent} and the download from "
            f"{spec.url} failed ({getattr(exc, 'reason', exc)}); download it by hand to "
            f"{path} or set {ENV_DATA_DIR}"
        ) from None
    for member in spec.members:
        try:
            payload = zipfile.ZipFile(io.BytesIO(payload)).read(member)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise DataError(f"download from {spec.url} has no {member}: {exc}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(payload)
    actual = sha256_of(Path(tmp), gunzip=spec.payload_gzip)
    if actual != spec.sha256:
        os.unlink(tmp)
        raise DataError(
            f"download from {spec.url} has SHA-256 {actual[:12]}…, expected "
            f"{spec.sha256[:12]}…; the source changed or the transfer broke: try again "
            f"or place the original file at {path}"
        )
    os.replace(tmp, path)
