"""A one-line progress display on stderr: stage, bar, percent, ETA."""

from __future__ import annotations

import sys
import time


def duration(seconds: float) -> str:
    """``seconds`` as ``42s``, ``3m05s`` or ``1h02m``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def job_line(progress: dict[str, object], state: str) -> tuple[str, float, float | None, str]:
    """(stage, fraction, ETA seconds or None, detail) of a job's ``progress`` map; a job
    that succeeded ends on its final stage at 100%, with no batch count."""
    stage = str(progress.get("stage") or state)
    fraction = float(progress.get("fraction", 0.0))  # type: ignore[arg-type]
    eta = progress.get("remaining_seconds")
    done, total = progress.get("done"), progress.get("total")
    detail = ""
    if isinstance(total, (int, float)) and total > 0 and state == "running":
        detail = f"{int(done or 0)}/{int(total)}"  # type: ignore[call-overload]
        layer = progress.get("layer")
        if layer:
            detail += f"  {layer}"
    if state == "succeeded":
        fraction = 1.0
    return stage, fraction, float(eta) if isinstance(eta, (int, float)) else None, detail


class ProgressLine:
    """Shows ``stage [#####.....]  42.0%  ETA 1m05s  detail`` on one line, rewritten in
    place. The ETA is the caller's (a job's ``remaining_seconds``) or, when not given,
    extrapolated from the elapsed time and the fraction done."""

    def __init__(self, enabled: bool = True, width: int = 24) -> None:
        self.enabled = enabled
        self.width = width
        self.last = ""
        self.started = time.monotonic()

    def __call__(self, stage: str, fraction: float, eta: float | None = None,
                 detail: str = "") -> None:
        if not self.enabled:
            return
        frac = min(max(fraction, 0.0), 1.0)
        filled = int(self.width * frac)
        elapsed = time.monotonic() - self.started
        if frac >= 1.0:
            when = f"in {duration(elapsed)}"
        else:
            if eta is None or eta < 0:
                eta = elapsed * (1 - frac) / frac if frac > 0 else None
            when = f"ETA {duration(eta)}" if eta is not None else "ETA ?"
        text = (f"{stage:<16} [{'#' * filled}{'.' * (self.width - filled)}] "
                f"{frac * 100:5.1f}%  {when}  {detail}").rstrip()
        line = "\r" + text + " " * max(0, len(self.last) - len(text) - 1)
        if line != self.last:
            sys.stderr.write(line)
            sys.stderr.flush()
            self.last = line

    def close(self) -> None:
        if self.enabled and self.last:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.last = ""
