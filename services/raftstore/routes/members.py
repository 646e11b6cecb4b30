"""Membership (dissertation §4: one change at a time, learners first) and leadership transfer, plus the two
leader chores that go with them: promoting caught-up learners and handing leadership over when stopping.
Changes are for the gateway and raftstore members only (services/raftstore/access.py); a new member names
its node id — the CN of its certificate — which is how its raft peers recognise it."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

from fastapi import APIRouter, Request, Response

from services.raftstore.access import check_membership, scope_component
from services.raftstore.membership import check_addable, check_removable, member_context, promotable
from services.raftstore.raft import ConfChange, ConfChangeType, Role
from services.raftstore.routes.context import FORWARDED_HEADER, Context, json_response
from services.raftstore.settings import parse_peer
from services.raftstore.status import raft_config
from shoal.errors import Conflict, InvalidArgument, NotLeader, OutcomeUnknown, ShoalError, Unavailable

log = logging.getLogger(__name__)

PROMOTE_LAG = 64  # a learner this close to the leader's commit index is caught up and gets promoted
PROMOTE_WAIT = 30.0  # POST /v1/members waits this long for the new member to become a voter
HAND_OVER_TIMEOUT = 1.5  # a stopping leader waits at most this long for another member to take over
NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def members_view(ctx: Context) -> dict[str, Any]:
    driver = ctx.driver
    conf = raft_config(driver)
    items = []
    for m in ctx.member.members:
        item: dict[str, Any] = {**m.to_json(), "role": conf.role_of(m.id), "leader": m.id == driver.leader_id}
        if m.id in conf.match:
            item["match_index"] = conf.match[m.id]
            item["reachable"] = _reachable(ctx, m.id)
        items.append(item)
    return {"leader": driver.leader_id, "term": driver.term, "commit_index": driver.commit_index,
            "members": items, "removed": sorted(driver.membership.removed)}


def member_body(raw: bytes) -> dict[str, Any]:
    """The checked body of POST /v1/members; InvalidArgument says what is wrong."""
    try:
        body = json.loads(raw or b"{}")
    except ValueError as e:
        raise InvalidArgument(f"store: the member is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise InvalidArgument("store: send a JSON object {\"api_url\": ..., \"peer_addr\": \"host:port\", "
                              "\"node_id\": ...}")
    api_url = body.get("api_url")
    if not isinstance(api_url, str) or not api_url.startswith("https://"):
        raise InvalidArgument("store: 'api_url' must be the new member's https API URL, e.g. https://10.0.0.4:4301")
    peer = body.get("peer_addr")
    try:
        if not isinstance(peer, str):
            raise ValueError(peer)
        parse_peer(peer)
    except ValueError:
        raise InvalidArgument("store: 'peer_addr' must be the new member's raft peer address host:port, e.g. "
                              "10.0.0.4:4311") from None
    node_id = body.get("node_id")
    if not isinstance(node_id, str) or not NODE_ID.fullmatch(node_id):
        raise InvalidArgument("store: 'node_id' must be the new member's node id (the CN of its certificate): "
                              "its raft peers accept only that certificate from it")
    ident = body.get("id")
    if ident is not None and (not isinstance(ident, int) or isinstance(ident, bool) or ident <= 0):
        raise InvalidArgument("store: 'id' must be a positive integer (or omitted to get a new one)")
    wait = body.get("wait", PROMOTE_WAIT)
    if not isinstance(wait, (int, float)) or isinstance(wait, bool) or not 0 <= wait <= 600:
        raise InvalidArgument("store: 'wait' must be a number of seconds between 0 and 600")
    return {**body, "api_url": api_url.rstrip("/")}


def _reachable(ctx: Context, member_id: int) -> bool:
    return member_id == ctx.member.me.id or ctx.driver.heard_recently(member_id)


async def list_members(ctx: Context, request: Request, stale: str | None) -> Response:
    driver = ctx.driver
    if stale is None and not driver.is_leader and driver.leader_id is not None \
            and not request.headers.get(FORWARDED_HEADER):
        # Only the leader knows each member's match index and reachability: ask it.
        try:
            return await ctx.forward_request(request, b"")
        except (NotLeader, OutcomeUnknown):
            pass  # no answer from the leader: this member's own view, without progress
    await ctx.barrier(stale)
    return json_response(members_view(ctx))


async def add_member(ctx: Context, request: Request) -> Response:
    check_membership(scope_component(request.scope))
    raw = await request.body()
    ctx.check_member()
    body = member_body(raw)
    driver, me = ctx.driver, ctx.member.me
    if not driver.is_leader:
        return await ctx.forward_request(request, raw)
    new_id = int(body.get("id") or driver.membership.next_id())
    check_addable(driver.membership, new_id, body["api_url"], body["peer_addr"], body["node_id"])
    cc_ctx = member_context(body["api_url"], body["peer_addr"], body["node_id"])
    await driver.change_membership(ConfChange(ConfChangeType.ADD_LEARNER, new_id, cc_ctx))
    log.info("raftstore %d: member %d (node %s) added as a learner (%s, peers %s)", me.id, new_id,
             body["node_id"], body["api_url"], body["peer_addr"])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + float(body.get("wait", PROMOTE_WAIT))
    while loop.time() < deadline and new_id not in raft_config(driver).voters and driver.is_leader:
        await asyncio.sleep(0.1)
    view = members_view(ctx)
    view["added"] = new_id
    promoted = new_id in raft_config(driver).voters
    if not promoted:
        view["message"] = (f"member {new_id} is a learner still catching up; it becomes a voter by itself "
                           "once it holds the log (start it with SHOAL_RAFT_JOIN=1)")
    return json_response(view, 201 if promoted else 202)


async def remove_member(ctx: Context, member_id: int, request: Request) -> Response:
    check_membership(scope_component(request.scope))
    ctx.check_member()
    driver, me = ctx.driver, ctx.member.me
    if not driver.is_leader:
        return await ctx.forward_request(request, b"")
    conf = raft_config(driver)
    check_removable(conf.voters, conf.learners, driver.membership, member_id, lambda v: _reachable(ctx, v))
    if member_id == me.id:
        # The leader leaves: hand leadership over first, so the cluster does not wait an election timeout,
        # then let the new leader remove us.
        new_leader = await driver.transfer_leadership()
        log.info("raftstore %d: handed leadership to %d before leaving", me.id, new_leader)
        return await ctx.forward_request(request, b"")
    await driver.change_membership(ConfChange(ConfChangeType.REMOVE, member_id))
    log.info("raftstore %d: member %d removed", me.id, member_id)
    return json_response(members_view(ctx))


async def transfer_leader(ctx: Context, request: Request) -> Response:
    check_membership(scope_component(request.scope))
    raw = await request.body()
    ctx.check_member()
    try:
        body = json.loads(raw or b"{}")
    except ValueError as e:
        raise InvalidArgument(f"store: the request is not valid JSON: {e}") from None
    to = body.get("to") if isinstance(body, dict) else None
    if to is not None and (not isinstance(to, int) or isinstance(to, bool)):
        raise InvalidArgument("store: 'to' must be a member id (or omitted for the most up-to-date voter)")
    driver = ctx.driver
    if not driver.is_leader:
        return await ctx.forward_request(request, raw)
    previous = ctx.member.me.id
    new_leader = await driver.transfer_leadership(to)
    return json_response({"previous_leader": previous, "leader": new_leader, "term": driver.term})


def router(ctx: Context) -> APIRouter:
    r = APIRouter()

    @r.get("/v1/members")
    async def _list(request: Request, stale: str | None = None) -> Response:
        return await list_members(ctx, request, stale)

    @r.post("/v1/members")
    async def _add(request: Request) -> Response:
        return await add_member(ctx, request)

    @r.delete("/v1/members/{member_id}")
    async def _remove(member_id: int, request: Request) -> Response:
        return await remove_member(ctx, member_id, request)

    @r.post("/v1/leader/transfer")
    async def _transfer(request: Request) -> Response:
        return await transfer_leader(ctx, request)

    return r


async def hand_over(ctx: Context) -> None:
    """A leader that is being stopped hands leadership over first, so the cluster does not wait an election
    timeout for a new one (bounded: a shutdown never hangs on it)."""
    driver, me = ctx.driver, ctx.member.me
    voters = raft_config(driver).voters
    if not driver.is_leader or driver.removed or len(voters) < 2:
        return

    def reachable() -> bool:  # a whole cluster stopping at once: nobody left to take over
        connected = ctx.member.transport.connected()
        return any(connected.get(v) for v in voters if v != me.id)

    if not reachable():
        log.info("raftstore %d: stopping; no other member is connected to hand leadership to", me.id)
        return
    transfer = asyncio.create_task(driver.transfer_leadership(timeout=HAND_OVER_TIMEOUT))
    while not transfer.done():
        await asyncio.wait({transfer}, timeout=max(ctx.settings.raft_tick, 0.02))
        if not transfer.done() and not reachable():
            transfer.cancel()
            log.info("raftstore %d: stopping; the other members went away during the hand-over", me.id)
            return
    try:
        log.info("raftstore %d: stopping; handed leadership to member %d", me.id, transfer.result())
    except (ShoalError, TimeoutError) as e:
        log.info("raftstore %d: stopping without handing leadership over: %s", me.id, e)


async def promote_learners(ctx: Context) -> None:
    """Leader: a learner that holds (nearly) the whole log becomes a voter; one change at a time."""
    driver, me = ctx.driver, ctx.member.me
    while True:
        await asyncio.sleep(max(ctx.settings.raft_tick * 2, 0.1))
        if driver.role != Role.LEADER or driver.removed:
            continue
        conf = raft_config(driver)
        lid = promotable(conf.learners, conf.match, driver.commit_index, PROMOTE_LAG)
        if lid is None:
            continue
        try:
            await driver.change_membership(ConfChange(ConfChangeType.PROMOTE, lid))
            log.info("raftstore %d: learner %d caught up and is now a voter", me.id, lid)
        except (Conflict, NotLeader, OutcomeUnknown, Unavailable) as e:
            log.info("raftstore %d: promoting learner %d: %s (will retry)", me.id, lid, e)
