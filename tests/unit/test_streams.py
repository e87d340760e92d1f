"""The ComputeIndices stream reassembled in place: one buffer, each tensor a view of it."""

from __future__ import annotations

import numpy as np
import pytest

from layerscope.protos.stubs import analysis_pb2, common_pb2
from layerscope.server.api import streams
from layerscope.server.cancellation import Cancellation
from layerscope.server.store import SizeLimitError


def _chunks(data: bytes, sizes: list[int]) -> list[analysis_pb2.ComputeIndicesRequest]:
    out, offset = [], 0
    for size in sizes:
        out.append(analysis_pb2.ComputeIndicesRequest(
            chunk=common_pb2.Chunk(offset=offset, data=data[offset:offset + size])))
        offset += size
    return out


def _specs(arrays: dict[str, np.ndarray]) -> list[dict]:
    return [{"name": k, "dtype": str(a.dtype), "shape": list(a.shape)} for k, a in arrays.items()]


def _root(a: np.ndarray) -> object:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def test_tensors_split_across_chunks_are_views_of_one_buffer() -> None:
    x = np.arange(35, dtype=np.float32).reshape(7, 5) / 3
    y = np.arange(7, dtype=np.int64) - 3
    data = x.tobytes() + y.tobytes()
    msgs = _chunks(data, [13, 50, 1, len(data) - 64])  # boundaries inside both tensors
    got = streams.tensors(_specs({"features": x, "labels": y}), iter(msgs), 1 << 20,
                          Cancellation())
    np.testing.assert_array_equal(got["features"], x)
    np.testing.assert_array_equal(got["labels"], y)
    assert got["features"].dtype == x.dtype and got["labels"].shape == (7,)
    assert _root(got["features"]) is _root(got["labels"])  # no copy per tensor


@pytest.mark.parametrize(("cut", "message"), [(-8, "received 272 bytes"),
                                             (8, "more than the 280 bytes")])
def test_a_stream_of_the_wrong_length_is_refused(cut: int, message: str) -> None:
    x = np.zeros((7, 5), np.float64)
    data = x.tobytes()
    data = data[:cut] if cut < 0 else data + b"\0" * cut
    with pytest.raises(ValueError, match=message):
        streams.tensors(_specs({"features": x}), iter(_chunks(data, [len(data)])), 1 << 20,
                        Cancellation())


def test_tensors_above_the_limit_are_refused_before_any_chunk() -> None:
    x = np.zeros((100, 10), np.float64)

    def never() -> object:
        raise AssertionError("a chunk was read")
        yield

    with pytest.raises(SizeLimitError, match="8000 bytes"):
        streams.tensors(_specs({"features": x}), never(), 4000, Cancellation())
