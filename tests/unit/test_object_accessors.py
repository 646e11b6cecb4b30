"""The typed accessors every core reads stored objects through (shoal/models/objects.py, states.py): one
`status_state`, one rank table (`task_rank`), one `runtime_of`/`service_runtime`, one `job_iteration` — lenient
with objects that lack a field, as the hand-written reads they replace were."""

from __future__ import annotations

from shoal.models.objects import (
    job_iteration,
    runtime_of,
    service_runtime,
    spec_runtime,
    status_state,
    task_iteration,
)
from shoal.models.states import TaskState, task_rank


def test_status_state_reads_tasks_and_nodes_and_tolerates_a_missing_status() -> None:
    assert status_state({"status": {"state": "running"}}) == "running"
    assert status_state({"status": {"state": TaskState.PENDING}}) == "pending"
    assert status_state({"status": None}) is None
    assert status_state({}) is None


def test_one_rank_table_orders_states_and_ranks_unknown_ones_as_new() -> None:
    ranks = [task_rank(s.value) for s in TaskState]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)
    assert task_rank(TaskState.RUNNING) == TaskState.RUNNING.rank
    assert task_rank(None) == task_rank("bogus") == TaskState.NEW.rank == 0
    assert task_rank("assigned") < task_rank("running") < task_rank("complete") < task_rank("remove")


def test_runtime_of_a_task_and_of_a_service() -> None:
    assert spec_runtime({"process": {"command": ["true"]}}) == "process"
    assert spec_runtime({"container": {"image": "nginx"}}) == "container"
    assert runtime_of({"runtime": "attachment", "spec": {}}) == "attachment"
    assert runtime_of({"spec": {"process": {}}}) == "process"
    assert runtime_of({}) == "container"
    assert service_runtime({"spec": {"task": {"process": {}}}}) == "process"
    assert service_runtime({"spec": {}}) == "container"


def test_job_iterations() -> None:
    assert job_iteration({"job_status": {"job_iteration": 3}}) == 3
    assert job_iteration({"job_status": None}) == job_iteration({}) == 0
    assert task_iteration({"job_iteration": 2}) == 2 and task_iteration({}) == 0


def test_new_tasks_take_their_ids_from_the_injected_source() -> None:
    from shoal.models.objects import new_attachment_task, new_task

    service = {"id": "s1", "spec": {"name": "web", "task": {"process": {"command": ["true"]}}}}
    assert new_task(service, 1, 0.0, ids=lambda: "t" * 25)["id"] == "t" * 25
    assert new_attachment_task("n1", "node1", 0.0, ids=lambda: "a" * 25)["id"] == "a" * 25
    assert len(new_task(service, 1, 0.0)["id"]) == 25  # default: shoal.ids.new_id
