"""The manifest of one model version (docs/model-repository.md, format_version 1).

The one schema of the model repository: training builds and validates its manifests with it
before writing them, and the service validates what it loads with it. The service imports
this module, so it must stay torch-free: pydantic and the standard library only.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    """Split-conformal interval half-widths per horizon step (training/intervals.py).

    widths[step][target][k] covers a share levels[k] of the validation errors `step + 1`
    steps ahead, in levels or, for a log transform, in log units (`space`).
    """

    method: Literal["split-conformal"] = "split-conformal"
    space: Literal["levels", "log", "log1p"] = "levels"
    calibration_rows: int = Field(ge=1)
    levels: list[float] = Field(min_length=2)
    widths: list[list[list[float]]] = Field(min_length=1)

    @model_validator(mode="after")
    def _shape(self) -> Intervals:
        if self.levels[0] != 0.0 or self.levels[-1] != 1.0 or self.levels != sorted(self.levels):
            raise ValueError("intervals.levels must rise from 0 to 1")
        for step in self.widths:
            for col in step:
                if len(col) != len(self.levels):
                    raise ValueError("intervals.widths must have one width per level")
        return self


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
        t = self.transform
        if t is not None and t.lag > 0 and not set(self.targets) <= set(self.features):
            raise ValueError(
                f"transform differences the targets (lag {t.lag}), so every target must be "
                f"a feature: {sorted(set(self.targets) - set(self.features))} are not"
            )
        return self

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
        return self.targets == self.features

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
