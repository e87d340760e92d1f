"""Requests that are not valid messages get INVALID_ARGUMENT, not grpc's INTERNAL.

grpc answers a request it cannot parse (wrong wire bytes, a string field that is not
UTF-8) with INTERNAL "Exception deserializing request!", which reads as a server bug. This
interceptor parses leniently and answers such a request with INVALID_ARGUMENT saying which
message could not be read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc


class Undecodable(ValueError):
    """Bytes that do not parse as the request message of a method."""


def _lenient(decode: Callable[[bytes], Any], method: str) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return decode(data)
        except Exception as exc:  # noqa: BLE001 - any parse error is the client's
            return Undecodable(f"{method}: the request does not parse as its message "
                               f"({exc}); string fields must be UTF-8 text")
    return parse


def _messages(requests: Iterator[Any]) -> Iterator[Any]:
    for msg in requests:
        if isinstance(msg, Undecodable):
            raise msg  # the servicer maps ValueError to INVALID_ARGUMENT
        yield msg


class DecodeErrors(grpc.ServerInterceptor):
    """Parse requests leniently; an unparseable one ends its call with INVALID_ARGUMENT."""

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        parse = _lenient(handler.request_deserializer, details.method)
        out = handler.response_serializer
        if handler.request_streaming:
            inner = handler.stream_stream or handler.stream_unary

            def streamed(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                return inner(_messages(requests), context)

            make = (grpc.stream_stream_rpc_method_handler if handler.response_streaming
                    else grpc.stream_unary_rpc_method_handler)
            return make(streamed, request_deserializer=parse, response_serializer=out)
        inner = handler.unary_stream or handler.unary_unary

        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            if isinstance(request, Undecodable):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(request))
            return inner(request, context)

        make = (grpc.unary_stream_rpc_method_handler if handler.response_streaming
                else grpc.unary_unary_rpc_method_handler)
        return make(unary, request_deserializer=parse, response_serializer=out)
