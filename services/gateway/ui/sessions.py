"""How a browser gets into the dashboard (docs/security.md "The dashboard's login"): pure, no I/O; the clock and
the random source are injected.

An admin (a client bundle, through mutual TLS) asks `POST /v1/ui/login` for a login link: a token of 32 random
bytes, valid `token_ttl` seconds (60) and once. The browser opens `/ui/login?token=...` — the one path a TLS
client without a certificate may call — and gets a session cookie in exchange: another 32 random bytes, valid
`session_ttl` seconds (8 h), sent back only over TLS, never to scripts, never on cross-site requests
(`HttpOnly; Secure; SameSite=Strict`). The transport's Guard asks `authenticate(scope)` for every request that
came without a certificate: a live session cookie stands for the admin who asked for the link, with the role
`ui-session`, which the gateway's policy lets read the dashboard (`GET /` and `/ui/...`) and nothing else.

Only digests of tokens and sessions are kept (a memory dump does not hand out live credentials), both tables
are bounded (the oldest entries go first), and a token is gone from the table the moment it is redeemed or
found expired. Sessions live in the gateway process that issued them: a restart logs every browser out, and
behind a balancer spreading connections over several gateways the link and the session must reach the same
one (docs/operations.md)."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shoal.pki import Identity

#: the role of an identity proven by a dashboard session cookie (never a certificate's role)
UI_SESSION_ROLE = "ui-session"
COOKIE_NAME = "shoal_session"
LOGIN_PATH = "/ui/login"
TOKEN_BYTES = 32
DEFAULT_TOKEN_TTL = 60.0
DEFAULT_SESSION_TTL = 8 * 3600.0
MAX_TOKENS = 256
MAX_SESSIONS = 256


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Grant:
    """Who a token or session stands for, and until when."""

    node_id: str
    expires_at: float


@dataclass(frozen=True)
class Login:
    """A redeemed token: the session cookie's value and its lifetime."""

    session: str
    max_age: int
    node_id: str


class UiSessions:
    """Login tokens and sessions of one gateway process (module doc)."""

    def __init__(self, cluster_id: str, *, clock: Callable[[], float] = time.time,
                 random_token: Callable[[int], str] = secrets.token_urlsafe, token_ttl: float = DEFAULT_TOKEN_TTL,
                 session_ttl: float = DEFAULT_SESSION_TTL, max_tokens: int = MAX_TOKENS,
                 max_sessions: int = MAX_SESSIONS) -> None:
        self.cluster_id = cluster_id
        self.clock = clock
        self.random_token = random_token
        self.token_ttl = token_ttl
        self.session_ttl = session_ttl
        self.max_tokens = max_tokens
        self.max_sessions = max_sessions
        self._tokens: OrderedDict[str, Grant] = OrderedDict()
        self._sessions: OrderedDict[str, Grant] = OrderedDict()
        self.refused = 0

    # ---- tokens ------------------------------------------------------------------------------------------------
    def issue_token(self, who: Identity) -> tuple[str, float]:
        """A fresh login token for the admin `who` and when it expires. Only admins may ask (the policy)."""
        now = self.clock()
        self._prune(self._tokens, now)
        while len(self._tokens) >= self.max_tokens:
            self._tokens.popitem(last=False)
        token = self.random_token(TOKEN_BYTES)
        grant = Grant(who.node_id, now + self.token_ttl)
        self._tokens[_digest(token)] = grant
        return token, grant.expires_at

    def redeem(self, token: str) -> Login | None:
        """Exchange a token for a new session (once: the token is gone after this call); None when the token
        is unknown, already used or expired."""
        now = self.clock()
        grant = self._tokens.pop(_digest(token), None) if token else None
        if grant is None or grant.expires_at <= now:
            self.refused += 1
            return None
        self._prune(self._sessions, now)
        while len(self._sessions) >= self.max_sessions:
            self._sessions.popitem(last=False)
        session = self.random_token(TOKEN_BYTES)
        self._sessions[_digest(session)] = Grant(grant.node_id, now + self.session_ttl)
        return Login(session, int(self.session_ttl), grant.node_id)

    # ---- sessions ----------------------------------------------------------------------------------------------
    def identity(self, session: str) -> Identity | None:
        """The identity a live session cookie stands for, else None (an expired session is forgotten)."""
        if not session:
            return None
        key = _digest(session)
        grant = self._sessions.get(key)
        if grant is None:
            return None
        if grant.expires_at <= self.clock():
            del self._sessions[key]
            return None
        return Identity(node_id=grant.node_id, role=UI_SESSION_ROLE, cluster_id=self.cluster_id,
                        component="dashboard", not_before=0.0, not_after=grant.expires_at, serial=0)

    def logout(self, session: str) -> bool:
        return self._sessions.pop(_digest(session), None) is not None if session else False

    def authenticate(self, scope: Mapping[str, Any]) -> Identity | None:
        """`shoal.transport.Authenticator`: the session named by the request's cookie, if live."""
        value = cookie_value(scope, COOKIE_NAME)
        return self.identity(value) if value else None

    @property
    def counts(self) -> tuple[int, int]:
        return len(self._tokens), len(self._sessions)

    @staticmethod
    def _prune(table: OrderedDict[str, Grant], now: float) -> None:
        for key in [k for k, g in table.items() if g.expires_at <= now]:
            del table[key]


def cookie_value(scope: Mapping[str, Any], name: str) -> str:
    """The value of cookie `name` in an ASGI scope's headers ('' when absent)."""
    for k, v in scope.get("headers") or []:
        if k != b"cookie":
            continue
        for part in v.decode("latin-1").split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return value.strip()
    return ""


def set_cookie_header(login: Login) -> str:
    """The Set-Cookie header of a new session: TLS only, invisible to scripts, never sent cross-site."""
    return (f"{COOKIE_NAME}={login.session}; Path=/; Max-Age={login.max_age}; HttpOnly; Secure; "
            "SameSite=Strict")


def clear_cookie_header() -> str:
    return f"{COOKIE_NAME}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict"
