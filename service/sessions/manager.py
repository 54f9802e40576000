"""Session steps, exactly once: read, decide, run the model, compare-and-advance.

Every observe carries the offset it applies at. The manager answers a step
from the stored record when it is a retry of the last applied step, refuses a
step at any other wrong offset, and otherwise runs the model from the stored
state and writes the new record only if the store still holds the record it
read, the same offset and write token (compare-and-advance in the store). A
writer that loses that race re-reads and decides again, so no update is lost
and no step is applied twice, in one process or across replicas sharing a
store, nor applied on a state the store no longer has.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import numpy as np

from service.calendar import forecast_timestamps, timed_values
from service.inference import SeriesInput, SeriesOutput
from service.inputs import Limits, check_domain, check_horizon, values_array
from service.redaction import session_tag
from service.repository import LoadedModel, ModelLookup
from service.sessions.record import (
    AppliedStep,
    SessionRecord,
    immutable,
    new_token,
    pack_h,
    pack_state,
    step_digest,
    unpack_h,
    unpack_scale,
    unpack_state,
    unpack_time,
)
from service.sessions.store import Advance, OwnerQuota, SessionStore
from service.telemetry.context import note_model
from service.telemetry.hooks import NO_SESSION_HOOKS, SessionHooks

log = logging.getLogger(__name__)


class Run(Protocol):
    """The model runner (service.runner.ModelRunner.run); `alone`: never batched with others."""

    def __call__(
        self, model: LoadedModel, inputs: Sequence[SeriesInput], *, alone: bool = False
    ) -> Awaitable[list[SeriesOutput]]: ...


class SessionError(Exception):
    """A step or lookup the manager refuses; each protocol renders it in its own shape."""


class SessionNotFound(SessionError):
    def __init__(self, session_id: str) -> None:
        super().__init__("session does not exist (deleted, expired, never made, or not yours)")
        self.session_id = session_id


class OffsetConflict(SessionError):
    def __init__(self, given: int, current: int) -> None:
        super().__init__(
            f"offset {given} is not where the session stands: it has consumed "
            f"{current} values, so the next step must have offset {current}"
        )
        self.given = given
        self.current = current


class VersionGone(SessionError):
    def __init__(self, record: SessionRecord, why: str = "no longer has loaded") -> None:
        super().__init__(
            f"the session runs on model {record.model!r} version {record.version}, "
            f"which this server {why}; start a new session"
        )


@immutable
class StepResult:
    """One applied (or replayed) step, in original units."""

    session: str
    model: str
    version: int
    start: int  # the offset the step applied at
    offset: int  # the session's offset after the step
    predictions: np.ndarray  # (time, targets): prediction of step t+1 after each value t
    forecast: np.ndarray  # (horizon, targets)
    replayed: bool  # True when this was a retry answered without advancing the session
    forecast_timestamps: list[str] | None = None  # dated models whose session knows its time
    h: np.ndarray | None = None  # (num_layers, hidden): the session's state after the step
    c: np.ndarray | None = None  # LSTM only
    # Normalized-conformal intervals: the interval scale after the step (ErrorScale).
    scale: np.ndarray | None = None


class SessionManager:
    """Creates, steps, describes and deletes sessions over one store."""

    def __init__(
        self,
        store: SessionStore,
        repository: ModelLookup,  # the reloader: sessions follow reloads
        run: Run,
        limits: Limits,
        quota: OwnerQuota,
        *,
        replay_max_bytes: int = 64 * 1024,
        clock: Callable[[], float] = time.time,
        recent_records: int = 0,
        hooks: SessionHooks = NO_SESSION_HOOKS,
    ) -> None:
        """``recent_records``: how many sessions' latest records to keep in this process
        (0: none) so that a step on a session this process stepped last skips the read.
        ``replay_max_bytes``: the largest answer a record keeps for a retry; a larger one
        is recomputed from the state before the step (docs/sessions.md).
        """
        self.store = store
        self.repository = repository
        self.limits = limits
        self.quota = quota
        self._run = run
        self._hooks = hooks  # metrics (service.telemetry); the store comes wrapped already
        self._replay_max_bytes = replay_max_bytes
        self._clock = clock
        # The record each session had after its last step through this process, used
        # only when a step continues it exactly, and never trusted: the step's
        # compare-and-advance applies only while the store still holds that record's
        # write token. When another replica stepped the session meanwhile, the step's
        # offset is past it and the store is read. A remembered record the store no
        # longer holds (another writer at the same offset, or Redis rolled back to an
        # older snapshot or failed over to a replica that missed writes) costs one
        # wasted model run before the token check fails and a fresh read decides.
        self._recent: OrderedDict[str, SessionRecord] = OrderedDict()
        self._recent_max = recent_records
        # The sessions with a step in flight in this process, each with the steps
        # waiting for it in arrival order, so steps of one session queue instead of
        # racing (and wasting a model run) to a compare-and-advance that only one of
        # them can win. A plain dict: an uncontended step costs two dict operations.
        self._stepping: dict[str, list[asyncio.Future[None]]] = {}
        # A store in this process (the memory store) answers reads and
        # compare-and-advance at once: a step calls those, without a coroutine each.
        self._get_now: Callable[[str], SessionRecord | None] | None = getattr(
            store, "get_now", None
        )
        self._advance_now: Callable[[SessionRecord, SessionRecord], Advance] | None = getattr(
            store, "compare_and_advance_now", None
        )

    def model_of(self, record: SessionRecord) -> LoadedModel:
        """The loaded model version a session runs on; VersionGone when it is not loaded."""
        model = self.repository.get(record.model, record.version)
        if model is None:
            raise VersionGone(record)
        # A reload may have replaced the version's files with a model of another state
        # shape: such a session cannot continue on it.
        if len(record.h) != model.state_bytes or (record.c is None) == model.is_lstm:
            raise VersionGone(record, "has reloaded with another state shape")
        return model

    async def create(
        self,
        model: LoadedModel,
        owner: str,
        warmup: np.ndarray | None = None,  # (time, features) in original units, checked
        h: np.ndarray | None = None,  # (num_layers, hidden)
        c: np.ndarray | None = None,
        levels: np.ndarray | None = None,  # (<= lag, targets): models with a lag only
        time: int | None = None,  # dated models: grid position of the last value (or none)
        scale: np.ndarray | None = None,  # normalized-conformal intervals: (2, targets)
        session_id: str | None = None,
    ) -> SessionRecord:
        """A new session of `owner` at offset 0, or after the warm-up values (their calendar
        inputs joined already, service.calendar).

        `session_id`: an id the caller chose (an Open Inference Protocol sequence's), which
        the store refuses with SessionExists while a live session has it; None: a new
        random one."""
        note_model(model)
        layers, hidden = model.state_shape
        zeros = np.zeros((layers, hidden), dtype=np.float32)
        offset = 0
        if warmup is not None:
            series = SeriesInput(values=warmup, h=h, c=c, levels=levels, scale=scale)
            (out,) = await self._run(model, [series])
            h, c, levels, offset = out.h, out.c, out.levels, int(warmup.shape[0])
            scale = out.scale
        now = self._clock()
        record = SessionRecord(
            id=secrets.token_urlsafe(16) if session_id is None else session_id,
            model=model.name,
            version=model.version,
            offset=offset,
            h=pack_h(zeros if h is None else h, levels, model, time, scale),
            c=(pack_state(zeros if c is None else c) if model.manifest.is_lstm else None),
            created_at=now,
            updated_at=now,
            owner=owner,
            token=new_token(),
        )
        await self.store.create(record, self.quota)
        self._hooks.created(model)
        self._remember(record)
        log.info(
            "session %s created on %s v%d at offset %d (%s store)",
            session_tag(record.id),
            record.model,
            record.version,
            offset,
            self.store.kind,
        )
        return record

    async def get(self, session_id: str, owner: str) -> SessionRecord:
        """The session, when it exists and belongs to `owner` (else SessionNotFound)."""
        record = await self.store.get(session_id)
        # Another key's session is answered exactly like a missing one: existence is
        # not revealed.
        if record is None or record.owner != owner:
            raise SessionNotFound(session_id)
        return record

    async def delete(self, session_id: str, owner: str) -> None:
        if not await self.store.delete(session_id, owner):
            raise SessionNotFound(session_id)
        self._recent.pop(session_id, None)
        log.info("session %s deleted", session_tag(session_id))

    async def observe(
        self,
        session_id: str,
        owner: str,
        offset: int | None,
        values: Sequence[float] | Sequence[Sequence[float]] | np.ndarray,
        horizon: int,
        timestamp: str | None = None,
    ) -> StepResult:
        """Apply one step at ``offset`` exactly once and return its outputs.

        ``offset`` None: apply the step wherever the session stands when it runs (steps in
        arrival order); such a step is never taken for a retry.
        The values are checked against the session's model (service.inputs) once the
        stored record says which model that is.
        """
        waiting = self._stepping.get(session_id)
        if waiting is None:
            self._stepping[session_id] = []
        else:  # another step of this session is in flight here: wait for its end
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            waiting.append(turn)
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._next_step(session_id)  # given the turn, but gone: pass it on
                else:
                    waiting.remove(turn)
                raise
        try:
            return await self._step(session_id, owner, offset, values, horizon, timestamp)
        finally:
            self._next_step(session_id)

    def _next_step(self, session_id: str) -> None:
        """The step in flight ended: the next waiting one goes on."""
        waiting = self._stepping[session_id]
        while waiting:
            turn = waiting.pop(0)
            if not turn.done():
                turn.set_result(None)
                return
        del self._stepping[session_id]

    async def _step(
        self,
        session_id: str,
        owner: str,
        offset: int | None,
        values: Sequence[float] | Sequence[Sequence[float]] | np.ndarray,
        horizon: int,
        timestamp: str | None = None,
    ) -> StepResult:
        array: np.ndarray | None = None
        digest = ""
        # Three rounds always suffice: a lost compare-and-advance means the offset
        # moved; after a stale remembered record, a fresh read either applies the
        # step or decides it (replay or conflict), and after a race lost on a fresh
        # read, the next read decides it. (A step without an offset that loses three
        # races to other replicas is refused as a conflict, to be sent again.)
        for round_ in range(3):
            record = self._remembered(session_id, owner, offset) if round_ == 0 else None
            if record is None:
                get_now = self._get_now
                record = (
                    get_now(session_id) if get_now is not None else await self.store.get(session_id)
                )
                if record is None or record.owner != owner:
                    raise SessionNotFound(session_id)
            model = self.model_of(record)
            note_model(model)
            if array is None:
                check_horizon(horizon, model, self.limits, "horizon")
                array = values_array(values, model, self.limits, "values")
                if model.transformed:
                    check_domain(array, model, "values")
                digest = step_digest(array, horizon)
                if timestamp is not None:  # a retry must give the same stamp too
                    digest = hashlib.sha256(f"{digest} {timestamp}".encode()).hexdigest()
            # A step without an offset applies where the session stands: it is never
            # taken for a retry, nor refused as a conflict.
            if offset is not None:
                last = record.last_step
                if last is not None and last.offset == offset and last.digest == digest:
                    log.info(
                        "session %s: step at offset %d replayed", session_tag(session_id), offset
                    )
                    self._hooks.step(model, "replayed")
                    return await self._replay(model, record, last, array, horizon, timestamp)
                if offset != record.offset:
                    self._hooks.step(model, "conflict")
                    raise OffsetConflict(offset, record.offset)
            outcome, result, advanced = await self._apply(
                model, record, array, horizon, digest, timestamp
            )
            if outcome is Advance.APPLIED:
                self._hooks.step(model, "applied")
                self._remember(advanced)
                return result
            self._recent.pop(session_id, None)
            if outcome is Advance.GONE:
                raise SessionNotFound(session_id)
            log.info(
                "session %s: offset moved during the step; deciding again",
                session_tag(session_id),
            )
        current = await self.get(session_id, owner)
        self._hooks.step(model, "conflict")
        raise OffsetConflict(current.offset if offset is None else offset, current.offset)

    def _answer_fits(self, model: LoadedModel, steps: int, horizon: int) -> bool:
        return (steps + horizon) * model.manifest.architecture.output_size * 4 <= (
            self._replay_max_bytes
        )

    async def _apply(
        self,
        model: LoadedModel,
        record: SessionRecord,
        values: np.ndarray,
        horizon: int,
        digest: str,
        timestamp: str | None = None,
    ) -> tuple[Advance, StepResult, SessionRecord]:
        shape = model.state_shape
        levels = scale = None
        future = time = None
        if model.extra_state:  # levels, scale and time ride in the h blob (record.pack_h)
            h, levels = unpack_h(record.h, model)
            scale = unpack_scale(record.h, model)
        else:
            h = unpack_state(record.h, shape)
        if model.timed or timestamp is not None:
            timed = timed_values(
                model,
                values,
                horizon,
                timestamp,
                unpack_time(record.h, model),
                "timestamp",
                "a session",
            )
            values, future, time = timed.values, timed.future, timed.last
        c = unpack_state(record.c, shape) if record.c is not None else None
        steps = int(values.shape[0])
        keep_answer = self._answer_fits(model, steps, horizon)
        # A step too large to keep runs alone (never batched with other calls), as its
        # replay will, so that both give the same numbers.
        series = SeriesInput(
            values=values,
            h=h,
            c=c,
            horizon=horizon,
            levels=levels,
            future=future,
            time=time,
            scale=scale,
        )
        out = await self._run_one(model, series, alone=not keep_answer)
        predictions, forecast = out.predictions, out.forecast
        if keep_answer:  # (time + horizon, targets) float32, the two parts one after the other
            if predictions.dtype != np.float32:  # levels rebuilt in float64 (service.transforms)
                # Answered as kept, so that a retry's answer is the very same numbers.
                predictions = predictions.astype(np.float32)
                forecast = forecast.astype(np.float32)
            answer = pack_state(predictions) + pack_state(forecast)
            applied = AppliedStep(record.offset, digest, answer=answer)
        else:
            applied = AppliedStep(record.offset, digest, h_before=record.h, c_before=record.c)
        # Built field by field: dataclasses.replace costs twice as much on every step.
        advanced = SessionRecord(
            id=record.id,
            model=record.model,
            version=record.version,
            offset=record.offset + steps,
            h=pack_h(out.h, out.levels, model, time, out.scale)
            if model.extra_state
            else pack_state(out.h),
            c=pack_state(out.c) if out.c is not None else None,
            created_at=record.created_at,
            updated_at=self._clock(),
            last_step=applied,
            owner=record.owner,
            token=new_token(),
        )
        stamps = forecast_timestamps(model, time, horizon) if time is not None else None
        result = _result(
            record,
            record.offset,
            steps,
            predictions,
            forecast,
            False,
            stamps,
            out.h,
            out.c,
            out.scale,
        )
        advance_now = self._advance_now
        if advance_now is not None:
            return advance_now(record, advanced), result, advanced
        return await self.store.compare_and_advance(record, advanced), result, advanced

    async def _replay(
        self,
        model: LoadedModel,
        record: SessionRecord,
        last: AppliedStep,
        values: np.ndarray,
        horizon: int,
        timestamp: str | None = None,
    ) -> StepResult:
        steps = int(values.shape[0])
        # The last step's: the state the session holds now.
        h_after = unpack_h(record.h, model)[0]
        c_after = unpack_state(record.c, model.state_shape) if record.c is not None else None
        scale_after = unpack_scale(record.h, model)
        if last.answer is not None:
            targets = model.manifest.architecture.output_size
            if len(last.answer) != (steps + horizon) * targets * 4:
                raise VersionGone(record, "has reloaded with another output size")
            both = np.frombuffer(last.answer, dtype="<f4").reshape(-1, targets)
            both = both.astype(np.float32)
            stamps = None
            if model.timed:  # the record is the one the step made: its time is the step's
                stamps = forecast_timestamps(model, unpack_time(record.h, model), horizon)
            return _result(
                record,
                last.offset,
                steps,
                both[:steps],
                both[steps:],
                True,
                stamps,
                h_after,
                c_after,
                scale_after,
            )
        shape = model.state_shape
        h, levels = unpack_h(last.h_before, model) if last.h_before is not None else (None, None)
        c = unpack_state(last.c_before, shape) if last.c_before is not None else None
        future = time = None
        if model.timed and last.h_before is not None:
            before = unpack_time(last.h_before, model)
            timed = timed_values(model, values, horizon, timestamp, before, "timestamp")
            values, future, time = timed.values, timed.future, timed.last
        series = SeriesInput(
            values=values, h=h, c=c, horizon=horizon, levels=levels, future=future, time=time
        )
        out = await self._run_one(model, series, alone=True)
        stamps = forecast_timestamps(model, time, horizon)
        return _result(
            record,
            last.offset,
            steps,
            out.predictions,
            out.forecast,
            True,
            stamps,
            h_after,
            c_after,
            scale_after,
        )

    async def _run_one(self, model: LoadedModel, series: SeriesInput, alone: bool) -> SeriesOutput:
        """The model's output for one series (`alone`: never batched with other calls)."""
        (out,) = await self._run(model, [series], alone=alone)
        return out

    def _remembered(self, session_id: str, owner: str, offset: int | None) -> SessionRecord | None:
        """The remembered record, only when the step continues it exactly (or, for a step
        with no offset, whatever it holds: the compare-and-advance checks it)."""
        record = self._recent.get(session_id)
        if record is None or record.owner != owner:
            return None
        if offset is not None and record.offset != offset:
            return None
        return record

    def _remember(self, record: SessionRecord) -> None:
        if self._recent_max <= 0:
            return
        self._recent[record.id] = record
        self._recent.move_to_end(record.id)
        while len(self._recent) > self._recent_max:
            self._recent.popitem(last=False)


def _result(
    record: SessionRecord,
    start: int,
    steps: int,
    predictions: np.ndarray,
    forecast: np.ndarray,
    replayed: bool,
    stamps: list[str] | None = None,
    h: np.ndarray | None = None,
    c: np.ndarray | None = None,
    scale: np.ndarray | None = None,
) -> StepResult:
    return StepResult(
        session=record.id,
        model=record.model,
        version=record.version,
        start=start,
        offset=start + steps,
        predictions=predictions,
        forecast=forecast,
        replayed=replayed,
        forecast_timestamps=stamps,
        h=h,
        c=c,
        scale=scale,
    )
