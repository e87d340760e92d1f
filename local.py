"""Local-machine helpers shared by the client and the server.

Atomic file writes, the default data directory, and the ``server.json`` announcement that
an embedded server writes into its data directory and a local client reads: one writer and
one reader of each format.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

ANNOUNCEMENT = "server.json"


def write_atomic(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Create ``path`` with what ``write(f)`` writes, all or nothing; return the path.

    A temporary file in the same folder, fsync, then rename: a crash or an error leaves
    the old file (or none), never half a file.
    """
    import tempfile  # noqa: PLC0415 - not on the command line's read-only paths

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def write_json_atomic(path: str | os.PathLike[str], value: Any) -> Path:
    """Write ``value`` as JSON to ``path`` atomically."""
    return write_atomic(path, lambda f: f.write(json.dumps(value).encode()))


def default_data_dir() -> Path:
    """``$LAYERSCOPE_DATA_DIR``, else ``$XDG_DATA_HOME/layerscope``, else
    ``~/.local/share/layerscope``."""
    env = os.environ.get("LAYERSCOPE_DATA_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "layerscope"


@dataclass(frozen=True)
class Announcement:
    """What ``server.json`` says: the process that holds the data directory, its address,
    and what a local client needs to decide whether it may reuse it: the code it runs
    (``version`` and the ``package`` folder), the ``device`` it was asked for, and its idle
    timeout (``idle_timeout_s`` > 0: a warm embedded server that stops itself when idle)."""

    pid: int
    address: str
    version: str = ""
    package: str = ""
    device: str = ""
    idle_timeout_s: float = 0.0

    @property
    def warm(self) -> bool:
        """True for a warm embedded server (started by a client, stops itself when idle)."""
        return self.idle_timeout_s > 0


def package_identity() -> tuple[str, str]:
    """(version, package folder) of this layerscope: what a reused server must also run."""
    from . import __version__  # noqa: PLC0415 - the package imports this module

    return __version__, str(Path(__file__).resolve().parent)


def announce(data_dir: str | os.PathLike[str], address: str, device: str = "",
             idle_timeout_s: float = 0.0) -> Path:
    """Write ``server.json`` for this process, listening on ``address``."""
    version, package = package_identity()
    return write_json_atomic(Path(data_dir) / ANNOUNCEMENT, {
        "pid": os.getpid(), "address": address, "version": version, "package": package,
        "device": device, "idle_timeout_s": float(idle_timeout_s)})


def read_announcement(data_dir: str | os.PathLike[str]) -> Announcement | None:
    """The announcement in ``data_dir``, or None when there is none or it is unreadable."""
    try:
        info = json.loads((Path(data_dir) / ANNOUNCEMENT).read_text())
        return Announcement(int(info["pid"]), str(info["address"]),
                            str(info.get("version", "")), str(info.get("package", "")),
                            str(info.get("device", "")),
                            float(info.get("idle_timeout_s", 0.0)))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def withdraw(data_dir: str | os.PathLike[str]) -> None:
    """Remove the announcement (a clean stop)."""
    (Path(data_dir) / ANNOUNCEMENT).unlink(missing_ok=True)
