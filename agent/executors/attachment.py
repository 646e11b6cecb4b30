"""The `attachment` executor: network attachment tasks (SwarmKit's NetworkAttachmentSpec runtime, made by
`POST /v1/networks/{ref}/attachments` for a container the cluster does not manage).

Like the Docker engine's attachment controller, it runs nothing: the task stands for the container's place on
an attachable network, and its address (allocated by the allocator) is held while the task is RUNNING. The
agent walks it ASSIGNED → … → RUNNING and keeps it there until the cluster detaches it (desired REMOVE), when it
is SHUTDOWN. Every agent has this executor, whatever `SHOAL_EXECUTORS` says; it is not advertised in the node
description (the scheduler does not ask for one, as SwarmKit's does not)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from agent.executors.base import Obj
from shoal.models.objects import ATTACHMENT_RUNTIME


class AttachmentController:
    def __init__(self, task: Obj) -> None:
        self.container_id = str(((task.get("spec") or {}).get("attachment") or {}).get("container_id") or "")
        self._exit_code: int | None = None

    @property
    def pid(self) -> int | None:
        return None

    @property
    def exit_code(self) -> int | None:
        return self._exit_code

    def saved(self) -> dict[str, Any]:
        return {}

    async def prepare(self) -> None:
        return None

    async def start(self) -> None:
        return None

    async def wait(self) -> None:
        await asyncio.Event().wait()  # held until the driver cancels the wait to shut it down

    async def shutdown(self) -> None:
        if self._exit_code is None:
            self._exit_code = 0

    async def terminate(self) -> None:
        await self.shutdown()

    async def remove(self) -> None:
        return None


class AttachmentExecutor:
    name = ATTACHMENT_RUNTIME

    @property
    def runtimes(self) -> tuple[str, ...]:
        return (ATTACHMENT_RUNTIME,)

    def controller(self, task: Obj, *, node_id: str,
                   saved: Mapping[str, Any] | None = None) -> AttachmentController:
        return AttachmentController(task)
