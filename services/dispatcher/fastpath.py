"""`POST /v1/sessions/{sid}/heartbeat` answered straight from the ASGI call (issue 13, item 7): the one request
every node sends every period, so at 1,000 nodes 200 a second. The framework's layers (routing over every route,
request objects, dependency solving, the exception and body-limit middlewares) were about a quarter of an idle
dispatcher's busy time; the raftstore answers its `/v1/txn` the same way.

Installed as the outermost middleware of the dispatcher's app, so it runs behind the server's Guard (mutual TLS,
the caller's certificate checked against the policy, `services/dispatcher/core.policy`) exactly like the route:
the session must belong to the caller's node (403), an unknown session is 404, a request without an identity
is 401 — the same `{"message", "code"}` answers, counted in the same HTTP metrics under the route's template.
Everything else goes to the app unchanged."""

from __future__ import annotations

import time
from typing import Any

from shoal import wire
from shoal.errors import ShoalError, Unauthenticated
from shoal.http import HttpMetrics, observe_request, read_body, send_json
from shoal.transport import scope_identity

PREFIX = "/v1/sessions/"
SUFFIX = "/heartbeat"
ROUTE = "/v1/sessions/{session_id}/heartbeat"


class HeartbeatFastPath:
    def __init__(self, app: Any, dispatcher: Any) -> None:
        self.app = app
        self.dispatcher = dispatcher
        self.http_metrics = HttpMetrics(lambda *_: None, dispatcher.metrics)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if scope["type"] != "http" or scope["method"] != "POST" or not path.startswith(PREFIX) \
                or not path.endswith(SUFFIX):
            await self.app(scope, receive, send)
            return
        sid = path[len(PREFIX):-len(SUFFIX)]
        if not sid or "/" in sid:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        if await read_body(receive) is None:  # a heartbeat has no body; the server's Limits bound any
            return
        ident = scope_identity(scope)
        try:
            if ident is None:
                raise Unauthenticated("dispatcher: the agent protocol needs the node's certificate (mutual TLS)")
            status, body = 200, wire.dumps(await self.dispatcher.heartbeat(sid, ident.node_id))
        except ShoalError as e:
            status, body = e.status, wire.dumps(e.to_json())
        await send_json(send, status, body)
        observe_request(self.http_metrics, "POST", ROUTE, status, time.perf_counter() - start)
