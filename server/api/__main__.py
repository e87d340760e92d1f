"""``python -m layerscope.server.api``: the same as ``layerscope serve``."""

import sys

# The server's third-party modules come with the [server] or [gpu] extra, not with the light
# install: say so instead of a traceback.
_EXTRA_MODULES = ("onnx", "onnxruntime", "grpc_health", "grpc_reflection", "faiss", "scipy")

try:
    from .serve import main
except ModuleNotFoundError as exc:
    if (exc.name or "").split(".")[0] not in _EXTRA_MODULES:
        raise
    sys.exit(f"layerscope serve: error: the server needs {exc.name}, which is not installed: "
             "pip install 'layerscope[server]' ('layerscope[gpu]' on a CUDA machine)")

sys.exit(main())
