"""KServe V2 over gRPC: Triton's inference.GRPCInferenceService (service), protobuf messages
<-> V2 structures (codec), and the generated messages (gen)."""
