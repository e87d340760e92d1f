"""Choosing layers: ``auto``, ``all``, tensor names, glob patterns or ``op:`` types.

Unknown names and op types are errors that list the closest existing ones; a tensor that
exists but is not a layer says why not.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable

from .inspect import AUTO_RULE, LayerInfo, ModelInfo
from .load import ModelError


class LayerSelectionError(ModelError):
    """A layer specification that names nothing usable."""


def _close(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=5, cutoff=0.5)
    return f"; closest: {', '.join(close)}" if close else ""


def parse_spec(spec: str | Iterable[str] | None) -> list[str]:
    """Return the items of a layer specification (``"a,b"`` or a list)."""
    if spec is None:
        return ["auto"]
    # Items may arrive as one string or a list of them, each possibly comma-separated.
    text = spec if isinstance(spec, str) else ",".join(spec)
    out = [s.strip() for s in text.split(",") if s.strip()]
    # "op:Conv,Relu" arrives split as ["op:Conv", "Relu"]: re-attach the bare op types.
    merged: list[str] = []
    for item in out:
        if merged and merged[-1].startswith("op:") and ":" not in item and item[:1].isupper() \
                and not any(c in item for c in "*?[/."):
            merged[-1] += f",{item}"
        else:
            merged.append(item)
    return merged or ["auto"]


def select_layers(info: ModelInfo, spec: str | Iterable[str] | None = "auto") -> list[LayerInfo]:
    """Return the layers ``spec`` names, in topological order, without duplicates.

    Items: ``auto``; ``all``; ``op:Conv,Gemm`` (op types); a glob (``*relu*``); a tensor name.
    """
    chosen: dict[str, LayerInfo] = {}
    by_name = {la.name: la for la in info.layers}
    for item in parse_spec(spec):
        if item == "auto":
            found = [la for la in info.layers if la.auto]
            if not found:
                raise LayerSelectionError(
                    "auto found no layer in this model (" + AUTO_RULE.splitlines()[0]
                    + " ...); name layers explicitly (see `layerscope layers MODEL`)"
                )
        elif item == "all":
            found = list(info.layers)
        elif item.startswith("op:"):
            ops = [o.strip() for o in item[3:].split(",") if o.strip()]
            present = sorted({la.op_type for la in info.layers})
            found = []
            for op in ops:
                hits = [la for la in info.layers if la.op_type == op]
                if not hits:
                    raise LayerSelectionError(
                        f"no layer is produced by op type {op!r} in this model"
                        f"{_close(op, present)} (present: {', '.join(present)})"
                    )
                found += hits
        elif any(c in item for c in "*?["):
            found = [la for la in info.layers if fnmatch.fnmatchcase(la.name, item)]
            if not found:
                raise LayerSelectionError(
                    f"pattern {item!r} matches no layer{_close(item, by_name)}"
                )
        elif item in by_name:
            found = [by_name[item]]
        elif item in info.excluded:
            raise LayerSelectionError(f"tensor {item!r} is not a layer: {info.excluded[item]}")
        else:
            raise LayerSelectionError(
                f"no tensor named {item!r} in this model{_close(item, by_name)}"
            )
        for la in found:
            chosen.setdefault(la.name, la)
    return sorted(chosen.values(), key=lambda la: la.position)
