"""/metrics after known traffic: exact counts, whichever way each request came in."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.inference import InferenceCore, SeriesInput, work_steps
from service.repository import LoadedModel, load_version
from service.runner import ModelRunner
from service.telemetry.hooks import DRAIN_AT
from service.telemetry.metrics import _LOG_LIMIT, Metrics
from service.telemetry.work import MeasuredCore, RunTelemetry, _RunCounts
from tests.redis_fixture import free_port
from tests.service.sessions_support import MakeClient

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient, **kwargs: object) -> Samples:
    response = client.get("/metrics", **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def of(samples: Samples, name: str) -> dict[tuple[str, ...], float]:
    """The non-zero samples of one name, keyed by their label values in label-name order."""
    return {
        tuple(v for _, v in sorted(labels)): value
        for (sample, labels), value in samples.items()
        if sample == name and value
    }


def by_model(samples: Samples, name: str) -> dict[tuple[str, str], float]:
    """Per (model, version) values of a metric labelled by model and version only."""
    return {(m, v): value for (m, v), value in of(samples, name).items()}


def test_known_traffic_gives_exact_counts(make_client: MakeClient) -> None:
    with make_client() as c:
        # Predict, through the front door's declared routes.
        two = {"series": [{"values": [1, 2, 3], "horizon": 2}, {"values": [1, 2, 3, 4, 5]}]}
        two["series"][1]["horizon"] = 2
        assert c.post("/v1/models/tiny-lstm/predict", json=two).status_code == 200
        one = {"series": [{"values": [1, 2, 3, 4]}]}
        assert c.post("/v1/models/tiny-lstm/versions/1/predict", json=one).status_code == 200
        empty = {"series": [{"values": []}]}
        assert c.post("/v1/models/tiny-lstm/predict", json=empty).status_code == 422
        assert c.post("/v1/models/nope/predict", json=one).status_code == 404
        assert c.post("/v1/models/tiny-lstm/versions/9/predict", json=one).status_code == 404
        # Over SEQCAST_INLINE_MAX_STEPS: runs in the thread pool.
        long = {"series": [{"values": [0.5] * 2000}]}
        assert c.post("/v1/models/tiny-rnn/predict", json=long).status_code == 200

        # A session: applied, a retry replayed, a 409, applied.
        sid = c.post("/v1/models/tiny-rnn/sessions").json()["session"]
        step = {"values": [1, 2, 3], "offset": 0}
        assert c.post(f"/v1/sessions/{sid}/observe", json=step).status_code == 200
        retry = c.post(f"/v1/sessions/{sid}/observe", json=step)
        assert retry.headers["seqcast-replayed"] == "true"
        wrong = {"values": [4], "offset": 7}
        assert c.post(f"/v1/sessions/{sid}/observe", json=wrong).status_code == 409
        right = {"values": [4], "offset": 3}
        assert c.post(f"/v1/sessions/{sid}/observe", json=right).status_code == 200

        # FastAPI's routes.
        assert c.get(f"/v1/sessions/{sid}").status_code == 200
        assert c.delete(f"/v1/sessions/{sid}").status_code == 204
        assert c.get(f"/v1/sessions/{sid}").status_code == 404
        assert c.get("/v1/models").status_code == 200
        assert c.get("/v1/models/nope").status_code == 404
        assert c.request("BREW", "/v1/models").status_code == 405

        # The WebSocket stream: a new session, applied, a 409 frame, a replayed frame.
        with c.websocket_connect("/v1/models/tiny-gru/stream") as ws:
            json.loads(ws.receive_text())
            for frame in ({"values": [1, 2]}, {"values": [3], "offset": 0}, {"values": [1, 2]}):
                ws.send_text(json.dumps({"offset": 0, **frame}))
                json.loads(ws.receive_text())

        samples = scrape(c)
        text = c.get("/metrics").text

    assert of(samples, "seqcast_http_requests_total") == {
        # (method, route, status)
        ("POST", "/v1/models/{name}/predict", "200"): 2,
        ("POST", "/v1/models/{name}/versions/{version}/predict", "200"): 1,
        ("POST", "/v1/models/{name}/predict", "422"): 1,
        ("POST", "/v1/models/{name}/predict", "404"): 1,
        ("POST", "/v1/models/{name}/versions/{version}/predict", "404"): 1,
        ("POST", "/v1/models/{name}/sessions", "201"): 1,
        ("POST", "/v1/sessions/{session_id}/observe", "200"): 3,
        ("POST", "/v1/sessions/{session_id}/observe", "409"): 1,
        ("GET", "/v1/sessions/{session_id}", "200"): 1,
        ("DELETE", "/v1/sessions/{session_id}", "204"): 1,
        ("GET", "/v1/sessions/{session_id}", "404"): 1,
        ("GET", "/v1/models", "200"): 1,
        ("GET", "/v1/models/{name}", "404"): 1,
        ("other", "/v1/models", "405"): 1,
        ("WEBSOCKET", "/v1/models/{name}/stream", "101"): 1,
    }
    assert of(samples, "seqcast_http_requests_in_flight") == {(): 1}  # the scrape itself
    # Model requests by the model version they ran on; "" when it was not known.
    assert of(samples, "seqcast_inference_requests_total") == {
        # (code, model, outcome, version)
        ("200", "tiny-lstm", "success", "2"): 1,
        ("200", "tiny-lstm", "success", "1"): 1,
        ("422", "tiny-lstm", "failure", "2"): 1,
        ("404", "", "failure", ""): 2,
        ("200", "tiny-rnn", "success", "1"): 4,
        ("201", "tiny-rnn", "success", "1"): 1,
        ("409", "tiny-rnn", "failure", "1"): 1,
        ("101", "tiny-gru", "success", "1"): 1,
    }
    lstm2, lstm1, rnn, gru = (
        ("tiny-lstm", "2"),
        ("tiny-lstm", "1"),
        ("tiny-rnn", "1"),
        ("tiny-gru", "1"),
    )
    # HTTP requests only (a stream's time is its connection's).
    assert by_model(samples, "seqcast_inference_request_duration_seconds_count") == {
        lstm2: 2,
        lstm1: 1,
        rnn: 6,
    }
    executions = {lstm2: 1, lstm1: 1, rnn: 3, gru: 1}  # a replayed step runs nothing
    assert by_model(samples, "seqcast_inference_executions_total") == executions
    assert by_model(samples, "seqcast_inference_compute_duration_seconds_count") == executions
    assert by_model(samples, "seqcast_inference_queue_duration_seconds_count") == executions
    assert by_model(samples, "seqcast_inference_batch_calls_sum") == executions
    assert by_model(samples, "seqcast_inference_series_total") == {
        lstm2: 2,
        lstm1: 1,
        rnn: 3,
        gru: 1,
    }
    assert by_model(samples, "seqcast_inference_steps_total") == {
        lstm2: 4 + 6,  # values + horizon - 1, per series
        lstm1: 4,
        rnn: 2000 + 3 + 1,
        gru: 2,
    }
    # Two series of different lengths: one run each, then one rollout run for both.
    assert by_model(samples, "seqcast_inference_run_batch_size_count") == {
        lstm2: 3,
        lstm1: 1,
        rnn: 3,
        gru: 1,
    }
    assert by_model(samples, "seqcast_inference_run_batch_size_sum")[lstm2] == 4
    assert by_model(samples, "seqcast_sessions_created_total") == {rnn: 1, gru: 1}
    assert of(samples, "seqcast_session_steps_total") == {
        # (model, outcome, version)
        ("tiny-rnn", "applied", "1"): 2,
        ("tiny-rnn", "replayed", "1"): 1,
        ("tiny-rnn", "conflict", "1"): 1,
        ("tiny-gru", "applied", "1"): 1,
        ("tiny-gru", "conflict", "1"): 1,
        ("tiny-gru", "replayed", "1"): 1,
    }
    assert of(samples, "seqcast_sessions_live") == {(): 1}  # the stream's; one was deleted
    store_calls = of(samples, "seqcast_session_store_duration_seconds_count")
    assert store_calls[("create", "memory")] == 2
    assert store_calls[("delete", "memory")] == 1
    assert of(samples, "seqcast_session_store_errors_total") == {}
    # Labels name route templates and served models only, never what a client sent.
    assert "nope" not in text
    assert "BREW" not in text
    assert sid not in text


@pytest.mark.anyio
async def test_coalesced_calls_count_as_one_batch(model_dir: Path) -> None:
    model = load_version(
        model_dir / "tiny-gru" / "1", ["CPUExecutionProvider"], ort.SessionOptions()
    )
    metrics = Metrics()
    runner = ModelRunner(1024, hooks=RunTelemetry(metrics, None))
    values = np.ones((3, 1), np.float32)
    calls = [runner.run(model, [SeriesInput(values=values)]) for _ in range(5)]
    await asyncio.gather(*calls)
    samples = parse(metrics.render(None)[0].decode())
    gru = ("tiny-gru", "1")
    assert by_model(samples, "seqcast_inference_executions_total") == {gru: 1}
    assert by_model(samples, "seqcast_inference_batch_calls_count") == {gru: 1}
    assert by_model(samples, "seqcast_inference_batch_calls_sum") == {gru: 5}
    assert by_model(samples, "seqcast_inference_queue_duration_seconds_count") == {gru: 5}
    assert by_model(samples, "seqcast_inference_run_batch_size_count") == {gru: 1}
    assert by_model(samples, "seqcast_inference_run_batch_size_sum") == {gru: 5}
    assert by_model(samples, "seqcast_inference_series_total") == {gru: 5}


@pytest.mark.anyio
async def test_runs_are_counted_past_the_records_kept_and_on_the_pool(model_dir: Path) -> None:
    """More calls than the runner keeps records of, on the event loop and on the thread
    pool: every one counted, and the records drained as they go."""
    model = load_version(
        model_dir / "tiny-gru" / "1", ["CPUExecutionProvider"], ort.SessionOptions()
    )
    metrics = Metrics()
    hooks = RunTelemetry(metrics, None)
    inline = ModelRunner(1024, hooks=hooks)
    pooled = ModelRunner(0, hooks=hooks)  # every call on a worker thread
    values = np.ones((3, 1), np.float32)
    calls = DRAIN_AT * 2 + 5
    for _ in range(calls):
        await inline.run(model, [SeriesInput(values=values)])
        assert hooks.records is not None
        assert len(hooks.records) < DRAIN_AT
    for _ in range(7):
        await pooled.run(model, [SeriesInput(values=values, horizon=2)])
        assert hooks.records == []  # a pooled call's inputs are not kept
    samples = parse(metrics.render(None)[0].decode())
    gru = ("tiny-gru", "1")
    assert by_model(samples, "seqcast_inference_executions_total") == {gru: calls + 7}
    assert by_model(samples, "seqcast_inference_queue_duration_seconds_count") == {gru: calls + 7}
    assert by_model(samples, "seqcast_inference_compute_duration_seconds_count") == {gru: calls + 7}
    assert by_model(samples, "seqcast_inference_steps_total") == {gru: calls * 3 + 7 * 4}
    assert by_model(samples, "seqcast_inference_run_batch_size_count") == {gru: calls + 7 * 2}


def test_requests_are_counted_past_the_ones_noted(make_client: MakeClient) -> None:
    """More model requests than the front door's observer notes before counting them."""
    one = {"series": [{"values": [1.0, 2.0]}]}
    with make_client() as c:
        for _ in range(_LOG_LIMIT + 3):
            assert c.post("/v1/models/tiny-rnn/predict", json=one).status_code == 200
        samples = scrape(c)
    assert of(samples, "seqcast_inference_requests_total") == {
        ("200", "tiny-rnn", "success", "1"): _LOG_LIMIT + 3
    }
    assert by_model(samples, "seqcast_inference_request_duration_seconds_count") == {
        ("tiny-rnn", "1"): _LOG_LIMIT + 3
    }
    http = of(samples, "seqcast_http_requests_total")
    assert http[("POST", "/v1/models/{name}/predict", "200")] == _LOG_LIMIT + 3
    assert of(samples, "seqcast_http_requests_in_flight") == {(): 1}  # the scrape itself


