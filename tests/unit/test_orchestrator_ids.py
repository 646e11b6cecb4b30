"""The orchestrator core names the tasks it creates with the ids its View carries (`View.ids`), so a simulation
replays a seed exactly without patching a module attribute; without one, `shoal.ids.new_id`."""

from __future__ import annotations

import itertools

from shoal.planning.orchestrator.core import View, reconcile
from shoal.planning.orchestrator.restart import RestartHistory
from tests.sim.cp_fakes import make_node, with_meta
from tests.unit.orchestrator_bench import service_of


def test_created_tasks_take_the_views_ids() -> None:
    counter = itertools.count(1)
    svc = with_meta(service_of("web", 3))
    view = View({svc["id"]: svc}, {}, {"n1": make_node("n1")}, ids=lambda: f"task{next(counter):021d}")
    plan = reconcile(view, RestartHistory(), 10.0)
    created = sorted(o["object"]["id"] for o in plan.ops if o["op"] == "create")
    assert created == [f"task{i:021d}" for i in (1, 2, 3)]
    default = reconcile(View({svc["id"]: svc}, {}, {"n1": make_node("n1")}), RestartHistory(), 10.0)
    assert all(len(o["object"]["id"]) == 25 and not o["object"]["id"].startswith("task") for o in default.ops)
