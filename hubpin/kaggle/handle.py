"""Kaggle model handles as kagglehub reads them (kagglehub/handle.py:170-200):
``kaggle:<owner>/<model>/<framework>/<variation>[/<version>]``, Kaggle's model URLs (and the
same paths on the configured API host), ``keras-hub:<preset>``; and the exact version a
lock pins for one."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from hubpin.errors import InputError
from hubpin.handles import strip_query
from hubpin.kaggle.endpoint import endpoint
from hubpin.kerashub import is_preset_handle, preset_kaggle_handle
from hubpin.storage.schemes import host_of, split

KAGGLE_WEB = "https://www.kaggle.com"
_KAGGLE_HOSTS = ("www.kaggle.com", "kaggle.com")
EXPECTED_FORM = (
    "expected kaggle:<owner>/<model>/<framework>/<variation>[/<version>] or "
    "https://www.kaggle.com/models/<owner>/<model>/<framework>/<variation>[/<version>]"
)
# Kaggle slugs; the first character is never "." so no part can be "." or ".." in a path.
_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# kagglesdk/models/types/model_enums.py:20-44 (ModelFramework), without "MODEL_FRAMEWORK_".
_FRAMEWORK_NAMES = (
    "TENSOR_FLOW_1 TENSOR_FLOW_2 TF_LITE TF_JS PY_TORCH JAX FLAX PAX "
    "MAX_TEXT GEMMA_CPP GGML GGUF CORAL SCIKIT_LEARN MXNET ONNX "
    "KERAS TRANSFORMERS API OTHER TENSOR_RT_LLM TRITON VLLM"
)
_FRAMEWORKS = tuple(_FRAMEWORK_NAMES.split())


def framework_enum(framework: str) -> str | None:
    """The API's enum name for a framework as written in a handle, or None if unknown.

    kagglehub maps ``tensorFlow2``, ``TensorFlow2``, ``tensorflow2`` and
    ``tensor_flow_2`` alike (kagglehub/enum.py:11-28: case and underscores are
    ignored); Kaggle's URLs write ``tensorFlow2``, ``tfLite``, ``pyTorch``...
    """
    key = framework.replace("_", "").upper().removeprefix("MODELFRAMEWORK")
    for name in _FRAMEWORKS:
        if name.replace("_", "") == key:
            return f"MODEL_FRAMEWORK_{name}"
    return None


@dataclass(frozen=True)
class KaggleHandle:
    """One Kaggle model variation, optionally at one version.

    The framework is kept as written: kagglehub names its cache folder with
    the handle's own spelling (``tensorFlow2`` and ``TensorFlow2`` are two
    folders), so it must survive to :func:`kagglehub_entry`.
    """

    owner: str
    model: str
    framework: str
    variation: str
    version: int | None = None

    def __post_init__(self) -> None:
        problem = _problem(self.owner, self.model, self.framework, self.variation, self.version)
        if problem is not None:
            raise ValueError(problem)

    @property
    def slug(self) -> str:
        """``owner/model/framework/variation``: the model variation, without a version."""
        return f"{self.owner}/{self.model}/{self.framework}/{self.variation}"

    @property
    def framework_enum(self) -> str:
        """The framework as the API wants it, e.g. ``MODEL_FRAMEWORK_TENSOR_FLOW_2``."""
        return framework_enum(self.framework) or ""

    def with_version(self, version: int) -> KaggleHandle:
        return KaggleHandle(self.owner, self.model, self.framework, self.variation, version)

    @property
    def kagglehub_handle(self) -> str:
        """What ``kagglehub.model_download`` takes: ``o/m/f/v/N`` (``o/m/f/v`` when unversioned)."""
        return self.slug if self.version is None else f"{self.slug}/{self.version}"

    @property
    def model_url(self) -> str:
        """The canonical model URL, ``https://www.kaggle.com/models/o/m/f/v/N``.

        tfhub.dev redirects to this form (with ``?tfhub-redirect=true``, which
        is not part of it), it is what people copy into ``hub.load``, and
        tensorflow_hub keys its cache by this exact string.
        """
        return f"{KAGGLE_WEB}/models/{self.kagglehub_handle}"

    @property
    def page_url(self) -> str:
        """The model's Kaggle page, where its terms are accepted (consent is per model)."""
        return f"{KAGGLE_WEB}/models/{self.owner}/{self.model}"

    def __str__(self) -> str:
        return f"kaggle:{self.kagglehub_handle}"


