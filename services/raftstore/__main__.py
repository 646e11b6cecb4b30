"""`python -m services.raftstore [--force-new-cluster]`: one raftstore member, configured from SHOAL_* (see
settings.py). `--force-new-cluster` (same as SHOAL_FORCE_NEW_CLUSTER=1) restarts this member as a cluster of
one with its data, when a majority of the members is lost for good."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sys
from pathlib import Path

from services.raftstore import access, atrest, locked
from services.raftstore.app import create_app
from services.raftstore.member import Member
from services.raftstore.settings import RaftstoreSettings
from services.raftstore.wal import WalCorrupt
from shoal import pki
from shoal.bus.nats import NatsBus
from shoal.cluster import removed_node_ids
from shoal.concurrency import task_scope
from shoal.errors import NotFound
from shoal.models.kinds import DEFAULT_CLUSTER_ID, Kind
from shoal.runner import freeze_heap, run, serve, setup_logging
from shoal.transport import Revocations, TransportError

log = logging.getLogger("services.raftstore")

EXIT_REFUSED = 2  # the member's data or keys cannot be trusted or opened: it refuses to start


async def main() -> None:
    settings = RaftstoreSettings()
    if "--force-new-cluster" in sys.argv[1:]:
        settings = settings.model_copy(update={"force_new_cluster": True})
    setup_logging(settings.log_level, f"raftstore-{settings.raft_id}")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per forwarded write is noise
    cert_dir = load_credentials_dir(settings.cert_dir)

    def open_member(unlock_key: bytes | None = None) -> Member:
        # the data keys first: with autolock they, and the TLS key, open only with the unlock key
        keys = atrest.DataKeys.load(settings.data_dir, cert_dir, unlock_key)
        creds = keys.open_credentials(cert_dir)
        return Member(settings, creds, rng=random.Random(os.urandom(16)), keys=keys)

    try:
        try:
            member = open_member()
        except atrest.Locked:
            log.warning("raftstore %d: autolock is on and this member is locked: no TLS (its key is encrypted "
                        "under the unlock key); serving only health and POST /v1/unlock on %s until "
                        "`shoal swarm unlock`", settings.raft_id, locked.socket_path(cert_dir))
            member = await locked.wait_for_unlock(cert_dir, open_member, settings.raft_id)
    except (WalCorrupt, atrest.KeysUnusable) as e:
        # Damaged or tampered data, or keys that do not open: one clear line naming the file (and the offset),
        # no traceback, and an exit status a supervisor or an operator can tell from a crash.
        log.critical("raftstore %d: %s", settings.raft_id, e)
        sys.exit(EXIT_REFUSED)
    creds = member.creds
    freeze_heap()  # the replayed store is long-lived: keep it out of every later collection

    def crashed(err: BaseException) -> None:
        # A broken Raft invariant: stop at once rather than serve from a state we can no longer trust.
        logging.shutdown()
        os._exit(70)

    member.on_crash = crashed
    bus = NatsBus(settings.nats_url, settings.instance_name("raftstore"), creds) if settings.nats_url else None
    app = create_app(settings, member, bus, creds=creds)
    log.info("raftstore %d (node %s): API on %s:%d, raft peers on %s, data in %s (mutual TLS)", member.me.id,
             member.me.node_id, settings.host, settings.api_port(), member.me.peer_addr, settings.data_dir)
    revoked = Revocations()
    async with task_scope() as tg:  # Guard's list stays current while the API serves, or the member stops
        follow = tg.create_task(follow_revocations(member, revoked), name="raftstore.revocations")
        await serve(app, settings.host, settings.api_port(), creds, access.policy, revoked=revoked,
                    renew_with=settings.ca_urls)
        follow.cancel()


def load_credentials_dir(cert_dir: str | Path | None) -> Path:
    """SHOAL_CERT_DIR, which must hold an identity (its key may be encrypted: atrest opens it)."""
    if not cert_dir:
        raise TransportError("transport: SHOAL_CERT_DIR is not set: shoal processes only speak mutual TLS. "
                             "Start the cluster with `shoal up` or `shoal swarm init`/`join`")
    for name in (pki.CERT_FILE, pki.KEY_FILE, pki.ROOT_FILE):
        if not (Path(cert_dir) / name).is_file():
            raise TransportError(f"transport: {Path(cert_dir) / name} is missing: this process has no identity")
    return Path(cert_dir)


async def follow_revocations(member: Member, revoked: Revocations, interval: float = 1.0) -> None:
    """Keep Guard's list of removed nodes current from this member's own applied state (the cluster object's
    `removed_nodes`): a removed node's certificates are refused by the store too, manager components included."""
    while True:
        try:
            cluster = member.driver.fsm.mem.get(Kind.CLUSTER, DEFAULT_CLUSTER_ID)
        except NotFound:
            cluster = None
        revoked.update(removed_node_ids(cluster))
        await asyncio.sleep(interval)


if __name__ == "__main__":
    run(main)
