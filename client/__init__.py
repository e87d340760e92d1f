"""layerscope's client side: the Python client, its result types, and the ``layerscope``
command line. It stands on ``layerscope.protos`` only and needs grpcio, protobuf and NumPy.

    from layerscope.client import Client

    with Client.local() as c:                      # or Client("host:50051", token="...")
        result = c.analyze_layers("model.onnx", {"image": x}, labels=y)
"""

from ..protos.options import IndexOptions, OptionError
from .client import Client, LayerscopeError
from .results import (
    CertifyResult,
    CompressionResult,
    Dataset,
    IndicesResult,
    Job,
    LayerInfo,
    LayerwiseResult,
    Model,
    RankingResult,
    Reference,
    TensorInfo,
    TensorSpec,
)

__all__ = [
    "CertifyResult", "Client", "CompressionResult", "Dataset", "IndexOptions", "IndicesResult",
    "Job", "LayerInfo", "LayerscopeError", "LayerwiseResult", "Model", "OptionError",
    "RankingResult", "Reference", "TensorInfo", "TensorSpec",
]
