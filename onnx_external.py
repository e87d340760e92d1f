"""External data of ONNX models: every tensor at every depth, checked before a byte is read.

A tensor may keep its bytes in another file (``data_location: EXTERNAL``, a ``location``
relative to the model); whoever opens the model resolves that location, so the model
chooses which file is read. :func:`external_refs` finds every such reference wherever it
sits: initializers, sparse initializers (values and indices), attribute tensors of any
node, subgraphs of any op (If, Loop, Scan, custom domains) at any depth, functions and
their default attributes, training graphs. The walk follows the protobuf schema, so a
message that can hold a tensor is never skipped.

- A model received as bytes must be self-contained: :func:`refuse_external_data`.
- A model file may name files inside its own folder only (no absolute path, no ``..``,
  no symlink that leaves it), resolved against that folder, never a working directory:
  :func:`check_external_data` plans every read first, :func:`load_external_data` then
  folds the bytes into the model.

It imports onnx only, so the server and the client both use it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any

from google.protobuf.descriptor import Descriptor

from .lazy import lazy_module

if TYPE_CHECKING:
    import onnx
else:
    onnx = lazy_module("onnx")

__all__ = [
    "ExternalDataError", "ExternalRef", "PlannedRead", "all_tensors", "check_external_data",
    "check_set_path", "external_refs", "external_files", "files_id", "load_external_data",
    "model_folder", "refuse_external_data",
]

# The keys the ONNX specification defines for external_data entries.
KEYS = ("location", "offset", "length", "checksum", "basepath")


class ExternalDataError(ValueError):
    """A model whose external data may not be read, with where it is and what is expected."""


@dataclass(frozen=True)
class ExternalRef:
    """A tensor that keeps its bytes outside the model, and where it sits in the model."""

    where: str
    tensor: onnx.TensorProto

    @property
    def location(self) -> str:
        """The last ``location`` entry (what onnx reads); '' when there is none."""
        locs = [e.value for e in self.tensor.external_data if e.key == "location"]
        return locs[-1] if locs else ""


@dataclass(frozen=True)
class PlannedRead:
    """One checked read: the tensor, the real path, the byte range, the file's identity."""

    ref: ExternalRef
    path: str
    offset: int
    length: int
    st_dev: int
    st_ino: int


# ---------------------------------------------------------------------------------------
# The walk
# ---------------------------------------------------------------------------------------


# onnx.TensorProto.DESCRIPTOR.full_name, written out: reading it would import onnx (a second)
TENSOR = "onnx.TensorProto"

# One step of a path: (parent message, field name, repeated?, index, item).
Step = tuple[Any, str, bool, int, Any]


@functools.cache
def _holds_tensors(desc: Descriptor) -> bool:
    """Whether a message of this type can hold a TensorProto at some depth."""
    seen: set[str] = set()

    def visit(d: Descriptor) -> bool:
        if d.full_name == TENSOR:
            return True
        if d.full_name in seen:  # a cycle (GraphProto -> NodeProto -> ... -> GraphProto)
            return False
        seen.add(d.full_name)
        return any(visit(f.message_type) for f in d.fields if f.message_type is not None)

    return visit(desc)


@functools.cache
def _tensor_fields(desc: Descriptor) -> tuple[tuple[str, bool, bool], ...]:
    """(name, repeated, holds a TensorProto itself) of the fields of ``desc`` to follow."""
    return tuple((f.name, f.is_repeated, f.message_type.full_name == TENSOR)
                 for f in desc.fields
                 if f.message_type is not None and _holds_tensors(f.message_type))


def _walk(msg: Any, steps: tuple[Step, ...], keep: Callable[[onnx.TensorProto], bool]
          ) -> Iterator[tuple[tuple[Step, ...], onnx.TensorProto]]:
    for name, repeated, is_tensor in _tensor_fields(msg.DESCRIPTOR):
        if repeated:
            items = getattr(msg, name)
        elif msg.HasField(name):
            items = (getattr(msg, name),)
        else:
            continue
        for i, item in enumerate(items):
            if is_tensor:
                if keep(item):
                    yield (*steps, (msg, name, repeated, i, item)), item
            else:
                yield from _walk(item, (*steps, (msg, name, repeated, i, item)), keep)


def _label(step: Step) -> str:
    """How one step is named in a path; '' adds nothing."""
    parent, name, repeated, index, item = step
    p = type(parent).__name__
    if p == "ModelProto" and name == "graph":
        return ""
    if p == "ModelProto" and name == "functions":
        return f"function {item.domain}:{item.name}"
    if p in ("GraphProto", "FunctionProto") and name == "node":
        return f"{item.op_type} node " + (repr(item.name) if item.name else f"#{index}")
    if p == "NodeProto" and name == "attribute":
        return f"attribute {item.name}"
    if p == "FunctionProto" and name == "attribute_proto":
        return f"default attribute {item.name}"
    if p == "GraphProto" and name == "initializer":
        return f"initializer {item.name!r}"
    if p == "GraphProto" and name == "sparse_initializer":
        return f"sparse initializer {item.values.name!r}"
    if p == "AttributeProto" and name in ("g", "t", "sparse_tensor"):
        return ""  # the attribute's own name says it
    if p == "SparseTensorProto":
        return name  # values / indices
    return f"{name}[{index}]" if repeated else name


