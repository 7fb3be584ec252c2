"""Read a TOML file into a pydantic model, with errors a person can act on.

tomllib reports syntax errors with a line; pydantic reports schema errors with a
key path but no line. This module joins the two so that every bad manifest,
settings file or lock ends in one line: ``file:line: key: what is wrong``.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from hubpin.errors import InputError

try:
    # The standard library's tomllib is tomli's pure-Python code; tomli's mypyc-compiled
    # wheel parses the same TOML 1.0 with the same messages about 4x faster (a 2,000-model
    # lock: 90 ms instead of 370 ms, measured).
    import tomli as tomllib
except ImportError:  # pragma: no cover - a platform without it: the same parser, slower
    import tomllib

if TYPE_CHECKING:  # pydantic is imported by what validates; the no-op stamp parses TOML only
    from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound="BaseModel")


def read_toml(path: Path, error: type[InputError], fix: str) -> tuple[dict[str, Any], str]:
    """Return the parsed document and its text, or raise ``error`` naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: file not found; {fix}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read: {exc}") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise error(f"{path}: invalid TOML: arrays or tables nested too deeply") from None


def validate(
    model: type[M],
    data: Any,
    path: Path,
    text: str,
    error: type[InputError],
    tags: tuple[int, Collection[str]] | None = None,
) -> M:
    """Validate ``data`` against ``model``; a failure names the file, line and key.

    ``tags`` is where a tagged union sits in the key path and its members' names:
    pydantic puts the member into an error's path (``models.a.archive.handle``
    for ``(2, {"archive", …})``), which the file does not have.
    """
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(describe(exc, path, text, tags)) from None


def describe(
    exc: ValidationError, path: Path, text: str, tags: tuple[int, Collection[str]] | None = None
) -> str:
    """Turn the first pydantic error into ``file:line: key: message``."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = [str(part) for part in first["loc"]]
    if tags is not None and len(loc) > tags[0] and loc[tags[0]] in tags[1]:
        del loc[tags[0]]
    # Keys are quoted when unprintable, so a message stays on one line.
    key = ".".join(part if part.isprintable() else repr(part) for part in loc) or "(top level)"
    line = find_line(text, loc)
    where = f"{path}:{line}" if line else str(path)
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "missing":
        msg = "required key is missing"
    found = first.get("input")
    detail = f"{msg}"
    if first["type"] not in ("missing", "extra_forbidden") and isinstance(found, (str, int, float)):
        detail += f" (found {found!r})"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{where}: {key}: {detail}{more}"


def find_line(text: str, loc: list[str]) -> int | None:
    """Best-effort line number of a dotted key path such as ``models.bert.handle``.

    TOML parsers do not keep positions, so this looks for the table header that
    holds the key (``[models.bert]``) and then the key itself below it.
    """
    lines = text.splitlines()
    for split in range(len(loc), 0, -1):
        table, keys = loc[:split], loc[split:]
        header = _header_pattern(table)
        for number, line in enumerate(lines, start=1):
            if not header.match(line):
                continue
            if not keys:
                return number
            key = re.compile(rf"^\s*{_key_pattern(keys[0])}\s*=")
            for offset, below in enumerate(lines[number:], start=number + 1):
                if below.lstrip().startswith("["):
                    break
                if key.match(below):
                    return offset
            return number
    if loc:
        prefix = _header_pattern(loc, prefix=True)
        key = re.compile(rf"^\s*{_key_pattern(loc[-1])}\s*=")
        for number, line in enumerate(lines, start=1):
            if prefix.match(line) or key.match(line):
                return number
    return None


def _key_pattern(key: str) -> str:
    escaped = re.escape(key)
    return rf"(?:{escaped}|\"{escaped}\"|'{escaped}')"


def _header_pattern(table: list[str], prefix: bool = False) -> re.Pattern[str]:
    """``[a.b]`` for the table a.b; with ``prefix``, also ``[a.b.c]`` below it."""
    dotted = r"\s*\.\s*".join(_key_pattern(part) for part in table)
    if prefix:
        return re.compile(rf"^\s*\[\[?\s*{dotted}\s*[.\]]")
    return re.compile(rf"^\s*\[\[?\s*{dotted}\s*\]\]?\s*(#.*)?$")
