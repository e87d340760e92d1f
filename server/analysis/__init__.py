"""Pipelines that compose graph, runtime and metrics: layer-wise analysis (and, later,
ranking and certification)."""

from .layerwise import LayerResult, LayerwiseResult, analyze_layers, plateau_position, ridge_probe

__all__ = ["LayerResult", "LayerwiseResult", "analyze_layers", "plateau_position", "ridge_probe"]
