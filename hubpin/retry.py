"""One retry policy for every request hubpin sends (HTTP through urllib3, GCS through gcsfs).

A request that fails transiently is tried again ``retries`` times (the setting),
waiting hubpin's backoff in between, or exactly the server's ``Retry-After`` when it
gave one; the one-line error then says how many tries it took. What counts as
transient is the caller's (each client knows its own exceptions); how often and how
long to wait is decided only here.
"""

from __future__ import annotations

import random


def backoff_delay(failures: int, first: float = 0.2) -> float:
    """Seconds to wait before another try: doubling from ``first``, at most 8 s, jittered
    so that parallel jobs (and fleets) do not retry in step."""
    return min(8.0, first * 2 ** (failures - 1)) * (0.5 + random.random() / 2)


class Retries:
    """One operation's budget: counts its failures and says how long to wait before the next try."""

    def __init__(self, retries: int, first: float = 0.2) -> None:
        self.retries = retries
        self.first = first
        self.failures = 0

    def failed(self, exc: BaseException | None = None) -> float | None:
        """Count a failure; the seconds to wait before trying again, or None to give up.

        An exception with a ``retry_after`` (the server's Retry-After, capped by the
        caller) is waited for exactly, without jitter on top."""
        self.failures += 1
        if self.failures > self.retries:
            return None
        retry_after = getattr(exc, "retry_after", None)
        return retry_after if retry_after is not None else backoff_delay(self.failures, self.first)

    @property
    def tried(self) -> str:
        """Where a retry stands, for the line ``-v`` logs before it."""
        return f"try {self.failures} of {self.retries + 1} failed"

    @property
    def gave_up(self) -> str:
        return f"gave up after {self.failures} tries"
