"""The `attachment` executor: network attachment tasks (SwarmKit's NetworkAttachmentSpec runtime, made by
`POST /v1/networks/{ref}/attachments` for a container the cluster does not manage).

Like the Docker engine's attachment controller, it runs nothing: the task stands for the container's place on
an attachable network, and its address (allocated by the allocator) is held while the task is RUNNING. The
agent walks it ASSIGNED → … → RUNNING and keeps it there until the cluster detaches it (desired REMOVE), when it
is SHUTDOWN. Every agent has this executor, whatever `SHOAL_EXECUTORS` says; it is not advertised in the node
description (the scheduler does not ask for one, as SwarmKit's does not)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.executors.base import BaseExecutor, Obj
from agent.executors.hollow import HollowController
from shoal.models.objects import ATTACHMENT_RUNTIME


class AttachmentController(HollowController):
    """A hollow task that never exits by itself: held RUNNING until the driver shuts it down."""

    def __init__(self, task: Obj) -> None:
        super().__init__(task, env={})


class AttachmentExecutor(BaseExecutor):
    name = ATTACHMENT_RUNTIME

    @property
    def runtimes(self) -> tuple[str, ...]:
        return (ATTACHMENT_RUNTIME,)

    def controller(self, task: Obj, *, node_id: str,
                   saved: Mapping[str, Any] | None = None) -> AttachmentController:
        return AttachmentController(task)
