"""The Prometheus metrics endpoint of ``layerscope serve --metrics-port N``: calls by method
and status code with their latency, jobs by kind and final state with their run time, the
job queue, the bytes stored, the samples per second of extraction and, while CuPy is in use,
GPU memory. prometheus_client (the ``metrics`` extra) is imported only when asked for.

Calls are counted by an interceptor placed before every other, so that calls refused for a
token or for capacity are counted with their code. docs/operating.md lists the metrics.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from ..runtime.extract import EXTRACTION
from ..store import Store
from ..store.jobs import JobManager
from .limits import handler_like

log = logging.getLogger("layerscope.monitoring")
METRICS_EXTRA = "pip install 'layerscope[metrics]'"
# Seconds: control calls take milliseconds, uploads and computations up to minutes.
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
JOB_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200)


def _prometheus() -> Any:
    try:
        import prometheus_client  # noqa: PLC0415 - the optional `metrics` extra
        import prometheus_client.core  # noqa: PLC0415, F401 - the metric families
    except ImportError:
        raise RuntimeError(f"--metrics-port needs prometheus_client: {METRICS_EXTRA}") from None
    return prometheus_client


class Monitoring:
    """The server's metrics registry, the interceptor that feeds it and its HTTP endpoint."""

    def __init__(self, store: Store, jobs: JobManager) -> None:
        prom = _prometheus()
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        self.calls = prom.Counter(
            "layerscope_grpc_requests", "gRPC calls handled, by method and status code",
            ["method", "code"], registry=self.registry)
        self.latency = prom.Histogram(
            "layerscope_grpc_request_duration_seconds",
            "Time from a call's start to its status, by method", ["method"],
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.jobs_finished = prom.Counter(
            "layerscope_jobs", "Jobs that reached a final state, by kind and state",
            ["kind", "state"], registry=self.registry)
        self.job_seconds = prom.Histogram(
            "layerscope_job_duration_seconds",
            "Run time of the jobs that started (start to final state), by kind and state",
            ["kind", "state"], buckets=JOB_BUCKETS, registry=self.registry)
        self.registry.register(_StateCollector(prom, store, jobs))
        prom.ProcessCollector(registry=self.registry)  # the server's memory, CPU, open files
        jobs.on_finished = self.job_finished
        self._http: Any = None
        self.address: str | None = None

    def job_finished(self, kind: str, state: str, seconds: float | None) -> None:
        self.jobs_finished.labels(kind, state).inc()
        if seconds is not None:
            self.job_seconds.labels(kind, state).observe(seconds)

    def interceptor(self) -> grpc.ServerInterceptor:
        return CallMetrics(self)

    def observe(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        self.calls.labels(method, code.name).inc()
        self.latency.labels(method).observe(seconds)

    def serve(self, host: str, port: int) -> str:
        """Serve ``/metrics`` over HTTP on ``host:port`` (0: a free port); return its URL."""
        server, _thread = self._prom.start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        bound = server.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        self.address = f"http://{shown}:{bound}/metrics"
        return self.address

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


class _StateCollector:
    """Gauges read at each scrape: the job queue, the store, extraction and GPU memory."""

    def __init__(self, prom: Any, store: Store, jobs: JobManager) -> None:
        self.prom, self.store, self.jobs = prom, store, jobs

    def describe(self) -> list[Any]:
        return []  # collected at scrape time only

    def collect(self) -> Iterator[Any]:
        m = self.prom.core
        queued, running = self.jobs.counts()
        yield m.GaugeMetricFamily("layerscope_jobs_queued",
                                  "Jobs waiting for a worker (queue depth)", value=queued)
        yield m.GaugeMetricFamily("layerscope_jobs_running", "Jobs a worker is running",
                                  value=running)
        yield m.GaugeMetricFamily("layerscope_store_bytes",
                                  "Bytes of the stored models, datasets and references",
                                  value=self.store.blobs.stored_bytes())
        samples, seconds, rate = EXTRACTION.snapshot()
        yield m.CounterMetricFamily("layerscope_extracted_samples",
                                    "Samples run through models for their layers",
                                    value=samples)
        yield m.CounterMetricFamily("layerscope_extraction_seconds",
                                    "Time spent running models for their layers",
                                    value=seconds)
        if rate is not None:
            yield m.GaugeMetricFamily(
                "layerscope_extraction_samples_per_second",
                "Samples per second of the latest extraction (one set of one job)", value=rate)
        gpu = gpu_memory()
        if gpu is not None:
            used, total = gpu
            yield m.GaugeMetricFamily("layerscope_gpu_memory_used_bytes",
                                      "GPU memory held by CuPy's memory pool", value=used)
            yield m.GaugeMetricFamily("layerscope_gpu_memory_total_bytes",
                                      "Memory of the GPU CuPy uses", value=total)


def gpu_memory() -> tuple[int, int] | None:
    """(bytes CuPy's pool holds, the device's memory), or None unless CuPy is in use: the
    backend imports CuPy only once a usable GPU is chosen, so its presence is the sign."""
    cupy = sys.modules.get("cupy")
    if cupy is None:
        return None
    try:
        used = int(cupy.get_default_memory_pool().used_bytes())
        _free, total = cupy.cuda.runtime.memGetInfo()
    except Exception:  # noqa: BLE001 - a scrape never fails for the GPU's sake
        return None
    return used, int(total)


class CallMetrics(grpc.ServerInterceptor):
    """Count every call of a registered method by its status code, and time it."""

    def __init__(self, monitoring: Monitoring) -> None:
        self.monitoring = monitoring

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        streaming_out = handler.response_streaming
        inner = (handler.stream_stream if handler.request_streaming else handler.unary_stream) \
            if streaming_out else \
            (handler.stream_unary if handler.request_streaming else handler.unary_unary)
        if getattr(inner, "experimental_non_blocking", False):
            return handler  # grpc's health Watch: no thread to time it on
        method, observe = details.method, self.monitoring.observe

        def code_of(context: grpc.ServicerContext, default: grpc.StatusCode) -> grpc.StatusCode:
            code = context.code()
            return code if isinstance(code, grpc.StatusCode) else default

        if streaming_out:
            def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                start, code = time.perf_counter(), grpc.StatusCode.UNKNOWN
                try:
                    yield from inner(request, context)
                    code = code_of(context, grpc.StatusCode.OK)
                except GeneratorExit:  # grpc stopped asking: the client went away
                    code = grpc.StatusCode.CANCELLED
                    raise
                except BaseException:
                    code = code_of(context, grpc.StatusCode.UNKNOWN)
                    raise
                finally:
                    observe(method, code, time.perf_counter() - start)

            behavior: Any = stream
        else:
            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                start, code = time.perf_counter(), grpc.StatusCode.UNKNOWN
                try:
                    response = inner(request, context)
                    code = code_of(context, grpc.StatusCode.OK)
                    return response
                except BaseException:
                    code = code_of(context, grpc.StatusCode.UNKNOWN)
                    raise
                finally:
                    observe(method, code, time.perf_counter() - start)

            behavior = unary

        return handler_like(handler, behavior)
