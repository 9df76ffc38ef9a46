"""The KServe V2 / Open Inference Protocol, transport-free: the tensor codec and the metadata,
config and statistics schema, shared by the HTTP and gRPC adapters."""
