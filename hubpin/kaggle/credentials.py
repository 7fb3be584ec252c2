"""Kaggle credentials, found where and in the order kagglehub 1.0.3 looks for them; they
go to the API host only (:meth:`Credentials.headers`) and never print."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hubpin.errors import InputError


@dataclass(frozen=True)
class Credentials:
    """Kaggle credentials and where they were found; printing them never shows a secret.

    A token (``KAGGLE_API_TOKEN``, ``~/.kaggle/access_token``) is sent as
    ``Authorization: Bearer <token>``; a username and key (``KAGGLE_USERNAME``/
    ``KAGGLE_KEY``, ``kaggle.json``) as HTTP Basic, as kagglesdk sends them
    (kaggle_http_client.py:255-284).
    """

    source: str
    token: str | None = field(default=None, repr=False)
    username: str | None = field(default=None, repr=False)
    key: str | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        return "bearer token" if self.token else "username and key"

    def headers(self) -> dict[str, str]:
        """The Authorization header for the Kaggle API host (and no other host)."""
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        pair = f"{self.username}:{self.key}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}

    def secrets(self) -> tuple[str, ...]:
        """The values that must never appear in output, a lock or a log (for scrubbing, tests)."""
        values = [self.token, self.key, *self.headers().values()]
        return tuple(v for v in values if v)

    def __repr__(self) -> str:
        return f"Credentials({self.kind} from {self.source})"

    __str__ = __repr__


def load_credentials(
    environ: Mapping[str, str] | None = None, home: Path | None = None
) -> Credentials | None:
    """Kaggle credentials from the first source kagglehub 1.0.3 would use, or None.

    In order (kagglesdk/kaggle_env.py:91-115, then kagglehub/config.py:74-101, then
    kagglesdk/kaggle_http_client.py:276-280):

    1. in a Kaggle notebook, the token file named by ``KAGGLE_API_V1_TOKEN``;
    2. ``KAGGLE_API_TOKEN``: the token, or the path of a file holding it;
    3. ``~/.kaggle/access_token``, then ``~/.kaggle/access_token.txt``;
    4. ``KAGGLE_USERNAME`` and ``KAGGLE_KEY`` (both set);
    5. ``kaggle.json`` (``username``, ``key``) in ``KAGGLE_CONFIG_DIR``, else ``~/.kaggle``;
       a malformed one is an error, as in kagglehub;
    6. ``~/.kaggle/kaggle.json`` even when ``KAGGLE_CONFIG_DIR`` points elsewhere
       (kagglesdk's own fallback; a malformed file is skipped there, so here too).

    Not read: Colab's ``userdata`` secrets (Colab only) and ``kagglehub.login()``
    (process memory). Values are stripped of surrounding whitespace, so a
    token file's newline or a pasted space cannot break the header.
    """
    env = os.environ if environ is None else environ
    home = Path(env.get("HOME") or Path.home()) if home is None else home
    kaggle_dir = home / ".kaggle"

    in_notebook = env.get("KAGGLE_KERNEL_RUN_TYPE") is not None
    if in_notebook and env.get("KAGGLE_DATA_PROXY_URL") is not None:
        token_path = env.get("KAGGLE_API_V1_TOKEN")
        if token_path and (token := _read_token(Path(token_path))):
            return Credentials(f"the file named by KAGGLE_API_V1_TOKEN ({token_path})", token)
    value = env.get("KAGGLE_API_TOKEN")
    if value:  # set: the access_token files are not looked at, even if it names an empty file
        if Path(value).exists():
            if token := _read_token(Path(value)):
                return Credentials(f"the file named by KAGGLE_API_TOKEN ({value})", token)
        elif value.strip():
            return Credentials("KAGGLE_API_TOKEN", value.strip())
    else:
        for name in ("access_token", "access_token.txt"):
            if token := _read_token(kaggle_dir / name):
                return Credentials(str(kaggle_dir / name), token)
    username, key = env.get("KAGGLE_USERNAME"), env.get("KAGGLE_KEY")
    if username and key:
        return Credentials("KAGGLE_USERNAME/KAGGLE_KEY", None, username.strip(), key.strip())
    config_dir = Path(env["KAGGLE_CONFIG_DIR"]) if "KAGGLE_CONFIG_DIR" in env else kaggle_dir
    found = _read_kaggle_json(config_dir / "kaggle.json", strict=True)
    if found is None and config_dir != kaggle_dir:
        found = _read_kaggle_json(kaggle_dir / "kaggle.json", strict=False)
    return found


def _read_token(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the Kaggle token: {exc.strerror}") from None


def _read_kaggle_json(path: Path, *, strict: bool) -> Credentials | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if not strict:
            return None
        raise InputError(f"{path}: cannot read Kaggle credentials: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError:
        if not strict:
            return None
        raise InputError(
            f'{path}: not valid JSON; expected {{"username": "...", "key": "..."}}'
        ) from None
    missing = [k for k in ("username", "key") if not isinstance(data, dict) or k not in data]
    if missing:
        if not strict:
            return None
        raise InputError(f"{path}: Kaggle credentials file without {' and '.join(missing)!r}")
    return Credentials(str(path), None, str(data["username"]).strip(), str(data["key"]).strip())
