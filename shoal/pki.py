"""The cluster's public-key infrastructure as pure functions: the root CA, node certificates issued from CSRs,
identities read back from certificates, and join tokens (SwarmKit's ca/ package, in shoal's shape).

Certificate layout (SwarmKit's): CN = node id, OU = role (`swarm-manager`, `swarm-worker`, `swarm-admin`),
O = cluster id. shoal runs several processes per manager, so each certificate also names its *component*
(raftstore, gateway, dispatcher, ca, orchestrator, allocator, scheduler, nats, agent, admin) as a URI SAN
`urn:shoal:component:<name>`, and carries an e-mail SAN `<component>@<role>.shoal` that nats-server's
`verify_and_map` maps to a NATS user with that component's subject permissions (one user per role, not per node).

No I/O and no clock: `now` is passed in; keys come from `cryptography`. Writing files is `write_identity`'s
one job (keys 0600)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shoal import certread

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

MANAGER = "swarm-manager"
WORKER = "swarm-worker"
ADMIN = "swarm-admin"
ROLES = frozenset({MANAGER, WORKER, ADMIN})

#: the processes of a manager, each with its own certificate
MANAGER_COMPONENTS = ("raftstore", "gateway", "dispatcher", "ca", "orchestrator", "allocator", "scheduler", "nats")
COMPONENTS = frozenset({*MANAGER_COMPONENTS, "agent", "admin"})
COMPONENT_URN = "urn:shoal:component:"

ROOT_LIFETIME = dt.timedelta(days=365 * 20)  # SwarmKit's RootCAExpiration
DEFAULT_CERT_LIFETIME = dt.timedelta(days=90)  # SwarmKit's DefaultNodeCertExpiration
MIN_CERT_LIFETIME = dt.timedelta(hours=1)  # SwarmKit's MinNodeCertExpiration
BACKDATE = dt.timedelta(hours=1)  # SwarmKit backdates so that clock skew between machines does not reject a cert

TOKEN_PREFIX = "SWMTKN"
TOKEN_VERSION = "1"
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"

# File names inside `<node dir>/certificates` (SwarmKit's names).
CERT_FILE = "swarm-node.crt"
KEY_FILE = "swarm-node.key"
ROOT_FILE = "swarm-root-ca.crt"


class PKIError(ValueError):
    """A certificate, CSR or token that cannot be used; the message says why."""


@dataclass(frozen=True)
class Identity:
    """Who a verified certificate names."""

    node_id: str
    role: str
    cluster_id: str
    component: str
    not_before: float
    not_after: float
    serial: int

    @property
    def is_manager(self) -> bool:
        return self.role == MANAGER

    def describe(self) -> str:
        return f"{self.component} of node {self.node_id} ({self.role})"


# ---- keys and encoding ----------------------------------------------------------------------------------------
def new_key() -> ec.EllipticCurvePrivateKey:
    """An ECDSA P-256 key (SwarmKit's default)."""
    from cryptography.hazmat.primitives.asymmetric import ec
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PKIError("pki: the key is not an ECDSA key")
    return key


def cert_pem(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return cert.public_bytes(serialization.Encoding.PEM)


def load_cert(pem: bytes) -> x509.Certificate:
    from cryptography import x509
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as e:
        raise PKIError(f"pki: not a PEM certificate: {e}") from None


def load_certs(pem: bytes) -> list[x509.Certificate]:
    from cryptography import x509
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as e:
        raise PKIError(f"pki: not a PEM certificate bundle: {e}") from None


def _utc(now: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(now, dt.UTC)


# ---- the root ---------------------------------------------------------------------------------------------------
def create_root(cluster_id: str, now: float, *, key: ec.EllipticCurvePrivateKey | None = None,
                lifetime: dt.timedelta = ROOT_LIFETIME,
                common_name: str = "swarm-ca") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed root CA for the cluster (CN `swarm-ca`, as SwarmKit's). A rotated root gets a name of its
    own (`rotated_root_name`): OpenSSL picks an issuer by name and does not try a second root of the same name
    whose signature would match, so two trusted roots of one name would refuse half of the certificates."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID
    key = key or new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster_id)])
    start = _utc(now) - BACKDATE
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(start + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def rotated_root_name() -> str:
    """The common name of a root made by a root rotation: `swarm-ca-<random>` (see `create_root`)."""
    return f"swarm-ca-{secrets.token_hex(6)}"


def cross_sign(new_root: x509.Certificate, old_root: x509.Certificate,
               old_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """`new_root`'s subject and key, signed by the old root: nodes that trust only the old root trust
    certificates of the new one through it during a root rotation (SwarmKit's CrossSignCACertificate)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    return (
        x509.CertificateBuilder().subject_name(new_root.subject).issuer_name(old_root.subject)
        .public_key(new_root.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(new_root.not_valid_before_utc).not_valid_after(old_root.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(old_key, hashes.SHA256())
    )


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when `issuer`'s key signed `cert` (an old and a new root share their subject: the signature
    tells them apart)."""
    from cryptography.exceptions import InvalidSignature
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def root_digest(root: x509.Certificate) -> str:
    """The root's SHA-256 digest in base 36, as a join token carries it."""
    from cryptography.hazmat.primitives import serialization
    return _base36(int.from_bytes(hashlib.sha256(root.public_bytes(serialization.Encoding.DER)).digest(), "big"),
                   50)


# ---- CSRs and issuing -------------------------------------------------------------------------------------------
def make_csr(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A CSR for `key`. Its subject says nothing: the CA decides the identity (SwarmKit ignores it too)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shoal-csr")]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


def parse_csr(pem: bytes | str) -> x509.CertificateSigningRequest:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    data = pem.encode() if isinstance(pem, str) else pem
    if len(data) > 16_384:
        raise PKIError("pki: the CSR is larger than 16 KiB")
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError as e:
        raise PKIError(f"pki: not a PEM certificate signing request: {e}") from None
    if not csr.is_signature_valid:
        raise PKIError("pki: the CSR's signature does not match its key")
    pub = csr.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.name != "secp256r1":
        raise PKIError("pki: the CSR's key must be ECDSA P-256")
    return csr


def _san_entries(component: str, role: str, node_id: str, hosts: tuple[str, ...]) -> list[x509.GeneralName]:
    from cryptography import x509
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(COMPONENT_URN + component),
        x509.RFC822Name(f"{component}@{role}.shoal"),
        x509.DNSName(node_id), x509.DNSName(role),
    ]
    seen = {node_id, role}
    for h in hosts:
        if not h or h in seen:
            continue
        seen.add(h)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return names


def issue(csr: x509.CertificateSigningRequest, *, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
          node_id: str, role: str, cluster_id: str, component: str, now: float,
          lifetime: dt.timedelta = DEFAULT_CERT_LIFETIME, hosts: tuple[str, ...] = ()) -> x509.Certificate:
    """A node certificate for the CSR's key. The identity comes from the arguments, never from the CSR.
    `hosts`: the addresses and names clients dial this process by (IP or DNS SANs)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    if role not in ROLES:
        raise PKIError(f"pki: unknown role {role!r}; roles are {sorted(ROLES)}")
    if component not in COMPONENTS:
        raise PKIError(f"pki: unknown component {component!r}; components are {sorted(COMPONENTS)}")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster_id)])
    # Backdated like SwarmKit's (clock skew between machines), but never by more than a twentieth of the
    # lifetime: a certificate of a few seconds (tests) would otherwise look past its renewal point at birth.
    backdate = min(BACKDATE, lifetime / 20)
    start = _utc(now) - backdate
    pub = csr.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey):
        raise PKIError("pki: the CSR's key must be ECDSA P-256")
    return (
        x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject).public_key(pub)
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(start + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectAlternativeName(_san_entries(component, role, node_id, hosts)), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def identity_of(cert: x509.Certificate) -> Identity:
    """The identity a certificate names (its chain must already be verified by TLS)."""
    from cryptography.hazmat.primitives import serialization

    return identity_of_der(cert.public_bytes(serialization.Encoding.DER))


def hosts_of(cert: x509.Certificate) -> tuple[str, ...]:
    """The addresses and names a certificate was issued for (its IP and DNS SANs but the node id and role),
    so a renewal carries the same ones."""
    from cryptography import x509
    ident = identity_of(cert)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    names = [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    names += [d for d in san.get_values_for_type(x509.DNSName) if d not in (ident.node_id, ident.role)]
    return tuple(names)


def identity_of_der(der: bytes) -> Identity:
    """The identity a DER certificate names, read without `cryptography` (shoal.certread: a running process
    reads every peer's certificate and its own, and needs nothing else of that library); raises PKIError."""
    try:
        fields = certread.read_der(der)
    except certread.CertError as e:
        raise PKIError(f"pki: cannot read the certificate: {e}") from None
    component = next((u.removeprefix(COMPONENT_URN) for u in fields.uris if u.startswith(COMPONENT_URN)), "")
    return Identity(node_id=fields.subject.get(certread.OID_CN, ""), role=fields.subject.get(certread.OID_OU, ""),
                    cluster_id=fields.subject.get(certread.OID_O, ""), component=component,
                    not_before=fields.not_before, not_after=fields.not_after, serial=fields.serial)


def identity_of_pem(pem: bytes) -> Identity:
    """The identity of the first certificate in `pem` (a certificate file), without `cryptography`."""
    try:
        der = certread.pem_to_der(pem)[0]
    except certread.CertError as e:
        raise PKIError(f"pki: not a PEM certificate: {e}") from None
    return identity_of_der(der)


def renew_at(cert: x509.Certificate | Identity, fraction: float) -> float:
    """When to renew: `fraction` (SwarmKit draws 0.5-0.8 at random) of the way through the validity."""
    if isinstance(cert, Identity):
        return cert.not_before + fraction * (cert.not_after - cert.not_before)
    start = cert.not_valid_before_utc.timestamp()
    return start + fraction * (cert.not_valid_after_utc.timestamp() - start)


# ---- join tokens ------------------------------------------------------------------------------------------------
def _base36(n: int, width: int) -> str:
    out = []
    while n:
        n, r = divmod(n, 36)
        out.append(_B36[r])
    return "".join(reversed(out)).rjust(width, "0")


def new_token_secret() -> str:
    """25 base-36 characters of randomness (about 128 bits), as SwarmKit's token secret."""
    return _base36(secrets.randbits(128), 25)


def make_token(root: x509.Certificate, secret: str) -> str:
    """`SWMTKN-1-<digest of the root>-<secret>`: the joiner pins the root by the digest before it sends anything."""
    return f"{TOKEN_PREFIX}-{TOKEN_VERSION}-{root_digest(root)}-{secret}"


@dataclass(frozen=True)
class ParsedToken:
    digest: str
    secret: str


def parse_token(token: str) -> ParsedToken:
    parts = token.strip().split("-")
    if len(parts) != 4 or parts[0] != TOKEN_PREFIX:
        raise PKIError("pki: a join token looks like SWMTKN-1-<digest>-<secret>; ask a manager for one with "
                       "`shoal swarm join-token worker` (or manager)")
    if parts[1] != TOKEN_VERSION:
        raise PKIError(f"pki: join token version {parts[1]!r} is not supported (this shoal reads version 1)")
    digest, secret = parts[2], parts[3]
    if len(digest) != 50 or len(secret) != 25 or not all(c in _B36 for c in digest + secret):
        raise PKIError("pki: the join token is malformed (wrong length or characters); copy it again")
    return ParsedToken(digest, secret)


def token_matches(given: str, expected: str) -> bool:
    """Constant-time comparison of whole tokens."""
    return hmac.compare_digest(given.strip().encode(), expected.encode())


def verify_pinned_root(root: x509.Certificate, token: str) -> None:
    """Refuse a root that is not the one the token names (a man in the middle, or a token of another cluster)."""
    if not hmac.compare_digest(root_digest(root), parse_token(token).digest):
        raise PKIError("pki: the manager's root CA does not match the join token's digest: either the token "
                       "belongs to another cluster or something is intercepting the connection")


# ---- files --------------------------------------------------------------------------------------------------------
def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically with mode 0600 (created so; never world-readable in between)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_identity(cert_dir: Path, cert: bytes, key: bytes, roots: bytes) -> None:
    """`<cert_dir>/{swarm-node.crt, swarm-node.key, swarm-root-ca.crt}`: the key 0600, the directory 0700.
    The key is written first, so a reader that sees the new certificate also finds its key."""
    cert_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(cert_dir, 0o700)
    write_private(cert_dir / ROOT_FILE, roots)
    write_private(cert_dir / KEY_FILE, key)
    write_private(cert_dir / CERT_FILE, cert)
