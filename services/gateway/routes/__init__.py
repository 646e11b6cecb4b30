"""The gateway's `/v1` routers, one module per resource."""

from __future__ import annotations

from fastapi import APIRouter

from services.gateway.routes import cluster, events, logs, members, networks, nodes, payloads, services, swarm, tasks

ROUTERS: list[APIRouter] = [events.router, logs.router, services.router, tasks.router, nodes.router, networks.router,
                             cluster.router, members.router, swarm.router, payloads.secrets_router,
                             payloads.configs_router]

__all__ = ["ROUTERS"]
