"""The allocator's pools, pure: subnets from 10.0.0.0/8, addresses inside a subnet, ingress ports."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from services.allocator.ipam import AddressPool, PortSpace, SubnetPool, parse_address


def net(text: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(text)


# ---- subnets -------------------------------------------------------------------------------------------------
def test_pool_hands_out_lowest_free_24s_and_skips_the_ingress_range() -> None:
    pool = SubnetPool()
    assert pool.take("a") == net("10.0.0.0/24")
    assert pool.take("b") == net("10.0.1.0/24")
    assert pool.reserve(net("10.0.2.0/23"), "user") is None  # a user subnet blocks both /24s it covers
    assert pool.take("c") == net("10.0.4.0/24")
    small = SubnetPool(pool="10.255.0.0/16")  # the whole pool is the excluded ingress range
    assert small.take("x") is None


def test_user_subnets_are_refused_when_they_overlap_one_in_use() -> None:
    pool = SubnetPool()
    pool.take("a")  # 10.0.0.0/24
    clash = pool.reserve(net("10.0.0.0/16"), "user")
    assert clash == (net("10.0.0.0/24"), "a")
    assert pool.reserve(net("10.0.0.128/25"), "a") is None  # the owner overlapping itself is fine
    assert pool.reserve(net("192.168.1.0/24"), "outside") is None  # outside the default pool is fine too
    assert pool.reserve(net("192.168.0.0/16"), "wide") == (net("192.168.1.0/24"), "outside")


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.one_of(st.just(None), st.tuples(st.integers(0, 40), st.integers(20, 28))),
                      max_size=60))
def test_subnets_in_use_never_overlap(steps: list[tuple[int, int] | None]) -> None:
    pool = SubnetPool()
    for i, step in enumerate(steps):
        if step is None:
            pool.take(f"p{i}")
        else:
            third, prefix = step
            wanted = ipaddress.IPv4Network((int(ipaddress.IPv4Address(f"10.0.{third}.0")), prefix), strict=False)
            pool.reserve(wanted, f"u{i}")
    taken = [n for n, _ in pool.taken]
    for i, a in enumerate(taken):
        for b in taken[i + 1:]:
            assert not a.overlaps(b), (a, b)
        assert not a.overlaps(net("10.255.0.0/16"))


# ---- addresses -----------------------------------------------------------------------------------------------
def test_address_pool_skips_network_gateway_and_broadcast() -> None:
    pool = AddressPool(net("10.0.1.0/29"))  # .0 network, .1 gateway, .7 broadcast
    got = [pool.take() for _ in range(6)]
    texts = [pool.text(a) for a in got if a is not None]
    assert texts == ["10.0.1.2/29", "10.0.1.3/29", "10.0.1.4/29", "10.0.1.5/29", "10.0.1.6/29"]
    assert got[-1] is None
    first = parse_address("10.0.1.3/29")
    assert first is not None
    pool.release(first[1])
    assert pool.take() == first[1]  # released addresses are handed out again
    custom = AddressPool(net("10.9.0.0/30"), ipaddress.IPv4Address("10.9.0.2"))
    assert custom.take() == int(ipaddress.IPv4Address("10.9.0.1")) and custom.take() is None
    assert not custom.reserve(int(ipaddress.IPv4Address("10.9.0.3")))  # broadcast


def test_ipv6_pools_have_no_broadcast() -> None:
    pool = AddressPool(ipaddress.IPv6Network("fd00::/126"))
    assert [pool.text(a) for a in (pool.take(), pool.take()) if a is not None] == ["fd00::2/126", "fd00::3/126"]
    assert pool.take() is None


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["take", "release", "reserve"]), st.integers(0, 20)), max_size=80))
def test_address_pool_never_hands_out_an_address_twice(ops: list[tuple[str, int]]) -> None:
    pool = AddressPool(net("10.0.0.0/27"))
    held: set[int] = set()
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    for op, n in ops:
        if op == "take":
            a = pool.take()
            if a is None:
                assert len(held) == pool.size - 1  # everything but the gateway is held
            else:
                assert a not in held and a in pool and a != int(pool.gateway)
                held.add(a)
        elif op == "release" and held:
            a = sorted(held)[n % len(held)]
            pool.release(a)
            held.discard(a)
        elif op == "reserve":
            a = base + n
            ok = pool.reserve(a)
            assert ok == (a in pool and a not in held and a != int(pool.gateway))
            if ok:
                held.add(a)


# ---- ports ---------------------------------------------------------------------------------------------------
def test_dynamic_ports_lowest_free_avoiding_ports_in_use() -> None:
    ports = PortSpace()
    assert ports.take("tcp", "a") == 30000
    ports.host.add(("tcp", 30001))  # published in host mode by some service: never picked
    assert ports.reserve("tcp", 30002, "b") is None
    assert ports.take("tcp", "c") == 30003
    assert ports.take("udp", "c") == 30000  # per protocol
    assert ports.reserve("tcp", 30000, "d") == "a"
    ports.release("tcp", 30000, "a")
    assert ports.take("tcp", "d") == 30000
    tiny = PortSpace(start=100, end=101)
    assert (tiny.take("tcp", "x"), tiny.take("tcp", "y"), tiny.take("tcp", "z")) == (100, 101, None)
