"""models.toml: the models a project uses, by alias, as people write them."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hubpin.atomic import write_atomic
from hubpin.errors import InputError, ManifestError, project_write_error
from hubpin.handles import Format, check_handle, meant_as_url
from hubpin.huggingface import is_hf_handle, parse_hf
from hubpin.kaggle.handle import parse_handle
from hubpin.kerashub import PREFIX as PRESET
from hubpin.kerashub import is_preset_handle, keras_hub_root
from hubpin.settings import Settings
from hubpin.tomlfile import empty_list, read_toml, tomllib, validate

ALIAS_RE = re.compile(r"[A-Za-z0-9_.-]+")


class ModelSpec(BaseModel):
    """One ``[models.<alias>]`` table."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    handle: str
    format: Format | None = None
    io_device: str | None = None
    tags: list[str] | None = None
    sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="64 lower-case hexadecimal digits (the archive's sha256)",
    )
    also: list[str] = Field(default_factory=empty_list)
    include: list[str] | None = None  # Hugging Face: the files to pin (default: all)
    exclude: list[str] | None = None  # Hugging Face: files not to pin

    @field_validator("format", mode="before")
    @classmethod
    def _format(cls, value: object) -> object:
        """``compressed`` is COMPRESSED, as ``hubpin add --format compressed`` and
        ``TFHUB_MODEL_LOAD_FORMAT`` take it."""
        return value.upper() if isinstance(value, str) else value

    @field_validator("handle")
    @classmethod
    def _handle(cls, value: str) -> str:
        problem = _problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("also")
    @classmethod
    def _also(cls, value: list[str]) -> list[str]:
        for handle in value:
            problem = _problem(handle)
            if problem:
                raise ValueError(f"{handle!r}: {problem}")
        return value

    @model_validator(mode="after")
    def _patterns(self) -> ModelSpec:
        if (self.include is not None or self.exclude is not None) and not is_hf_handle(self.handle):
            raise ValueError("include and exclude choose files of a Hugging Face repository only")
        return self

    def effective_format(self, settings: Settings) -> Format:
        """The model's own format, else the project's, else COMPRESSED; AUTO is COMPRESSED."""
        fmt = self.format or settings.format or Format.COMPRESSED
        return Format.COMPRESSED if fmt is Format.AUTO else fmt


def _problem(handle: str) -> str | None:
    """Why ``handle`` cannot be a handle (Kaggle's form included), or None."""
    problem = check_handle(handle)
    if is_preset_handle(handle) and keras_hub_root() is None:
        # mapped at lock time; sync and lock --check work from the lock without keras_hub
        return problem or (None if handle[len(PRESET) :] else "a keras-hub: handle names a preset")
    if problem is None:
        try:
            parse_hf(handle)
            parse_handle(handle)
        except InputError as exc:
            return str(exc)
    return problem


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    models: dict[str, ModelSpec] = Field(default_factory=dict)

    @field_validator("models")
    @classmethod
    def _aliases(cls, value: dict[str, ModelSpec]) -> dict[str, ModelSpec]:
        for alias in value:
            if not ALIAS_RE.fullmatch(alias):
                raise ValueError(f"alias {alias!r} must match [A-Za-z0-9_.-]+")
        return value


def load_manifest(path: Path) -> Manifest:
    data, text = read_toml(path, ManifestError, "create it or run: hubpin add ALIAS HANDLE")
    return validate(Manifest, data, path, text, ManifestError)


def add_model(path: Path, alias: str, handle: str, fmt: Format | None) -> None:
    """Append a model to the manifest, keeping the file's comments and layout."""
    manifest = load_manifest(path) if path.exists() else Manifest()
    if alias in manifest.models:
        raise ManifestError(
            f"{path}: alias {alias!r} is already defined (handle "
            f"{manifest.models[alias].handle}); edit the file to change it"
        )
    url = meant_as_url(handle)  # read as a relative path, it would fail later as not found
    if url is not None and not (path.parent / handle).exists():
        raise ManifestError(
            f"{path}: {alias}: handle {handle!r} looks like a URL but has no scheme, and "
            f"no such file is beside the manifest; for a URL run: hubpin add {alias} {url}"
        )
    table: dict[str, str] = {"handle": handle}
    if fmt is not None:
        table["format"] = fmt.value
    import tomli_w  # only `hubpin add` writes the manifest

    snippet = tomli_w.dumps({"models": {alias: table}})
    # The same checks, and the same messages, as for a hand-written entry.
    validate(Manifest, {"models": {alias: table}}, path, snippet, ManifestError)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if text and not text.endswith("\n"):
        text += "\n"
    _atomic_write(path, text + ("\n" if text else "") + snippet)  # all of it, or as it was


