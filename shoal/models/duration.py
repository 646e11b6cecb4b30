"""Durations on the wire: a number of seconds, or a Go-style string such as "5s", "1m30s", "250ms"."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
#: Go's largest time.Duration (int64 nanoseconds, about 292 years): what SwarmKit/Docker users can write
MAX_DURATION = (2**63 - 1) / 1e9


def _bounded(seconds: float, value: Any) -> float:
    if not math.isfinite(seconds) or seconds > MAX_DURATION:
        raise ValueError(f"duration {str(value)[:40]} is too long: at most {MAX_DURATION:.0f}s (about 292 years)")
    return seconds


def parse_duration(value: Any) -> float:
    """Seconds from a number or a duration string; raises ValueError naming the accepted forms."""
    if isinstance(value, bool):
        raise ValueError("duration must be a number of seconds or a string like '5s'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("duration must not be negative")
        return _bounded(float(value), value)
    if isinstance(value, str):
        text = value.strip()
        if text in ("0", ""):
            return 0.0
        pos, total = 0, 0.0
        for m in _PART.finditer(text):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if pos == len(text) and pos > 0:
            return _bounded(total, value)
        raise ValueError(f"invalid duration {value!r}: use seconds or a string like '5s', '1m30s', '250ms'")
    raise ValueError("duration must be a number of seconds or a string like '5s'")


Duration = Annotated[float, BeforeValidator(parse_duration)]
