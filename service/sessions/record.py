"""What a session store keeps per session: position, recurrent state, and the last step."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class AppliedStep:
    """The last step a session applied, kept so that a retry of it gets the same answer."""

    offset: int  # where the step began: the session's offset before it
    digest: str  # step_digest() of its values and horizon
    response: bytes  # the answer body exactly as it was sent


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One server-held session. Immutable: a step produces a new record."""

    id: str
    model: str
    version: int
    offset: int  # count of values (time steps) the session has consumed
    h: bytes  # float32 little-endian, (num_layers, hidden)
    c: bytes | None  # same layout, LSTM only
    created_at: float  # unix seconds
    updated_at: float  # unix seconds; the idle TTL counts from here
    last_step: AppliedStep | None = None


def pack_state(array: npt.NDArray[np.floating]) -> bytes:
    """A state array as compact little-endian float32 bytes."""
    return np.ascontiguousarray(array, dtype="<f4").tobytes()


def unpack_state(blob: bytes, shape: tuple[int, int]) -> npt.NDArray[np.float32]:
    """The inverse of pack_state, checked against the model's (num_layers, hidden)."""
    expected = shape[0] * shape[1] * 4
    if len(blob) != expected:
        raise ValueError(f"stored state has {len(blob)} bytes, expected {expected} for {shape}")
    return np.frombuffer(blob, dtype="<f4").reshape(shape).astype(np.float32)


def step_digest(values: npt.NDArray[np.floating], horizon: int) -> str:
    """A fingerprint of a step's request: same values and horizon, same digest."""
    arr = np.ascontiguousarray(values, dtype="<f8")
    h = hashlib.sha256()
    h.update(repr((arr.shape, horizon)).encode())
    h.update(arr.tobytes())
    return h.hexdigest()
