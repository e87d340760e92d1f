"""The executor interface: the three kinds of work a cluster can take, and the local one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from ..cancellation import Cancellation
    from ..metrics.knn import Neighbors
    from ..metrics.smoothness import TargetStats
    from ..runtime.extract import LayerData

T = TypeVar("T")
R = TypeVar("R")
Progress = Callable[[int, int], None]


class Executor(Protocol):
    """Runs the block-parallel work of a job; each callable takes the arguments of the local
    function it stands for and returns what that function returns, bit for bit."""

    name: str

    def knn(self, *args: Any, **kw: Any) -> Neighbors:
        """:func:`layerscope.server.metrics.knn.knn`."""
        ...

    def target_stats(self, *args: Any, **kw: Any) -> TargetStats:
        """:func:`layerscope.server.metrics.smoothness.target_stats`."""
        ...

    def extract(self, *args: Any, **kw: Any) -> list[LayerData]:
        """:func:`layerscope.server.runtime.extract.extract`."""
        ...

    def map(self, fn: Callable[[T], R], items: Sequence[T], *,
            progress: Progress | None = None, cancel: Cancellation | None = None) -> list[R]:
        """``[fn(x) for x in items]`` in input order (one task per item on a cluster)."""
        ...

    def describe(self) -> str:
        """Where the work runs, in words (the server logs it)."""
        ...

    def close(self) -> None:
        """Let the cluster go (the server's stop)."""
        ...


class LocalExecutor:
    """Everything on this machine: the functions as they are."""

    name = "local"

    def knn(self, base: Any, k: int, **kw: Any) -> Neighbors:
        from ..metrics.knn import knn  # noqa: PLC0415 - keeps this module import-light

        return knn(base, k, **kw)

    def target_stats(self, xp: Any, y_query: Any, y_base: Any, r: int, *, self_mode: bool,
                     memory_budget_mb: float) -> TargetStats:
        from ..metrics.smoothness import target_stats  # noqa: PLC0415

        return target_stats(xp, y_query, y_base, r, self_mode=self_mode,
                            memory_budget_mb=memory_budget_mb)

    def extract(self, model: Any, info: Any, layers: Sequence[Any],
                sets: Sequence[Any], **kw: Any) -> list[LayerData]:
        from ..runtime.extract import extract  # noqa: PLC0415

        return extract(model, info, layers, sets, **kw)

    def map(self, fn: Callable[[T], R], items: Sequence[T], *,
            progress: Progress | None = None, cancel: Cancellation | None = None) -> list[R]:
        out = []
        for i, item in enumerate(items):
            if cancel is not None:
                cancel.check()
            out.append(fn(item))
            if progress is not None:
                progress(i + 1, len(items))
        return out


    def describe(self) -> str:
        return "this machine"

    def close(self) -> None:
        pass


LOCAL = LocalExecutor()


def connect(address: str | None, **kw: Any) -> Executor:
    """Return :data:`LOCAL` for no address, else an executor on the Ray cluster at
    ``address`` (``auto``: the cluster this machine belongs to, ``local``: a new one here,
    ``HOST:PORT`` or ``ray://HOST:PORT``); ``kw`` go to :class:`~.ray_cluster.RayExecutor`."""
    if not address:
        return LOCAL
    from .ray_cluster import RayExecutor  # noqa: PLC0415 - the [ray] extra, only when asked for

    try:
        return RayExecutor(address, **kw)
    except ImportError:
        raise ValueError(f"--ray {address}: the ray package is not installed; install the "
                         "extra: pip install 'layerscope[ray]'") from None
    except ConnectionError as exc:
        raise ConnectionError(f"--ray {address}: cannot attach to the Ray cluster: {exc}"
                              ) from None
