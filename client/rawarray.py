"""An array held as its bytes, so that a command can read a data file and send it without
importing NumPy (about 0.1 s of a command's start here: the import and BLAS's threads).

The ``.npz`` reader hands the upload a :class:`RawArray` for every member whose dtype is a
plain little-endian number or bool in C order, what ``np.savez`` writes for the arrays
layerscope takes. Anything else (big-endian, Fortran order, strings, structured dtypes) goes
through NumPy as before. ``np.asarray(raw)`` is a view of the same bytes, so a RawArray
serves wherever an array does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

# NumPy's .npy descr of each plain dtype ("|" for one byte) and NumPy's name of it, which
# is the contract's TensorSpec.dtype.
DESCRS = {
    "|b1": "bool", "|i1": "int8", "|u1": "uint8",
    "<i2": "int16", "<i4": "int32", "<i8": "int64",
    "<u2": "uint16", "<u4": "uint32", "<u8": "uint64",
    "<f2": "float16", "<f4": "float32", "<f8": "float64",
}
ITEMSIZE = {name: int(descr[2:]) for descr, name in DESCRS.items()}


@dataclass(frozen=True, eq=False)
class RawArray:
    """``shape`` and a dtype named as NumPy names it (``"float32"``, ``"int64"``, ``"bool"``:
    a key of ITEMSIZE), over ``data``: the C-order little-endian bytes (a bytearray or a
    memoryview of one byte per item)."""

    dtype: str
    shape: tuple[int, ...]
    data: bytearray | memoryview

    def __post_init__(self) -> None:
        if self.dtype not in ITEMSIZE:
            raise ValueError(f"RawArray: dtype {self.dtype!r} is not one of "
                             f"{', '.join(ITEMSIZE)}")
        if any(not isinstance(d, int) or d < 0 for d in self.shape):
            raise ValueError(f"RawArray: shape {self.shape} is not a tuple of sizes >= 0")
        if len(self.data) != self.nbytes:
            raise ValueError(f"RawArray: {len(self.data)} bytes for {self.dtype} "
                             f"{list(self.shape)}, which needs {self.nbytes}")

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * ITEMSIZE[self.dtype]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d RawArray")
        return self.shape[0]

    def view(self) -> memoryview:
        """The bytes, one byte per item of the view (no copy)."""
        return memoryview(self.data).cast("B")

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        import numpy

        if copy is False and dtype is not None and numpy.dtype(dtype) != numpy.dtype(self.dtype):
            raise ValueError("RawArray: a different dtype needs a copy")
        out = numpy.frombuffer(self.data, dtype=numpy.dtype(self.dtype).newbyteorder("<"))
        out = out.reshape(self.shape)
        if dtype is not None:
            out = out.astype(dtype, copy=False)
        return out.copy() if copy else out
