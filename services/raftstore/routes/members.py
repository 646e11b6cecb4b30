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
from services.raftstore.membership import member_context
from services.raftstore.raft import ConfChange, ConfChangeType, Role
from services.raftstore.raft.quorum import majority
from services.raftstore.routes.context import FORWARDED_HEADER, Context, json_response
from services.raftstore.settings import parse_peer
from shoal.errors import Conflict, InvalidArgument, NotFound, NotLeader, OutcomeUnknown, ShoalError, Unavailable

log = logging.getLogger(__name__)

PROMOTE_LAG = 64  # a learner this close to the leader's commit index is caught up and gets promoted
PROMOTE_WAIT = 30.0  # POST /v1/members waits this long for the new member to become a voter
HAND_OVER_TIMEOUT = 1.5  # a stopping leader waits at most this long for another member to take over
NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def members_view(ctx: Context) -> dict[str, Any]:
    driver = ctx.driver
    raft = driver.node.raft
    items = []
    for m in ctx.member.members:
        role = "voter" if m.id in raft.voters else "learner" if m.id in raft.learners else "unknown"
        item: dict[str, Any] = {**m.to_json(), "role": role, "leader": m.id == driver.leader_id}
        if driver.is_leader and m.id in raft.prs:
            item["match_index"] = raft.prs[m.id].match
            item["reachable"] = m.id == ctx.member.me.id or driver.heard_recently(m.id)
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


def router(ctx: Context) -> APIRouter:
    r = APIRouter()
    member = ctx.member

    @r.get("/v1/members")
    async def list_members(request: Request, stale: str | None = None) -> Response:
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

    @r.post("/v1/members")
    async def add_member(request: Request) -> Response:
        check_membership(scope_component(request.scope))
        raw = await request.body()
        ctx.check_member()
        body = member_body(raw)
        driver = ctx.driver
        if not driver.is_leader:
            return await ctx.forward_request(request, raw)
        ms = driver.membership
        new_id = int(body.get("id") or ms.next_id())
        if new_id in ms.removed:
            raise Conflict(f"store: member id {new_id} was removed and can never come back; add the member "
                           "under a new id (omit 'id' to get one)")
        if ms.get(new_id) is not None:
            raise Conflict(f"store: member id {new_id} is already in the cluster")
        for m in ms.all():
            if m.peer_addr == body["peer_addr"] or m.api_url == body["api_url"] or m.node_id == body["node_id"]:
                raise Conflict(f"store: member {m.id} already uses {m.api_url} / {m.peer_addr} / node "
                               f"{m.node_id}; remove it first to replace it")
        cc_ctx = member_context(body["api_url"], body["peer_addr"], body["node_id"])
        await driver.change_membership(ConfChange(ConfChangeType.ADD_LEARNER, new_id, cc_ctx))
        log.info("raftstore %d: member %d (node %s) added as a learner (%s, peers %s)", member.me.id, new_id,
                 body["node_id"], body["api_url"], body["peer_addr"])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(body.get("wait", PROMOTE_WAIT))
        while loop.time() < deadline and new_id not in driver.node.raft.voters and driver.is_leader:
            await asyncio.sleep(0.1)
        view = members_view(ctx)
        view["added"] = new_id
        promoted = new_id in driver.node.raft.voters
        if not promoted:
            view["message"] = (f"member {new_id} is a learner still catching up; it becomes a voter by itself "
                               "once it holds the log (start it with SHOAL_RAFT_JOIN=1)")
        return json_response(view, 201 if promoted else 202)

    @r.delete("/v1/members/{member_id}")
    async def remove_member(member_id: int, request: Request) -> Response:
        check_membership(scope_component(request.scope))
        ctx.check_member()
        driver = ctx.driver
        if not driver.is_leader:
            return await ctx.forward_request(request, b"")
        raft = driver.node.raft
        if member_id not in (*raft.voters, *raft.learners):
            if member_id in driver.membership.removed:
                raise NotFound(f"store: member {member_id} was already removed")
            raise NotFound(f"store: member {member_id} is not in the cluster; members are "
                           f"{[m.id for m in member.members]}")
        if member_id in raft.voters:
            remaining = [v for v in raft.voters if v != member_id]
            if not remaining:
                raise Conflict("store: cannot remove the last voter")
            up = [v for v in remaining if v == member.me.id or driver.heard_recently(v)]
            if len(up) < majority(len(remaining)):
                raise Conflict(
                    f"store: removing member {member_id} would leave {len(up)} reachable voter(s) of "
                    f"{len(remaining)} ({sorted(up)}), short of the quorum of {majority(len(remaining))}: the "
                    "cluster would stop. Bring the other members back first")
        if member_id == member.me.id:
            # The leader leaves: hand leadership over first, so the cluster does not wait an election timeout,
            # then let the new leader remove us.
            new_leader = await driver.transfer_leadership()
            log.info("raftstore %d: handed leadership to %d before leaving", member.me.id, new_leader)
            return await ctx.forward_request(request, b"")
        await driver.change_membership(ConfChange(ConfChangeType.REMOVE, member_id))
        log.info("raftstore %d: member %d removed", member.me.id, member_id)
        return json_response(members_view(ctx))

    @r.post("/v1/leader/transfer")
    async def transfer_leader(request: Request) -> Response:
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
        previous = member.me.id
        new_leader = await driver.transfer_leadership(to)
        return json_response({"previous_leader": previous, "leader": new_leader, "term": driver.term})

    return r


async def hand_over(ctx: Context) -> None:
    """A leader that is being stopped hands leadership over first, so the cluster does not wait an election
    timeout for a new one (bounded: a shutdown never hangs on it)."""
    driver, me = ctx.driver, ctx.member.me
    if not driver.is_leader or driver.removed or len(driver.node.raft.voters) < 2:
        return
    try:
        new_leader = await driver.transfer_leadership(timeout=HAND_OVER_TIMEOUT)
        log.info("raftstore %d: stopping; handed leadership to member %d", me.id, new_leader)
    except (ShoalError, TimeoutError) as e:
        log.info("raftstore %d: stopping without handing leadership over: %s", me.id, e)


async def promote_learners(ctx: Context) -> None:
    """Leader: a learner that holds (nearly) the whole log becomes a voter; one change at a time."""
    driver, me = ctx.driver, ctx.member.me
    while True:
        await asyncio.sleep(max(ctx.settings.raft_tick * 2, 0.1))
        if driver.role != Role.LEADER or driver.removed:
            continue
        raft = driver.node.raft
        for lid in raft.learners:
            pr = raft.prs.get(lid)
            if pr is not None and pr.match + PROMOTE_LAG >= driver.commit_index and pr.match > 0:
                try:
                    await driver.change_membership(ConfChange(ConfChangeType.PROMOTE, lid))
                    log.info("raftstore %d: learner %d caught up and is now a voter", me.id, lid)
                except (Conflict, NotLeader, OutcomeUnknown, Unavailable) as e:
                    log.info("raftstore %d: promoting learner %d: %s (will retry)", me.id, lid, e)
                break
