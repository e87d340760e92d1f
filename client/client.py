"""The Python client: typed methods over the gRPC API, NumPy in, plain frozen results out.

    with Client.local() as c:                       # an embedded server on loopback
        model = c.upload_model("model.onnx")        # a Model
        train = c.upload_dataset({"image": x}, labels=y)   # a Dataset
        result = c.analyze_layers(model, train, progress=True)

    with Client("host:50051", token="...") as c:   # a remote server
        ...
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from ..lazy import lazy_module
from ..local import Announcement, default_data_dir, package_identity, read_announcement
from ..protos import codec
from ..protos.options import IndexOptions, OptionError
from ..protos.stubs import (
    analysis_pb2,
    analysis_pb2_grpc,
    common_pb2,
    datasets_pb2,
    datasets_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
)
from .loaders import Source, open_source
from .modelfile import FOLD_MAX_BYTES, ModelFiles, model_file_bytes, model_files
from .progress import ProgressLine, job_line
from .rawarray import RawArray
from .results import (
    CertifyResult,
    CompressionResult,
    Dataset,
    IndicesResult,
    Job,
    LayerwiseResult,
    Model,
    RankingResult,
    Reference,
)
from .server_process import (
    ServerProcess,
    exited,
    holds_data_dir,
    is_server,
    start_lock,
    start_warm,
    stop_server,
    wait_exit,
)

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy")

CHUNK = 1 << 20
log = logging.getLogger("layerscope.client")


class LayerscopeError(RuntimeError):
    """An error the server returned: ``code`` (a grpc.StatusCode name) and its message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.details = message


def _wrap(exc: grpc.RpcError) -> LayerscopeError:
    code = exc.code().name if hasattr(exc, "code") and exc.code() else "UNKNOWN"
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return LayerscopeError(code, details or "")


def _sha256_of(parts: Iterable[memoryview]) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    for p in parts:
        h.update(p)
        n += len(p)
    return h.hexdigest(), n


def _wire(a: Any) -> np.ndarray | RawArray:
    """``a`` as it goes on the wire: C order, little-endian (a RawArray already is)."""
    return a if isinstance(a, RawArray) else codec.little_endian(a)


def _bytes_of(a: np.ndarray | RawArray) -> memoryview:
    """The bytes of a C-order array, one byte per item (no copy)."""
    if isinstance(a, RawArray):
        return a.view()
    return memoryview(np.ascontiguousarray(a).reshape(-1).view(np.uint8))  # type: ignore[arg-type]


def _views(arrays: list[np.ndarray | RawArray]) -> Iterator[memoryview]:
    """The raw little-endian bytes of each array, in CHUNK-sized pieces, without copies."""
    for a in arrays:
        buf = _bytes_of(a)
        for s in range(0, len(buf), CHUNK):
            yield buf[s : s + CHUNK]


def _block_views(blocks: Iterable[np.ndarray | RawArray]) -> Iterator[memoryview]:
    """The raw bytes of each block (C order; the loaders yield little-endian blocks)."""
    for b in blocks:
        yield _bytes_of(b)


def _counted(views: Iterable[memoryview], stage: str, total: int, bar: ProgressLine
             ) -> Iterator[memoryview]:
    """``views`` as they are, drawing ``bar`` at the bytes passed."""
    seen = 0
    for v in views:
        yield v
        seen += len(v)
        bar(stage, seen / total if total else 1.0, None,
            f"{seen / 2**20:,.0f}/{total / 2**20:,.0f} MiB")


def _rechunk(views: Iterable[memoryview]) -> Iterator[bytes]:
    """``views`` cut and joined into pieces of CHUNK bytes (the last one shorter)."""
    pending: list[bytes] = []
    held = 0
    for v in views:
        while len(v):
            take = v[: CHUNK - held]
            pending.append(take.tobytes())
            held += len(take)
            v = v[len(take) :]
            if held == CHUNK:
                yield b"".join(pending)
                pending, held = [], 0
    if held:
        yield b"".join(pending)


def _chunk_requests(message: Callable[[], Any], pieces: Iterable[bytes | memoryview],
                    sent: Callable[[int], None] | None = None) -> Iterator[Any]:
    """One request ``message()`` per piece, its ``chunk`` (offset, data) set in place.
    Building a Chunk and handing it to the request would copy its data once more (and each
    read of a bytes field copies it out again): at 20 MB those copies took 25 ms of a
    command's 0.15 s. ``sent`` is told the bytes sent so far after each request."""
    offset = 0
    for piece in pieces:
        req = message()
        req.chunk.offset = offset
        req.chunk.data = piece if isinstance(piece, bytes) else piece.tobytes()
        offset += len(piece)
        yield req
        if sent is not None:
            sent(offset)


def _spec(name: str, a: np.ndarray | RawArray) -> common_pb2.TensorSpec:
    return common_pb2.TensorSpec(name=name, dtype=str(a.dtype), shape=list(a.shape))


def _options(options: IndexOptions | None, keywords: Mapping[str, Any]
             ) -> analysis_pb2.IndexOptions:
    """The IndexOptions message of ``options`` or of keyword options, validated here as the
    server would (a bad value raises LayerscopeError INVALID_ARGUMENT before anything is
    sent)."""
    if options is not None:
        if not isinstance(options, IndexOptions):
            raise TypeError(f"options must be an IndexOptions; got {type(options).__name__}")
        if keywords:
            raise TypeError(f"give index options as options=IndexOptions(...) or as keywords, "
                            f"not both (keywords given: {sorted(keywords)})")
        return codec.options_message(options)
    try:
        return codec.options_message(IndexOptions.build(**keywords))
    except OptionError as exc:
        raise LayerscopeError("INVALID_ARGUMENT", str(exc)) from None


