"""Generated protobuf and gRPC code for the fedsuite.v1 API."""
