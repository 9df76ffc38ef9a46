"""Seeing one request: request IDs, the phases' times (Server-Timing, the access log),
structured logs and OpenTelemetry traces. See docs/observability.md.

- request.py: one request's record (ID, caller's trace, phase marks), carried in a context
  variable from the adapter through the DataPlane to the batcher.
- observer.py: what the adapters call at a request's start and end.
- logs.py: text or JSON logs, the access log.
- trace_settings.py: Triton's trace settings and the sampling decision.
- tracing.py: the OpenTelemetry spans (imported only when tracing is configured).
"""
