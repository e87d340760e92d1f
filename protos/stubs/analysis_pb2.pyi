from . import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartCompressionRequest(_message.Message):
    __slots__ = ("model_id", "dataset_id", "test_dataset_id", "layers", "tolerance", "criterion", "select_features", "reduce", "batch_size", "name", "alpha")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    TEST_DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    CRITERION_FIELD_NUMBER: _ClassVar[int]
    SELECT_FEATURES_FIELD_NUMBER: _ClassVar[int]
    REDUCE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    dataset_id: str
    test_dataset_id: str
    layers: _containers.RepeatedScalarFieldContainer[str]
    tolerance: float
    criterion: str
    select_features: int
    reduce: str
    batch_size: int
    name: str
    alpha: float
    def __init__(self, model_id: _Optional[str] = ..., dataset_id: _Optional[str] = ..., test_dataset_id: _Optional[str] = ..., layers: _Optional[_Iterable[str]] = ..., tolerance: _Optional[float] = ..., criterion: _Optional[str] = ..., select_features: _Optional[int] = ..., reduce: _Optional[str] = ..., batch_size: _Optional[int] = ..., name: _Optional[str] = ..., alpha: _Optional[float] = ...) -> None: ...

class CompressionResult(_message.Message):
    __slots__ = ("model_id", "size_bytes", "task", "cut_layer", "original_score", "compressed_score", "report_json")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    CUT_LAYER_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    COMPRESSED_SCORE_FIELD_NUMBER: _ClassVar[int]
    REPORT_JSON_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    size_bytes: int
    task: str
    cut_layer: str
    original_score: float
    compressed_score: float
    report_json: str
    def __init__(self, model_id: _Optional[str] = ..., size_bytes: _Optional[int] = ..., task: _Optional[str] = ..., cut_layer: _Optional[str] = ..., original_score: _Optional[float] = ..., compressed_score: _Optional[float] = ..., report_json: _Optional[str] = ...) -> None: ...

class StartRankingRequest(_message.Message):
    __slots__ = ("model_ids", "dataset_id", "layers", "reduce", "max_features", "patience", "order", "baselines", "batch_size", "options", "baseline_names", "method", "folds")
    class LayersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_IDS_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    REDUCE_FIELD_NUMBER: _ClassVar[int]
    MAX_FEATURES_FIELD_NUMBER: _ClassVar[int]
    PATIENCE_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    BASELINES_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    BASELINE_NAMES_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    FOLDS_FIELD_NUMBER: _ClassVar[int]
    model_ids: _containers.RepeatedScalarFieldContainer[str]
    dataset_id: str
    layers: _containers.ScalarMap[str, str]
    reduce: str
    max_features: int
    patience: int
    order: int
    baselines: bool
    batch_size: int
    options: IndexOptions
    baseline_names: _containers.RepeatedScalarFieldContainer[str]
    method: str
    folds: int
    def __init__(self, model_ids: _Optional[_Iterable[str]] = ..., dataset_id: _Optional[str] = ..., layers: _Optional[_Mapping[str, str]] = ..., reduce: _Optional[str] = ..., max_features: _Optional[int] = ..., patience: _Optional[int] = ..., order: _Optional[int] = ..., baselines: _Optional[bool] = ..., batch_size: _Optional[int] = ..., options: _Optional[_Union[IndexOptions, _Mapping]] = ..., baseline_names: _Optional[_Iterable[str]] = ..., method: _Optional[str] = ..., folds: _Optional[int] = ...) -> None: ...

class ModelScore(_message.Message):
    __slots__ = ("model", "layer", "layer_rule", "reduction", "features", "index", "all_features", "selected", "subset_size", "selection_order", "selection_scores", "tie_breakers", "baselines", "seconds", "rank", "notes", "method", "scores")
    class TieBreakersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class BaselinesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class ScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    LAYER_RULE_FIELD_NUMBER: _ClassVar[int]
    REDUCTION_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ALL_FEATURES_FIELD_NUMBER: _ClassVar[int]
    SELECTED_FIELD_NUMBER: _ClassVar[int]
    SUBSET_SIZE_FIELD_NUMBER: _ClassVar[int]
    SELECTION_ORDER_FIELD_NUMBER: _ClassVar[int]
    SELECTION_SCORES_FIELD_NUMBER: _ClassVar[int]
    TIE_BREAKERS_FIELD_NUMBER: _ClassVar[int]
    BASELINES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    model: str
    layer: str
    layer_rule: str
    reduction: str
    features: int
    index: str
    all_features: float
    selected: float
    subset_size: int
    selection_order: _containers.RepeatedScalarFieldContainer[int]
    selection_scores: _containers.RepeatedScalarFieldContainer[float]
    tie_breakers: _containers.ScalarMap[str, float]
    baselines: _containers.ScalarMap[str, float]
    seconds: float
    rank: int
    notes: _containers.RepeatedScalarFieldContainer[str]
    method: str
    scores: _containers.ScalarMap[str, float]
    def __init__(self, model: _Optional[str] = ..., layer: _Optional[str] = ..., layer_rule: _Optional[str] = ..., reduction: _Optional[str] = ..., features: _Optional[int] = ..., index: _Optional[str] = ..., all_features: _Optional[float] = ..., selected: _Optional[float] = ..., subset_size: _Optional[int] = ..., selection_order: _Optional[_Iterable[int]] = ..., selection_scores: _Optional[_Iterable[float]] = ..., tie_breakers: _Optional[_Mapping[str, float]] = ..., baselines: _Optional[_Mapping[str, float]] = ..., seconds: _Optional[float] = ..., rank: _Optional[int] = ..., notes: _Optional[_Iterable[str]] = ..., method: _Optional[str] = ..., scores: _Optional[_Mapping[str, float]] = ...) -> None: ...

