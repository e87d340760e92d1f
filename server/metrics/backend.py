"""Array backend: NumPy on the CPU, CuPy on a usable CUDA device, chosen once.

The engine's functions take an array module ``xp`` and run unchanged on either. CuPy is
imported only after the CUDA driver has reported a device, so a machine without one never
imports it (an import of CuPy on such a machine succeeds but every later call fails, which
is worse than not trying).
"""

from __future__ import annotations

import ctypes
import functools
import os
from types import ModuleType
from typing import Any

import numpy as np

DEVICE_ENV = "LAYERSCOPE_DEVICE"
_VALID_DEVICES = ("auto", "cpu", "gpu")


def cuda_device_count() -> int:
    """Return the number of CUDA devices the driver reports, 0 when there is no driver.

    Asks the driver library directly (``cuInit`` + ``cuDeviceGetCount``) so that nothing
    heavier than ``libcuda`` is loaded to find out.
    """
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        try:
            if lib.cuInit(0) != 0:
                return 0
            count = ctypes.c_int(0)
            if lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
                return 0
            return int(count.value)
        except AttributeError:
            return 0
    return 0


def _cupy_if_usable() -> ModuleType | None:
    if cuda_device_count() == 0:
        return None
    try:
        import cupy  # noqa: PLC0415 - imported only once a device is known to exist

        cupy.zeros(1).sum()  # fails here, not later, when the CUDA runtime does not match
    except Exception:  # noqa: BLE001 - any failure means "not usable", reported by caller
        return None
    return cupy  # type: ignore[no-any-return]


def requested_device(device: str | None = None) -> str:
    """Return the device asked for: the argument, else ``$LAYERSCOPE_DEVICE``, else auto."""
    value = (device or os.environ.get(DEVICE_ENV) or "auto").strip().lower()
    if value not in _VALID_DEVICES:
        raise ValueError(
            f"device must be one of {', '.join(_VALID_DEVICES)} "
            f"(argument or ${DEVICE_ENV}); got {value!r}"
        )
    return value


@functools.cache
def _resolve(value: str) -> tuple[str, ModuleType]:
    if value == "cpu":
        return "cpu", np
    cupy = _cupy_if_usable()
    if cupy is not None:
        return "gpu", cupy
    if value == "gpu":
        raise RuntimeError(
            "device 'gpu' was requested but no usable CUDA device was found "
            "(no driver, no device, or CuPy (extra 'layerscope[gpu]') not installed)"
        )
    return "cpu", np


def get_backend(device: str | None = None) -> tuple[str, ModuleType]:
    """Return ``(device_name, xp)``: ``("gpu", cupy)`` or ``("cpu", numpy)``.

    The choice is made once per requested value and cached for the process.
    """
    return _resolve(requested_device(device))


def array_module(a: Any) -> ModuleType:
    """Return the array module (NumPy or CuPy) that owns ``a``."""
    if isinstance(a, np.ndarray) or np.isscalar(a):
        return np
    mod = type(a).__module__.split(".")[0]
    if mod == "cupy":
        import cupy  # noqa: PLC0415

        return cupy  # type: ignore[no-any-return]
    return np


def to_host(a: Any) -> Any:
    """Return ``a`` as a NumPy array (a no-op for NumPy input)."""
    if isinstance(a, np.ndarray):
        return a
    get = getattr(a, "get", None)
    if callable(get):
        return get()
    return np.asarray(a)


def argsort_stable(xp: ModuleType, a: Any, axis: int = -1) -> Any:
    """Indices that sort ``a`` along ``axis``, equal values kept in their order.

    CuPy's argsort is always stable and (in some versions) refuses a ``kind`` argument;
    NumPy's needs ``kind="stable"``.
    """
    if xp is np:
        return np.argsort(a, axis=axis, kind="stable")
    return xp.argsort(a, axis=axis)

