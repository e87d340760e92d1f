"""Keras 3 models and TensorFlow functions to ONNX with tf2onnx (``layerscope[tensorflow]``).

Every export converts a ``tf.function`` (``[None, ...]`` input signatures named after the
inputs, returning ``{output name: tensor}``) with ``tf2onnx.convert.from_function``: the
batch axis stays dynamic and the names are ours. ``.keras`` files load with
``safe_mode=True``, SavedModel folders through their serving signature; graphs with ops
that touch files or call Python are refused. Why this route, and the known limits:
docs/exporters.md.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .base import DEFAULT_TOLERANCE, MAX_OPSET, ExportReport, finish, require
from .inputs import as_input_list, input_names_of

MIN_OPSET = 13
TF_NAME = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_.\-/]*$")  # what TensorFlow accepts as a name
AUTO_NAME = re.compile(r"^(keras_tensor|input_layer|args?)(_\d+)*$")  # names nobody chose
# Ops that touch files, call back into Python or print: refused in graphs we did not build.
UNSAFE_OPS = frozenset({
    "ReadFile", "WriteFile", "MatchingFiles", "PyFunc", "PyFuncStateless", "EagerPyFunc",
    "Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2", "RestoreSlice",
    "MergeV2Checkpoints", "ShardedFilename", "Print", "PrintV2", "ImmutableConst",
    "FixedLengthRecordReaderV2", "TFRecordReaderV2", "TextLineReaderV2", "WholeFileReaderV2",
    "ReaderReadV2", "LoadAndRemapMatrix", "InitializeTableFromTextFile",
    "InitializeTableFromTextFileV2", "TFRecordDataset", "TFRecordDatasetV2",
    "FixedLengthRecordDataset", "FixedLengthRecordDatasetV2", "TextLineDataset",
    "SaveDataset", "SaveDatasetV2", "LoadDataset", "DebugIdentity", "DebugIdentityV2",
    "DebugIdentityV3", "SummaryWriter", "CreateSummaryFileWriter", "WriteSummary",
})


def _tensorflow() -> tuple[Any, Any]:
    """Import TensorFlow and tf2onnx quietly, or raise MissingExtra."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tf = require("tensorflow", "tensorflow")
        tf2onnx = require("tf2onnx", "tensorflow")
    return tf, tf2onnx


@contextmanager
def _quiet() -> Iterator[None]:
    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _check_opset(opset: int | None) -> int:
    target = int(opset or MAX_OPSET)
    if not MIN_OPSET <= target <= MAX_OPSET:
        raise ValueError(f"opset must be between {MIN_OPSET} and {MAX_OPSET}; got {target}")
    return target


def _check_names(names: Sequence[str], what: str) -> list[str]:
    out = [str(n) for n in names]
    for n in out:
        if not TF_NAME.match(n):
            raise ValueError(f"{what} name {n!r} is not a valid TensorFlow name (letters, "
                             "digits, '_', '.', '-', '/'; not starting with '_', '-' or '/')")
    if len(set(out)) != len(out):
        raise ValueError(f"{what} names must be unique; got {out}")
    return out


def _clean(name: str) -> str:
    """A TensorFlow-valid form of a framework's own name ('' when there is none)."""
    name = name.split(":")[0]
    if AUTO_NAME.match(name):
        return ""
    name = re.sub(r"[^A-Za-z0-9_.\-/]", "_", name)
    return name if TF_NAME.match(name) else ""


def _flatten(out: Any) -> tuple[list[str] | None, list[Any]]:
    """(dict keys or None, tensors) of a model's output structure."""
    if isinstance(out, Mapping):
        return [str(k) for k in out], list(out.values())
    if isinstance(out, (list, tuple)):
        return None, list(out)
    return None, [out]


def _output_names(keys: list[str] | None, count: int, given: Sequence[str] | None,
                  default: Sequence[str] | None) -> list[str]:
    if given is not None:
        if len(given) != count:
            raise ValueError(f"{len(given)} output_names for {count} model outputs")
        return _check_names(given, "output")
    if keys is not None:
        return _check_names([_clean(k) or f"output{i}" for i, k in enumerate(keys)], "output")
    if default is not None and len(default) == count:
        names = [_clean(n) or f"output{i}" for i, n in enumerate(default)]
        if len(set(names)) == count:
            return names
    return ["output"] if count == 1 else [f"output{i}" for i in range(count)]


