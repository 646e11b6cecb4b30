"""The command tree of the `shoal` CLI: each resource module adds its own subcommands.

The modules, around one gateway client (`client`) and one output module (`output`):
`services` (+ `service_spec`: flags -> ServiceSpec; `progress` and `follow`: following a change), `nodes`,
`networks`, `cluster` (+ `members`), `payloads` (secrets, configs), `swarm` (+ `swarm_ca`, `swarm_node`),
`events`, `ui` (the dashboard's login link); flag parsing shared by several in `flags`.
Every command is `cmd_*(args) -> int`; errors are raised as `client.CliError` and printed by `shoal.cli.main`."""

from __future__ import annotations

from shoal.cli import cluster, events, networks, nodes, payloads, services, swarm, ui
from shoal.cli.flags import SubParsers, help_of, url_parent


def add_parsers(sub: SubParsers) -> None:
    """`service`, `node`, `network`, `cluster`, `swarm`, `secret`, `config`, `events` and `ui` under the
    top-level subcommands."""
    parent = url_parent()
    services.add_parsers(sub, parent)
    nodes.add_parsers(sub, parent)
    networks.add_parsers(sub, parent)
    cluster.add_parsers(sub, parent)
    swarm.add_parsers(sub, parent)
    payloads.add_parsers(sub, parent, help_of)
    events.add_parsers(sub, parent)
    ui.add_parsers(sub, parent)


__all__ = ["add_parsers"]
