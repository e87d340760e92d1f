"""Stopping work under way: one :class:`Cancellation` per job or call.

Whoever may ask for a stop (a client's CancelJob, the server's shutdown, a job's time
limit, a call whose client left or whose deadline passed) calls :meth:`Cancellation.cancel`;
the work calls :meth:`Cancellation.check` between batches and blocks, and runs onnxruntime
with :meth:`Cancellation.run_options`, so that a model run under way is terminated too
(``RunOptions.terminate``) instead of holding its thread until it ends by itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

Reason = Literal["cancelled", "shutdown", "time_limit", "deadline", "client_gone"]
Poll = Callable[[], "tuple[Reason, str] | None"]
# A client gives up at its own deadline, a little before the server's copy of it (which
# starts when the call arrives): a call that ends this close to its deadline ran out of time.
DEADLINE_SLACK_S = 0.5


class Stopped(RuntimeError):
    """Work stopped before it finished; ``reason`` says who asked (see :data:`Reason`)."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason


class Cancellation:
    """A request to stop, shared by those who may ask for it and the work that obeys it.

    ``poll``, when given, is asked at every :meth:`check` and returns ``(reason, message)``
    once the work should stop (a client that went away), or None.
    """

    def __init__(self, poll: Poll | None = None) -> None:
        self._lock = threading.Lock()
        self._stop: tuple[Reason, str] | None = None
        self._runs: set[Any] = set()  # RunOptions of the onnxruntime runs under way
        self._poll = poll

    @property
    def reason(self) -> Reason | None:
        """Why the work was asked to stop, or None while it was not."""
        return None if self._stop is None else self._stop[0]

    def cancel(self, reason: Reason, message: str) -> bool:
        """Ask the work to stop and terminate its model runs; True for the first ask (the
        first reason is the one reported)."""
        with self._lock:
            if self._stop is not None:
                return False
            self._stop = (reason, message)
            runs = list(self._runs)
        for run in runs:
            run.terminate = True
        return True

    def check(self) -> None:
        """Raise :class:`Stopped` when the work was asked to stop."""
        if self._stop is None and self._poll is not None:
            found = self._poll()
            if found is not None:
                self.cancel(*found)
        if self._stop is not None:
            raise Stopped(*self._stop)

    @contextmanager
    def run_options(self) -> Iterator[Any]:
        """Yield onnxruntime ``RunOptions`` for one run that :meth:`cancel` terminates.

        A run that fails once a stop was asked raises :class:`Stopped` (onnxruntime reports
        a terminated run as a plain failure).
        """
        import onnxruntime as ort  # noqa: PLC0415 - only the runtime's callers need it

        self.check()
        run = ort.RunOptions()
        with self._lock:
            if self._stop is None:
                self._runs.add(run)
            else:  # asked between the check and here
                run.terminate = True
        try:
            yield run
        except Exception as exc:
            if self._stop is not None:
                raise Stopped(*self._stop) from exc
            raise
        finally:
            with self._lock:
                self._runs.discard(run)


def checker(cancel: Cancellation | None) -> Cancellation:
    """``cancel``, or a new one that nothing cancels (for callers that pass none)."""
    return cancel if cancel is not None else Cancellation()


def for_call(context: Any) -> Cancellation:
    """A cancellation for one gRPC call: it stops the work when the client's deadline
    passes or the client goes away (cancelled, disconnected, or the server stopping).

    ``context`` is the call's ``grpc.ServicerContext``. gRPC runs the callback registered
    here as soon as the call ends, so model runs are terminated without waiting for the
    work's next check; :meth:`Cancellation.check` also asks the context itself.
    """
    started = time.monotonic()
    budget = context.time_remaining()

    def poll() -> tuple[Reason, str] | None:
        remaining = context.time_remaining()
        active = context.is_active()
        if remaining is not None and (remaining <= 0 or
                                      not active and remaining <= DEADLINE_SLACK_S):
            return "deadline", (f"the client's deadline ({budget:.3g} s) passed after "
                                f"{time.monotonic() - started:.3g} s of work")
        if not active:
            return "client_gone", "the client cancelled the call or went away"
        return None

    cancel = Cancellation(poll)

    def ended() -> None:
        found = poll()
        if found is not None:
            cancel.cancel(*found)

    if not context.add_callback(ended):  # the call has already ended
        ended()
    return cancel
