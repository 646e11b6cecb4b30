"""StoreClient failover rules: what is safe to retry, and when a write's outcome is unknown."""

from __future__ import annotations

import httpx
import pytest

from shoal.errors import InvalidArgument, NotFound, OutcomeUnknown, Unavailable
from shoal.store import txn as t
from shoal.store.client import StoreClient


def client_with(handler: object, members: int = 2) -> StoreClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))  # type: ignore[arg-type]
    return StoreClient([f"http://m{i}" for i in range(members)], client=http, retry_for=1.0)


async def test_refused_connection_fails_over_even_for_writes() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.host == "m0":
            raise httpx.ConnectError("refused", request=req)
        return httpx.Response(200, json={"revision": 7, "changes": []})

    assert (await client_with(handler).txn([t.create("task", {"id": "a"})])).revision == 7


async def test_connection_dropped_mid_write_is_outcome_unknown() -> None:
    seen: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(str(req.url.host))
        raise httpx.ReadError("connection reset", request=req)

    with pytest.raises(OutcomeUnknown):
        await client_with(handler).txn([t.create("task", {"id": "a"})])
    assert seen == ["m0"], "a write that may have reached the log is never re-sent elsewhere"


async def test_connection_dropped_mid_read_is_retried_on_another_member() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.host == "m0":
            raise httpx.ReadError("connection reset", request=req)
        return httpx.Response(404, json={"message": "store: task 'x' not found", "code": "not_found"})

    with pytest.raises(NotFound):
        await client_with(handler).get("task", "x")


async def test_list_skips_objects_no_consumer_can_read() -> None:
    """Issue 16: a service stored before the store validated writes (no task, replicas from another world) is
    skipped, logged and counted — the list and every pass over it go on with the rest."""

    good = {"id": "a", "meta": {"version": 3}, "spec": {"name": "a", "task": {"process": {"command": ["x"]}}}}
    bad = [{"id": "b", "meta": {"version": 4}, "spec": {"name": "b"}},
           {"id": "c", "meta": {"version": 5},
            "spec": {"name": "c", "mode": {"replicated": {"replicas": 2**63 - 1}},
                     "task": {"process": {"command": ["x"]}}}},
           "not an object"]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"revision": 9, "items": [good, *bad]})

    client = StoreClient(["http://m1"], client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    for _ in range(2):  # the second list answers from the verdicts remembered per (kind, id, version)
        rev, items = await client.list("service")
        assert rev == 9 and items == [good]
    assert client.readable.skipped == 6
    _, tasks = await client.list("lease")  # kinds without a rule pass through
    assert len(tasks) == 4
    await client.close()


async def test_a_streamed_page_fails_over_until_headers_and_hands_the_bytes_on_undecoded() -> None:
    seen: list[tuple[str, str, str]] = []
    body = b'{"id":"a"}\n{"id":"b"}\n'

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append((str(req.url.host), req.headers["accept"], req.url.params.get("fields", "")))
        if req.url.host == "m0":
            raise httpx.ConnectError("refused", request=req)
        return httpx.Response(200, content=body, headers={"shoal-revision": "9", "shoal-continue": "tok",
                                                          "content-type": "application/x-ndjson"})

    page = await client_with(handler).page_stream("task", limit=2, fields=("id", "slot"), service_id="s")
    assert (page.revision, page.next) == (9, "tok")
    assert b"".join([c async for c in page.chunks]) == body
    await page.aclose()
    assert seen == [("m0", "application/x-ndjson", "id,slot"), ("m1", "application/x-ndjson", "id,slot")]


async def test_a_streamed_page_raises_the_store_error_and_refuses_an_answer_without_a_revision() -> None:
    def not_found(req: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"message": "store: limit must be ...", "code": "invalid_argument"})

    with pytest.raises(InvalidArgument):
        await client_with(not_found).page_stream("task", limit=0)

    def headless(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b'{"id":"a"}\n')

    with pytest.raises(Unavailable, match="shoal-revision"):
        await client_with(headless).page_stream("task")
