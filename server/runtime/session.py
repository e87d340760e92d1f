"""onnxruntime sessions: the CUDA provider only where a CUDA device is really usable."""

from __future__ import annotations

import os
from typing import Any

from ..metrics.backend import cuda_device_count, requested_device

# Where onnxruntime looks for the external data of a model loaded from bytes (1.20+; older
# versions ignore the key and use the working directory).
EXTERNAL_DATA_FOLDER_KEY = "session.model_external_initializers_file_folder_path"


def providers(device: str | None = None) -> list[str]:
    """Return the execution providers to ask for: CUDA first only when a device is there.

    Asking onnxruntime-gpu for CUDA on a machine without it makes it fall back with a loud
    error in the log; checking the driver first avoids that.
    """
    import onnxruntime as ort  # noqa: PLC0415

    want = requested_device(device)
    available = ort.get_available_providers()
    if want != "cpu" and "CUDAExecutionProvider" in available and cuda_device_count() > 0:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if want == "gpu":
        raise RuntimeError(
            "device 'gpu' was requested but onnxruntime has no usable CUDA provider here "
            f"(providers: {', '.join(available)}; CUDA devices: {cuda_device_count()})"
        )
    return ["CPUExecutionProvider"]


def make_session(model: bytes, device: str | None = None, threads: int | None = None,
                 external_folder: str | os.PathLike[str] | None = None) -> Any:
    """Return an onnxruntime InferenceSession for serialized ``model`` bytes.

    ``model`` must be self-contained (``graph.load.session_bytes``), or name external data
    checked to lie in ``external_folder`` (``graph.load.session_input``), which onnxruntime
    then reads from there. Without a folder, should a reference to external data slip
    through anyway, onnxruntime resolves it against a folder that can hold no file (the
    null device), not against the working directory.
    """
    import onnxruntime as ort  # noqa: PLC0415

    opts = ort.SessionOptions()
    opts.add_session_config_entry(
        EXTERNAL_DATA_FOLDER_KEY, os.fspath(external_folder) if external_folder else os.devnull)
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = int(threads or os.cpu_count() or 1)
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model, opts, providers=providers(device))
