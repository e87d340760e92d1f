"""A one-line progress display on stderr."""

from __future__ import annotations

import sys


class ProgressLine:
    """Shows ``stage [#####.....] done/total`` on one line, rewritten in place."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.last = ""

    def __call__(self, stage: str, done: int, total: int, extra: str = "") -> None:
        if not self.enabled:
            return
        width = 24
        filled = int(width * done / max(total, 1))
        line = f"\r{stage:<16} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {extra}"
        if line != self.last:
            sys.stderr.write(line)
            sys.stderr.flush()
            self.last = line

    def close(self) -> None:
        if self.enabled and self.last:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.last = ""
