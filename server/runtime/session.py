"""onnxruntime sessions: the CUDA provider only where a CUDA device is really usable.

What a session runs on is read back from the session (``get_providers()``), not assumed
from what was asked: onnxruntime drops a CUDA provider that fails to load (a CUDA or cuDNN
mismatch) to the CPU quietly.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ..metrics.backend import DeviceUnavailable, cuda_device_count, requested_device

# Where onnxruntime looks for the external data of a model loaded from bytes (1.20+; older
# versions ignore the key and use the working directory).
EXTERNAL_DATA_FOLDER_KEY = "session.model_external_initializers_file_folder_path"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

log = logging.getLogger("layerscope.device")
_warned: set[str] = set()


def providers(device: str | None = None) -> list[str]:
    """Return the execution providers to ask for: CUDA first only when a device is there.

    Asking onnxruntime-gpu for CUDA on a machine without it makes it fall back with a loud
    error in the log; checking the driver first avoids that. ``gpu`` without a CUDA provider
    or device raises :class:`DeviceUnavailable` naming which is missing.
    """
    import onnxruntime as ort  # noqa: PLC0415

    want = requested_device(device)
    available = ort.get_available_providers()
    if want != "cpu" and CUDA in available and cuda_device_count() > 0:
        return [CUDA, CPU]
    if want == "gpu":
        missing = (
            f"onnxruntime {ort.__version__} has no CUDA provider (providers: "
            f"{', '.join(available)}; install onnxruntime-gpu, the extra 'layerscope[gpu]')"
            if CUDA not in available else "the CUDA driver reports no device"
        )
        raise DeviceUnavailable(f"device 'gpu' was requested but {missing}")
    return [CPU]


def session_device(session: Any, asked: list[str], device: str | None = None) -> str:
    """Return ``"gpu"`` or ``"cpu"``: where ``session`` really runs the model.

    When CUDA was asked for and onnxruntime dropped it, ``gpu`` raises
    :class:`DeviceUnavailable`; ``auto`` runs on the CPU and logs why once.
    """
    assigned = list(session.get_providers())
    if CUDA in assigned:
        return "gpu"
    if CUDA in asked:
        why = ("onnxruntime did not load its CUDA provider (a CUDA or cuDNN version "
               f"mismatch, say); the session runs on {', '.join(assigned)}")
        if requested_device(device) == "gpu":
            raise DeviceUnavailable(f"device 'gpu' was requested but {why}")
        if why not in _warned:
            _warned.add(why)
            log.warning("device auto: the model runs on the CPU: %s", why)
    return "cpu"


def make_session(model: bytes, device: str | None = None, threads: int | None = None,
                 external_folder: str | os.PathLike[str] | None = None,
                 ask: list[str] | None = None) -> Any:
    """Return an onnxruntime InferenceSession for serialized ``model`` bytes.

    ``model`` must be self-contained (``graph.load.session_bytes``), or name external data
    checked to lie in ``external_folder`` (``graph.load.session_input``), which onnxruntime
    then reads from there. Without a folder, should a reference to external data slip
    through anyway, onnxruntime resolves it against a folder that can hold no file (the
    null device), not against the working directory. ``ask`` overrides the providers asked
    for (``providers(device)``); :func:`session_device` says where the session really runs.
    """
    import onnxruntime as ort  # noqa: PLC0415

    opts = ort.SessionOptions()
    opts.add_session_config_entry(
        EXTERNAL_DATA_FOLDER_KEY, os.fspath(external_folder) if external_folder else os.devnull)
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = int(threads or os.cpu_count() or 1)
    opts.inter_op_num_threads = 1
    asked = list(ask) if ask is not None else providers(device)
    session = ort.InferenceSession(model, opts, providers=asked)
    session_device(session, asked, device)  # refuses a dropped CUDA provider under 'gpu'
    return session
