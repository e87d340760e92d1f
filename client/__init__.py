"""layerscope's client side: the `layerscope` command line (and, later, the gRPC client)."""
