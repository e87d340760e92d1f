"""Array backend: NumPy on the CPU, CuPy on a usable CUDA device, chosen once.

The engine's functions take an array module ``xp`` and run unchanged on either. CuPy is
imported only after the CUDA driver has reported a device, so a machine without one never
imports it (an import of CuPy on such a machine succeeds but every later call fails, which
is worse than not trying). What onnxruntime can do is decided per session from the
providers it really assigned (``runtime.session``), never from CuPy alone.

Tests register a NumPy-backed stand-in for CuPy (:func:`register_gpu_module`) so that the
GPU code paths run in CI without a GPU.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

DEVICE_ENV = "LAYERSCOPE_DEVICE"
_VALID_DEVICES = ("auto", "cpu", "gpu")
# Settings that make cuBLAS round float32 products through TF32 (10-bit mantissa): the
# float32 error bound of the k-NN proof (module knn) would not hold.
TF32_ENV = ("CUPY_TF32", "NVIDIA_TF32_OVERRIDE")

log = logging.getLogger("layerscope.device")
_registered: ModuleType | None = None


class DeviceUnavailable(RuntimeError):
    """``device='gpu'`` was asked for but something it needs is missing (named)."""


@dataclass(frozen=True)
class Backend:
    """The device chosen, its array module and why it was chosen."""

    device: str
    xp: ModuleType
    reason: str


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


def register_gpu_module(module: ModuleType | None) -> None:
    """Use ``module`` as the GPU array module instead of CuPy (``None``: CuPy again).

    For tests only: a strict stand-in that behaves like CuPy where it matters runs the GPU
    code paths on the CPU. The cached device choice is forgotten.
    """
    global _registered
    _registered = module
    _resolve.cache_clear()


def tf32_setting() -> str | None:
    """Return ``NAME=value`` of a setting that turns TF32 on for float32 products, or None.

    ``0`` (or empty) keeps IEEE float32; any other value may let cuBLAS use TF32.
    """
    for name in TF32_ENV:
        value = os.environ.get(name, "").strip()
        if value not in ("", "0"):
            return f"{name}={value}"
    return None


def _gpu_module() -> tuple[ModuleType | None, str]:
    """Return ``(module, "")`` when a GPU array module is usable, else ``(None, why not)``."""
    if _registered is not None:
        return _registered, ""
    count = cuda_device_count()
    if count == 0:
        return None, "the CUDA driver reports no device (no NVIDIA driver or no GPU)"
    tf32 = tf32_setting()
    if tf32 is not None:
        return None, (f"{tf32} lets cuBLAS round float32 products to TF32, which breaks the "
                      "exact k-NN's float32 error bound; unset it (or set it to 0)")
    try:
        import cupy  # noqa: PLC0415 - imported only once a device is known to exist
    except ImportError:
        return None, (f"{count} CUDA device(s) found but CuPy is not installed "
                      "(install the extra: pip install 'layerscope[gpu]')")
    try:
        cupy.zeros(1).sum()  # fails here, not later, when the CUDA runtime does not match
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable", said why
        return None, f"CuPy cannot use the CUDA device: {type(exc).__name__}: {exc}"
    return cupy, ""


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
def _resolve(value: str) -> Backend:
    if value == "cpu":
        return Backend("cpu", np, "device 'cpu' was asked for")
    module, why_not = _gpu_module()
    if module is not None:
        backend = Backend("gpu", module, f"device '{value}': a usable CUDA device "
                          f"(array module {module.__name__})")
    elif value == "gpu":
        raise DeviceUnavailable(f"device 'gpu' was requested but {why_not}")
    else:
        backend = Backend("cpu", np, f"device 'auto': no GPU, as {why_not}")
    if value == "auto":  # once per process: the choice is cached
        log.info("device auto chose %s: %s", backend.device, backend.reason)
    return backend


def resolve_backend(device: str | None = None) -> Backend:
    """Return the :class:`Backend` for ``device`` (argument, ``$LAYERSCOPE_DEVICE``, auto).

    Raises :class:`DeviceUnavailable` naming what is missing when ``gpu`` cannot be had.
    The choice is made once per requested value and cached for the process.
    """
    return _resolve(requested_device(device))


def get_backend(device: str | None = None) -> tuple[str, ModuleType]:
    """Return ``(device_name, xp)``: ``("gpu", cupy)`` or ``("cpu", numpy)``."""
    backend = resolve_backend(device)
    return backend.device, backend.xp


def array_module(a: Any) -> ModuleType:
    """Return the array module (NumPy, CuPy or the registered stand-in) that owns ``a``."""
    if isinstance(a, np.ndarray) or np.isscalar(a):
        return np
    if _registered is not None and isinstance(a, _registered.ndarray):
        return _registered
    mod = type(a).__module__.split(".")[0]
    if mod == "cupy":
        import cupy  # noqa: PLC0415

        return cupy  # type: ignore[no-any-return]
    return np


def sparse_module(xp: ModuleType) -> Any:
    """Return the sparse-matrix module that goes with ``xp``: ``scipy.sparse`` for NumPy,
    ``cupyx.scipy.sparse`` for CuPy, the stand-in's own (``layerscope_sparse``) for it."""
    if xp is np:
        from scipy import sparse  # noqa: PLC0415

        return sparse
    own = getattr(xp, "layerscope_sparse", None)
    if own is not None:
        return own
    from cupyx.scipy import sparse as cusparse  # noqa: PLC0415

    return cusparse


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
