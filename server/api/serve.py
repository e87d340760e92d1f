"""``layerscope serve``: the gRPC server, with health checking, reflection, optional bearer
tokens and TLS, and a graceful shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import logging
import math
import os
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ...protos.stubs import (
    analysis_pb2,
    analysis_pb2_grpc,
    datasets_pb2,
    datasets_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
)
from ..analysis.memory import MemoryBudget
from ..cluster import connect
from ..metrics.backend import DeviceUnavailable, requested_device, resolve_backend
from ..runtime.check import check_onnxruntime
from ..runtime.session import providers as session_providers
from ..store import DataDirBusy, JobManager, Store, default_data_dir
from ..store.jobs import DEFAULT_TIME_LIMIT_S, check_time_limit
from .decode import DecodeErrors
from .limits import CallLimiter, Limits
from .monitoring import Monitoring
from .options import add_serve_arguments
from .servicers import AnalysisService, DatasetsService, ModelsService

log = logging.getLogger("layerscope.serve")
SERVICES = (
    models_pb2.DESCRIPTOR.services_by_name["Models"].full_name,
    datasets_pb2.DESCRIPTOR.services_by_name["Datasets"].full_name,
    analysis_pb2.DESCRIPTOR.services_by_name["Analysis"].full_name,
)
OPEN_METHODS = ("/grpc.health.v1.Health/", "/grpc.reflection.")
MAX_MESSAGE = 16 << 20  # chunks are at most 4 MiB; results may be larger


class TokenAuth(grpc.ServerInterceptor):
    """Accept calls that carry ``authorization: Bearer <token>`` with a known token.

    Health checks and reflection stay open, so that orchestrators can probe the server.
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens = [t.encode() for t in tokens]

    def _ok(self, token: str) -> bool:
        given = token.encode()
        return any(hmac.compare_digest(given, t) for t in self.tokens)

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        if details.method.startswith(OPEN_METHODS):
            return continuation(details)
        metadata = dict(details.invocation_metadata or ())
        auth = metadata.get("authorization", "")
        if not auth:
            return _deny(continuation(details), grpc.StatusCode.UNAUTHENTICATED,
                         "missing 'authorization: Bearer <token>' metadata; this server "
                         "requires a token")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not self._ok(token.strip()):
            return _deny(continuation(details), grpc.StatusCode.PERMISSION_DENIED,
                         "the bearer token is not accepted by this server")
        return continuation(details)


def _deny(handler: Any, code: grpc.StatusCode, message: str) -> Any:
    def abort(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, message)

    if handler is None:
        return None
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


def read_private(path: Path, option: str) -> bytes:
    """The bytes of a secret file; ValueError when group or others may read or write it
    (on POSIX), with the command that fixes it."""
    if os.name == "posix":
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ValueError(
                f"{option} {path} has mode {mode:04o}: group or others can read or change "
                f"it; make it private to its owner with `chmod 600 {path}`"
            )
    return path.read_bytes()


def read_tokens(path: Path) -> list[str]:
    """One token per line; blank lines and lines starting with '#' are ignored. The file
    must be private to its owner (mode 0600 or stricter)."""
    lines = read_private(path, "--token-file").decode().splitlines()
    tokens = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not tokens:
        raise ValueError(f"--token-file {path} holds no token")
    return tokens


