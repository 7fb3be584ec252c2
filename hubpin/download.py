"""An open download, whatever it is read from: what every source hands to unpacking."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from hubpin.checksums import Declared


@dataclass
class Download:
    """An open download: where it ended up, how long it says it is, and its bytes."""

    final_url: str  # query stripped: safe to record and print
    length: int | None
    chunks: Iterator[bytes]
    declared: Declared | None = None  # what the host says the bytes are (checked as they stream)
