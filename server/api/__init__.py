"""The gRPC API: servicers, auth, errors, and the `serve` entry point."""
