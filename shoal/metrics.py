"""Prometheus metrics for every shoal process, on `prometheus_client`.

Each app owns one `Registry`, backed by its own `prometheus_client.CollectorRegistry` (never the library's
global one), so several apps built in one process (tests, in-process clusters) count separately. The names
are prefixed `shoal_`; counters are created on first use (`inc`), gauges read a callback at scrape time,
histograms observe seconds. Every metric is listed in docs/operations.md.

Label values must come from a small fixed set (a task state, a route *template*, a status code): never an id,
a name or a raw path, so that the number of series stays bounded whatever the clients send.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

# The `<name>_created` series prometheus_client adds to each counter and histogram double a scrape's size and
# nobody here reads them; this is the library's own switch (process-wide, like the env var it mirrors).
prometheus_client.disable_created_metrics()

CONTENT_TYPE = CONTENT_TYPE_LATEST

#: latency buckets (seconds) for work measured in milliseconds: fsyncs, commits, transactions, HTTP requests
FAST_BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                                   5.0, 10.0)
#: buckets for lags that may reach seconds: a planning pass behind the store, an assignment on its way to an agent
LAG_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                                  60.0)


def _base(name: str) -> str:
    return name[: -len("_total")] if name.endswith("_total") else name


class Registry:
    """One app's metrics. `inc`/`gauge`/`observe` take names without the `shoal_` prefix."""

    def __init__(self, prefix: str = "shoal") -> None:
        self.prefix = prefix
        self.registry = CollectorRegistry(auto_describe=True)
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, Gauge] = {}
        self._histograms: dict[str, Histogram] = {}

    def _full(self, name: str) -> str:
        return f"{self.prefix}_{name}"

    # ---- counters -------------------------------------------------------------------------------------------
    def counter(self, name: str, help: str = "", labels: Sequence[str] = ()) -> Counter:
        """The counter `name` (created on first use; `_total` is the exposed suffix whether given or not)."""
        key = _base(name)
        c = self._counters.get(key)
        if c is None:
            c = Counter(self._full(key), help or key, labelnames=tuple(labels), registry=self.registry)
            self._counters[key] = c
        return c

    def inc(self, name: str, value: float = 1.0, help: str = "", labels: dict[str, str] | None = None) -> None:
        if value < 0:
            raise ValueError(f"metrics: counter {name} cannot go down (inc by {value})")
        c = self.counter(name, help, tuple(labels) if labels else ())
        (c.labels(**labels) if labels else c).inc(value)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A counter's current value (0 if never incremented); for tests and status pages."""
        c = self._counters.get(_base(name))
        if c is None:
            return 0.0
        sample = f"{self._full(_base(name))}_total"
        total = 0.0
        for family in c.collect():
            for s in family.samples:
                if s.name == sample and all(s.labels.get(k) == v for k, v in (labels or {}).items()):
                    total += s.value
        return total

    # ---- gauges ---------------------------------------------------------------------------------------------
    def gauge(self, name: str, fn: Callable[[], float], help: str = "") -> None:
        """A gauge read from `fn` at each scrape (a failing callback is reported as NaN, never a failed scrape)."""
        g = self._gauges.get(name)
        if g is None:
            g = Gauge(self._full(name), help or name, registry=self.registry)
            self._gauges[name] = g

        def read() -> float:
            try:
                return float(fn())
            except Exception:
                return float("nan")

        g.set_function(read)

    # ---- histograms -----------------------------------------------------------------------------------------
    def histogram(self, name: str, help: str = "", labels: Sequence[str] = (),
                  buckets: Sequence[float] = FAST_BUCKETS) -> Histogram:
        h = self._histograms.get(name)
        if h is None:
            h = Histogram(self._full(name), help or name, labelnames=tuple(labels), buckets=tuple(buckets),
                          registry=self.registry)
            self._histograms[name] = h
        return h

    def observe(self, name: str, seconds: float, help: str = "", labels: dict[str, str] | None = None,
                buckets: Sequence[float] = FAST_BUCKETS) -> None:
        h = self.histogram(name, help, tuple(labels) if labels else (), buckets)
        (h.labels(**labels) if labels else h).observe(max(0.0, seconds))

    @contextmanager
    def time(self, name: str, help: str = "", buckets: Sequence[float] = FAST_BUCKETS) -> Iterator[None]:
        """Observe the wall time of the `with` block into the histogram `name`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.observe(name, time.perf_counter() - start, help, buckets=buckets)

    def count(self, name: str) -> int:
        """How many observations the histogram `name` holds (all label sets); for tests."""
        h = self._histograms.get(name)
        if h is None:
            return 0
        n = 0.0
        for family in h.collect():
            for s in family.samples:
                if s.name == f"{self._full(name)}_count":
                    n += s.value
        return int(n)

    # ---- exposition -----------------------------------------------------------------------------------------
    def render(self) -> str:
        """The Prometheus text exposition of everything registered here."""
        return generate_latest(self.registry).decode()
