"""Observability: Prometheus metrics, OpenTelemetry traces and structured logs.

Modules (imported where used; this package imports nothing, so that the runner and the
session manager can import the light `context` and `hooks` modules without pulling in
the rest):

- context: which model version the request being handled used (logs, metrics, traces)
- hooks: what the runner and the session manager call; no-ops unless telemetry is on
- families: metric values, in this process or in files shared by worker processes
- metrics: every metric seqcast exports, the front door observer and /metrics
- store: a session store that measures the store it wraps
- tracing: spans (the optional `otel` extra)
- logs: text or JSON log lines
- setup: all of the above built from the settings, for the app factory
"""
