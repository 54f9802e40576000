"""Every metric seqcast exports at /metrics (docs/observability.md has the table).

Labels are bounded: model and version come from the loaded model a request ran on
(service.telemetry.context), never from the request; a route is the route's template;
a method outside the standard ones is "other". Children are bound once per model
version (ModelMetrics), made on first use, so versions that appear at run time get
theirs and the hot path does attribute lookups only.
"""

from __future__ import annotations

import glob
import os
from array import array
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.types import Scope

from service.api.paths import STATIC_PREFIX
from service.repository import LoadedModel
from service.telemetry.context import REQUEST_INFO, RequestInfo, request_model
from service.telemetry.families import Families, Spec, Value, observe_all
from service.telemetry.hooks import StepOutcome
from service.telemetry.multiprocess import MULTIPROC_ENV

# Seconds: from 100 µs (a small predict's compute) to 10 s.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# Seconds: a memory store answers in microseconds, Redis in a few hundred.
STORE_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
# Series per ONNX Runtime run and calls per batch: powers of two.
COUNT_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)

_MODEL = ("model", "version")
_LOG_LIMIT = 1024  # model requests noted before they are counted (or at the next scrape)
_CODES = 4096  # (route, method, model version, status) combinations noted; beyond: counted at once
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

SPECS = {
    "in_flight": Spec(
        "seqcast_http_requests_in_flight",
        "HTTP requests and WebSocket connections being handled",
        "gauge",
    ),
    "http": Spec(
        "seqcast_http_requests",
        "HTTP requests and WebSocket connections answered, by route template, method, status",
        "counter",
        ("route", "method", "status"),
    ),
    "requests": Spec(
        "seqcast_inference_requests",
        "Requests that ran a model or were for one (predict, session create, observe, "
        "stream), by outcome and status",
        "counter",
        (*_MODEL, "outcome", "code"),
    ),
    "request_duration": Spec(
        "seqcast_inference_request_duration_seconds",
        "Time from a model request's arrival to its answer (HTTP only)",
        "histogram",
        _MODEL,
        LATENCY_BUCKETS,
    ),
    "queue": Spec(
        "seqcast_inference_queue_duration_seconds",
        "Time a call waited for its batch to start running",
        "histogram",
        _MODEL,
        LATENCY_BUCKETS,
        threaded=True,
    ),
    "compute": Spec(
        "seqcast_inference_compute_duration_seconds",
        "Time one batch took in the inference core: scaling, ONNX Runtime runs, rollout",
        "histogram",
        _MODEL,
        LATENCY_BUCKETS,
        threaded=True,
    ),
    "executions": Spec(
        "seqcast_inference_executions",
        "Batches run (one inference-core call each, however many calls it answers)",
        "counter",
        _MODEL,
        threaded=True,
    ),
    "batch_calls": Spec(
        "seqcast_inference_batch_calls",
        "Calls coalesced into one batch",
        "histogram",
        _MODEL,
        COUNT_BUCKETS,
        threaded=True,
    ),
    "run_batch": Spec(
        "seqcast_inference_run_batch_size",
        "Series in one ONNX Runtime session.run",
        "histogram",
        _MODEL,
        COUNT_BUCKETS,
        threaded=True,
    ),
    "series": Spec(
        "seqcast_inference_series",
        "Series predicted (one per series of a request, whatever its length)",
        "counter",
        _MODEL,
        threaded=True,
    ),
    "steps": Spec(
        "seqcast_inference_steps",
        "Recurrent steps run: observed values plus rolled-out forecast steps",
        "counter",
        _MODEL,
        threaded=True,
    ),
    "created": Spec("seqcast_sessions_created", "Sessions created", "counter", _MODEL),
    "far_out": Spec(
        "seqcast_inputs_far_out",
        "Input values beyond the model's training range by more than k std (models whose "
        "manifest records the range)",
        "counter",
        _MODEL,
    ),
    "session_steps": Spec(
        "seqcast_session_steps",
        "Session steps (observe calls and stream frames) by outcome: applied, replayed "
        "(a retry answered without advancing), conflict (409, wrong offset)",
        "counter",
        (*_MODEL, "outcome"),
    ),
    "live": Spec(
        "seqcast_sessions_live",
        "Sessions held by the in-memory store (of this process, summed over workers)",
        "gauge",
    ),
    "store_duration": Spec(
        "seqcast_session_store_duration_seconds",
        "Time one session store call took",
        "histogram",
        ("store", "operation"),
        STORE_BUCKETS,
    ),
    "store_errors": Spec(
        "seqcast_session_store_errors",
        "Session store calls that failed (store unreachable or another error; a full "
        "store or a quota refusal is not an error)",
        "counter",
        ("store", "operation"),
    ),
}


