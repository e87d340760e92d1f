"""Jobs: a bounded queue, worker threads, progress, cancellation, time limits, persistence.

Every state change is written to the catalog at once; progress at most twice a second.
Each job has a :class:`~layerscope.server.cancellation.Cancellation` that the work checks
between batches and blocks and that terminates a model run under way. Cancelling a job
ends it ``cancelled``; running past the time limit ends it ``failed``; shutting down ends
what was stopped (or never started) ``interrupted``. The worker is then free for the next.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from ..cancellation import Cancellation, Reason, Stopped
from .catalog import FINAL, Catalog, JobRow

log = logging.getLogger("layerscope.jobs")

ProgressFn = Callable[[str, int, int], None]
Work = Callable[[ProgressFn, Cancellation], dict[str, Any]]

# Share of the whole job each stage stands for, to turn stage progress into a fraction.
STAGE_SPAN = {"loading": (0.0, 0.02), "extract:train": (0.02, 0.6),
              "extract:test": (0.6, 0.75), "indices": (0.75, 1.0)}
# The final state of a job stopped for each reason.
STOPPED_STATE: dict[Reason, str] = {"cancelled": "cancelled", "shutdown": "interrupted",
                                    "time_limit": "failed"}
DEFAULT_TIME_LIMIT_S = 3600.0


class QueueFull(RuntimeError):
    """More jobs than the server takes at once."""


class ShuttingDown(RuntimeError):
    """A job submitted while the server shuts down."""


def check_time_limit(seconds: float) -> float:
    """``seconds`` if it is a valid time limit per job (0 = none), else ValueError."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not (
            math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"--job-timeout-s must be a finite number of seconds >= 0 (0 = no "
                         f"limit); got {seconds!r}")
    return float(seconds)