def _name_batch(proto: onnx.ModelProto, batched: set[str]) -> None:
    """Call the symbolic first axis of the batched inputs and outputs ``batch``."""
    g = proto.graph
    symbols = set()
    for vi in [*g.input, *g.output]:
        dims = vi.type.tensor_type.shape.dim
        if vi.name in batched and dims and dims[0].dim_param:
            symbols.add(dims[0].dim_param)
        elif vi.name in batched and dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"
    for vi in [*g.input, *g.output, *g.value_info]:
        for d in vi.type.tensor_type.shape.dim:
            if d.dim_param in symbols:
                d.dim_param = "batch"


def _graph_ops(concrete: Any) -> set[str]:
    """Every op type in a concrete function's graph and the functions it calls."""
    graph_def = concrete.graph.as_graph_def()
    ops = {n.op for n in graph_def.node}
    for fdef in graph_def.library.function:
        ops.update(n.op for n in fdef.node_def)
    return ops


def _specs(tf: Any, arrays: list[np.ndarray], names: list[str]) -> list[Any]:
    return [tf.TensorSpec([None, *a.shape[1:]], tf.as_dtype(a.dtype), name=n)
            for a, n in zip(arrays, names, strict=True)]


def _trace(call: Callable[..., Any], specs: list[Any], check_ops: bool) -> Any:
    """The concrete function of ``call`` on ``specs`` (dynamic batch axis); with
    ``check_ops``, refuse graphs with ops in :data:`UNSAFE_OPS` before anything runs."""
    tf, _ = _tensorflow()
    fn = tf.function(call, input_signature=specs, autograph=False)
    with _quiet():
        try:
            concrete = fn.get_concrete_function()
        except Exception as exc:
            raise ValueError(f"cannot trace the model as a tf.function on inputs "
                             f"{[s.shape.as_list() for s in specs]} (the batch axis "
                             f"dynamic): {exc}") from exc
    if check_ops:
        bad = sorted(_graph_ops(concrete) & UNSAFE_OPS)
        if bad:
            raise ValueError(f"the graph uses ops that touch files or call Python, refused: "
                             f"{', '.join(bad)}")
    return concrete


def _convert(call: Callable[..., Any], specs: list[Any], onames: list[str],
             opset: int) -> onnx.ModelProto:
    """Convert ``call`` (positional tensors -> flat list of tensors) with tf2onnx, the
    outputs named ``onames``."""
    tf, tf2onnx = _tensorflow()

    def named(*args: Any) -> dict[str, Any]:
        return dict(zip(onames, call(*args), strict=True))

    fn = tf.function(named, input_signature=specs, autograph=False)
    with _quiet():
        proto, _ = tf2onnx.convert.from_function(fn, input_signature=specs, opset=opset)
    return proto


def _finish(proto: onnx.ModelProto, path: str | os.PathLike[str], framework: str,
            names: list[str], arrays: list[np.ndarray], expected: dict[str, np.ndarray],
            tolerance: float, notes: list[str]) -> ExportReport:
    got_in = [i.name for i in proto.graph.input]
    got_out = [o.name for o in proto.graph.output]
    if set(got_in) != set(names) or set(got_out) != set(expected):
        raise ValueError(f"tf2onnx named the inputs {got_in} and outputs {got_out}; expected "
                         f"{names} and {list(expected)}")
    n = len(arrays[0])
    batched = set(names) | {k for k, v in expected.items() if v.ndim and v.shape[0] == n}
    _name_batch(proto, batched)
    feeds = dict(zip(names, arrays, strict=True))
    return finish(proto, path, framework, feeds, expected, tolerance, notes)


def _default_input_names(sample_inputs: Any, count: int, own: Sequence[str]) -> list[str]:
    fallback = ["input"] if count == 1 else [f"input{i}" for i in range(count)]
    if len(own) == count and all(own) and len(set(own)) == count:
        fallback = list(own)
    return input_names_of(sample_inputs, fallback)


def _auto_layer_name(layer: Any) -> bool:
    """Whether a layer has the name Keras made up (``dense``, ``dense_3``, ``conv2d_1``)."""
    cls = type(layer).__name__
    snake = re.sub(r"([a-z])([A-Z])", r"\1_\2", re.sub(r"(.)([A-Z][a-z0-9]+)", r"\1_\2", cls))
    return re.fullmatch(rf"{re.escape(snake.lower())}(_\d+)?", str(layer.name)) is not None


def _output_layer_names(keras: Any, model: Any, count: int) -> list[str] | None:
    """The names of the layers that make a model's outputs, where a person chose them."""
    if isinstance(model, keras.Sequential) and model.layers and count == 1:
        layers = [model.layers[-1]]
    else:
        try:  # functional models
            layers = [model.get_layer(str(n)) for n in model.output_names]
        except (AttributeError, TypeError, ValueError):
            return None
    if len(layers) != count:
        return None
    names = [str(la.name) if not _auto_layer_name(la) else "" for la in layers]
    return [n or ("output" if count == 1 else f"output{i}") for i, n in enumerate(names)]


