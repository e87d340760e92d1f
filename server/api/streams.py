"""Client streams of a header then chunks: the header, the chunks of an upload, and the
tensors of a ComputeIndices call reassembled in place (one buffer, arrays viewing it)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..store import JobCancelled, SizeLimitError

Active = Callable[[], bool]


def header(requests: Iterator[Any], what: str) -> Any:
    """The header that opens a stream (ValueError when the stream starts otherwise)."""
    try:
        first = next(requests)
    except StopIteration:
        raise ValueError(f"{what}: the stream was empty; send a header first") from None
    if first.WhichOneof("part") != "header":
        raise ValueError(f"{what}: the first message must be a header, then chunks")
    return first.header


def chunks(requests: Iterator[Any], is_active: Active) -> Iterator[tuple[int, bytes]]:
    """(offset, data) of each chunk after the header; JobCancelled when the client goes
    away, ValueError for a message that is not a chunk."""
    for req in requests:
        if not is_active():
            raise JobCancelled("the client went away during the upload")
        if req.WhichOneof("part") != "chunk":
            raise ValueError("after the header, every message must be a chunk")
        yield req.chunk.offset, req.chunk.data


def _sizes(specs: list[dict[str, Any]]) -> list[int]:
    sizes = []
    for s in specs:
        try:
            item = np.dtype(s["dtype"]).itemsize
        except TypeError:
            raise ValueError(f"tensor {s['name']!r}: unknown dtype {s['dtype']!r}") from None
        if any(d < 0 for d in s["shape"]):
            raise ValueError(f"tensor {s['name']!r}: negative dimension in {s['shape']}")
        sizes.append(int(np.prod(s["shape"], dtype=np.int64)) * item)
    return sizes


def tensors(specs: list[dict[str, Any]], requests: Iterator[Any], limit: int,
            is_active: Active, what: str = "ComputeIndices") -> dict[str, np.ndarray]:
    """The tensors ``specs`` describe, from the chunks that follow the header.

    The bytes go into one buffer as they arrive; each tensor is a little-endian view of
    its part of it, with no copy.
    """
    sizes = _sizes(specs)
    total = sum(sizes)
    if total > limit:
        raise SizeLimitError(f"{what} tensors total {total} bytes, above the server's limit "
                             f"of {limit} bytes (--max-upload-mb)")
    buf = np.empty(total, np.uint8)
    received = 0
    for req in requests:
        if not is_active():
            raise JobCancelled("the client went away")
        if req.WhichOneof("part") != "chunk" or req.chunk.offset != received:
            raise ValueError("after the header, send chunks in order (offset = bytes sent)")
        data = req.chunk.data
        if received + len(data) > total:
            raise ValueError(f"received more than the {total} bytes the specs describe")
        buf[received:received + len(data)] = np.frombuffer(data, np.uint8)
        received += len(data)
    if received != total:
        raise ValueError(f"received {received} bytes; the specs describe {total}")
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for s, size in zip(specs, sizes, strict=True):
        dtype = np.dtype(s["dtype"]).newbyteorder("<")
        arrays[s["name"]] = buf[offset:offset + size].view(dtype).reshape(s["shape"])
        offset += size
    return arrays
