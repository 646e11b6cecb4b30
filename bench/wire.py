"""The store wire's JSON (shoal/wire.py, orjson) against the standard library's `json`, measured in the same
run: encoding and decoding one watch answer of N task changes (the raftstore encodes one per follower and each
follower decodes it). Best of `--rounds`, alternating.

    python bench/wire.py                        # 1,000 task changes, 7 rounds
    python bench/wire.py --changes 100 --rounds 2   # CI-sized
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shoal import wire


def watch_answer(n: int) -> dict[str, Any]:
    def task(i: int) -> dict[str, Any]:
        return {"id": f"t{i:024d}", "service_id": "s" * 25, "node_id": f"n{i % 100:024d}", "slot": i,
                "desired_state": "running", "runtime": "process",
                "spec": {"process": {"command": ["sleep", "infinity"], "env": ["A=1"]}, "resources": {},
                         "restart": {"condition": "any", "delay": 5.0}},
                "status": {"state": "running", "message": "started", "err": None, "timestamp": 1.7e9 + i,
                           "pid": 1000 + i, "exit_code": None},
                "networks": [], "meta": {"version": 1000 + i, "created_at": 1.7e9, "updated_at": 1.7e9 + i}}
    return {"revision": 1000 + n, "events": [{"revision": 1000 + i, "time": 1.7e9 + i,
                                              "changes": [{"action": "update", "kind": "task", "id": f"t{i}",
                                                           "object": task(i)}]} for i in range(n)]}


def best(fn: Any, rounds: int) -> float:
    out = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        fn()
        out = min(out, time.process_time() - t0)
    return out


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--changes", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=7)
    a = p.parse_args(argv)
    body = watch_answer(a.changes)
    raw = json.dumps(body, separators=(",", ":")).encode()
    assert wire.loads(wire.dumps(body)) == json.loads(raw)
    r = {"json_dumps": best(lambda: json.dumps(body, separators=(",", ":")), a.rounds),
         "wire_dumps": best(lambda: wire.dumps(body), a.rounds),
         "json_loads": best(lambda: json.loads(raw), a.rounds),
         "wire_loads": best(lambda: wire.loads(raw), a.rounds)}
    r["dumps_ratio"] = r["json_dumps"] / max(r["wire_dumps"], 1e-9)
    r["loads_ratio"] = r["json_loads"] / max(r["wire_loads"], 1e-9)
    print(f"a watch answer of {a.changes} task changes ({len(raw) / 2**10:.0f} KiB), CPU, best of {a.rounds}: "
          f"encode json {1e3 * r['json_dumps']:.1f} ms, wire {1e3 * r['wire_dumps']:.1f} ms "
          f"({r['dumps_ratio']:.1f}x); decode json {1e3 * r['json_loads']:.1f} ms, wire "
          f"{1e3 * r['wire_loads']:.1f} ms ({r['loads_ratio']:.1f}x)")
    return r


if __name__ == "__main__":
    main()
