"""The linearizability checker itself, on known-good and known-bad histories."""

from __future__ import annotations

import random

from tests.tools.lincheck import Operation, check


def w(c: int, v: object, call: float, ret: float | None, key: str = "k") -> Operation:
    return Operation(c, key, "write", v, None, call, ret)


def r(c: int, v: object, call: float, ret: float | None, key: str = "k") -> Operation:
    return Operation(c, key, "read", None, v, call, ret)


def test_sequential_history_is_linearizable() -> None:
    assert check([w(1, 1, 0, 1), r(2, 1, 2, 3), w(1, 2, 4, 5), r(2, 2, 6, 7)])[0]


def test_concurrent_read_may_see_old_or_new_value() -> None:
    assert check([w(1, 1, 0, 10), r(2, None, 1, 2)])[0]
    assert check([w(1, 1, 0, 10), r(2, 1, 1, 2)])[0]


def test_stale_read_after_acknowledged_write_is_caught() -> None:
    ok, key = check([w(1, 1, 0, 1), r(2, None, 2, 3)])
    assert not ok and key == "k"


def test_read_going_back_in_time_is_caught() -> None:
    hist = [w(1, 1, 0, 1), w(1, 2, 2, 3), r(2, 2, 4, 5), r(3, 1, 6, 7)]
    assert not check(hist)[0]


def test_two_readers_disagreeing_on_order_is_caught() -> None:
    # writes of 1 and 2 overlap; reader A sees 1 then 2, reader B sees 2 then 1: no single order explains both
    hist = [w(1, 1, 0, 10), w(2, 2, 0, 10), r(3, 1, 1, 2), r(3, 2, 3, 4), r(4, 2, 1, 2), r(4, 1, 5, 6)]
    assert not check(hist)[0]


def test_unknown_write_may_or_may_not_take_effect() -> None:
    assert check([w(1, 1, 0, None), r(2, 1, 5, 6)])[0]
    assert check([w(1, 1, 0, None), r(2, None, 5, 6)])[0]
    # but once seen, it cannot vanish again
    assert not check([w(1, 1, 0, None), r(2, 1, 5, 6), r(2, None, 7, 8)])[0]


def test_cas() -> None:
    cas_ok = Operation(1, "k", "cas", (None, 5), True, 0, 1)
    cas_bad = Operation(2, "k", "cas", (None, 6), True, 2, 3)  # cannot also succeed from None
    assert check([cas_ok, r(3, 5, 4, 5)])[0]
    assert not check([cas_ok, cas_bad])[0]


def test_keys_are_checked_independently() -> None:
    hist = [w(1, 1, 0, 1, "a"), r(2, 1, 2, 3, "a"), w(1, 1, 0, 1, "b"), r(2, None, 2, 3, "b")]
    assert check(hist) == (False, "b")


def test_random_register_simulation_is_linearizable() -> None:
    # A real atomic register driven by overlapping clients: every history it produces must pass.
    rng = random.Random(7)
    for _ in range(30):
        value = None
        hist = []
        t = 0.0
        inflight: list[tuple[int, str, object, float]] = []
        for _ in range(40):
            t += 1
            if inflight and rng.random() < 0.5:
                c, kind, arg, call = inflight.pop(rng.randrange(len(inflight)))
                if kind == "write":
                    value = arg
                    hist.append(w(c, arg, call, t))
                else:
                    hist.append(r(c, value, call, t))
            else:
                kind = rng.choice(["read", "write"])
                inflight.append((rng.randrange(5), kind, rng.randrange(3), t))
        assert check(hist)[0]
