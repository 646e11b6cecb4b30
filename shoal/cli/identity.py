"""Who the CLI is: an admin client bundle (Docker's DOCKER_CERT_PATH layout, `ca.pem`, `cert.pem`, `key.pem`)
found in `SHOAL_CERT_PATH`, or else in `<SHOAL_DATA_DIR or ~/.shoal>/client` of the local cluster; and where the
local cluster's gateway is (its supervisor.json), for `shoal env`."""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from shoal import transport

STATE_FILE = "supervisor.json"  # shoal.supervisor's state file


class IdentityError(Exception):
    """No usable client bundle, or no local cluster; the message says how to get one."""


def data_dir(env: Mapping[str, str] | None = None) -> Path:
    e = os.environ if env is None else env
    return Path(e.get("SHOAL_DATA_DIR") or Path.home() / ".shoal")


def cert_path(env: Mapping[str, str] | None = None) -> Path:
    """Where the admin bundle is: SHOAL_CERT_PATH, else `<data dir>/client`."""
    e = os.environ if env is None else env
    given = e.get("SHOAL_CERT_PATH")
    return Path(given) if given else data_dir(e) / "client"


def load_bundle(path: Path) -> transport.Credentials:
    missing = [n for n in transport.BUNDLE_NAMES
               if not (path / n).is_file()]
    if missing:
        raise IdentityError(
            f"no admin client certificate in {path} (missing {', '.join(missing)}): the CLI speaks mutual TLS "
            "with an admin bundle. For the local cluster run `eval $(shoal env)` after `shoal up`; otherwise "
            "point SHOAL_CERT_PATH at a directory holding ca.pem, cert.pem and key.pem (copy one from a "
            "manager's <data-dir>/client)")
    try:
        return transport.Credentials.client_bundle(path)
    except transport.TransportError as e:
        raise IdentityError(str(e)) from None


def gateway_address(data: Path) -> tuple[str, int]:
    """(host, port) of the local cluster's gateway, from its supervisor.json."""
    state_file = data / STATE_FILE
    try:
        state = json.loads(state_file.read_text())
        parts = urlsplit(str(state["gateway_url"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise IdentityError(f"no running cluster in {data} ({state_file}: {type(e).__name__}); start one with "
                            f"`shoal up --data-dir {data}`") from None
    if not parts.hostname or not parts.port:
        raise IdentityError(f"{state_file}: gateway_url {state['gateway_url']!r} has no host:port")
    return parts.hostname, parts.port


def env_lines(data: Path) -> list[str]:
    """`shoal env`'s output: shell exports pointing the shoal CLI and Docker's client at the local cluster."""
    host, port = gateway_address(data)
    bundle = (data / "client").resolve()
    load_bundle(bundle)  # refuse to print exports that cannot work
    url = f"https://{host}:{port}"
    values = {"SHOAL_URL": url, "SHOAL_CERT_PATH": str(bundle), "DOCKER_HOST": f"tcp://{host}:{port}",
              "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(bundle)}
    lines = [f"export {k}={shlex.quote(v)}" for k, v in values.items()]
    lines.append("# Run this command to configure your shell:")
    lines.append(f"# eval $(shoal env --data-dir {shlex.quote(str(data))})")
    return lines
