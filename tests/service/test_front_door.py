"""The front door: every request passes one layer (request id, keys, origin, content type)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from tests.service.sessions_support import MakeClient, error_of

KEY_A = "alice-secret-" + "a" * 20
KEY_B = "bob-secret-" + "b" * 20
# One key given as its secret, one as the secret's sha256: both work alike.
KEYS = f"alice:{KEY_A},bob:sha256:{hashlib.sha256(KEY_B.encode()).hexdigest()}"
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"X-API-Key": KEY_B}

# Sample values for path parameters of the routes OpenAPI lists.
_PARAMS = {"name": "tiny-rnn", "version": "1", "session_id": "no-such-session"}


def private_db(request: pytest.FixtureRequest, db: int) -> str:
    """An emptied database of the shared Redis: per-key counts start from zero."""
    url: str = request.getfixturevalue("redis_server").url.rsplit("/", 1)[0] + f"/{db}"
    with redis.Redis.from_url(url) as r:
        r.flushdb()
    return url


@pytest.fixture(scope="module")
def keyed(make_client: MakeClient) -> Iterator[TestClient]:
    with make_client(api_keys=KEYS) as c:
        yield c


def operations(client: TestClient) -> list[tuple[str, str]]:
    """(method, path) of every operation in the OpenAPI document, parameters filled in."""
    schema = client.get("/openapi.json", headers=A).json()
    found = []
    for template, item in schema["paths"].items():
        path = re.sub(r"\{(\w+)\}", lambda m: _PARAMS[m.group(1)], template)
        found += [(method.upper(), path) for method in item]
    return found


def test_every_http_route_needs_a_key_and_carries_a_request_id(keyed: TestClient) -> None:
    ops = operations(keyed)
    assert len(ops) >= 10  # predict, sessions, models: the document is not empty
    extra = [
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("GET", "/static/swagger-ui/swagger-ui.css"),
        ("GET", "/no/such/path"),
        ("PUT", "/v1/models"),
    ]
    for method, path in ops + extra:
        if path in ("/healthz", "/readyz"):
            continue  # open by default (SEQCAST_AUTH_EXEMPT=health), tested below
        body = {"series": [{"values": [1.0]}]} if method == "POST" else None
        refused = keyed.request(method, path, json=body)
        error = error_of(refused, 401)
        assert error["code"] == "unauthorized", (method, path)
        assert refused.headers["www-authenticate"] == "Bearer"
        assert refused.headers["x-request-id"], (method, path)
        wrong = keyed.request(method, path, json=body, headers={"X-API-Key": "x" * 30})
        assert wrong.status_code == 401, (method, path)
        admitted = keyed.request(method, path, json=body, headers=A)
        assert admitted.status_code != 401, (method, path, admitted.text)
        assert admitted.headers["x-request-id"], (method, path)


def test_health_is_open_and_a_client_request_id_comes_back(keyed: TestClient) -> None:
    for path in ("/healthz", "/readyz"):
        response = keyed.get(path, headers={"X-Request-ID": "trace-42"})
        assert response.status_code == 200
        assert response.headers["x-request-id"] == "trace-42"
    # A malformed id is replaced, not echoed.
    odd = keyed.get("/healthz", headers={"X-Request-ID": "bad id\t" + "x" * 200})
    assert odd.headers["x-request-id"] != "bad id"
    assert re.fullmatch(r"[0-9a-f]+-[0-9a-f]+", odd.headers["x-request-id"])


@pytest.mark.parametrize(
    ("exempt", "open_paths", "closed_paths"),
    [
        ("none", [], ["/healthz", "/readyz", "/docs"]),
        ("health,docs", ["/healthz", "/docs", "/openapi.json"], ["/v1/models"]),
    ],
)
def test_auth_exempt_decides_what_needs_no_key(
    make_client: MakeClient, exempt: str, open_paths: list[str], closed_paths: list[str]
) -> None:
    with make_client(api_keys=KEYS, auth_exempt=exempt) as c:
        for path in open_paths:
            assert c.get(path).status_code == 200, path
        for path in closed_paths:
            assert c.get(path).status_code == 401, path


def test_websocket_needs_a_key_header_or_subprotocol(keyed: TestClient) -> None:
    with (
        pytest.raises(WebSocketDenialResponse) as denied,
        keyed.websocket_connect("/v1/models/tiny-rnn/stream"),
    ):
        pass
    assert denied.value.status_code == 401
    assert denied.value.json()["error"]["code"] == "unauthorized"
    assert denied.value.headers["x-request-id"]
    with keyed.websocket_connect("/v1/models/tiny-rnn/stream", headers=A) as ws:
        assert ws.receive_json()["offset"] == 0
    # Browsers cannot set headers: the key travels as a subprotocol, "seqcast" is chosen.
    with keyed.websocket_connect(
        "/v1/models/tiny-rnn/stream", subprotocols=["seqcast", f"seqcast.key.{KEY_B}"]
    ) as ws:
        assert ws.accepted_subprotocol == "seqcast"
        hello = ws.receive_json()
        ws.send_json({"values": [0.5, 0.25]})
        assert ws.receive_json()["offset"] == 2
    assert keyed.get(f"/v1/sessions/{hello['session']}", headers=B).json()["offset"] == 2


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_a_session_belongs_to_the_key_that_made_it(
    make_client: MakeClient, store: str, request: pytest.FixtureRequest
) -> None:
    settings: dict[str, Any] = {"api_keys": KEYS, "session_store": store}
    if store == "redis":
        settings["redis_url"] = private_db(request, 6)
    with make_client(**settings) as c:
        created = c.post("/v1/models/tiny-rnn/sessions", json={"values": [0.1, 0.2]}, headers=A)
        assert created.status_code == 201
        sid = created.json()["session"]
        step = {"values": [0.3], "offset": 2}
        # Key B is told exactly what it would hear for a session that does not exist.
        for response in (
            c.get(f"/v1/sessions/{sid}", headers=B),
            c.post(f"/v1/sessions/{sid}/observe", json=step, headers=B),
            c.delete(f"/v1/sessions/{sid}", headers=B),
        ):
            assert error_of(response, 404)["code"] == "session_not_found"
        ghost = c.get("/v1/sessions/never-made-by-anyone", headers=B)
        assert ghost.json()["error"] == c.get(f"/v1/sessions/{sid}", headers=B).json()["error"]
        with c.websocket_connect(f"/v1/models/tiny-rnn/stream?session={sid}", headers=B) as ws:
            assert ws.receive_json()["error"]["code"] == "session_not_found"
        # Nothing B did moved or removed A's session.
        assert c.get(f"/v1/sessions/{sid}", headers=A).json()["offset"] == 2
        assert c.post(f"/v1/sessions/{sid}/observe", json=step, headers=A).status_code == 200
        assert c.delete(f"/v1/sessions/{sid}", headers=A).status_code == 204


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_creates_beyond_a_keys_quota_get_429_and_other_keys_go_on(
    make_client: MakeClient, store: str, request: pytest.FixtureRequest
) -> None:
    settings: dict[str, Any] = {
        "api_keys": KEYS,
        "session_store": store,
        "session_quota_burst": 5,
        "session_quota_rate": 0.5,
        "session_quota_live": 8,
    }
    if store == "redis":
        settings["redis_url"] = private_db(request, 5)
    with make_client(**settings) as c:
        made = [c.post("/v1/models/tiny-rnn/sessions", headers=A) for _ in range(8)]
        assert [r.status_code for r in made] == [201] * 5 + [429] * 3
        error = error_of(made[5], 429)
        assert error["code"] == "quota_exceeded"
        assert "SEQCAST_SESSION_QUOTA_RATE" in error["message"]
        assert 1 <= int(made[5].headers["retry-after"]) <= 2
        # While A is held back, B creates as usual.
        assert c.post("/v1/models/tiny-rnn/sessions", headers=B).status_code == 201


def test_live_sessions_per_key_are_capped(make_client: MakeClient) -> None:
    with make_client(api_keys=KEYS, session_quota_live=2) as c:
        first = c.post("/v1/models/tiny-rnn/sessions", headers=A).json()["session"]
        assert c.post("/v1/models/tiny-rnn/sessions", headers=A).status_code == 201
        over = c.post("/v1/models/tiny-rnn/sessions", headers=A)
        assert "SEQCAST_SESSION_QUOTA_LIVE" in error_of(over, 429)["message"]
        assert over.headers["retry-after"]
        assert c.post("/v1/models/tiny-rnn/sessions", headers=B).status_code == 201
        assert c.delete(f"/v1/sessions/{first}", headers=A).status_code == 204
        assert c.post("/v1/models/tiny-rnn/sessions", headers=A).status_code == 201


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
def test_json_routes_refuse_other_content_types(client: TestClient, content_type: str) -> None:
    body = json.dumps({"series": [{"values": [1.0]}]})
    headers = {"content-type": content_type} if content_type else {}
    for path in ("/v1/models/tiny-rnn/predict", "/v1/models/tiny-rnn/sessions"):
        # TestClient sends the fixture's JSON content type unless it is replaced.
        response = client.post(path, content=body, headers=headers)
        if content_type is None:
            response = client.build_request("POST", path, content=body)
            del response.headers["content-type"]
            response = client.send(response)
        assert error_of(response, 415)["field"] == "Content-Type"
    ok = client.post(
        "/v1/models/tiny-rnn/predict",
        content=body,
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert ok.status_code == 200


def test_other_origins_are_refused_and_listed_ones_get_cors(make_client: MakeClient) -> None:
    body = {"series": [{"values": [1.0]}]}
    with make_client(allowed_origins="https://app.example") as c:
        evil = c.post(
            "/v1/models/tiny-rnn/predict", json=body, headers={"Origin": "https://evil.example"}
        )
        assert error_of(evil, 403)["code"] == "origin_not_allowed"
        with (
            pytest.raises(WebSocketDenialResponse) as denied,
            c.websocket_connect(
                "/v1/models/tiny-rnn/stream", headers={"Origin": "https://evil.example"}
            ),
        ):
            pass
        assert denied.value.status_code == 403
        assert denied.value.json()["error"]["field"] == "Origin"
        # The service's own pages (e.g. /docs) may call it.
        same = c.post(
            "/v1/models/tiny-rnn/predict", json=body, headers={"Origin": "http://testserver"}
        )
        assert same.status_code == 200
        assert "access-control-allow-origin" not in same.headers
        with c.websocket_connect(
            "/v1/models/tiny-rnn/stream", headers={"Origin": "http://testserver"}
        ) as ws:
            assert ws.receive_json()["offset"] == 0
        listed = {"Origin": "https://app.example"}
        preflight = c.options(
            "/v1/models/tiny-rnn/predict",
            headers={**listed, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        assert "authorization" in preflight.headers["access-control-allow-headers"]
        answered = c.post("/v1/models/tiny-rnn/predict", json=body, headers=listed)
        assert answered.status_code == 200
        assert answered.headers["access-control-allow-origin"] == "https://app.example"
        assert "x-request-id" in answered.headers["access-control-expose-headers"]


def test_no_cors_unless_configured(client: TestClient) -> None:
    preflight = client.options(
        "/v1/models/tiny-rnn/predict",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 403
    assert "access-control-allow-origin" not in preflight.headers


def test_session_ids_stay_out_of_logs(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        sid = client.post("/v1/models/tiny-rnn/sessions").json()["session"]
        client.post(f"/v1/sessions/{sid}/observe", json={"values": [1.0], "offset": 0})
        client.post(f"/v1/sessions/{sid}/observe", json={"values": [1.0], "offset": 0})
        with client.websocket_connect(f"/v1/models/tiny-rnn/stream?session={sid}") as ws:
            ws.receive_json()
        client.get(f"/v1/sessions/{sid}")
        client.delete(f"/v1/sessions/{sid}")
    # The server's log lines (the test client's own httpx lines name the URL it sent).
    lines = [r.getMessage() for r in caplog.records if r.name.startswith(("service", "seqcast"))]
    assert any("/v1/sessions/~" in line for line in lines)  # the access log, with tags
    assert not [line for line in lines if sid in line]


def test_echoed_input_is_cut_short(client: TestClient) -> None:
    name = "m" * 60_000
    response = client.post(f"/v1/models/{name}/predict", json={"series": [{"values": [1.0]}]})
    assert error_of(response, 404)["code"] == "model_not_found"
    assert len(response.content) < 400


def test_websocket_errors_always_carry_a_body(client: TestClient) -> None:
    with client.websocket_connect(f"/v1/models/tiny-rnn/stream?session={'s' * 129}") as ws:
        assert ws.receive_json()["error"]["code"] == "session_not_found"
    with client.websocket_connect("/v1/models/tiny-rnn/stream?version=x") as ws:
        assert ws.receive_json()["error"]["field"] == "version"


def test_405_lists_every_method_of_the_path(client: TestClient) -> None:
    response = client.put("/v1/sessions/abc")
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET"
