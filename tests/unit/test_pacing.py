"""shoal/pacing.py: batched but not delayed — the first batch at once, then at most one per interval."""

from __future__ import annotations

from shoal.pacing import Pacer


def test_the_first_batch_goes_at_once_then_one_per_interval() -> None:
    p = Pacer(0.1)
    assert p.delay(5.0) == 0.0  # nothing sent yet: a lone change is not delayed
    p.sent(5.0)
    assert abs(p.delay(5.03) - 0.07) < 1e-9  # within the interval: gather until it ends
    assert p.delay(5.1) == 0.0 and p.delay(7.0) == 0.0  # after a quiet spell: at once again
    p.sent(7.0)
    assert abs(p.delay(7.0) - 0.1) < 1e-9


def test_a_zero_or_negative_interval_never_waits() -> None:
    for interval in (0.0, -1.0):
        p = Pacer(interval)
        p.sent(1.0)
        assert p.delay(1.0) == 0.0
