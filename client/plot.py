"""Plots of layer-wise results (matplotlib, an optional extra: ``layerscope[plot]``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def _series(layers: list[dict[str, Any]], key: str, order: str | None, cross: bool) -> list[float]:
    out = []
    for la in layers:
        src = la.get("cross", {}) if cross else la
        v = src.get(key) if src else None
        if isinstance(v, dict):
            v = v.get(order) if order is not None else None
        out.append(float("nan") if v is None else float(v))
    return out


def plot_layers(result: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a PNG/SVG/PDF of each index per layer, train solid and test dashed."""
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        raise PlotUnavailable(
            "plotting needs matplotlib: pip install 'layerscope[plot]'"
        ) from None
    layers = result["layers"]
    names = [la["name"] for la in layers]
    keys: list[tuple[str, str | None]] = []
    for la in layers:
        for k, v in la.items():
            if k in ("name", "kind", "op_type", "shape", "reduction", "dims", "cross", "probe",
                     "notes", "error") or k.startswith("single_feature") or k == "feature_ranking":
                continue
            entries = [(k, o) for o in v] if isinstance(v, dict) else [(k, None)]
            for e in entries:
                if e not in keys:
                    keys.append(e)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(names) + 2), 4.5))
    xs = list(range(len(names)))
    for i, (k, o) in enumerate(keys):
        label = k if o is None else f"{k}[{o}]"
        color = f"C{i % 10}"
        ax.plot(xs, _series(layers, k, o, False), "-o", color=color, label=f"{label} train")
        if any("cross" in la for la in layers):
            ax.plot(xs, _series(layers, k, o, True), "--s", color=color, alpha=0.8,
                    label=f"{label} test")
    plateau = result.get("plateau")
    if plateau:
        ax.axvline(plateau["position"], color="grey", linestyle=":",
                   label=f"{plateau['index']} stops improving")
    short = [n if len(n) <= 24 else "..." + n[-21:] for n in names]
    ax.set_xticks(xs, short, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("index")
    ax.set_title(f"layer-wise indices ({result.get('task', '')})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="best")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
