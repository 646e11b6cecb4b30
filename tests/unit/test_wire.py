"""shoal/wire.py: the fast JSON of the store's wire gives what the standard library would, including the cases
orjson refuses on its own."""

from __future__ import annotations

import json
import math

from shoal import wire
from shoal.models.kinds import Kind


def test_dumps_is_compact_json_and_falls_back_for_what_orjson_refuses() -> None:
    body = {"revision": 7, "items": [{"id": "a", "status": {"state": "running", "pid": None}, "f": 1.5,
                                      "s": "é\u2028"}], "kind": Kind.TASK}
    assert json.loads(wire.dumps(body)) == json.loads(json.dumps(body))
    assert b" " not in wire.dumps({"a": [1, 2]})
    assert wire.dumps({Kind.TASK: 1}) == b'{"task":1}'  # enum keys, as json writes them
    assert wire.dumps({"n": 2**70}) == b'{"n":1180591620717411303424}'  # beyond 64 bits: json's encoder


def test_loads_reads_what_json_reads() -> None:
    assert wire.loads(b'{"a":[1,"x",null,true]}') == {"a": [1, "x", None, True]}
    assert wire.loads('{"n": 9223372036854775807}')["n"] == 2**63 - 1
    assert math.isnan(wire.loads(b'{"a": NaN}')["a"])


def test_bench_wire_small_run() -> None:
    from bench import wire as bench_wire

    r = bench_wire.main(["--changes", "50", "--rounds", "2"])
    assert r["dumps_ratio"] > 0 and r["loads_ratio"] > 0
