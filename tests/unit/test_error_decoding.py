"""One decoder for error answers (`shoal.errors.error_from_response`), used by the store client, the agent's
dispatcher session and the gateway's membership relay: each turns a peer's `{"message", "code", ...}` into the
same typed error, a body that is not JSON included; `StoreClient.member_status` never leaks a raw httpx error."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from agent.session import DispatcherClient, DispatcherUnavailable, NodeRemoved, SessionInvalid, StatusRejected
from services.gateway.routes.members import relay
from shoal import errors
from shoal.store.client import StoreClient


def answer(status: int, body: Any = None, text: str | None = None) -> httpx.Response:
    if text is not None:
        return httpx.Response(status, text=text)
    return httpx.Response(status, json=body)


def test_known_codes_come_back_as_their_class_with_details() -> None:
    err = errors.error_from_response(answer(409, {"message": "stale", "code": "version_conflict",
                                                  "current_version": 7}))
    assert type(err) is errors.VersionConflict and err.message == "stale" and err.details == {"current_version": 7}
    removed = errors.error_from_response(answer(403, {"message": "revoked", "code": "node_removed"}))
    assert type(removed) is errors.NodeRemoved and isinstance(removed, errors.PermissionDenied)
    assert removed.to_json() == {"message": "revoked", "code": "node_removed"}  # relayed as it came


def test_unknown_codes_fall_back_on_the_status_and_text_bodies_are_quoted() -> None:
    err = errors.error_from_response(answer(503, {"message": "later", "code": "overloaded"}))
    assert type(err) is errors.Unavailable and err.message == "later"
    text = errors.error_from_response(answer(502, text="<html>bad gateway</html>"))
    assert type(text) is errors.ShoalError and "bad gateway" in text.message and "502" in text.message
    assert type(errors.error_from_response(answer(404, text="nope"))) is errors.NotFound


def _dispatcher(resp: httpx.Response) -> DispatcherClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda _: resp))
    return DispatcherClient(http, "https://dispatcher:4242")


@pytest.mark.parametrize(("resp", "raised"), [
    (answer(404, {"message": "no session", "code": "not_found"}), SessionInvalid),
    (answer(403, {"message": "revoked", "code": "node_removed"}), NodeRemoved),
    (answer(503, {"message": "shutting down", "code": "unavailable"}), DispatcherUnavailable),
    (answer(500, text="boom"), DispatcherUnavailable),
    (answer(400, {"message": "bad", "code": "invalid_argument"}), ValueError),
])
def test_the_agent_session_maps_the_decoded_error(resp: httpx.Response, raised: type[Exception]) -> None:
    with pytest.raises(raised):
        asyncio.run(_dispatcher(resp).heartbeat("s1"))


def test_the_agent_session_keeps_the_rejected_task_ids() -> None:
    resp = answer(403, {"message": "not yours", "code": "permission_denied", "task_ids": ["t1", "t2"]})
    with pytest.raises(StatusRejected) as e:
        asyncio.run(_dispatcher(resp).heartbeat("s1"))
    assert e.value.task_ids == ["t1", "t2"] and str(e.value) == "not yours"


def _store(handler: Any) -> StoreClient:
    return StoreClient(["https://store-1:4301"], client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))


def test_member_status_raises_typed_errors_only() -> None:
    def refuse(_: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(errors.Unavailable, match="connection refused"):
        asyncio.run(_store(refuse).member_status("https://store-2:4301"))
    with pytest.raises(errors.Unavailable, match="not a JSON object"):
        asyncio.run(_store(lambda _: answer(200, [1, 2])).member_status("https://store-2:4301"))
    with pytest.raises(errors.Unavailable):
        asyncio.run(_store(lambda _: answer(200, text="not json")).member_status("https://store-2:4301"))
    with pytest.raises(errors.PermissionDenied):
        asyncio.run(_store(lambda _: answer(403, {"message": "no", "code": "permission_denied"}))
                    .member_status("https://store-2:4301"))
    ok = asyncio.run(_store(lambda _: answer(200, {"leader": 1})).member_status("https://store-2:4301"))
    assert ok == {"leader": 1}


def test_the_membership_relay_raises_the_stores_own_error() -> None:
    resp = answer(409, {"message": "removing it would lose quorum", "code": "conflict"})
    ctx: Any = SimpleNamespace(settings=SimpleNamespace(store_members=["https://store-1:4301"]),
                               http=httpx.AsyncClient(transport=httpx.MockTransport(lambda _: resp)))
    with pytest.raises(errors.Conflict, match="lose quorum"):
        asyncio.run(relay(ctx, "DELETE", "/v1/members/2"))


def test_a_dispatcher_without_the_session_poll_is_not_a_lost_session() -> None:
    """An older dispatcher answers `GET .../next` with the framework's 404 for a route it lacks: the agent moves
    on to another dispatcher (dispatchers are upgraded first) instead of registering again there in a loop; the
    dispatcher's own 404 for an unknown session still means "register again"."""
    missing = answer(404, {"message": "Not Found", "code": "not_found"})
    with pytest.raises(DispatcherUnavailable, match="upgrade the dispatchers first"):
        asyncio.run(_dispatcher(missing).poll("s1", 0, "", 1.0))
    lost = answer(404, {"message": "dispatcher: session 's1' is unknown here; register again", "code": "not_found"})
    with pytest.raises(SessionInvalid):
        asyncio.run(_dispatcher(lost).poll("s1", 0, "", 1.0))
