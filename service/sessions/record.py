"""What a session store keeps per session: position, recurrent state, and the last step."""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from typing_extensions import dataclass_transform

from service.repository import LoadedModel

_C = TypeVar("_C")


@dataclass_transform(frozen_default=True)
def immutable(cls: type[_C]) -> type[_C]:
    """A slots dataclass that type checkers hold frozen (assigning a field is a mypy
    error) and that is built like a plain one: a frozen dataclass's __init__ sets each
    field through object.__setattr__, which made a step's three records cost about
    3.5 µs more."""
    return dataclass(slots=True)(cls)


@immutable
class AppliedStep:
    """What a retry of the last applied step needs to get the same answer again.

    Either the answer itself (`answer`: predictions then forecast, float32) or, when
    that is larger than the replay cap, the state before the step (`h_before`,
    `c_before`): a retry carries the same values (its digest says so), and running
    them again from that state gives the same answer. Either way a session's record
    stays within a known size (docs/sessions.md).
    """

    offset: int  # where the step began: the session's offset before it
    digest: str  # step_digest() of its values and horizon
    answer: bytes | None = None  # float32 little-endian: (time + horizon, targets)
    h_before: bytes | None = None  # when answer is None: the state the step started from
    c_before: bytes | None = None


@immutable
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
    owner: str = ""  # name of the API key that created it ("" when keys are off)
    # A fresh random value with every write (new_token()): compare-and-advance
    # replaces a record only while the store still holds this very write. Offsets
    # alone do not say that: after Redis comes back from an older snapshot, or
    # fails over to a replica that missed the last writes, another history can
    # reach the same offset with a different state.
    token: str = ""


# Write tokens need uniqueness, not secrecy: a generator seeded from the OS (and again
# in every forked child) costs a fraction of a microsecond where os.urandom costs a
# system call on every step.
_tokens = random.Random()
os.register_at_fork(after_in_child=_tokens.seed)


def new_token() -> str:
    """A write token: 64 random bits, so two writes never share one."""
    return f"{_tokens.getrandbits(64):016x}"


def pack_state(array: npt.NDArray[np.floating]) -> bytes:
    """A state array as compact little-endian float32 bytes."""
    return array.astype("<f4", copy=False).tobytes()  # tobytes: C order, whatever the layout


def unpack_state(blob: bytes, shape: tuple[int, int]) -> npt.NDArray[np.float32]:
    """The inverse of pack_state, checked against the model's (num_layers, hidden).

    A read-only view of `blob`, without a copy: states are inputs, never written to.
    """
    expected = shape[0] * shape[1] * 4
    if len(blob) != expected:
        raise ValueError(f"stored state has {len(blob)} bytes, expected {expected} for {shape}")
    return np.frombuffer(blob, dtype="<f4").reshape(shape)


def step_digest(values: npt.NDArray[np.floating], horizon: int) -> str:
    """A fingerprint of a step's request: same values and horizon, same digest."""
    arr = values.astype("<f8", copy=False)
    if arr.ndim == 2:  # (time, features): the bytes of repr((arr.shape, horizon)), made faster
        head = b"((%d, %d), %d)" % (arr.shape[0], arr.shape[1], horizon)
    else:
        head = repr((arr.shape, horizon)).encode()
    return hashlib.sha256(head + arr.tobytes()).hexdigest()


# A dated model's blob ends with the grid position of the last value as int64; this
# value says the session has no time yet.
NO_TIME = -(2**63)


def pack_h(
    h: npt.NDArray[np.floating],
    levels: npt.NDArray[np.floating] | None,
    model: LoadedModel,
    time: int | None = None,
    scale: npt.NDArray[np.floating] | None = None,
) -> bytes:
    """A session's h blob: h, then for a model with a lag its levels (service.transforms)
    as a count and `lag` rows padded with zeros, then for normalized-conformal intervals
    the scale state (2 rows, service.transforms.ErrorScale; None: a fresh one), then for a
    dated model the grid position of the last value (service.calendar), so the blob keeps
    one size per model."""
    if not model.extra_state:
        return pack_state(h)
    blob = pack_state(h)
    if model.lag:
        targets = model.manifest.architecture.output_size
        padded = np.zeros((model.lag, targets), dtype="<f4")
        count = 0 if levels is None else levels.shape[0]
        if levels is not None:
            padded[:count] = levels
        blob += np.array([count], dtype="<f4").tobytes() + padded.tobytes()
    if model.error_scale is not None:
        blob += pack_state(model.error_scale.fresh() if scale is None else scale)
    if model.timed:
        blob += np.array([NO_TIME if time is None else time], dtype="<i8").tobytes()
    return blob


def unpack_h(
    blob: bytes, model: LoadedModel
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
    """The inverse of pack_h: (h, levels or None); unpack_time reads the time."""
    if not model.extra_state:
        return unpack_state(blob, model.state_shape), None
    if len(blob) != model.state_bytes:
        raise ValueError(f"stored state has {len(blob)} bytes, expected {model.state_bytes}")
    layers, hidden = model.state_shape
    size = layers * hidden * 4
    h = unpack_state(blob[:size], model.state_shape)
    if not model.lag:
        return h, None
    count = int(np.frombuffer(blob, dtype="<f4", count=1, offset=size)[0])
    targets = model.manifest.architecture.output_size
    rows = np.frombuffer(blob, dtype="<f4", count=model.lag * targets, offset=size + 4)
    rows = rows.reshape(model.lag, targets)
    return h, (rows[:count] if count else None)


def unpack_scale(blob: bytes, model: LoadedModel) -> npt.NDArray[np.float32] | None:
    """The interval scale state (2, targets) a blob carries (None: the model has none)."""
    if model.error_scale is None:
        return None
    targets = model.manifest.architecture.output_size
    end = len(blob) - (8 if model.timed else 0)
    rows = np.frombuffer(blob, dtype="<f4", count=2 * targets, offset=end - 8 * targets)
    return rows.reshape(2, targets)


def unpack_time(blob: bytes, model: LoadedModel) -> int | None:
    """The grid position a dated model's blob carries (None: none yet, or not dated)."""
    if not model.timed:
        return None
    value = int(np.frombuffer(blob, dtype="<i8", count=1, offset=len(blob) - 8)[0])
    return None if value == NO_TIME else value