def _problem(
    owner: str, model: str, framework: str, variation: str, version: int | None
) -> str | None:
    """Why these parts are not a Kaggle model handle, or None: the one check of its parts."""
    for name, value in (("owner", owner), ("model", model), ("variation", variation)):
        if not _SLUG.fullmatch(value):
            return f"{name} {value!r} is not a Kaggle slug"
    if framework_enum(framework) is None:
        return (
            f"unknown Kaggle framework {framework!r} (e.g. tensorFlow2, tensorFlow1, "
            "tfLite, tfJs, keras, pyTorch, jax)"
        )
    if version is not None and (type(version) is not int or version < 1):
        return f"a Kaggle model version is a positive integer, not {version!r}"
    return None


def parse_handle(handle: str, endpoint: str | None = None) -> KaggleHandle | None:
    """The Kaggle model ``handle`` names, or None when it is not a Kaggle handle.

    Accepted: ``kaggle:o/m/f/v[/N]``; ``keras-hub:<preset>`` (:mod:`hubpin.kerashub`);
    ``https://www.kaggle.com/models/o/m/f/v[/N]``
    (also ``kaggle.com``, and the long form ``.../o/m/frameworks/f/variations/v/versions/N``
    that Kaggle's pages show); the same paths on ``endpoint``'s host (a test
    server or a company proxy). Query and fragment are ignored (tfhub.dev adds
    ``?tfhub-redirect=true``). A handle that is clearly meant for Kaggle but is
    malformed raises :class:`InputError` with the expected form.
    """
    if handle.startswith("kaggle:"):
        return _from_parts(handle[len("kaggle:") :].split("/"), handle, handle)
    if is_preset_handle(handle):  # keras-hub:<preset>: the version keras_hub maps it to
        mapped = preset_kaggle_handle(handle)
        return _from_parts(mapped[len("kaggle:") :].split("/"), mapped, f"{handle} ({mapped})")
    parts = split(handle)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        return None
    host = host_of(handle)
    on_kaggle = host in _KAGGLE_HOSTS
    on_endpoint = False
    if endpoint:
        ours = split(endpoint)
        on_endpoint = (
            scheme == ours.scheme.lower()
            and host == host_of(endpoint)
            and _port(parts) == _port(ours)
        )
    if not (on_kaggle or on_endpoint):
        return None
    shown = strip_query(handle)
    segments = parts.path.split("/")
    if segments[-1:] == [""]:
        segments.pop()  # one trailing slash
    if segments[:2] != ["", "models"]:
        if on_kaggle:
            raise InputError(f"{shown}: not a Kaggle model URL; {EXPECTED_FORM}")
        return None
    rest = segments[2:]
    if len(rest) >= 6 and rest[2] == "frameworks" and rest[4] == "variations":
        tail = rest[6:]
        if tail and (len(tail) != 2 or tail[0] != "versions"):
            raise InputError(f"{shown}: not a Kaggle model URL; {EXPECTED_FORM}")
        rest = [rest[0], rest[1], rest[3], rest[5], *tail[1:]]
    return _from_parts(rest, handle, shown)


def _from_parts(parts: list[str], handle: str, shown: str) -> KaggleHandle:
    if len(parts) not in (4, 5):
        raise InputError(
            f"{shown}: a Kaggle model handle has 4 parts and an optional version, "
            f"found {len(parts)}; {EXPECTED_FORM}"
        )
    owner, model, framework, variation = parts[:4]
    version: int | None = None
    if len(parts) == 5:
        if not parts[4].isdigit() or int(parts[4]) < 1:
            raise InputError(
                f"{shown}: the version must be a positive integer, not {parts[4]!r}; {EXPECTED_FORM}"
            )
        version = int(parts[4])
    problem = _problem(owner, model, framework, variation, version)
    if problem is not None:
        raise InputError(f"{shown}: {problem}; {EXPECTED_FORM}")
    return KaggleHandle(owner, model, framework, variation, version)


def _port(parts: urllib.parse.SplitResult) -> int:
    return parts.port or (443 if parts.scheme.lower() == "https" else 80)


def configured(handle: str, kaggle_endpoint: str | None) -> KaggleHandle | None:
    """The Kaggle model a manifest or lock handle names under the project's settings, if any."""
    return parse_handle(handle, endpoint(kaggle_endpoint))


def pinned(
    handle: str, version: int, kaggle_endpoint: str | None, versioned_handle: str | None = None
) -> KaggleHandle:
    """The exact version a lock pins for a Kaggle handle (the lock never says "latest").

    A ``keras-hub:<preset>`` handle is read from the lock's ``versioned_handle``, so
    sync needs no keras_hub installed (only lock, which maps the name, does).
    """
    if is_preset_handle(handle) and versioned_handle:
        handle = versioned_handle
    found = configured(handle, kaggle_endpoint)
    if found is None:
        raise InputError(
            f"{handle}: the lock pins Kaggle version {version} but this is not a Kaggle handle "
            "(check kaggle_endpoint in hubpin.toml); run: hubpin lock"
        )
    return found.with_version(version)
