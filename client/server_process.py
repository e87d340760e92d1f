"""A layerscope server in a child process, on a free loopback port.

``Client.local()`` starts its embedded server with it; benchmarks use it to measure the
real server. Two kinds:

- :class:`ServerProcess`, a child that lives as long as its client: it prints
  ``layerscope serving on HOST:PORT`` once it listens, and its output keeps being drained
  so that it never blocks on a full pipe.
- :func:`start_warm`, a *warm* server for the command line: a process of its own session
  that outlives the command which started it, is found again by later commands through the
  data directory's ``server.json``, and stops itself after ``--idle-timeout-s`` seconds
  without work (or with :func:`stop_server`, ``layerscope serve --stop``).

The light install has no server: starting one there raises ServerExtraMissing, which names
the extra.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..local import Announcement, read_announcement

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
        return log_tail(self.log_path, lines)

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


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a server log."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


# warm servers -------------------------------------------------------------------------------
POLL_S = 0.02  # how often a starting or stopping server's state is looked at


@contextlib.contextmanager
def start_lock(data_dir: Path) -> Iterator[None]:
    """Hold ``client.lock`` of ``data_dir``: one client at a time looks for, replaces or
    starts its server, so that two commands started together share one server."""
    fd = os.open(data_dir / "client.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            import fcntl  # noqa: PLC0415 - POSIX only

            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:
            pass
        yield
    finally:
        os.close(fd)  # releases the lock


def holds_data_dir(data_dir: Path) -> bool:
    """True when some server holds ``data_dir`` (its ``server.lock`` is locked)."""
    try:
        import fcntl  # noqa: PLC0415 - POSIX only
    except ImportError:
        return True
    try:
        fd = os.open(data_dir / "server.lock", os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # releases the lock if this call took it
    return False


def exited(pid: int) -> bool:
    """True when process ``pid`` is gone (a child of this process is reaped)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return True
    except ChildProcessError:
        pass  # not our child
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def is_server(pid: int) -> bool:
    """Whether ``pid`` runs the layerscope server, as far as /proc can tell (True where
    there is no /proc)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return False
    return SERVER_MODULE.encode() in cmdline.split(b"\0")


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``pid`` to exit; whether it did."""
    deadline = time.monotonic() + timeout
    while not exited(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


def start_warm(data_dir: Path, *args: str, timeout: float = 120.0,
               host: str = "127.0.0.1") -> Announcement:
    """Start a warm server on ``data_dir`` in a session of its own, its output in
    ``server.log``; return its announcement once it listens.

    RuntimeError, with the log's tail, when it exits or does not listen within
    ``timeout`` seconds (it is killed then).
    """
    require_server_extra()
    log_path = data_dir / "server.log"
    cmd = [sys.executable, "-m", SERVER_MODULE, "--host", host, "--port", "0",
           "--data-dir", str(data_dir), *args]
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        pid = os.posix_spawn(sys.executable, cmd, os.environ, setsid=True, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, log_fd, 1),
            (os.POSIX_SPAWN_DUP2, log_fd, 2),
        ])
    finally:
        os.close(log_fd)
    deadline = time.monotonic() + timeout
    while True:
        info = read_announcement(data_dir)
        if info is not None and info.pid == pid:
            return info
        if exited(pid):
            raise RuntimeError(f"the server exited before it listened:\n{log_tail(log_path)}")
        if time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_exit(pid, 10)
            raise RuntimeError(
                f"the server did not start within {timeout:g} s:\n{log_tail(log_path)}")
        time.sleep(POLL_S)


def stop_server(data_dir: Path, timeout: float = 60.0) -> Announcement | None:
    """Stop the server that holds ``data_dir`` (SIGTERM: a graceful stop; SIGKILL after
    ``timeout`` seconds); return its announcement, or None when no server holds it.

    A process is signalled only when it both holds the directory's lock and runs the
    layerscope server: a stale ``server.json`` whose pid was reused is left alone.
    """
    info = read_announcement(data_dir)
    if info is None or exited(info.pid) or not holds_data_dir(data_dir) \
            or not is_server(info.pid):
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(info.pid, signal.SIGTERM)
    if not wait_exit(info.pid, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(info.pid, signal.SIGKILL)
        wait_exit(info.pid, 10)
    return info
