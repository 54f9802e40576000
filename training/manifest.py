"""The manifest of one model version (docs/model-repository.md, format_version 1).

The one schema of the model repository: training builds and validates its manifests with it
before writing them, and the service validates what it loads with it. The service imports
this module, so it must stay torch-free: pydantic and the standard library only.
"""

from __future__ import annotations

import calendar as _calendar
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

# Model names: also the directory names of the repository, so no path separators.
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
_NAME_RE = re.compile(NAME_PATTERN)


def check_name(name: str) -> None:
    """Raise ValueError unless `name` can name a model (checked before any training starts)."""
    if not _NAME_RE.match(name):
        raise ValueError(f"model name {name!r} must match {NAME_PATTERN}")


class _Model(BaseModel):
    # Unknown keys are tolerated so training can add provenance without breaking serving.
    model_config = ConfigDict(extra="allow", frozen=True)


class Architecture(_Model):
    cell: Literal["rnn", "lstm", "gru"]
    input_size: int = Field(ge=1)
    hidden_size: int = Field(ge=1)
    num_layers: int = Field(ge=1)
    output_size: int = Field(ge=1)
    dropout: float = 0.0


class MinMaxScaler(_Model):
    kind: Literal["minmax"]
    min: float
    max: float

    @model_validator(mode="after")
    def _not_degenerate(self) -> MinMaxScaler:
        if not self.max > self.min:
            raise ValueError(f"minmax scaler is degenerate: max ({self.max}) <= min ({self.min})")
        return self

    def affine(self) -> tuple[float, float]:
        """(offset, scale) with scaled = (value - offset) / scale."""
        return self.min, self.max - self.min


class StandardScaler(_Model):
    kind: Literal["standard"]
    mean: float
    std: float

    @model_validator(mode="after")
    def _not_degenerate(self) -> StandardScaler:
        if not self.std > 0:
            raise ValueError(f"standard scaler is degenerate: std ({self.std}) <= 0")
        return self

    def affine(self) -> tuple[float, float]:
        """(offset, scale) with scaled = (value - offset) / scale."""
        return self.mean, self.std


ScalerSpec = Annotated[MinMaxScaler | StandardScaler, Field(discriminator="kind")]
Dim = int | str | None


class TensorSpec(_Model):
    name: str
    shape: list[Dim]