class Server:
    """A running layerscope server: the gRPC server, its store and its job runner."""

    def __init__(
        self,
        data_dir: Path,
        host: str = "127.0.0.1",
        port: int = 50051,
        device: str | None = None,
        max_upload_mb: float = 2048,
        max_concurrent_jobs: int = 1,
        max_queued_jobs: int = 16,
        tokens: Sequence[str] | None = None,
        tls: tuple[bytes, bytes] | None = None,
        limits: Limits | None = None,
        job_timeout_s: float = DEFAULT_TIME_LIMIT_S,
        max_request_memory_mb: float | None = None,
        idle_timeout_s: float = 0.0,
        metrics: tuple[str, int] | None = None,
        max_model_files_mb: float = 65536,
        ray: str | None = None,
        ray_shards: int | None = None,
        ray_gpus_per_task: float = 0.0,
    ) -> None:
        check_time_limit(job_timeout_s)  # before the store is opened
        if not (math.isfinite(idle_timeout_s) and idle_timeout_s >= 0):
            raise ValueError(f"--idle-timeout-s must be a finite number of seconds >= 0 "
                             f"(0: never); got {idle_timeout_s}")
        self.device = requested_device(device)
        self.idle_timeout_s = float(idle_timeout_s)
        # The device is settled at start: 'gpu' without a usable GPU (CuPy and onnxruntime's
        # CUDA provider) refuses here, naming what is missing; 'auto' logs its choice once.
        resolve_backend(device)
        if requested_device(device) == "gpu":
            session_providers(device)
        # ``ray``: the cluster that runs k-NN, extraction and ranking (None: this machine)
        self.executor = connect(ray, shards=ray_shards, gpus_per_task=ray_gpus_per_task)
        self.limits = limits or Limits()
        budget = MemoryBudget.of(max_request_memory_mb)
        self.store = Store(data_dir, int(max_upload_mb * (1 << 20)),
                           int(max_model_files_mb * (1 << 20)))
        self.jobs = JobManager(self.store.catalog, max_concurrent_jobs, max_queued_jobs,
                               job_timeout_s)
        # metrics outermost: calls refused for a token or for capacity are counted too
        self.metrics_at = metrics
        self.monitoring = Monitoring(self.store, self.jobs) if metrics else None
        interceptors: list[grpc.ServerInterceptor] = (
            [self.monitoring.interceptor()] if self.monitoring else [])
        # auth first: a refused call never takes a slot
        self.limiter = CallLimiter(self.limits)
        if tokens:
            interceptors.append(TokenAuth(tokens))
        interceptors.append(self.limiter)
        interceptors.append(DecodeErrors())
        self.grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.limits.threads,
                                       thread_name_prefix="layerscope-rpc"),
            interceptors=interceptors,
            options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                     ("grpc.max_send_message_length", MAX_MESSAGE)],
            maximum_concurrent_rpcs=self.limits.max_concurrent_rpcs,
        )
        models_pb2_grpc.add_ModelsServicer_to_server(ModelsService(self.store, budget),
                                                     self.grpc)
        datasets_pb2_grpc.add_DatasetsServicer_to_server(DatasetsService(self.store), self.grpc)
        analysis_pb2_grpc.add_AnalysisServicer_to_server(
            AnalysisService(self.store, self.jobs, device, budget, self.executor), self.grpc)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection(
            (*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.grpc)
        address = f"{host}:{port}"
        if tls is not None:
            creds = grpc.ssl_server_credentials([(tls[1], tls[0])])
            self.port = self.grpc.add_secure_port(address, creds)
        else:
            self.port = self.grpc.add_insecure_port(address)
        if self.port == 0:
            self.store.close()
            raise OSError(f"cannot listen on {address}")
        self.address = f"{host}:{self.port}"
        # server.json names an address a local client can connect to: a wildcard host
        # (every interface) is reached on loopback
        local = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]", "[::]": "[::1]"}
        self.local_address = f"{local.get(host, host)}:{self.port}"
        self._stopped = threading.Event()
        self.done = threading.Event()
        self.workers_stopped = True  # False: a job worker outlived the grace period

    def start(self) -> None:
        if self.monitoring is not None and self.metrics_at is not None:
            self.monitoring.serve(*self.metrics_at)
        self.grpc.start()
        for name in ("", *SERVICES):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.store.announce(self.local_address, self.device, self.idle_timeout_s)
        if self.idle_timeout_s > 0:
            threading.Thread(target=self._stop_when_idle, name="layerscope-idle",
                             daemon=True).start()

    def idle_for(self) -> float:
        """Seconds since the server last had work: 0 while a long call or a job is under
        way, else the time since the last call started or ended."""
        if any(self.limiter.busy().values()) or self.jobs.active():
            self.limiter.last_activity = time.monotonic()
            return 0.0
        return time.monotonic() - self.limiter.last_activity

    def _stop_when_idle(self) -> None:
        """Stop the server once it has been idle for ``idle_timeout_s`` seconds (a warm
        embedded server: the next client starts a new one)."""
        step = min(max(self.idle_timeout_s / 10, 0.05), 5.0)
        while not self._stopped.wait(step):
            if self.idle_for() >= self.idle_timeout_s:
                log.info("idle for %g s: shutting down", self.idle_timeout_s)
                self.stop()
                return

    def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, stop running jobs (their model runs terminated), give calls under
        way ``grace`` seconds, close the store."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        done = self.grpc.stop(grace)
        self.workers_stopped = self.jobs.shutdown(grace)
        done.wait(grace)
        if self.monitoring is not None:
            self.monitoring.close()
        self.store.close()
        self.executor.close()
        self.done.set()

    def wait(self) -> None:
        self.grpc.wait_for_termination()


