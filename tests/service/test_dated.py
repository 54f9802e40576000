"""Models trained on dated rows, with calendar inputs, served: the state carries the time, the
service computes calendar inputs for observed and forecast steps, answers carry forecast stamps,
and any chunking equals one call through client state, sessions and the WebSocket."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.calendar import calendar_features as served_calendar
from service.settings import Settings
from tests.redis_fixture import RedisServer
from training.calendar import calendar_features as trained_calendar
from training.config import TrainConfig
from training.data import load_csv
from training.evaluate import path_levels
from training.onnx_export import check_parity, export_onnx, parity_record
from training.pipeline import Trained, train, training_inputs
from training.repository import build_manifest, write_version

BERLIN = ZoneInfo("Europe/Berlin")


def _tiny(cell: str, transform: str = "none") -> TrainConfig:
    return TrainConfig(
        cell=cell,  # type: ignore[arg-type]
        hidden_size=4,
        window=24,
        burn_in=2,
        batch_size=64,
        epochs=2,
        patience=2,
        test_rows=40,
        transform=transform,
    )


def _monthly_csv(root: Path) -> Path:
    from statsmodels.datasets import elnino

    data = elnino.load_pandas().data
    values = data.drop(columns="YEAR").to_numpy().ravel()[:240]  # 1950-01 .. 1969-12
    lines = [f"{1950 + i // 12}-{i % 12 + 1:02d}-01,{v:.2f}" for i, v in enumerate(values)]
    path = root / "elnino.csv"
    path.write_text("month,temp\n" + "\n".join(lines) + "\n")
    return path


def _hourly_csv(root: Path) -> Path:
    """Hourly load in Berlin over the spring DST change, stamps with their UTC offsets."""
    start = datetime(2024, 3, 25, tzinfo=BERLIN)
    rng = np.random.default_rng(3)
    lines = []
    for i in range(240):
        when = (start.astimezone(ZoneInfo("UTC")) + timedelta(hours=i)).astimezone(BERLIN)
        load = 10 + 3 * np.sin(2 * np.pi * when.hour / 24) + rng.normal(scale=0.3)
        lines.append(f"{when.isoformat()},{load:.3f}")
    path = root / "load.csv"
    path.write_text("when,load\n" + "\n".join(lines) + "\n")
    return path


# name -> (csv maker, column, time column, calendar, tz, cell, transform)
MODELS: dict[str, tuple[Any, str, str, list[str], str | None, str, str]] = {
    "el-month": (_monthly_csv, "temp", "month", ["month"], None, "gru", "none"),
    "el-diff-month": (_monthly_csv, "temp", "month", ["month"], None, "rnn", "diff"),
    "load-hour": (
        _hourly_csv,
        "load",
        "when",
        ["hour", "dayofweek"],
        "Europe/Berlin",
        "lstm",
        "none",
    ),
    "el-dated": (_monthly_csv, "temp", "month", [], None, "gru", "none"),  # no calendar
}


@pytest.fixture(scope="module")
def trained_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Trained]]:
    root = tmp_path_factory.mktemp("dated")
    repo = root / "models"
    out = {}
    for name, (make, column, when, calendar, tz, cell, transform) in MODELS.items():
        series = load_csv(make(root), [column], [column], None, when, None, tz, calendar)
        cfg = _tiny(cell, transform)
        trained = train(series, cfg)
        onnx = export_onnx(trained.model)
        parity = parity_record(
            check_parity(trained.model, onnx, cfg.window, pool=training_inputs(trained)),
            cfg.window,
            True,
        )
        write_version(
            repo,
            name,
            onnx,
            lambda v, t=trained, n=name, o=onnx, p=parity: build_manifest(t, n, v, o, p),
        )
        out[name] = trained
    return repo, out


@pytest.fixture(scope="module")
def client(trained_models: tuple[Path, dict[str, Trained]]) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=trained_models[0]))) as c:
        yield c


def _values(trained: Trained) -> list[float]:
    return [float(v) for v in trained.series.targets[:, 0]]


def _predict(client: TestClient, name: str, series: dict[str, Any]) -> Any:
    r = client.post(
        f"/v1/models/{name}/predict", json={"series": [series], "return_predictions": True}
    )
    assert r.status_code == 200, r.text
    return r.json()["series"][0]


def _nan(values: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _error(client: TestClient, name: str, series: dict[str, Any]) -> dict[str, Any]:
    r = client.post(f"/v1/models/{name}/predict", json={"series": [series]})
    assert r.status_code == 422, r.text
    return r.json()["error"]  # type: ignore[no-any-return]


def test_calendar_features_are_the_same_in_training_and_in_the_service() -> None:
    names = ["month", "quarter", "dayofweek", "dayofmonth", "dayofyear", "hour"]
    start = datetime(1999, 12, 31, 22, 30, tzinfo=BERLIN)
    stamps = [(start + timedelta(minutes=451 * i)).astimezone(BERLIN) for i in range(3000)]
    stamps += [datetime(2024, 2, 29, 23, 59, 59), datetime(2100, 3, 1), datetime(2000, 12, 31)]
    np.testing.assert_allclose(
        served_calendar(stamps, names), trained_calendar(stamps, names), atol=1e-12
    )


@pytest.mark.parametrize("name", ["el-month", "el-diff-month", "load-hour"])
@pytest.mark.parametrize("cuts", [[1], [2, 3, 50], [5, 6, 7, 100, 150]])
def test_chunked_predictions_equal_one_call_with_client_state(
    client: TestClient, trained_models: tuple[Path, dict[str, Trained]], name: str, cuts: list[int]
) -> None:
    trained = trained_models[1][name]
    values = _values(trained)
    first = trained.series.times[0] if trained.series.times else None
    whole = _predict(client, name, {"values": values, "horizon": 5, "timestamp": first})
    got: list[float | None] = []
    state = None
    for chunk in np.split(np.array(values), cuts):
        body: dict[str, Any] = {"values": chunk.tolist(), "horizon": 5}
        if state is None:
            body["timestamp"] = first  # then the state carries the time
        else:
            body["state"] = state
        answer = _predict(client, name, body)
        got.extend(answer["predictions"])
        state = answer["state"]
    assert state is not None
    np.testing.assert_allclose(_nan(got), _nan(whole["predictions"]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(answer["forecast"], whole["forecast"], rtol=1e-5)
    np.testing.assert_allclose(state["h"], whole["state"]["h"], atol=1e-5)
    assert state["time"] == whole["state"]["time"]
    assert answer["forecast_timestamps"] == whole["forecast_timestamps"]


@pytest.mark.parametrize("name", ["el-month", "el-diff-month", "load-hour"])
def test_served_multi_step_forecasts_match_the_training_rollout(
    client: TestClient, trained_models: tuple[Path, dict[str, Trained]], name: str
) -> None:
    """Calendar inputs of the rolled-out steps come from the forecast stamps, as in training."""
    trained = trained_models[1][name]
    values = _values(trained)
    lag = trained.transform.lag
    split = trained.split
    assert trained.series.times is not None
    origins = np.array([split.val_end - 1, split.val_end + 10, split.rows - 6])
    want = path_levels(
        trained.model,
        trained.model_series,
        trained.scalers,
        origins - lag,
        5,
        trained.transform if lag else None,
        trained.series if lag else None,
    )
    for k, origin in enumerate(origins):
        body = {"values": values[: origin + 1], "horizon": 5, "timestamp": trained.series.times[0]}
        got = _predict(client, name, body)
        np.testing.assert_allclose(got["forecast"], want[k, :, 0], rtol=2e-4, atol=1e-5)
        stamps = trained.series.times[origin + 1 : origin + 6]
        assert [datetime.fromisoformat(s) for s in got["forecast_timestamps"]] == [
            datetime.fromisoformat(s) for s in stamps
        ]


def test_forecast_stamps_cross_a_year_end(client: TestClient) -> None:
    answer = _predict(
        client, "el-month", {"values": [24.1, 23.5], "timestamp": "1969-11-01", "horizon": 3}
    )
    assert answer["state"]["time"] == "1969-12-01T00:00:00"
    assert answer["forecast_timestamps"] == [
        "1970-01-01T00:00:00",
        "1970-02-01T00:00:00",
        "1970-03-01T00:00:00",
    ]


def test_forecast_stamps_step_over_the_missing_hour_of_a_dst_change(client: TestClient) -> None:
    answer = _predict(
        client,
        "load-hour",
        {"values": [10.0, 10.5], "timestamp": "2024-03-31T00:00:00+01:00", "horizon": 3},
    )
    assert answer["state"]["time"] == "2024-03-31T01:00:00+01:00"
    assert answer["forecast_timestamps"] == [
        "2024-03-31T03:00:00+02:00",
        "2024-03-31T04:00:00+02:00",
        "2024-03-31T05:00:00+02:00",
    ]
    # The same instant in UTC is accepted as the same position.
    same = _predict(
        client, "load-hour", {"values": [10.0, 10.5], "timestamp": "2024-03-30T23:00:00+00:00"}
    )
    assert same["state"]["time"] == answer["state"]["time"]


def test_a_calendar_model_needs_a_time_naming_the_field(client: TestClient) -> None:
    error = _error(client, "el-month", {"values": [24.1]})
    assert error["field"] == "series[0].timestamp"
    assert error["code"] == "missing_field"
    assert "calendar inputs (month)" in error["message"]
    # An old client: its state carries h alone, so the time is missing too.
    state = _predict(client, "el-month", {"values": [24.1], "timestamp": "1960-01-01"})["state"]
    old = {k: v for k, v in state.items() if k != "time"}
    error = _error(client, "el-month", {"values": [24.5], "state": old})
    assert error["field"] == "series[0].timestamp"
    assert "state with its time" in error["message"]


@pytest.mark.parametrize(
    ("series", "field", "text"),
    [
        ({"timestamp": "1960-01-15"}, "series[0].timestamp", "not on the model's 1MS grid"),
        ({"timestamp": "January"}, "series[0].timestamp", "ISO 8601"),
        ({"timestamp": "1960-01-01T00:00+01:00"}, "series[0].timestamp", "without a UTC offset"),
    ],
)
def test_a_bad_timestamp_is_refused_naming_it(
    client: TestClient, series: dict[str, Any], field: str, text: str
) -> None:
    error = _error(client, "el-month", {"values": [24.1], **series})
    assert error["field"] == field
    assert text in error["message"]


def test_a_timestamp_must_follow_the_state(client: TestClient) -> None:
    state = _predict(client, "el-month", {"values": [24.1], "timestamp": "1960-01-01"})["state"]
    error = _error(
        client, "el-month", {"values": [24.5], "state": state, "timestamp": "1960-03-01"}
    )
    assert error["field"] == "series[0].timestamp"
    assert "the next value is at 1960-02-01T00:00:00" in error["message"]
    ok = _predict(client, "el-month", {"values": [24.5], "state": state, "timestamp": "1960-02-01"})
    assert ok["state"]["time"] == "1960-02-01T00:00:00"


def test_a_dated_model_without_calendar_inputs_takes_time_optionally(client: TestClient) -> None:
    plain = _predict(client, "el-dated", {"values": [24.1, 24.3]})
    assert "time" not in plain["state"]
    assert "forecast_timestamps" not in plain
    dated = _predict(client, "el-dated", {"values": [24.1, 24.3], "timestamp": "1960-01-01"})
    assert dated["forecast"] == plain["forecast"]
    assert dated["forecast_timestamps"] == ["1960-03-01T00:00:00"]


def test_a_model_without_time_refuses_a_timestamp(client: TestClient) -> None:
    # The shipped sine models have no time column.
    with TestClient(create_app(Settings())) as shipped:
        r = shipped.post(
            "/v1/models/sine-lstm/predict",
            json={"series": [{"values": [0.1], "timestamp": "2024-01-01"}]},
        )
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "series[0].timestamp"


def test_metadata_lists_the_client_features_and_the_time(client: TestClient) -> None:
    info = client.get("/v1/models/load-hour").json()["latest"]
    assert info["features"] == ["load"]
    assert info["time"]["calendar"] == ["hour", "dayofweek"]
    assert info["time"]["tz"] == "Europe/Berlin"
    assert info["max_horizon"] > 1  # calendar inputs do not lock the horizon


@pytest.mark.parametrize("name", ["el-diff-month", "load-hour"])
def test_sessions_and_the_websocket_continue_exactly(
    client: TestClient, trained_models: tuple[Path, dict[str, Trained]], name: str
) -> None:
    trained = trained_models[1][name]
    assert trained.series.times is not None
    values = _values(trained)[:60]
    first = trained.series.times[0]
    whole = _predict(client, name, {"values": values, "horizon": 3, "timestamp": first})
    created = client.post(f"/v1/models/{name}/sessions", json={"timestamp": first})
    assert created.status_code == 201, created.text
    session = created.json()["session"]
    got: list[float | None] = []
    offset = 0
    for chunk in np.split(np.array(values), [1, 3, 4, 30]):
        body = {"values": chunk.tolist(), "offset": offset, "horizon": 3}
        r = client.post(f"/v1/sessions/{session}/observe", json=body)
        assert r.status_code == 200, r.text
        got.extend(r.json()["predictions"])
        offset += len(chunk)
        last = r.json()
    np.testing.assert_allclose(_nan(got), _nan(whole["predictions"]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(last["forecast"], whole["forecast"], rtol=1e-5)
    assert last["forecast_timestamps"] == whole["forecast_timestamps"]
    # A retry of the last step gets the same answer, stamps included.
    retry = client.post(f"/v1/sessions/{session}/observe", json=body)
    assert retry.headers.get("Seqcast-Replayed") == "true"
    assert retry.json()["forecast_timestamps"] == last["forecast_timestamps"]
    assert retry.json()["forecast"] == last["forecast"]  # the very same numbers
    assert retry.json()["predictions"] == last["predictions"]
    info = client.get(f"/v1/sessions/{session}?state=true").json()
    assert info["state"]["time"] == whole["state"]["time"]
    # The WebSocket, on a session started from the first values' state (with its time).
    head = _predict(client, name, {"values": values[:10], "timestamp": first})
    started = client.post(f"/v1/models/{name}/sessions", json={"state": head["state"]})
    assert started.status_code == 201, started.text
    ws_preds: list[float | None] = list(head["predictions"])
    with client.websocket_connect(
        f"/v1/models/{name}/stream?session={started.json()['session']}"
    ) as ws:
        json.loads(ws.receive_text())
        for chunk in np.split(np.array(values[10:]), [1, 5, 20]):
            ws.send_text(json.dumps({"values": chunk.tolist(), "horizon": 3}))
            answer = json.loads(ws.receive_text())
            ws_preds.extend(answer["predictions"])
    np.testing.assert_allclose(_nan(ws_preds), _nan(whole["predictions"]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(answer["forecast"], whole["forecast"], rtol=1e-5)
    assert answer["forecast_timestamps"] == whole["forecast_timestamps"]


def test_a_session_without_time_refuses_a_calendar_step_naming_the_field(
    client: TestClient,
) -> None:
    session = client.post("/v1/models/el-month/sessions", json={}).json()["session"]
    r = client.post(f"/v1/sessions/{session}/observe", json={"values": [24.1], "offset": 0})
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "timestamp"
    r = client.post(
        f"/v1/sessions/{session}/observe",
        json={"values": [24.1], "offset": 0, "timestamp": "1961-05-01"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["forecast_timestamps"] == ["1961-06-01T00:00:00"]


def _far_out_count(client: TestClient, name: str) -> float:
    text = client.get("/metrics").text
    for line in text.splitlines():
        if line.startswith("seqcast_inputs_far_out_total{") and f'model="{name}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_inputs_far_outside_the_training_range_are_counted(
    client: TestClient, trained_models: tuple[Path, dict[str, Trained]]
) -> None:
    manifest = json.loads((trained_models[0] / "el-dated" / "1" / "manifest.json").read_text())
    temp = manifest["input_range"]["columns"]["temp"]
    assert manifest["input_range"]["k"] == 3.0
    edge = temp["max"] + 3.0 * temp["std"]
    before = _far_out_count(client, "el-dated")
    _predict(client, "el-dated", {"values": [temp["min"], edge - 0.01, edge + 0.5, 1e6]})
    assert _far_out_count(client, "el-dated") == before + 2
    # The session path and the stream run the same check.
    session = client.post("/v1/models/el-dated/sessions", json={}).json()["session"]
    r = client.post(f"/v1/sessions/{session}/observe", json={"values": [-1e6], "offset": 0})
    assert r.status_code == 200, r.text
    assert _far_out_count(client, "el-dated") == before + 3


def test_far_out_inputs_are_logged_when_asked(
    trained_models: tuple[Path, dict[str, Trained]], caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(model_dir=trained_models[0], log_far_out=True)
    with TestClient(create_app(settings)) as logged, caplog.at_level("WARNING"):
        _predict(logged, "el-dated", {"values": [1e6, 24.0]})
    assert "1 input value(s) for el-dated v1 lie beyond its training range" in caplog.text


def test_models_without_a_recorded_range_are_not_checked() -> None:
    with TestClient(create_app(Settings())) as shipped:
        r = shipped.post("/v1/models/sine-lstm/predict", json={"series": [{"values": [1e6]}]})
        assert r.status_code == 200
        assert _far_out_count(shipped, "sine-lstm") == 0.0


def test_the_python_client_sends_timestamps_and_carries_the_time(
    trained_models: tuple[Path, dict[str, Trained]],
) -> None:
    from service.client import Client
    from tests.service.sessions_support import live_server

    with (
        live_server(Settings(model_dir=trained_models[0])) as address,
        Client(f"http://{address}") as seqcast,
    ):
        first = seqcast.predict("el-month", [24.1, 24.3], timestamp="1960-01-01", horizon=2)
        assert first.forecast_timestamps == ["1960-03-01T00:00:00", "1960-04-01T00:00:00"]
        more = seqcast.predict("el-month", [24.6], state=first.state)
        assert more.forecast_timestamps == ["1960-04-01T00:00:00"]
        with seqcast.create_session("el-month", timestamp="1961-01-01") as session:
            step = session.observe([24.0, 24.2], horizon=2)
            assert step.forecast_timestamps == ["1961-03-01T00:00:00", "1961-04-01T00:00:00"]
            step = session.observe([24.4], timestamp="1961-03-01")
            assert step.forecast_timestamps == ["1961-04-01T00:00:00"]


def test_a_redis_session_keeps_the_time_across_replicas(
    trained_models: tuple[Path, dict[str, Trained]], redis_server: RedisServer
) -> None:
    """Two replicas share the store: the time rides in the record with h and the levels."""
    trained = trained_models[1]["el-diff-month"]
    assert trained.series.times is not None
    values = _values(trained)[:30]
    settings = Settings(
        model_dir=trained_models[0], session_store="redis", redis_url=redis_server.url
    )
    with TestClient(create_app(settings)) as one, TestClient(create_app(settings)) as two:
        whole = _predict(
            one, "el-diff-month", {"values": values, "horizon": 2, "timestamp": "1950-01-01"}
        )
        created = one.post("/v1/models/el-diff-month/sessions", json={"values": values[:10]})
        assert created.status_code == 422  # a calendar model's warm-up needs its time
        assert created.json()["error"]["field"] == "timestamp"
        created = one.post(
            "/v1/models/el-diff-month/sessions",
            json={"values": values[:10], "timestamp": "1950-01-01"},
        )
        assert created.status_code == 201, created.text
        session = created.json()["session"]
        got: list[float | None] = []
        for k, (client, chunk) in enumerate(((two, values[10:20]), (one, values[20:]))):
            r = client.post(
                f"/v1/sessions/{session}/observe",
                json={"values": chunk, "offset": 10 + 10 * k, "horizon": 2},
            )
            assert r.status_code == 200, r.text
            got.extend(r.json()["predictions"])
        np.testing.assert_allclose(_nan(got), _nan(whole["predictions"][10:]), rtol=1e-5, atol=1e-5)
        assert r.json()["forecast_timestamps"] == whole["forecast_timestamps"]
        info = two.get(f"/v1/sessions/{session}?state=true").json()
        assert info["state"]["time"] == "1952-06-01T00:00:00"
