from . import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IndexOptions(_message.Message):
    __slots__ = ("indices", "orders", "gamma", "normalize", "margin_cap", "max_features", "patience", "candidates", "criterion", "precision", "memory_budget_mb", "per_sample")
    INDICES_FIELD_NUMBER: _ClassVar[int]
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    GAMMA_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    MARGIN_CAP_FIELD_NUMBER: _ClassVar[int]
    MAX_FEATURES_FIELD_NUMBER: _ClassVar[int]
    PATIENCE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    CRITERION_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BUDGET_MB_FIELD_NUMBER: _ClassVar[int]
    PER_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    indices: _containers.RepeatedScalarFieldContainer[str]
    orders: _containers.RepeatedScalarFieldContainer[int]
    gamma: float
    normalize: bool
    margin_cap: int
    max_features: int
    patience: int
    candidates: _containers.RepeatedScalarFieldContainer[int]
    criterion: str
    precision: str
    memory_budget_mb: float
    per_sample: bool
    def __init__(self, indices: _Optional[_Iterable[str]] = ..., orders: _Optional[_Iterable[int]] = ..., gamma: _Optional[float] = ..., normalize: _Optional[bool] = ..., margin_cap: _Optional[int] = ..., max_features: _Optional[int] = ..., patience: _Optional[int] = ..., candidates: _Optional[_Iterable[int]] = ..., criterion: _Optional[str] = ..., precision: _Optional[str] = ..., memory_budget_mb: _Optional[float] = ..., per_sample: _Optional[bool] = ...) -> None: ...

class ComputeIndicesHeader(_message.Message):
    __slots__ = ("options", "tensors")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    options: IndexOptions
    tensors: _containers.RepeatedCompositeFieldContainer[_common_pb2.TensorSpec]
    def __init__(self, options: _Optional[_Union[IndexOptions, _Mapping]] = ..., tensors: _Optional[_Iterable[_Union[_common_pb2.TensorSpec, _Mapping]]] = ...) -> None: ...

class ComputeIndicesRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: ComputeIndicesHeader
    chunk: _common_pb2.Chunk
    def __init__(self, header: _Optional[_Union[ComputeIndicesHeader, _Mapping]] = ..., chunk: _Optional[_Union[_common_pb2.Chunk, _Mapping]] = ...) -> None: ...

class StartLayerAnalysisRequest(_message.Message):
    __slots__ = ("model_id", "dataset_id", "test_dataset_id", "layers", "reduce", "options", "probe", "batch_size", "tolerance")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    TEST_DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    REDUCE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    PROBE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    dataset_id: str
    test_dataset_id: str
    layers: _containers.RepeatedScalarFieldContainer[str]
    reduce: str
    options: IndexOptions
    probe: bool
    batch_size: int
    tolerance: float
    def __init__(self, model_id: _Optional[str] = ..., dataset_id: _Optional[str] = ..., test_dataset_id: _Optional[str] = ..., layers: _Optional[_Iterable[str]] = ..., reduce: _Optional[str] = ..., options: _Optional[_Union[IndexOptions, _Mapping]] = ..., probe: _Optional[bool] = ..., batch_size: _Optional[int] = ..., tolerance: _Optional[float] = ...) -> None: ...

class Probe(_message.Message):
    __slots__ = ("train_accuracy", "test_accuracy", "train_r2", "test_r2", "alpha")
    TRAIN_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    TEST_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    TRAIN_R2_FIELD_NUMBER: _ClassVar[int]
    TEST_R2_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    train_accuracy: float
    test_accuracy: float
    train_r2: float
    test_r2: float
    alpha: float
    def __init__(self, train_accuracy: _Optional[float] = ..., test_accuracy: _Optional[float] = ..., train_r2: _Optional[float] = ..., test_r2: _Optional[float] = ..., alpha: _Optional[float] = ...) -> None: ...

class LayerRow(_message.Message):
    __slots__ = ("name", "kind", "op_type", "shape", "reduction", "dims", "values", "cross", "probe", "notes", "error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    OP_TYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    REDUCTION_FIELD_NUMBER: _ClassVar[int]
    DIMS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    CROSS_FIELD_NUMBER: _ClassVar[int]
    PROBE_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    op_type: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    reduction: str
    dims: int
    values: _common_pb2.IndexSet
    cross: _common_pb2.IndexSet
    probe: Probe
    notes: _containers.RepeatedScalarFieldContainer[str]
    error: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., op_type: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., reduction: _Optional[str] = ..., dims: _Optional[int] = ..., values: _Optional[_Union[_common_pb2.IndexSet, _Mapping]] = ..., cross: _Optional[_Union[_common_pb2.IndexSet, _Mapping]] = ..., probe: _Optional[_Union[Probe, _Mapping]] = ..., notes: _Optional[_Iterable[str]] = ..., error: _Optional[str] = ...) -> None: ...

class Plateau(_message.Message):
    __slots__ = ("index", "position", "layer", "value", "tolerance")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    index: str
    position: int
    layer: str
    value: float
    tolerance: float
    def __init__(self, index: _Optional[str] = ..., position: _Optional[int] = ..., layer: _Optional[str] = ..., value: _Optional[float] = ..., tolerance: _Optional[float] = ...) -> None: ...

class LayerwiseResult(_message.Message):
    __slots__ = ("task", "layers", "plateau", "warnings", "options_json", "model_json")
    TASK_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    PLATEAU_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_JSON_FIELD_NUMBER: _ClassVar[int]
    MODEL_JSON_FIELD_NUMBER: _ClassVar[int]
    task: str
    layers: _containers.RepeatedCompositeFieldContainer[LayerRow]
    plateau: Plateau
    warnings: _containers.RepeatedScalarFieldContainer[str]
    options_json: str
    model_json: str
    def __init__(self, task: _Optional[str] = ..., layers: _Optional[_Iterable[_Union[LayerRow, _Mapping]]] = ..., plateau: _Optional[_Union[Plateau, _Mapping]] = ..., warnings: _Optional[_Iterable[str]] = ..., options_json: _Optional[str] = ..., model_json: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "kind", "state", "progress", "message", "created", "started", "finished", "request_json", "layerwise")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    REQUEST_JSON_FIELD_NUMBER: _ClassVar[int]
    LAYERWISE_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    state: _common_pb2.JobState
    progress: _common_pb2.Progress
    message: str
    created: float
    started: float
    finished: float
    request_json: str
    layerwise: LayerwiseResult
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.JobState, str]] = ..., progress: _Optional[_Union[_common_pb2.Progress, _Mapping]] = ..., message: _Optional[str] = ..., created: _Optional[float] = ..., started: _Optional[float] = ..., finished: _Optional[float] = ..., request_json: _Optional[str] = ..., layerwise: _Optional[_Union[LayerwiseResult, _Mapping]] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...
