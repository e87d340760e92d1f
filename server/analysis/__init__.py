"""Pipelines that compose graph, runtime and metrics (layer-wise analysis, ranking,
certification references) and what the servicers call: typed requests, request admission,
the options of each path, the jobs, references and uploads."""

from .layerwise import LayerResult, LayerwiseResult, analyze_layers, plateau_position, ridge_probe

__all__ = ["LayerResult", "LayerwiseResult", "analyze_layers", "plateau_position", "ridge_probe"]
