"""Content-addressed files: every blob is named by the sha256 of its bytes.

Writes are atomic: bytes go to a temporary file in the same data directory, are fsynced,
verified against the declared size and hash, and only then renamed into place (and the
folder fsynced). A crash leaves either the old state or the new one, never half a file.
Folders are 0700 and files 0600. Which blobs live is not decided here: :class:`Store`
keeps, under the catalog's lock, the rows and pins that hold them.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

DIR_MODE = 0o700
FILE_MODE = 0o600
_DIGEST = re.compile(r"[0-9a-f]{64}")


class BlobError(ValueError):
    """Bytes that do not match what was declared (size or sha256)."""


class SizeLimitError(BlobError):
    """An upload larger than the server accepts."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class BlobWriter:
    """Receives an upload chunk by chunk; ``commit`` verifies and moves it into the store."""

    def __init__(self, store: BlobStore, size: int, sha256: str, limit: int) -> None:
        if size < 0:
            raise BlobError(f"size_bytes must be >= 0; got {size}")
        if size > limit:
            raise SizeLimitError(
                f"upload of {size} bytes exceeds the server's limit of {limit} bytes "
                f"({limit >> 20} MiB, --max-upload-mb)"
            )
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise BlobError(f"sha256 must be 64 lowercase hex digits; got {sha256!r}")
        self.store, self.size, self.sha256 = store, size, sha256
        fd, name = tempfile.mkstemp(prefix="upload-", dir=store.tmp)
        self.path = Path(name)
        self.file: BinaryIO = os.fdopen(fd, "wb")
        self.hash = hashlib.sha256()
        self.received = 0

    def write(self, offset: int, data: bytes) -> None:
        if offset != self.received:
            raise BlobError(f"chunk offset {offset} but {self.received} bytes were received")
        if self.received + len(data) > self.size:
            raise BlobError(
                f"received more than the declared size_bytes={self.size}"
            )
        self.file.write(data)
        self.hash.update(data)
        self.received += len(data)

    def commit(self) -> Path:
        """Verify size and hash, then move the bytes into the store; return the blob path."""
        try:
            if self.received != self.size:
                raise BlobError(
                    f"upload ended after {self.received} of the declared {self.size} bytes"
                )
            digest = self.hash.hexdigest()
            if digest != self.sha256:
                raise BlobError(
                    f"sha256 of the received bytes is {digest}, not the declared {self.sha256}"
                )
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            dest = self.store.path(digest)
            dest.parent.mkdir(mode=DIR_MODE, exist_ok=True)
            os.replace(self.path, dest)
            _fsync_dir(dest.parent)
            return dest
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop the temporary file (a no-op after a commit)."""
        if not self.file.closed:
            self.file.close()
        if self.path.exists():
            self.path.unlink()


class BlobStore:
    """Blobs under ``root/sha256/ab/abcdef...``; temporary uploads under ``root/tmp``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        for folder in (root, root / "sha256", self.tmp):
            folder.mkdir(mode=DIR_MODE, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.root / "sha256" / digest[:2] / digest

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def writer(self, size: int, sha256: str, limit: int) -> BlobWriter:
        return BlobWriter(self, size, sha256, limit)

    def put_bytes(self, data: bytes, digest: str | None = None) -> str:
        """Store ``data`` (atomically) and return its sha256."""
        digest = digest or hashlib.sha256(data).hexdigest()
        if not self.exists(digest):
            w = self.writer(len(data), digest, max(len(data), 1))
            w.write(0, data)
            w.commit()
        return digest

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def digests(self) -> Iterator[str]:
        """The sha256 of every stored blob."""
        for path in (self.root / "sha256").glob("??/*"):
            if _DIGEST.fullmatch(path.name) and path.parent.name == path.name[:2]:
                yield path.name

    def stored_bytes(self) -> int:
        """The bytes of every stored blob (temporary uploads not counted)."""
        total = 0
        for digest in self.digests():
            try:
                total += self.path(digest).stat().st_size
            except FileNotFoundError:  # deleted meanwhile
                pass
        return total

    def sweep(self, keep: set[str], temps: bool = True) -> tuple[int, int]:
        """Delete the blobs not in ``keep`` and (with ``temps``, which is only safe while no
        upload is in progress) every temporary upload; return how many of each."""
        blobs = [d for d in self.digests() if d not in keep]
        for digest in blobs:
            self.delete(digest)
        stale = [p for p in self.tmp.iterdir() if p.is_file() or p.is_symlink()] if temps else []
        for path in stale:
            path.unlink(missing_ok=True)
        return len(blobs), len(stale)
