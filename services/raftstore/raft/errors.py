"""Errors the pure Raft core raises. The driver maps them onto shoal's error tree (NotLeader, Unavailable)."""

from __future__ import annotations


class RaftError(Exception):
    """Root of the core's errors."""


class ProposalDropped(RaftError):
    """The proposal (or read-index request) was not taken: this member is not the leader, or knows none."""


class LogCompacted(RaftError):
    """The requested index is below the first index kept (it lives in a snapshot)."""


class LogUnavailable(RaftError):
    """The requested index is past the last index of the log."""


class MessageRefused(RaftError):
    """A message from a peer claims what cannot be true (raft/sanity.py); it was dropped, nothing changed."""
