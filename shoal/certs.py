"""Issuing identities to files: the signer that `shoal swarm init` starts a cluster with, the CA service signs
with, and the tests build clusters with (shoal.pki holds the pure parts).

A `Signer` holds a root certificate and its key in memory; `issue_dir()` makes a key for one process, has it
signed, and writes `<dir>/{swarm-node.crt, swarm-node.key, swarm-root-ca.crt}` (keys 0600)."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

from shoal import pki
from shoal.ids import new_id


@dataclass
class Signer:
    root: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cluster_id: str
    lifetime: dt.timedelta = pki.DEFAULT_CERT_LIFETIME
    #: extra trusted roots sent along (a root rotation's cross-signed and previous roots)
    bundle: list[x509.Certificate] = field(default_factory=list)

    @classmethod
    def new(cls, cluster_id: str | None = None, now: float | None = None) -> Signer:
        cid = cluster_id or new_id()
        root, key = pki.create_root(cid, time.time() if now is None else now)
        return cls(root, key, cid)

    @classmethod
    def load(cls, root_pem: bytes, key_pem: bytes) -> Signer:
        from cryptography import x509
        root = pki.load_cert(root_pem)
        orgs = root.subject.get_attributes_for_oid(x509.oid.NameOID.ORGANIZATION_NAME)
        return cls(root, pki.load_key(key_pem), str(orgs[0].value) if orgs else "")

    @property
    def roots_pem(self) -> bytes:
        return b"".join(pki.cert_pem(c) for c in [self.root, *self.bundle])

    @property
    def root_pem(self) -> bytes:
        return pki.cert_pem(self.root)

    @property
    def key_pem(self) -> bytes:
        return pki.key_pem(self.key)

    def sign(self, csr_pem: bytes | str, *, node_id: str, role: str, component: str,
             hosts: tuple[str, ...] = (), now: float | None = None,
             lifetime: dt.timedelta | None = None) -> bytes:
        """A PEM certificate for the CSR's key with the given identity (the CSR's subject is ignored)."""
        cert = pki.issue(pki.parse_csr(csr_pem), ca_cert=self.root, ca_key=self.key, node_id=node_id, role=role,
                         cluster_id=self.cluster_id, component=component,
                         now=time.time() if now is None else now, lifetime=lifetime or self.lifetime, hosts=hosts)
        return pki.cert_pem(cert)

    def issue_dir(self, cert_dir: Path, *, node_id: str, role: str, component: str,
                  hosts: tuple[str, ...] = (), lifetime: dt.timedelta | None = None) -> Path:
        """Make a key in `cert_dir`, sign it, write the identity; returns `cert_dir`."""
        key = pki.new_key()
        cert = self.sign(pki.make_csr(key), node_id=node_id, role=role, component=component, hosts=hosts,
                         lifetime=lifetime)
        pki.write_identity(cert_dir, cert, pki.key_pem(key), self.roots_pem)
        return cert_dir


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
