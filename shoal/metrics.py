"""A tiny Prometheus text-format registry (counters and gauges); enough for /metrics without a dependency."""

from __future__ import annotations

from collections.abc import Callable


class Registry:
    def __init__(self, prefix: str = "shoal") -> None:
        self.prefix = prefix
        self._counters: dict[str, float] = {}
        self._gauges: dict[str, Callable[[], float]] = {}
        self._help: dict[str, str] = {}

    def inc(self, name: str, value: float = 1.0, help: str = "") -> None:
        self._counters[name] = self._counters.get(name, 0.0) + value
        if help:
            self._help[name] = help

    def gauge(self, name: str, fn: Callable[[], float], help: str = "") -> None:
        self._gauges[name] = fn
        if help:
            self._help[name] = help

    def value(self, name: str) -> float:
        return self._counters.get(name, 0.0)

    def render(self) -> str:
        lines = []
        for name, v in sorted(self._counters.items()):
            full = f"{self.prefix}_{name}"
            lines += [f"# HELP {full} {self._help.get(name, name)}", f"# TYPE {full} counter", f"{full} {v}"]
        for name, fn in sorted(self._gauges.items()):
            full = f"{self.prefix}_{name}"
            try:
                v = float(fn())
            except Exception:
                continue
            lines += [f"# HELP {full} {self._help.get(name, name)}", f"# TYPE {full} gauge", f"{full} {v}"]
        return "\n".join(lines) + "\n"
