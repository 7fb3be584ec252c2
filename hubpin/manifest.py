"""models.toml: the models a project uses, by alias, as people write them."""

from __future__ import annotations

import re
from pathlib import Path

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hubpin.errors import ManifestError
from hubpin.handles import Format, check_handle
from hubpin.settings import Settings
from hubpin.tomlfile import read_toml, validate

ALIAS_RE = re.compile(r"[A-Za-z0-9_.-]+")


class ModelSpec(BaseModel):
    """One ``[models.<alias>]`` table."""

    model_config = ConfigDict(extra="forbid")

    handle: str
    format: Format | None = None
    io_device: str | None = None
    tags: list[str] | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    also: list[str] = Field(default_factory=list)

    @field_validator("handle")
    @classmethod
    def _handle(cls, value: str) -> str:
        problem = check_handle(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("also")
    @classmethod
    def _also(cls, value: list[str]) -> list[str]:
        for handle in value:
            problem = check_handle(handle)
            if problem:
                raise ValueError(f"{handle!r}: {problem}")
        return value

    def effective_format(self, settings: Settings) -> Format:
        """The model's own format, else the project's, else COMPRESSED; AUTO is COMPRESSED."""
        fmt = self.format or settings.format or Format.COMPRESSED
        return Format.COMPRESSED if fmt is Format.AUTO else fmt


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

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
    table: dict[str, str] = {"handle": handle}
    if fmt is not None:
        table["format"] = fmt.value
    snippet = tomli_w.dumps({"models": {alias: table}})
    # The same checks, and the same messages, as for a hand-written entry.
    validate(Manifest, {"models": {alias: table}}, path, snippet, ManifestError)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if text and not text.endswith("\n"):
        text += "\n"
    path.write_text(text + ("\n" if text else "") + snippet, encoding="utf-8")
