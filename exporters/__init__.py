"""Exporters: bring models from PyTorch, Keras/TensorFlow, scikit-learn, XGBoost, LightGBM
and JAX to ONNX, with proof that the ONNX file computes what the model does.

    from layerscope.exporters import export
    report = export(model, sample_inputs, "model.onnx")   # dispatches on the model's type
    report.parity   # largest absolute/relative difference per output

Each framework is an optional extra (``layerscope[torch]``, ``[tensorflow]``,
``[sklearn]``, ``[xgboost]``, ``[lightgbm]``, ``[jax]``, ``[all]``); without it, a clear
error names the extra to install. Nothing here imports a framework until it is used.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from .base import DEFAULT_TOLERANCE, ExportReport, MissingExtra, ParityError

FRAMEWORKS = ("torch", "keras", "tf", "sklearn", "xgboost", "lightgbm", "jax")
_MODULES = {
    "torch": ("layerscope.exporters.torch", "export_torch"),
    "keras": ("layerscope.exporters.keras", "export_keras"),
    "tf": ("layerscope.exporters.keras", "export_tf"),
    "sklearn": ("layerscope.exporters.sklearn", "export_sklearn"),
    "xgboost": ("layerscope.exporters.trees", "export_xgboost"),
    "lightgbm": ("layerscope.exporters.trees", "export_lightgbm"),
    "jax": ("layerscope.exporters.jax", "export_jax"),
}


def framework_of(model: Any) -> str:
    """The framework a model object comes from, by the module of its type (or its MRO)."""
    for cls in type(model).__mro__:
        root = (cls.__module__ or "").split(".")[0]
        if root == "torch":
            return "torch"
        if root in ("keras", "tf_keras"):
            return "keras"
        if root == "tensorflow":
            return "keras" if "keras" in cls.__module__ else "tf"
        if root == "sklearn":
            return "sklearn"
        if root == "xgboost":
            return "xgboost"
        if root == "lightgbm":
            return "lightgbm"
        if root in ("flax", "jax", "jaxlib", "equinox"):
            return "jax"
    if isinstance(model, tuple) and len(model) == 2 and callable(model[0]):
        return "jax"  # (apply_fn, params)
    raise ValueError(
        f"cannot tell the framework of a {type(model).__module__}.{type(model).__name__}; "
        f"pass framework= one of {', '.join(FRAMEWORKS)}"
    )


def export(
    model: Any,
    sample_inputs: Any,
    path: str | os.PathLike[str],
    *,
    framework: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    **options: Any,
) -> ExportReport:
    """Export ``model`` to ``path`` (ONNX), checking parity on ``sample_inputs``."""
    name = framework or framework_of(model)
    if name not in _MODULES:
        raise ValueError(f"framework must be one of {', '.join(FRAMEWORKS)}; got {name!r}")
    module, func = _MODULES[name]
    fn = getattr(importlib.import_module(module), func)
    return fn(model, sample_inputs, path, tolerance=tolerance, **options)  # type: ignore[no-any-return]


__all__ = ["FRAMEWORKS", "ExportReport", "MissingExtra", "ParityError", "export",
           "framework_of"]
