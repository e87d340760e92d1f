"""Jobs: a bounded queue, worker threads, progress, cancellation, persistence.

Every state change is written to the catalog at once; progress at most twice a second.
Cancelling sets an event the work checks between batches; shutting down does the same and
marks what was stopped (or never started) as interrupted.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from .catalog import FINAL, Catalog, JobRow

log = logging.getLogger("layerscope.jobs")

ProgressFn = Callable[[str, int, int], None]
CancelledFn = Callable[[], bool]
Work = Callable[[ProgressFn, CancelledFn], dict[str, Any]]

# Share of the whole job each stage stands for, to turn stage progress into a fraction.
STAGE_SPAN = {"loading": (0.0, 0.02), "extract:train": (0.02, 0.6),
              "extract:test": (0.6, 0.75), "indices": (0.75, 1.0)}


class QueueFull(RuntimeError):
    """More jobs than the server takes at once."""


class JobCancelled(RuntimeError):
    """Raised inside work that was cancelled."""


class ShuttingDown(RuntimeError):
    """Raised inside work stopped by a server shutdown."""


class JobManager:
    """Runs jobs on ``workers`` threads with at most ``queue_size`` waiting."""

    def __init__(self, catalog: Catalog, workers: int = 1, queue_size: int = 16) -> None:
        self.catalog = catalog
        self.capacity = workers + queue_size
        self.workers = workers
        self.queue_size = queue_size
        self._queue: queue.Queue[tuple[str, Work] | None] = queue.Queue()
        self._cond = threading.Condition()
        self._version: dict[str, int] = {}
        self._cancel: dict[str, threading.Event] = {}
        self._live: dict[str, dict[str, Any]] = {}
        self._active = 0
        self._closing = False
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
            self._cancel[job_id] = threading.Event()
            self._version[job_id] = 0
        self._queue.put((job_id, work))
        return self.catalog.job(job_id)

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
        event = self._cancel.get(job_id)
        if event is None:  # cancelled while queued: already final, its slot already free
            return
        if event.is_set():
            state = "interrupted" if self._closing else "cancelled"
            self._finish(job_id, state, "cancelled before it started"
                         if state == "cancelled" else "the server shut down before it started")
            return
        started = time.time()
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

        def cancelled() -> bool:
            if event.is_set():
                raise ShuttingDown("server shutdown") if self._closing else JobCancelled("")
            return False

        try:
            result = work(progress, cancelled)
        except JobCancelled:
            self._finish(job_id, "cancelled", "cancelled by the client")
        except ShuttingDown:
            self._finish(job_id, "interrupted", "the server shut down while the job was running")
        except (ValueError, KeyError, FileNotFoundError) as exc:
            self._finish(job_id, "failed", str(exc))
        except Exception as exc:  # noqa: BLE001 - a job never takes the server down
            log.error("job %s failed:\n%s", job_id, traceback.format_exc())
            self._finish(job_id, "failed", f"internal error ({type(exc).__name__}): {exc}")
        else:
            self._release(job_id)
            self.catalog.update_job(
                job_id, state="succeeded", finished=time.time(), result=result,
                progress={"stage": "done", "fraction": 1.0,
                          "elapsed_seconds": round(time.time() - started, 3),
                          "remaining_seconds": 0.0},
            )

    def _release(self, job_id: str) -> None:
        """Free the job's queue slot (once), before its final state becomes visible, so
        that a client who sees it finished can start the next job at once."""
        with self._cond:
            if job_id in self._cancel:
                self._active -= 1
                self._cancel.pop(job_id, None)

    def _finish(self, job_id: str, state: str, message: str) -> None:
        row = self.catalog.job(job_id, with_result=False)
        progress = dict(self._live.get(job_id) or row.progress)
        self._release(job_id)
        self.catalog.update_job(job_id, state=state, message=message, finished=time.time(),
                                progress=progress)

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
        row = self.catalog.job(job_id, with_result=False)
        if row.state in FINAL:
            return self.get(job_id)
        event = self._cancel.get(job_id)
        if event is not None:
            event.set()
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
    def shutdown(self, grace: float = 10.0) -> None:
        """Stop taking jobs, stop running ones at their next batch, mark them interrupted."""
        with self._cond:
            self._closing = True
            for event in self._cancel.values():
                event.set()
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + grace
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        self.catalog.interrupt_active("the server shut down while the job was queued or running")
