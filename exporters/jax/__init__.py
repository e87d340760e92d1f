"""JAX and Flax functions to ONNX, translated from the function's jaxpr (``layerscope[jax]``).

    from layerscope.exporters.jax import export_jax
    report = export_jax((module.apply, variables), x_sample, "model.onnx")

Accepted: a pair ``(apply_fn, params)``, a ``flax.nnx`` Module, or any function of the
inputs. The primitives an MLP, CNN or simple transformer uses translate (:data:`SUPPORTED`);
others raise :class:`UnsupportedJax` naming the primitive. How it works and why it is not
``jax2onnx`` or ``jax2tf``: docs/exporters.md.
"""

from .convert import SUPPORTED
from .export import export_jax
from .graph import UnsupportedJax

__all__ = ["SUPPORTED", "UnsupportedJax", "export_jax"]
