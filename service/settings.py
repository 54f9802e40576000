"""Service settings: one typed object read from `SEQCAST_` environment variables."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Groups of paths SEQCAST_AUTH_EXEMPT can free from needing a key.
AUTH_EXEMPT_GROUPS = ("health", "docs", "metrics")
LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]


class Settings(BaseSettings):
    """Everything the service can be told; each field is `SEQCAST_<FIELD>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="SEQCAST_", extra="ignore", frozen=True)

    # Network and process.
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    log_level: LogLevel = "info"
    # One log line per request from the front door: method, path (session ids as short
    # tags), status, duration, request id and key name.
    access_log: bool = True

    # Models and how they run.
    model_dir: Path = Path("models")
    # "auto" (CUDA when onnxruntime offers it, then CPU) or a comma list such as
    # "CUDAExecutionProvider,CPUExecutionProvider"; checked against onnxruntime at start-up.
    providers: str = "auto"
    # ONNX Runtime thread pools per model; 0 lets onnxruntime pick (one per core). One
    # intra-op thread is fastest for small recurrent models under concurrent requests.
    intra_op_threads: Annotated[int, Field(ge=0, le=256)] = 1
    inter_op_threads: Annotated[int, Field(ge=0, le=256)] = 1
    # Requests whose work (series x (time steps + horizon)) is at most this many steps run
    # inline on the event loop; larger ones go to the thread pool (see docs/api.md).
    inline_max_steps: Annotated[int, Field(ge=0)] = 1024

    # API keys (docs/security.md). Either or both; none set: no key is asked for.
    # Entries are name:secret or name:sha256:<hex>, comma-separated here ...
    api_keys: SecretStr = SecretStr("")
    # ... or one per line in this file (blank lines and # comments allowed).
    api_keys_file: Path | None = None
    # Paths answered without a key when keys are on: "health" (/healthz, /readyz),
    # "docs" (/docs, /openapi.json and their assets), "metrics" (/metrics);
    # comma-separated, or "none".
    auth_exempt: str = "health"
    # Browser origins (scheme://host[:port]) allowed besides the service's own host:
    # requests from other origins get 403, and these get CORS headers. Empty: none.
    allowed_origins: str = ""

    # Request limits.
    max_series_per_request: Annotated[int, Field(ge=1)] = 256
    max_values_per_series: Annotated[int, Field(ge=1)] = 10_000
    max_horizon: Annotated[int, Field(ge=1)] = 512
    max_body_bytes: Annotated[int, Field(ge=1024)] = 8 * 1024 * 1024

    # Server-held sessions (docs/sessions.md).
    # "memory": in this process, bounded by session_max; "redis": shared by every replica.
    session_store: Literal["memory", "redis"] = "memory"
    # May hold a password (redis://:secret@host:6379/0); it is redacted everywhere.
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    # Seconds a session lives without a step; each applied step starts the clock again.
    session_ttl_s: Annotated[float, Field(gt=0)] = 3600.0
    # Memory store only: live sessions at most; beyond it creation answers 503.
    session_max: Annotated[int, Field(ge=1)] = 100_000
    # Per API key (or for everyone, when keys are off): live sessions at most, and
    # creates per second with a burst; beyond them creation answers 429 + Retry-After.
    session_quota_live: Annotated[int, Field(ge=1)] = 10_000
    session_quota_rate: Annotated[float, Field(gt=0)] = 50.0
    session_quota_burst: Annotated[int, Field(ge=1)] = 500
    # The largest last answer a session keeps for a retry; a larger step is recomputed
    # from the state before it on a retry. Bounds each session's memory (docs/sessions.md).
    session_replay_max_bytes: Annotated[int, Field(ge=0)] = 64 * 1024
    # /readyz answers 503 while the session store does not answer a ping; off for a
    # predict-only deployment that should stay in rotation without its Redis.
    ready_needs_store: bool = True
    # Redis connect and command timeout: how long a request may wait before a 503.
    redis_timeout_s: Annotated[float, Field(gt=0)] = 1.0
    # Redis connections per service process; more concurrent steps wait for one.
    redis_max_connections: Annotated[int, Field(ge=1)] = 64

    # Reloading the model repository without a restart (docs/model-repository.md).
    # Names of keys in SEQCAST_API_KEYS that may call the /admin endpoints, comma-separated;
    # empty: the /admin endpoints are not served (404).
    admin_keys: str = ""
    # Seconds between re-scans of model_dir by every worker; 0: re-scan only on SIGHUP or
    # POST /admin/reload.
    reload_poll_s: Annotated[float, Field(ge=0)] = 0.0

    @field_validator("admin_keys")
    @classmethod
    def _admin_key_names(cls, value: str) -> str:
        names = [n.strip() for n in value.split(",") if n.strip()]
        for name in names:
            if not re.match(r"^[A-Za-z0-9._-]{1,64}$", name):
                raise ValueError(f"admin_keys: {name!r} is not a key name")
        return ",".join(names)

    @property
    def admin_key_names(self) -> frozenset[str]:
        return frozenset(n for n in self.admin_keys.split(",") if n)

    # Bounds on memory and time (docs/operations.md).
    # Steps (series x time steps) one ONNX Runtime run covers; longer inputs run in
    # consecutive chunks carrying the state, so its buffers stay this size.
    chunk_steps: Annotated[int, Field(ge=1)] = 32_768
    # ONNX Runtime's CPU memory arena: faster with chunked runs; off returns every
    # buffer to the system after each run (docs/operations.md has the measurement).
    ort_cpu_arena: bool = True
    # Fixed glibc malloc thresholds (service.malloc): memory freed after large requests
    # returns to the system; false keeps glibc's adaptive ones.
    fixed_malloc_thresholds: bool = True
    # Work in one predict request: values + horizon - 1, summed over its series
    # (more: 422 limit_exceeded). At least one series of the largest size allowed.
    max_work_per_request: Annotated[int, Field(ge=1)] = 2_700_000
    # Thread-pool runs at once (large requests); 0: one fewer than the CPUs this
    # process may use, at least 1, so the event loop keeps a core for small ones.
    pool_runs: Annotated[int, Field(ge=0, le=1024)] = 0
    # Work (steps) that may wait for a thread-pool slot; beyond it 503 + Retry-After.
    pool_queue_steps: Annotated[int, Field(ge=0)] = 8_100_000
    # Seconds a connection may take to send a request's headers (from its first byte,
    # or from the connection's opening), and its whole body after them: 408, closed.
    header_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    body_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    # Seconds an idle keep-alive connection stays open between requests.
    keep_alive_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    # On SIGTERM/SIGINT: seconds in-flight requests may take to finish before they
    # are cut; then the process exits 0.
    shutdown_timeout_s: Annotated[float, Field(ge=0)] = 8.0
    # Open connections per worker process; more are answered 503 and closed.
    max_connections: Annotated[int, Field(ge=1)] = 2048
    # Observability (docs/observability.md).
    # Prometheus metrics at /metrics (behind the API keys unless SEQCAST_AUTH_EXEMPT
    # names "metrics"); off: no /metrics and nothing is counted.
    metrics: bool = True
    # OpenTelemetry spans for requests, batches, ONNX Runtime runs and session store
    # calls; needs the otel extra (pip install 'seqcast[otel]').
    tracing: bool = False
    # "text": one line per record as before; "json": one JSON object per line.
    log_format: Literal["text", "json"] = "text"
    # Dated models and input ranges (docs/forecasting-real-data.md).
    # Log a warning line for each request with input values far outside the training
    # range of a model whose manifest records it (they are counted either way).
    log_far_out: bool = False

    @field_validator("providers")
    @classmethod
    def _providers_well_formed(cls, value: str) -> str:
        names = [p.strip() for p in value.split(",")]
        if value.strip() == "auto":
            return "auto"
        if not names or any(not n for n in names):
            raise ValueError(f"providers must be 'auto' or a comma list of names, got {value!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"providers lists a name twice: {value!r}")
        return ",".join(names)

    @field_validator("tracing")
    @classmethod
    def _tracing_installed(cls, value: bool) -> bool:
        if value and not _installed("opentelemetry.sdk.trace"):
            raise ValueError(
                "tracing needs OpenTelemetry, which is not installed: pip install 'seqcast[otel]'"
            )
        return value

    @field_validator("auth_exempt")
    @classmethod
    def _exempt_groups(cls, value: str) -> str:
        groups = {g.strip() for g in value.split(",") if g.strip()} - {"none"}
        unknown = groups - set(AUTH_EXEMPT_GROUPS)
        if unknown:
            raise ValueError(
                f"auth_exempt names unknown group(s) {sorted(unknown)}; "
                f"known: {sorted(AUTH_EXEMPT_GROUPS)} or 'none'"
            )
        return ",".join(sorted(groups))

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        origins = [o.strip().rstrip("/") for o in value.split(",") if o.strip()]
        for origin in origins:
            if not re.match(r"^https?://[^/\s]+$", origin):
                raise ValueError(f"allowed_origins: {origin!r} is not scheme://host[:port]")
        return ",".join(origins)

    @property
    def exempt_groups(self) -> frozenset[str]:
        return frozenset(g for g in self.auth_exempt.split(",") if g)

    @property
    def origins(self) -> frozenset[str]:
        return frozenset(o for o in self.allowed_origins.split(",") if o)

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_log_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _work_fits_one_series(self) -> Settings:
        # Session steps are single series checked by the per-series limits only.
        one_series = self.max_values_per_series + self.max_horizon - 1
        if self.max_work_per_request < one_series:
            raise ValueError(
                f"max_work_per_request={self.max_work_per_request} is below one series of "
                f"the largest size (max_values_per_series + max_horizon - 1 = {one_series})"
            )
        return self


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False
