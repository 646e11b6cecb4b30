"""shoal.pki and shoal.certs: the root, issuing from CSRs, identities, join tokens, private files."""

from __future__ import annotations

import datetime as dt
import stat
import time
from pathlib import Path

import pytest
from cryptography import x509

from shoal import pki
from shoal.certs import LOCAL_HOSTS, Signer

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer.new("cluster-a", now=NOW)


def test_root_is_a_p256_ca_valid_for_twenty_years(signer: Signer) -> None:
    root = signer.root
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert signer.key.curve.name == "secp256r1"
    years = (root.not_valid_after_utc - root.not_valid_before_utc).days / 365
    assert 19.9 < years < 20.1


def test_identity_comes_from_the_ca_not_from_the_csr(signer: Signer) -> None:
    key = pki.new_key()
    csr = pki.make_csr(key)  # subject "shoal-csr": ignored
    pem = signer.sign(csr, node_id="node1", role=pki.WORKER, component="agent", now=NOW)
    ident = pki.identity_of(pki.load_cert(pem))
    assert (ident.node_id, ident.role, ident.cluster_id, ident.component) == ("node1", pki.WORKER, "cluster-a", "agent")
    assert not ident.is_manager


def test_certificate_carries_the_addresses_it_is_dialled_by(signer: Signer) -> None:
    pem = signer.sign(pki.make_csr(pki.new_key()), node_id="n", role=pki.MANAGER, component="gateway",
                      hosts=(*LOCAL_HOSTS, "10.0.0.7", "gateway"), now=NOW)
    san = pki.load_cert(pem).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    dns = set(san.get_values_for_type(x509.DNSName))
    assert {"127.0.0.1", "::1", "10.0.0.7"} <= ips
    assert {"localhost", "gateway", "n", pki.MANAGER} <= dns
    assert "gateway@swarm-manager.shoal" in san.get_values_for_type(x509.RFC822Name)


def test_unknown_role_or_component_is_refused(signer: Signer) -> None:
    csr = pki.make_csr(pki.new_key())
    with pytest.raises(pki.PKIError, match="role"):
        signer.sign(csr, node_id="n", role="swarm-root", component="agent", now=NOW)
    with pytest.raises(pki.PKIError, match="component"):
        signer.sign(csr, node_id="n", role=pki.WORKER, component="kernel", now=NOW)


def test_csr_must_be_signed_by_its_key_and_p256() -> None:
    with pytest.raises(pki.PKIError, match="PEM"):
        pki.parse_csr(b"-----BEGIN CERTIFICATE REQUEST-----\nnope\n-----END CERTIFICATE REQUEST-----\n")
    with pytest.raises(pki.PKIError, match="16 KiB"):
        pki.parse_csr(b"x" * 20_000)
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    k384 = ec.generate_private_key(ec.SECP384R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])).sign(k384, hashes.SHA256()))
    with pytest.raises(pki.PKIError, match="P-256"):
        pki.parse_csr(csr.public_bytes(Encoding.PEM))


def test_backdating_is_bounded_for_short_certificates(signer: Signer) -> None:
    """SwarmKit backdates an hour; a 30-second test certificate must not be born past its renewal point."""
    cert = pki.load_cert(signer.sign(pki.make_csr(pki.new_key()), node_id="n", role=pki.WORKER, component="agent",
                                     now=NOW, lifetime=dt.timedelta(seconds=30)))
    assert cert.not_valid_before_utc.timestamp() >= NOW - 2  # 30 s / 20, in whole seconds
    assert pki.renew_at(cert, 0.5) > NOW
    long = pki.load_cert(signer.sign(pki.make_csr(pki.new_key()), node_id="n", role=pki.WORKER,
                                     component="agent", now=NOW))
    assert long.not_valid_before_utc.timestamp() == NOW - 3600


def test_join_token_pins_the_root_and_compares_in_constant_time(signer: Signer) -> None:
    secret = pki.new_token_secret()
    token = pki.make_token(signer.root, secret)
    assert token.startswith("SWMTKN-1-")
    parsed = pki.parse_token(token)
    assert parsed.secret == secret and parsed.digest == pki.root_digest(signer.root)
    pki.verify_pinned_root(signer.root, token)
    other = Signer.new("cluster-b", now=NOW)
    with pytest.raises(pki.PKIError, match="does not match"):
        pki.verify_pinned_root(other.root, token)
    assert pki.token_matches(token, token) and not pki.token_matches(token[:-1] + "0", token)


@pytest.mark.parametrize("bad", ["", "SWMTKN-1-abc", "XYZ-1-" + "a" * 50 + "-" + "b" * 25,
                                 "SWMTKN-2-" + "a" * 50 + "-" + "b" * 25, "SWMTKN-1-" + "A" * 50 + "-" + "b" * 25])
def test_malformed_tokens_are_refused_with_a_reason(bad: str) -> None:
    with pytest.raises(pki.PKIError):
        pki.parse_token(bad)


def test_cross_signed_root_chains_to_the_old_one(signer: Signer) -> None:
    new = Signer.new("cluster-a", now=NOW)
    cross = pki.cross_sign(new.root, signer.root, signer.key)
    assert cross.issuer == signer.root.subject and cross.public_key() == new.root.public_key()
    cross.verify_directly_issued_by(signer.root)


def test_identity_files_are_private(tmp_path: Path, signer: Signer) -> None:
    d = signer.issue_dir(tmp_path / "certs", node_id="n", role=pki.WORKER, component="agent")
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for name in (pki.KEY_FILE, pki.CERT_FILE, pki.ROOT_FILE):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600
    ident = pki.identity_of(pki.load_cert((d / pki.CERT_FILE).read_bytes()))
    assert ident.not_after > time.time()
