"""Who may call the gateway (docs/security.md): the public API (`/v1/*`, the OpenAPI pages) only for admins
(`swarm-admin` client bundles); the ops routes (/healthz, /readyz, /metrics) also for managers (the
supervisor's and other managers' probes). Workers reach nothing here: their only door is their dispatcher.
A browser's dashboard session (services/gateway/ui/sessions.py, role `ui-session`) reads the dashboard — `GET`
`/` and `/ui/...` — and nothing else."""

from __future__ import annotations

from services.gateway.ui.sessions import UI_SESSION_ROLE
from shoal import pki
from shoal.pki import Identity
from shoal.transport import OPS_PATHS


def dashboard_path(path: str) -> bool:
    return path == "/" or path == "/ui" or path.startswith("/ui/")


def gateway_policy(ident: Identity, method: str, path: str) -> str | None:
    """`shoal.transport.Policy` of the gateway: None to allow, else the 403's reason."""
    if ident.role == pki.ADMIN:
        return None
    if path in OPS_PATHS and ident.role == pki.MANAGER:
        return None
    if ident.role == UI_SESSION_ROLE:
        if method in ("GET", "HEAD") and dashboard_path(path):
            return None
        return (f"gateway: a dashboard session may only read the dashboard (GET /ui/...), not {method} {path}; "
                "the API is for admin client bundles (see `shoal env`)")
    return (f"gateway: {ident.describe()} may not call {method} {path}: the API is for admin client bundles "
            "(see `shoal env`)")
