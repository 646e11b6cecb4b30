"""Batched but not delayed: a leading-edge pace for a sender that gathers work into batches (the agent's
status reports, the dispatcher's status writes and assignment messages).

The old shape waited a fixed interval after the first item of every burst, so a lone change (one task
reaching RUNNING, a service's first assignments) always paid the whole interval. A `Pacer` sends the first
batch at once and then at most one batch per `interval`: whatever arrives while a batch is in flight or within
`interval` of the last send is gathered into the next one. Under a steady stream the batching is the same as
before (one batch per interval); an isolated change goes out without waiting. Pure: the caller passes `now`."""

from __future__ import annotations


class Pacer:
    def __init__(self, interval: float) -> None:
        self.interval = max(0.0, interval)
        self.last: float | None = None  # when the last batch was sent

    def delay(self, now: float) -> float:
        """Seconds to wait before sending the next batch (0: send now)."""
        if self.last is None:
            return 0.0
        return max(0.0, self.last + self.interval - now)

    def sent(self, now: float) -> None:
        """A batch went out at `now`."""
        self.last = now
