"""Read a TOML file into a pydantic model, with errors a person can act on.

tomllib reports syntax errors with a line; pydantic reports schema errors with a
key path but no line. This module joins the two so that every bad manifest,
settings file or lock ends in one line per mistake, all of them at once:
``file:line: key: what was expected, what was found``, in hubpin's words.
"""

from __future__ import annotations

import re
import types
import typing
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


def empty_list() -> list[Any]:
    """A list field's ``default_factory``. pydantic inspects a factory's signature when it
    builds a schema: ``list``'s is parsed from its text by inspect's tokenizer (about 5 ms
    the first time in a process, measured), a Python function's is read directly."""
    return []


def read_toml(
    path: Path, error: type[InputError], fix: str, rewrite: str = ""
) -> tuple[dict[str, Any], str]:
    """Return the parsed document and its text, or raise ``error`` naming the file.
    ``rewrite``: what writes the file anew, said after a syntax error (a file hubpin writes)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: file not found; {fix}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read: {exc}") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise error(syntax_error(path, text, exc) + (f"; {rewrite}" if rewrite else "")) from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise error(f"{path}: invalid TOML: arrays or tables nested too deeply") from None


# ``key = value`` where the value is a bare word: a string written without its quotes.
_BARE_VALUE = re.compile(r"\s*([A-Za-z0-9_.\"'-]+)\s*=\s*([A-Za-z_][^\s#,\]}]*)")


def syntax_error(path: Path, text: str, exc: ValueError) -> str:
    """tomllib's complaint as ``file:line: invalid TOML (column N): what``, with the usual
    fix for the two commonest slips: a string without quotes, a string not closed."""
    line_no, column = getattr(exc, "lineno", None), getattr(exc, "colno", None)
    if line_no is None:  # the standard library's tomllib before 3.14 keeps only the message
        return f"{path}: invalid TOML: {exc}"
    what = getattr(exc, "msg", str(exc))
    lines = text.splitlines()
    line = lines[line_no - 1] if 0 < line_no <= len(lines) else ""
    hint = ""
    bare = _BARE_VALUE.match(line)
    if what == "Invalid value" and bare and bare.group(2) not in ("true", "false", "inf", "nan"):
        key, value = bare.groups()
        hint = f'; if it is a string, quote it: {key} = "{value}"'
    elif what.startswith("Illegal character") and line.count('"') % 2 == 1:
        hint = '; a string is not closed: end it with "'
    elif line.startswith(("<<<<<<< ", "=======", ">>>>>>> ")):
        hint = "; a merge conflict's marker: resolve the conflict"
    return f"{path}:{line_no}: invalid TOML (column {column}): {what}{hint}"


def validate(
    model: type[M],
    data: Any,
    path: Path,
    text: str,
    error: type[InputError],
    tags: tuple[int, Collection[str]] | None = None,
) -> M:
    """Validate ``data`` against ``model``; a failure names, per mistake, the file, line and key.

    ``tags`` is where a tagged union sits in the key path and its members' names:
    pydantic puts the member into an error's path (``models.a.archive.handle``
    for ``(2, {"archive", …})``), which the file does not have.
    """
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(describe(exc, path, text, model, tags)) from None


def describe(
    exc: ValidationError,
    path: Path,
    text: str,
    model: type[BaseModel],
    tags: tuple[int, Collection[str]] | None = None,
) -> str:
    """Every mistake of a file, one line each: ``file:line: key: what is wrong``, in file order."""
    found = []
    for where, key, detail in problems(exc, model, tags):
        line = find_line(text, [str(part) for part in where])
        found.append((line or 0, f"{path}:{line}" if line else str(path), key, detail))
    found.sort(key=lambda item: item[0])
    lines = [f"{place}: {key}: {detail}" for _, place, key, detail in found]
    if len(lines) > _SHOWN:
        lines[_SHOWN:] = [f"{path}: and {len(lines) - _SHOWN} more problems"]
    return "\n".join(lines)


def problems(
    exc: ValidationError, model: type[BaseModel], tags: tuple[int, Collection[str]] | None = None
) -> list[tuple[list[str | int], str, str]]:
    """pydantic's errors in hubpin's words: (key path, dotted key, what was expected and found).

    No pydantic wording reaches a person ("Input should be", "Value error", links to its
    documentation). An unknown key gets the closest known keys of its table as a suggestion,
    and a required key that such a suggestion already names is not reported twice.
    """
    import difflib

    said = []
    suggested: set[tuple[str | int, ...]] = set()
    for error in exc.errors(include_url=False):
        raw = list(error["loc"])
        loc = list(raw)
        if tags is not None and len(loc) > tags[0] and loc[tags[0]] in tags[1]:
            del loc[tags[0]]
        if error["type"] == "extra_forbidden":
            table = _table_at(model, raw[:-1])
            known = table.model_fields if table is not None else {}
            close = difflib.get_close_matches(str(loc[-1]), list(known), n=3)
            suggested.update((*loc[:-1], name) for name in close)
            arrays = {
                name
                for name in close
                if typing.get_origin(_unwrap(known[name].annotation, None)) is list
            }
            detail = _unknown(loc, error.get("input"), close, arrays)
        else:
            detail = _wording(error, _description(model, raw))
        said.append((tuple(loc), error["type"], detail))
    missing: dict[tuple[str | int, ...], list[str]] = {}
    for loc, kind, _ in said:
        if kind == "missing" and loc not in suggested:  # ``handel``: "did you mean handle?" says it
            missing.setdefault(loc[:-1], []).append(str(loc[-1]))
    out = []
    for loc, kind, detail in said:
        if kind == "missing":
            names = missing.pop(loc[:-1], [])
            if len(names) == 1:
                out.append((list(loc), _dotted(loc), detail))
            elif names:  # a table missing several: one line for it
                where, keys = list(loc[:-1]), ", ".join(names)
                out.append((where, _dotted(loc[:-1]), f"required keys are missing: {keys}"))
            continue
        out.append((list(loc), _dotted(loc) or "(top level)", detail))
    return out


_SHOWN = 20  # a lock edited beyond repair would list every field of every pin

_EXPECTED = {  # pydantic's error type → what was expected, in a person's words
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "an array",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}

_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _dotted(loc: tuple[str | int, ...]) -> str:
    """``models.bert.handle``, ``mirrors[0].prefix``; unprintable keys quoted, so a message
    stays on one line."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + (part if part.isprintable() else repr(part))
    return text


