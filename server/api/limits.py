"""Capacity by kind of call: an interceptor that admits at most a set number of calls of each
long-lived kind (uploads, job watchers, computations, open probe streams) and refuses the
next one at once with RESOURCE_EXHAUSTED, and an idle timeout on request streams.

The server's thread pool holds one thread per admitted long call plus a reserve for the
short control calls (health checks, Get/List/Delete, CancelJob), which are never refused
here: however many clients stall, those always find a thread. See docs/security.md.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any

import grpc

log = logging.getLogger("layerscope.limits")

CONTROL, UPLOAD, WATCH, COMPUTE, PROBE = "control", "upload", "watch", "compute", "probe"

# Long calls by method. Every other unary call of our services named Get*/List*/Delete*/
# Cancel*, or of the health service (Check, List), is a control call; anything else counts
# as a computation, so that a method added later is bounded until someone classifies it.
KIND_OF_METHOD = {
    "/layerscope.v1.Models/UploadModel": UPLOAD,
    "/layerscope.v1.Models/UploadModelFiles": UPLOAD,
    "/layerscope.v1.Datasets/UploadDataset": UPLOAD,
    "/layerscope.v1.Models/DownloadModel": UPLOAD,  # a transfer of stored bytes, like one
    "/layerscope.v1.Analysis/WatchJob": WATCH,
    "/grpc.health.v1.Health/Watch": PROBE,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": PROBE,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": PROBE,
}
CONTROL_PREFIXES = ("Get", "List", "Delete", "Cancel")


@dataclass(frozen=True)
class Limits:
    """The server's capacity; each field is one ``layerscope serve`` option."""

    max_uploads: int = 4
    max_watchers: int = 16
    max_compute_calls: int = 8
    max_probe_streams: int = 8
    control_threads: int = 8
    max_pending_calls: int = 64
    stream_idle_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            least = 0 if f.name == "max_pending_calls" else 1
            if f.name == "stream_idle_timeout_s":
                if not (math.isfinite(value) and value > 0):
                    raise ValueError(f"{flag(f.name)} must be a finite number of seconds > 0; "
                                     f"got {value}")
            elif not (isinstance(value, int) and value >= least):
                raise ValueError(f"{flag(f.name)} must be an integer >= {least}; got {value!r}")

    def per_kind(self, kind: str) -> int:
        return {UPLOAD: self.max_uploads, WATCH: self.max_watchers,
                COMPUTE: self.max_compute_calls, PROBE: self.max_probe_streams}[kind]

    @property
    def threads(self) -> int:
        """RPC threads: one per admitted long call, plus the control reserve."""
        return (self.max_uploads + self.max_watchers + self.max_compute_calls
                + self.max_probe_streams + self.control_threads)

    @property
    def max_concurrent_rpcs(self) -> int:
        """grpc's own cap on calls in flight: every thread busy and this many waiting."""
        return self.threads + self.max_pending_calls

    def describe(self) -> str:
        return (f"{self.max_uploads} uploads, {self.max_watchers} job watchers, "
                f"{self.max_compute_calls} computations, {self.max_probe_streams} probe "
                f"streams and {self.control_threads} threads for control calls "
                f"({self.threads} RPC threads); request streams idle for "
                f"{self.stream_idle_timeout_s:g} s are ended")


def flag(field: str) -> str:
    """The command-line option of a :class:`Limits` field."""
    return "--" + field.replace("_", "-")


KIND_FLAG = {UPLOAD: "max_uploads", WATCH: "max_watchers", COMPUTE: "max_compute_calls",
             PROBE: "max_probe_streams"}
KIND_WHAT = {UPLOAD: "uploads and downloads (UploadModel, UploadModelFiles, UploadDataset, "
                     "DownloadModel)",
             WATCH: "WatchJob streams",
             COMPUTE: "computations (ComputeIndices, Certify, CertifyStream, Start*, "
                      "BuildReference)",
             PROBE: "health Watch and reflection streams"}


def kind_of(method: str, unary: bool) -> str:
    """The kind of a call: its method's entry, else control or compute by name and shape."""
    if method in KIND_OF_METHOD:
        return KIND_OF_METHOD[method]
    name = method.rpartition("/")[2]
    if unary and (method.startswith("/grpc.health.")
                  or method.startswith("/layerscope.") and name.startswith(CONTROL_PREFIXES)):
        return CONTROL
    return COMPUTE


class StreamIdle(grpc.RpcError):
    """Raised from a request stream whose client sent nothing for the idle timeout.

    An RpcError, so that servicers pass it through untouched (as they do the client's own
    cancellation) and whatever they were writing is discarded on the way out.
    """


