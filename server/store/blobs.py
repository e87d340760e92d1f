"""Content-addressed files: every blob is named by the sha256 of its bytes.

Writes are atomic: bytes go to a temporary file in the same data directory, are fsynced,
verified against the declared size and hash, and only then renamed into place (and the
folder fsynced). A crash leaves either the old state or the new one, never half a file.
Folders are 0700 and files 0600. Which blobs live is not decided here: :class:`Store`
keeps, under the catalog's lock, the rows and pins that hold them.

A model uploaded with its external-data files is a *set*: a folder named by the set's id
in place of a file, holding each file at its relative path. It is received into a
temporary folder, every file verified, and renamed into place whole (:class:`SetWriter`).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
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


def _remove(path: Path) -> None:
    """Delete a blob: a file, or the folder of a set (never following a link)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class SetWriter:
    """Receives the files of a model set one after another into a temporary folder;
    ``commit`` moves the verified folder into the store as the blob ``set_id``.

    ``files`` are (relative path, size, sha256), paths already checked to be relative and
    normalised; each file is created exclusively, so no path can land on another's file
    or on a link."""

    def __init__(self, store: BlobStore, set_id: str, files: list[tuple[str, int, str]],
                 limit: int) -> None:
        total = sum(size for _, size, _ in files)
        if total > limit:
            raise SizeLimitError(
                f"the model's files total {total} bytes, above the server's limit of {limit} "
                f"bytes ({limit >> 20} MiB, --max-model-files-mb)"
            )
        self.store, self.set_id, self.files = store, set_id, files
        self.root = Path(tempfile.mkdtemp(prefix="set-", dir=store.tmp))
        self.index, self.received = -1, 0
        self.file: BinaryIO | None = None
        self.hash = hashlib.sha256()

    def _close_current(self) -> None:
        if self.file is None:
            return
        path, size, sha = self.files[self.index]
        if self.received != size:
            raise BlobError(f"file {path!r} ended after {self.received} of its declared "
                            f"{size} bytes")
        digest = self.hash.hexdigest()
        if digest != sha:
            raise BlobError(f"sha256 of the received bytes of file {path!r} is {digest}, not "
                            f"the declared {sha}")
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        self.file = None

    def _open(self, index: int) -> None:
        path = self.root / self.files[index][0]
        path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        self.file = os.fdopen(os.open(path, flags, FILE_MODE), "wb")
        self.index, self.received, self.hash = index, 0, hashlib.sha256()

    def write(self, index: int, offset: int, data: bytes) -> None:
        """Add a chunk of file ``index``: files in order, each file's chunks in order."""
        if index != self.index:
            if not (self.index < index < len(self.files)):
                raise BlobError(f"chunk of file {index} after file {self.index}; send the "
                                f"{len(self.files)} files in the header's order")
            self._close_current()
            for skipped in range(self.index + 1, index):  # empty files send no chunk
                self._open(skipped)
                self._close_current()
            self._open(index)
        path, size, _ = self.files[index]
        if offset != self.received:
            raise BlobError(f"file {path!r}: chunk offset {offset} but {self.received} bytes "
                            "were received")
        if self.received + len(data) > size:
            raise BlobError(f"file {path!r}: received more than its declared size_bytes="
                            f"{size}")
        assert self.file is not None
        self.file.write(data)
        self.hash.update(data)
        self.received += len(data)

    def finish(self) -> Path:
        """Verify the last files; return the temporary folder (checked before commit)."""
        self._close_current()
        for index in range(self.index + 1, len(self.files)):  # trailing files
            self._open(index)
            self._close_current()
        return self.root

    def commit(self) -> Path:
        """Move the verified folder into the store; return the set's path."""
        try:
            dest = self.store.path(self.set_id)
            dest.parent.mkdir(mode=DIR_MODE, exist_ok=True)
            for folder, _, _ in os.walk(self.root):
                _fsync_dir(Path(folder))
            if not dest.exists():  # a concurrent upload of the same set may have won
                os.replace(self.root, dest)
                _fsync_dir(dest.parent)
            return dest
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop the temporary folder (a no-op after a commit)."""
        if self.file is not None:
            self.file.close()
            self.file = None
        _remove(self.root)


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
        return self.path(digest).exists()

    def writer(self, size: int, sha256: str, limit: int) -> BlobWriter:
        return BlobWriter(self, size, sha256, limit)

    def set_writer(self, set_id: str, files: list[tuple[str, int, str]], limit: int
                   ) -> SetWriter:
        return SetWriter(self, set_id, files, limit)

    def put_bytes(self, data: bytes, digest: str | None = None) -> str:
        """Store ``data`` (atomically) and return its sha256."""
        digest = digest or hashlib.sha256(data).hexdigest()
        if not self.exists(digest):
            w = self.writer(len(data), digest, max(len(data), 1))
            w.write(0, data)
            w.commit()
        return digest

    def delete(self, digest: str) -> None:
        _remove(self.path(digest))

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
        stale = list(self.tmp.iterdir()) if temps else []
        for path in stale:
            _remove(path)
        return len(blobs), len(stale)