def _wording(error: Any, description: str | None = None) -> str:
    """What was expected and what was found, for one error other than an unknown key."""
    kind, ctx, given = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "missing":
        return "required key is missing"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])  # hubpin's own validators: their message is the whole story
    if kind in _EXPECTED:
        expected = _EXPECTED[kind]
    elif kind in ("enum", "literal_error") and "expected" in ctx:
        expected = f"one of {ctx['expected']}"
    elif description:
        expected = description
    elif kind == "string_pattern_mismatch":
        expected = f"text matching {ctx.get('pattern')}"
    elif kind.split("_")[0] in ("greater", "less") and ctx:
        bound, value = next(iter(ctx.items()))
        shown = f"{value:g}" if isinstance(value, (int, float)) else value
        expected = f"a number {_BOUNDS.get(bound, bound)} {shown}"
    else:  # a rarer constraint: pydantic's sentence, turned into ours
        message = re.sub(r"^(Input should be|Value error,|Assertion failed,)\s*", "", error["msg"])
        return f"expected {message}" if error["msg"].startswith("Input") else message
    return f"expected {expected}, found {_shown(given)}"


def _unknown(path: list[str | int], given: Any, close: list[str], arrays: set[str]) -> str:
    """An unknown key, or an unknown table (``[model.x]``), with the closest known names
    (``arrays``: those that are arrays of tables, written ``[[name]]``)."""
    loc = [str(part) for part in path]
    if isinstance(given, dict):
        # ``[model.x]`` holds one table; name it as the header the user wrote
        below = [key for key, value in given.items() if isinstance(value, dict)]
        sub = below[:1] if len(below) == 1 and len(given) == 1 else []
        hint = ", ".join(
            ("[[{}]]" if name in arrays else "[{}]").format(".".join([*loc[:-1], name, *sub]))
            for name in close
        )
        table = ".".join([*loc, *sub])
        return f"unknown table [{table}]" + (f"; did you mean {hint}?" if hint else "")
    if isinstance(given, list) and given and all(isinstance(item, dict) for item in given):
        hint = ", ".join(f"[[{'.'.join([*loc[:-1], name])}]]" for name in close)
        return f"unknown table [[{'.'.join(loc)}]]" + (f"; did you mean {hint}?" if hint else "")
    return "unknown key" + (f"; did you mean {', '.join(close)}?" if close else "")


