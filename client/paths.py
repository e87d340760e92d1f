"""Where layerscope keeps its data by default."""

from __future__ import annotations

import os
from pathlib import Path


def default_data_dir() -> Path:
    """``$LAYERSCOPE_DATA_DIR``, else ``$XDG_DATA_HOME/layerscope``, else
    ``~/.local/share/layerscope``."""
    env = os.environ.get("LAYERSCOPE_DATA_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "layerscope"
