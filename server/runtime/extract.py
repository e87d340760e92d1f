"""Running a model in batches and keeping each layer's reduced activations.

One session runs the model with the chosen layers exposed as outputs. Each batch's outputs
are reduced at once and written into that layer's accumulator, so memory holds one batch
of raw activations plus the reduced accumulators, never every raw layer of every sample.
On a GPU the outputs are bound to device buffers (IOBinding) and reduced by CuPy without a
copy to the host; the accumulators live on the device.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from ...lazy import lazy_module
from ..cancellation import Cancellation, checker
from ..graph.expose import expose, mean_output
from ..graph.inspect import LayerInfo, ModelInfo, TensorInfo, largest_activation_bytes
from ..graph.load import session_input
from ..metrics.backend import resolve_backend
from .reduce import (
    DEFAULT_PROJECTION,
    Projector,
    Reduction,
    mean_axes,
    parse_reduction,
    reduce_batch,
    reduced_width,
)
from .session import CUDA, make_session

if TYPE_CHECKING:
    import onnx
else:
    onnx = lazy_module("onnx")

MIB = 1 << 20
Progress = Callable[[str, int, int], None]
#: The automatic batch never exceeds this many samples.
MAX_AUTO_BATCH = 1024
#: Copies of the largest activation alive while a batch runs: a node's input and output and
#: a tensor kept for a later node (a residual branch), plus one for the runtime's arena
#: rounding and the outputs' copies out of it.
LARGEST_COPIES = 4


def batch_bytes_per_sample(exposed: Sequence[int], largest: int) -> int:
    """Bytes one sample of a batch takes while the model runs: each exposed output twice
    (the runtime's buffer and the reduction's input) and :data:`LARGEST_COPIES` times the
    largest activation of the graph (exposed or not)."""
    return 2 * sum(exposed) + LARGEST_COPIES * largest


def auto_batch_size(budget_bytes: int, exposed: Sequence[int], largest: int) -> int:
    """The automatic batch: as many samples as fit a quarter of the extraction budget (the
    rest holds the accumulators and the model), at least 1 and at most MAX_AUTO_BATCH."""
    per = max(1, batch_bytes_per_sample(exposed, largest))
    return max(1, min(MAX_AUTO_BATCH, (budget_bytes // 4) // per))


class InputError(ValueError):
    """Input arrays that do not fit the model, naming the input, the value and the need."""


@dataclass
class LayerData:
    """A layer's reduced activations for the training set (and the test set)."""

    name: str
    op_type: str
    shape: tuple[int, ...]
    reduction: Reduction
    train: Any
    test: Any | None = None
    notes: list[str] = field(default_factory=list)
    device: str = "cpu"  # where onnxruntime ran the model
    providers: tuple[str, ...] = ()  # the providers onnxruntime really assigned

    @property
    def dims(self) -> int:
        return int(self.train.shape[1])


def _ort_input_dtype(t: TensorInfo) -> np.dtype:
    return np.dtype(t.dtype)


