"""The source model: a pair ``(apply_fn, params)``, a ``flax.nnx`` Module or a function of
the inputs, as one function of (params, inputs); names of parameters and outputs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..base import require


def path_name(path: Any) -> str:
    import jax  # noqa: PLC0415

    text = jax.tree_util.keystr(path, simple=True, separator="/").strip("/")
    if text.endswith("/value"):  # flax.nnx Variables hold their array as .value
        text = text[: -len("/value")]
    return text or "param"


def callable_of(model: Any) -> tuple[Callable[..., Any], Any, str]:
    """``(fn, params, kind)`` with ``fn(params, *inputs)`` computing the model."""
    if isinstance(model, tuple) and len(model) == 2 and callable(model[0]):
        apply_fn, params = model
        return (lambda p, *xs: apply_fn(p, *xs)), params, "apply_fn(params, x)"
    if any((c.__module__ or "").split(".")[0] == "flax" for c in type(model).__mro__):
        nnx = require("flax.nnx", "jax")
        if isinstance(model, nnx.Module):
            graphdef, state = nnx.split(model)
            return (lambda st, *xs: nnx.merge(graphdef, st)(*xs)), state, "flax.nnx Module"
    if callable(model):
        return (lambda _p, *xs: model(*xs)), None, "function"
    raise ValueError("export_jax takes a pair (apply_fn, params), a flax.nnx Module or a "
                     f"function of the inputs; got a {type(model).__name__}")


def name_outputs(tree: Any, given: Sequence[str] | None, count: int) -> list[str]:
    import jax  # noqa: PLC0415

    if given is not None:
        names = [str(n) for n in given]
        if len(names) != count:
            raise ValueError(f"{len(names)} output_names for {count} model outputs")
    elif count == 1 and not isinstance(tree, (dict, list, tuple)):
        names = ["output"]
    elif isinstance(tree, dict):
        names = [path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    else:
        names = ["output"] if count == 1 else [f"output{i}" for i in range(count)]
    if len(set(names)) != len(names):
        raise ValueError(f"output names must be unique; got {names}")
    return names


