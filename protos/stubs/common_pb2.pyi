from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
    JOB_STATE_INTERRUPTED: _ClassVar[JobState]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
JOB_STATE_INTERRUPTED: JobState

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "dtype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("offset", "data")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class PerClassValues(_message.Message):
    __slots__ = ("by_label",)
    class ByLabelEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: float
        def __init__(self, key: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...
    BY_LABEL_FIELD_NUMBER: _ClassVar[int]
    by_label: _containers.ScalarMap[int, float]
    def __init__(self, by_label: _Optional[_Mapping[int, float]] = ...) -> None: ...

class IndexSet(_message.Message):
    __slots__ = ("n_samples", "si", "high_order_si", "soft_order_si", "anti_si", "center_si", "smi_linear", "smi_exp", "high_order_smi_linear", "high_order_smi_exp", "soft_order_smi_linear", "soft_order_smi_exp", "anti_smi_linear", "anti_smi_exp", "si_per_class", "high_order_si_per_class", "soft_order_si_per_class", "anti_si_per_class", "center_si_per_class", "per_sample")
    class HighOrderSiEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: float
        def __init__(self, key: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...
    class SoftOrderSiEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: float
        def __init__(self, key: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...
    class AntiSiEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: float
        def __init__(self, key: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...
    class HighOrderSmiLinearEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: float
        def __init__(self, key: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...
    class HighOrderSmiExpEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: float
        def __init__(self, key: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...
    class SoftOrderSmiLinearEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: float
        def __init__(self, key: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...
    class SoftOrderSmiExpEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: float
        def __init__(self, key: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...
    class AntiSmiLinearEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: float
        def __init__(self, key: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...
    class AntiSmiExpEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: float
        def __init__(self, key: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...
    class SiPerClassEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: float
        def __init__(self, key: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...
    class HighOrderSiPerClassEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: PerClassValues
        def __init__(self, key: _Optional[int] = ..., value: _Optional[_Union[PerClassValues, _Mapping]] = ...) -> None: ...
    class SoftOrderSiPerClassEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: PerClassValues
        def __init__(self, key: _Optional[int] = ..., value: _Optional[_Union[PerClassValues, _Mapping]] = ...) -> None: ...
    class AntiSiPerClassEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: PerClassValues
        def __init__(self, key: _Optional[int] = ..., value: _Optional[_Union[PerClassValues, _Mapping]] = ...) -> None: ...
    class CenterSiPerClassEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: float
        def __init__(self, key: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...
    class PerSampleEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    N_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SI_FIELD_NUMBER: _ClassVar[int]
    HIGH_ORDER_SI_FIELD_NUMBER: _ClassVar[int]
    SOFT_ORDER_SI_FIELD_NUMBER: _ClassVar[int]
    ANTI_SI_FIELD_NUMBER: _ClassVar[int]
    CENTER_SI_FIELD_NUMBER: _ClassVar[int]
    SMI_LINEAR_FIELD_NUMBER: _ClassVar[int]
    SMI_EXP_FIELD_NUMBER: _ClassVar[int]
    HIGH_ORDER_SMI_LINEAR_FIELD_NUMBER: _ClassVar[int]
    HIGH_ORDER_SMI_EXP_FIELD_NUMBER: _ClassVar[int]
    SOFT_ORDER_SMI_LINEAR_FIELD_NUMBER: _ClassVar[int]
    SOFT_ORDER_SMI_EXP_FIELD_NUMBER: _ClassVar[int]
    ANTI_SMI_LINEAR_FIELD_NUMBER: _ClassVar[int]
    ANTI_SMI_EXP_FIELD_NUMBER: _ClassVar[int]
    SI_PER_CLASS_FIELD_NUMBER: _ClassVar[int]
    HIGH_ORDER_SI_PER_CLASS_FIELD_NUMBER: _ClassVar[int]
    SOFT_ORDER_SI_PER_CLASS_FIELD_NUMBER: _ClassVar[int]
    ANTI_SI_PER_CLASS_FIELD_NUMBER: _ClassVar[int]
    CENTER_SI_PER_CLASS_FIELD_NUMBER: _ClassVar[int]
    PER_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    n_samples: int
    si: float
    high_order_si: _containers.ScalarMap[int, float]
    soft_order_si: _containers.ScalarMap[int, float]
    anti_si: _containers.ScalarMap[int, float]
    center_si: float
    smi_linear: float
    smi_exp: float
    high_order_smi_linear: _containers.ScalarMap[int, float]
    high_order_smi_exp: _containers.ScalarMap[int, float]
    soft_order_smi_linear: _containers.ScalarMap[int, float]
    soft_order_smi_exp: _containers.ScalarMap[int, float]
    anti_smi_linear: _containers.ScalarMap[int, float]
    anti_smi_exp: _containers.ScalarMap[int, float]
    si_per_class: _containers.ScalarMap[int, float]
    high_order_si_per_class: _containers.MessageMap[int, PerClassValues]
    soft_order_si_per_class: _containers.MessageMap[int, PerClassValues]
    anti_si_per_class: _containers.MessageMap[int, PerClassValues]
    center_si_per_class: _containers.ScalarMap[int, float]
    per_sample: _containers.MessageMap[str, Tensor]
    def __init__(self, n_samples: _Optional[int] = ..., si: _Optional[float] = ..., high_order_si: _Optional[_Mapping[int, float]] = ..., soft_order_si: _Optional[_Mapping[int, float]] = ..., anti_si: _Optional[_Mapping[int, float]] = ..., center_si: _Optional[float] = ..., smi_linear: _Optional[float] = ..., smi_exp: _Optional[float] = ..., high_order_smi_linear: _Optional[_Mapping[int, float]] = ..., high_order_smi_exp: _Optional[_Mapping[int, float]] = ..., soft_order_smi_linear: _Optional[_Mapping[int, float]] = ..., soft_order_smi_exp: _Optional[_Mapping[int, float]] = ..., anti_smi_linear: _Optional[_Mapping[int, float]] = ..., anti_smi_exp: _Optional[_Mapping[int, float]] = ..., si_per_class: _Optional[_Mapping[int, float]] = ..., high_order_si_per_class: _Optional[_Mapping[int, PerClassValues]] = ..., soft_order_si_per_class: _Optional[_Mapping[int, PerClassValues]] = ..., anti_si_per_class: _Optional[_Mapping[int, PerClassValues]] = ..., center_si_per_class: _Optional[_Mapping[int, float]] = ..., per_sample: _Optional[_Mapping[str, Tensor]] = ...) -> None: ...

class FeatureRanking(_message.Message):
    __slots__ = ("criterion", "order", "scores", "best_subset")
    CRITERION_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    BEST_SUBSET_FIELD_NUMBER: _ClassVar[int]
    criterion: str
    order: _containers.RepeatedScalarFieldContainer[int]
    scores: _containers.RepeatedScalarFieldContainer[float]
    best_subset: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, criterion: _Optional[str] = ..., order: _Optional[_Iterable[int]] = ..., scores: _Optional[_Iterable[float]] = ..., best_subset: _Optional[_Iterable[int]] = ...) -> None: ...

class IndicesResult(_message.Message):
    __slots__ = ("task", "n_features", "train", "cross", "single_feature_si", "single_feature_smi_linear", "single_feature_smi_exp", "feature_ranking", "classes", "warnings", "options_json")
    TASK_FIELD_NUMBER: _ClassVar[int]
    N_FEATURES_FIELD_NUMBER: _ClassVar[int]
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    CROSS_FIELD_NUMBER: _ClassVar[int]
    SINGLE_FEATURE_SI_FIELD_NUMBER: _ClassVar[int]
    SINGLE_FEATURE_SMI_LINEAR_FIELD_NUMBER: _ClassVar[int]
    SINGLE_FEATURE_SMI_EXP_FIELD_NUMBER: _ClassVar[int]
    FEATURE_RANKING_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_JSON_FIELD_NUMBER: _ClassVar[int]
    task: str
    n_features: int
    train: IndexSet
    cross: IndexSet
    single_feature_si: _containers.RepeatedScalarFieldContainer[float]
    single_feature_smi_linear: _containers.RepeatedScalarFieldContainer[float]
    single_feature_smi_exp: _containers.RepeatedScalarFieldContainer[float]
    feature_ranking: FeatureRanking
    classes: _containers.RepeatedScalarFieldContainer[int]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    options_json: str
    def __init__(self, task: _Optional[str] = ..., n_features: _Optional[int] = ..., train: _Optional[_Union[IndexSet, _Mapping]] = ..., cross: _Optional[_Union[IndexSet, _Mapping]] = ..., single_feature_si: _Optional[_Iterable[float]] = ..., single_feature_smi_linear: _Optional[_Iterable[float]] = ..., single_feature_smi_exp: _Optional[_Iterable[float]] = ..., feature_ranking: _Optional[_Union[FeatureRanking, _Mapping]] = ..., classes: _Optional[_Iterable[int]] = ..., warnings: _Optional[_Iterable[str]] = ..., options_json: _Optional[str] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("stage", "layer", "done", "total", "fraction", "elapsed_seconds", "remaining_seconds")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REMAINING_SECONDS_FIELD_NUMBER: _ClassVar[int]
    stage: str
    layer: str
    done: int
    total: int
    fraction: float
    elapsed_seconds: float
    remaining_seconds: float
    def __init__(self, stage: _Optional[str] = ..., layer: _Optional[str] = ..., done: _Optional[int] = ..., total: _Optional[int] = ..., fraction: _Optional[float] = ..., elapsed_seconds: _Optional[float] = ..., remaining_seconds: _Optional[float] = ...) -> None: ...
