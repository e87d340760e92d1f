"""The analysis jobs: each request admitted at once, its work queued on the job manager.

One work function per job kind takes the admitted request (the models loaded, the datasets
split) with the manager's ``progress`` and ``cancel`` (a Cancellation); the first stage of
each is ``loading``, then the analyses' own (``extract:train``, ``extract:test``,
``indices``, ``models``, ...). A queued job holds only its request: what admission loaded
is let go once the job's memory is estimated and loaded again when the job starts, so a
full queue costs no more memory than an empty one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...protos.options import IndexOptions
from ..cancellation import Cancellation
from ..cluster import LOCAL, Executor
from ..graph import select_layers
from ..graph.load import external_bytes
from ..store import JobRow, Store
from ..store.jobs import JobManager
from . import admission, memory
from .compress import compress_model, cut_candidates
from .data import EXTRACT_MEMORY_MB
from .layerwise import analyze_layers
from .options import FOLDS
from .ranking import rank_models
from .requests import CompressionRequest, LayerAnalysisRequest, RankingRequest, ReferenceRequest
from .uploads import store_model

if TYPE_CHECKING:
    from .references import References

ProgressFn = Callable[[str, int, int], None]
Work = Callable[[ProgressFn, Cancellation], dict[str, Any]]
LOADING = "loading"


def readmitted(admit: Callable[[Store, Any], Any], store: Store, req: Any,
               run: Callable[..., dict[str, Any]], **kw: Any) -> Work:
    """Work that admits ``req`` again when the job starts (the model and datasets loaded
    then, not while it waits) and runs ``run(job, progress, cancel, **kw)``."""

    def work(progress: ProgressFn, cancel: Cancellation) -> dict[str, Any]:
        progress(LOADING, 0, 1)
        return run(admit(store, req), progress, cancel, **kw)

    return work


def run_layer_analysis(job: admission.LayerAnalysis, progress: ProgressFn,
                       cancel: Cancellation, *, device: str | None = None,
                       extract_memory_mb: float = EXTRACT_MEMORY_MB,
                       executor: Executor = LOCAL) -> dict[str, Any]:
    """The layer table of an admitted layer analysis, as a dict."""
    progress(LOADING, 0, 1)
    req, train, test = job.request, job.train, job.test
    kw: dict[str, Any] = train.target()
    if test is not None:
        kw |= {"test": test.inputs, **test.target("test_")}
    result = analyze_layers(
        job.model.proto, train.inputs, layers=list(req.layers), reduce=req.reduce,
        options=req.options, probe=req.probe, batch_size=req.batch_size,
        tolerance=req.tolerance, extract_memory_mb=extract_memory_mb, device=device,
        progress=progress, cancel=cancel, executor=executor, **kw,
    )
    return result.to_dict()


def run_ranking(job: admission.Ranking, progress: ProgressFn, cancel: Cancellation, *,
                device: str | None = None,
                extract_memory_mb: float = EXTRACT_MEMORY_MB,
                executor: Executor = LOCAL) -> dict[str, Any]:
    """The ranking of an admitted request's models, as a dict."""
    progress(LOADING, 0, 1)
    req = job.request
    result = rank_models(
        [m.proto for m in job.models], job.data.inputs, **job.data.target(),
        names=list(req.model_ids), layers=dict(req.layers), reduce=req.reduce,
        order=req.order, baselines=req.baselines, batch_size=req.batch_size,
        options=req.options, extract_memory_mb=extract_memory_mb, device=device,
        progress=progress, cancel=cancel, executor=executor, method=req.method,
        folds=FOLDS if req.folds is None else req.folds,
    )
    return result.to_dict()