def is_loopback(host: str) -> bool:
    """True when ``host`` (an address or a name, IPv6 in brackets or not) is only loopback.

    A name is resolved locally (``getaddrinfo``); one that does not resolve is not loopback.
    """
    name = host.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def check_exposure(host: str, tokens: bool, tls: bool, insecure: bool
                     ) -> tuple[bool, str | None]:
    """Whether the server may start on ``host``, and a warning to log (or None)."""
    if is_loopback(host):
        return True, None
    if not tokens and not insecure:
        return False, (
            f"--host {host} is not a loopback address and no --token-file is given: any "
            f"client that reaches the port could upload, compute and delete. Give "
            f"--token-file FILE (with --tls-cert/--tls-key), or --insecure to accept the risk")
    if not tokens:
        return True, (f"--insecure: serving on {host} without a token; anyone who reaches "
                      f"the port can use the server")
    if not tls:
        return True, (f"serving on {host} with bearer tokens but without TLS: tokens and "
                      f"data cross the network in clear text; give --tls-cert and --tls-key")
    return True, None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="layerscope serve", description=__doc__.splitlines()[0])
    add_serve_arguments(p)
    return p


def serve(args: argparse.Namespace) -> int:
    """Run the server until SIGTERM/SIGINT; print the address it listens on."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    check_onnxruntime()
    if (args.tls_cert is None) != (args.tls_key is None):
        print("layerscope serve: error: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    ok, warning = check_exposure(args.host, bool(args.token_file), bool(args.tls_cert),
                                   args.insecure)
    if not ok:
        print(f"layerscope serve: error: {warning}", file=sys.stderr)
        return 2
    if warning:
        log.warning("WARNING: %s", warning)
    metrics = None
    if args.metrics_port is not None:
        if not is_loopback(args.metrics_host) and not args.insecure:
            print(f"layerscope serve: error: --metrics-host {args.metrics_host} is not a "
                  f"loopback address: the metrics endpoint has no authentication and would "
                  f"tell anyone who reaches it what this server does; give --insecure to "
                  f"accept that", file=sys.stderr)
            return 2
        metrics = (args.metrics_host, args.metrics_port)
    try:
        limits = Limits(**{f: getattr(args, f) for f in Limits.__dataclass_fields__})
        tokens = read_tokens(args.token_file) if args.token_file else None
        tls = ((args.tls_cert.read_bytes(), read_private(args.tls_key, "--tls-key"))
               if args.tls_cert else None)
        server = Server(
            args.data_dir or default_data_dir(), args.host, args.port, args.device,
            args.max_upload_mb, args.max_concurrent_jobs, args.max_queued_jobs, tokens, tls,
            limits,
            job_timeout_s=args.job_timeout_s,
            max_request_memory_mb=args.max_request_memory_mb,
            idle_timeout_s=args.idle_timeout_s,
            metrics=metrics,
            max_model_files_mb=args.max_model_files_mb,
            ray=args.ray, ray_shards=args.ray_shards, ray_gpus_per_task=args.ray_gpus_per_task,
        )
    except (DataDirBusy, OSError, ValueError, DeviceUnavailable) as exc:
        print(f"layerscope serve: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # prometheus_client missing
        print(f"layerscope serve: error: {exc}", file=sys.stderr)
        return 2
    log.info("capacity: %s", limits.describe())
    log.info("work runs on: %s", server.executor.describe())
    try:
        server.start()
    except OSError as exc:  # the metrics port is taken
        server.stop(0)
        print(f"layerscope serve: error: --metrics-port {args.metrics_port}: {exc}",
              file=sys.stderr)
        return 2
    if server.monitoring is not None:
        log.info("layerscope metrics on %s", server.monitoring.address)

    def on_signal(signum: int, frame: Any) -> None:
        log.info("signal %d: shutting down", signum)
        threading.Thread(target=server.stop, daemon=True).start()

    # before the ready line: a SIGTERM sent as soon as it appears still stops gracefully
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if server.store.interrupted_at_start:
        log.info("%d job(s) were marked interrupted: the previous server stopped during them",
                 server.store.interrupted_at_start)
    print(f"layerscope serving on {server.address} (data dir {server.store.dir})", flush=True)
    server.wait()
    server.done.wait(60)
    if not server.workers_stopped:
        # A worker is still inside one model operation that onnxruntime cannot interrupt
        # (terminate is honoured between operations). The interpreter's teardown under a
        # running native thread aborts the process; the store is closed, so leave now.
        log.warning("a job worker did not stop within the grace period; exiting without it")
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return serve(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
