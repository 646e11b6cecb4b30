"""Reading the few fields shoal needs from an X.509 certificate without `cryptography` (docs/performance.md,
"Footprint"): a running process learns every peer's identity from its verified certificate, and its own from
its certificate file, and loading `cryptography` for that costs ~8 MiB of resident memory in every process.

A strict DER reader for what `shoal.pki.identity_of` reads: the subject's CN, OU and O, the component URI of the
subject alternative names, the validity and the serial number. It reads certificates that TLS has already
verified (a peer's) or that this node's CA wrote (its own); anything that is not well-formed DER of the shape
RFC 5280 gives is refused with `CertError`, never guessed at. Pure: no I/O, no clock."""

from __future__ import annotations

import base64
import binascii
import calendar
from dataclasses import dataclass

OID_CN = bytes.fromhex("550403")  # 2.5.4.3
OID_OU = bytes.fromhex("55040b")  # 2.5.4.11
OID_O = bytes.fromhex("55040a")  # 2.5.4.10
OID_SAN = bytes.fromhex("551d11")  # 2.5.29.17

_SEQUENCE, _SET, _INTEGER, _OID, _OCTETS, _BOOLEAN = 0x30, 0x31, 0x02, 0x06, 0x04, 0x01
_UTC_TIME, _GENERALIZED_TIME = 0x17, 0x18
_URI = 0x86  # GeneralName uniformResourceIdentifier: [6] IMPLICIT IA5String
_STRINGS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x14: "latin-1", 0x1E: "utf-16-be", 0x1C: "utf-32-be"}
_PEM_BEGIN, _PEM_END = b"-----BEGIN CERTIFICATE-----", b"-----END CERTIFICATE-----"


class CertError(ValueError):
    """Not a certificate this reader accepts; the message says where it broke."""


@dataclass(frozen=True)
class CertFields:
    subject: dict[bytes, str]  # OID (DER contents) -> the first value of that attribute
    uris: tuple[str, ...]  # the URI subject alternative names, in order
    not_before: float
    not_after: float
    serial: int