def export_keras(
    model: Any,
    sample_inputs: Any,
    path: str | os.PathLike[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    opset: int | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
) -> ExportReport:
    """Export a Keras 3 model (Sequential, functional or subclassed, TensorFlow backend)
    called on ``sample_inputs``; batch axis dynamic; parity against
    ``model(x, training=False)``.

    Names: inputs after ``input_names``, the sample dict's keys or the model's ``Input``
    names; outputs after ``output_names``, the model's output dict keys or its output
    layers' names (else ``output``).
    """
    tf, _ = _tensorflow()
    keras = require("keras", "tensorflow")
    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"Keras models export through TensorFlow; this Keras uses the "
                         f"{keras.backend.backend()!r} backend (set KERAS_BACKEND=tensorflow)")
    target = _check_opset(opset)
    arrays = as_input_list(sample_inputs)
    try:
        structure = model.input  # a dict when the model takes named inputs
    except (AttributeError, ValueError):  # Sequential models have none
        structure = None
    keyed = isinstance(structure, Mapping)
    try:
        own = ([_clean(str(k)) for k in structure] if keyed else
               [_clean(str(t.name)) for t in model.inputs])
    except (AttributeError, ValueError):  # never built
        own = []
    if isinstance(sample_inputs, Mapping) and set(map(str, sample_inputs)) == set(own) \
            and len(own) == len(arrays):
        order = {n: i for i, n in enumerate(map(str, sample_inputs))}
        arrays = [arrays[order[n]] for n in own]  # the model's input order
        sample_inputs = {n: arrays[i] for i, n in enumerate(own)}
    names = _check_names(input_names or _default_input_names(sample_inputs, len(arrays), own),
                         "input")
    if len(names) != len(arrays):
        raise ValueError(f"{len(names)} input_names for {len(arrays)} sample inputs")

    keys = list(structure) if isinstance(structure, Mapping) else []
    if keyed and len(keys) != len(arrays):
        raise ValueError(f"the model takes {len(keys)} inputs ({', '.join(map(str, keys))}); "
                         f"got {len(arrays)} sample inputs")

    def call(*args: Any) -> Any:
        if keyed:
            return model(dict(zip(keys, args, strict=True)), training=False)
        return model(args[0] if len(args) == 1 else list(args), training=False)

    out = call(*[tf.constant(a) for a in arrays])
    out_keys, tensors = _flatten(out)
    onames = _output_names(out_keys, len(tensors), output_names,
                           _output_layer_names(keras, model, len(tensors)))
    if set(onames) & set(names):
        raise ValueError(f"output names {onames} clash with input names {names}")
    expected = {n: np.asarray(t) for n, t in zip(onames, tensors, strict=True)}
    specs = _specs(tf, arrays, names)
    _trace(call, specs, check_ops=False)
    proto = _convert(lambda *a: _flatten(call(*a))[1], specs, onames, target)
    notes = ["tf2onnx.convert.from_function on model(x, training=False)"]
    return _finish(proto, path, "keras", names, arrays, expected, tolerance, notes)


def _entry_point(tf: Any, obj: Any, signature: str | None
                 ) -> tuple[Callable[..., Any], list[str], list[Any] | None]:
    """``(call, own input names, dtypes)`` of a TensorFlow object; ``dtypes`` is not None
    when the inputs are passed by keyword (a signature): then they are matched by name."""
    sigs = getattr(obj, "signatures", None)
    fn = sigs[signature] if signature and sigs is not None and signature in sigs else obj
    if isinstance(fn, tf.types.experimental.ConcreteFunction):
        args, kwargs = fn.structured_input_signature
        if kwargs and not args:
            keys = list(kwargs)

            def by_keyword(*values: Any) -> Any:
                return fn(**dict(zip(keys, values, strict=True)))

            return by_keyword, keys, [kwargs[k].dtype for k in keys]
        return fn, [_clean(s.name or "") for s in tf.nest.flatten(args)], None
    if callable(fn):
        return fn, [], None
    raise ValueError(f"export_tf takes a tf.Module with __call__, a tf.function or a loaded "
                     f"SavedModel; got a {type(obj).__name__} that is not callable")


