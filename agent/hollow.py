"""`python -m agent.hollow --nodes N`: N hollow nodes in one process (issue 13; Kubernetes' hollow nodes), so a
thousand nodes fit a small machine. Each is a whole agent — its own node identity (joined through a CA of
SHOAL_CA_URLS with SHOAL_JOIN_TOKEN, a real certificate in its own state directory), its own dispatcher session,
heartbeats, assignment stream, status reports and certificate renewal — and only the task runtime is simulated
(the `hollow` executor: tasks walk to RUNNING and stay there until shut down). What the nodes do not have: the
agent's own HTTPS port (`/v1/tasks`, `/metrics`, log streaming on request) — there is one process, not N.

Node i is `<prefix>-<i>` (hostname), its state under `<state root>/<prefix>-<i>`; started again over the same
root, each node keeps its identity. Joins run a few at a time (`--join-concurrency`). `--processes K` splits
the nodes over K processes (this one and K-1 children, `--first` telling each its slice): one Python process
serves a few hundred agents (≈ 2.5 ms of CPU per request: 1,000 nodes are ≈ 350 requests/s, a whole core), and
on a shared machine the scheduler gives each runnable process its share — one process hosting 1,000 agents gets
what one real agent would. The environment is the agent's (agent/settings.py): SHOAL_DISPATCHERS, SHOAL_CA_URLS,
SHOAL_JOIN_TOKEN, SHOAL_RPC_TIMEOUT, ... `shoal up --hollow-nodes N` runs this next to the cluster's
processes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import subprocess
import sys
from pathlib import Path

from agent.__main__ import ensure_identity
from agent.agent import Agent
from agent.settings import AgentSettings
from shoal.runner import run, setup_logging

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
                 join_concurrency: int = 32, first: int = 1) -> None:
        self.settings = [node_settings(base, root, prefix, i) for i in range(first, first + nodes)]
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
        if self._runs:  # all at once: one by one, a thousand nodes took minutes to stop
            await asyncio.wait(self._runs, timeout=10)
        await asyncio.gather(*(a.shutdown() for a in self.agents), return_exceptions=True)


def slices(nodes: int, processes: int) -> list[tuple[int, int]]:
    """(first index, count) of each process's nodes: `nodes` split as evenly as can be, indices from 1."""
    k = max(1, min(processes, nodes))
    out, first = [], 1
    for i in range(k):
        count = nodes // k + (1 if i < nodes % k else 0)
        out.append((first, count))
        first += count
    return out


def spawn(first: int, count: int, root: Path, prefix: str, join_concurrency: int) -> subprocess.Popen[bytes]:
    """A child process serving nodes first .. first+count-1 (same environment, same process group: the
    supervisor's stop reaches it)."""
    return subprocess.Popen([sys.executable, "-m", "agent.hollow", "--nodes", str(count), "--first", str(first),
                             "--state-root", str(root), "--prefix", prefix,
                             "--join-concurrency", str(join_concurrency)], stdin=subprocess.DEVNULL)


async def main(nodes: int, root: Path, prefix: str, join_concurrency: int, *, first: int = 1,
               processes: int = 1) -> None:
    base = AgentSettings()
    parts = slices(nodes, processes)
    per_process = max(1, join_concurrency // len(parts))
    children = [spawn(f, c, root, prefix, per_process) for f, c in parts[1:]]
    first, mine = (first, nodes) if len(parts) == 1 else parts[0]
    setup_logging(base.log_level, f"hollow-agents({first}-{first + mine - 1})")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    hollow = HollowNodes(base, mine, root, prefix=prefix, join_concurrency=per_process, first=first)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await hollow.start()
    log.info("hollow: %d nodes started under %s (%d more in %d other processes)", mine, root, nodes - mine,
             len(children))
    await stop.wait()
    for c in children:
        c.terminate()
    await hollow.stop()
    for c in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(c.wait, 15)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m agent.hollow", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, required=True, help="how many hollow nodes")
    p.add_argument("--state-root", type=Path, required=True, help="a directory per node is made under it")
    p.add_argument("--prefix", default="hollow", help="node hostnames are <prefix>-<i> (default hollow)")
    p.add_argument("--processes", type=int, default=1,
                   help="split the nodes over this many processes (default 1)")
    p.add_argument("--first", type=int, default=1, help=argparse.SUPPRESS)  # a child's first node index
    p.add_argument("--join-concurrency", type=int, default=32,
                   help="joins in flight at once (default 32; the CA signs 4 at a time and queues the rest)")
    a = p.parse_args(argv)
    if a.nodes < 1:
        p.error("--nodes must be at least 1")
    if a.processes < 1 or a.first < 1:
        p.error("--processes and --first must be at least 1")
    return a


if __name__ == "__main__":
    args = parse()
    run(lambda: main(args.nodes, args.state_root, args.prefix, args.join_concurrency, first=args.first,
                     processes=args.processes))