class Client:
    """A connection to a layerscope server."""

    def __init__(
        self,
        address: str,
        token: str | None = None,
        *,
        root_certificates: bytes | None = None,
        server_name: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self._metadata = [("authorization", f"Bearer {token}")] if token else []
        options: list[tuple[str, Any]] = [("grpc.max_receive_message_length", 64 << 20),
                   ("grpc.max_send_message_length", 16 << 20)]
        if server_name:  # the name the server's certificate holds, when not the address's
            options.append(("grpc.ssl_target_name_override", server_name))
        if root_certificates is not None:
            creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(address, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._models = models_pb2_grpc.ModelsStub(self._channel)
        self._datasets = datasets_pb2_grpc.DatasetsStub(self._channel)
        self._analysis = analysis_pb2_grpc.AnalysisStub(self._channel)
        self._process: ServerProcess | None = None
        # the announcement of the embedded server Client.local() started for this client
        self.started: Announcement | None = None

    # lifecycle --------------------------------------------------------------------------
    @classmethod
    def local(
        cls,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        device: str | None = None,
        ray: str | None = None,
        startup_timeout: float = 120.0,
        keep_warm: float | None = None,
    ) -> Client:
        """Connect to the embedded server of ``data_dir`` (default: the user's data home),
        starting one on a free loopback port if none is running.

        Without ``keep_warm`` a server this client starts stops with the client. With
        ``keep_warm=S`` it is a *warm* server: it outlives this client, later clients of the
        same folder reuse it, and it stops itself after S seconds without work. A warm
        server found running is replaced when it runs another layerscope (version or
        installation) or, with ``device`` given, another device; a server started by hand
        (``layerscope serve``) is used as it is. A crashed server, or a ``server.json`` left
        by one, is detected and a new server started. ``ray`` (``auto``, ``HOST:PORT``,
        ``local``): the server it starts runs k-NN, extraction and ranking on that Ray
        cluster.
        """
        if keep_warm is not None and not (math.isfinite(keep_warm) and keep_warm > 0):
            raise ValueError(f"keep_warm must be a number of seconds > 0; got {keep_warm}")
        folder = Path(data_dir) if data_dir is not None else default_data_dir()
        folder.mkdir(parents=True, exist_ok=True)
        dev = [*(["--device", device] if device else []), *(["--ray", ray] if ray else [])]
        with start_lock(folder):
            found = _running_server(folder, startup_timeout, cls)
            if found is not None:
                running, client = found
                unfit = _unfit(running, device)
                if unfit is None or not running.warm:
                    return client
                client.close()
                log.info("replacing the warm server (pid %d): %s", running.pid, unfit)
                stop_server(folder)
            if keep_warm is not None:
                try:
                    info = start_warm(folder, "--idle-timeout-s", repr(float(keep_warm)),
                                      *dev, timeout=startup_timeout)
                except RuntimeError as exc:
                    raise LayerscopeError("UNAVAILABLE",
                                          f"the embedded server did not start: {exc}") from None
                client = cls(info.address)
                client.started = info
                client.wait_ready(startup_timeout)
                return client
            server = ServerProcess(folder, *dev)
            try:
                address = server.wait_ready(startup_timeout)
            except RuntimeError as exc:
                raise LayerscopeError("UNAVAILABLE", f"the embedded server did not start: {exc}"
                                      ) from None
        client = cls(address)
        client._process = server
        client.started = read_announcement(folder)
        client.wait_ready(startup_timeout)
        return client

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the server answers (raises LayerscopeError after ``timeout``)."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise LayerscopeError("UNAVAILABLE", f"no server answers at {self.address}") from None

    def close(self) -> None:
        """Close the channel and stop the embedded server this client started."""
        self._channel.close()
        server, self._process = self._process, None
        if server is not None:
            server.stop()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Any, request: Any, **kw: Any) -> Any:
        try:
            return method(request, metadata=self._metadata, timeout=kw.get("timeout",
                                                                           self.timeout))
        except grpc.RpcError as exc:
            raise _wrap(exc) from None

    def _stored(self, method: Any, request: Any) -> Any:
        """What ``method`` (GetModel, GetDataset) returns for ``request``, or None when the
        server does not hold it: an upload asks first, so that bytes the server already has
        are not sent again."""
        try:
            return self._call(method, request)
        except LayerscopeError as exc:
            if exc.code == "NOT_FOUND":
                return None
            raise

    # models -----------------------------------------------------------------------------
    def upload_model(self, model: str | os.PathLike[str] | bytes | Any, name: str | None = None,
                     sample_inputs: Any = None, files: bool | None = None,
                     **export_options: Any) -> Model:
        """Upload ONNX bytes, a path to an .onnx file or an onnx.ModelProto; return the
        stored model with its candidate layers. The same bytes twice upload once.

        A model file with external data goes folded into one protobuf up to 64 MiB of
        external data and as its files beyond (the model file and each external file,
        stored together as one model; a set already stored sends nothing):
        ``files=True`` always sends the files, ``files=False`` always folds.

        A model object of another framework (PyTorch, Keras, scikit-learn, XGBoost,
        LightGBM, JAX) is exported here first with ``sample_inputs`` (parity checked, see
        layerscope.exporters) and its ONNX bytes uploaded.
        """
        origin = "model bytes"
        if sample_inputs is not None:
            import tempfile  # noqa: PLC0415

            from ..exporters import export  # noqa: PLC0415 - exporters are client-side

            with tempfile.TemporaryDirectory() as tmp:
                report = export(model, sample_inputs, Path(tmp) / "model.onnx",
                                **export_options)
                data = model_file_bytes(Path(report.path))
            return self.upload_model(data, name=name or f"{report.framework} model")
        if hasattr(model, "SerializeToString"):
            data = model.SerializeToString()
        elif isinstance(model, (bytes, bytearray)):
            data = bytes(model)
        else:
            path = Path(model)
            origin, name = str(path), name or path.name
            found = model_files(path) if files is not False else None
            if found is not None and (files or found.external_bytes > FOLD_MAX_BYTES):
                return self._upload_files(found, name)
            data = model_file_bytes(path)
        sha = hashlib.sha256(data).hexdigest()
        stored = self._stored(self._models.GetModel, models_pb2.GetModelRequest(id=sha))
        if stored is not None:  # the same bytes are there: nothing to send
            return Model.from_proto(stored)

        def requests() -> Iterator[models_pb2.UploadModelRequest]:
            yield models_pb2.UploadModelRequest(header=models_pb2.UploadModelHeader(
                name=name or "", size_bytes=len(data), sha256=sha))
            yield from _chunk_requests(models_pb2.UploadModelRequest,
                                       (data[s : s + CHUNK] for s in range(0, len(data), CHUNK)))

        try:
            return Model.from_proto(self._call(self._models.UploadModel, requests()).model)
        except LayerscopeError as exc:  # name the file the user gave, not "model bytes"
            raise LayerscopeError(exc.code, exc.details.replace("model bytes", origin)) from None

    def _upload_files(self, found: ModelFiles, name: str) -> Model:
        """Upload a model set unless the server has it already (asked first, by its id)."""
        stored = self._stored(self._models.GetModel, models_pb2.GetModelRequest(id=found.id))
        if stored is not None:
            return Model.from_proto(stored)

        def requests() -> Iterator[models_pb2.UploadModelFilesRequest]:
            yield models_pb2.UploadModelFilesRequest(header=models_pb2.UploadModelFilesHeader(
                name=name, model_path=found.model_path, files_sha256=found.id,
                files=[models_pb2.ModelFile(path=f.path, size_bytes=f.size, sha256=f.sha256)
                       for f in found.files]))
            for index, f in enumerate(found.files):
                with open(f.local, "rb") as src:
                    offset = 0
                    while data := src.read(CHUNK):
                        yield models_pb2.UploadModelFilesRequest(chunk=models_pb2.FileChunk(
                            file=index, offset=offset, data=data))
                        offset += len(data)

        return Model.from_proto(self._call(self._models.UploadModelFiles, requests()).model)

    def get_model(self, model: str | Model) -> Model:
        """The stored model (by id, or a Model to refresh) with its candidate layers."""
        return Model.from_proto(self._call(self._models.GetModel,
                                           models_pb2.GetModelRequest(id=_id(model))))

    def _listing(self, method: Any, request: Any, field: str, page_size: int) -> list[Any]:
        """Every item of a List call, newest first, read page by page (``page_size`` items
        a page; 0: the server's default)."""
        items: list[Any] = []
        token = ""
        while True:
            resp = self._call(method, request(page_size=page_size, page_token=token))
            items.extend(getattr(resp, field))
            token = resp.next_page_token
            if not token:
                return items[::-1]  # the server pages oldest first

    def models(self, page_size: int = 0) -> list[Model]:
        """The stored models, newest first, without their layers (read in pages of
        ``page_size``, 0: the server's default)."""
        return [Model.from_proto(m) for m in self._listing(
            self._models.ListModels, models_pb2.ListModelsRequest, "models", page_size)]

    def delete_model(self, model: str | Model) -> None:
        self._call(self._models.DeleteModel, models_pb2.DeleteModelRequest(id=_id(model)))

    # datasets ---------------------------------------------------------------------------
    def download_model(self, model: str | Model) -> bytes:
        """Return the stored model's ONNX bytes (fetched in chunks, sha256-checked against
        its id)."""
        model_id = _id(model)
        parts, offset = [], 0
        try:
            for chunk in self._models.DownloadModel(models_pb2.DownloadModelRequest(id=model_id),
                                                    metadata=self._metadata):
                if chunk.offset != offset:
                    raise LayerscopeError("DATA_LOSS", f"model {model_id}: chunk at offset "
                                          f"{chunk.offset}, expected {offset}")
                parts.append(chunk.data)
                offset += len(chunk.data)
        except grpc.RpcError as exc:
            raise _wrap(exc) from None
        data = b"".join(parts)
        if hashlib.sha256(data).hexdigest() != model_id:
            raise LayerscopeError("DATA_LOSS", f"model {model_id}: the downloaded bytes do not "
                                  "hash to its id")
        return data

    def upload_dataset(
        self,
        inputs: Mapping[str, Any] | Any,
        labels: Any = None,
        targets: Any = None,
        name: str | None = None,
    ) -> Dataset:
        """Upload named input arrays (or one array, stored as ``inputs``) with ``labels``
        (classification) or ``targets`` (regression); return the stored dataset."""
        if (labels is None) == (targets is None):
            raise ValueError("give exactly one of labels or targets")
        named = dict(inputs) if isinstance(inputs, Mapping) else {"inputs": inputs}
        if "labels" in named or "targets" in named:
            raise ValueError("input arrays may not be named 'labels' or 'targets'")
        named["labels" if labels is not None else "targets"] = (
            labels if labels is not None else targets)
        arrays = {k: _wire(v) for k, v in named.items()}
        order = list(arrays.values())
        sha, size = _sha256_of(_views(order))
        header = datasets_pb2.UploadDatasetHeader(
            name=name or "", tensors=[_spec(k, a) for k, a in arrays.items()],
            size_bytes=size, sha256=sha)
        held = self._held_dataset(header)
        if held is not None:  # the same arrays are there: nothing to send
            return held

        def requests() -> Iterator[datasets_pb2.UploadDatasetRequest]:
            yield datasets_pb2.UploadDatasetRequest(header=header)
            yield from _chunk_requests(datasets_pb2.UploadDatasetRequest, _views(order))

        return Dataset.from_proto(self._call(self._datasets.UploadDataset, requests()).dataset)

    def _held_dataset(self, header: datasets_pb2.UploadDatasetHeader) -> Dataset | None:
        """The stored dataset this upload's header describes (its id computed as the
        contract defines Dataset.id), or None when the server does not hold it."""
        specs = [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)}
                 for t in header.tensors]
        stored = self._stored(self._datasets.GetDataset, datasets_pb2.GetDatasetRequest(
            id=codec.dataset_id(specs, header.sha256)))
        return None if stored is None else Dataset.from_proto(stored)

    def upload_source(self, source: Source, name: str | None = None,
                      progress: bool = False) -> Dataset:
        """Upload a :class:`~layerscope.client.loaders.Source` (a data file or image folder
        read by :func:`~layerscope.client.loaders.open_source`); return the stored dataset.

        The source is read twice, a block at a time: once to hash it (which also checks
        every file, so a broken one stops the upload before anything is sent), once to
        send it. Memory stays at one block whatever the data's size."""
        total = source.size_bytes
        bar = ProgressLine(progress)
        try:
            sha, size = _sha256_of(_counted(_block_views(source.blocks()), "reading", total,
                                            bar))
            bar.close()
            return self._send_source(source, name, sha, size, bar)
        finally:
            bar.close()

    def _send_source(self, source: Source, name: str | None, sha: str, size: int,
                     bar: ProgressLine) -> Dataset:
        if size != source.size_bytes:
            raise ValueError(f"the source yielded {size} bytes; its tensors take "
                             f"{source.size_bytes}")
        header = datasets_pb2.UploadDatasetHeader(
            name=name or "", size_bytes=size, sha256=sha,
            tensors=[common_pb2.TensorSpec(name=n, dtype=d, shape=list(s))
                     for n, d, s in source.specs])
        held = self._held_dataset(header)
        if held is not None:  # the same data is there: nothing to send
            return held

        def requests() -> Iterator[datasets_pb2.UploadDatasetRequest]:
            yield datasets_pb2.UploadDatasetRequest(header=header)
            bar.started = time.monotonic()
            yield from _chunk_requests(datasets_pb2.UploadDatasetRequest, _rechunk(
                _counted(_block_views(source.blocks()), "uploading", size, bar)))

        return Dataset.from_proto(self._call(self._datasets.UploadDataset, requests()).dataset)

    def upload_file(self, path: str | os.PathLike[str], name: str | None = None,
                    **loader_options: Any) -> Dataset:
        """Upload a data file or image folder (``.npz``, ``.npy`` with ``labels=`` or
        ``targets=``, ``.csv`` and ``.parquet`` with ``columns=Columns(label=...)``, an
        image folder with ``images=ImageOptions(...)``: see
        :func:`~layerscope.client.loaders.open_source`); return the stored dataset."""
        source = open_source(path, **loader_options)
        return self.upload_source(source, name or Path(path).name)

    def get_dataset(self, dataset: str | Dataset) -> Dataset:
        """The stored dataset (by id, or a Dataset to refresh)."""
        return Dataset.from_proto(self._call(self._datasets.GetDataset,
                                             datasets_pb2.GetDatasetRequest(id=_id(dataset))))

    def datasets(self, page_size: int = 0) -> list[Dataset]:
        """The stored datasets, newest first (read in pages of ``page_size``, 0: the
        server's default)."""
        return [Dataset.from_proto(d) for d in self._listing(
            self._datasets.ListDatasets, datasets_pb2.ListDatasetsRequest, "datasets",
            page_size)]

    def delete_dataset(self, dataset: str | Dataset) -> None:
        self._call(self._datasets.DeleteDataset,
                   datasets_pb2.DeleteDatasetRequest(id=_id(dataset)))

    # indices ----------------------------------------------------------------------------
    def compute_indices(
        self,
        features: Any,
        labels: Any = None,
        targets: Any = None,
        *,
        test_features: Any = None,
        test_labels: Any = None,
        test_targets: Any = None,
        options: IndexOptions | None = None,
        progress: bool = False,
        **keywords: Any,
    ) -> IndicesResult:
        """The engine's indices of ``features`` (see METRICS.md), computed by the server.

        ``features`` (and ``test_features``) are arrays sent with the call, with
        ``labels`` or ``targets`` (and ``test_labels`` or ``test_targets``); or stored
        datasets (a :class:`Dataset` from :meth:`upload_dataset` or :meth:`upload_file`,
        or its id) of one input tensor each, which hold their own labels or targets: no
        bytes are sent, however often the same data is indexed.

        Options as an :class:`IndexOptions` or as its keywords: indices, orders, gamma,
        normalize, margin_cap, max_features, patience, candidates, criterion, precision,
        memory_budget_mb, per_sample. ``progress=True`` shows the upload and then the
        elapsed time of the computation on stderr (the call reports no progress of its own).
        """
        named = {"features": features, "labels": labels, "targets": targets,
                 "test_features": test_features, "test_labels": test_labels,
                 "test_targets": test_targets}
        if _is_dataset(features) or _is_dataset(test_features):
            header = _stored_header(named, _options(options, keywords))
            arrays = {}
        else:
            arrays = {k: _wire(v) for k, v in named.items() if v is not None}
            header = analysis_pb2.ComputeIndicesHeader(
                options=_options(options, keywords),
                tensors=[_spec(k, a) for k, a in arrays.items()])
        order = list(arrays.values())

        def requests() -> Iterator[analysis_pb2.ComputeIndicesRequest]:
            yield analysis_pb2.ComputeIndicesRequest(header=header)
            yield from _chunk_requests(analysis_pb2.ComputeIndicesRequest, _views(order),
                                       lambda sent: bar("uploading", sent / total))
            uploaded.append(True)

        total = sum(a.nbytes for a in order)
        bar = ProgressLine(progress)
        uploaded: list[bool] = []
        try:
            call = self._analysis.ComputeIndices.future(
                requests(), metadata=self._metadata, timeout=self.timeout)
            while True:
                try:
                    response = call.result(timeout=0.5)
                    break
                except grpc.FutureTimeoutError:
                    if uploaded:  # the server computes in one call: elapsed, no ETA
                        bar("indices", 0.0, None, "computing on the server")
                except KeyboardInterrupt:
                    call.cancel()
                    raise
            bar("indices", 1.0)
        except grpc.RpcError as exc:
            raise _wrap(exc) from None
        finally:
            bar.close()
        return IndicesResult.from_proto(response)

    # jobs -------------------------------------------------------------------------------
    def start_layer_analysis(
        self,
        model: str | Model,
        train: str | Dataset,
        test: str | Dataset | None = None,
        *,
        layers: str | Iterable[str] = "auto",
        reduce: str = "auto",
        probe: bool | str = False,
        batch_size: int | None = None,
        tolerance: float | None = None,
        options: IndexOptions | None = None,
        **keywords: Any,
    ) -> Job:
        """Start a layer-wise analysis job on the server (a stored model and datasets, or
        their ids); return it at once. Index options as in :meth:`compute_indices`.
        ``probe``: True for the default linear probe per layer (ridge), or its name
        ("ridge" or "logistic"; the option ``probe_model``)."""
        if isinstance(probe, str):
            if options is not None:
                options = options.with_(probe_model=probe)
            else:
                keywords = {**keywords, "probe_model": probe}
        req = analysis_pb2.StartLayerAnalysisRequest(
            model_id=_id(model), dataset_id=_id(train),
            test_dataset_id=_id(test) if test is not None else "",
            layers=[layers] if isinstance(layers, str) else list(layers), reduce=reduce,
            options=_options(options, keywords), probe=bool(probe),
            batch_size=batch_size or 0,
        )
        if tolerance is not None:
            req.tolerance = tolerance
        return Job.from_proto(self._call(self._analysis.StartLayerAnalysis, req))

    def start_compression(
        self,
        model: str | Model,
        train: str | Dataset,
        test: str | Dataset,
        *,
        layers: str | Iterable[str] = "auto",
        tolerance: float | None = None,
        criterion: str = "probe",
        select_features: int | None = None,
        reduce: str = "auto",
        batch_size: int | None = None,
        name: str = "",
        alpha: float | None = None,
    ) -> Job:
        """Start a compression job (docs/compress.md) on stored model and datasets (or
        their ids); return it at once."""
        req = analysis_pb2.StartCompressionRequest(
            model_id=_id(model), dataset_id=_id(train), test_dataset_id=_id(test),
            layers=[layers] if isinstance(layers, str) else list(layers), criterion=criterion,
            reduce=reduce, batch_size=batch_size or 0, name=name)
        if tolerance is not None:
            req.tolerance = tolerance
        if select_features is not None:
            req.select_features = select_features
        if alpha is not None:
            req.alpha = alpha
        return Job.from_proto(self._call(self._analysis.StartCompression, req))

    def compress(
        self,
        model: str | os.PathLike[str] | bytes | Model,
        train: Mapping[str, Any] | Dataset | str,
        test: Mapping[str, Any] | Dataset | str,
        *,
        labels: Any = None,
        targets: Any = None,
        test_labels: Any = None,
        test_targets: Any = None,
        progress: bool = False,
        **kw: Any,
    ) -> CompressionResult:
        """Compress ``model`` and wait: the report, with the compressed model's ONNX bytes
        in ``.model``. Arguments as :meth:`analyze_layers`; other keywords as
        :meth:`start_compression`."""
        stored = self._model(model)
        train_ds = self._dataset(train, labels, targets)
        test_ds = self._dataset(test, test_labels, test_targets)
        if "name" not in kw:
            kw["name"] = f"{stored.name}-compressed"
        result = self.wait(self.start_compression(stored, train_ds, test_ds, **kw), progress)
        return CompressionResult(result.data, self.download_model(result.model_id))

    def watch(self, job: str | Job) -> Iterator[Job]:
        """Yield the job as it changes, ending in a final state."""
        try:
            for msg in self._analysis.WatchJob(analysis_pb2.WatchJobRequest(id=_id(job)),
                                               metadata=self._metadata):
                yield Job.from_proto(msg)
        except grpc.RpcError as exc:
            raise _wrap(exc) from None

    def job(self, job: str | Job) -> Job:
        return Job.from_proto(self._call(self._analysis.GetJob,
                                         analysis_pb2.GetJobRequest(id=_id(job))))

    def jobs(self, page_size: int = 0) -> list[Job]:
        """The jobs, newest first, without results (read in pages of ``page_size``, 0: the
        server's default)."""
        return [Job.from_proto(j) for j in self._listing(
            self._analysis.ListJobs, analysis_pb2.ListJobsRequest, "jobs", page_size)]

    def cancel(self, job: str | Job) -> Job:
        return Job.from_proto(self._call(self._analysis.CancelJob,
                                         analysis_pb2.CancelJobRequest(id=_id(job))))

    def analyze_layers(
        self,
        model: str | os.PathLike[str] | bytes | Model,
        train: Mapping[str, Any] | Dataset | str,
        test: Mapping[str, Any] | Dataset | str | None = None,
        *,
        labels: Any = None,
        targets: Any = None,
        test_labels: Any = None,
        test_targets: Any = None,
        layers: str | Iterable[str] = "auto",
        progress: bool = False,
        **kw: Any,
    ) -> LayerwiseResult:
        """Run a layer-wise analysis and wait for its result.

        ``model`` is a stored model (or its id) or a path/bytes to upload; ``train`` and
        ``test`` stored datasets (or ids) or dicts of input arrays, uploaded with
        ``labels``/``targets``. ``progress=True`` shows a progress bar on stderr. Other
        keywords as :meth:`start_layer_analysis`.
        """
        stored_model = self._model(model)
        train_ds = self._dataset(train, labels, targets)
        test_ds = None if test is None else self._dataset(test, test_labels, test_targets)
        job = self.start_layer_analysis(stored_model, train_ds, test_ds, layers=layers, **kw)
        return self.wait(job, progress)  # type: ignore[no-any-return]

    def wait(self, job: Job, progress: bool = False) -> Any:
        """Watch ``job`` until it ends (a progress bar on stderr with ``progress``); return
        its result, or raise LayerscopeError with the job's state and message."""
        bar = ProgressLine(progress)
        last = job
        try:
            for last in self.watch(job):
                bar(*job_line(dict(last.progress), last.state))
        except KeyboardInterrupt:
            self.cancel(job)
            raise
        finally:
            bar.close()
        if last.state != "succeeded" or last.result is None:
            raise LayerscopeError(last.state.upper(),
                                  last.message or f"job {last.id} {last.state}")
        return last.result

    def _model(self, model: Any) -> Model:
        """A stored model of a Model, an id, or something to upload (path, bytes, proto)."""
        if isinstance(model, Model):
            return model
        if isinstance(model, models_pb2.Model):
            return Model.from_proto(model)
        if isinstance(model, str) and _is_id(model):
            return self.get_model(model)
        return self.upload_model(model)

    def _dataset(self, value: Any, labels: Any, targets: Any) -> Dataset:
        """A stored dataset of a Dataset, an id, or input arrays to upload."""
        if isinstance(value, Dataset):
            return value
        if isinstance(value, datasets_pb2.Dataset):
            return Dataset.from_proto(value)
        if isinstance(value, Source):
            return self.upload_source(value)
        if isinstance(value, str):
            return self.get_dataset(value)
        return self.upload_dataset(value, labels=labels, targets=targets)

    # ranking and certification ------------------------------------------------------------
    def rank_models(
        self,
        models: Iterable[Any] | Mapping[str, Any],
        data: Mapping[str, Any] | Dataset | str | Any,
        labels: Any = None,
        targets: Any = None,
        *,
        layers: Mapping[Any, str] | None = None,
        reduce: str = "auto",
        max_features: int | None = None,
        patience: int | None = None,
        order: int | None = None,
        baselines: bool | str | Sequence[str] = False,
        batch_size: int | None = None,
        progress: bool = False,
        method: str | None = None,
        folds: int | None = None,
        **options: Any,
    ) -> RankingResult:
        """Rank models for a target dataset (dict of input arrays, one array, or a stored
        dataset); the result names each model as it was given.

        ``models`` are paths, bytes, stored models or ids (named by the path or id string,
        a stored model's name, else the id), or a mapping from the names to use to such
        models. ``layers`` maps a model (as given, by its name or its id) to the tensor to
        use instead of the head rule. Further keywords are index options (see "Options on
        each path" in docs/api.md), e.g. ``criterion`` or ``memory_budget_mb``.
        ``baselines``: ``True`` for LogME, LEEP, NCE and H-score, or the names of the
        transferability scores to compute (a list or a comma list; ``"all"`` for every one;
        docs/ranking-and-certification.md lists them). ``method``
        is ``soft_order`` (the classification default), ``folded`` or ``seed`` (Algorithm 2);
        ``folds`` the folded method's folds (5).
        """
        if isinstance(models, Mapping):
            given, names = list(models.values()), [str(k) for k in models]
        else:
            given, names = list(models), []
        stored = [self._model(m) for m in given]
        names = names or _unique([_name_of(g, m) for g, m in zip(given, stored, strict=True)])
        seen: dict[str, str] = {}
        for name, m in zip(names, stored, strict=True):
            if m.id in seen:
                raise ValueError(f"{seen[m.id]} and {name} are the same model (sha256 "
                                 f"{m.id[:12]}...); give each model once")
            seen[m.id] = name
        ds = self._dataset(data, labels, targets)
        req = analysis_pb2.StartRankingRequest(
            model_ids=[m.id for m in stored], dataset_id=ds.id, reduce=reduce,
            baselines=baselines is True, baseline_names=_baseline_names(baselines),
            batch_size=batch_size or 0,
            options=_options(None, options), method=method or "")
        if folds is not None:
            req.folds = folds
        for key, tensor in (layers or {}).items():
            req.layers[_which_model(key, given, stored, names)] = tensor
        for option, value in (("max_features", max_features), ("patience", patience),
                              ("order", order)):
            if value is not None:
                setattr(req, option, value)
        with _models_named(seen):
            job = Job.from_proto(self._call(self._analysis.StartRanking, req))
            result: RankingResult = self.wait(job, progress)
        return result.named(seen)

    def build_reference(
        self,
        model: Any,
        data: Mapping[str, Any] | Dataset | str | Any,
        labels: Any = None,
        targets: Any = None,
        *,
        layer: str | None = None,
        reduce: str = "auto",
        uncertainty: float = 0.0,
        batch_size: int | None = None,
        progress: bool = False,
        **options: Any,
    ) -> Reference:
        """Build a certification reference from a model and a reference set; return it
        (pass it, or its ``id``, to :meth:`certify`): the layer, the dataset-level
        guarantee. Further keywords are index options (``orders=[r]`` stores the guarantee
        at order r)."""
        stored = self._model(model)
        ds = self._dataset(data, labels, targets)
        req = analysis_pb2.BuildReferenceRequest(
            model_id=stored.id, dataset_id=ds.id, layer=layer or "", reduce=reduce,
            batch_size=batch_size or 0, uncertainty=uncertainty,
            options=_options(None, options))
        with _models_named({stored.id: _name_of(model, stored)}):
            job = Job.from_proto(self._call(self._analysis.BuildReference, req))
            reference: Reference = self.wait(job, progress)
        return reference

    def references(self, page_size: int = 0) -> list[Reference]:
        """The stored certification references, newest first (read in pages of
        ``page_size``, 0: the server's default)."""
        return [Reference.from_proto(r) for r in self._listing(
            self._analysis.ListReferences, analysis_pb2.ListReferencesRequest, "references",
            page_size)]

    def delete_reference(self, reference: str | Reference) -> None:
        self._call(self._analysis.DeleteReference,
                   analysis_pb2.DeleteReferenceRequest(id=_id(reference)))

    def _certify_request(self, reference: str | Reference, features: Any, inputs: Any,
                         uncertainty: float, order: int, mode: str
                         ) -> analysis_pb2.CertifyRequest:
        ref_id = str(reference["id"]) if isinstance(reference, Mapping) else _id(reference)
        req = analysis_pb2.CertifyRequest(reference_id=ref_id, uncertainty=uncertainty,
                                          order=order, mode=mode)
        if (features is None) == (inputs is None):
            raise ValueError("give exactly one of features (at the reference's layer) or "
                             "inputs (raw model inputs)")
        if features is not None:
            req.features.CopyFrom(codec.tensor(features))
        else:
            named = dict(inputs) if isinstance(inputs, Mapping) else {"inputs": inputs}
            for k, v in named.items():
                req.inputs.tensors[k].CopyFrom(codec.tensor(v))
        return req

    def certify(
        self,
        reference: str | Reference,
        features: Any = None,
        *,
        inputs: Any = None,
        uncertainty: float = 0.0,
        order: int = 1,
        mode: str = "conservative",
    ) -> CertifyResult:
        """Certify queries (features at the reference's layer, or raw model ``inputs``)."""
        req = self._certify_request(reference, features, inputs, uncertainty, order, mode)
        return CertifyResult.from_proto(self._call(self._analysis.Certify, req))

    def certify_stream(
        self,
        reference: str | Reference,
        batches: Iterable[Any],
        *,
        uncertainty: float = 0.0,
        order: int = 1,
        mode: str = "conservative",
    ) -> Iterator[CertifyResult]:
        """Certify a stream of feature batches over one bidirectional call, in order."""
        requests = (self._certify_request(reference, b, None, uncertainty, order, mode)
                    for b in batches)
        try:
            for msg in self._analysis.CertifyStream(requests, metadata=self._metadata):
                yield CertifyResult.from_proto(msg)
        except grpc.RpcError as exc:
            raise _wrap(exc) from None