class RankingResult(_message.Message):
    __slots__ = ("task", "ranking", "models", "options_json")
    TASK_FIELD_NUMBER: _ClassVar[int]
    RANKING_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_JSON_FIELD_NUMBER: _ClassVar[int]
    task: str
    ranking: _containers.RepeatedScalarFieldContainer[str]
    models: _containers.RepeatedCompositeFieldContainer[ModelScore]
    options_json: str
    def __init__(self, task: _Optional[str] = ..., ranking: _Optional[_Iterable[str]] = ..., models: _Optional[_Iterable[_Union[ModelScore, _Mapping]]] = ..., options_json: _Optional[str] = ...) -> None: ...

class BuildReferenceRequest(_message.Message):
    __slots__ = ("model_id", "dataset_id", "layer", "reduce", "batch_size", "uncertainty", "options")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    REDUCE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    dataset_id: str
    layer: str
    reduce: str
    batch_size: int
    uncertainty: float
    options: IndexOptions
    def __init__(self, model_id: _Optional[str] = ..., dataset_id: _Optional[str] = ..., layer: _Optional[str] = ..., reduce: _Optional[str] = ..., batch_size: _Optional[int] = ..., uncertainty: _Optional[float] = ..., options: _Optional[_Union[IndexOptions, _Mapping]] = ...) -> None: ...

