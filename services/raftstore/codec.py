"""Binary encoding of Raft messages for the peer transport: a fixed little-endian header, then the read-index
context, then each entry as (term, index, type, length, data), then for SNAP the snapshot (index, term,
membership, data). No JSON on the hot path and no copies of entry data beyond the one join, because peer
traffic is the raftstore's hot path. The transport splits an encoded message into frames of at most 1 MiB."""

from __future__ import annotations

import struct

from services.raftstore.raft import ConfState, Entry, EntryType, Message, MsgType, Snapshot

# type, to, frm, term, log_term, index, commit, reject, reject_hint, len(context), len(entries)
_HEADER = struct.Struct("<BQQQQQQ?QII")
# term, index, type, len(data)
_ENTRY = struct.Struct("<QQBI")
# index, term, number of voters, number of learners, len(data); the member ids (u64 each) and data follow
_SNAP = struct.Struct("<QQIIQ")
_ID = struct.Struct("<Q")


class DecodeError(ValueError):
    pass


#: the first byte of a hello (no MsgType has this value): a dialling member says who it is and where it listens
HELLO_MARK = 0xFF
# mark, member id, peer port; the peer host (UTF-8) follows
_HELLO = struct.Struct("<BQH")


def encode_hello(member_id: int, host: str, port: int) -> bytes:
    return _HELLO.pack(HELLO_MARK, member_id, port) + host.encode()


def decode_hello(buf: bytes) -> tuple[int, str, int] | None:
    """(id, host, port) if `buf` is a hello, None if it is something else (a message)."""
    if len(buf) < _HELLO.size or buf[0] != HELLO_MARK:
        return None
    try:
        _, member_id, port = _HELLO.unpack_from(buf, 0)
        host = bytes(buf[_HELLO.size:]).decode()
    except (struct.error, UnicodeDecodeError) as e:
        raise DecodeError(f"raft codec: undecodable hello: {e}") from e
    if member_id <= 0 or not host:
        raise DecodeError("raft codec: a hello needs a member id and a host")
    return member_id, host, port


def encode_message(m: Message) -> bytes:
    parts = [_HEADER.pack(m.type, m.to, m.frm, m.term, m.log_term, m.index, m.commit, m.reject,
                          m.reject_hint, len(m.context), len(m.entries)), m.context]
    for e in m.entries:
        parts.append(_ENTRY.pack(e.term, e.index, e.type, len(e.data)))
        parts.append(e.data)
    if m.type == MsgType.SNAP:
        snap = m.snapshot or Snapshot()
        voters, learners = snap.conf.voters, snap.conf.learners
        parts.append(_SNAP.pack(snap.index, snap.term, len(voters), len(learners), len(snap.data)))
        parts.extend(_ID.pack(i) for i in (*voters, *learners))
        parts.append(snap.data)
    return b"".join(parts)


def decode_message(buf: bytes) -> Message:
    try:
        (mtype, to, frm, term, log_term, index, commit, reject, hint, nctx, nents) = _HEADER.unpack_from(buf, 0)
        pos = _HEADER.size
        context = bytes(buf[pos:pos + nctx])
        pos += nctx
        entries = []
        for _ in range(nents):
            eterm, eindex, etype, n = _ENTRY.unpack_from(buf, pos)
            pos += _ENTRY.size
            if pos + n > len(buf):
                raise DecodeError("raft codec: entry data runs past the frame")
            entries.append(Entry(eterm, eindex, bytes(buf[pos:pos + n]), EntryType(etype)))
            pos += n
        snapshot = None
        if mtype == MsgType.SNAP:
            sindex, sterm, nv, nl, ndata = _SNAP.unpack_from(buf, pos)
            pos += _SNAP.size
            ids = [_ID.unpack_from(buf, pos + 8 * k)[0] for k in range(nv + nl)]
            pos += 8 * (nv + nl)
            if pos + ndata > len(buf):
                raise DecodeError("raft codec: snapshot data runs past the frame")
            snapshot = Snapshot(sindex, sterm, bytes(buf[pos:pos + ndata]),
                                ConfState(tuple(ids[:nv]), tuple(ids[nv:])))
            pos += ndata
        if pos != len(buf) or len(context) != nctx:
            raise DecodeError("raft codec: frame length does not match its contents")
        return Message(MsgType(mtype), to=to, frm=frm, term=term, log_term=log_term, index=index,
                       entries=tuple(entries), commit=commit, reject=reject, reject_hint=hint, context=context,
                       snapshot=snapshot)
    except (struct.error, ValueError) as e:
        if isinstance(e, DecodeError):
            raise
        raise DecodeError(f"raft codec: undecodable message: {e}") from e
