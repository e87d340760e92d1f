"""``layerscope serve``: the gRPC server, with health checking, reflection, optional bearer
tokens and TLS, and a graceful shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import hmac
import logging
import signal
import sys
import threading
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
from ..analysis.memory import MemoryBudget, default_budget_mb
from ..store import DataDirBusy, JobManager, Store, default_data_dir
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


def read_tokens(path: Path) -> list[str]:
    """One token per line; blank lines and lines starting with '#' are ignored."""
    lines = path.read_text().splitlines()
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
        max_request_memory_mb: float | None = None,
    ) -> None:
        budget = MemoryBudget(default_budget_mb() if max_request_memory_mb is None
                              else max_request_memory_mb)
        self.store = Store(data_dir, int(max_upload_mb * (1 << 20)))
        self.jobs = JobManager(self.store.catalog, max_concurrent_jobs, max_queued_jobs)
        interceptors = [TokenAuth(tokens)] if tokens else []
        self.grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="layerscope-rpc"),
            interceptors=interceptors,
            options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                     ("grpc.max_send_message_length", MAX_MESSAGE)],
        )
        models_pb2_grpc.add_ModelsServicer_to_server(ModelsService(self.store, budget),
                                                     self.grpc)
        datasets_pb2_grpc.add_DatasetsServicer_to_server(DatasetsService(self.store), self.grpc)
        analysis_pb2_grpc.add_AnalysisServicer_to_server(
            AnalysisService(self.store, self.jobs, device, budget), self.grpc)
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
        self._stopped = threading.Event()
        self.done = threading.Event()

    def start(self) -> None:
        self.grpc.start()
        for name in ("", *SERVICES):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.store.announce(self.address)

    def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, stop running jobs at their next batch, close the store."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        done = self.grpc.stop(grace)
        self.jobs.shutdown(grace)
        done.wait(grace)
        self.store.close()
        self.done.set()

    def wait(self) -> None:
        self.grpc.wait_for_termination()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="layerscope serve", description=__doc__.splitlines()[0])
    add_serve_arguments(p)
    return p


def serve(args: argparse.Namespace) -> int:
    """Run the server until SIGTERM/SIGINT; print the address it listens on."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if (args.tls_cert is None) != (args.tls_key is None):
        print("layerscope serve: error: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    try:
        tokens = read_tokens(args.token_file) if args.token_file else None
        tls = (args.tls_cert.read_bytes(), args.tls_key.read_bytes()) if args.tls_cert else None
        server = Server(
            args.data_dir or default_data_dir(), args.host, args.port, args.device,
            args.max_upload_mb, args.max_concurrent_jobs, args.max_queued_jobs, tokens, tls,
            args.max_request_memory_mb,
        )
    except (DataDirBusy, OSError, ValueError) as exc:
        print(f"layerscope serve: error: {exc}", file=sys.stderr)
        return 2
    server.start()
    if server.store.interrupted_at_start:
        log.info("%d job(s) were marked interrupted: the previous server stopped during them",
                 server.store.interrupted_at_start)
    print(f"layerscope serving on {server.address} (data dir {server.store.dir})", flush=True)

    def on_signal(signum: int, frame: Any) -> None:
        log.info("signal %d: shutting down", signum)
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.wait()
    server.done.wait(60)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return serve(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
