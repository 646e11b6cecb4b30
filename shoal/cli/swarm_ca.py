"""`shoal swarm ca [--rotate] [--detach]`: the cluster's root CA (Docker's `docker swarm ca`). Without flags it
prints the root certificate and, during a rotation, the certificates still on the old root. `--rotate` makes a
new root (docs/security.md, "Root rotation"), renews this CLI's admin bundle onto it and waits until every
node has renewed (`--detach`: return at once; the rotation goes on without the CLI)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import httpx

from shoal import pki, transport
from shoal.cli import identity
from shoal.cli.client import CliError, Gateway, gateway_of


def progress_text(status: dict[str, Any]) -> str:
    """One paragraph on a rotation's progress (pure, for tests)."""
    if not status.get("rotating"):
        return f"Root CA {str(status.get('root_digest', ''))[:16]}…: no rotation in progress."
    pending = status.get("pending") or []
    nodes = sorted({str(p.get("node_id", "")) for p in pending})
    lines = [f"Root rotation to {str(status.get('root_digest', ''))[:16]}… in progress: "
             f"{len(pending)} certificate(s) on {len(nodes)} node(s) still to renew."]
    for p in pending[:20]:
        lines.append(f"  {p.get('node_id')}  {p.get('component')}")
    if len(pending) > 20:
        lines.append(f"  … and {len(pending) - 20} more")
    if pending:
        lines.append("A node that is down holds the rotation until it comes back (or is removed: shoal node rm).")
    return "\n".join(lines)


def renew_bundle(bundle: Path, ca_url: str, timeout: float = 30.0) -> bool:
    """Renew the admin bundle in `bundle` (cert.pem, key.pem, ca.pem) through the CA at `ca_url` when the CA's
    current root did not issue it; True when it was renewed."""
    creds = identity.load_bundle(bundle)
    with transport.sync_http_client(creds, timeout=timeout) as http:
        roots = http.get(ca_url + "/v1/ca/roots")
        if roots.status_code != 200:
            raise CliError(f"the CA at {ca_url} did not give its roots: HTTP {roots.status_code}")
        current = pki.load_certs(roots.content)
        if current and pki.issued_by(pki.load_cert(creds.cert_file.read_bytes()), current[0]):
            if roots.content.strip() != creds.roots_pem.strip():
                pki.write_private(creds.root_file, roots.content)
            return False
        key = pki.new_key()
        resp = http.post(ca_url + "/v1/renew", json={"csr": pki.make_csr(key).decode()})
    if resp.status_code != 200:
        raise CliError(f"renewing the admin bundle in {bundle} failed: HTTP {resp.status_code} {resp.text[:200]}")
    reply = resp.json()
    pki.write_private(creds.key_file, pki.key_pem(key))
    pki.write_private(creds.cert_file, reply["certificate"].encode())
    pki.write_private(creds.root_file, reply["roots"].encode())
    return True


def _renew_own_bundle(status: dict[str, Any]) -> None:
    ca_url = status.get("ca_url")
    if not ca_url:
        return
    bundle = identity.cert_path()
    try:
        if renew_bundle(bundle, str(ca_url)):
            print(f"Admin bundle {bundle} renewed onto the new root.")
    except (identity.IdentityError, httpx.HTTPError, pki.PKIError, OSError) as e:
        print(f"warning: the admin bundle {bundle} was not renewed ({e}); renew it before the rotation ends")


def cmd_ca(a: argparse.Namespace) -> int:
    gw: Gateway = gateway_of(a)
    try:
        if a.rotate:
            status = gw.request("POST", "/v1/swarm/ca/rotate")
            print("Root rotation started: every node renews its certificates onto the new root; the join tokens "
                  "changed with it (shoal swarm join-token worker).")
            _renew_own_bundle(status)
            deadline = time.monotonic() + a.timeout
            while not a.detach and status.get("rotating") and time.monotonic() < deadline:
                time.sleep(1.0)
                status = gw.get("/v1/swarm/ca")
            if status.get("rotating") and not a.detach:
                print(progress_text(status))
                print(f"Still rotating after {a.timeout:.0f}s; `shoal swarm ca` shows the progress.")
                return 1
            if not status.get("rotating"):
                _renew_own_bundle(status)  # the old root is gone: the bundle trusts only the new one
        else:
            status = gw.get("/v1/swarm/ca")
            if not status.get("rotating"):
                _renew_own_bundle(status)  # a rotation that finished while this bundle was elsewhere
    finally:
        gw.close()
    if a.quiet:
        print(str(status.get("root_cert", "")).strip())
    else:
        print(progress_text(status))
    return 0


def add_parser(ssub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    ca = ssub.add_parser("ca", parents=[parent], help="show or rotate the cluster's root CA")
    ca.add_argument("--rotate", action="store_true", help="make a new root CA; every node renews onto it")
    ca.add_argument("-d", "--detach", action="store_true", help="with --rotate: do not wait for the nodes")
    ca.add_argument("--timeout", type=float, default=600.0, help="with --rotate: seconds to wait (default 600)")
    ca.add_argument("-q", "--quiet", action="store_true", help="print only the root certificate (PEM)")
    ca.set_defaults(func=cmd_ca)