class IdleTimeoutRequests(Iterator[Any]):
    """A call's request iterator that gives up after ``idle_s`` seconds without a message.

    grpc's iterator blocks without a timeout, and a servicer context may only be aborted
    from the handler's own thread; so a helper thread reads the stream one message at a
    time, on demand (nothing is read ahead), while the handler waits with a timeout.
    """

    def __init__(self, requests: Iterator[Any], idle_s: float, method: str) -> None:
        self._requests, self.idle_s, self.method = requests, idle_s, method
        self._asks: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._answers: queue.SimpleQueue[tuple[Any, BaseException | None]] = (
            queue.SimpleQueue())
        self._reader: threading.Thread | None = None
        self._finished = False
        self.idle_message: str | None = None

    def __next__(self) -> Any:
        if self._finished:
            raise StopIteration
        if self._reader is None:
            self._reader = threading.Thread(target=self._read, daemon=True,
                                            name="layerscope-stream-reader")
            self._reader.start()
        self._asks.put(True)
        try:
            item, error = self._answers.get(timeout=self.idle_s)
        except queue.Empty:
            self._finished = True
            self.idle_message = (
                f"{self.method.rpartition('/')[2]}: the client sent nothing for "
                f"{self.idle_s:g} s (the server's --stream-idle-timeout-s); the stream is "
                f"ended and anything it had sent is discarded")
            log.warning("%s", self.idle_message)
            self.close()
            raise StreamIdle(self.idle_message) from None
        if error is not None:
            self._finished = True
            self.close()
            raise error
        return item

    def _read(self) -> None:
        while self._asks.get():
            try:
                item = next(self._requests)
            except BaseException as exc:  # noqa: BLE001 - handed to the handler's thread
                self._answers.put((None, exc))
                return
            self._answers.put((item, None))

    def close(self) -> None:
        """Let the reader thread go (it ends once the call does, if it is waiting on it)."""
        self._finished = True
        if self._reader is not None:
            self._asks.put(False)


class CallLimiter(grpc.ServerInterceptor):
    """Admit at most ``limits.per_kind(kind)`` concurrent calls of each long kind.

    A slot is taken on the handler's thread when the call starts and given back when the
    handler's work ends (for a response stream, when the stream ends or the client goes
    away), so that the slots held never exceed the threads set aside for them.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._busy = {kind: 0 for kind in KIND_FLAG}
        self.last_activity = time.monotonic()  # a call started or a slot was given back

    def busy(self) -> dict[str, int]:
        with self._lock:
            return dict(self._busy)

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        self.last_activity = time.monotonic()
        handler = continuation(details)
        if handler is None:
            return None
        unary = not (handler.request_streaming or handler.response_streaming)
        kind = kind_of(details.method, unary)
        if kind == CONTROL:
            return handler
        return _wrap(handler, kind, details.method, self)

    # slots -----------------------------------------------------------------------------
    def enter(self, kind: str, context: grpc.ServicerContext) -> Callable[[], None]:
        """Take a slot of ``kind`` and return its release, or abort RESOURCE_EXHAUSTED."""
        limit = self.limits.per_kind(kind)
        with self._lock:
            if self._busy[kind] < limit:
                self._busy[kind] += 1
                return self._releaser(kind)
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                      f"the server is already serving {limit} {KIND_WHAT[kind]}, its limit "
                      f"({flag(KIND_FLAG[kind])} {limit}); retry later")
        raise AssertionError("unreachable: abort raises")

    def _releaser(self, kind: str) -> Callable[[], None]:
        done = threading.Lock()

        def release() -> None:
            if done.acquire(blocking=False):  # once, whichever path gets here first
                with self._lock:
                    self._busy[kind] -= 1
                self.last_activity = time.monotonic()

        return release


def _wrap(handler: Any, kind: str, method: str, limiter: CallLimiter) -> Any:
    """The same handler, run under a slot of ``kind`` (and the idle timeout on requests)."""
    idle_s = limiter.limits.stream_idle_timeout_s
    streaming_in = handler.request_streaming

    def requests_of(request: Any) -> Any:
        return IdleTimeoutRequests(request, idle_s, method) if streaming_in else request

    def finish(requests: Any, context: grpc.ServicerContext) -> None:
        """On an error, say it was the idle timeout when it was (whatever the servicer made
        of the StreamIdle raised inside it)."""
        if isinstance(requests, IdleTimeoutRequests) and requests.idle_message:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, requests.idle_message)

    if handler.response_streaming:
        inner = handler.stream_stream if handler.request_streaming else handler.unary_stream
        if getattr(inner, "experimental_non_blocking", False):
            # grpc's health Watch: no thread is held; the slot lasts as long as the call.
            def non_blocking(request: Any, context: grpc.ServicerContext, send: Any) -> Any:
                release = limiter.enter(kind, context)
                if not context.add_callback(release):
                    release()
                return inner(request, context, send)

            non_blocking.experimental_non_blocking = True  # type: ignore[attr-defined]
            non_blocking.experimental_thread_pool = getattr(  # type: ignore[attr-defined]
                inner, "experimental_thread_pool", None)
            behavior: Any = non_blocking
        else:
            def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                # a generator: the slot is taken at the first message asked for and given
                # back when grpc stops iterating (end, error, or the client gone)
                release = limiter.enter(kind, context)
                requests = requests_of(request)
                try:
                    yield from inner(requests, context)
                except Exception:
                    finish(requests, context)
                    raise
                finally:
                    if isinstance(requests, IdleTimeoutRequests):
                        requests.close()
                    release()

            behavior = stream
    else:
        inner = handler.stream_unary if handler.request_streaming else handler.unary_unary

        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            release = limiter.enter(kind, context)
            requests = requests_of(request)
            try:
                return inner(requests, context)
            except Exception:
                finish(requests, context)
                raise
            finally:
                if isinstance(requests, IdleTimeoutRequests):
                    requests.close()
                release()

        behavior = unary

    return handler_like(handler, behavior)


def handler_like(handler: Any, behavior: Callable[..., Any]) -> Any:
    """A method handler of ``handler``'s kind (unary or streaming on each side) and
    (de)serializers that runs ``behavior``: how an interceptor wraps a call."""
    make = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(bool(handler.request_streaming), bool(handler.response_streaming))]
    return make(behavior, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
