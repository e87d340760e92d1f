"""layerscope: how each layer of a trained network separates or smooths your data."""

__version__ = "0.1.0"