def model_feeds(
    info: ModelInfo, arrays: Mapping[str, Any], role: str = "data"
) -> tuple[dict[str, np.ndarray], int]:
    """Return ``{input name: array}`` for the model's inputs from ``arrays`` and the count.

    A single-input model may take its array under the key ``inputs``. Arrays are cast to
    the input's dtype when that is a safe cast of the same kind (float64 -> float32,
    int32 -> int64); static dimensions must match.
    """
    feeds: dict[str, np.ndarray] = {}
    n: int | None = None
    for t in info.inputs:
        key = t.name if t.name in arrays else None
        if key is None and len(info.inputs) == 1 and "inputs" in arrays:
            key = "inputs"
        if key is None:
            expected = ", ".join(repr(i.name) for i in info.inputs)
            hint = " (or 'inputs', as the model has one input)" if len(info.inputs) == 1 else ""
            found = ", ".join(repr(k) for k in arrays) or "nothing"
            raise InputError(
                f"{role}: no array for model input {t.name!r}; expected {expected}{hint}, "
                f"found {found}"
            )
        arr = np.asarray(arrays[key])
        want = _ort_input_dtype(t)
        if arr.dtype != want:
            same_kind = arr.dtype.kind in "fc" and want.kind in "fc" or (
                arr.dtype.kind in "iub" and want.kind in "iu"
            )
            if not same_kind or not np.can_cast(arr.dtype, want, casting="same_kind"):
                raise InputError(
                    f"{role}: input {t.name!r} has dtype {arr.dtype} but the model takes "
                    f"{want}"
                )
            arr = arr.astype(want)
        if t.shape is not None:
            if arr.ndim != len(t.shape):
                raise InputError(
                    f"{role}: input {t.name!r} has shape {arr.shape} (rank {arr.ndim}) but "
                    f"the model takes rank {len(t.shape)}: {list(t.shape)}"
                )
            for axis, (got, need) in enumerate(zip(arr.shape, t.shape, strict=True)):
                if axis > 0 and isinstance(need, int) and need > 0 and got != need:
                    raise InputError(
                        f"{role}: input {t.name!r} has shape {arr.shape} but the model "
                        f"takes {list(t.shape)} (axis {axis} must be {need})"
                    )
        if n is None:
            n = arr.shape[0]
        elif arr.shape[0] != n:
            raise InputError(
                f"{role}: input {t.name!r} has {arr.shape[0]} samples but others have {n}"
            )
        feeds[t.name] = arr
    if not n:
        raise InputError(f"{role}: the input arrays hold no samples")
    return feeds, int(n)


def mask_input(info: ModelInfo) -> str | None:
    """The model's attention-mask input: named ``attention_mask`` (or ending so, any case)
    and of rank 2 (batch, tokens); None when it has none."""
    for t in info.inputs:
        if t.name.lower().endswith("attention_mask") and t.shape is not None \
                and len(t.shape) == 2:
            return t.name
    return None


def _pad(arr: np.ndarray, n: int) -> np.ndarray:
    """``arr`` with its last sample repeated up to ``n`` samples (for fixed-batch models)."""
    if len(arr) >= n:
        return arr
    return np.concatenate([arr, np.repeat(arr[-1:], n - len(arr), axis=0)])


def _fixed_batch(info: ModelInfo) -> int | None:
    for t in info.inputs:
        if t.shape and isinstance(t.shape[0], int) and t.shape[0] > 0:
            return int(t.shape[0])
    return None


class _Runner:
    """Runs one batch and returns the requested outputs as arrays of the chosen backend.

    Outputs stay on the GPU (IOBinding, no host copy) only when the session really runs on
    CUDA and the array module is a GPU one; otherwise the model runs where onnxruntime put
    it and its host outputs are moved to ``xp`` (``xp.asarray``), never handed over as
    NumPy arrays. Each run can be terminated by ``cancel`` while it is under way.
    """

    def __init__(self, session: Any, names: list[str], xp: ModuleType,
                 cancel: Cancellation) -> None:
        self.session, self.names, self.xp = session, names, xp
        self.cancel = cancel
        self.providers = tuple(session.get_providers())
        self.device = "gpu" if CUDA in self.providers else "cpu"
        self.on_device = self.device == "gpu" and xp is not np

    def __call__(self, feed: dict[str, np.ndarray]) -> list[Any]:
        with self.cancel.run_options() as run:
            return self._run(feed, run)

    def _run(self, feed: dict[str, np.ndarray], run: Any) -> list[Any]:
        if not self.on_device:
            outs = self.session.run(self.names, feed, run)
            return [self.xp.asarray(np.asarray(o)) for o in outs]
        # Device path: outputs stay on the GPU and are copied by CuPy without a host copy.
        binding = self.session.io_binding()
        for name, arr in feed.items():
            binding.bind_cpu_input(name, arr)
        for name in self.names:
            binding.bind_output(name, "cuda")
        self.session.run_with_iobinding(binding, run)
        binding.synchronize_outputs()  # onnxruntime's stream is done writing them
        values = binding.get_outputs()
        arrays = [ort_value_to_xp(self.xp, v) for v in values]
        # The copies run on CuPy's stream: the OrtValues (``values``) stay referenced until
        # they are done, as onnxruntime frees or reuses their buffers afterwards.
        self.xp.cuda.get_current_stream().synchronize()
        del values
        return arrays


