"""The CLI's input files: checks that name the file and what was expected, and the .npz
reader and writer (never a pickle)."""

from __future__ import annotations

import ast
import math
import mmap
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ..lazy import lazy_module
from ..local import write_atomic
from .rawarray import DESCRS, ITEMSIZE, RawArray

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy")


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


def load_npz(path: str | os.PathLike[str], required_any: tuple[str, ...] = (), *,
             raw: bool = False) -> dict[str, Any]:
    """Return the arrays of an .npz file as a dict, refusing pickled (object) arrays.

    ``required_any`` lists groups written ``"a|b"``: at least one name of each group must
    be present. Stored (uncompressed) members, what ``np.savez`` writes, are read straight
    into their arrays (:func:`_read_stored`); compressed ones through NumPy's reader.
    ``raw``: a stored member of a plain dtype in C order comes back as a
    :class:`~layerscope.client.rawarray.RawArray` over the file's pages, mapped read-only
    (no copy, and NumPy is not imported for it; the file must not be cut short while it is
    in use), every other one as a NumPy array.
    """
    p = check_input(path, "npz")
    arrays: dict[str, Any] = {}
    try:
        with open(p, "rb") as f, zipfile.ZipFile(f) as zf:
            size = os.fstat(f.fileno()).st_size
            pages = _Pages(f) if raw else None
            for info in zf.infolist():
                name = info.filename.removesuffix(".npy")
                try:
                    arrays[name] = _read_member(f, zf, info, size, pages)
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


class _Pages:
    """The file's pages, mapped read-only when first asked for (None where the file cannot
    be mapped: it is read instead). The map stays while a view of it is alive."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.map: mmap.mmap | None = None
        self.failed = False

    def view(self, start: int, nbytes: int) -> memoryview | None:
        if self.map is None and not self.failed:
            try:
                self.map = mmap.mmap(self.f.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError):
                self.failed = True
        return None if self.map is None else memoryview(self.map)[start : start + nbytes]


def _read_member(f: BinaryIO, zf: zipfile.ZipFile, info: zipfile.ZipInfo, size: int,
                 pages: _Pages | None) -> Any:
    """One member's array: stored ones read in place, others through NumPy's reader."""
    if info.flag_bits & 0x1:
        raise _MemberError("is encrypted; expected a plain np.savez archive")
    if info.compress_type == zipfile.ZIP_STORED:
        found = _read_stored(f, info, size, pages)
        if isinstance(found, RawArray) and pages is None:
            return np.asarray(found)
        if found is not None:
            return found
    with zf.open(info) as member:
        if member.read(len(NPY_MAGIC)) != NPY_MAGIC:
            raise _MemberError("is not an .npy array (no NPY header)")
    with zf.open(info) as member:
        return np.lib.format.read_array(member, allow_pickle=False)


MAX_HEADER = 10_000  # bytes of an .npy header parsed (NumPy's own default limit)
HEADER_SIZE = {1: struct.Struct("<H"), 2: struct.Struct("<I"), 3: struct.Struct("<I")}


def _npy_header(f: BinaryIO, room: int) -> tuple[Any, bool, tuple[int, ...], int] | None:
    """The (descr, fortran_order, shape, header bytes) of the .npy at ``f``'s position, read
    without NumPy (the header is a Python literal, parsed by ``ast.literal_eval``: never
    code); None for one this reader leaves to NumPy (an unknown version, a header past
    MAX_HEADER, one written by Python 2)."""
    lead = f.read(len(NPY_MAGIC) + 2)
    if len(lead) < len(NPY_MAGIC) + 2 or lead[:len(NPY_MAGIC)] != NPY_MAGIC:
        raise _MemberError("is not an .npy array (no NPY header)")
    counter = HEADER_SIZE.get(lead[-2])
    if counter is None or lead[-1] != 0:
        return None
    (length,) = counter.unpack(f.read(counter.size))
    total = len(lead) + counter.size + length
    if length > MAX_HEADER or total > room:
        return None
    try:
        header = ast.literal_eval(f.read(length).decode("utf-8" if lead[-2] == 3 else "latin1"))
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError):
        return None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        return None
    shape, fortran = header["shape"], header["fortran_order"]
    if not isinstance(shape, tuple) or not isinstance(fortran, bool) or any(
            type(d) is not int or d < 0 for d in shape):
        return None
    return header["descr"], fortran, shape, total


def _read_stored(f: BinaryIO, info: zipfile.ZipInfo, size: int, pages: _Pages | None) -> Any:
    """The array of a stored member, read from the file straight into new memory (one copy)
    with the zip's CRC-32 checked over the member as it is read: a RawArray for a plain
    dtype in C order (over the file's mapped ``pages`` when given), else a NumPy array;
    None for a header this reader leaves to NumPy."""
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
    parsed = _npy_header(f, info.file_size)
    if parsed is None:
        return None
    descr, fortran, shape, header = parsed
    plain = DESCRS.get(descr) if isinstance(descr, str) else None
    if plain is not None:
        itemsize = ITEMSIZE[plain]
    else:
        try:
            dtype = np.lib.format.descr_to_dtype(descr)
        except (TypeError, ValueError):
            return None  # NumPy's reader names what is wrong with it
        if dtype.hasobject:
            raise _MemberError(PICKLED)
        itemsize = dtype.itemsize
    count = math.prod(shape)
    nbytes = count * itemsize
    if header + nbytes != info.file_size:
        what = plain or dtype
        raise _MemberError(f"holds {info.file_size - header} bytes of data; its header "
                           f"describes {nbytes} ({what} {shape})")
    f.seek(start)
    crc = zlib.crc32(f.read(header))
    mapped = pages.view(start + header, nbytes) if pages and plain and not fortran else None
    if mapped is not None:
        data: bytearray | memoryview = mapped
        for at in range(0, nbytes, READ_BYTES):
            crc = zlib.crc32(mapped[at : at + READ_BYTES], crc)
    else:
        data = bytearray(nbytes)
        view = memoryview(data)
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
    if plain is not None and not fortran:
        return RawArray(plain, shape, data)
    flat = np.frombuffer(data, np.dtype(plain).newbyteorder("<") if plain else dtype)
    if fortran:
        return flat.reshape(shape[::-1]).transpose()
    return flat.reshape(shape)


def save_npz(path: str | os.PathLike[str], **arrays: Any) -> Path:
    """Write ``arrays`` to ``path`` atomically (temporary file, fsync, rename)."""
    return write_atomic(path, lambda f: np.savez(f, **arrays))
