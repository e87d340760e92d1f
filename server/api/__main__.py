"""``python -m layerscope.server.api``: the same as ``layerscope serve``."""

import os
import sys

# OpenBLAS's worker threads spin for 2**28 cycles (~0.1 s) after each multithreaded call
# before they sleep: in a server, a core kept busy for 0.1 s after every request, taken from
# the next one and from other processes (`layerscope indices` on 200 samples run again and
# again took 0.22 s a command, 0.18 s with the threads at rest). 2**24 cycles (~6 ms) keeps
# calls that follow one another at once hot and wastes ~8 ms of a core after the last one.
# OpenBLAS reads it once, when NumPy (or faiss) loads it, which has not happened yet here;
# a value set by the user stays.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "24")

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
