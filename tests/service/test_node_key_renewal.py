"""A TLS key encrypted under the autolock KEK (shoal/keyfile.py) through a real renewal by a CA over mutual TLS:
the renewed key is written under the same KEK, never in the clear, and the renewed identity works for TLS both
in the running process (reloaded in place) and in a new one that opens it with the KEK only."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shoal import enroll, keyfile, pki
from shoal.transport import Credentials, CredentialsLocked, TransportError, http_client
from tests.service.test_ca_service import CA, start_ca

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def ca(tmp_path: Path) -> AsyncIterator[CA]:
    c = await start_ca(tmp_path / "ca")
    yield c
    await c.server.stop()


async def test_a_renewal_keeps_an_encrypted_key_encrypted_and_usable(ca: CA) -> None:
    creds = ca.creds("m1", role=pki.MANAGER, component="raftstore")
    plain_before = creds.key_file.read_bytes()
    kek = os.urandom(32)
    assert creds.rekey(kek)
    old_cert = creds.cert_file.read_bytes()

    await enroll.renew(creds, [ca.url])

    on_disk = creds.key_file.read_bytes()
    assert keyfile.is_encrypted(on_disk) and creds.cert_file.read_bytes() != old_cert
    assert not any(line in on_disk for line in plain_before.splitlines()[1:-1])
    renewed_plain, used = keyfile.decrypt(on_disk, [kek])
    assert used == kek and renewed_plain != keyfile.decrypt(plain_before, [None])[0]  # a new key
    assert not any(line in on_disk for line in renewed_plain.splitlines()[1:-1])  # never in the clear
    with pytest.raises(CredentialsLocked):
        Credentials(creds.dir)
    with pytest.raises(TransportError):
        Credentials(creds.dir, kek=os.urandom(32))
    for who in (creds, Credentials(creds.dir, kek=kek)):  # the running process and a new one
        async with http_client(who, timeout=10) as http:
            r = await http.get(ca.url + "/v1/ca/roots")
        assert r.status_code == 200
