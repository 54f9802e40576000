"""What a session keeps: a known bound however large its steps, and retries still exact."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import redis

from service.sessions.redis_store import KEY_PREFIX
from tests.service.sessions_support import MakeClient, as_json, series

CAP = 4096  # session_replay_max_bytes for these tests
# Fixed cost of a session record in Redis besides the state and the kept answer: field
# names, ids, offsets, times, the digest and the hash's own overhead (measured ~0.5 KiB).
OVERHEAD = 1024


def memory_usage(url: str, session: str) -> int:
    with redis.Redis.from_url(url) as r:
        used = r.memory_usage(KEY_PREFIX + session, samples=0)
    assert used is not None
    return int(used)


@pytest.mark.parametrize("steps", [100, 5000])
def test_a_session_stays_within_its_bound_and_retries_are_exact(
    make_client: MakeClient, redis_server: Any, steps: int
) -> None:
    with make_client(
        session_store="redis", redis_url=redis_server.url, session_replay_max_bytes=CAP
    ) as c:
        sid = c.post("/v1/models/tiny-lstm/sessions").json()["session"]
        step = {"values": as_json(series(steps, seed=3)), "offset": 0, "horizon": 3}
        first = c.post(f"/v1/sessions/{sid}/observe", json=step)
        assert first.status_code == 200
        retry = c.post(f"/v1/sessions/{sid}/observe", json=step)
        # Kept (100 values) or recomputed from the state before it (5,000): the same bytes.
        assert retry.headers["seqcast-replayed"] == "true"
        assert retry.content == first.content
        assert c.get(f"/v1/sessions/{sid}").json()["offset"] == steps
        answer_bytes = (steps + 3) * 4
        kept = min(answer_bytes, CAP) if answer_bytes <= CAP else 0
        state_bytes = 4 * (2 * 8 * 4)  # h, c and the two before the step: 2 layers x 8
        used = memory_usage(redis_server.url, sid)
        assert used <= kept + state_bytes + OVERHEAD, used
        # The next step continues from the advanced state, not the one kept for retries.
        more = c.post(f"/v1/sessions/{sid}/observe", json={"values": [0.5], "offset": steps})
        assert more.json()["start"] == steps


def test_the_memory_store_keeps_no_large_answer(make_client: MakeClient) -> None:
    with make_client(session_replay_max_bytes=CAP) as c:
        sid = c.post("/v1/models/tiny-rnn/sessions").json()["session"]
        values = as_json(series(5000, seed=4))
        first = c.post(f"/v1/sessions/{sid}/observe", json={"values": values, "offset": 0})
        store = c.app_state["seqcast"].sessions.store
        record = store._records[sid]
        assert record.last_step is not None
        assert record.last_step.answer is None  # over the cap: the state before it instead
        assert record.last_step.h_before is not None
        retry = c.post(f"/v1/sessions/{sid}/observe", json={"values": values, "offset": 0})
        assert retry.content == first.content
        assert np.asarray(first.json()["predictions"]).shape == (5000,)
