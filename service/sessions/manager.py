"""Session steps, exactly once: read, decide, run the model, compare-and-advance.

Every observe carries the offset it applies at. The manager answers a step
from the stored record when it is a retry of the last applied step, refuses a
step at any other wrong offset, and otherwise runs the model from the stored
state and writes the new record only if the offset has not moved meanwhile
(compare-and-advance in the store). A writer that loses that race re-reads
and decides again, so no update is lost and no step is applied twice, in one
process or across replicas sharing a store.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import orjson

from service.inference import SeriesInput, SeriesOutput
from service.repository import LoadedModel, ModelRepository
from service.sessions.record import (
    AppliedStep,
    SessionRecord,
    pack_state,
    step_digest,
    unpack_state,
)
from service.sessions.store import Advance, SessionStore

log = logging.getLogger(__name__)

Runner = Callable[[LoadedModel, Sequence[SeriesInput]], Awaitable[list[SeriesOutput]]]
Encoder = Callable[[LoadedModel, np.ndarray], object]  # (rows, targets) -> JSON-able value
Prepare = Callable[[LoadedModel], np.ndarray]  # request values -> (time, features) for a model


class SessionError(Exception):
    """A step or lookup the manager refuses; routes turn it into an error answer."""


class SessionNotFound(SessionError):
    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} does not exist (deleted, expired or never made)")
        self.session_id = session_id


class OffsetConflict(SessionError):
    def __init__(self, session_id: str, given: int, current: int) -> None:
        super().__init__(
            f"offset {given} is not where session {session_id!r} stands: it has consumed "
            f"{current} values, so the next step must have offset {current}"
        )
        self.given = given
        self.current = current


class VersionGone(SessionError):
    def __init__(self, record: SessionRecord) -> None:
        super().__init__(
            f"session {record.id!r} runs on model {record.model!r} version {record.version}, "
            "which this server no longer has loaded; start a new session"
        )


@dataclass(frozen=True)
class StepResult:
    body: bytes  # the answer, JSON
    offset: int  # the session's offset after the step
    replayed: bool  # True when this was a retry answered from the stored step


class SessionManager:
    """Creates, steps, describes and deletes sessions over one store."""

    def __init__(
        self,
        store: SessionStore,
        repository: ModelRepository,
        run: Runner,
        encode: Encoder,
        clock: Callable[[], float] = time.time,
        recent_records: int = 0,
    ) -> None:
        """``recent_records``: how many sessions' latest records to keep in this process
        (0: none) so that a step on a session this process stepped last skips the read.
        """
        self.store = store
        self.repository = repository
        self._run = run
        self._encode = encode
        self._clock = clock
        # The record each session had after its last step through this process, used
        # only when a step continues it exactly. When another replica stepped the
        # session meanwhile, the step's offset is past it and the store is read; only
        # a concurrent step from the same offset finds it stale, and then costs one
        # wasted model run before its compare-and-advance fails and a fresh read decides.
        self._recent: OrderedDict[str, SessionRecord] = OrderedDict()
        self._recent_max = recent_records
        # One lock per session id while any step on it is in flight, so steps of one
        # session in this process queue instead of racing (and wasting a model run)
        # to a compare-and-advance that only one of them can win.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def model_of(self, record: SessionRecord) -> LoadedModel:
        """The loaded model version a session runs on; VersionGone when it is not loaded."""
        model = self.repository.get(record.model, record.version)
        if model is None:
            raise VersionGone(record)
        return model

    async def create(
        self,
        model: LoadedModel,
        warmup: np.ndarray | None = None,  # (time, features) in original units
        h: np.ndarray | None = None,  # (num_layers, hidden)
        c: np.ndarray | None = None,
    ) -> SessionRecord:
        """A new session at offset 0, or after the warm-up values from the given state."""
        layers, hidden = model.state_shape
        zeros = np.zeros((layers, hidden), dtype=np.float32)
        offset = 0
        if warmup is not None:
            (out,) = await self._run(model, [SeriesInput(values=warmup, h=h, c=c)])
            h, c, offset = out.h, out.c, int(warmup.shape[0])
        now = self._clock()
        record = SessionRecord(
            id=secrets.token_urlsafe(16),
            model=model.name,
            version=model.version,
            offset=offset,
            h=pack_state(zeros if h is None else h),
            c=(pack_state(zeros if c is None else c) if model.manifest.is_lstm else None),
            created_at=now,
            updated_at=now,
        )
        await self.store.create(record)
        self._remember(record)
        log.info(
            "session %s created on %s v%d at offset %d (%s store)",
            record.id,
            record.model,
            record.version,
            offset,
            self.store.kind,
        )
        return record

    async def get(self, session_id: str) -> SessionRecord:
        record = await self.store.get(session_id)
        if record is None:
            raise SessionNotFound(session_id)
        return record

    async def delete(self, session_id: str) -> None:
        self._recent.pop(session_id, None)
        if not await self.store.delete(session_id):
            raise SessionNotFound(session_id)
        log.info("session %s deleted", session_id)

    async def observe(
        self,
        session_id: str,
        offset: int,
        prepare: Prepare,
        horizon: int,
    ) -> StepResult:
        """Apply one step at ``offset`` exactly once and return its answer.

        ``prepare`` turns the request's values into a (time, features) array for the
        session's model (validating them against it), since only the stored record
        says which model that is.
        """
        lock = self._locks.setdefault(session_id, asyncio.Lock())
        async with lock:
            values: np.ndarray | None = None
            digest = ""
            # Three rounds always suffice: a lost compare-and-advance means the offset
            # moved; after a stale remembered record, a fresh read either applies the
            # step or decides it (replay or conflict), and after a race lost on a fresh
            # read, the next read decides it.
            for round_ in range(3):
                record = self._remembered(session_id, offset) if round_ == 0 else None
                if record is None:
                    record = await self.get(session_id)
                model = self.model_of(record)
                if values is None:
                    values = prepare(model)
                    digest = step_digest(values, horizon)
                last = record.last_step
                if last is not None and last.offset == offset and last.digest == digest:
                    log.info("session %s: step at offset %d replayed", session_id, offset)
                    return StepResult(body=last.response, offset=record.offset, replayed=True)
                if offset != record.offset:
                    raise OffsetConflict(session_id, offset, record.offset)
                outcome, advanced = await self._apply(model, record, values, horizon, digest)
                if outcome is Advance.APPLIED:
                    self._remember(advanced)
                    assert advanced.last_step is not None
                    return StepResult(
                        body=advanced.last_step.response, offset=advanced.offset, replayed=False
                    )
                self._recent.pop(session_id, None)
                if outcome is Advance.GONE:
                    raise SessionNotFound(session_id)
                log.info("session %s: offset moved during the step; deciding again", session_id)
            current = await self.get(session_id)
            raise OffsetConflict(session_id, offset, current.offset)

    async def _apply(
        self,
        model: LoadedModel,
        record: SessionRecord,
        values: np.ndarray,
        horizon: int,
        digest: str,
    ) -> tuple[Advance, SessionRecord]:
        shape = model.state_shape
        h = unpack_state(record.h, shape)
        c = unpack_state(record.c, shape) if record.c is not None else None
        (out,) = await self._run(model, [SeriesInput(values=values, h=h, c=c, horizon=horizon)])
        new_offset = record.offset + int(values.shape[0])
        body = orjson.dumps(
            {
                "session": record.id,
                "model": record.model,
                "version": record.version,
                "start": record.offset,
                "offset": new_offset,
                "predictions": self._encode(model, out.predictions),
                "forecast": self._encode(model, out.forecast),
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
        advanced = replace(
            record,
            offset=new_offset,
            h=pack_state(out.h),
            c=pack_state(out.c) if out.c is not None else None,
            updated_at=self._clock(),
            last_step=AppliedStep(offset=record.offset, digest=digest, response=body),
        )
        return await self.store.compare_and_advance(record.offset, advanced), advanced

    def _remembered(self, session_id: str, offset: int) -> SessionRecord | None:
        """The remembered record, only when the step continues it exactly."""
        record = self._recent.get(session_id)
        return record if record is not None and record.offset == offset else None

    def _remember(self, record: SessionRecord) -> None:
        if self._recent_max <= 0:
            return
        self._recent[record.id] = record
        self._recent.move_to_end(record.id)
        while len(self._recent) > self._recent_max:
            self._recent.popitem(last=False)
