"""A raftstore member whose keys are autolocked (atrest.Locked): it serves nothing of the store — not even TLS:
its own TLS key is encrypted under the unlock key (shoal.keyfile) — until an admin gives it the unlock key on its
machine. While locked its API and raft ports are closed (as a locked SwarmKit manager's are: to the others it is
unreachable, store clients move on to another member) and it serves shoal.lockbox's local socket
`<cert dir>/unlock.sock` (health, status, `POST /v1/unlock`). The right key opens the data keys and the TLS key,
the member is built from its data and the socket gives way to the normal TLS server. The unlock is per member:
each manager's keys are wrapped by the key that was current when it last ran, and the CLI (`shoal swarm
unlock`) sends it to the sockets of the local managers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from services.raftstore import atrest
from services.raftstore.member import Member
from services.raftstore.wal import WalCorrupt
from shoal import lockbox
from shoal.keyfile import WrongKEK

SOCKET_NAME = lockbox.SOCKET_NAME
UNLOCK_PATH = lockbox.UNLOCK_PATH
socket_path = lockbox.socket_path
bind_socket = lockbox.bind_socket
create_app = lockbox.create_app


def member_unlocker(open_member: Callable[[bytes], Member], member_id: int = 0) -> lockbox.Unlocker[Member]:
    """The member's unlocker: a wrong unlock key is one that opens neither its data keys nor its TLS key; a
    right one with damaged data or keys stops the member (exit status 2, as at any start)."""
    return lockbox.Unlocker(open_member, name="raftstore member", status_id=member_id,
                            wrong=(atrest.WrongKey, WrongKEK), fatal=(atrest.KeysUnusable, WalCorrupt))


async def wait_for_unlock(cert_dir: Path, open_member: Callable[[bytes], Member], member_id: int = 0) -> Member:
    """Serve the locked socket until an admin unlocks the member; returns the unlocked member."""
    try:
        return await lockbox.wait_for_unlock(cert_dir, member_unlocker(open_member, member_id))
    except lockbox.SocketUnusable as e:
        raise atrest.KeysUnusable(f"raftstore: {e}") from None
