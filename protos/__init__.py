"""The gRPC contract (``layerscope/v1/*.proto``) and its generated Python stubs."""