def _tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, start of the contents, end of the contents) of the element at `pos`."""
    if pos + 2 > end:
        raise CertError("truncated element")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if tag & 0x1F == 0x1F:
        raise CertError("multi-byte tags are not used in certificates")
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or pos + n > end:
            raise CertError("bad length")
        length = int.from_bytes(data[pos:pos + n], "big")
        if length < 0x80 or data[pos] == 0:
            raise CertError("non-minimal length (not DER)")
        pos += n
    if pos + length > end:
        raise CertError("element runs past its container")
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    while start < end:
        tag, s, e = _tlv(data, start, end)
        out.append((tag, s, e))
        start = e
    return out


def _expect(item: tuple[int, int, int], tag: int, what: str) -> tuple[int, int]:
    if item[0] != tag:
        raise CertError(f"{what}: expected tag {tag:#x}, found {item[0]:#x}")
    return item[1], item[2]


def _string(data: bytes, tag: int, s: int, e: int) -> str:
    codec = _STRINGS.get(tag)
    if codec is None:
        raise CertError(f"attribute value of unknown string type {tag:#x}")
    try:
        return data[s:e].decode(codec)
    except UnicodeDecodeError as err:
        raise CertError(f"attribute value is not {codec}") from err


def _time(data: bytes, tag: int, s: int, e: int) -> float:
    text = data[s:e].decode("ascii", "replace")
    if tag == _UTC_TIME and len(text) == 13 and text.endswith("Z") and text[:12].isdigit():
        year = int(text[:2])
        year += 1900 if year >= 50 else 2000  # RFC 5280 4.1.2.5.1
        rest = text[2:12]
    elif tag == _GENERALIZED_TIME and len(text) == 15 and text.endswith("Z") and text[:14].isdigit():
        year, rest = int(text[:4]), text[4:14]
    else:
        raise CertError(f"validity: not a DER UTCTime or GeneralizedTime ({text!r})")
    month, day, hour, minute, second = (int(rest[i:i + 2]) for i in range(0, 10, 2))
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 60):
        raise CertError(f"validity: no such time {text!r}")
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


def _name(data: bytes, s: int, e: int) -> dict[bytes, str]:
    out: dict[bytes, str] = {}
    for rdn in _children(data, s, e):
        for atv in _children(data, *_expect(rdn, _SET, "name")):
            parts = _children(data, *_expect(atv, _SEQUENCE, "name attribute"))
            if len(parts) != 2:
                raise CertError("name attribute: expected an OID and a value")
            oid = data[slice(*_expect(parts[0], _OID, "name attribute"))]
            out.setdefault(oid, _string(data, *parts[1]))
    return out


def _uris(data: bytes, extensions: tuple[int, int, int] | None) -> tuple[str, ...]:
    if extensions is None:
        return ()
    wrapped = _children(data, extensions[1], extensions[2])
    if len(wrapped) != 1:
        raise CertError("extensions: expected one sequence")
    inner = _expect(wrapped[0], _SEQUENCE, "extensions")
    found: list[str] = []
    seen_san = False
    for ext in _children(data, *inner):
        parts = _children(data, *_expect(ext, _SEQUENCE, "extension"))
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[1][0] != _BOOLEAN):
            raise CertError("extension: expected an OID, an optional critical flag and a value")
        if data[slice(*_expect(parts[0], _OID, "extension"))] != OID_SAN:
            continue
        if seen_san:
            raise CertError("two subject alternative name extensions")
        seen_san = True
        value = _expect(parts[-1], _OCTETS, "extension value")
        names = _children(data, *value)
        if len(names) != 1:
            raise CertError("subject alternative names: expected one sequence")
        for tag, s, e in _children(data, *_expect(names[0], _SEQUENCE, "subject alternative names")):
            if tag == _URI:
                found.append(_string(data, 0x16, s, e))
    return tuple(found)


def read_der(der: bytes) -> CertFields:
    """The fields of one DER certificate; raises CertError."""
    outer = _children(der, 0, len(der))
    if len(outer) != 1:
        raise CertError("expected exactly one certificate")
    cert = _children(der, *_expect(outer[0], _SEQUENCE, "certificate"))
    if len(cert) != 3:
        raise CertError("certificate: expected the signed part, an algorithm and a signature")
    tbs = _children(der, *_expect(cert[0], _SEQUENCE, "tbsCertificate"))
    if tbs and tbs[0][0] == 0xA0:  # [0] EXPLICIT version
        tbs = tbs[1:]
    if len(tbs) < 6:
        raise CertError("tbsCertificate: too few fields")
    serial_s, serial_e = _expect(tbs[0], _INTEGER, "serial number")
    if serial_s == serial_e:
        raise CertError("serial number: empty")
    validity = _children(der, *_expect(tbs[3], _SEQUENCE, "validity"))
    if len(validity) != 2:
        raise CertError("validity: expected two times")
    subject = _name(der, *_expect(tbs[4], _SEQUENCE, "subject"))
    _expect(tbs[5], _SEQUENCE, "subject public key")
    optional = {tag: (tag, s, e) for tag, s, e in tbs[6:]}
    if len(optional) != len(tbs) - 6 or set(optional) - {0x81, 0x82, 0xA3}:
        raise CertError("tbsCertificate: unexpected fields after the public key")
    return CertFields(subject=subject, uris=_uris(der, optional.get(0xA3)),
                      not_before=_time(der, *validity[0]), not_after=_time(der, *validity[1]),
                      serial=int.from_bytes(der[serial_s:serial_e], "big", signed=True))


def pem_to_der(pem: bytes) -> list[bytes]:
    """The DER bytes of every CERTIFICATE block in `pem`, in order; raises CertError when there is none."""
    out: list[bytes] = []
    pos = 0
    while (start := pem.find(_PEM_BEGIN, pos)) >= 0:
        end = pem.find(_PEM_END, start)
        if end < 0:
            raise CertError("PEM: a certificate block has no end line")
        try:
            out.append(base64.b64decode(b"".join(pem[start + len(_PEM_BEGIN):end].split()), validate=True))
        except binascii.Error as e:
            raise CertError(f"PEM: bad base64: {e}") from None
        pos = end + len(_PEM_END)
    if not out:
        raise CertError("PEM: no certificate block")
    return out