_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16",
    "tensor(int8)": "int8", "tensor(uint64)": "uint64", "tensor(uint32)": "uint32",
    "tensor(uint16)": "uint16", "tensor(uint8)": "uint8", "tensor(bool)": "bool",
}


class ExtractionStats:
    """Samples the server has run through models and the seconds it took, since start (the
    metrics endpoint's counters; thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.samples = 0
        self.seconds = 0.0
        self.last_rate: float | None = None  # samples per second of the latest set

    def record(self, samples: int, seconds: float) -> None:
        with self._lock:
            self.samples += samples
            self.seconds += seconds
            if seconds > 0:
                self.last_rate = samples / seconds

    def snapshot(self) -> tuple[int, float, float | None]:
        """(samples, seconds, samples per second of the latest set)."""
        with self._lock:
            return self.samples, self.seconds, self.last_rate


EXTRACTION = ExtractionStats()


def ort_value_to_xp(xp: ModuleType, value: Any) -> Any:
    """Return a copy of an OrtValue's device buffer as an ``xp`` array of its own dtype.

    The buffer is read with the element size of its real type; a type NumPy cannot hold
    (strings, bfloat16, float8) is refused by name. The copy is asynchronous on CuPy's
    current stream: the caller keeps ``value`` alive until that stream is synchronized.
    """
    kind = value.data_type()
    if kind not in _ORT_TYPES:
        raise InputError(f"a layer's output has onnxruntime type {kind}, which cannot be "
                         f"analysed; expected one of {', '.join(sorted(_ORT_TYPES))}")
    dtype = np.dtype(_ORT_TYPES[kind])
    shape = tuple(int(s) for s in value.shape())
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    mem = xp.cuda.UnownedMemory(value.data_ptr(), size, value)
    arr = xp.ndarray(shape, dtype=dtype, memptr=xp.cuda.MemoryPointer(mem, 0))
    return arr.copy()  # the OrtValue's buffer is reused by the next run


def ran_on(extracted: Sequence[LayerData], device: str | None) -> dict[str, Any]:
    """Return what really ran, for a result's options: ``device`` (the index engine's),
    ``model_device`` and ``providers`` (onnxruntime's, as the session assigned them)."""
    first = extracted[0] if extracted else None
    return {
        "device": resolve_backend(device).device,
        "model_device": first.device if first is not None else None,
        "providers": list(first.providers) if first is not None else [],
    }


def _prepare(
    model: onnx.ModelProto,
    info: ModelInfo,
    layers: Sequence[LayerInfo],
    sets: Sequence[Mapping[str, Any]],
    reduce: str | Reduction | Mapping[str, str | Reduction],
    batch_size: int | None,
    memory_budget_mb: float,
    device: str | None,
    cancel: Cancellation | None,
    projection_seed: int,
    allocate: bool = True,
) -> _Prepared:
    """Validate, open the session, probe the shapes, decide batch size and reductions."""
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) != batch_size
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be an integer >= 1 (or None for auto); got "
                         f"{batch_size!r}")
    if not (isinstance(memory_budget_mb, (int, float)) and math.isfinite(memory_budget_mb)
            and memory_budget_mb > 0):
        raise ValueError(f"memory_budget_mb must be a finite number > 0; got "
                         f"{memory_budget_mb!r}")
    xp = resolve_backend(device).xp
    feeds = [model_feeds(info, s, role) for s, role in zip(sets, ("data", "test"), strict=False)]
    names = [la.name for la in layers]
    requested = [
        parse_reduction(reduce.get(la.name, "auto") if isinstance(reduce, Mapping) else reduce)
        for la in layers
    ]
    # `mean` of a tensor of known rank runs in the graph (a ReduceMean node): the runtime
    # then hands over one value per channel instead of the whole activation. A sequence
    # of a model with an attention mask is averaged over its unmasked positions, here.
    mask_name = mask_input(info)
    means = {
        la.name: mean_axes(len(la.shape), la.channels_first)
        for la, red in zip(layers, requested, strict=True)
        if red.kind == "mean" and la.shape is not None and len(la.shape) >= 3
        and not (mask_name and len(la.shape) == 3 and not la.channels_first)
    }
    outputs = [mean_output(n) if n in means else n for n in names]
    # Asked with the caller's device (auto/cpu/gpu), not the array module's: plain
    # onnxruntime beside CuPy runs the model on the CPU in auto mode.
    model_bytes, folder = session_input(expose(model, names, means))
    session = make_session(model_bytes, device=device, external_folder=folder)
    del model_bytes
    runner = _Runner(session, outputs, xp, checker(cancel))
    budget = int(memory_budget_mb * MIB)
    fixed = _fixed_batch(info)

    # A first small batch tells the real activation shapes (symbolic dims resolved).
    first_feed, _ = feeds[0]
    probe_n = fixed or min(feeds[0][1], 4)
    probe = runner({k: _pad(v[:probe_n], probe_n) for k, v in first_feed.items()})
    shapes = [tuple(int(d) for d in p.shape) for p in probe]
    for la, shp in zip(layers, shapes, strict=True):
        if len(shp) == 0 or shp[0] != probe_n:
            raise InputError(
                f"layer {la.name!r} has shape {list(shp)} for a batch of {probe_n}: its first "
                "axis is not the batch axis, so it cannot be analysed per sample"
            )
    per_sample = [int(np.prod(s[1:], dtype=np.int64)) * 4 for s in shapes]
    if batch_size is None:
        largest = largest_activation_bytes(
            model, info, {k: tuple(int(d) for d in v.shape[1:]) for k, v in first_feed.items()})
        batch_size = auto_batch_size(budget, per_sample, max(largest, *per_sample))
    if fixed:
        batch_size = fixed
    total = sum(n for _, n in feeds)
    acc_budget = budget // 2 // max(1, len(layers))

    out: list[LayerData] = []
    projectors: list[Projector | None] = []
    for la, shp, red in zip(layers, shapes, requested, strict=True):
        notes: list[str] = []
        if red.kind == "auto":
            full = int(np.prod(shp[1:], dtype=np.int64))
            if total * full * 4 <= acc_budget:
                red = Reduction("flatten")
            else:
                width = int(max(1, min(DEFAULT_PROJECTION, acc_budget // (4 * total))))
                red = Reduction("project", width, projection_seed)
                notes.append(
                    f"auto: flattening {full} values x {total} samples exceeds this layer's "
                    f"share of the memory budget ({acc_budget // MIB} MiB); projected to "
                    f"{width} dims (relative std of squared distances about "
                    f"{math.sqrt(2.0 / width):.3f})"
                )
        elif red.kind == "project":
            full = int(np.prod(shp[1:], dtype=np.int64))
            if red.width is not None and red.width >= full:
                # a projection to as many dims as the layer has, or more, would only widen it
                notes.append(f"project:{red.width}: the layer has {full} values per sample; "
                             "taken as it is (flatten), not widened")
                red = Reduction("flatten")
            else:
                red = Reduction("project", red.width, projection_seed)
        if red.kind == "first_token" and (len(shp) > 3 or (len(shp) == 3
                                                          and la.channels_first)):
            raise InputError(
                f"layer {la.name!r}: reduce 'first_token' takes position 0 of a sequence "
                f"(batch, tokens, features); this tensor has rank {len(shp)} (shape "
                f"{list(shp)}, channels first), where it would take channel 0: use mean, "
                "flatten or project:N for it")
        if red.kind == "first_token" and len(shp) < 3:
            # A (batch, features) tensor (a classifier's output, say) has no token axis:
            # it is taken as it is, and the row says so.
            notes.append(f"first_token: shape {list(shp[1:])} has no token axis; taken as "
                         "it is (flatten)")
            red = Reduction("flatten")
        width = reduced_width(shp, red, la.channels_first)
        projectors.append(
            Projector(xp, int(np.prod(shp[1:], dtype=np.int64)), width, red.seed)
            if red.kind == "project" else None
        )
        accs = [xp.empty((n if allocate else 0, width), dtype=xp.float32)
                for _, n in feeds]
        raw_shape = shp[1:]
        if la.name in means and la.shape is not None:  # report the activation's own shape
            raw_shape = tuple(d if isinstance(d, int) else -1 for d in la.shape[1:])
        out.append(LayerData(la.name, la.op_type, raw_shape, red, accs[0],
                             accs[1] if len(accs) > 1 else None, notes, runner.device,
                             runner.providers))

    return _Prepared(xp, feeds, runner, batch_size, fixed, out, projectors, mask_name)


@dataclass
class ExtractionPlan:
    """What :func:`extract` decides before its first batch: the batch size, each layer's
    resolved reduction (never ``auto``), its notes and activation shape. A cluster cuts the
    samples at these batch boundaries so that every task runs the local batches."""

    batch_size: int
    reductions: dict[str, Reduction]
    notes: dict[str, list[str]]
    shapes: list[tuple[int, ...]]


@dataclass
class _Prepared:
    xp: ModuleType
    feeds: list[tuple[dict[str, np.ndarray], int]]
    runner: _Runner
    batch_size: int
    fixed: int | None
    out: list[LayerData]
    projectors: list[Projector | None]
    mask_name: str | None  # the attention-mask input a masked mean reads


def plan_extraction(
    model: onnx.ModelProto,
    info: ModelInfo,
    layers: Sequence[LayerInfo],
    sets: Sequence[Mapping[str, Any]],
    *,
    reduce: str | Reduction | Mapping[str, str | Reduction] = "auto",
    batch_size: int | None = None,
    memory_budget_mb: float = 1024.0,
    projection_seed: int = 0,
) -> ExtractionPlan:
    """Return the plan :func:`extract` follows for these arguments (one probe batch runs
    here, on the CPU)."""
    p = _prepare(model, info, layers, sets, reduce, batch_size, memory_budget_mb, "cpu",
                 None, projection_seed, allocate=False)
    return ExtractionPlan(p.batch_size, {d.name: d.reduction for d in p.out},
                          {d.name: list(d.notes) for d in p.out},
                          [d.shape for d in p.out])


def extract(
    model: onnx.ModelProto,
    info: ModelInfo,
    layers: Sequence[LayerInfo],
    sets: Sequence[Mapping[str, Any]],
    *,
    reduce: str | Reduction | Mapping[str, str | Reduction] = "auto",
    batch_size: int | None = None,
    memory_budget_mb: float = 1024.0,
    device: str | None = None,
    progress: Progress | None = None,
    cancel: Cancellation | None = None,
    projection_seed: int = 0,
) -> list[LayerData]:
    """Return each layer's reduced activations for each set of inputs.

    ``sets`` is ``[train]`` or ``[train, test]``, each a mapping of input name to array.
    ``reduce`` is one reduction for all layers or a mapping ``{layer name: reduction}``
    (missing names take ``"auto"``). The same projection serves train and test.
    ``cancel`` stops the work between batches and terminates a model run under way
    (:class:`~layerscope.server.cancellation.Stopped` is raised).
    """
    p = _prepare(model, info, layers, sets, reduce, batch_size, memory_budget_mb, device,
                 cancel, projection_seed)
    xp, feeds, runner, batch_size, fixed, out, projectors, mask_name = (
        p.xp, p.feeds, p.runner, p.batch_size, p.fixed, p.out, p.projectors, p.mask_name)
    for set_index, (feed, n) in enumerate(feeds):
        stage = "extract:" + ("train" if set_index == 0 else "test")
        nb = math.ceil(n / batch_size)
        started = time.perf_counter()
        for b in range(nb):
            lo, hi = b * batch_size, min(n, (b + 1) * batch_size)
            batch = {k: v[lo:hi] for k, v in feed.items()}
            pad = fixed - (hi - lo) if fixed else 0  # a fixed-batch model: pad the last one
            if fixed and pad:
                batch = {k: _pad(v, fixed) for k, v in batch.items()}
            outs = runner(batch)
            mask = xp.asarray(feed[mask_name][lo:hi]) if mask_name else None
            for data, proj, la, raw in zip(out, projectors, layers, outs, strict=True):
                reduced = reduce_batch(xp, raw[: hi - lo] if pad else raw, data.reduction,
                                       la.channels_first, proj, mask)
                target: Any = data.train if set_index == 0 else data.test
                target[lo:hi] = reduced
            if progress is not None:
                progress(stage, b + 1, nb)
        EXTRACTION.record(n, time.perf_counter() - started)
    return out
