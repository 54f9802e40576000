"""Metric values: plain numbers in one process, or prometheus_client's shared files when
several worker processes serve (SEQCAST_WORKERS > 1).

prometheus_client's metric objects cost 0.7 µs per counter increment and 1.2-3 µs per
histogram observation here (several Python calls and a lock each); a predict request
costs about 100 µs of server CPU and updates about ten values, so they alone would eat
most of the 5 % that metrics may cost. In one process seqcast keeps its own values
instead (one uncontended lock: 0.2 µs an update) and turns them into metric families only
when /metrics is scraped. With several workers each process must write its values where
the scraped worker can read them: prometheus_client's multiprocess mode (files in
PROMETHEUS_MULTIPROC_DIR, which `seqcast serve` makes), whose children have the same
`inc`, `dec`, `set` and `observe` methods, so the code that counts is the same.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

Kind = Literal["counter", "gauge", "histogram"]
GaugeMode = Literal[
    "all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum", "mostrecent",
    "livemostrecent",
]  # fmt: skip


@dataclass(frozen=True)
class Spec:
    """One metric: its name (a counter's without `_total`), help, labels and kind."""

    name: str
    doc: str
    kind: Kind
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()  # histograms: upper bounds, without +Inf
    # Gauges, several workers: how the workers' values combine (prometheus_client's
    # multiprocess_mode; "live..." modes drop the values of a worker that has exited).
    multiprocess_mode: GaugeMode = "livesum"
    # Updated from worker threads as well as the event loop (the runner's thread pool):
    # its local values take a lock. The others are only touched on the event loop.
    threaded: bool = False


class Value(Protocol):
    """One labelled child; each kind uses its own subset of these."""

    def inc(self, amount: float = 1) -> None: ...

    def dec(self, amount: float = 1) -> None: ...

    def set(self, value: float) -> None: ...

    def observe(self, amount: float) -> None: ...


# One lock for every threaded local value: each update holds it for a few bytecodes.
# service.telemetry.work updates several of them at once under it (one batch's record).
LOCK = threading.Lock()


class _LocalNumber:
    """A counter's or a gauge's value in this process, updated on the event loop only."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = value

    def observe(self, amount: float) -> None:
        raise TypeError("observe() is for histograms")


class _ThreadedNumber(_LocalNumber):
    """A value also updated from worker threads."""

    __slots__ = ()

    def inc(self, amount: float = 1) -> None:
        with LOCK:
            self.value += amount

    def dec(self, amount: float = 1) -> None:
        with LOCK:
            self.value -= amount


class _LocalHistogram:
    """Bucket counts (not cumulative) and the sum of observations, in this process,
    updated on the event loop only."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1  # first bound >= amount: `le`
        self.sum += amount

    def inc(self, amount: float = 1) -> None:
        raise TypeError("inc() is for counters and gauges")

    dec = inc

    def set(self, value: float) -> None:
        raise TypeError("set() is for gauges")

    def observe_all(self, amounts: Sequence[float]) -> None:
        """Observe each amount: bucketed at once by numpy, then added under the lock
        (taken once)."""
        found = np.bincount(
            np.searchsorted(self.bounds, amounts, side="left"), minlength=len(self.counts)
        ).tolist()
        total = sum(amounts)
        with LOCK:
            counts = self.counts
            for i, count in enumerate(found):
                counts[i] += count
            self.sum += total


class _ThreadedHistogram(_LocalHistogram):
    """A histogram also updated from worker threads."""

    __slots__ = ()

    def observe(self, amount: float) -> None:
        i = bisect_left(self.bounds, amount)
        with LOCK:
            self.counts[i] += 1
            self.sum += amount


def observe_all(histogram: Value, amounts: Sequence[float]) -> None:
    """Observe each amount (a local histogram's lock taken once)."""
    if isinstance(histogram, _LocalHistogram):
        histogram.observe_all(amounts)
    else:
        for amount in amounts:
            histogram.observe(amount)


class Family:
    """A metric and its labelled children, made on first use and kept."""

    def __init__(self, spec: Spec, shared: bool) -> None:
        self.spec = spec
        self._children: dict[tuple[str, ...], Value] = {}
        self._shared: Any = None
        if shared:  # prometheus_client's metric, its values in the multiprocess files
            options: dict[str, Any] = {"labelnames": spec.labels, "registry": None}
            if spec.kind == "counter":
                self._shared = Counter(spec.name, spec.doc, **options)
            elif spec.kind == "gauge":
                mode = spec.multiprocess_mode
                self._shared = Gauge(spec.name, spec.doc, multiprocess_mode=mode, **options)
            else:
                self._shared = Histogram(spec.name, spec.doc, buckets=spec.buckets, **options)

    def labels(self, *values: str) -> Value:
        """The child for these label values (in the order of spec.labels)."""
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.spec.labels):
                raise ValueError(f"{self.spec.name} takes labels {self.spec.labels}")
            if self._shared is not None:
                child = self._shared.labels(*values) if values else self._shared
            elif self.spec.kind == "histogram":
                threaded = _ThreadedHistogram if self.spec.threaded else _LocalHistogram
                child = threaded(self.spec.buckets)
            else:
                child = _ThreadedNumber() if self.spec.threaded else _LocalNumber()
            self._children[values] = child
        return child

    def collect(self) -> Metric:
        """This process's values as a metric family (local values only)."""
        spec = self.spec
        children = list(self._children.items())  # a copy: children may be added meanwhile
        if spec.kind == "histogram":
            histogram = HistogramMetricFamily(spec.name, spec.doc, labels=spec.labels)
            for values, child in children:
                assert isinstance(child, _LocalHistogram)
                with LOCK:
                    counts, total = list(child.counts), child.sum
                running, buckets = 0, []
                for bound, count in zip((*spec.buckets, float("inf")), counts, strict=True):
                    running += count
                    buckets.append((floatToGoString(bound), float(running)))  # type: ignore[no-untyped-call]
                histogram.add_metric(list(values), buckets, total)
            return histogram
        number = (CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily)(
            spec.name, spec.doc, labels=spec.labels
        )
        for values, child in children:
            assert isinstance(child, _LocalNumber)
            number.add_metric(list(values), child.value)
        return number


class Families(Collector):
    """Every family of one app; in one process, also the collector that exposes them."""

    def __init__(self, shared: bool) -> None:
        self.shared = shared
        self._families: list[Family] = []

    def add(self, spec: Spec) -> Family:
        family = Family(spec, self.shared)
        self._families.append(family)
        return family

    def collect(self) -> Iterator[Metric]:
        if self.shared:
            return  # the multiprocess collector reads the files instead
        for family in self._families:
            yield family.collect()