def test_requests_beyond_the_codes_noted_are_counted_at_once(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One code: the first model's successes are noted with it, the rest counted at once."""
    monkeypatch.setattr("service.telemetry.metrics._CODES", 1)
    one = {"series": [{"values": [1.0, 2.0]}]}
    bad = {"series": [{"values": [1.0, 2.0]}], "horizon": 0}
    with make_client() as c:
        for _ in range(3):
            assert c.post("/v1/models/tiny-rnn/predict", json=one).status_code == 200
        assert c.post("/v1/models/tiny-rnn/predict", json=bad).status_code == 422
        for _ in range(2):
            assert c.post("/v1/models/tiny-lstm/predict", json=one).status_code == 200
        samples = scrape(c)
    assert of(samples, "seqcast_inference_requests_total") == {
        ("200", "tiny-rnn", "success", "1"): 3,
        ("422", "tiny-rnn", "failure", "1"): 1,
        ("200", "tiny-lstm", "success", "2"): 2,
    }
    assert by_model(samples, "seqcast_inference_request_duration_seconds_count") == {
        ("tiny-rnn", "1"): 4,
        ("tiny-lstm", "2"): 2,
    }


def test_an_open_stream_is_in_flight_until_it_closes(make_client: MakeClient) -> None:
    with make_client() as c:
        with c.websocket_connect("/v1/models/tiny-gru/stream") as ws:
            json.loads(ws.receive_text())
            samples = scrape(c)
            assert of(samples, "seqcast_http_requests_in_flight") == {(): 2}  # and the scrape
        samples = scrape(c)
        assert of(samples, "seqcast_http_requests_in_flight") == {(): 1}


@pytest.mark.parametrize(
    ("exempt", "status_without_key"), [("health", 401), ("health,metrics", 200)]
)
def test_metrics_need_a_key_unless_exempt(
    make_client: MakeClient, exempt: str, status_without_key: int
) -> None:
    with make_client(api_keys="scraper:scraper-secret-1", auth_exempt=exempt) as c:
        assert c.get("/metrics").status_code == status_without_key
        assert c.get("/metrics", headers={"X-API-Key": "scraper-secret-1"}).status_code == 200


def test_metrics_off_means_no_endpoint_and_the_rest_works(make_client: MakeClient) -> None:
    with make_client(metrics=False) as c:
        assert c.get("/metrics").status_code == 404
        body = {"series": [{"values": [1, 2]}]}
        assert c.post("/v1/models/tiny-rnn/predict", json=body).status_code == 200
        sid = c.post("/v1/models/tiny-rnn/sessions").json()["session"]
        step = {"values": [1], "offset": 0}
        assert c.post(f"/v1/sessions/{sid}/observe", json=step).status_code == 200


def test_an_unreachable_store_counts_errors(make_client: MakeClient) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with make_client(session_store="redis", redis_url=url, redis_timeout_s=0.2) as c:
        assert c.post("/v1/models/tiny-rnn/sessions").status_code == 503
        samples = scrape(c)
    assert of(samples, "seqcast_session_store_errors_total") == {("create", "redis"): 1}
    assert of(samples, "seqcast_inference_requests_total") == {
        ("503", "tiny-rnn", "failure", "1"): 1
    }


class _CountingCore(InferenceCore):
    """The plain inference core, noting the series of each ONNX Runtime run it makes."""

    def __init__(self, model: LoadedModel, chunk_steps: int) -> None:
        super().__init__(model, chunk_steps)
        self.runs: list[int] = []

    def _run(
        self, x: np.ndarray, h0: np.ndarray, c0: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        self.runs.append(x.shape[0])
        return super()._run(x, h0, c0)


@pytest.mark.anyio
@pytest.mark.parametrize("chunk_steps", [1, 3, 7, 32_768])
@pytest.mark.parametrize("way", ["records", "core"])
async def test_counted_runs_are_the_runs_the_core_makes(
    model_dir: Path, chunk_steps: int, way: str
) -> None:
    """The runs the core reports are the ONNX Runtime runs it makes, and both ways of
    counting (the runner's records, or a measured core when tracing or several workers)
    count them."""
    model = load_version(
        model_dir / "tiny-lstm" / "1", ["CPUExecutionProvider"], ort.SessionOptions()
    )
    rng = np.random.default_rng(7)
    for _ in range(40):
        inputs = [
            SeriesInput(
                values=np.ones((int(rng.integers(1, 12)), 1), np.float32),
                horizon=int(rng.integers(1, 4)),
            )
            for _ in range(int(rng.integers(1, 6)))
        ]
        core = _CountingCore(model, chunk_steps)
        reported: list[tuple[int, int]] = []
        core.predict(inputs, reported)
        counted = sorted(b for batch, n in reported for b in [batch] * n)
        assert counted == sorted(core.runs), (
            chunk_steps,
            [(s.values.shape, s.horizon) for s in inputs],
        )
        # And through the metrics (one series alone has a path of its own).
        metrics = Metrics()
        if way == "records":
            runner = ModelRunner(1024, chunk_steps=chunk_steps, hooks=RunTelemetry(metrics, None))
            await runner.run(model, inputs)
            await runner.run(model, inputs[:1])
        else:
            counts = _RunCounts(metrics.model(model), chunk_steps)
            measured = MeasuredCore(model, chunk_steps, counts, None)
            measured.predict(inputs)
            measured.predict(inputs[:1])
        samples = parse(metrics.render(None)[0].decode())
        alone = _CountingCore(model, chunk_steps)
        alone.predict(inputs[:1])
        runs = core.runs + alone.runs
        lstm = ("tiny-lstm", "1")
        assert by_model(samples, "seqcast_inference_run_batch_size_count") == {lstm: len(runs)}
        assert by_model(samples, "seqcast_inference_run_batch_size_sum") == {lstm: sum(runs)}
        assert by_model(samples, "seqcast_inference_steps_total") == {
            lstm: work_steps(inputs) + work_steps(inputs[:1])
        }
        assert by_model(samples, "seqcast_inference_executions_total") == {lstm: 2}
        assert by_model(samples, "seqcast_inference_series_total") == {lstm: len(inputs) + 1}


@pytest.mark.parametrize("version", ["%C2%B2", "%E2%91%A0", "0x1"])
def test_a_version_that_is_no_number_is_counted_and_logged(
    make_client: MakeClient, version: str
) -> None:
    with make_client() as c:
        path = f"/v1/models/tiny-rnn/versions/{version}/predict"
        assert c.post(path, content=b"{").status_code in (404, 422)
        samples = parse(c.get("/metrics").text)
    counted = of(samples, "seqcast_http_requests_total")
    assert sum(counted.values()) >= 1  # the request reached the metrics observer


def test_open_inference_protocol_requests_are_counted(make_client: MakeClient) -> None:
    """/v2 passes the same front door: every request counted, model requests by version."""
    values = {"name": "values", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}
    body = {"inputs": [values]}
    start = {"sequence_id": 7, "sequence_start": True, "sequence_offset": 0}
    end = {"sequence_id": 7, "sequence_end": True, "sequence_offset": 3}
    with make_client() as c:
        assert c.post("/v2/models/tiny-rnn/infer", json=body).status_code == 200
        assert c.post("/v2/models/tiny-lstm/versions/1/infer", json=body).status_code == 200
        assert c.post("/v2/models/tiny-rnn/infer", json={"inputs": []}).status_code == 400
        assert c.post("/v2/models/nope/infer", json=body).status_code == 404
        # A sequence: started, its start retried (replayed), ended.
        for parameters in (start, start, end):
            answer = c.post("/v2/models/tiny-gru/infer", json={**body, "parameters": parameters})
            assert answer.status_code == 200
        for path in ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/tiny-rnn"):
            assert c.get(path).status_code == 200
        assert c.get("/v2/models/nope/ready").status_code == 404
        samples = scrape(c)

    assert of(samples, "seqcast_http_requests_total") == {
        ("POST", "/v2/models/{name}/infer", "200"): 4,
        ("POST", "/v2/models/{name}/versions/{version}/infer", "200"): 1,
        ("POST", "/v2/models/{name}/infer", "400"): 1,
        ("POST", "/v2/models/{name}/infer", "404"): 1,
        ("GET", "/v2", "200"): 1,
        ("GET", "/v2/health/live", "200"): 1,
        ("GET", "/v2/health/ready", "200"): 1,
        ("GET", "/v2/models/{name}", "200"): 1,
        ("GET", "/v2/models/{name}/ready", "404"): 1,
    }
    assert of(samples, "seqcast_inference_requests_total") == {
        ("200", "tiny-rnn", "success", "1"): 1,
        ("200", "tiny-lstm", "success", "1"): 1,
        ("400", "tiny-rnn", "failure", "1"): 1,
        ("404", "", "failure", ""): 1,
        ("200", "tiny-gru", "success", "1"): 3,
    }
    assert of(samples, "seqcast_session_steps_total") == {
        ("tiny-gru", "applied", "1"): 2,
        ("tiny-gru", "replayed", "1"): 1,
    }
    assert by_model(samples, "seqcast_sessions_created_total") == {("tiny-gru", "1"): 1}
    assert of(samples, "seqcast_sessions_live") == {}  # the end deleted it


@pytest.mark.parametrize("access_log", [False, True])
def test_a_failing_observer_fails_no_request_and_no_other_observer(
    make_client: MakeClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    access_log: bool,
) -> None:
    """Alone (metrics only) or first of two (the access log, then metrics): an observer
    that raises is logged; the request is answered and the other observer still counts."""
    from service.api.front_door import AccessLog
    from service.telemetry.metrics import MetricsObserver

    def broken(self: object, scope: object, status: int, seconds: float) -> None:
        raise RuntimeError("observer bug")

    monkeypatch.setattr(AccessLog if access_log else MetricsObserver, "request_ended", broken)
    body = {"series": [{"values": [1.0, 2.0]}]}
    with make_client(access_log=access_log) as c, caplog.at_level("ERROR"):
        for _ in range(2):
            assert c.post("/v1/models/tiny-rnn/predict", json=body).status_code == 200
        samples = scrape(c)
    # The two predictions and the scrape.
    assert sum("request observer" in r.getMessage() for r in caplog.records) == 3
    counted = of(samples, "seqcast_inference_requests_total")
    assert counted == ({("200", "tiny-rnn", "success", "1"): 2} if access_log else {})
