"""Exporters that bring models from other frameworks to ONNX (one module per framework)."""
