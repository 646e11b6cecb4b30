"""The agent's state directory (`SHOAL_STATE_DIR`), so a restarted agent keeps its node identity and finds its
tasks again (SwarmKit keeps the same in `<state>/worker/tasks.db`):

    node_id            the id the cluster knows this node by
    tasks.json         {task id: {"task": ..., "status": ..., "saved": ...}} — each task, its local status and
                       what its controller needs to find the workload again (pid, start time)
    logs/<task>.log    output of `process` tasks

Files are replaced atomically (write, fsync, rename), so a crash leaves the old or the new version."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from shoal.files import write_atomic

log = logging.getLogger(__name__)


class AgentState:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def log_dir(self) -> Path:
        return self.dir / "logs"

    def load_node_id(self) -> str | None:
        try:
            text = (self.dir / "node_id").read_text().strip()
        except FileNotFoundError:
            return None
        return text or None

    def save_node_id(self, node_id: str) -> None:
        if self.load_node_id() != node_id:
            self._write(self.dir / "node_id", node_id + "\n")

    def forget(self) -> None:
        """The node left the cluster: nothing of it is resumed (its node id and tasks are gone)."""
        for name in ("node_id", "tasks.json"):
            (self.dir / name).unlink(missing_ok=True)

    def load_tasks(self) -> dict[str, dict[str, Any]]:
        path = self.dir / "tasks.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            # A damaged file only costs the local view: the dispatcher sends the complete set again.
            log.warning("agent: ignoring unreadable %s: %s", path, e)
            return {}
        return data if isinstance(data, dict) else {}

    def save_tasks(self, records: dict[str, dict[str, Any]]) -> None:
        self.save_tasks_encoded(json.dumps(records, separators=(",", ":")).encode())

    def save_tasks_encoded(self, data: bytes) -> None:
        """`save_tasks` of records already encoded as JSON (the worker encodes on its loop, writes in a thread)."""
        self._write(self.dir / "tasks.json", data)

    def _write(self, path: Path, text: str | bytes) -> None:
        write_atomic(path, text)
