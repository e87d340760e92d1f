"""The gRPC servicers: decode a message, make one call into the analysis layer, encode.

Every domain error becomes a status code with a message that names the field or value
(:func:`status_for`); nothing reaches the client as UNKNOWN with a stack trace.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from ...protos import codec
from ...protos.stubs import (
    analysis_pb2,
    analysis_pb2_grpc,
    common_pb2,
    datasets_pb2,
    datasets_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
)
from ..analysis import admission, memory, uploads
from ..analysis.admission import FailedPrecondition
from ..analysis.jobs import Jobs
from ..analysis.references import References
from ..cancellation import Stopped, for_call
from ..cluster import LOCAL, Executor
from ..field_limits import checked
from ..metrics import compute_indices
from ..metrics.backend import DeviceUnavailable
from ..runtime.extract import InputError
from ..store import (
    NotFound,
    QueueFull,
    ShuttingDown,
    SizeLimitError,
    Store,
)
from ..store.jobs import JobManager
from . import convert, streams

log = logging.getLogger("layerscope.api")
F = TypeVar("F", bound=Callable[..., Any])
STOPPED_CODE = {"cancelled": grpc.StatusCode.CANCELLED, "client_gone": grpc.StatusCode.CANCELLED,
                "deadline": grpc.StatusCode.DEADLINE_EXCEEDED,
                "time_limit": grpc.StatusCode.DEADLINE_EXCEEDED,
                "shutdown": grpc.StatusCode.UNAVAILABLE}


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Return the status code and message for a domain error."""
    if isinstance(exc, NotFound):
        return grpc.StatusCode.NOT_FOUND, str(exc)
    if isinstance(exc, (SizeLimitError, QueueFull, memory.MemoryLimitError)):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    if isinstance(exc, (FailedPrecondition, InputError, DeviceUnavailable)):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    if isinstance(exc, ShuttingDown):
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    if isinstance(exc, Stopped):
        return STOPPED_CODE[exc.reason], str(exc)
    if isinstance(exc, ValueError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}): {exc}"


def _abort(context: grpc.ServicerContext, exc: BaseException) -> None:
    code, message = status_for(exc)
    if code == grpc.StatusCode.INTERNAL:
        log.exception("internal error")
    elif isinstance(exc, Stopped):
        log.info("a call stopped computing: %s", exc)
    context.abort(code, message)


def rpc(fn: F) -> F:
    """Map domain errors of a unary-response method to status codes."""

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(self, checked(request), context)
        except grpc.RpcError:
            raise
        except Exception as exc:  # noqa: BLE001 - every error gets a status code
            if isinstance(exc, AssertionError):
                raise
            _abort(context, exc)

    return wrapper  # type: ignore[return-value]


def rpc_stream(fn: F) -> F:
    """Map domain errors of a streaming-response method to status codes."""

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from fn(self, checked(request), context)
        except grpc.RpcError:
            raise
        except Exception as exc:  # noqa: BLE001
            _abort(context, exc)

    return wrapper  # type: ignore[return-value]


