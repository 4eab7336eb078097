"""The gRPC API of a running node: the ``shoal.v1.Storage`` service (see docs/grpc.md)."""

from __future__ import annotations

from shoal.api.grpc.server import GrpcServer, parse_grpc_address, serve_grpc
from shoal.api.grpc.service import StorageService

__all__ = ["GrpcServer", "StorageService", "parse_grpc_address", "serve_grpc"]
