"""A layerscope server in a child process, on a free loopback port.

``Client.local()`` starts its embedded server with it; benchmarks use it to measure the
real server. The server prints ``layerscope serving on HOST:PORT`` once it listens; the
output keeps being drained afterwards so the child never blocks on a full pipe. The light
install has no server: starting one there raises ServerExtraMissing, which names the extra.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

READY_PREFIX = "layerscope serving on "
SERVER_MODULE = "layerscope.server.api"
# What the server imports that the light install lacks (the [server] and [gpu] extras).
SERVER_MODULES = ("onnx", "onnxruntime", "grpc_health", "grpc_reflection")


class ServerExtraMissing(ImportError):
    """The embedded server's dependencies are not installed; the message names the extra."""


def missing_server_modules() -> list[str]:
    """Return the modules of :data:`SERVER_MODULES` that cannot be imported here."""
    missing = []
    for name in SERVER_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def require_server_extra() -> None:
    """Raise ServerExtraMissing, naming the extra to install, unless the server can run here."""
    missing = missing_server_modules()
    if missing:
        raise ServerExtraMissing(
            f"the embedded server needs the server extra (missing here: {', '.join(missing)}): "
            "pip install 'layerscope[server]' ('layerscope[gpu]' on a CUDA machine), or use a "
            "running server: --server HOST:PORT on the command line, Client('HOST:PORT') in "
            "Python"
        )


class ServerProcess:
    """``python -m layerscope.server.api`` on ``host`` with port 0, its stderr in a log;
    ServerExtraMissing before anything starts when the server cannot run here."""

    def __init__(self, data_dir: str | Path, *args: str, log_path: str | Path | None = None,
                 host: str = "127.0.0.1") -> None:
        require_server_extra()
        self.data_dir = Path(data_dir)
        self.log_path = Path(log_path) if log_path else self.data_dir / "server.log"
        self.log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.cmd = [sys.executable, "-m", SERVER_MODULE, "--host", host,
                    "--port", "0", "--data-dir", str(self.data_dir), *args]
        self.address: str | None = None
        self._ready = threading.Event()
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as log:  # private, like the data directory it may sit in
            self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=log,
                                         text=True, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if self.address is None and line.startswith(READY_PREFIX):
                self.address = line[len(READY_PREFIX):].split()[0]
                self._ready.set()
        self._ready.set()  # the child exited before announcing itself

    def wait_ready(self, timeout: float) -> str:
        """The address, once the server listens; if it does not within ``timeout`` seconds,
        the process is killed and RuntimeError says so with the log's tail."""
        self._ready.wait(timeout)
        if self.address is None:
            self.kill()
            raise RuntimeError(
                f"the server did not start within {timeout:g} s:\n{self.log_tail()}")
        return self.address

    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (graceful shutdown), SIGKILL after ``timeout``; the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: the process dies at once, whatever it was doing."""
        if self.alive():
            self.proc.kill()
        self.proc.wait()
        self._close()

    def _close(self) -> None:
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
