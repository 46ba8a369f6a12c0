"""patterns-server: Redis patterns offered to any language over gRPC."""
