"""Binary encoding of Raft messages for the peer transport: a fixed little-endian header, then the read-index
context, then each entry as (term, index, type, length, data). No JSON and no copies of entry data beyond the
one join, because peer traffic is the raftstore's hot path."""

from __future__ import annotations

import struct

from services.raftstore.raft import Entry, EntryType, Message, MsgType

# type, to, frm, term, log_term, index, commit, reject, reject_hint, len(context), len(entries)
_HEADER = struct.Struct("<BQQQQQQ?QII")
# term, index, type, len(data)
_ENTRY = struct.Struct("<QQBI")


class DecodeError(ValueError):
    pass


def encode_message(m: Message) -> bytes:
    parts = [_HEADER.pack(m.type, m.to, m.frm, m.term, m.log_term, m.index, m.commit, m.reject,
                          m.reject_hint, len(m.context), len(m.entries)), m.context]
    for e in m.entries:
        parts.append(_ENTRY.pack(e.term, e.index, e.type, len(e.data)))
        parts.append(e.data)
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
        if pos != len(buf) or len(context) != nctx:
            raise DecodeError("raft codec: frame length does not match its contents")
        return Message(MsgType(mtype), to=to, frm=frm, term=term, log_term=log_term, index=index,
                       entries=tuple(entries), commit=commit, reject=reject, reject_hint=hint, context=context)
    except (struct.error, ValueError) as e:
        if isinstance(e, DecodeError):
            raise
        raise DecodeError(f"raft codec: undecodable message: {e}") from e
