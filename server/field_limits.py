"""The server's limits on what a client sends, as named constants, and their checks.

Every string a request carries is bounded by the rule of its field (names, ids, option
words); a tensor's dtype must be one the server computes with. The rules are applied to
whole protobuf messages, so that a new field is covered without a new line of code.
ONNX models get the same treatment: every string valid UTF-8, every name that the API
sends back within the name limit (a model whose names could not be sent back in a request
could not be used, and names without a bound would let one model break ``ListModels``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

MAX_NAME_CHARS = 1024
"""Display names, tensor names, layer names and layer patterns."""
MAX_ID_CHARS = 128
"""Ids of models, datasets, references and jobs (they are 32 or 64 hex digits)."""
MAX_WORD_CHARS = 64
"""Option words: reduce, criterion, precision, mode, index names."""
MAX_ITEMS = 4096
"""Entries of a repeated or map field of strings or messages (tensors, layers, model ids)."""
MAX_DIMS = 32
"""Dimensions of a tensor's shape."""
DTYPES = ("float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")
"""Tensor dtypes the server accepts (little-endian, NumPy names)."""

_CHARS = {
    "id": MAX_ID_CHARS, "model_id": MAX_ID_CHARS, "dataset_id": MAX_ID_CHARS,
    "test_dataset_id": MAX_ID_CHARS, "reference_id": MAX_ID_CHARS, "model_ids": MAX_ID_CHARS,
    "sha256": MAX_ID_CHARS,
    "reduce": MAX_WORD_CHARS, "criterion": MAX_WORD_CHARS, "precision": MAX_WORD_CHARS,
    "mode": MAX_WORD_CHARS, "indices": MAX_WORD_CHARS, "dtype": MAX_WORD_CHARS,
}
"""Characters allowed per field name; any other string field gets MAX_NAME_CHARS."""
_KEY_CHARS = {"layers": MAX_ID_CHARS}
"""Characters allowed in the keys of a map field (StartRanking.layers: model ids)."""
_MODEL_NAMES = ("name", "input", "output", "op_type", "domain")
"""String fields of an ONNX model that the API sends back (tensor, node and op names)."""

M = TypeVar("M")


class LimitError(ValueError):
    """A request field beyond the server's limits, or a value it does not support."""


_MAP, _LIST, _SHAPE, _MESSAGE, _TEXT = range(5)


@functools.cache
def _plan(descriptor: Descriptor) -> tuple[tuple[str, int, bool], ...]:
    """(name, kind, map values are messages) of the fields of a message type that can hold
    text or must be counted; bytes and numbers are left out (reading bytes copies them)."""
    plan = []
    for field in descriptor.fields:
        entry = field.message_type
        is_text = field.type == FieldDescriptor.TYPE_STRING
        if entry is not None and entry.GetOptions().map_entry:
            plan.append((field.name, _MAP,
                         entry.fields_by_name["value"].message_type is not None))
        elif field.is_repeated and field.name == "shape":
            plan.append((field.name, _SHAPE, False))
        elif field.is_repeated and (entry is not None or is_text):
            plan.append((field.name, _LIST, entry is not None))
        elif entry is not None:
            plan.append((field.name, _MESSAGE, True))
        elif is_text:
            plan.append((field.name, _TEXT, False))
    return tuple(plan)


def _texts(msg: Message, path: str, counts: bool = True) -> Iterator[tuple[str, str, Any]]:
    """Yield (field name, path, value) for every string of ``msg`` at every depth (map keys
    under the name ``key:FIELD``); with ``counts``, raise LimitError for a list of more
    than MAX_ITEMS entries (MAX_DIMS for a shape)."""
    for name, kind, messages in _plan(msg.DESCRIPTOR):
        where = f"{path}{name}"
        if kind == _TEXT:
            yield name, where, getattr(msg, name)
        elif kind == _MESSAGE:
            if msg.HasField(name):
                yield from _texts(getattr(msg, name), f"{where}.", counts)
        elif kind == _SHAPE:
            if counts:
                _count(name, where, len(getattr(msg, name)), MAX_DIMS)
        else:
            value = getattr(msg, name)
            if counts:
                _count(name, where, len(value), MAX_ITEMS)
            if kind == _LIST:
                for i, item in enumerate(value):
                    if messages:
                        yield from _texts(item, f"{where}[{i}].", counts)
                    else:
                        yield name, f"{where}[{i}]", item
                continue
            for key in value:
                if isinstance(key, (str, bytes)):
                    yield f"key:{name}", f"{where} key", key
                at = f"{where}[{_short(key)}]"
                if messages:
                    yield from _texts(value[key], f"{at}.", counts)
                elif isinstance(value[key], (str, bytes)):
                    yield name, at, value[key]


def _count(name: str, where: str, n: int, limit: int) -> None:
    if n > limit:
        what = "dimensions" if name == "shape" else "entries"
        raise LimitError(f"{where} has {n} {what}; this server accepts at most {limit}")


def _short(key: Any, chars: int = 40) -> str:
    text = repr(key)
    return text if len(text) <= chars else f"{text[:chars]}..."


def check_request(msg: Message) -> None:
    """Raise LimitError naming the first field of ``msg`` beyond its limit (strings of too
    many characters, lists of too many entries, unsupported dtypes)."""
    for name, where, value in _texts(msg, ""):
        key = name.startswith("key:")
        limit = (_KEY_CHARS.get(name[4:], MAX_NAME_CHARS) if key
                 else _CHARS.get(name, MAX_NAME_CHARS))
        if len(value) > limit:
            raise LimitError(f"{where} is {len(value)} characters long; this server accepts "
                             f"at most {limit}")
        if name == "dtype":
            check_dtype(value, where)


def checked(request: M) -> M:
    """``request`` after :func:`check_request`; for a stream of requests, a stream that
    checks each message as it is read."""
    if isinstance(request, Message):
        check_request(request)
        return request
    return _checked_stream(request)  # type: ignore[arg-type, return-value]


def _checked_stream(requests: Iterable[Message]) -> Iterator[Message]:
    for msg in requests:
        check_request(msg)
        yield msg


def check_dtype(dtype: str, what: str = "dtype") -> str:
    """Return ``dtype`` when the server accepts it; else raise LimitError listing those it
    does (no float128, complex, object, strings, datetimes or explicit byte orders)."""
    if dtype not in DTYPES:
        raise LimitError(f"{what}: dtype {_short(dtype)} is not supported; use one of "
                         f"{', '.join(DTYPES)} (little-endian bytes)")
    return dtype


def check_model_text(model: Message) -> None:
    """Raise LimitError unless every string of an ONNX model is valid UTF-8 and every
    tensor, node and op name fits MAX_NAME_CHARS."""
    for name, where, value in _texts(model, "", counts=False):
        if isinstance(value, bytes):  # protobuf hands back undecodable proto2 text as bytes
            raise LimitError(f"{where} is not valid UTF-8 text ({_short(value)}); names and "
                             "metadata of a model must be UTF-8")
        if name in _MODEL_NAMES and len(value) > MAX_NAME_CHARS:
            raise LimitError(f"{where} is {len(value)} characters long; this server accepts "
                             f"names of at most {MAX_NAME_CHARS}")


__all__ = [
    "DTYPES", "MAX_DIMS", "MAX_ID_CHARS", "MAX_ITEMS", "MAX_NAME_CHARS", "MAX_WORD_CHARS",
    "LimitError", "check_dtype", "check_model_text", "check_request", "checked",
]
