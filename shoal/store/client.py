"""StoreClient: the Store protocol over HTTP to any raftstore member.

Members forward writes to the Raft leader themselves, so the client only fails over between members: a refused
connection or a 503 is retried on the next member until `retry_for` runs out (nothing was applied), while a
request that was sent and then timed out raises OutcomeUnknown (it may still commit; re-read to find out).

Every request goes over mutual TLS (`creds`: this process's certificate, through shoal.transport.http_client);
what the store lets the caller do follows from that certificate's component (docs/security.md).

HTTP API of a raftstore member (docs/api.md has the full contract):
    POST /v1/txn                         {"ops": [...], "shared": true} -> {"revision", "changes": [...]}
    GET  /v1/objects/{kind}?f=v&stale=1  -> {"revision", "items", "continue"}
         (&limit=N&continue=TOKEN&name=NAME&id_prefix=P: a page, see Store.page)
    GET  /v1/counts/{kind}?f=v           -> {"revision", "groups": [{"values", "count"}]}
    GET  /v1/objects/{kind}/{id}         -> object
    GET  /v1/watch?after=N&wait=S&shared=true -> {"revision", "events": [{"revision", "changes": [...]}]}
         (shared: the compact form, each event's repeated specs once: shoal.store.txn.factor_shared)
    GET  /v1/status                      -> raft status of that member
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Sequence
from typing import Any

import httpx

from shoal.errors import OutcomeUnknown, ShoalError, Unavailable, error_from_response
from shoal.models.stored import Readable
from shoal.store import wire
from shoal.store.txn import Obj, Op, Page, TxnResult, WatchBatch
from shoal.transport import Credentials, http_client

#: What a call to a Store may raise when the store cannot answer: the typed errors, plus the transport errors
#: StoreClient does not turn into them (a request that failed outside the cases it classifies). The loops that
#: retry a store call catch exactly this.
STORE_FAILURES: tuple[type[Exception], ...] = (ShoalError, httpx.HTTPError, OSError)


JSON_HEADERS = {"content-type": "application/json"}


class StoreClient:
    def __init__(
        self,
        members: Sequence[str],
        *,
        creds: Credentials | None = None,
        timeout: float = 10.0,
        retry_for: float = 10.0,
        stale_reads: bool = False,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if not members:
            raise ValueError("StoreClient needs at least one raftstore member URL")
        self.members = [m.rstrip("/") for m in members]
        self._current = 0
        self._timeout = timeout
        self._retry_for = retry_for
        self._stale = stale_reads
        self.readable = Readable()
        # `creds=None` with no `client` is a plain client: only in-process test transports answer it (every
        # raftstore port requires a certificate).
        self._http = client or http_client(creds, timeout=timeout)

    async def _request(self, method: str, path: str, *, write: bool = False, stream: bool = False,
                       **kwargs: Any) -> Any:
        """The decoded answer, or with `stream` the open httpx.Response (status < 400; the caller closes it)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._retry_for
        last: Exception | None = None
        delay = 0.05
        while True:
            base = self.members[self._current]
            try:
                if stream:
                    resp = await self._http.send(self._http.build_request(method, base + path, **kwargs),
                                                 stream=True)
                else:
                    resp = await self._http.request(method, base + path, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                last = e  # never reached the member: safe to try the next one, even for a write
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as e:
                # The connection broke after the request may have been sent (the member died mid-request):
                # a read is retried elsewhere; a write may already be in the log, so its outcome is unknown.
                if write:
                    raise OutcomeUnknown(f"store: connection to {base} dropped during a write ({e!r}); "
                                         "it may still commit: re-read to find out") from e
                last = e
            except httpx.TimeoutException as e:
                if write:
                    raise OutcomeUnknown(
                        f"store: write to {base} timed out after {self._timeout}s; it may still commit"
                    ) from e
                last = e
            else:
                if resp.status_code < 400:
                    if stream:
                        return resp
                    # httpx's answer is a reference cycle holding its body: dropped before the decode, a follower
                    # that freezes after decoding collects it first instead of freezing it (shoal.heap)
                    content = resp.content
                    del resp
                    return wire.loads(content)
                if stream:
                    await resp.aread()
                    await resp.aclose()
                err = error_from_response(resp)
                if not isinstance(err, Unavailable):
                    raise err
                last = err
            self._current = (self._current + 1) % len(self.members)
            if loop.time() >= deadline:
                if isinstance(last, ShoalError):
                    raise last
                raise Unavailable(f"store: no raftstore member reachable ({self.members}): {last}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def txn(self, ops: list[Op]) -> TxnResult:
        # "shared": the answer in the compact form (each shared task spec once: shoal.store.txn.factor_shared)
        d = await self._request("POST", "/v1/txn", write=True, content=wire.dumps({"ops": ops, "shared": True}),
                                headers=JSON_HEADERS)
        return TxnResult.from_json(d)

    async def get(self, kind: str, obj_id: str) -> Obj:
        params = {"stale": "true"} if self._stale else {}
        result: Obj = await self._request("GET", f"/v1/objects/{kind}/{obj_id}", params=params)
        return result

    async def list(self, kind: str, **filters: Any) -> tuple[int, list[Obj]]:
        params = {k: str(v) for k, v in filters.items() if v is not None}
        if self._stale:
            params["stale"] = "true"
        d = await self._request("GET", f"/v1/objects/{kind}", params=params)
        # objects stored before the store validated writes may be unreadable: skipped (logged, counted)
        return int(d["revision"]), self.readable.filter(kind, d["items"])

    async def page(self, kind: str, *, limit: int | None = None, cont: str | None = None, name: str | None = None,
                   id_prefix: str | None = None, **filters: Any) -> Page:
        params = {k: str(v) for k, v in filters.items() if v is not None}
        for k, v in (("limit", limit), ("continue", cont), ("name", name), ("id_prefix", id_prefix)):
            if v is not None:
                params[k] = str(v)
        if self._stale:
            params["stale"] = "true"
        d = await self._request("GET", f"/v1/objects/{kind}", params=params)
        return Page(int(d["revision"]), self.readable.filter(kind, d["items"]), d.get("continue"))

    async def page_stream(self, kind: str, *, limit: int | None = None, cont: str | None = None,
                          fields: tuple[str, ...] | None = None, **filters: Any) -> wire.StreamedPage:
        """`page` as the member's NDJSON bytes, passed on undecoded (the gateway's task list). Fails over like
        any read until the member has answered with its headers; a connection that breaks later raises from
        the chunk iterator (httpx.HTTPError), since part of the page was handed on already."""
        params = {k: str(v) for k, v in filters.items() if v is not None}
        for k, v in (("limit", limit), ("continue", cont)):
            if v is not None:
                params[k] = str(v)
        if fields is not None:
            params["fields"] = ",".join(fields)
        if self._stale:
            params["stale"] = "true"
        resp = await self._request("GET", f"/v1/objects/{kind}", stream=True, params=params,
                                   headers={"accept": wire.NDJSON})
        try:
            revision = int(resp.headers[wire.REVISION_HEADER])
        except (KeyError, ValueError) as e:
            await resp.aclose()
            raise Unavailable(f"store: a streamed {kind} page came without a valid {wire.REVISION_HEADER} "
                              "header") from e
        return wire.StreamedPage(revision, resp.headers.get(wire.CONTINUE_HEADER), resp.aiter_bytes(), resp.aclose)

    async def counts(self, kind: str, **filters: Any) -> tuple[int, builtins.list[dict[str, Any]]]:
        params = {k: str(v) for k, v in filters.items() if v is not None}
        if self._stale:
            params["stale"] = "true"
        d = await self._request("GET", f"/v1/counts/{kind}", params=params)
        return int(d["revision"]), list(d["groups"])

    async def watch(self, after: int, wait: float = 0.0, upto: int = 0) -> WatchBatch:
        params: dict[str, int | float | str] = {"after": after, "wait": wait, "shared": "true"}
        if upto:
            params["upto"] = upto
        d = await self._request("GET", "/v1/watch", params=params, timeout=self._timeout + wait)
        return WatchBatch.from_json(d)

    async def status(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("GET", "/v1/status")
        return result

    async def member_status(self, member: str) -> dict[str, Any]:
        """Status of one given member (no failover), for cluster views. An error answer is raised typed; a
        member that cannot be reached or answers garbage is `Unavailable` (never a raw httpx error)."""
        try:
            resp = await self._http.get(member.rstrip("/") + "/v1/status", timeout=2.0)
            if resp.status_code >= 400:
                raise error_from_response(resp)
            result = resp.json()
        except (httpx.HTTPError, OSError, ValueError) as e:
            raise Unavailable(f"store: member {member} did not answer its status: {type(e).__name__}: {e}") from e
        if not isinstance(result, dict):
            raise Unavailable(f"store: member {member} answered a status that is not a JSON object")
        return result

    async def close(self) -> None:
        await self._http.aclose()
