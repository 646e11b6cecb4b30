"""`shoal service ps`'s rows (shoal.cli.table.task_rows, rewritten for 100k-task services: one grouping pass,
flat sort keys, repeated cells computed once) against the plain statement of docker's order: groups by
(service name case-insensitively, slot number or node), equal keys in the order first seen, newest task first in
a group, the history marked ` \\_ `."""

from __future__ import annotations

import random
from typing import Any

import pytest

from shoal.cli import table


def reference_rows(tasks: list[dict[str, Any]], nodes: dict[str, str], now: float,
                   no_trunc: bool) -> list[list[str]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for t in tasks:
        groups.setdefault((str(t.get("service_name") or t.get("service_id")), table.task_slot(t)), []).append(t)
    rows = []

    def slot_order(k: str) -> tuple[int, int | str]:
        return (0, int(k)) if k.isdigit() else (1, k)

    for key in sorted(groups, key=lambda k: (k[0].lower(), slot_order(k[1]))):
        history = sorted(groups[key], key=table._recency, reverse=True)
        name = table.task_display_name(history[0])
        for i, t in enumerate(history):
            status = t.get("status") or {}
            node_id = t.get("node_id")
            err = status.get("err")
            rows.append([table.short_id(t["id"], no_trunc=no_trunc), (" \\_ " + name) if i else name,
                         nodes.get(node_id, table.short_id(node_id, no_trunc=no_trunc)) if node_id else "",
                         table.title(t.get("desired_state")),
                         f"{table.title(status.get('state'))} {table.ago(status.get('timestamp'), now)}".rstrip(),
                         table.truncate(f'"{err}"', enabled=not no_trunc) if err else ""])
    return rows


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("no_trunc", [False, True])
def test_rows_equal_the_plain_statement(seed: int, no_trunc: bool) -> None:
    rng = random.Random(seed)
    now = 1_000_000.0
    tasks = []
    for i in range(1500):
        t: dict[str, Any] = {
            "id": f"{rng.randrange(10**24):025d}", "service_id": rng.choice(["s" * 25, "t" * 25]),
            "service_name": rng.choice(["web", "Web", "db", None, ""]),
            "slot": rng.choice([rng.randrange(1, 60), 0, None, rng.randrange(1, 3000)]),
            "node_id": rng.choice([f"node{rng.randrange(40):03d}", None, "123456789012345"]),
            "desired_state": rng.choice(["running", "shutdown", "ready", None]),
            "status": {"state": rng.choice(["running", "failed", "new", None]),
                       "timestamp": rng.choice([now - rng.random() * 10**6, None, 0]),
                       "err": rng.choice([None, "", "boom " * rng.randrange(1, 20)])},
            "meta": {"created_at": rng.choice([now - rng.random() * 1000, None, now - 5])},
        }
        if i % 97 == 0:
            t.pop("status")
        tasks.append(t)
    nodes = {f"node{i:03d}": f"host-{i}" for i in range(0, 40, 3)}
    got = table.task_rows(tasks, nodes, now, no_trunc=no_trunc)
    assert [list(r) for r in got] == reference_rows(tasks, nodes, now, no_trunc)
    cells = [list(table.TASK_HEADERS), *reference_rows(tasks, nodes, now, no_trunc)]
    widths = [max(len(row[c]) for row in cells) for c in range(len(table.TASK_HEADERS))]
    want = "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in cells)
    assert table.task_table(tasks, nodes, now, no_trunc=no_trunc) == want
