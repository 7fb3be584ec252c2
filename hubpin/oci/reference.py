"""``oci://<registry>/<repository>[:<tag>][@sha256:<digest>]``: what hubpin accepts, checked.

The grammar is the OCI distribution spec's (and docker's reference package),
so a reference that skopeo or docker accepts means the same thing here.
``docker.io`` is Docker Hub, whose API lives at ``registry-1.docker.io`` and whose
one-part names are under ``library/``, as docker treats them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hubpin.errors import InputError

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(?::\d+)?")
EXAMPLE = "oci://registry.example.com/team/models:v1"


@dataclass(frozen=True)
class Reference:
    """A parsed ``oci://`` reference; ``tag`` and ``digest`` may both be set (digest wins)."""

    registry: str  # host[:port] as written (the key in auth files)
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def api_host(self) -> str:
        """The host the distribution API answers on."""
        return "registry-1.docker.io" if self.registry == "docker.io" else self.registry

    @property
    def ref(self) -> str:
        """What follows ``/manifests/``: the digest when known, else the tag."""
        return self.digest or self.tag or "latest"

    def blob(self, digest: str) -> str:
        """The ``oci://`` location of one blob of this repository (read by :mod:`hubpin.transport`)."""
        return f"oci://{self.registry}/{self.repository}@{digest}"

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"oci://{self.registry}/{self.repository}{tag}{digest}"


def parse(location: str, *, need_tag: bool = False) -> Reference:
    """Parse an ``oci://`` reference; InputError (exit 2) naming what is wrong with it."""
    rest = location[len("oci://") :] if location.lower().startswith("oci://") else ""
    host, _, path = rest.partition("/")
    digest = None
    if "@" in path:
        path, _, digest = path.partition("@")
        if not _DIGEST.fullmatch(digest):
            raise InputError(
                f"{location}: expected a digest sha256:<64 hex digits> after @, got {digest!r}"
            )
    repository, tag = path, None
    if ":" in path.rpartition("/")[2]:
        repository, _, tag = path.rpartition(":")
        if not _TAG.fullmatch(tag):
            raise InputError(f"{location}: {tag!r} is not a valid tag (letters, digits, _ . -)")
    if not host or not _HOST.fullmatch(host):
        raise InputError(
            f"{location}: expected oci://<registry>/<repository>:<tag>, e.g. {EXAMPLE}"
        )
    if not _REPOSITORY.fullmatch(repository):
        raise InputError(
            f"{location}: {repository!r} is not a valid repository name (lower-case "
            f"letters, digits and . _ - between them, parts separated by /), e.g. {EXAMPLE}"
        )
    if need_tag and tag is None:
        raise InputError(f"{location}: name the tag to write, e.g. {EXAMPLE}")
    if host == "docker.io" and "/" not in repository:
        repository = f"library/{repository}"
    return Reference(host, repository, tag, digest)
