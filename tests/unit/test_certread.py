"""shoal.certread: the identity a running process reads from certificates without `cryptography` matches what
`cryptography` reads from the same certificates; malformed DER is refused; and `transport.chains_to` (OpenSSL's
verification, used by the root polls) agrees with `pki.issued_by`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from shoal import certread, enroll, pki, transport
from shoal.certs import Signer

NOW = 1_800_000_000.0


def reference_identity(cert: x509.Certificate) -> pki.Identity:
    """What `cryptography` reads (the reader this module replaced at run time)."""
    def one(oid: x509.ObjectIdentifier) -> str:
        attrs = cert.subject.get_attributes_for_oid(oid)
        return str(attrs[0].value) if attrs else ""

    component = ""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith(pki.COMPONENT_URN)]
        component = uris[0].removeprefix(pki.COMPONENT_URN) if uris else ""
    except x509.ExtensionNotFound:
        pass
    return pki.Identity(node_id=one(NameOID.COMMON_NAME), role=one(NameOID.ORGANIZATIONAL_UNIT_NAME),
                        cluster_id=one(NameOID.ORGANIZATION_NAME), component=component,
                        not_before=cert.not_valid_before_utc.timestamp(),
                        not_after=cert.not_valid_after_utc.timestamp(), serial=cert.serial_number)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(("role", "component", "hosts", "lifetime"), [
    (pki.WORKER, "agent", (), dt.timedelta(days=90)),
    (pki.MANAGER, "gateway", ("127.0.0.1", "::1", "localhost", "gw.example"), dt.timedelta(hours=1)),
    (pki.MANAGER, "raftstore", tuple(f"10.0.0.{i}" for i in range(40)), dt.timedelta(days=365 * 40)),  # > 2049
    (pki.ADMIN, "admin", ("xn--host-8qa",), dt.timedelta(seconds=30)),
])
def test_identity_matches_cryptography(role: str, component: str, hosts: tuple[str, ...],
                                       lifetime: dt.timedelta) -> None:
    signer = Signer.new("cluster-ß", now=NOW)
    pem = signer.sign(pki.make_csr(pki.new_key()), node_id="node-1", role=role, component=component,
                      hosts=hosts, now=NOW, lifetime=lifetime)
    cert = pki.load_cert(pem)
    expected = reference_identity(cert)
    assert pki.identity_of_der(der(cert)) == expected
    assert pki.identity_of_pem(pem) == expected
    assert pki.identity_of(cert) == expected
    assert (expected.node_id, expected.role, expected.component) == ("node-1", role, component)


def test_a_root_has_no_component_and_a_bundle_reads_in_order() -> None:
    a, b = Signer.new("c1", now=NOW), Signer.new("c2", now=NOW)
    assert pki.identity_of_pem(a.root_pem) == reference_identity(a.root)
    assert pki.identity_of_pem(a.root_pem).component == ""
    assert certread.pem_to_der(a.root_pem + b"\n" + b.root_pem) == [der(a.root), der(b.root)]


def test_malformed_certificates_are_refused() -> None:
    good = der(Signer.new("c", now=NOW).root)
    bad = [b"", good[:-1], good + b"\x00", b"\x30\x81\x05" + good[3:8],  # non-minimal length
           b"\x31" + good[1:], good[:4] + b"\x31" + good[5:]]  # a SET where SEQUENCEs are
    for blob in bad:
        with pytest.raises(pki.PKIError):
            pki.identity_of_der(blob)
    begin, end = b"-----BEGIN CERTIFICATE-----\n", b"\n-----END CERTIFICATE-----"
    for pem in (b"", begin + b"AAAA", begin + b"!!" + end):
        with pytest.raises(pki.PKIError):
            pki.identity_of_pem(pem)


def test_chains_to_agrees_with_issued_by(tmp_path: Path) -> None:
    old, new = Signer.new("c", now=None), Signer.new("c", now=None)  # same subject: the key tells them apart
    creds = transport.Credentials(old.issue_dir(tmp_path / "n", node_id="n", role=pki.WORKER, component="agent"))
    leaf = creds.cert_file.read_bytes()
    assert transport.chains_to(creds, old.root_pem) and pki.issued_by(pki.load_cert(leaf), old.root)
    assert not transport.chains_to(creds, new.root_pem) and not pki.issued_by(pki.load_cert(leaf), new.root)
    assert not transport.chains_to(creds, b"not a certificate")

    def light(root: bytes) -> bool:
        return transport.chains_to(creds, root)

    for on_disk, now in [(old.root_pem, old.root_pem), (old.root_pem, new.root_pem + old.root_pem),
                         (old.root_pem + new.root_pem, old.root_pem), (old.root_pem, b"")]:
        assert enroll.roots_decision(leaf, on_disk, now, light) == enroll.roots_decision(leaf, on_disk, now)