def _is_dataset(value: Any) -> bool:
    """Whether ``value`` names a stored dataset (a Dataset, its message, or an id)."""
    return isinstance(value, (str, Dataset, datasets_pb2.Dataset))


def _stored_header(named: Mapping[str, Any], options: analysis_pb2.IndexOptions
                   ) -> analysis_pb2.ComputeIndicesHeader:
    """The header of a ComputeIndices call on stored datasets (ValueError naming the
    argument that does not fit that form)."""
    features, test = named["features"], named["test_features"]
    for name, value in (("features", features), ("test_features", test)):
        if value is not None and not _is_dataset(value):
            other = "test_features" if name == "features" else "features"
            raise ValueError(f"{other} is a stored dataset, {name} is not: give both as "
                             "stored datasets (a Dataset or its id) or both as arrays")
    given = [k for k in ("labels", "targets", "test_labels", "test_targets")
             if named[k] is not None]
    if given:
        raise ValueError(f"a stored dataset holds its own labels or targets; {', '.join(given)} "
                         "cannot be given with it")
    return analysis_pb2.ComputeIndicesHeader(
        options=options, dataset_id=_id(features),
        test_dataset_id=_id(test) if test is not None else "")


def _id(value: Any) -> str:
    """The id of a stored thing (a Model, Dataset, Reference or Job, or their message)."""
    return value if isinstance(value, str) else str(value.id)