def _path(steps: tuple[Step, ...]) -> str:
    out: list[str] = []
    for step in steps:
        part = _label(step)
        if not part:
            continue
        if out and part.startswith("attribute ") and " node " in out[-1]:
            out[-1] = f"{out[-1]} {part}"  # "If node 'x' attribute then_branch": one step
        else:
            out.append(part)
    return " > ".join(out) or "the model"


def _is_external(t: onnx.TensorProto) -> bool:
    return t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data) > 0


def all_tensors(model: onnx.ModelProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    """Yield (path in the model, tensor) for every TensorProto of ``model``, at any depth."""
    for steps, t in _walk(model, (), lambda _t: True):
        yield _path(steps), t


def external_refs(model: onnx.ModelProto) -> list[ExternalRef]:
    """Return every tensor of ``model`` that refers to external data, at any depth.

    A tensor counts when its ``data_location`` is EXTERNAL or when it carries any
    ``external_data`` entry at all (a reader may honour either).
    """
    return [ExternalRef(_path(steps), t) for steps, t in _walk(model, (), _is_external)]


# ---------------------------------------------------------------------------------------
# Bytes: no external data at all
# ---------------------------------------------------------------------------------------


def refuse_external_data(model: onnx.ModelProto, origin: str) -> None:
    """Raise ExternalDataError if any tensor of ``model`` refers to external data.

    For models that arrive as bytes: there is no folder their locations could safely be
    resolved against.
    """
    refs = external_refs(model)
    if not refs:
        return
    first = refs[0]
    more = f" (and {len(refs) - 1} more tensor(s))" if len(refs) > 1 else ""
    raise ExternalDataError(
        f"{origin}: {first.where} keeps its data in an external file "
        f"(location {first.location!r}){more}; a model given as bytes must be self-contained: "
        "fold the external data into the model first (the layerscope client does this when "
        "given the model's path; in Python, load the model from a path)"
    )


# ---------------------------------------------------------------------------------------
# Files: external data inside the model's folder only
# ---------------------------------------------------------------------------------------


def _entries(ref: ExternalRef, origin: str) -> dict[str, str]:
    t = ref.tensor
    bad = f"{origin}: {ref.where} external data"
    if t.data_location != onnx.TensorProto.EXTERNAL:
        raise ExternalDataError(f"{bad} has external_data entries but data_location is not "
                                "EXTERNAL; expected both or neither")
    entries: dict[str, str] = {}
    for e in t.external_data:
        if e.key not in KEYS:
            raise ExternalDataError(f"{bad} has an unknown key {e.key[:100]!r}; expected "
                                    f"keys among {list(KEYS)}")
        if e.key in entries:
            raise ExternalDataError(f"{bad} names {e.key!r} twice ({entries[e.key][:200]!r} "
                                    f"and {e.value[:200]!r}); expected one entry per key")
        entries[e.key] = e.value
    return entries


def _check_location(loc: str, where: str) -> None:
    problem = None
    if not loc:
        problem = "has no location"
    elif "\0" in loc:
        problem = "has a NUL byte"
    elif "\\" in loc:
        problem = "has a backslash (locations use '/')"
    elif PurePosixPath(loc).is_absolute() or PureWindowsPath(loc).is_absolute() or \
            PureWindowsPath(loc).drive:
        problem = "is an absolute path"
    elif ".." in PurePosixPath(loc).parts:
        problem = "has a '..' component"
    if problem:
        raise ExternalDataError(
            f"{where} external data location {loc[:300]!r} {problem}; locations must be "
            "relative paths inside the model's folder (no absolute path, no '..')"
        )


def _number(entries: dict[str, str], key: str, where: str) -> int | None:
    text = entries.get(key)
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()):
        raise ExternalDataError(f"{where} external data {key} {text[:100]!r} is not a "
                                "non-negative integer")
    return int(text)


def _packed_size(t: onnx.TensorProto) -> int | None:
    """The bytes the tensor's dims and dtype need; None for strings and sub-byte types."""
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
    except (KeyError, ValueError, TypeError):
        return None
    if dtype.kind == "O" or dtype.name.startswith(("int4", "uint4", "int2", "uint2",
                                                   "float4", "float6")):
        return None  # strings have no fixed size; sub-byte types are packed
    n = 1
    for d in t.dims:
        n *= int(d)
    return n * dtype.itemsize


