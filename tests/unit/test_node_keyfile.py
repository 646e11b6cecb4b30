"""Node TLS keys under the KEK (shoal/keyfile.py, transport.Credentials, atrest.DataKeys' TLS key handling):
encrypted and plain PEMs, the locked and wrong-key refusals, and the crash windows of every re-wrap."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest

from services.raftstore import atrest
from services.raftstore.atrest import DataKeys
from shoal import keyfile, pki
from shoal.certs import LOCAL_HOSTS, Signer
from shoal.transport import Credentials, CredentialsLocked, TransportError


@pytest.fixture
def cert_dir(tmp_path: Path) -> Path:
    return Signer.new().issue_dir(tmp_path / "certs", node_id="n1", role=pki.MANAGER, component="raftstore",
                                  hosts=LOCAL_HOSTS)


def key_of(path: Path) -> bytes:
    return path.read_bytes()


def test_encrypt_decrypt_round_trip_and_refusals(cert_dir: Path) -> None:
    plain = (cert_dir / pki.KEY_FILE).read_bytes()
    kek, other = os.urandom(32), os.urandom(32)
    sealed = keyfile.encrypt(plain, kek)
    assert keyfile.is_encrypted(sealed) and not keyfile.is_encrypted(plain)
    assert plain.split(b"\n")[1] not in sealed  # not a line of the plain key survives
    assert keyfile.decrypt(sealed, [other, kek]) == (pki.key_pem(pki.load_key(plain)), kek)
    assert keyfile.decrypt(plain, [kek]) == (plain, None)
    with pytest.raises(keyfile.KeyLocked):
        keyfile.decrypt(sealed, [None])
    with pytest.raises(keyfile.WrongKEK):
        keyfile.decrypt(sealed, [other])


def test_credentials_open_an_encrypted_key_only_with_its_kek_and_openssl_uses_it(cert_dir: Path) -> None:
    creds = Credentials(cert_dir)
    assert creds.kek is None
    kek = os.urandom(32)
    assert creds.rekey(kek) and not creds.rekey(kek)
    assert keyfile.is_encrypted((cert_dir / pki.KEY_FILE).read_bytes())
    with pytest.raises(CredentialsLocked):
        Credentials(cert_dir)
    with pytest.raises(TransportError, match="cannot open"):
        Credentials(cert_dir, kek=os.urandom(32))
    opened = Credentials(cert_dir, kek=kek)
    assert opened.kek == kek
    for purpose in ("server", "client", "peer-client"):  # OpenSSL decrypts the file itself
        assert isinstance(opened.context(purpose), ssl.SSLContext)
    # a renewed key is written under the same KEK, never in the clear
    fresh = pki.key_pem(pki.new_key())
    assert keyfile.decrypt(opened.key_bytes(fresh), [kek])[0] == fresh
    assert opened.rekey(None) and not keyfile.is_encrypted((cert_dir / pki.KEY_FILE).read_bytes())
    assert Credentials(cert_dir).kek is None


def test_autolock_encrypts_the_tls_key_and_turning_it_off_writes_it_plain(tmp_path: Path, cert_dir: Path) -> None:
    data = tmp_path / "data"
    keys = DataKeys.load(data, cert_dir)
    creds = keys.open_credentials(cert_dir)
    assert creds.kek is None  # no autolock: a plain PEM, as SwarmKit
    unlock = os.urandom(32)
    keys.set_autolock(unlock, creds=creds)
    assert keyfile.is_encrypted((cert_dir / pki.KEY_FILE).read_bytes())
    assert not (cert_dir / atrest.KEK_FILE).exists()
    with pytest.raises(atrest.Locked):
        DataKeys.load(data, cert_dir)
    with pytest.raises(atrest.WrongKey):
        DataKeys.load(data, cert_dir, os.urandom(32))
    again = DataKeys.load(data, cert_dir, unlock)
    assert again.open_credentials(cert_dir).kek == unlock
    rotated = os.urandom(32)
    again.set_autolock(rotated, creds=Credentials(cert_dir, kek=unlock))
    assert Credentials(cert_dir, kek=rotated).kek == rotated
    again.set_autolock(None, creds=Credentials(cert_dir, kek=rotated))
    assert Credentials(cert_dir).kek is None
    assert DataKeys.load(data, cert_dir).tls_prev is None


def test_a_plain_tls_key_under_autolocked_data_is_encrypted_in_place(tmp_path: Path, cert_dir: Path) -> None:
    """A crash after keys.json went to autolock but before the TLS key was re-written (or data from before
    node keys were encrypted): the next unlock encrypts the key."""
    data = tmp_path / "data"
    keys = DataKeys.load(data, cert_dir)
    unlock = os.urandom(32)
    keys.set_autolock(unlock)  # keys only, as a crash right after keys.json's write leaves them
    assert not keyfile.is_encrypted((cert_dir / pki.KEY_FILE).read_bytes())
    creds = DataKeys.load(data, cert_dir, unlock).open_credentials(cert_dir)
    assert creds.kek == unlock and keyfile.is_encrypted((cert_dir / pki.KEY_FILE).read_bytes())


@pytest.mark.parametrize("to", ["rotated", "off"])
def test_a_crash_between_keys_json_and_the_tls_key_rewrite_opens_with_the_recorded_kek(
        tmp_path: Path, cert_dir: Path, to: str) -> None:
    data = tmp_path / "data"
    keys = DataKeys.load(data, cert_dir)
    old = os.urandom(32)
    keys.set_autolock(old, creds=keys.open_credentials(cert_dir))
    before = (cert_dir / pki.KEY_FILE).read_bytes()
    # what set_autolock writes before it touches the TLS key, then "crash"
    keys = DataKeys.load(data, cert_dir, old)
    keys.tls_prev = old
    new = os.urandom(32) if to == "rotated" else None
    if new is not None:
        keys.kek, keys.mode = new, atrest.KEK_AUTOLOCK
    else:
        keys.kek, keys.mode = atrest._load_or_create_kek(keys.kek_path), atrest.KEK_FILE_MODE
    keys.save()
    assert (cert_dir / pki.KEY_FILE).read_bytes() == before  # still under the old key
    reopened = DataKeys.load(data, cert_dir, new)
    assert reopened.tls_prev == old
    creds = reopened.open_credentials(cert_dir)
    assert creds.kek == new
    assert DataKeys.load(data, cert_dir, new).tls_prev is None  # recorded only until the key was re-written
    if new is None:
        assert not keyfile.is_encrypted((cert_dir / pki.KEY_FILE).read_bytes())
    else:
        with pytest.raises(TransportError):
            Credentials(cert_dir, kek=old)


def test_a_tls_key_that_opens_with_none_of_the_members_keys_refuses_to_start(tmp_path: Path,
                                                                            cert_dir: Path) -> None:
    data = tmp_path / "data"
    keys = DataKeys.load(data, cert_dir)
    Credentials(cert_dir).rekey(os.urandom(32))  # encrypted under a key this member never had
    with pytest.raises(atrest.KeysUnusable, match="opens with none"):
        keys.open_credentials(cert_dir)


def test_the_ca_follows_the_unlock_key_with_its_own_tls_key(cert_dir: Path) -> None:
    from services.ca.__main__ import follow_unlock_key

    creds = Credentials(cert_dir)
    follow = follow_unlock_key(creds)
    first, second = os.urandom(32), os.urandom(32)
    follow(first)  # autolock turned on
    assert Credentials(cert_dir, kek=first).kek == first
    before = (cert_dir / pki.KEY_FILE).read_bytes()
    follow(first)  # every poll after: nothing written
    assert (cert_dir / pki.KEY_FILE).read_bytes() == before
    follow(second)  # the key rotated
    assert Credentials(cert_dir, kek=second).kek == second
    follow(None)  # autolock off
    assert Credentials(cert_dir).kek is None