def export_tf(
    module_or_function: Any,
    sample_inputs: Any,
    path: str | os.PathLike[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    opset: int | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    signature: str | None = "serving_default",
) -> ExportReport:
    """Export a ``tf.Module`` with ``__call__``, a ``tf.function`` (or concrete function)
    or a SavedModel loaded with ``tf.saved_model.load`` (its ``signature``, by default
    ``serving_default``, else ``__call__``) called on ``sample_inputs``.

    A signature takes named inputs: with more than one, ``sample_inputs`` must be a dict
    keyed by those names; the signature's dtypes win over the samples'. The graph is traced
    first, and one holding ops that touch files or call Python is refused before it runs.
    """
    tf, _ = _tensorflow()
    keras = require("keras", "tensorflow")
    if isinstance(module_or_function, keras.Model):
        return export_keras(module_or_function, sample_inputs, path, tolerance=tolerance,
                            opset=opset, input_names=input_names, output_names=output_names)
    target = _check_opset(opset)
    call, own, dtypes = _entry_point(tf, module_or_function, signature)
    if dtypes is not None:  # keyword inputs: match them by name, in the signature's order
        if isinstance(sample_inputs, Mapping):
            if set(map(str, sample_inputs)) != set(own):
                raise ValueError(f"the model's inputs are {', '.join(own)}; sample_inputs "
                                 f"has {', '.join(map(str, sample_inputs))}")
            sample_inputs = {k: sample_inputs[k] for k in own}
        elif len(own) > 1:
            raise ValueError(f"the model takes named inputs ({', '.join(own)}): give "
                             "sample_inputs as a dict keyed by these names")
    arrays = as_input_list(sample_inputs)
    if dtypes is not None:
        if len(dtypes) != len(arrays):
            raise ValueError(f"the model takes {len(dtypes)} inputs ({', '.join(own)}); got "
                             f"{len(arrays)} sample inputs")
        arrays = [a.astype(d.as_numpy_dtype) for a, d in zip(arrays, dtypes, strict=True)]
    names = _check_names(input_names or _default_input_names(sample_inputs, len(arrays), own),
                         "input")
    if len(names) != len(arrays):
        raise ValueError(f"{len(names)} input_names for {len(arrays)} sample inputs")
    specs = _specs(tf, arrays, names)
    concrete = _trace(call, specs, check_ops=True)  # checked before it runs
    keys, _ = _flatten(concrete.structured_outputs)
    _, tensors = _flatten(concrete(*[tf.constant(a) for a in arrays]))
    onames = _output_names(keys, len(tensors), output_names, None)
    if set(onames) & set(names):
        raise ValueError(f"output names {onames} clash with input names {names}")
    proto = _convert(lambda *a: _flatten(call(*a))[1], specs, onames, target)
    expected = {n: np.asarray(t) for n, t in zip(onames, tensors, strict=True)}
    sigs = getattr(module_or_function, "signatures", None)
    kind = (f"signature {signature!r}" if signature and sigs is not None and signature in sigs
            else "function")
    notes = [f"tf2onnx.convert.from_function on the TensorFlow {kind}"]
    return _finish(proto, path, "tf", names, arrays, expected, tolerance, notes)


def load_keras_file(src: str | os.PathLike[str]) -> Any:
    """Load a ``.keras`` archive in safe mode (refuses Lambda layers and pickled code)."""
    keras = require("keras", "tensorflow")
    _tensorflow()
    if Path(src).suffix != ".keras":
        raise ValueError(f"{src}: Keras models come as .keras files (HDF5 and pickles are not "
                         "loaded: they can hold arbitrary code)")
    if not Path(src).is_file():
        raise ValueError(f"{src}: no such file")
    try:
        return keras.saving.load_model(str(src), compile=False, safe_mode=True)
    except ValueError as exc:
        raise ValueError(f"{src}: refused or unreadable in Keras safe mode: {exc}") from exc


def export_keras_file(src: str | os.PathLike[str], sample_inputs: Any,
                      path: str | os.PathLike[str], **kw: Any) -> ExportReport:
    """Export the model saved in a ``.keras`` archive (loaded with ``safe_mode=True``)."""
    return export_keras(load_keras_file(src), sample_inputs, path, **kw)


def export_saved_model(src_dir: str | os.PathLike[str], sample_inputs: Any,
                       path: str | os.PathLike[str], **kw: Any) -> ExportReport:
    """Export a TensorFlow SavedModel folder (its serving signature, else ``__call__``)."""
    tf, _ = _tensorflow()
    folder = Path(src_dir)
    if not (folder / "saved_model.pb").is_file():
        raise ValueError(f"{src_dir}: not a TensorFlow SavedModel folder (no saved_model.pb)")
    with _quiet():
        obj = tf.saved_model.load(str(folder))
    return export_tf(obj, sample_inputs, path, **kw)


__all__ = ["export_keras", "export_keras_file", "export_saved_model", "export_tf",
           "load_keras_file"]