def run_compression(job: admission.Compression, progress: ProgressFn, cancel: Cancellation, *,
                    target: Store, device: str | None = None,
                    extract_memory_mb: float = EXTRACT_MEMORY_MB) -> dict[str, Any]:
    """The compression report, with the compressed model stored in ``target`` as a new
    model (``model_id``, ``size_bytes``)."""
    progress(LOADING, 0, 1)
    req = job.request
    result = compress_model(
        job.model.proto, job.train.inputs, **job.train.target(), test=job.test.inputs,
        **job.test.target("test_"), layers=list(req.layers), tolerance=req.tolerance,
        criterion=req.criterion, select_features=req.select_features, reduce=req.reduce,
        alpha=req.alpha, batch_size=req.batch_size, extract_memory_mb=extract_memory_mb,
        device=device, progress=progress, cancel=cancel)
    cancel.check()
    raw = result.model
    name = req.name or f"{target.catalog.model(req.model_id)['name']}-compressed"
    row, _ = store_model(target, name, len(raw), hashlib.sha256(raw).hexdigest(), [(0, raw)])
    return result.to_dict() | {"model_id": row["id"], "size_bytes": len(raw)}


class Jobs:
    """Starts the analysis jobs of one store: admission errors reach the caller at once."""

    def __init__(self, store: Store, manager: JobManager, references: References,
                 device: str | None, budget: memory.MemoryBudget,
                 extract_memory_mb: float = EXTRACT_MEMORY_MB,
                 executor: Executor = LOCAL) -> None:
        self.store, self.manager, self.references = store, manager, references
        self.executor = executor
        self.device, self.extract_memory_mb = device, extract_memory_mb
        self.budget = budget

    def layer_analysis(self, req: LayerAnalysisRequest) -> JobRow:
        job = admission.layer_analysis(self.store, req)
        est = memory.layer_analysis_estimate(
            job.model.info, select_layers(job.model.info, list(req.layers)),
            job.train, job.test,
            reduce=req.reduce, batch_size=req.batch_size, probe=req.probe, opts=req.options,
            model_bytes=job.model.proto.ByteSize(), extract_mb=self.extract_memory_mb,
            weights_bytes=external_bytes(job.model.proto))
        del job  # nothing admission loaded is held while the job waits
        work = readmitted(admission.layer_analysis, self.store, req, run_layer_analysis,
                          device=self.device, extract_memory_mb=self.extract_memory_mb,
                          executor=self.executor)
        return self.manager.submit("layer_analysis", req.to_json(),
                                   self.budget.job(est, work))

    def ranking(self, req: RankingRequest) -> JobRow:
        job = admission.ranking(self.store, req)
        est = memory.ranking_estimate(
            job.models, dict(req.layers), list(req.model_ids), job.data, reduce=req.reduce,
            batch_size=req.batch_size,
            max_features=req.options.max_features, patience=req.options.patience,
            order=req.order, baselines=bool(req.baselines), extract_mb=self.extract_memory_mb,
            budget_mb=req.options.memory_budget_mb)
        del job
        work = readmitted(admission.ranking, self.store, req, run_ranking,
                          device=self.device, extract_memory_mb=self.extract_memory_mb,
                          executor=self.executor)
        return self.manager.submit("ranking", req.to_json(), self.budget.job(est, work))

    def reference(self, req: ReferenceRequest) -> JobRow:
        job = admission.reference(self.store, req)
        est = memory.reference_estimate(
            job.model, req.layer, job.data, reduce=req.reduce,
            batch_size=req.batch_size, extract_mb=self.extract_memory_mb,
            budget_mb=req.options.memory_budget_mb)
        del job
        work = readmitted(admission.reference, self.store, req, self.references.build,
                          extract_memory_mb=self.extract_memory_mb)
        return self.manager.submit("reference", req.to_json(), self.budget.job(est, work))

    def compression(self, req: CompressionRequest) -> JobRow:
        job = admission.compression(self.store, req)
        # the layer analysis with the probe, then the cut's features once more
        est = memory.layer_analysis_estimate(
            job.model.info, cut_candidates(job.model.info, list(req.layers)), job.train,
            job.test, reduce=req.reduce, batch_size=req.batch_size, probe=True,
            opts=IndexOptions(), model_bytes=job.model.proto.ByteSize(),
            extract_mb=self.extract_memory_mb)
        del job
        work = readmitted(admission.compression, self.store, req, run_compression,
                          target=self.store, device=self.device,
                          extract_memory_mb=self.extract_memory_mb)
        return self.manager.submit("compression", req.to_json(), self.budget.job(est, work))
