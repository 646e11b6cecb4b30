"""The supervisor as a daemon (`python -m shoal.daemon`), started by `shoal up --detach` and, with `--node`, by
`shoal swarm init/join` for a swarm node's roles. Apart from shoal/supervisor.py, which shoal/node.py builds on,
so the two import each other in neither direction."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from shoal.runner import private_opener
from shoal.supervisor import Layout, Supervisor, read_state

log = logging.getLogger("shoal.supervisor")


def start(args: Sequence[str], data_dir: Path, deadline: float) -> int | None:
    """Start `python -m shoal.daemon ARGS` in its own session (output appended to DATA_DIR/logs/supervisor.log)
    and wait until it has written its state file, or `deadline` (monotonic) passed; its exit code if it exited
    before that, else None (`shoal up --detach`, `shoal swarm init/join`)."""
    log_dir = data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "supervisor.log", "ab", opener=private_opener) as logf:
        proc = subprocess.Popen([sys.executable, "-m", "shoal.daemon", *args], stdout=logf,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                cwd=Path(__file__).resolve().parents[1])
    while read_state(data_dir) is None:
        if proc.poll() is not None:
            return proc.returncode
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return None


def main(argv: list[str] | None = None) -> int:
    """Daemon entry point (`python -m shoal.daemon`), used by `shoal up --detach`."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m shoal.daemon")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--base-port", type=int, default=4300)
    p.add_argument("--gateway-port", type=int, default=4242)
    p.add_argument("--agents", type=int, default=2)
    p.add_argument("--heartbeat-period", type=float, default=5.0)
    p.add_argument("--hollow-nodes", type=int, default=0)
    p.add_argument("--node", action="store_true", help="run the roles of a swarm node (`shoal swarm init/join`)")
    a = p.parse_args(argv)
    from shoal.runner import private_files

    private_files()  # logs, state and data the supervised processes create: 0600 / 0700
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s supervisor: %(message)s")
    sup: Supervisor
    if a.node:
        from shoal.node import NodeLayout, NodeSupervisor

        sup = NodeSupervisor(NodeLayout.for_node(a.data_dir.resolve()))  # acts on promote/demote too
    else:
        sup = Supervisor(Layout(a.data_dir.resolve(), base_port=a.base_port, gateway_port=a.gateway_port,
                                agents=a.agents, heartbeat_period=a.heartbeat_period,
                                hollow_nodes=a.hollow_nodes))
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGUSR1, lambda *_: sup.rescale.set())  # `shoal scale` changed SCALE_FILE
    sup.start()
    done.wait()
    log.info("stopping every process")
    sup.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
