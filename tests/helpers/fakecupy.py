"""A strict NumPy-backed stand-in for CuPy, to run the GPU code paths on a CPU.

It behaves like CuPy where our code could go wrong on a real GPU:

- its own array type (``ndarray``) wrapping a NumPy array; NumPy arrays mixed with it in
  an operation, an index, an assignment or a function call raise ``TypeError`` (CuPy:
  "Unsupported type <class 'numpy.ndarray'>"); turning one into a NumPy array implicitly
  (``np.asarray``) raises ``TypeError`` too, as CuPy does; ``asarray`` accepts NumPy input
  (a host-to-device copy) and ``asnumpy`` / ``ndarray.get()`` return NumPy copies;
- NumPy-only arguments are refused: ``kind=`` of ``sort``/``argsort``/``partition``/
  ``argpartition`` and ``order=`` (CuPy's sorts have neither); ``sort``/``argsort`` are
  stable, as CuPy's are;
- ``cuda.Device().mem_info``, ``cuda.get_current_stream().synchronize()``,
  ``cuda.UnownedMemory`` and ``cuda.MemoryPointer`` exist; an ``ndarray`` made on a
  ``MemoryPointer`` reads exactly the bytes the memory was declared with (here host memory,
  such as a CPU OrtValue's buffer), so a wrong element size reads wrong values.

Tests register it with ``layerscope.server.metrics.backend.register_gpu_module``.
"""

from __future__ import annotations

import ctypes
import functools
import operator
from collections.abc import Callable
from typing import Any

import numpy as np

_SORTS = {"sort", "argsort", "partition", "argpartition", "lexsort"}
_FREE_BYTES = 2 << 30
_TOTAL_BYTES = 4 << 30


def _unwrap(value: Any, where: str) -> Any:
    if isinstance(value, ndarray):
        return value._a
    if isinstance(value, np.ndarray):
        raise TypeError(f"Unsupported type {type(value)} (shape {value.shape}) in {where}: a "
                        "NumPy array mixed with fakecupy arrays (CuPy refuses it too)")
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v, where) for v in value)
    if isinstance(value, dict):
        return {k: _unwrap(v, where) for k, v in value.items()}
    return value


def _wrap(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return ndarray._of(value)
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


class ndarray:  # noqa: N801 - CuPy's name
    """A device array stand-in: a NumPy array that refuses NumPy arrays beside it."""

    __slots__ = ("_a",)
    __array_ufunc__ = None  # NumPy ufuncs on it return NotImplemented -> our operators

    def __init__(self, shape: Any, dtype: Any = float, memptr: MemoryPointer | None = None,
                 strides: Any = None, order: str = "C") -> None:
        if memptr is None:
            self._a = np.empty(shape, dtype=dtype, order=order)
        else:
            self._a = memptr.view(tuple(shape), np.dtype(dtype))

    @classmethod
    def _of(cls, a: np.ndarray) -> ndarray:
        out = cls.__new__(cls)
        out._a = a
        return out

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use "
                        "`.get()` to construct a NumPy array explicitly.")

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        return globals()["__getattr__"](func.__name__)(*args, **kwargs)

    def get(self) -> np.ndarray:
        return self._a.copy()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # no __array_interface__ & co.: no implicit conversion
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr)

        def method(*args: Any, **kwargs: Any) -> Any:
            if name in _SORTS and ("kind" in kwargs or "order" in kwargs):
                raise TypeError(f"fakecupy ndarray.{name}() got an unexpected keyword "
                                "argument 'kind' (CuPy has none)")
            if name in ("sort", "argsort"):
                kwargs["kind"] = "stable"  # CuPy's sorts are always stable
            return _wrap(attr(*_unwrap(args, name), **_unwrap(kwargs, name)))

        return method

    @property
    def T(self) -> ndarray:  # noqa: N802 - NumPy's name
        return ndarray._of(self._a.T)

    def __repr__(self) -> str:
        return f"fakecupy.{self._a!r}"

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self) -> Any:
        return (_wrap(v) for v in self._a)

    def __bool__(self) -> bool:
        return bool(self._a)

    def __int__(self) -> int:
        return int(self._a)

    def __float__(self) -> float:
        return float(self._a)

    def __index__(self) -> int:
        return operator.index(self._a)

    def __getitem__(self, key: Any) -> Any:
        return _wrap(self._a[_unwrap(key, "an index")])

    def __setitem__(self, key: Any, value: Any) -> None:
        self._a[_unwrap(key, "an index")] = _unwrap(value, "an assignment")


def _binary(op: Callable[[Any, Any], Any], reflected: bool = False) -> Callable[..., Any]:
    def method(self: ndarray, other: Any) -> Any:
        o = _unwrap(other, op.__name__)
        return _wrap(op(o, self._a) if reflected else op(self._a, o))

    return method


