"""`python -m agent.hollow --nodes N`: N hollow nodes in one process (issue 13; Kubernetes' hollow nodes), so a
thousand nodes fit a small machine. Each is a whole agent — its own node identity (joined through a CA of
SHOAL_CA_URLS with SHOAL_JOIN_TOKEN, a real certificate in its own state directory), its own dispatcher session,
heartbeats, assignment stream, status reports and certificate renewal — and only the task runtime is simulated
(the `hollow` executor: tasks walk to RUNNING and stay there until shut down). What the nodes do not have: the
agent's own HTTPS port (`/v1/tasks`, `/metrics`, log streaming on request) — there is one process, not N.

Node i is `<prefix>-<i>` (hostname), its state under `<state root>/<prefix>-<i>`; started again over the same
root, each node keeps its identity. Joins run a few at a time (`--join-concurrency`). The environment is the
agent's (agent/settings.py): SHOAL_DISPATCHERS, SHOAL_CA_URLS, SHOAL_JOIN_TOKEN, SHOAL_RPC_TIMEOUT, ...
`shoal up --hollow-nodes N` runs this next to the cluster's processes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from agent.__main__ import ensure_identity
from agent.agent import Agent
from agent.settings import AgentSettings
from shoal.runner import setup_logging

log = logging.getLogger("agent.hollow")


def node_settings(base: AgentSettings, root: Path, prefix: str, i: int) -> AgentSettings:
    """Node `i`'s settings: `base` (the environment) with its own hostname, state and certificate directories,
    the hollow executor only, no cgroups, and its tasks stopped on exit."""
    name = f"{prefix}-{i:04d}"
    return base.model_copy(update={
        "hostname": name, "state_dir": root / name, "cert_dir": root / name / "certificates",
        "task_files_dir": root / name / "task-files", "executors": ["hollow"], "cgroup_root": "none",
        "stop_tasks_on_exit": True, "instance": f"hollow@{name}",
    })


class HollowNodes:
    """N agents in this event loop; `start` joins and starts them, `stop` ends their sessions and shuts them
    down."""

    def __init__(self, base: AgentSettings, nodes: int, root: Path, *, prefix: str = "hollow",
                 join_concurrency: int = 32) -> None:
        self.settings = [node_settings(base, root, prefix, i) for i in range(1, nodes + 1)]
        self.agents: list[Agent] = []
        self._runs: list[asyncio.Task[None]] = []
        self._joins = asyncio.Semaphore(join_concurrency)

    async def _start_one(self, settings: AgentSettings) -> None:
        async with self._joins:
            creds = await ensure_identity(settings)
        agent = Agent(settings, creds=creds)
        self.agents.append(agent)
        self._runs.append(asyncio.create_task(agent.run(), name=f"hollow.{settings.hostname}"))

    async def start(self) -> None:
        await asyncio.gather(*(self._start_one(s) for s in self.settings))

    def connected(self) -> int:
        return sum(1 for a in self.agents if a.ready())

    async def wait_connected(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.connected() < len(self.settings):
            if loop.time() > deadline:
                raise TimeoutError(f"{self.connected()}/{len(self.settings)} hollow nodes connected")
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        for a in self.agents:
            a.stop()
        for r in self._runs:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(r, 10)
        await asyncio.gather(*(a.shutdown() for a in self.agents), return_exceptions=True)


async def main(nodes: int, root: Path, prefix: str, join_concurrency: int) -> None:
    base = AgentSettings()
    setup_logging(base.log_level, f"hollow-agents({nodes})")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    hollow = HollowNodes(base, nodes, root, prefix=prefix, join_concurrency=join_concurrency)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await hollow.start()
    log.info("hollow: %d nodes started under %s", nodes, root)
    await stop.wait()
    await hollow.stop()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m agent.hollow", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, required=True, help="how many hollow nodes")
    p.add_argument("--state-root", type=Path, required=True, help="a directory per node is made under it")
    p.add_argument("--prefix", default="hollow", help="node hostnames are <prefix>-<i> (default hollow)")
    p.add_argument("--join-concurrency", type=int, default=32,
                   help="joins in flight at once (default 32; the CA signs 4 at a time and queues the rest)")
    a = p.parse_args(argv)
    if a.nodes < 1:
        p.error("--nodes must be at least 1")
    return a


if __name__ == "__main__":
    args = parse()
    asyncio.run(main(args.nodes, args.state_root, args.prefix, args.join_concurrency))