def remove_models(path: Path, aliases: list[str]) -> None:
    """Drop ``[models.<alias>]`` tables (or ``<alias> = …`` keys under ``[models]``) from the
    manifest, keeping every other byte of the file.

    A model's lines go with it: its table (or keys), the comments inside it, the
    comment block directly above it and one directly below its last line (not one
    that sits directly above the next table, which is that table's). Blank lines
    are taken so that the file keeps the spacing it had. The result is parsed
    again and must hold exactly the other models; if the layout is too unusual
    for that (``models = {…}`` on one line, say), nothing is written.
    """
    load_manifest(path)  # the one-line error for a broken file, before any edit
    text = path.read_text(encoding="utf-8")
    edited = text
    for alias in sorted(set(aliases)):  # one at a time: each sees the spacing the last one left
        lines = edited.splitlines(keepends=True)
        statements = _statements(lines, path)
        owned = [
            (start, end)
            for start, end, key in statements
            if len(key) >= 2 and key[0] == "models" and key[1] == alias
        ]
        drop: set[int] = set()
        for start, end in _spans(lines, statements, owned):
            drop.update(range(start, end))
        edited = "".join(line for number, line in enumerate(lines) if number not in drop)
    data = tomllib.loads(text)
    data.setdefault("models", {})
    for alias in aliases:
        data["models"].pop(alias, None)
    try:
        after = tomllib.loads(edited)
    except tomllib.TOMLDecodeError:
        after = None
    if after is None or {**after, "models": after.get("models", {})} != data:
        raise ManifestError(
            f"{path}: cannot remove {', '.join(aliases)} without disturbing the rest of the file "
            f"(an unusual layout); delete the {'tables' if len(aliases) > 1 else 'table'} by hand "
            "and run: hubpin lock"
        )
    _atomic_write(path, edited)


def _statements(lines: list[str], path: Path) -> list[tuple[int, int, tuple[str, ...]]]:
    """Each statement (table header or key/value) as (first line, end line, full key path).

    A statement ends at the first line where it parses on its own as TOML, so
    multi-line arrays and strings are one statement; the key path is the
    header's for a header, the current table's plus the key for a key/value.
    """
    found = []
    table: tuple[str, ...] = ()
    number = 0
    while number < len(lines):
        stripped = lines[number].strip()
        if not stripped or stripped.startswith("#"):
            number += 1
            continue
        for end in range(number + 1, len(lines) + 1):
            try:
                parsed = tomllib.loads("".join(lines[number:end]))
                break
            except tomllib.TOMLDecodeError:
                continue
        else:  # load_manifest parsed the whole file, so this cannot happen
            raise ManifestError(f"{path}:{number + 1}: cannot read this statement")
        key = _path_of(parsed)
        if stripped.startswith("["):
            table = key
            found.append((number, end, key))
        else:
            found.append((number, end, table + key))
        number = end
    return found


def _path_of(parsed: object) -> tuple[str, ...]:
    """The keys of a one-statement document, down to where it branches: ``[a.b]`` → (a, b)."""
    keys: list[str] = []
    while isinstance(parsed, dict) and len(parsed) == 1:
        key, parsed = next(iter(parsed.items()))
        keys.append(key)
        if isinstance(parsed, list) and parsed and isinstance(parsed[-1], dict):
            parsed = parsed[-1]  # [[a.b]]: an array of tables
    return tuple(keys)


def _spans(
    lines: list[str],
    statements: list[tuple[int, int, tuple[str, ...]]],
    owned: list[tuple[int, int]],
) -> list[tuple[int, int]]:
    """The line ranges to delete: runs of owned statements with their comments and spacing."""

    def blank(n: int) -> bool:
        return not lines[n].strip()

    def comment(n: int) -> bool:
        return lines[n].strip().startswith("#")

    owned_set = set(owned)
    starts = {start for start, _, _ in statements}
    runs: list[list[int]] = []  # [start, end] of consecutive owned statements
    previous_owned = False
    for start, end, _ in statements:
        is_owned = (start, end) in owned_set
        if is_owned and previous_owned:
            runs[-1][1] = end
        elif is_owned:
            runs.append([start, end])
        previous_owned = is_owned
    spans = []
    for start, end in runs:
        # The comment block directly above belongs to the model.
        while start > 0 and comment(start - 1):
            start -= 1
        # So does one directly below, unless it sits directly above the next statement.
        below = end
        while below < len(lines) and comment(below):
            below += 1
        if below == len(lines) or below not in starts:
            end = below
        # Keep the file's spacing: one of the blank runs around the span goes.
        after = end
        while after < len(lines) and blank(after):
            after += 1
        first = start
        while first > 0 and blank(first - 1):
            first -= 1
        if after == len(lines):  # the last thing in the file: drop the blank lines before it
            start, end = first, after
        elif start == 0 or first < start:  # at the top, or blank lines above: drop those below
            end = after
        spans.append((start, end))
    return spans


def _atomic_write(path: Path, text: str) -> None:
    try:
        write_atomic(path, text, keep_mode=True)
    except OSError as exc:
        raise project_write_error(
            exc, path.absolute(), "make it writable, or edit it where it can be written"
        ) from None
