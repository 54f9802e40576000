"""Open Inference Protocol sequences on seqcast's server sessions.

A request with a `sequence_id` (a uint64 or a string) is one step of that sequence; the
sequence is a server session (service.sessions) whose id is derived from the API key,
the model name and the sequence id, so it is found from any replica sharing the store,
is never another key's, and needs no table of its own:

- `sequence_start`: a new session (from zeros, or from the h and c inputs), then the
  step at offset 0. A start without `sequence_offset` replaces a sequence of the same
  id that is still live; with `sequence_offset: 0` it is a step like any other, so a
  retried start is answered again instead of starting over.
- a step: applied to the session. With `sequence_offset` exactly once (a retry of the
  last step gets its answer again, a wrong offset gets 409); without, where the
  sequence stands, in arrival order.
- `sequence_end`: the step is answered, then the session deleted.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib

import numpy as np

from service.api.schemas import H_LIMIT
from service.inputs import InputError, shown, state_rows
from service.oip.model import SequenceParams, plain_only
from service.repository import LoadedModel
from service.sessions.manager import SessionManager, SessionNotFound, StepResult
from service.sessions.record import SessionRecord
from service.sessions.store import SessionExists


def session_id(owner: str, model: str, sequence: int | str) -> str:
    """The session a sequence lives in: 32 URL-safe characters, the same in every replica.

    A uint64 and a string are different ids (42 is not "42"), as in Triton."""
    kind = "u" if isinstance(sequence, int) else "s"
    key = f"oip\0{owner}\0{model}\0{kind}:{sequence}".encode()
    return base64.urlsafe_b64encode(hashlib.sha256(key).digest()[:24]).decode()


def shown_id(sequence: int | str) -> str:
    return str(sequence) if isinstance(sequence, int) else repr(shown(sequence))


class NotActive(InputError):
    """A step of a sequence that has no live session (never started, ended, expired)."""

    def __init__(self, sequence: int | str, model: str) -> None:
        super().__init__(
            "sequence_not_active",
            f"sequence {shown_id(sequence)} of model {model!r} is not active (it never "
            "started, it ended, or it expired after SEQCAST_SESSION_TTL_S idle seconds): "
            "send its first request with sequence_start=true",
            "parameters.sequence_id",
        )


async def step(
    sessions: SessionManager,
    owner: str,
    model_name: str,
    start_model: LoadedModel | None,  # the version a start begins on; None: not a start
    version: int | None,  # the version the path names, if any
    sequence: SequenceParams,
    values: np.ndarray,  # [1, T, F], not yet checked
    h: np.ndarray | None,  # [1, L, H] to seed a start
    c: np.ndarray | None,
    horizon: int,
) -> StepResult:
    """One request of a sequence: start, step and end as the module says."""
    if start_model is not None:
        plain_only(start_model)
    sid = session_id(owner, model_name, sequence.id)
    if values.shape[0] != 1:
        raise InputError(
            "invalid_shape",
            f"a sequence request carries one series: values has batch {values.shape[0]}, not 1",
            "values",
        )
    if sequence.start:
        assert start_model is not None
        h0, c0 = state_rows(h, c, start_model, 1, H_LIMIT)
        await _begin(
            sessions,
            start_model,
            owner,
            sid,
            None if h0 is None else h0[0],
            None if c0 is None else c0[0],
            replace=sequence.offset is None,
        )
    else:
        if h is not None or c is not None:
            raise InputError(
                "invalid_value",
                "the inputs h and c seed a sequence at its start (sequence_start=true); "
                "afterwards the server holds its state",
                "inputs.h" if h is not None else "inputs.c",
            )
        if version is not None:
            record = await _live(sessions, sid, owner, sequence, model_name)
            if record.version != version:
                raise InputError(
                    "version_mismatch",
                    f"sequence {shown_id(sequence.id)} runs on version {record.version} of "
                    f"model {model_name!r}, not version {version}",
                    "version",
                )
    try:
        result = await sessions.observe(sid, owner, sequence.offset, values[0], horizon)
    except SessionNotFound:
        raise NotActive(sequence.id, model_name) from None
    if sequence.end:
        with contextlib.suppress(SessionNotFound):  # a concurrent end of the same sequence
            await sessions.delete(sid, owner)
    return result


async def _live(
    sessions: SessionManager, sid: str, owner: str, sequence: SequenceParams, model_name: str
) -> SessionRecord:
    try:
        return await sessions.get(sid, owner)
    except SessionNotFound:
        raise NotActive(sequence.id, model_name) from None


async def _begin(
    sessions: SessionManager,
    model: LoadedModel,
    owner: str,
    sid: str,
    h: np.ndarray | None,
    c: np.ndarray | None,
    *,
    replace: bool,
) -> None:
    """Create the sequence's session; an existing one is replaced, or (with an offset)
    kept for the step at offset 0 to decide: a retry of the start, or a conflict."""
    try:
        await sessions.create(model, owner, None, h, c, session_id=sid)
        return
    except SessionExists:
        if not replace:
            return
    with contextlib.suppress(SessionNotFound):
        await sessions.delete(sid, owner)
    await sessions.create(model, owner, None, h, c, session_id=sid)