def _inplace(op: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    def method(self: ndarray, other: Any) -> ndarray:
        self._a = op(self._a, _unwrap(other, op.__name__))
        return self

    return method


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and",
              "or", "xor", "lshift", "rshift"):
    _op = getattr(operator, _name if _name not in ("and", "or") else _name + "_")
    setattr(ndarray, f"__{_name}__", _binary(_op))
    setattr(ndarray, f"__r{_name}__", _binary(_op, reflected=True))
    setattr(ndarray, f"__i{_name}__", _inplace(getattr(operator, f"i{_name}")))
for _name in ("lt", "le", "gt", "ge", "eq", "ne"):
    setattr(ndarray, f"__{_name}__", _binary(getattr(operator, _name)))
for _name in ("neg", "pos", "abs", "invert"):
    setattr(ndarray, f"__{_name}__",
            (lambda op: lambda self: _wrap(op(self._a)))(getattr(operator, _name)))
ndarray.__hash__ = None  # type: ignore[assignment]


# --- the module's functions -------------------------------------------------------------


def asarray(a: Any, dtype: Any = None, order: Any = None) -> ndarray:
    """Host (NumPy, lists, scalars) or device input to a device array (a copy from host)."""
    if isinstance(a, ndarray):
        return a if dtype is None else ndarray._of(a._a.astype(dtype, copy=False))
    return ndarray._of(np.array(a, dtype=dtype, order=order or "K", copy=True))


array = asarray


def asnumpy(a: Any) -> np.ndarray:
    return a.get() if isinstance(a, ndarray) else np.asarray(a)


@functools.cache
def __getattr__(name: str) -> Any:  # noqa: N807 - module attributes: NumPy's, made strict
    value = getattr(np, name)
    if not callable(value) or isinstance(value, type):
        return value  # dtypes, constants

    def function(*args: Any, **kwargs: Any) -> Any:
        if name in _SORTS and ("kind" in kwargs or "order" in kwargs):
            raise TypeError(f"fakecupy.{name}() got an unexpected keyword argument 'kind' "
                            "(CuPy has none)")
        if name in ("sort", "argsort"):
            kwargs["kind"] = "stable"  # CuPy's sorts are always stable
        return _wrap(value(*_unwrap(args, name), **_unwrap(kwargs, name)))

    function.__name__ = name
    return function


# --- sparse (cupyx.scipy.sparse's csc_matrix, as far as the projection uses it) -----------


class _CSC:
    """A scipy CSC matrix whose products take and give stand-in arrays."""

    def __init__(self, arg: Any, shape: tuple[int, int] | None = None) -> None:
        from scipy import sparse  # noqa: PLC0415

        if isinstance(arg, tuple):
            arg = tuple(_unwrap(a, "csc_matrix") for a in arg)
        self._m = sparse.csc_matrix(arg, shape=shape)

    @property
    def T(self) -> _CSC:  # noqa: N802 - scipy's name
        out = _CSC.__new__(_CSC)
        out._m = self._m.T
        return out

    def __matmul__(self, other: Any) -> ndarray:
        if not isinstance(other, ndarray):
            raise TypeError(f"Unsupported type {type(other)} in a sparse product")
        return ndarray._of(np.asarray(self._m @ other._a))


class _Sparse:
    csc_matrix = _CSC


layerscope_sparse = _Sparse()


# --- cuda --------------------------------------------------------------------------------


class UnownedMemory:
    """Memory of another library at ``ptr``, ``size`` bytes, kept alive by ``owner``."""

    def __init__(self, ptr: int, size: int, owner: Any) -> None:
        self.ptr, self.size, self.owner = int(ptr), int(size), owner


class MemoryPointer:
    def __init__(self, mem: UnownedMemory, offset: int) -> None:
        self.mem, self.offset = mem, int(offset)

    def view(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """The declared bytes as ``shape``/``dtype``; more than were declared is refused."""
        need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if self.offset + need > self.mem.size:
            raise ValueError(f"an array of {need} bytes on {self.mem.size - self.offset} "
                             "declared bytes would read past the buffer")
        raw = (ctypes.c_char * max(need, 1)).from_address(self.mem.ptr + self.offset)
        return np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape))).reshape(shape)


class _Stream:
    synchronized = 0

    def synchronize(self) -> None:
        _Stream.synchronized += 1


class _Device:
    def __init__(self, index: int = 0) -> None:
        self.id = index

    @property
    def mem_info(self) -> tuple[int, int]:
        return _FREE_BYTES, _TOTAL_BYTES


class _Cuda:
    UnownedMemory = UnownedMemory
    MemoryPointer = MemoryPointer
    Device = _Device
    _stream = _Stream()

    @staticmethod
    def get_current_stream() -> _Stream:
        return _Cuda._stream


cuda = _Cuda()