class ReferenceInfo(_message.Message):
    __slots__ = ("id", "model_id", "dataset_id", "layer", "layer_rule", "reduction", "task", "n_samples", "features", "summary_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    LAYER_RULE_FIELD_NUMBER: _ClassVar[int]
    REDUCTION_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    N_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    model_id: str
    dataset_id: str
    layer: str
    layer_rule: str
    reduction: str
    task: str
    n_samples: int
    features: int
    summary_json: str
    def __init__(self, id: _Optional[str] = ..., model_id: _Optional[str] = ..., dataset_id: _Optional[str] = ..., layer: _Optional[str] = ..., layer_rule: _Optional[str] = ..., reduction: _Optional[str] = ..., task: _Optional[str] = ..., n_samples: _Optional[int] = ..., features: _Optional[int] = ..., summary_json: _Optional[str] = ...) -> None: ...

class ListReferencesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListReferencesResponse(_message.Message):
    __slots__ = ("references", "next_page_token")
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    references: _containers.RepeatedCompositeFieldContainer[ReferenceInfo]
    next_page_token: str
    def __init__(self, references: _Optional[_Iterable[_Union[ReferenceInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteReferenceRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteReferenceResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CertifyRequest(_message.Message):
    __slots__ = ("reference_id", "features", "inputs", "uncertainty", "order", "mode")
    REFERENCE_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    reference_id: str
    features: _common_pb2.Tensor
    inputs: QueryInputs
    uncertainty: float
    order: int
    mode: str
    def __init__(self, reference_id: _Optional[str] = ..., features: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., inputs: _Optional[_Union[QueryInputs, _Mapping]] = ..., uncertainty: _Optional[float] = ..., order: _Optional[int] = ..., mode: _Optional[str] = ...) -> None: ...

class QueryInputs(_message.Message):
    __slots__ = ("tensors",)
    class TensorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ...) -> None: ...
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    tensors: _containers.MessageMap[str, _common_pb2.Tensor]
    def __init__(self, tensors: _Optional[_Mapping[str, _common_pb2.Tensor]] = ...) -> None: ...

class QueryResult(_message.Message):
    __slots__ = ("prediction", "nn_label", "dp", "dn", "confidence", "guarantee", "certified_radius", "error_bound", "mode", "neighbourhood_size", "nn_index")
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    NN_LABEL_FIELD_NUMBER: _ClassVar[int]
    DP_FIELD_NUMBER: _ClassVar[int]
    DN_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    GUARANTEE_FIELD_NUMBER: _ClassVar[int]
    CERTIFIED_RADIUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_BOUND_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOURHOOD_SIZE_FIELD_NUMBER: _ClassVar[int]
    NN_INDEX_FIELD_NUMBER: _ClassVar[int]
    prediction: int
    nn_label: int
    dp: float
    dn: float
    confidence: float
    guarantee: int
    certified_radius: float
    error_bound: float
    mode: str
    neighbourhood_size: int
    nn_index: int
    def __init__(self, prediction: _Optional[int] = ..., nn_label: _Optional[int] = ..., dp: _Optional[float] = ..., dn: _Optional[float] = ..., confidence: _Optional[float] = ..., guarantee: _Optional[int] = ..., certified_radius: _Optional[float] = ..., error_bound: _Optional[float] = ..., mode: _Optional[str] = ..., neighbourhood_size: _Optional[int] = ..., nn_index: _Optional[int] = ...) -> None: ...

class CertifyResponse(_message.Message):
    __slots__ = ("results", "warnings")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[QueryResult]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, results: _Optional[_Iterable[_Union[QueryResult, _Mapping]]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class IndexOptions(_message.Message):
    __slots__ = ("indices", "orders", "gamma", "normalize", "margin_cap", "max_features", "patience", "candidates", "criterion", "precision", "memory_budget_mb", "per_sample", "probe_model")
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
    PROBE_MODEL_FIELD_NUMBER: _ClassVar[int]
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
    probe_model: str
    def __init__(self, indices: _Optional[_Iterable[str]] = ..., orders: _Optional[_Iterable[int]] = ..., gamma: _Optional[float] = ..., normalize: _Optional[bool] = ..., margin_cap: _Optional[int] = ..., max_features: _Optional[int] = ..., patience: _Optional[int] = ..., candidates: _Optional[_Iterable[int]] = ..., criterion: _Optional[str] = ..., precision: _Optional[str] = ..., memory_budget_mb: _Optional[float] = ..., per_sample: _Optional[bool] = ..., probe_model: _Optional[str] = ...) -> None: ...

class ComputeIndicesHeader(_message.Message):
    __slots__ = ("options", "tensors", "dataset_id", "test_dataset_id")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    TEST_DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    options: IndexOptions
    tensors: _containers.RepeatedCompositeFieldContainer[_common_pb2.TensorSpec]
    dataset_id: str
    test_dataset_id: str
    def __init__(self, options: _Optional[_Union[IndexOptions, _Mapping]] = ..., tensors: _Optional[_Iterable[_Union[_common_pb2.TensorSpec, _Mapping]]] = ..., dataset_id: _Optional[str] = ..., test_dataset_id: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("train_accuracy", "test_accuracy", "train_r2", "test_r2", "alpha", "model", "alpha_grid", "alpha_selection")
    TRAIN_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    TEST_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    TRAIN_R2_FIELD_NUMBER: _ClassVar[int]
    TEST_R2_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ALPHA_GRID_FIELD_NUMBER: _ClassVar[int]
    ALPHA_SELECTION_FIELD_NUMBER: _ClassVar[int]
    train_accuracy: float
    test_accuracy: float
    train_r2: float
    test_r2: float
    alpha: float
    model: str
    alpha_grid: _containers.RepeatedScalarFieldContainer[float]
    alpha_selection: str
    def __init__(self, train_accuracy: _Optional[float] = ..., test_accuracy: _Optional[float] = ..., train_r2: _Optional[float] = ..., test_r2: _Optional[float] = ..., alpha: _Optional[float] = ..., model: _Optional[str] = ..., alpha_grid: _Optional[_Iterable[float]] = ..., alpha_selection: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("id", "kind", "state", "progress", "message", "created", "started", "finished", "request_json", "layerwise", "ranking", "reference", "compression")
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
    RANKING_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
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
    ranking: RankingResult
    reference: ReferenceInfo
    compression: CompressionResult
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.JobState, str]] = ..., progress: _Optional[_Union[_common_pb2.Progress, _Mapping]] = ..., message: _Optional[str] = ..., created: _Optional[float] = ..., started: _Optional[float] = ..., finished: _Optional[float] = ..., request_json: _Optional[str] = ..., layerwise: _Optional[_Union[LayerwiseResult, _Mapping]] = ..., ranking: _Optional[_Union[RankingResult, _Mapping]] = ..., reference: _Optional[_Union[ReferenceInfo, _Mapping]] = ..., compression: _Optional[_Union[CompressionResult, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...
