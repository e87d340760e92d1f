"""The CLI's input files: checks that name the file and what was expected, and the .npz
reader and writer (never a pickle)."""

from __future__ import annotations

import math
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..local import write_atomic


class DataFileError(ValueError):
    """A data file that cannot be used, with a message naming the file and the problem."""


EXPECTED = {
    "npz": "an .npz archive of named arrays (np.savez(path, features=x, labels=y))",
    "onnx": "an ONNX model file",
    "data": "a data file (.npz, .npy, .csv, .parquet) or an image folder",
    "source": "a model file or folder",
    "json": "the --json output of analyze, rank or certify",
}
NPY_MAGIC = b"\x93NUMPY"


def check_input(path: str | os.PathLike[str], kind: str) -> Path:
    """Return ``path`` when it is a readable input of ``kind`` (a key of EXPECTED); else
    raise DataFileError, one line naming the file, the problem and what was expected."""
    p = Path(path)
    want = EXPECTED[kind]
    if not p.exists():
        raise DataFileError(f"{p}: no such file; expected {want}")
    if p.is_dir():
        if kind not in ("source", "data"):
            raise DataFileError(f"{p}: is a directory; expected {want}")
        if not os.access(p, os.R_OK | os.X_OK):
            raise DataFileError(f"{p}: permission denied; expected {want}")
        return p
    try:
        with open(p, "rb") as f:
            head = f.read(len(NPY_MAGIC))
    except PermissionError:
        raise DataFileError(f"{p}: permission denied (not readable); expected {want}") from None
    except OSError as exc:
        raise DataFileError(f"{p}: cannot be read ({exc.strerror}); expected {want}") from None
    if kind == "npz" and head == NPY_MAGIC:
        raise DataFileError(f"{p}: is a .npy file (one unnamed array); expected {want}")
    if kind == "npz" and head[:2] != b"PK":
        raise DataFileError(f"{p}: is not an .npz archive (a zip file); expected {want}")
    return p


def load_npz(path: str | os.PathLike[str], required_any: tuple[str, ...] = ()) -> dict[str, Any]:
    """Return the arrays of an .npz file as a dict, refusing pickled (object) arrays.

    ``required_any`` lists groups written ``"a|b"``: at least one name of each group must
    be present. Stored (uncompressed) members, what ``np.savez`` writes, are read straight
    into their arrays (:func:`_read_stored`); compressed ones through NumPy's reader.
    """
    p = check_input(path, "npz")
    arrays: dict[str, np.ndarray] = {}
    try:
        with open(p, "rb") as f, zipfile.ZipFile(f) as zf:
            size = os.fstat(f.fileno()).st_size
            for info in zf.infolist():
                name = info.filename.removesuffix(".npy")
                try:
                    arrays[name] = _read_member(f, zf, info, size)
                except _MemberError as exc:
                    raise DataFileError(f"{p}: array {name!r} {exc}") from None
                except ValueError as exc:
                    if "pickle" in str(exc).lower() or "object arrays" in str(exc).lower():
                        raise DataFileError(f"{p}: array {name!r} {PICKLED}") from None
                    raise DataFileError(f"{p}: array {name!r} cannot be read: {exc}") from None
                except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
                    # NotImplementedError: a compression method zipfile cannot read
                    raise DataFileError(f"{p}: array {name!r} cannot be read: {exc}") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataFileError(f"{p}: not a readable .npz file ({exc})") from None
    except ValueError as exc:
        if isinstance(exc, DataFileError):
            raise
        raise DataFileError(f"{p}: not a readable .npz file ({exc})") from None
    for group in required_any:
        options = group.split("|")
        if not any(o in arrays for o in options):
            want = " or ".join(repr(o) for o in options)
            found = ", ".join(repr(n) for n in arrays) or "no arrays"
            raise DataFileError(f"{p}: missing array {want} (found: {found})")
    return arrays


PICKLED = ("is a pickled object array; layerscope never loads pickles (save numeric arrays, "
           "e.g. np.savez(path, features=X.astype('float32'), labels=y.astype('int64')))")
LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., file name length, extra length
READ_BYTES = 4 << 20  # read and checksummed a piece at a time, while it is in the cache


class _MemberError(ValueError):
    """A member that is not a readable array (the message follows its name)."""


def _read_member(f: BinaryIO, zf: zipfile.ZipFile, info: zipfile.ZipInfo, size: int
                 ) -> np.ndarray:
    """One member's array: stored ones read in place, others through NumPy's reader."""
    if info.flag_bits & 0x1:
        raise _MemberError("is encrypted; expected a plain np.savez archive")
    if info.compress_type == zipfile.ZIP_STORED:
        found = _read_stored(f, info, size)
        if found is not None:
            return found
    with zf.open(info) as member:
        if member.read(len(NPY_MAGIC)) != NPY_MAGIC:
            raise _MemberError("is not an .npy array (no NPY header)")
    with zf.open(info) as member:
        return np.lib.format.read_array(member, allow_pickle=False)  # type: ignore[no-any-return]


def _read_stored(f: BinaryIO, info: zipfile.ZipInfo, size: int) -> np.ndarray | None:
    """The array of a stored member, read from the file straight into a new array (one
    copy) with the zip's CRC-32 checked over the member as it is read; None for an .npy
    format version this reader leaves to NumPy (3.0: UTF-8 field names)."""
    f.seek(info.header_offset)
    head = f.read(LOCAL_HEADER.size)
    if len(head) < LOCAL_HEADER.size:
        raise _MemberError("is cut off (the file ends inside its zip header)")
    signature, name_len, extra_len = LOCAL_HEADER.unpack(head)
    if signature != b"PK\x03\x04":
        raise _MemberError("has no zip header where the archive's directory says")
    start = info.header_offset + LOCAL_HEADER.size + name_len + extra_len
    if start + info.file_size > size:
        raise _MemberError(f"is cut off: the archive lists {info.file_size} bytes, the file "
                           f"holds {max(0, size - start)}")
    f.seek(start)
    if f.read(len(NPY_MAGIC)) != NPY_MAGIC:
        raise _MemberError("is not an .npy array (no NPY header)")
    f.seek(start)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        return None
    if dtype.hasobject:
        raise _MemberError(PICKLED)
    header = f.tell() - start
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    if header + nbytes != info.file_size:
        raise _MemberError(f"holds {info.file_size - header} bytes of data; its header "
                           f"describes {nbytes} ({dtype} {shape})")
    f.seek(start)
    crc = zlib.crc32(f.read(header))
    flat = np.empty(count, dtype)
    view = memoryview(flat.view(np.uint8) if nbytes else b"")  # type: ignore[arg-type]
    done = 0
    while done < nbytes:
        piece = view[done : done + READ_BYTES]
        got = f.readinto(piece)  # type: ignore[attr-defined]
        if not got:
            raise _MemberError(f"is cut off: {done} of {nbytes} bytes")
        crc = zlib.crc32(piece[:got], crc)
        done += got
    if crc != info.CRC:
        raise _MemberError("fails its CRC-32 check: the file is corrupt")
    if fortran:
        return flat.reshape(shape[::-1]).transpose()
    return flat.reshape(shape)


def save_npz(path: str | os.PathLike[str], **arrays: Any) -> Path:
    """Write ``arrays`` to ``path`` atomically (temporary file, fsync, rename)."""
    return write_atomic(path, lambda f: np.savez(f, **arrays))