class JobManager:
    """Runs jobs on ``workers`` threads with at most ``queue_size`` waiting; a job that runs
    longer than ``time_limit_s`` seconds (0: no limit) is stopped and fails."""

    def __init__(self, catalog: Catalog, workers: int = 1, queue_size: int = 16,
                 time_limit_s: float = DEFAULT_TIME_LIMIT_S) -> None:
        self.catalog = catalog
        self.capacity = workers + queue_size
        self.workers = workers
        self.queue_size = queue_size
        self.time_limit_s = check_time_limit(time_limit_s)
        self._queue: queue.Queue[tuple[str, Work] | None] = queue.Queue()
        self._cond = threading.Condition()
        self._version: dict[str, int] = {}
        self._cancel: dict[str, Cancellation] = {}
        self._live: dict[str, dict[str, Any]] = {}
        self._active = 0
        self._running: set[str] = set()  # left in _release, before the final state is written
        self._closing = False
        # called with (kind, final state, run seconds or None) just before a job's final
        # state is written, so that whoever sees the state sees it counted (the metrics hook)
        self.on_finished: Callable[[str, str, float | None], None] | None = None
        self._threads = [
            threading.Thread(target=self._run, name=f"layerscope-job-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    # submitting -------------------------------------------------------------------------
    def submit(self, kind: str, request: dict[str, Any], work: Work) -> JobRow:
        with self._cond:
            if self._closing:
                raise ShuttingDown("the server is shutting down and takes no new jobs")
            if self._active >= self.capacity:
                raise QueueFull(
                    f"the job queue is full: {self._active} jobs queued or running, the limit "
                    f"is {self.capacity} ({self.workers} running at once "
                    f"(--max-concurrent-jobs) + {self.queue_size} waiting); retry later"
                )
            job_id = uuid.uuid4().hex
            self.catalog.add_job(job_id, kind, request)
            self._active += 1
            self._cancel[job_id] = Cancellation()
            self._version[job_id] = 0
        self._queue.put((job_id, work))
        return self.catalog.job(job_id)

    def active(self) -> int:
        """Jobs queued or running now."""
        with self._cond:
            return self._active

    # running ----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            job_id, work = item
            try:
                self._execute(job_id, work)
            finally:
                self._release(job_id)
                # Live progress goes only after the final state is written: until then a
                # reader of the catalog's (throttled) progress could see it go backwards.
                with self._cond:
                    self._live.pop(job_id, None)
                self._bump(job_id)

    def _execute(self, job_id: str, work: Work) -> None:
        cancel = self._cancel.get(job_id)
        if cancel is None:  # cancelled while queued: already final, its slot already free
            return
        if cancel.reason is not None:
            state = "interrupted" if cancel.reason == "shutdown" else "cancelled"
            self._finish(job_id, state, "cancelled before it started"
                         if state == "cancelled" else "the server shut down before it started")
            return
        started = time.time()
        with self._cond:
            self._running.add(job_id)
        self.catalog.update_job(job_id, state="running", started=started,
                                progress={"stage": "loading", "fraction": 0.0})
        self._bump(job_id)
        last_write = [0.0]

        def progress(stage: str, done: int, total: int, layer: str = "") -> None:
            lo, hi = STAGE_SPAN.get(stage, (0.0, 1.0))
            frac = lo + (hi - lo) * (done / total if total else 1.0)
            elapsed = time.time() - started
            p = {"stage": stage, "layer": layer, "done": done, "total": total,
                 "fraction": round(frac, 4), "elapsed_seconds": round(elapsed, 3),
                 "remaining_seconds": round(elapsed * (1 - frac) / frac, 3) if frac > 0 else -1}
            with self._cond:
                self._live[job_id] = p
                self._bump(job_id)
            now = time.monotonic()
            if now - last_write[0] > 0.5:
                last_write[0] = now
                self.catalog.update_job(job_id, progress=p)

        try:
            with self._time_limit(cancel):
                result = work(progress, cancel)
        except Stopped as exc:
            self._finish(job_id, STOPPED_STATE.get(exc.reason, "cancelled"), str(exc))
        except (ValueError, KeyError, FileNotFoundError) as exc:
            self._finish(job_id, "failed", str(exc))
        except Exception as exc:  # noqa: BLE001 - a job never takes the server down
            log.error("job %s failed:\n%s", job_id, traceback.format_exc())
            self._finish(job_id, "failed", f"internal error ({type(exc).__name__}): {exc}")
        else:
            self._release(job_id)
            finished = time.time()
            self._report(job_id, "succeeded", finished)
            self.catalog.update_job(
                job_id, active_only=True, state="succeeded", finished=finished, result=result,
                progress={"stage": "done", "fraction": 1.0,
                          "elapsed_seconds": round(time.time() - started, 3),
                          "remaining_seconds": 0.0},
            )

    @contextlib.contextmanager
    def _time_limit(self, cancel: Cancellation) -> Iterator[None]:
        """Cancel the work inside once it has run for the time limit."""
        if self.time_limit_s <= 0:
            yield
            return
        timer = threading.Timer(self.time_limit_s, cancel.cancel, (
            "time_limit",
            f"stopped after running for {self.time_limit_s:g} s, the server's time limit per "
            "job (--job-timeout-s; 0 = no limit)"))
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def _release(self, job_id: str) -> None:
        """Free the job's queue slot (once), before its final state becomes visible, so
        that a client who sees it finished can start the next job at once."""
        with self._cond:
            self._running.discard(job_id)
            if job_id in self._cancel:
                self._active -= 1
                self._cancel.pop(job_id, None)

    def _finish(self, job_id: str, state: str, message: str) -> None:
        row = self.catalog.job(job_id, with_result=False)
        progress = dict(self._live.get(job_id) or row.progress)
        self._release(job_id)
        finished = time.time()
        self._report(job_id, state, finished)
        self.catalog.update_job(job_id, state=state, message=message, finished=finished,
                                progress=progress, active_only=True)

    def _report(self, job_id: str, state: str, finished: float) -> None:
        """Tell ``on_finished`` about a job about to reach ``state`` (once: not when it is
        final already)."""
        if self.on_finished is None:
            return
        row = self.catalog.job(job_id, with_result=False)
        if row.state in FINAL:
            return
        seconds = None if row.started is None else max(0.0, finished - row.started)
        try:
            self.on_finished(row.kind, state, seconds)
        except Exception:  # noqa: BLE001 - metrics never take a job worker down
            log.exception("the job-finished hook failed for job %s", job_id)

    def counts(self) -> tuple[int, int]:
        """(queued, running): jobs waiting for a worker and jobs a worker is on."""
        with self._cond:
            return self._active - len(self._running), len(self._running)

    def _bump(self, job_id: str) -> None:
        with self._cond:
            self._version[job_id] = self._version.get(job_id, 0) + 1
            self._cond.notify_all()

    # asking -----------------------------------------------------------------------------
    def get(self, job_id: str, with_result: bool = True) -> JobRow:
        row = self.catalog.job(job_id, with_result)
        live = self._live.get(job_id)
        if live is not None and row.state == "running":
            row.progress = dict(live)
        return row

    def cancel(self, job_id: str) -> JobRow:
        """Stop the job: a queued one at once, a running one at its next check or by
        terminating its model run under way."""
        row = self.catalog.job(job_id, with_result=False)
        if row.state in FINAL:
            return self.get(job_id)
        cancel = self._cancel.get(job_id)
        if cancel is not None:
            cancel.cancel("cancelled", "cancelled by the client")
        if row.state == "queued":
            self._finish(job_id, "cancelled", "cancelled before it started")
            self._bump(job_id)
        return self.get(job_id)

    def watch(
        self, job_id: str, active: Callable[[], bool], poll: float = 0.25
    ) -> Iterator[JobRow]:
        """Yield the job each time it changes, ending with it in a final state."""
        seen = -1
        while active():
            with self._cond:
                version = self._version.get(job_id, 0)
                if version == seen:
                    self._cond.wait(timeout=poll)
                    version = self._version.get(job_id, 0)
            row = self.get(job_id)
            if version != seen or row.state in FINAL:
                seen = version
                yield row
            if row.state in FINAL:
                return

    # stopping ---------------------------------------------------------------------------
    def shutdown(self, grace: float = 10.0) -> bool:
        """Stop taking jobs, stop running ones (their model runs terminated), mark them
        interrupted; True when every worker ended within ``grace`` seconds."""
        with self._cond:
            self._closing = True
            for cancel in self._cancel.values():
                cancel.cancel("shutdown", "the server shut down while the job was running")
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + grace
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        self.catalog.interrupt_active("the server shut down while the job was queued or running")
        return not any(t.is_alive() for t in self._threads)