def _name_of(given: Any, stored: Model) -> str:
    """The name a caller knows a model by: the path or id string given, a stored model's
    name, else (bytes, an onnx.ModelProto) its id."""
    if isinstance(given, (str, os.PathLike)):
        return os.fspath(given)
    if isinstance(given, (Model, models_pb2.Model)):
        return given.name or given.id
    return stored.id


@contextlib.contextmanager
def _models_named(names: Mapping[str, str]) -> Iterator[None]:
    """Errors inside name each model as the caller knows it (its path), not by its id."""
    try:
        yield
    except LayerscopeError as exc:
        details = exc.details
        for model_id, name in names.items():
            if name != model_id:
                details = details.replace(f"'{model_id}'", repr(name)).replace(model_id, name)
        raise LayerscopeError(exc.code, details) from None


def _unique(names: list[str]) -> list[str]:
    """``names`` with each repeated name made distinct by its position (``name #2``)."""
    counts = {n: names.count(n) for n in names}
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if counts[n] == 1 else f"{n} #{seen[n]}")
    return out


def _which_model(key: Any, given: list[Any], stored: list[Model], names: list[str]) -> str:
    """The id of the model that ``key`` of ``layers`` names: the model as given, its name
    or its id (ValueError naming the models when it is none of them)."""
    for g, m, name in zip(given, stored, names, strict=True):
        if key is g or (isinstance(key, (Model, models_pb2.Model)) and key.id == m.id):
            return m.id
        if isinstance(key, (str, os.PathLike)) and os.fspath(key) in (name, m.id, _text(g)):
            return m.id
        if isinstance(key, bytes) and isinstance(g, bytes) and key == g:
            return m.id
    shown = repr(key) if len(repr(key)) <= 80 else repr(key)[:77] + "..."
    raise ValueError(f"layers: {shown} is none of the models given; name one of {names}")


