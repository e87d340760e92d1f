"""ONNX inspection and rewriting: load safely, list layers, choose them, expose them."""

from .expose import expose, max_ir_version
from .inspect import AUTO_RULE, LayerInfo, ModelInfo, TensorInfo, describe
from .load import ModelError, load_model
from .select import LayerSelectionError, select_layers

__all__ = [
    "AUTO_RULE", "LayerInfo", "LayerSelectionError", "ModelError", "ModelInfo", "TensorInfo",
    "describe", "expose", "load_model", "max_ir_version", "select_layers",
]
