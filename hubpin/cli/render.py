"""The one renderer of results: JSON documents on stdout, and aligned tables.

A table's columns are separated by one space and its last one by two, padded
to each column's width (``<`` left, ``>`` right); the last column is not padded.
Tables are results, printed on stdout (``status``, ``outdated``, a dry run's plan;
``-q`` silences a dry run's); see :mod:`hubpin.cli` for which stream gets what.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

Columns = Sequence[tuple[str, str]]  # (header, alignment and width such as "<20" or ">10")


def table(columns: Columns, rows: Iterable[Sequence[str]]) -> list[str]:
    """The header line and one line per row."""

    def line(cells: Sequence[str]) -> str:
        padded = [f"{cell:{spec}}" for cell, (_, spec) in zip(cells[:-1], columns, strict=False)]
        return " ".join(padded) + "  " + cells[-1]

    return [line([header for header, _ in columns]), *(line(row) for row in rows)]


def print_table(
    columns: Columns, rows: Iterable[Sequence[str]], emit: Callable[[str], None] = print
) -> None:
    for text in table(columns, rows):
        emit(text)


def print_json(doc: dict[str, Any]) -> None:
    """A result document on stdout, as every ``--json`` prints it."""
    print(json.dumps(doc, indent=2))


def to_stderr(text: str) -> None:
    print(text, file=sys.stderr)
