"""What an HTTP failure means, and what a Fetcher's threads share about each host.

:mod:`hubpin.fetch` asks this module whether a failure is worth another try
(:class:`Transient`: resets, timeouts, 5xx, 429, a short body), why a host did not
answer in a person's words (:func:`down_reason`), how long a ``Retry-After`` asks it to
wait, and what a 4xx asks of the user (:data:`NEXT_STEP`). :class:`Hosts` is the
per-origin state the parallel jobs of one command share: headers meant for one host
only (Kaggle credentials), the time a host said not to ask again before, the hint of
what to check when it is down, and which hosts were given up on, so the other jobs stop
retrying them (:meth:`Hosts.pause` wakes up) and later requests fail at once.
"""

from __future__ import annotations

import email.utils
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hubpin.settings import Settings

Origin = tuple[str, str, int]  # scheme, host, port: where headers and states belong


class Transient(Exception):
    """A failure worth another try (reset, timeout, 5xx, 429, short body)."""

    retry_after: float | None = None  # seconds the server asked for (Retry-After), capped


def transient_errors() -> tuple[type[BaseException], ...]:
    import urllib3

    return (urllib3.exceptions.HTTPError, Transient)


@dataclass
class Hosts:
    """Per-origin state shared by a Fetcher's threads: headers for that host only,
    Retry-After, what to check when it is down, and the hosts given up on."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    headers: dict[Origin, dict[str, str]] = field(default_factory=dict)
    not_before: dict[Origin, float] = field(default_factory=dict)
    hints: dict[Origin, str] = field(default_factory=dict)
    down: dict[Origin, str] = field(default_factory=dict)  # → why, once given up
    changed: threading.Condition = field(init=False)  # over ``lock``: a host was found down

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    def give_up(self, origin: Origin, why: str) -> bool:
        """Note that ``origin`` is down and wake the requests waiting to retry it; False if
        another request said so first."""
        with self.changed:
            if origin in self.down:
                return False
            self.down[origin] = why
            self.changed.notify_all()
            return True

    def why_down(self, origin: Origin) -> str | None:
        with self.lock:
            return self.down.get(origin)

    def pause(self, origin: Origin, delay: float) -> None:
        """Wait ``delay`` seconds before a retry, less if the host is found down meanwhile."""
        until = time.monotonic() + delay
        with self.changed:
            while origin not in self.down and (left := until - time.monotonic()) > 0:
                self.changed.wait(left)

    def hold_off(self, origin: Origin, wait: float) -> None:
        """Every job waits ``wait`` seconds before asking ``origin`` again (its Retry-After)."""
        until = time.monotonic() + wait
        with self.lock:
            self.not_before[origin] = max(self.not_before.get(origin, 0.0), until)

    def wait_turn(self, origin: Origin) -> None:
        """Sleep until the Retry-After this host gave (to any job) has passed."""
        with self.lock:
            until = self.not_before.get(origin, 0.0)
        delay = until - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def add_headers(self, origin: Origin, headers: Mapping[str, str]) -> None:
        with self.lock:
            self.headers.setdefault(origin, {}).update(headers)

    def headers_for(self, origin: Origin) -> dict[str, str]:
        with self.lock:
            return dict(self.headers.get(origin, {}))

    def add_hint(self, origin: Origin, check: str) -> None:
        with self.lock:
            self.hints[origin] = check

    def hint(self, origin: Origin, default: str) -> str:
        with self.lock:
            return self.hints.get(origin, default)


def is_status(exc: BaseException) -> bool:
    """A 5xx or 429 the host answered (and hubpin retried), not a network failure."""
    return isinstance(exc, Transient) and str(exc).startswith("HTTP ")


def down_reason(exc: BaseException, settings: Settings) -> str | None:
    """Why a server did not answer, in a person's words, or None for another failure."""
    import urllib3

    errors = urllib3.exceptions
    if isinstance(exc, errors.NameResolutionError):
        return "the host name does not resolve (DNS)"
    if isinstance(exc, errors.NewConnectionError):  # a subclass of ConnectTimeoutError
        return (getattr(exc.__cause__, "strerror", None) or "cannot connect").lower()
    if isinstance(exc, errors.ConnectTimeoutError):
        return f"no connection within connect_timeout ({settings.connect_timeout:g}s)"
    if isinstance(exc, errors.ReadTimeoutError):
        return f"no answer within read_timeout ({settings.read_timeout:g}s)"
    if isinstance(exc, errors.ProtocolError):
        reset = isinstance(exc.args[-1] if exc.args else None, ConnectionResetError)
        return "the connection was reset" if reset else "the connection closed unanswered"
    return None


def retry_after(value: str | None, cap: float) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or an HTTP date), capped."""
    if not value or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), cap)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, min(cap, (when - datetime.now(timezone.utc)).total_seconds()))


NEXT_STEP = {  # what a client error asks of the user (a 4xx is never retried)
    401: "; the server wants credentials: check the token or key for this host",
    403: "; the server refused access: check the credentials, or accept the model's terms",
    404: "; nothing is there: check the handle (model name and version) in the manifest",
    410: "; the model was withdrawn: pin another version in the manifest",
}


def reason(exc: BaseException) -> str:
    """The failure in one phrase, without a URL's query string."""
    text = str(exc) or type(exc).__name__
    return text.split("?")[0] if "://" in text else text
