"""hubpin.toml and its precedence: flag > environment > hubpin.toml > default.

The defaults agree with tensorflow_hub (cache in ``$TMPDIR/tfhub_modules``,
format COMPRESSED) so that hubpin and unmodified ``hub.load`` share one cache
without any configuration.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hubpin.errors import SettingsError
from hubpin.handles import Format
from hubpin.paths import settings_path
from hubpin.tomlfile import empty_list, problems, read_toml, validate


class Mirror(BaseModel):
    """A URL prefix rewrite tried before the original location."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
    prefix: str
    replace: str


class Settings(BaseModel):
    """Every setting with its default; hubpin.toml.example documents each one."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    cache_dir: str | None = None
    format: Format | None = None
    jobs: int = Field(default_factory=lambda: min(8, max(2, os.cpu_count() or 2)), ge=1, le=64)
    connections: int = Field(default=4, ge=1, le=32)
    retries: int = Field(default=5, ge=0, le=100)
    connect_timeout: float = Field(default=10.0, gt=0)
    read_timeout: float = Field(default=60.0, gt=0)
    lock_timeout: float = Field(default=600.0, ge=0)
    lock_fills_cache: bool = True
    allow_http: bool = False
    ca_bundle: str | None = None
    max_unpacked_size: int = Field(default=64 * 2**30, gt=0)
    max_compression_ratio: float = Field(default=100.0, ge=1)
    max_members: int = Field(default=100_000, ge=1)
    gcs_project: str | None = None
    gcs_token: str | None = None
    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_profile: str | None = None
    s3_anonymous: bool = False
    s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"
    s3_part_size: int = Field(default=5 << 30, ge=5 << 20, le=5 << 30)
    stage_dir: str | None = None
    kaggle_endpoint: str | None = None
    mirrors: list[Mirror] = Field(default_factory=empty_list)
    insecure_registries: list[str] = Field(default_factory=empty_list)
    oci_mount_from: list[str] = Field(default_factory=empty_list)
    oci_chunk_size: int = Field(default=64 << 20, ge=4096)

    @property
    def cache_root(self) -> str:
        """The cache folder (or gs:// prefix); tensorflow_hub's default when unset.

        A folder is absolute, so ``hubpin env`` hands tensorflow_hub the folder
        hubpin means, wherever the process that reads it runs.
        """
        root = self.cache_dir or os.path.join(tempfile.gettempdir(), "tfhub_modules")
        return root if "://" in root else os.path.abspath(os.path.expanduser(root))


# Settings that name a file or folder: relative to hubpin.toml when written there.
_FILE_PATHS = ("cache_dir", "ca_bundle")

# Environment variables that tensorflow_hub reads, mapped to our settings.
_LISTS = ("mirrors", "insecure_registries", "oci_mount_from")  # set in hubpin.toml only
_TFHUB_ENV = {"cache_dir": "TFHUB_CACHE_DIR", "format": "TFHUB_MODEL_LOAD_FORMAT"}


def load_settings(project_dir: Path, overrides: dict[str, Any] | None = None) -> Settings:
    """Settings for a project: hubpin.toml beside the manifest, then env, then flags."""
    path = settings_path(project_dir)
    data: dict[str, Any] = {}
    text = ""
    if os.environ.get("HUBPIN_CONFIG") or path.is_file():
        data, text = read_toml(path, SettingsError, "set HUBPIN_CONFIG to an existing file")
    validate(Settings, data, path, text, SettingsError)
    for name in _FILE_PATHS:  # relative to hubpin.toml, not to wherever hubpin runs
        if isinstance(data.get(name), str) and "://" not in data[name]:
            data[name] = str(path.parent / Path(data[name]).expanduser())
    origin: dict[str, str] = {}
    for name in Settings.model_fields:
        for var in (_TFHUB_ENV.get(name), f"HUBPIN_{name.upper()}"):
            if var and os.environ.get(var) and name not in _LISTS:
                data[name], origin[name] = os.environ[var], f"environment variable {var}"
                break
    if origin.get("cache_dir") == "environment variable TFHUB_CACHE_DIR" and data[
        "cache_dir"
    ].startswith("~"):
        raise SettingsError(
            f"environment variable TFHUB_CACHE_DIR: {data['cache_dir']!r}: tensorflow_hub does "
            "not expand '~' (it would cache into a folder named '~' in the working folder); "
            'set it to an absolute path, e.g. export TFHUB_CACHE_DIR="$HOME/..."'
        )
    for name, value in (overrides or {}).items():
        if value is not None:
            data[name], origin[name] = value, f"option --{name.replace('_', '-')}"
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(
            "\n".join(
                f"{origin.get(str(loc[0]), path)}: {key}: {detail}"
                for loc, key, detail in problems(exc, Settings)
            )
        ) from None
