"""`POST /v1/txn`, served by RaftstoreApp's fast path (services/raftstore/app.py): the leader stamps the
transaction's `time`, validates it, proposes it and answers once it is applied; a follower forwards it to the
leader. The leader refuses a transaction writing an object the consumers of its kind could not read
(shoal/models/stored.py: the gateway's spec models). Either way the caller's component must be allowed every
kind the transaction touches (kind `ca`: the CA only) — checked here because the Guard in front sees only the
method and path."""

from __future__ import annotations

from services.raftstore.access import caller_actor, caller_component, check_txn
from services.raftstore.fsm import encode_txn
from services.raftstore.routes.context import Context
from shoal import wire
from shoal.errors import InvalidArgument
from shoal.models.stored import check_txn_objects
from shoal.pki import Identity
from shoal.store.memory import validate_txn


async def write(ctx: Context, raw: bytes, ident: Identity | None, forwarded_by: str | None,
                on_behalf_of: str | None, on_behalf_node: str | None = None) -> tuple[int, bytes]:
    """Answer status and JSON body of one transaction from `ident` (on behalf of a forwarding member's caller).
    The leader records who wrote it (`actor`, services/raftstore/access.py `caller_actor`) in the entry."""
    try:
        body, exact = wire.loads_read(raw)
    except ValueError as e:
        raise InvalidArgument(f"store: the transaction is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise InvalidArgument("store: the transaction must be a JSON object with an 'ops' list")
    component = caller_component(ident, on_behalf_of)
    check_txn(component, body)
    ctx.check_member()
    driver = ctx.driver
    if not driver.is_leader:
        validate_txn(body, encoded_size=len(raw))
        actor = caller_actor(ident, on_behalf_of, on_behalf_node)
        resp = await ctx.forward("POST", "/v1/txn", raw, forwarded_by, component,
                                 node=None if actor is None else actor.partition("@")[2])
        return resp.status_code, bytes(resp.body)
    # The leader picks the timestamp once, so every replica applies identical bytes.
    stamped: dict[str, object] = {"ops": body.get("ops"), "time": ctx.clock.now()}
    if (actor := caller_actor(ident, on_behalf_of, on_behalf_node)) is not None:
        stamped["actor"] = actor
    # orjson encodes the entry only when it read the body itself: a body with a NaN literal (read by json,
    # shoal.wire.loads_read) would be written with null, which followers would apply instead of the leader's NaN.
    data = encode_txn(stamped, exact=exact)
    validate_txn(stamped, encoded_size=len(data))
    # the store refuses what the API would refuse: no path stores an object its consumers cannot read
    reason = check_txn_objects(body["ops"])  # a list: validate_txn checked it
    if reason is not None:
        ctx.member.metrics.inc("raftstore_txn_refused_objects_total",
                               help="transactions refused because an object they write is invalid")
        raise InvalidArgument(f"store: {reason}")
    result = await driver.propose(data, parsed=stamped)
    # `"shared": true` (StoreClient sends it; not part of the entry): the answer in the watch's compact form
    return 200, wire.dumps(result.to_json(shared=body.get("shared") is True))
