"""Generated protobuf messages of the KServe V2 / Triton gRPC protocol (package `inference`).
Do not edit: regenerate with generate.sh from the vendored .proto files."""