def _shown(value: Any) -> str:
    """A found value as the file writes it (tables and arrays by their kind, not their bytes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def _table_at(model: type[BaseModel], loc: list[str | int]) -> type[BaseModel] | None:
    """The model of the table at ``loc`` (pydantic's path, union tags included), if one."""
    kind: Any = model
    for part in loc:
        kind = _step(kind, part)
        if kind is None:
            return None
    kind = _unwrap(kind, None)
    return kind if _is_model(kind) else None


def _description(model: type[BaseModel], loc: list[str | int]) -> str | None:
    """A field's own description of its values (``Field(description=…)``), if it has one."""
    table = _table_at(model, loc[:-1]) if loc else None
    field = table.model_fields.get(str(loc[-1])) if table is not None else None
    return field.description if field is not None else None


def _step(kind: Any, part: str | int) -> Any:
    """The type one key (or index, or union tag) below ``kind``."""
    kind = _unwrap(kind, part)
    if _is_model(kind):
        field = kind.model_fields.get(part)
        return field.annotation if field is not None else None
    origin = typing.get_origin(kind)
    if origin is dict:
        return typing.get_args(kind)[1]
    if origin is list:
        return typing.get_args(kind)[0]
    return None


def _unwrap(kind: Any, part: str | int | None) -> Any:
    """``kind`` without Optional and Annotated; a tagged union becomes the member named ``part``."""
    while True:
        origin = typing.get_origin(kind)
        if origin is typing.Annotated:
            kind = typing.get_args(kind)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [m for m in typing.get_args(kind) if m is not type(None)]
            tagged = [m for m in members if part is not None and _tag_of(m) == part]
            if tagged:
                return typing.get_args(tagged[0])[0]  # the member itself; ``part`` was its tag
            if len(members) != 1:
                return None
            kind = members[0]
        else:
            return kind


def _tag_of(member: Any) -> str | None:
    if typing.get_origin(member) is not typing.Annotated:
        return None
    return next((m.tag for m in typing.get_args(member)[1:] if hasattr(m, "tag")), None)


def _is_model(kind: Any) -> bool:
    from pydantic import BaseModel

    return isinstance(kind, type) and issubclass(kind, BaseModel)


def find_line(text: str, loc: list[str]) -> int | None:
    """Best-effort line number of a dotted key path such as ``models.bert.handle``.

    TOML parsers do not keep positions, so this looks for the table header that
    holds the key (``[models.bert]``) and then the key itself below it.
    """
    lines = text.splitlines()
    for split in range(len(loc), 0, -1):
        table, keys = loc[:split], loc[split:]
        header = _header_pattern(table)
        # ``mirrors.1.prefix``: the second ``[[mirrors]]`` table
        skip = 0
        if keys and keys[0].isdigit():
            skip, keys = int(keys[0]), keys[1:]
        for number, line in enumerate(lines, start=1):
            if not header.match(line):
                continue
            if skip:
                skip -= 1
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
