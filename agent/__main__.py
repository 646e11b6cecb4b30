"""`python -m agent`: run a node's agent — register with a dispatcher of SHOAL_DISPATCHERS, run the tasks it
assigns with the executors of SHOAL_EXECUTORS, and serve /healthz, /metrics and /v1/tasks on
SHOAL_HOST:SHOAL_PORT (default 127.0.0.1:4331). Flags override the environment."""

from __future__ import annotations

import argparse
import logging

from agent.agent import Agent
from agent.app import create_app
from agent.settings import AgentSettings
from shoal.runner import run, serve, setup_logging


def parse_settings(argv: list[str] | None = None) -> AgentSettings:
    p = argparse.ArgumentParser(prog="python -m agent", description=__doc__)
    p.add_argument("--dispatchers", help="comma-separated dispatcher URLs (SHOAL_DISPATCHERS)")
    p.add_argument("--state-dir", help="state directory (SHOAL_STATE_DIR)")
    p.add_argument("--hostname", help="node hostname (SHOAL_HOSTNAME)")
    p.add_argument("--executors", help="comma-separated executors: process, hollow (SHOAL_EXECUTORS)")
    p.add_argument("--host", help="listen address (SHOAL_HOST)")
    p.add_argument("--port", type=int, help="listen port (SHOAL_PORT, default 4331)")
    a = p.parse_args(argv)
    overrides = {k: v for k, v in vars(a).items() if v is not None}
    return AgentSettings(**overrides)


async def main(settings: AgentSettings) -> None:
    setup_logging(settings.log_level, settings.instance_name())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    await serve(create_app(Agent(settings)), settings.host, settings.port)


if __name__ == "__main__":
    cfg = parse_settings()
    run(lambda: main(cfg))
