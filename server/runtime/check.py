"""Whether this machine's onnxruntime is one whole runtime; checked when the server starts.

``onnxruntime`` (the ``[server]`` extra) and ``onnxruntime-gpu`` (the ``[gpu]`` extra) are two
distributions of one ``onnxruntime`` module: pip installs either over the other without a
word, and uninstalling one of them then breaks the other. The server refuses such a mix and
says what to run.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Distributions that install the `onnxruntime` module, and the provider each one promises.
PROMISED_PROVIDER = {
    "onnxruntime": "CPUExecutionProvider",
    "onnxruntime-gpu": "CUDAExecutionProvider",
    "onnxruntime-directml": "DmlExecutionProvider",
    "onnxruntime-openvino": "OpenVINOExecutionProvider",
    "onnxruntime-qnn": "QNNExecutionProvider",
    "onnxruntime-training": "CPUExecutionProvider",
}


@dataclass(frozen=True)
class RuntimeModule:
    """What ``import onnxruntime`` gave: its version and providers, or the error."""

    version: str = ""
    providers: tuple[str, ...] = ()
    error: str | None = None


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_runtimes(names_versions: Iterable[tuple[str, str]] | None = None) -> dict[str, str]:
    """Return the onnxruntime distributions installed (name -> version), from
    ``names_versions`` or else importlib.metadata."""
    if names_versions is None:
        names_versions = ((d.metadata["Name"] or "", d.version)
                          for d in importlib.metadata.distributions())
    return {_normalize(n): v for n, v in names_versions if _normalize(n) in PROMISED_PROVIDER}


def probe_module() -> RuntimeModule:
    """Import onnxruntime and return its version and providers, or the error it raised."""
    try:
        import onnxruntime as ort  # noqa: PLC0415

        return RuntimeModule(str(ort.__version__), tuple(ort.get_available_providers()))
    except Exception as exc:  # noqa: BLE001 - a broken install fails in many ways
        return RuntimeModule(error=f"{type(exc).__name__}: {exc}")


def _fix(installed: Mapping[str, str]) -> str:
    remove = " ".join(sorted({"onnxruntime", "onnxruntime-gpu", *installed}))
    extra = "gpu" if "onnxruntime-gpu" in installed else "server"
    other = "server" if extra == "gpu" else "gpu"
    where = "a machine without CUDA" if extra == "gpu" else "a CUDA machine"
    return (f"run: pip uninstall -y {remove} && pip install 'layerscope[{extra}]' "
            f"('layerscope[{other}]' on {where})")


def runtime_problem(installed: Mapping[str, str], module: RuntimeModule) -> str | None:
    """Return what is wrong with the onnxruntime installation and the command that fixes
    it, or None when exactly one runtime distribution owns a working module (or none is
    installed but the module works: a build from source)."""
    if len(installed) > 1:
        found = ", ".join(f"{n} {v}" for n, v in sorted(installed.items()))
        return (f"several onnxruntime distributions are installed ({found}); they share the "
                f"one `onnxruntime` module, so each overwrote the other's files; {_fix(installed)}")
    if module.error is not None:
        if not installed:
            return (f"onnxruntime is not installed ({module.error}); "
                    "run: pip install 'layerscope[server]' "
                    "('layerscope[gpu]' on a CUDA machine)")
        ((name, version),) = installed.items()
        return (f"{name} {version} is installed but `import onnxruntime` fails "
                f"({module.error}): another onnxruntime distribution changed its files; "
                f"{_fix(installed)}")
    if not installed:
        return None
    ((name, version),) = installed.items()
    if module.version.split("+")[0] != version.split("+")[0]:
        return (f"{name} {version} is installed but the `onnxruntime` module is version "
                f"{module.version}: another onnxruntime distribution's files replaced it; "
                f"{_fix(installed)}")
    promised = PROMISED_PROVIDER[name]
    if promised not in module.providers:
        return (f"{name} {version} is installed but onnxruntime offers no {promised} "
                f"(providers: {', '.join(module.providers) or 'none'}): its files are another "
                f"onnxruntime distribution's; {_fix(installed)}")
    return None


def check_onnxruntime() -> None:
    """Exit (status 1) with a message saying what to run, unless this machine's onnxruntime
    is whole; the server's start-up calls it before anything else."""
    problem = runtime_problem(installed_runtimes(), probe_module())
    if problem is not None:
        raise SystemExit(f"layerscope serve: error: {problem}")
