"""Registry credentials, found where container tools keep them, and the auth challenge.

Files are read in the order skopeo and podman read them, then docker's:
``$REGISTRY_AUTH_FILE``, ``$XDG_RUNTIME_DIR/containers/auth.json``,
``$XDG_CONFIG_HOME/containers/auth.json`` (``~/.config``), then
``$DOCKER_CONFIG/config.json`` (``~/.docker/config.json``). In each, an ``auths``
entry for the registry (or for ``registry/repository`` prefixes, most specific
first, as containers-auth.json allows) gives ``auth`` (base64 ``user:password``),
``username``/``password`` or an ``identitytoken``; ``credHelpers`` and
``credsStore`` name a ``docker-credential-<helper>`` program asked with ``get``.

Credentials go only into request headers for the registry's own origin and its
token realm; they are never printed, logged or written anywhere.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hubpin.errors import InputError


@dataclass(frozen=True)
class Credentials:
    """A user and password, or an OAuth2 refresh token (docker's ``identitytoken``)."""

    username: str = ""
    password: str = ""
    identity_token: str = ""
    origin: str = ""  # the file or helper they came from (for messages; never the secret)

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def __repr__(self) -> str:  # never the secret, whatever prints this
        return f"Credentials(username={self.username!r}, origin={self.origin!r})"


def auth_files() -> list[Path]:
    """The files to look in, in order (only the ones named by the environment or defaults)."""
    home = Path(os.path.expanduser("~"))
    files = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        files.append(Path(os.environ["REGISTRY_AUTH_FILE"]))
    if os.environ.get("XDG_RUNTIME_DIR"):
        files.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    files.append(config_home / "containers" / "auth.json")
    files.append(Path(os.environ.get("DOCKER_CONFIG") or home / ".docker") / "config.json")
    return files


def _normalize(key: str) -> str:
    """An auths key as a ``host[/path]``: docker writes ``https://index.docker.io/v1/``."""
    key = re.sub(r"^[a-z]+://", "", key.strip()).rstrip("/")
    key = re.sub(r"/v[12]$", "", key)
    return "docker.io" if key in ("index.docker.io", "registry-1.docker.io") else key


def find_credentials(registry: str, repository: str) -> Credentials | None:
    """The credentials container tools would use for ``registry/repository``; None if none."""
    wanted = [f"{registry}/{repository}"]
    while "/" in wanted[-1]:
        wanted.append(wanted[-1].rpartition("/")[0])
    for path in auth_files():
        try:
            data = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            raise InputError(
                f"{path}: not a readable auth file ({exc}); fix or remove it"
            ) from None
        if not isinstance(data, dict):
            raise InputError(f"{path}: expected a JSON object with an 'auths' table")
        auths = {_normalize(k): v for k, v in (data.get("auths") or {}).items()}
        for key in wanted:
            entry = auths.get(key)
            if isinstance(entry, dict):
                found = _from_entry(entry, str(path))
                if found is not None:
                    return found
        helper = (data.get("credHelpers") or {}).get(registry) or data.get("credsStore")
        if helper:
            found = _from_helper(helper, registry)
            if found is not None:
                return found
    return None


def _from_entry(entry: dict[str, object], origin: str) -> Credentials | None:
    if entry.get("identitytoken"):
        return Credentials(identity_token=str(entry["identitytoken"]), origin=origin)
    if entry.get("auth"):
        try:
            user, _, password = base64.b64decode(str(entry["auth"])).decode().partition(":")
        except ValueError:
            raise InputError(f"{origin}: an 'auth' value is not base64 user:password") from None
        return Credentials(user, password, origin=origin)
    if entry.get("username"):
        return Credentials(str(entry["username"]), str(entry.get("password", "")), origin=origin)
    return None


def _from_helper(helper: str, registry: str) -> Credentials | None:
    """Ask ``docker-credential-<helper> get``, as docker does; None when it has nothing."""
    program = f"docker-credential-{helper}"
    try:
        done = subprocess.run(
            [program, "get"], input=registry, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    try:
        data = json.loads(done.stdout)
    except ValueError:
        return None
    user, secret = str(data.get("Username", "")), str(data.get("Secret", ""))
    if user == "<token>":
        return Credentials(identity_token=secret, origin=program)
    return Credentials(user, secret, origin=program) if user or secret else None


@dataclass(frozen=True)
class Challenge:
    """A ``WWW-Authenticate`` answer: ``Basic`` or ``Bearer`` with its parameters."""

    scheme: str  # "basic" or "bearer", lower-case
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge | None:
    """Parse ``Bearer realm="…",service="…",scope="…"`` (or ``Basic realm="…"``)."""
    scheme, _, rest = header.strip().partition(" ")
    if not scheme:
        return None
    params = {
        m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
        for m in re.finditer(r'(\w+)=(?:"([^"]*)"|([^,\s]*))', rest)
    }
    return Challenge(scheme.lower(), params)