class ModelsService(models_pb2_grpc.ModelsServicer):
    def __init__(self, store: Store, budget: memory.MemoryBudget) -> None:
        self.store, self.memory = store, budget

    @rpc
    def UploadModel(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        h = streams.header(requests, "UploadModel")
        cancel = for_call(context)
        row, present = uploads.store_model(self.store, h.name, h.size_bytes, h.sha256,
                                           streams.chunks(requests, cancel), self.memory, cancel)
        return models_pb2.UploadModelResponse(model=convert.model(row), already_present=present)

    @rpc
    def UploadModelFiles(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        h = streams.header(requests, "UploadModelFiles")
        cancel = for_call(context)
        row, present = uploads.store_model_files(
            self.store, h.name, h.model_path, convert.model_files(h.files), h.files_sha256,
            streams.file_chunks(requests, cancel), self.memory, cancel)
        return models_pb2.UploadModelResponse(model=convert.model(row), already_present=present)

    @rpc
    def GetModel(self, request: Any, context: grpc.ServicerContext) -> Any:
        return convert.model(self.store.catalog.model(request.id))

    @rpc
    def ListModels(self, request: Any, context: grpc.ServicerContext) -> Any:
        page = self.store.catalog.models(request.page_size,
                                         convert.page_key(request.page_token, "models"))
        return models_pb2.ListModelsResponse(
            models=[convert.model(r, False) for r in page.rows],
            next_page_token=convert.page_token(page.next, "models"))

    @rpc
    def DeleteModel(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.store.delete_model(request.id)
        return models_pb2.DeleteModelResponse()

    @rpc_stream
    def DownloadModel(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        for offset, data in uploads.model_chunks(self.store, request.id, request.chunk_bytes):
            yield common_pb2.Chunk(offset=offset, data=data)


class DatasetsService(datasets_pb2_grpc.DatasetsServicer):
    def __init__(self, store: Store) -> None:
        self.store = store

    @rpc
    def UploadDataset(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        h = streams.header(requests, "UploadDataset")
        row, present = uploads.store_dataset(self.store, h.name, convert.specs(h.tensors),
                                             h.size_bytes, h.sha256,
                                             streams.chunks(requests, for_call(context)))
        return datasets_pb2.UploadDatasetResponse(dataset=convert.dataset(row),
                                                  already_present=present)

    @rpc
    def GetDataset(self, request: Any, context: grpc.ServicerContext) -> Any:
        return convert.dataset(self.store.catalog.dataset(request.id))

    @rpc
    def ListDatasets(self, request: Any, context: grpc.ServicerContext) -> Any:
        page = self.store.catalog.datasets(request.page_size,
                                           convert.page_key(request.page_token, "datasets"))
        return datasets_pb2.ListDatasetsResponse(
            datasets=[convert.dataset(r) for r in page.rows],
            next_page_token=convert.page_token(page.next, "datasets"))

    @rpc
    def DeleteDataset(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.store.delete_dataset(request.id)
        return datasets_pb2.DeleteDatasetResponse()


class AnalysisService(analysis_pb2_grpc.AnalysisServicer):
    def __init__(self, store: Store, jobs: JobManager, device: str | None,
                 budget: memory.MemoryBudget, executor: Executor = LOCAL) -> None:
        self.store, self.jobs, self.device = store, jobs, device
        self.memory = budget
        self.executor = None if executor is LOCAL else executor
        self.references = References(store, device, self.memory)
        self.start = Jobs(store, jobs, self.references, device, self.memory,
                          executor=executor)

    @rpc
    def ComputeIndices(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        h = streams.header(requests, "ComputeIndices")
        options, specs = codec.options_from_message(h.options), convert.specs(h.tensors)
        cancel = for_call(context)
        stored: dict[str, Any] | None = None
        if h.dataset_id or h.test_dataset_id:  # stored datasets: the header is the request
            stored = admission.stored_indices(self.store, h.dataset_id, h.test_dataset_id,
                                              specs, options)
            streams.end(requests, "ComputeIndices with dataset_id")
            specs = [{"name": k, "dtype": a.dtype.name, "shape": list(a.shape)}
                     for k, a in stored.items()]
        else:
            admission.compute_indices([s["name"] for s in specs], options)
        est = memory.compute_indices_estimate(specs, options, stored=stored is not None)
        with self.memory.hold(est) as resize:  # admitted at the header, before any bytes
            arrays: dict[str, Any] = stored if stored is not None else streams.tensors(
                specs, requests, self.store.max_upload_bytes, cancel)
            resize(memory.with_classes(est, options, arrays))
            result = compute_indices(device=self.device, cancel=cancel, **arrays,
                                     **options.engine_kwargs(), executor=self.executor)
        return convert.indices_result(result, per_sample=options.per_sample)

    @rpc
    def StartLayerAnalysis(self, request: Any, context: grpc.ServicerContext) -> Any:
        return convert.job(self.start.layer_analysis(convert.layer_analysis_request(request)))

    @rpc
    def StartRanking(self, request: Any, context: grpc.ServicerContext) -> Any:
        return convert.job(self.start.ranking(convert.ranking_request(request)))

    @rpc
    def BuildReference(self, request: Any, context: grpc.ServicerContext) -> Any:
        return convert.job(self.start.reference(convert.reference_request(request)))

    @rpc
    def StartCompression(self, request: Any, context: grpc.ServicerContext) -> Any:
        return convert.job(self.start.compression(convert.compression_request(request)))

    @rpc
    def Certify(self, request: Any, context: grpc.ServicerContext) -> Any:
        return convert.certify_response(
            self.references.certify(convert.certify_request(request), for_call(context)))

    @rpc_stream
    def CertifyStream(self, requests: Iterator[Any], context: grpc.ServicerContext
                      ) -> Iterator[Any]:
        cancel = for_call(context)
        for request in requests:
            yield convert.certify_response(
                self.references.certify(convert.certify_request(request), cancel))

    @rpc_stream
    def WatchJob(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        self.jobs.get(request.id, with_result=False)  # NOT_FOUND before the stream starts
        for row in self.jobs.watch(request.id, context.is_active):
            yield convert.job(row)

    @rpc
    def GetJob(self, request: Any, context: grpc.ServicerContext) -> Any:
        return convert.job(self.jobs.get(request.id))

    @rpc
    def ListJobs(self, request: Any, context: grpc.ServicerContext) -> Any:
        page = self.store.catalog.jobs(request.page_size,
                                       convert.page_key(request.page_token, "jobs"))
        return analysis_pb2.ListJobsResponse(jobs=[convert.job(r) for r in page.rows],
                                             next_page_token=convert.page_token(page.next, "jobs"))

    @rpc
    def ListReferences(self, request: Any, context: grpc.ServicerContext) -> Any:
        page = self.store.catalog.references(
            request.page_size, convert.page_key(request.page_token, "references"))
        return analysis_pb2.ListReferencesResponse(
            references=[codec.reference(r["info"]) for r in page.rows],
            next_page_token=convert.page_token(page.next, "references"))

    @rpc
    def DeleteReference(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.references.delete(request.id)
        return analysis_pb2.DeleteReferenceResponse()

    @rpc
    def CancelJob(self, request: Any, context: grpc.ServicerContext) -> Any:
        return convert.job(self.jobs.cancel(request.id))


__all__ = ["AnalysisService", "DatasetsService", "ModelsService", "common_pb2", "status_for"]