class ModelMetrics:
    """The children of one model version, bound once."""

    __slots__ = (
        "batch_calls",
        "compute",
        "created",
        "executions",
        "far_out",
        "queue",
        "request_duration",
        "run_batch",
        "series",
        "steps",
        "steps_by_outcome",
    )

    def __init__(self, metrics: Metrics, labels: tuple[str, str]) -> None:
        f = metrics.family
        self.request_duration = f["request_duration"].labels(*labels)
        self.queue = f["queue"].labels(*labels)
        self.compute = f["compute"].labels(*labels)
        self.executions = f["executions"].labels(*labels)
        self.batch_calls = f["batch_calls"].labels(*labels)
        self.run_batch = f["run_batch"].labels(*labels)
        self.series = f["series"].labels(*labels)
        self.steps = f["steps"].labels(*labels)
        self.created = f["created"].labels(*labels)
        self.far_out = f["far_out"].labels(*labels)
        steps = f["session_steps"]
        self.steps_by_outcome: dict[StepOutcome, Value] = {
            outcome: steps.labels(*labels, outcome)
            for outcome in ("applied", "replayed", "conflict")
        }


class Metrics:
    """The metrics of one app, and /metrics."""

    def __init__(self) -> None:
        # Worker processes of `seqcast serve` share their values through files.
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        self.shared = self.multiprocess_dir is not None
        self._families = Families(shared=self.shared)
        self._before_scrape: list[Callable[[], None]] = []
        self.family = {key: self._families.add(spec) for key, spec in SPECS.items()}
        self.registry = CollectorRegistry(auto_describe=False)
        if self.multiprocess_dir is not None:
            MultiProcessCollector(self.registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        else:
            self.registry.register(self._families)
        self._models: dict[tuple[str, int], ModelMetrics] = {}
        self.in_flight = self.family["in_flight"].labels()
        self.sessions_live = self.family["live"].labels()

    def model(self, model: LoadedModel) -> ModelMetrics:
        """The children of this model version (made on first use)."""
        return self.model_of(model.key)

    def model_of(self, key: tuple[str, int]) -> ModelMetrics:
        """The children of the model version with this (name, version)."""
        found = self._models.get(key)
        if found is None:
            found = self._models[key] = ModelMetrics(self, (key[0], str(key[1])))
        return found

    def before_scrape(self, flush: Callable[[], None]) -> None:
        """Call `flush` before each scrape (counts kept aside on the hot path)."""
        self._before_scrape.append(flush)

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition for this Accept header, and its content type."""
        for flush in self._before_scrape:
            flush()
        if self.multiprocess_dir is not None:
            mark_dead_workers(self.multiprocess_dir)
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def close(self) -> None:
        """This process stops serving: its live gauges no longer count (several workers)."""
        if self.multiprocess_dir is not None:
            mark_process_dead(os.getpid(), self.multiprocess_dir)  # type: ignore[no-untyped-call]


def mark_dead_workers(directory: str) -> None:
    """Drop the live gauges of worker processes that have exited (a crashed worker that
    the server replaced never ran its shutdown)."""
    pids = {_pid_of(path) for path in glob.glob(os.path.join(directory, "gauge_live*_*.db"))}
    for pid in pids - {None, os.getpid()}:
        assert pid is not None
        if not _alive(pid):
            mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def _pid_of(path: str) -> int | None:
    stem = os.path.basename(path)[: -len(".db")]
    pid = stem.rsplit("_", 1)[-1]
    return int(pid) if pid.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


class MetricsObserver:
    """The front door's observer: HTTP requests in flight and answered, and per-model
    request counts and durations for every request, whichever way it was answered.

    In one process a request that ran on a model version is noted as it ends, as one
    integer and its duration in two arrays; the others in a plain dict keyed by
    everything their labels need. Both reach their metrics when /metrics is scraped, or
    once the arrays hold _LOG_LIMIT requests (`flush`), counted together: the same
    model's durations are bucketed at once, and equal requests counted by one Counter.
    With several workers (SharedMetricsObserver) they go to the shared files at once,
    since the scraped worker cannot flush the others.
    """

    def __init__(self, metrics: Metrics, model_routes: Iterable[str]):
        self._metrics = metrics
        self._http = metrics.family["http"]
        self._requests = metrics.family["requests"]
        # Templates of routes whose requests are model requests even when they fail
        # before a model version is known (the POST routes with a body, the stream).
        self._model_templates = frozenset(model_routes)
        # By id of the route object the router put in the scope (the app's routes live
        # as long as it does; the entry keeps it alive): (route, template, model route).
        self._routes: dict[int, tuple[Any, str, bool]] = {}
        self._children: dict[_Key, tuple[Value, Value | None]] = {}
        self._durations: dict[tuple[str, int], Value] = {}
        self._pending: dict[_Key, int] | None = None if metrics.shared else {}
        # One process: model requests noted as they end, counted in `flush`, as numbers
        # only (no request's objects stay alive): pairs of a code for (id of the route,
        # method, model version, status), its index in _code_keys, and the duration.
        self._log = array("d")
        self._code_of: dict[_CodeKey, int] = {}
        self._code_keys: list[_CodeKey] = []
        # One process: the gauge of requests in flight is set at the scrape from the
        # front door's count (`bind`); several: each worker counts into the shared files.
        self.needs_start = metrics.shared
        self._in_flight: Callable[[], int] = lambda: 0
        metrics.before_scrape(self.flush)

    def bind(self, in_flight: Callable[[], int]) -> None:
        """Read the requests in flight from this (the front door's count)."""
        self._in_flight = in_flight

    def request_started(self, scope: Scope) -> None:
        self._metrics.in_flight.inc()  # several workers (needs_start)

    def request_ended(self, scope: Scope, status: int, seconds: float) -> None:
        # The common case in one lookup: an HTTP request on a route, with a method, that
        # ran on a model version, with a status already seen (else `_new_code`).
        try:
            code = self._code_of[
                id(scope["route"]), scope["method"], scope[REQUEST_INFO].model.key, status
            ]
        except (KeyError, AttributeError):
            made = self._new_code(scope, status)
            if made is None:
                self._ended_now(scope, status, seconds)
                return
            code = made
        log = self._log
        log.extend((code, seconds))
        if len(log) >= 2 * _LOG_LIMIT:
            self.flush()

    def _new_code(self, scope: Scope, status: int) -> int | None:
        """The code of a request `request_ended` has none for, made now; None for one
        counted at once (not a model request, no route or method, beyond _CODES)."""
        info: RequestInfo | None = scope.get(REQUEST_INFO)
        model = info.model if info is not None else None
        route = scope.get("route")
        method = scope.get("method")
        if (
            model is None
            or route is None
            or not isinstance(method, str)
            or not isinstance(status, int)
            or len(self._code_keys) >= _CODES
        ):
            return None
        if id(route) not in self._routes:
            self._route(route, "")
        self._duration(model)
        key = (id(route), method, model.key, status)
        code = self._code_of[key] = len(self._code_keys)
        self._code_keys.append(key)
        return code

    def _ended_now(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")  # set by the router that matched, or the front door
        known = self._routes.get(id(route))
        if known is None:
            known = self._route(route, scope["path"])
        template, model_route = known[1], known[2]
        method = scope.get("method")
        if method is None:
            method = "WEBSOCKET"
        elif method not in _METHODS:
            method = "other"
        info: RequestInfo | None = scope.get(REQUEST_INFO)
        model = info.model if info is not None else None
        if model is None and model_route:
            model = request_model(scope, True)
            name, version = (model.name, model.version) if model else ("", 0)  # unknown: ""
        elif model is not None:
            name, version = model.name, model.version
        else:
            name, version = None, 0  # not a model request
        if model is not None and method != "WEBSOCKET":  # a stream's time is its connection's
            self._duration(model).observe(seconds)
        key = (template, method, status, name, version)
        pending = self._pending
        if pending is not None:
            pending[key] = pending.get(key, 0) + 1
        else:
            self._count(key, 1)
            self._metrics.in_flight.dec()

    def _duration(self, model: LoadedModel) -> Value:
        return self._duration_of(model.key)

    def _duration_of(self, key: tuple[str, int]) -> Value:
        duration = self._durations.get(key)
        if duration is None:
            duration = self._durations[key] = self._metrics.model_of(key).request_duration
        return duration

    def _route(self, route: Any, path: str) -> tuple[Any, str, bool]:
        """What the observer needs of a route object, learnt the first time it is seen."""
        if route is None:  # no route matched, the request was refused first, or static
            template = STATIC_PREFIX if path.startswith(STATIC_PREFIX + "/") else ""
            return None, template, False
        template = getattr(route, "path", "")
        known = (route, template, template in self._model_templates)
        if len(self._routes) < 1000:  # an app has a few dozen
            self._routes[id(route)] = known
        return known

    def flush(self) -> None:
        """Move the waiting counts to their metrics (one process: before each scrape)."""
        pending = self._pending
        if pending is None:
            return
        log = self._log
        if log:
            self._log = array("d")
            codes, seconds = log[::2], log[1::2]  # codes as floats (exact below 2**53)
            keys = self._code_keys
            counted = Counter(codes)
            models = {keys[int(code)][2] for code in counted}
            if len(models) == 1:  # one model version: the common case
                observe_all(self._duration_of(models.pop()), seconds)
            else:
                by_model: dict[tuple[str, int], list[float]] = {}
                for code, took in zip(codes, seconds, strict=True):
                    model_key = keys[int(code)][2]
                    found = by_model.get(model_key)
                    if found is None:
                        found = by_model[model_key] = []
                    found.append(took)
                for model_key, took_all in by_model.items():
                    observe_all(self._duration_of(model_key), took_all)
            for code, count in counted.items():
                route_id, method, (name, version), status = keys[int(code)]
                known = self._routes.get(route_id, _UNKNOWN_ROUTE)
                if method not in _METHODS:
                    method = "other"
                noted: _Key = (known[1], method, status, name, version)
                pending[noted] = pending.get(noted, 0) + count
        for key, count in pending.items():
            self._count(key, count)
        pending.clear()
        self._metrics.in_flight.set(self._in_flight())

    def _count(self, key: _Key, count: int) -> None:
        children = self._children.get(key)
        if children is None:
            template, method, status, name, version = key
            http = self._http.labels(template, method, str(status))
            model = None
            if name is not None:
                outcome = "success" if 0 < status < 400 else "failure"
                labels = (name, str(version) if name else "", outcome, str(status))
                model = self._requests.labels(*labels)
            children = self._children[key] = (http, model)
        children[0].inc(count)
        if children[1] is not None:
            children[1].inc(count)


_UNKNOWN_ROUTE = (None, "", False)  # beyond the routes remembered (an app has a few dozen)

# (route template, method, status, model name or None when not a model request, version)
_Key = tuple[str, str, int, str | None, int]
# (id of the route object, method, (model name, version), status)
_CodeKey = tuple[int, str, tuple[str, int], int]


class SharedMetricsObserver(MetricsObserver):
    """The observer with several workers: every request counted at once into the shared
    files (with the gauge of requests in flight)."""

    def request_ended(self, scope: Scope, status: int, seconds: float) -> None:
        self._ended_now(scope, status, seconds)


def metrics_observer(metrics: Metrics, model_routes: Iterable[str]) -> MetricsObserver:
    """The front door's observer for these metrics (one process, or several workers)."""
    made = SharedMetricsObserver if metrics.shared else MetricsObserver
    return made(metrics, model_routes)