def _text(given: Any) -> str | None:
    return os.fspath(given) if isinstance(given, (str, os.PathLike)) else None


def _is_id(value: str) -> bool:
    return len(value) in (32, 64) and all(c in "0123456789abcdef" for c in value)


def _health(channel: grpc.Channel, timeout: float) -> int | None:
    """The health status of the server at the other end of ``channel`` (1: SERVING, 2:
    NOT_SERVING while it shuts down), or None when nothing answers. The request and response
    are written out (grpc.health.v1: an empty request, the status as field 1) so that the
    light client needs no grpc-health package."""
    check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                request_serializer=lambda b: b,
                                response_deserializer=lambda b: b)
    try:
        reply = check(b"", timeout=timeout)
    except grpc.RpcError:
        return None
    return reply[1] if len(reply) == 2 and reply[0] == 0x08 else 0


def _running_server(folder: Path, timeout: float, connect: Callable[[str], Client]
                    ) -> tuple[Announcement, Client] | None:
    """The announcement of a live, serving server holding ``folder``, if there is one, and a
    client of it (``connect(address)``: the connection that asked is the one kept). A
    server in the middle of shutting down is waited for (up to ``timeout`` seconds), so
    that the caller may start the next one."""
    info = read_announcement(folder)
    if info is None or exited(info.pid):
        return None
    client = connect(info.address)
    status = _health(client._channel, timeout=5.0)
    if status == 1:
        return info, client
    client.close()
    if holds_data_dir(folder) and is_server(info.pid):
        if status is None and info.warm:
            stop_server(folder, timeout=10.0)  # a warm server that no longer answers
        else:
            wait_exit(info.pid, timeout)  # shutting down: let it go first
    return None


def _unfit(info: Announcement, device: str | None) -> str | None:
    """Why a running server may not serve this client (None: it may)."""
    version, package = package_identity()
    if info.version != version or info.package != package:
        return (f"it runs layerscope {info.version or '(unknown)'} from "
                f"{info.package or '(unknown)'}, this is {version} from {package}")
    if device and device != info.device:
        return f"it runs with --device {info.device or 'auto'}, {device} was asked for"
    return None
def _baseline_names(baselines: bool | str | Sequence[str]) -> list[str]:
    """The names of ``baselines`` for the request (the server checks them)."""
    if isinstance(baselines, bool):
        return []
    items = baselines.split(",") if isinstance(baselines, str) else list(baselines)
    return [str(b).strip() for b in items if str(b).strip()]