def _plan(ref: ExternalRef, root: str, origin: str) -> PlannedRead:
    where = f"{origin}: {ref.where}"
    entries = _entries(ref, origin)
    loc = entries.get("location", "")
    _check_location(loc, where)
    if ref.tensor.data_type == onnx.TensorProto.STRING:
        raise ExternalDataError(f"{where} is a string tensor with external data, which ONNX "
                                "does not define; expected its strings in the model")
    path = os.path.realpath(os.path.join(root, loc))
    if os.path.commonpath([root, path]) != root:
        raise ExternalDataError(
            f"{where} external data {loc!r} resolves outside the model's folder {root} "
            "(through a symlink); locations must stay inside it"
        )
    try:
        st = os.stat(path)
    except OSError:
        raise ExternalDataError(
            f"{where} needs external data file {loc!r}, which does not exist in the model's "
            f"folder {root}"
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise ExternalDataError(f"{where} external data {loc!r} is not a regular file (a "
                                "folder, device or pipe); expected a file of tensor bytes")
    offset = _number(entries, "offset", where) or 0
    length = _number(entries, "length", where)
    size = st.st_size
    if length is None:
        length = size - offset
    if offset + length > size or length < 0:
        raise ExternalDataError(
            f"{where} external data {loc!r} asks for bytes {offset}..{offset + max(length, 0)} "
            f"of a {size}-byte file (truncated?)"
        )
    want = _packed_size(ref.tensor)
    if want is not None and want != length:
        raise ExternalDataError(
            f"{where} external data {loc!r} holds {length} bytes but the tensor's dims "
            f"{list(ref.tensor.dims)} and dtype need {want}"
        )
    return PlannedRead(ref, path, offset, length, st.st_dev, st.st_ino)


def check_external_data(
    model: onnx.ModelProto, folder: str | os.PathLike[str], origin: str
) -> list[PlannedRead]:
    """Check every external-data reference of ``model`` against ``folder``; read nothing.

    Every location must be a relative path, without '..', naming a regular file whose real
    path lies inside the real path of ``folder``, with offset and length inside the file
    and matching the tensor's size. Raise ExternalDataError naming the tensor, where it
    sits and the location otherwise; return the reads to do.
    """
    root = os.path.realpath(folder)
    return [_plan(ref, root, origin) for ref in external_refs(model)]


def _read(r: PlannedRead, origin: str) -> bytes:
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | \
        getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(r.path, flags)
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (r.st_dev, r.st_ino) or not stat.S_ISREG(st.st_mode):
            raise ExternalDataError(f"{origin}: {r.ref.where} external data {r.path} changed "
                                    "while the model was loaded; load it again")
        chunks, done = [], 0
        while done < r.length:
            chunk = os.pread(fd, min(r.length - done, 1 << 26), r.offset + done)
            if not chunk:
                raise ExternalDataError(f"{origin}: {r.ref.where} external data {r.path} "
                                        "became shorter while it was read")
            chunks.append(chunk)
            done += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def load_external_data(
    model: onnx.ModelProto, folder: str | os.PathLike[str], origin: str
) -> onnx.ModelProto:
    """Fold every external tensor of ``model`` in, from files inside ``folder``; return it.

    Every reference is checked (:func:`check_external_data`) before the first byte is
    read. ``model`` is modified in place: its tensors then hold their bytes as raw_data.
    """
    reads = check_external_data(model, folder, origin)
    for r in reads:
        t = r.ref.tensor
        t.raw_data = _read(r, origin)
        del t.external_data[:]
        t.ClearField("data_location")
    return model


def model_folder(path: str | os.PathLike[str]) -> Path:
    """The folder a model file's external data is resolved against: its real folder."""
    return Path(os.path.realpath(path)).parent


# ---------------------------------------------------------------------------------------
# Model files: a model file and its external-data files, uploaded as one set
# ---------------------------------------------------------------------------------------

FILES_ID_VERSION = "layerscope-model-files-v1"


def check_set_path(path: str, what: str = "file path") -> str:
    """Return ``path`` if it may name a file of a model set: relative, '/'-separated, no
    '..', '.' or empty component, no NUL, no absolute path; ExternalDataError otherwise."""
    _check_location(path, what)
    parts = path.split("/")
    if any(p in ("", ".") for p in parts):
        raise ExternalDataError(
            f"{what} {path[:300]!r} has an empty or '.' component; expected a normalised "
            "relative path such as 'weights/model.bin'"
        )
    return path


def files_id(model_path: str, files: list[tuple[str, str]]) -> str:
    """The id of a model set: sha256 of a canonical text naming the model file and every
    (relative path, sha256) pair, sorted by path (docs/large-models.md)."""
    lines = [FILES_ID_VERSION, f"model {model_path}"]
    lines += [f"{sha} {path}" for path, sha in sorted(files)]
    return hashlib.sha256(("\n".join(lines) + "\n").encode()).hexdigest()


def external_files(model: onnx.ModelProto, model_path: str, folder: str | os.PathLike[str],
                   origin: str) -> dict[str, PlannedRead]:
    """Return {path relative to the set root: one planned read} for every external-data file
    ``model`` needs, checked as :func:`check_external_data` does (inside ``folder``, sizes
    and offsets within each file). ``model_path`` is the model file's own path in the set:
    its folder prefixes each location."""
    prefix = str(PurePosixPath(model_path).parent)
    out: dict[str, PlannedRead] = {}
    for r in check_external_data(model, folder, origin):
        rel = str(PurePosixPath(prefix, r.ref.location)) if prefix != "." else r.ref.location
        out.setdefault(str(PurePosixPath(rel)), r)
    return out
