"""Service settings: one typed object read from `SEQCAST_` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]


class Settings(BaseSettings):
    """Everything the service can be told; each field is `SEQCAST_<FIELD>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="SEQCAST_", extra="ignore", frozen=True)

    # Network and process.
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    log_level: LogLevel = "info"
    access_log: bool = True  # one uvicorn log line per request

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
    # Answer predict requests straight from ASGI, ahead of FastAPI's routing (same answers,
    # less overhead per request; see docs/benchmarks.md). Off: the FastAPI routes answer.
    fast_path: bool = True

    # Request limits.
    max_series_per_request: Annotated[int, Field(ge=1)] = 256
    max_values_per_series: Annotated[int, Field(ge=1)] = 10_000
    max_horizon: Annotated[int, Field(ge=1)] = 512
    max_body_bytes: Annotated[int, Field(ge=1024)] = 8 * 1024 * 1024

    # Server-held sessions (docs/sessions.md).
    # "memory": in this process, bounded by session_max; "redis": shared by every replica.
    session_store: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Seconds a session lives without a step; each applied step starts the clock again.
    session_ttl_s: Annotated[float, Field(gt=0)] = 3600.0
    # Memory store only: live sessions at most; beyond it creation answers 503.
    session_max: Annotated[int, Field(ge=1)] = 100_000
    # Redis connect and command timeout: how long a request may wait before a 503.
    redis_timeout_s: Annotated[float, Field(gt=0)] = 1.0
    # Redis connections per service process; more concurrent steps wait for one.
    redis_max_connections: Annotated[int, Field(ge=1)] = 64

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

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_log_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value
