"""The gRPC contract (``layerscope/v1/*.proto``) and its generated Python stubs.

The .proto files ship with the package: :func:`write_protos` copies them out for clients in
other languages (``layerscope protos --out DIR``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ..local import write_atomic

if TYPE_CHECKING:
    from importlib.abc import Traversable

PROTO_PACKAGE = "layerscope/v1"


def proto_files() -> list[Traversable]:
    """Return the shipped .proto files, sorted by name (each imports the others by their
    path under an include root, ``layerscope/v1/NAME.proto``)."""
    from importlib import resources  # noqa: PLC0415 - only `layerscope protos` reads them

    folder = resources.files(__name__).joinpath(*PROTO_PACKAGE.split("/"))
    return sorted((f for f in folder.iterdir() if f.name.endswith(".proto")),
                  key=lambda f: f.name)


def write_protos(out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write the .proto files under ``out_dir/layerscope/v1/`` and return their paths.

    ``out_dir`` is then the include root for protoc (``-I out_dir``) or a loader. Existing
    files of the same names are replaced, each atomically.
    """
    target = Path(out_dir).joinpath(*PROTO_PACKAGE.split("/"))
    written = []
    for f in proto_files():
        data = f.read_bytes()

        def copy(out: BinaryIO, data: bytes = data) -> None:
            out.write(data)

        written.append(write_atomic(target / f.name, copy))
    return written
