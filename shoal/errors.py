"""One error root for shoal, families named by condition. One handler (shoal.http) maps them to HTTP codes.

    ShoalError
    ├── InvalidArgument       400  bad input; nothing changed
    │   └── TxnTooLarge       413  transaction over the byte/op bounds
    ├── Unauthenticated       401  no identity: no certificate, no valid join token
    ├── PermissionDenied      403  the caller's certificate does not allow this
    │   └── NodeRemoved           the certificate's node was removed from the cluster (revoked)
    ├── NotFound              404
    ├── Conflict              409
    │   ├── AlreadyExists         id or name taken
    │   ├── VersionConflict       stale meta.version precondition
    │   └── PreconditionFailed    a `check` op (e.g. lease fencing) failed
    ├── Compacted             410  watch revision older than retained history: re-list
    ├── Unavailable           503  no raft leader / store unreachable
    │   └── NotLeader             carries the leader hint
    └── OutcomeUnknown        504  a write timed out: it may or may not have committed
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol


class ShoalError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_json(self) -> dict[str, Any]:
        return {"message": self.message, "code": self.code, **self.details}


class InvalidArgument(ShoalError):
    status = 400
    code = "invalid_argument"


class TxnTooLarge(InvalidArgument):
    status = 413
    code = "txn_too_large"


class Unauthenticated(ShoalError):
    """401: no identity (no certificate, or no valid join token)."""

    status = 401
    code = "unauthenticated"


class PermissionDenied(ShoalError):
    status = 403
    code = "permission_denied"


class NodeRemoved(PermissionDenied):
    """403 from the transport Guard: the caller's node was removed (`shoal node rm`), its certificate revoked."""

    code = "node_removed"


class NotFound(ShoalError):
    status = 404
    code = "not_found"


class Conflict(ShoalError):
    status = 409
    code = "conflict"


class AlreadyExists(Conflict):
    code = "already_exists"


class VersionConflict(Conflict):
    code = "version_conflict"


class PreconditionFailed(Conflict):
    code = "precondition_failed"


class Compacted(ShoalError):
    status = 410
    code = "compacted"


class Unavailable(ShoalError):
    status = 503
    code = "unavailable"


class NotLeader(Unavailable):
    code = "not_leader"


class RateLimited(Unavailable):
    """Too many of one request from one caller (a node registering over and over): retry after a pause. An
    HTTP 429, not a 5xx: the server is well, the caller is the one to slow down."""

    status = 429
    code = "rate_limited"


class OutcomeUnknown(ShoalError):
    status = 504
    code = "outcome_unknown"


_BY_CODE: dict[str, type[ShoalError]] = {
    c.code: c
    for c in (
        InvalidArgument, TxnTooLarge, Unauthenticated, PermissionDenied, NodeRemoved, NotFound, Conflict,
        AlreadyExists,
        VersionConflict, PreconditionFailed, Compacted, Unavailable, NotLeader, RateLimited, OutcomeUnknown,
    )
}


def error_from_json(status: int, body: Any) -> ShoalError:
    """Rebuild the typed error a peer service sent (`{"message", "code", ...}`)."""
    if isinstance(body, dict):
        cls = _BY_CODE.get(str(body.get("code")), None)
        message = str(body.get("message", f"HTTP {status}"))
        details = {k: v for k, v in body.items() if k not in ("message", "code")}
        if cls is not None:
            return cls(message, **details)
    else:
        message = f"HTTP {status}: {body!r}"[:500]
        details = {}
    for c in (PermissionDenied, NotFound, Conflict, Compacted, Unavailable, InvalidArgument):
        if c.status == status:
            return c(message, **details)
    return ShoalError(message, **details)


class Response(Protocol):
    """What `error_from_response` reads of an HTTP answer (an httpx.Response; kept abstract so this module
    stays free of the HTTP client)."""

    @property
    def status_code(self) -> int: ...

    @property
    def text(self) -> str: ...

    def json(self) -> Any: ...


def error_from_response(resp: Response) -> ShoalError:
    """The typed error of a peer's answer of 400 or more: its `{"message", "code", ...}` body rebuilt by
    `error_from_json`; a body that is not JSON is quoted in the message. The one decoder of error answers
    (store client, agent session, gateway relays)."""
    try:
        body = resp.json()
    except ValueError:
        body = resp.text
    return error_from_json(resp.status_code, body)
