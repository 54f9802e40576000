"""Request and response bodies of the session API and the stream's frames."""

from __future__ import annotations

from pydantic import BaseModel, Field

from service.api.schemas import (
    Integer,
    Interval,
    IntervalLevels,
    Output,
    State,
    StrictModel,
    Values,
)


class CreateSessionRequest(StrictModel):
    """Start a session: from zeros, from a state an earlier answer gave, and/or after warm-up."""

    values: Values | None = Field(
        None, description="warm-up observations consumed at creation; the offset starts after them"
    )
    state: State | None = Field(
        None, description="state to start from (from a predict answer); omitted: zeros"
    )


class ObserveRequest(StrictModel):
    """One step: the next observations, where they start, and how far to forecast."""

    values: Values
    offset: Integer = Field(
        ge=0,
        description="count of values the session has consumed before these (exactly-once key)",
    )
    horizon: Integer = Field(1, ge=1, description="forecast steps after the values")
    intervals: IntervalLevels | None = None


class StreamFrame(StrictModel):
    """A WebSocket observation frame; `offset` defaults to where this connection stands."""

    values: Values
    offset: Integer | None = Field(None, ge=0)
    horizon: Integer = Field(1, ge=1)
    intervals: IntervalLevels | None = None


class SessionInfo(BaseModel):
    session: str = Field(description="session id")
    model: str
    version: int
    offset: int = Field(description="values consumed so far: the offset of the next step")
    created_at: str = Field(description="RFC 3339, UTC")
    updated_at: str = Field(description="RFC 3339, UTC; the idle TTL counts from here")
    expires_at: str = Field(description="RFC 3339, UTC, unless another step comes first")
    state: State | None = Field(None, description="present when asked for with ?state=true")


class ObserveResponse(BaseModel):
    session: str
    model: str
    version: int
    start: int = Field(description="offset this step applied at")
    offset: int = Field(description="offset after this step: the next step's offset")
    predictions: Output = Field(description="prediction of step t+1 after each observed value t")
    forecast: Output = Field(description="next `horizon` steps after the observed values")
    intervals: list[Interval] | None = Field(None, description="when intervals were asked for")