class OnnxInfo(_Model):
    file: str = Field(pattern=r"^[^/\\]+$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    opset: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    parity: dict[str, Any] | None = None


LogKind = Literal["log", "log1p"]


class TargetTransform(_Model):
    """How the model's units follow from the targets' original units (docs/model-repository.md).

    Applied to every target column, and to the input column of the same name: first the log
    (`log`: values > 0; `log1p`: values >= 0), then differences at `lag` (0: none, 1: first
    differences, s: seasonal). With a lag the state carries the last `lag` observed values.
    """

    log: LogKind | None = None
    lag: int = Field(default=0, ge=0, le=10_000)
    season: int | None = Field(default=None, ge=2)  # the season it was chosen with, if any
    chosen: Literal["auto", "given"] = "given"
    reason: str = ""  # why auto chose it (the tests on the training rows)

    @property
    def kind(self) -> str:
        """The CLI's name of it: none, log, log1p, diff, seasonal-diff, log-diff, ..."""
        diff = "" if self.lag == 0 else ("diff" if self.lag == 1 else "seasonal-diff")
        parts = [p for p in (self.log, diff) if p]
        return "-".join(parts) or "none"


class Intervals(_Model):
    """Conformal interval half-widths per horizon step (training/intervals.py).

    widths[step][target][k] covers a share levels[k] of the validation errors `step + 1`
    steps ahead, in levels or, for a log transform, in log units (`space`); for
    normalized-conformal, of those errors divided by the scale at their origin.
    """

    method: Literal["split-conformal", "normalized-conformal"] = "split-conformal"
    space: Literal["levels", "log", "log1p"] = "levels"
    calibration_rows: int = Field(ge=1)
    levels: list[float] = Field(min_length=2)
    widths: list[list[list[float]]] = Field(min_length=1)
    # normalized-conformal only (absent in older manifests: static widths). The widths are
    # then multiples of a scale known at the forecast origin, sqrt(base + mean_square), where
    # mean_square is an exponentially weighted mean (weight `decay` on the previous value) of
    # the squared one-step errors in `space`, carried in the state; base: per target, the
    # mean squared one-step validation error, which a fresh stream's mean_square starts at.
    decay: float | None = Field(None, gt=0.0, lt=1.0)
    base: list[float] | None = None

    @model_validator(mode="after")
    def _shape(self) -> Intervals:
        if self.levels[0] != 0.0 or self.levels[-1] != 1.0 or self.levels != sorted(self.levels):
            raise ValueError("intervals.levels must rise from 0 to 1")
        for step in self.widths:
            for col in step:
                if len(col) != len(self.levels):
                    raise ValueError("intervals.widths must have one width per level")
        adaptive = self.method == "normalized-conformal"
        if adaptive != (self.decay is not None) or adaptive != (self.base is not None):
            raise ValueError("intervals.decay and .base are given with normalized-conformal only")
        if self.base is not None and any(not math.isfinite(b) or b <= 0.0 for b in self.base):
            raise ValueError("intervals.base must be positive and finite")
        return self


# Calendar features a model can take from its time stamps, each as a sin/cos pair
# (training/calendar.py and service/calendar.py compute them, in the stamps' local time).
CalendarName = Literal["month", "quarter", "dayofweek", "dayofmonth", "dayofyear", "hour"]
CALENDAR_NAMES: tuple[str, ...] = CalendarName.__args__  # type: ignore[attr-defined]

# A frequency: a count and a unit. s, min, h step in absolute time; D steps in calendar
# days (local midnight stays midnight across a DST change); MS and ME in months, on the
# first or the last day of the month (3MS: quarterly, 12MS: yearly).
FREQ_PATTERN = r"^([1-9][0-9]{0,5})(s|min|h|D|MS|ME)$"
_FREQ_RE = re.compile(FREQ_PATTERN)
_SECONDS = {"s": 1, "min": 60, "h": 3600}
_OFFSET_RE = re.compile(r"^[+-]\d{2}:\d{2}$")


def calendar_columns(names: Sequence[str]) -> list[str]:
    """The input columns calendar features add: <name>_sin, <name>_cos for each."""
    return [f"{n}_{part}" for n in names for part in ("sin", "cos")]


def zone_of(tz: str) -> tzinfo:
    """An IANA zone ("Europe/Berlin") or a fixed UTC offset ("+01:00"); ValueError if neither."""
    if _OFFSET_RE.match(tz):
        sign = -1 if tz[0] == "-" else 1
        hours, minutes = int(tz[1:3]), int(tz[4:6])
        return timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {tz!r}") from exc


class TimeSpec(_Model):
    """The time column of a model trained on dated rows (docs/model-repository.md).

    Rows lie on a grid: `anchor` (the first training row's stamp) plus whole steps of
    `freq`. A stamp's position on it (an integer) is what a state carries.
    """

    column: str
    freq: str = Field(pattern=FREQ_PATTERN)
    anchor: str  # ISO 8601, local wall time, with its UTC offset when `tz` is set
    tz: str | None = None  # IANA zone or fixed offset ("+01:00"); None: naive stamps
    calendar: list[CalendarName] = Field(default_factory=list)
    _zone: tzinfo | None = PrivateAttr(default=None)
    _wall: datetime = PrivateAttr()  # the anchor's local wall time, naive
    _step: int = PrivateAttr()
    _unit: str = PrivateAttr()

    @model_validator(mode="after")
    def _grid(self) -> TimeSpec:
        match = _FREQ_RE.match(self.freq)
        assert match is not None  # the pattern checked it
        self._step, self._unit = int(match[1]), match[2]
        self._zone = None if self.tz is None else zone_of(self.tz)
        try:
            anchor = datetime.fromisoformat(self.anchor)
        except ValueError as exc:
            raise ValueError(f"time.anchor {self.anchor!r} is not an ISO 8601 time") from exc
        if (anchor.tzinfo is None) != (self._zone is None):
            raise ValueError("time.anchor must carry a UTC offset exactly when time.tz is set")
        self._wall = anchor if self._zone is None else anchor.astimezone(self._zone)
        self._wall = self._wall.replace(tzinfo=None)
        if self._unit in ("MS", "ME") and not self._on_month_rule(self._wall):
            raise ValueError(f"time.anchor {self.anchor!r} is not on a {self.freq} date")
        if len(set(self.calendar)) != len(self.calendar):
            raise ValueError("time.calendar names a feature twice")
        return self

    @property
    def calendar_columns(self) -> list[str]:
        return calendar_columns(self.calendar)

    @property
    def zone(self) -> tzinfo | None:
        return self._zone

    def _on_month_rule(self, wall: datetime) -> bool:
        if self._unit == "MS":
            return wall.day == 1
        return wall.day == _calendar.monthrange(wall.year, wall.month)[1]

    def _local(self, wall: datetime) -> datetime:
        return wall if self._zone is None else wall.replace(tzinfo=self._zone)

    def stamp(self, index: int) -> datetime:
        """The stamp at grid position `index` (0: the anchor), in local time."""
        if self._unit in _SECONDS:
            seconds = index * self._step * _SECONDS[self._unit]
            if self._zone is None:
                return self._wall + timedelta(seconds=seconds)
            start = self._local(self._wall).astimezone(UTC)
            return (start + timedelta(seconds=seconds)).astimezone(self._zone)
        if self._unit == "D":
            return self._local(self._wall + timedelta(days=index * self._step))
        months = self._wall.year * 12 + self._wall.month - 1 + index * self._step
        year, month = divmod(months, 12)
        day = 1 if self._unit == "MS" else _calendar.monthrange(year, month + 1)[1]
        return self._local(self._wall.replace(year=year, month=month + 1, day=day))

    def stamps(self, first: int, count: int) -> list[datetime]:
        return [self.stamp(first + i) for i in range(count)]

    def index(self, when: datetime) -> int | None:
        """The grid position of a stamp; None when it lies between positions.

        Raises ValueError when it has a UTC offset and the grid has none, or the reverse.
        """
        if (when.tzinfo is None) != (self._zone is None):
            kind = "without" if self._zone is None else "with"
            raise ValueError(f"the model's time stamps are {kind} a UTC offset")
        if self._unit in _SECONDS:
            size = self._step * _SECONDS[self._unit]
            if self._zone is None:
                delta = when - self._wall
            else:
                delta = when.astimezone(UTC) - self._local(self._wall).astimezone(UTC)
            seconds = delta / timedelta(seconds=1)
            k = seconds / size
            return int(k) if math.isfinite(k) and k == int(k) else None
        wall = when if self._zone is None else when.astimezone(self._zone).replace(tzinfo=None)
        if wall.time() != self._wall.time():
            return None
        if self._unit == "D":
            days = (wall.date() - self._wall.date()).days
            return days // self._step if days % self._step == 0 else None
        if not self._on_month_rule(wall):
            return None
        months = (wall.year - self._wall.year) * 12 + wall.month - self._wall.month
        return months // self._step if months % self._step == 0 else None


class ColumnRange(_Model):
    """One column's training rows: their range and spread, in original units."""

    min: float
    max: float
    std: float = Field(ge=0.0)


class InputRange(_Model):
    """Where the training rows lay: a value beyond [min - k std, max + k std] is far out."""

    k: float = Field(gt=0.0)
    columns: dict[str, ColumnRange]


class Manifest(_Model):
    format_version: Literal[1]
    name: str = Field(pattern=NAME_PATTERN)
    version: int = Field(ge=1)
    architecture: Architecture
    features: list[str] = Field(min_length=1)
    targets: list[str] = Field(min_length=1)
    scalers: dict[str, ScalerSpec]
    window: int = Field(ge=1)
    onnx: OnnxInfo
    training: dict[str, Any]
    metrics: dict[str, Any]
    # Added with target transforms; absent in older manifests: the model works in the
    # targets' original units.
    transform: TargetTransform | None = None
    intervals: Intervals | None = None  # absent: the model has no calibrated intervals
    # Added with time columns; absent: the rows were not dated (or predate it) and the
    # model takes no calendar inputs.
    time: TimeSpec | None = None
    # Added with out-of-range warnings; absent: the service does not check input ranges.
    input_range: InputRange | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        arch = self.architecture
        if arch.input_size != len(self.features):
            raise ValueError(
                f"architecture.input_size is {arch.input_size} but there are "
                f"{len(self.features)} features"
            )
        if arch.output_size != len(self.targets):
            raise ValueError(
                f"architecture.output_size is {arch.output_size} but there are "
                f"{len(self.targets)} targets"
            )
        missing = [c for c in dict.fromkeys(self.features + self.targets) if c not in self.scalers]
        if missing:
            raise ValueError(f"no scaler for column(s) {missing}")
        self._check_io()
        if self.intervals is not None and any(
            len(step) != len(self.targets) for step in self.intervals.widths
        ):
            raise ValueError("intervals.widths must have one entry per target at every step")
        if self.intervals is not None and self.intervals.base is not None:
            if len(self.intervals.base) != len(self.targets):
                raise ValueError("intervals.base must have one entry per target")
            if not set(self.targets) <= set(self.features):
                raise ValueError("normalized-conformal intervals need every target as a feature")
        t = self.transform
        if t is not None and t.lag > 0 and not set(self.targets) <= set(self.features):
            raise ValueError(
                f"transform differences the targets (lag {t.lag}), so every target must be "
                f"a feature: {sorted(set(self.targets) - set(self.features))} are not"
            )
        if self.time is not None and self.time.calendar:
            derived = self.time.calendar_columns
            if self.features[-len(derived) :] != derived:
                raise ValueError(
                    f"time.calendar {self.time.calendar} adds the input columns {derived}, "
                    "which must be the last features"
                )
        return self

    @property
    def client_features(self) -> list[str]:
        """The features a client sends: all but those derived from the time stamps."""
        if self.time is None or not self.time.calendar:
            return self.features
        return self.features[: -2 * len(self.time.calendar)]

    @property
    def lag(self) -> int:
        """Observed values the state must carry (0: none)."""
        return self.transform.lag if self.transform is not None else 0

    @property
    def is_lstm(self) -> bool:
        return self.architecture.cell == "lstm"

    @property
    def can_roll_out(self) -> bool:
        """Multi-step forecasts feed predictions back, so targets must be the features."""
        return self.targets == self.client_features

    def expected_io(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """Graph inputs and outputs the contract requires for this architecture."""
        a = self.architecture
        state: list[Dim] = [a.num_layers, "batch", a.hidden_size]
        inputs = [TensorSpec(name="x", shape=["batch", "time", a.input_size])]
        inputs.append(TensorSpec(name="h0", shape=state))
        outputs = [TensorSpec(name="y", shape=["batch", "time", a.output_size])]
        outputs.append(TensorSpec(name="h_n", shape=state))
        if self.is_lstm:
            inputs.append(TensorSpec(name="c0", shape=state))
            outputs.append(TensorSpec(name="c_n", shape=state))
        return inputs, outputs

    def _check_io(self) -> None:
        want_in, want_out = self.expected_io()
        for label, declared, wanted in (
            ("inputs", self.onnx.inputs, want_in),
            ("outputs", self.onnx.outputs, want_out),
        ):
            got = {t.name: t.shape for t in declared}
            want = {t.name: t.shape for t in wanted}
            if set(got) != set(want):
                raise ValueError(f"onnx.{label} are {sorted(got)}, expected {sorted(want)}")
            for name, shape in want.items():
                if not shapes_match(got[name], shape):
                    raise ValueError(f"onnx.{label} {name} has shape {got[name]}, expected {shape}")


def shapes_match(actual: list[Dim], expected: list[Dim]) -> bool:
    """Fixed sizes must agree; a dynamic (named or None) dimension must stay dynamic."""
    if len(actual) != len(expected):
        return False
    for a, e in zip(actual, expected, strict=True):
        if isinstance(e, int) and a != e:
            return False
        if not isinstance(e, int) and isinstance(a, int):
            return False
    return True
