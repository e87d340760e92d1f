"""The ``layerscope`` command, and ``python -m layerscope``: :func:`layerscope.client.cli.main`.

The command line's libraries (gRPC, protobuf, the client) create ~27 000 objects that live
until the process ends. While they are imported, the cyclic garbage collector would run
~50 times over the growing heap, 8-11 ms of a command that can answer in 0.15 s, to find
~450 objects to free. It is paused here, before the first of those imports, and resumed
once they are frozen out of its way (``gc.freeze``); what the command creates afterwards
is collected as usual.
"""

import gc
import sys


def main() -> int:
    gc.disable()
    try:
        from .client.cli import main as command  # noqa: PLC0415 - after the pause
        gc.freeze()
    finally:
        gc.enable()
    return command()


if __name__ == "__main__":
    sys.exit(main())
