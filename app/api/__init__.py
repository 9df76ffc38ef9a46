"""The protocol adapters over the data plane, and what they share.

- app.api.http: the FastAPI routers and middleware (/v1, health, metrics, docs, V2 over HTTP,
  the repository extension);
- app.api.grpc: KServe V2 over gRPC (Triton's GRPCInferenceService) and its generated messages;
- app.api.v2: the KServe V2 protocol itself, transport-free (tensor codec, metadata schema);
- here: what both adapters share: the error-to-status table (errors), per-request telemetry
  (recording) and the input parsers (inputs).

Nothing outside app/api imports from here but main.py; no adapter imports another
(tests/test_layout.py).
"""
