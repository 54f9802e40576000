"""Schemathesis over every operation of /openapi.json: the document is exactly as strict as
the server, and no input makes it fail.

Each run is schemathesis's own engine (what `schemathesis run` does) over the ASGI app
in process: examples, coverage (boundary values, every way to be wrong, methods the
document does not list), fuzzing and stateful sequences that follow created sessions,
with every default check: not_a_server_error, status_code_conformance,
content_type_conformance, response_headers_conformance, response_schema_conformance,
positive_data_acceptance (ST202), negative_data_rejection, unsupported_method (ST205),
missing_required_header, ignored_auth (with keys on) and the rest. Bounded and
deterministic: a fixed seed, derandomized generation, no example database.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events, from_schema
from schemathesis.engine.statistic import Statistic
from schemathesis.python.asgi import shutdown_lifespans

from service.app import create_app
from service.settings import Settings

pytestmark = pytest.mark.slow

SECRET = "fuzz-secret-0123456789abcdef"
OBSERVE = "/v1/sessions/{session_id}/observe"
# Fuzzing examples per operation; the coverage phase adds its own deterministic cases.
MAX_EXAMPLES = 8


@pytest.fixture(scope="module")
def fuzz_models(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny models plus `narrow`: two features whose input scalers are so narrow that
    large values would leave float32 once scaled (so each has its own value range)."""
    root = tmp_path_factory.mktemp("fuzz-models")
    shutil.copytree(model_dir, root, dirs_exist_ok=True)
    shutil.copytree(model_dir / "two-in-one-out" / "1", root / "narrow" / "1")
    manifest_path = root / "narrow" / "1" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["name"] = "narrow"
    manifest["scalers"] = {
        "a": {"kind": "standard", "mean": 1e30, "std": 1e-3},
        "b": {"kind": "minmax", "min": -1e-5, "max": 1e-5},
    }
    manifest_path.write_text(json.dumps(manifest))
    return root


@schemathesis.check
def observe_refused_only_for_the_sessions_model(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """observe's body schema is generic: its path names a session, not a model, so a
    schema-valid step may still not fit the session's model. Such a step (and only such
    a step) is refused with 422 naming the values, horizon or intervals and the model."""
    if case.operation.path != OBSERVE or response.status_code != 422:
        return None
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return None
    error = response.json()["error"]
    assert error["code"] == "invalid_value", error
    assert "for model" in error["message"], error
    assert re.fullmatch(r"values(\[\d+\])?|horizon|intervals", error["field"] or ""), error
    return True


@dataclass
class Run:
    """What one schemathesis run did."""

    statistic: Statistic = field(default_factory=Statistic)
    errors: list[str] = field(default_factory=list)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)  # (operation, status)

    def failures(self) -> list[str]:
        return [
            f"{label}: {failure.title}: {failure.message}\n{group.code_sample}"
            for label, groups in self.statistic.failures.items()
            for group in groups.values()
            for failure in group.failures
        ]

    def succeeded(self, operation: str) -> bool:
        return any(op == operation and 200 <= s < 300 for op, s in self.statuses)


def fuzz(app: Any, headers: dict[str, str], auth: dict[str, Any] | None) -> Run:
    settings: dict[str, Any] = {
        "seed": 20240917,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        "cache": {"enabled": False},
        # observe may refuse a schema-valid step with 422 when it does not fit the
        # session's model; observe_refused_only_for_the_sessions_model checks that this is
        # the only reason.
        "operations": [
            {
                "include-path": OBSERVE,
                "checks": {
                    "positive_data_acceptance": {
                        "expected-statuses": ["2xx", "401", "403", "404", "409", "422", "429"]
                    }
                },
            }
        ],
    }
    if auth is not None:
        settings["auth"] = auth
    config = SchemathesisConfig.from_dict(settings)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config, headers=headers)
    run = Run()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            run.statistic.on_scenario_finished(event.recorder)
            for case_id, interaction in event.recorder.interactions.items():
                if interaction.response is not None:
                    label = event.recorder.cases[case_id].value.operation.label
                    run.statuses[label, interaction.response.status_code] += 1
        elif isinstance(event, events.NonFatalError | events.FatalError):
            run.errors.append(str(event))
    return run


@pytest.fixture(scope="module")
def runs(fuzz_models: Path) -> Iterator[dict[str, Run]]:
    plain = create_app(Settings(model_dir=fuzz_models, access_log=False))
    keyed = create_app(
        Settings(model_dir=fuzz_models, access_log=False, api_keys=f"fuzzer:{SECRET}")
    )
    try:
        yield {
            "keys off": fuzz(plain, {}, None),
            "keys on": fuzz(
                keyed,
                {"Authorization": f"Bearer {SECRET}"},
                {"openapi": {"bearer": {"bearer": SECRET}}},
            ),
        }
    finally:
        shutdown_lifespans()


@pytest.mark.parametrize("keys", ["keys off", "keys on"])
def test_no_check_fails(runs: dict[str, Run], keys: str) -> None:
    run = runs[keys]
    assert run.errors == []
    assert run.statistic.errored_cases == 0
    assert run.failures() == []


def test_enough_cases_ran_and_every_check_was_exercised(runs: dict[str, Run]) -> None:
    total = sum(run.statistic.total_cases for run in runs.values())
    assert total >= 1000, total
    plain, keyed = runs["keys off"], runs["keys on"]
    operations = {op for op, _ in plain.statuses}
    # Positive data reaches every model's own operations and is accepted there.
    predicts = {op for op in operations if op.startswith("POST /v1/models/")}
    assert len(predicts) == 2 * (6 + 7)  # predict and sessions: 6 models, 7 versions
    assert all(plain.succeeded(op) for op in predicts), sorted(
        op for op in predicts if not plain.succeeded(op)
    )
    statuses = {s for _, s in plain.statuses.elements()}
    assert {200, 201, 204, 404, 405, 422} <= statuses  # 405: methods the document omits
    assert 401 in {s for _, s in keyed.statuses}  # requests without the key


# What fuzzing found, pinned: each was a schema-valid request answered wrongly.


def test_a_state_far_outside_tanh_range_is_refused_not_answered_with_nan(
    api: TestClient,
) -> None:
    h = [[0.0] * 5, [0.0] * 5]
    h[1][2] = -3e38  # drove the recurrent matmul to inf and the forecast to null
    body = {"series": [{"values": [1.0], "state": {"model": "tiny-gru", "version": 1, "h": h}}]}
    response = api.post("/v1/models/tiny-gru/predict", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "series[0].state.h[1][2]"


def test_float32s_largest_number_is_taken_back_as_it_is_answered(api: TestClient) -> None:
    # Answers print float32's max as 3.4028235e+38, a little above its value as a double;
    # an LSTM's c is not bounded, so a state holding it must be taken back.
    c = [[3.4028235e38] + [0.0] * 7, [0.0] * 8]
    state = {"model": "tiny-lstm", "version": 2, "h": [[0.0] * 8] * 2, "c": c}
    predict = "/v1/models/tiny-lstm/predict"
    response = api.post(predict, json={"series": [{"values": [0.5], "state": state}]})
    assert response.status_code == 200, response.text
    # What rounds to float32's inf is still refused.
    too_large = api.post(predict, json={"series": [{"values": [3.4028236e38]}]})
    assert too_large.status_code == 422
