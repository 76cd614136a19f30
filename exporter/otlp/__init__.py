"""Claude Code's own telemetry as a source: an OTLP/HTTP receiver (``kind: otlp``).

- ``decode``: an OTLP request (protobuf or JSON, gzip or not) as typed rows: api_request
  events and cost and token metric points, and what was rejected and why.
- ``sink``: those rows counted exactly once: deduplicated, metric temporalities and resets
  turned into increments, events and metrics of one session reconciled, committed with the
  ingestor's batch in one transaction of the state database before the request is answered.
- ``view``: what pools and labels need of the telemetry attributes (per pool, per value).
- ``receiver``: the HTTP side, on the exporter's own server machinery (TLS, basic auth or a
  bearer token), answering ``/v1/logs`` and ``/v1/metrics``.
"""
