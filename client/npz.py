"""The CLI's input files: checks that name the file and what was expected, and the .npz
reader and writer (never a pickle)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

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
    be present.
    """
    p = check_input(path, "npz")
    try:
        with np.load(p, allow_pickle=False) as npz:
            names = list(npz.files)
            arrays = {}
            for name in names:
                try:
                    arrays[name] = npz[name]
                except ValueError as exc:
                    if "allow_pickle" in str(exc) or "pickle" in str(exc).lower():
                        raise DataFileError(
                            f"{p}: array {name!r} is a pickled object array; layerscope never "
                            "loads pickles (save numeric arrays, e.g. np.savez(path, "
                            "features=X.astype('float32'), labels=y.astype('int64')))"
                        ) from None
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
            found = ", ".join(repr(n) for n in names) or "no arrays"
            raise DataFileError(f"{p}: missing array {want} (found: {found})")
    return arrays


def save_npz(path: str | os.PathLike[str], **arrays: Any) -> Path:
    """Write ``arrays`` to ``path`` atomically (temporary file, fsync, rename)."""
    return write_atomic(path, lambda f: np.savez(f, **arrays))
