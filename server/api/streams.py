"""Client streams of a header then chunks: the header, the chunks of an upload, and the
tensors of a ComputeIndices call reassembled in place (one buffer, arrays viewing it)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..analysis.memory import spec_bytes
from ..cancellation import Cancellation
from ..store import SizeLimitError

ALIGN = 64
"""Each tensor's start in the reassembly buffer (bytes)."""


def header(requests: Iterator[Any], what: str) -> Any:
    """The header that opens a stream (ValueError when the stream starts otherwise)."""
    try:
        first = next(requests)
    except StopIteration:
        raise ValueError(f"{what}: the stream was empty; send a header first") from None
    if first.WhichOneof("part") != "header":
        raise ValueError(f"{what}: the first message must be a header, then chunks")
    return first.header


def end(requests: Iterator[Any], what: str) -> None:
    """The stream ends here (ValueError naming the message that came instead)."""
    for req in requests:
        part = req.WhichOneof("part")
        got = f"a {part}" if part else "an empty message"
        raise ValueError(f"{what}: the header is the whole request; got {got} after it")


def chunks(requests: Iterator[Any], cancel: Cancellation) -> Iterator[tuple[int, bytes]]:
    """(offset, data) of each chunk after the header; ``cancel`` (the call's) stops it when
    the client goes away, ValueError for a message that is not a chunk."""
    for req in requests:
        cancel.check()
        if req.WhichOneof("part") != "chunk":
            raise ValueError("after the header, every message must be a chunk")
        yield req.chunk.offset, req.chunk.data


def file_chunks(requests: Iterator[Any], cancel: Cancellation
                ) -> Iterator[tuple[int, int, bytes]]:
    """(file index, offset, data) of each chunk of an UploadModelFiles stream."""
    for req in requests:
        cancel.check()
        if req.WhichOneof("part") != "chunk":
            raise ValueError("after the header, every message must be a chunk")
        yield req.chunk.file, req.chunk.offset, req.chunk.data


def tensors(specs: list[dict[str, Any]], requests: Iterator[Any], limit: int,
            cancel: Cancellation, what: str = "ComputeIndices") -> dict[str, np.ndarray]:
    """The tensors ``specs`` describe, from the chunks that follow the header.

    The bytes go into one buffer as they arrive; each tensor is a read-only little-endian
    view of its part of it (aligned to 64 bytes), with no copy.
    """
    sizes = [spec_bytes(s) for s in specs]
    total = sum(sizes)
    if total > limit:
        raise SizeLimitError(f"{what} tensors total {total} bytes, above the server's limit "
                             f"of {limit} bytes (--max-upload-mb)")
    # each tensor starts on a 64-byte boundary of one buffer, so every view is aligned
    starts = [0]
    for size in sizes[:-1]:
        starts.append(-(-(starts[-1] + size) // ALIGN) * ALIGN)
    ends = list(itertools.accumulate(sizes))  # where each tensor ends in the stream
    buf = np.empty((starts[-1] + sizes[-1]) if sizes else 0, np.uint8)
    received, part = 0, 0
    for req in requests:
        cancel.check()
        if req.WhichOneof("part") != "chunk" or req.chunk.offset != received:
            raise ValueError("after the header, send chunks in order (offset = bytes sent)")
        data = np.frombuffer(req.chunk.data, np.uint8)
        if received + len(data) > total:
            raise ValueError(f"received more than the {total} bytes the specs describe")
        done = 0
        while done < len(data):  # the chunk may span several tensors
            while received >= ends[part]:  # empty tensors included
                part += 1
            n = min(len(data) - done, ends[part] - received)
            at = starts[part] + received - (ends[part] - sizes[part])
            buf[at:at + n] = data[done:done + n]
            done, received = done + n, received + n
    if received != total:
        raise ValueError(f"received {received} bytes; the specs describe {total}")
    buf.flags.writeable = False
    arrays: dict[str, np.ndarray] = {}
    for s_, size, start in zip(specs, sizes, starts, strict=True):
        dtype = np.dtype(s_["dtype"]).newbyteorder("<")
        arrays[s_["name"]] = buf[start:start + size].view(dtype).reshape(s_["shape"])
    return arrays
