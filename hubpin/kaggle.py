"""Kaggle Models as the installed kagglehub (1.0.3, on kagglesdk 0.1.38) sees them.

tfhub.dev now redirects every model to Kaggle Models, so a lock has to be able
to pin a Kaggle model's *version*, fetch gated models with the user's Kaggle
credentials, and leave the files where unmodified ``kagglehub.model_download``
finds them offline. Everything here follows kagglehub's own source rather
than Kaggle's documentation, because kagglehub is what users' code runs:

- handles: ``<owner>/<model>/<framework>/<variation>[/<version>]``
  (kagglehub/handle.py:170-200), written ``kaggle:...`` or as a model URL;
- the API: JSON POSTs to ``<endpoint>/api/v1/models.ModelApiService/<Method>``
  (``<endpoint>/v1/...`` on api.kaggle.com; kagglesdk/kaggle_http_client.py:288-294),
  camelCase fields, the framework as its enum name (kagglesdk/kaggle_object.py:36-58);
- credentials in kagglehub's order (kagglehub/config.py:62-103,
  kagglesdk/kaggle_env.py:91-115, kagglesdk/kaggle_http_client.py:264-286);
- kagglehub's cache is :mod:`hubpin.cache.kagglehub`.

No TensorFlow, no network at import; the HTTP layer is passed in (:class:`Request`).
"""

from __future__ import annotations

import base64
import json
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from hubpin.errors import FetchError, InputError
from hubpin.handles import strip_query
from hubpin.kerashub import is_preset_handle, preset_kaggle_handle
from hubpin.storage.schemes import split

# -- Handles ---------------------------------------------------------------------------

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
    host = (parts.hostname or "").lower()
    on_kaggle = host in _KAGGLE_HOSTS
    on_endpoint = False
    if endpoint:
        ours = split(endpoint)
        on_endpoint = (
            scheme == ours.scheme.lower()
            and host == (ours.hostname or "").lower()
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


# -- Where the API is ------------------------------------------------------------------

DEFAULT_ENDPOINT = "https://api.kaggle.com"
# kagglesdk/kaggle_env.py:24-31 and 45-59: kagglehub 1.x reads KAGGLE_API_ENVIRONMENT
# (not KAGGLE_API_ENDPOINT, which only kagglehub 0.x read) and maps it to these.
_ENVIRONMENTS = {
    "PROD": "https://api.kaggle.com",
    "LOCALHOST": "http://localhost",
    "STAGING": "https://staging.kaggle.com",
    "ADMIN": "https://admin.kaggle.com",
    "QA": "https://qa.kaggle.com",
    "TEST": "http://localhost:7777",
}


def endpoint(settings_value: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The Kaggle API's base URL, without a trailing slash.

    Precedence: ``settings_value`` (the caller's resolution of ``--kaggle-endpoint``,
    ``HUBPIN_KAGGLE_ENDPOINT`` and ``kaggle_endpoint`` in hubpin.toml), then
    ``KAGGLE_API_ENDPOINT`` (kagglehub 0.x, the Kaggle CLI), then
    ``KAGGLE_API_ENVIRONMENT`` as kagglehub 1.x reads it (``TEST`` is
    ``http://localhost:7777``), else kagglehub 1.x's default, ``https://api.kaggle.com``.
    A trailing ``/api/v1`` (the Kaggle CLI's form) is dropped.
    """
    env = os.environ if environ is None else environ
    for value, origin in (
        (settings_value, "kaggle_endpoint"),
        (env.get("KAGGLE_API_ENDPOINT"), "KAGGLE_API_ENDPOINT"),
    ):
        if value and value.strip():
            return _normal_endpoint(value.strip(), origin)
    name = env.get("KAGGLE_API_ENVIRONMENT")
    if name:
        if name not in _ENVIRONMENTS:
            raise InputError(
                f"KAGGLE_API_ENVIRONMENT={name!r}: expected one of {', '.join(_ENVIRONMENTS)}"
            )
        return _ENVIRONMENTS[name]
    return DEFAULT_ENDPOINT


def _normal_endpoint(value: str, origin: str) -> str:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InputError(
            f"{origin} = {strip_query(value)!r}: expected an http(s) URL such as {DEFAULT_ENDPOINT}"
        )
    if parts.query or parts.fragment or parts.password:
        raise InputError(f"{origin}: expected a plain base URL, without query or credentials")
    path = parts.path.rstrip("/")
    for suffix in ("/api/v1", "/v1"):
        path = path.removesuffix(suffix)
    return urllib.parse.urlunsplit((parts.scheme.lower(), parts.netloc, path, "", ""))


def rpc_url(endpoint: str, service: str, method: str) -> str:
    """Where kagglesdk POSTs ``service/method`` (kagglesdk/kaggle_http_client.py:288-294).

    api.kaggle.com serves ``/v1/...``; every other host (www.kaggle.com as older
    kagglesdk used it, staging, a local server) serves ``/api/v1/...``.
    """
    host = (urllib.parse.urlsplit(endpoint).hostname or "").lower()
    base = endpoint if host == "api.kaggle.com" else f"{endpoint}/api"
    return f"{base}/v1/{service}/{method}"


# -- Credentials -----------------------------------------------------------------------


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


# -- The API ---------------------------------------------------------------------------


class Request(Protocol):
    """One HTTP request, redirects not followed, transient failures already retried.

    ``hubpin.fetch.Fetcher.request`` is one. The answer is (status, headers, body).
    """

    def __call__(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str]
    ) -> tuple[int, Mapping[str, str], bytes]: ...


_SERVICE = "models.ModelApiService"


class KaggleApi:
    """The two calls hubpin needs, made the way kagglehub 1.0.3 makes them.

    Credentials go in the Authorization header of requests to the API host
    only; :meth:`download_url` hands back the signed storage URL the API
    redirects to, so the download itself never carries them.
    """

    def __init__(self, endpoint: str, credentials: Credentials | None, request: Request) -> None:
        self.endpoint = endpoint
        self.credentials = credentials
        self._request = request

    def current_version(self, handle: KaggleHandle) -> int:
        """The variation's current version: ``GetModelInstance``'s ``versionNumber``.

        This is what kagglehub does for an unversioned handle
        (kagglehub/http_resolver.py:208-210 and 389-402).
        """
        payload = {
            "ownerSlug": handle.owner,
            "modelSlug": handle.model,
            "framework": handle.framework_enum,
            "instanceSlug": handle.variation,
        }
        status, headers, body = self._call("GetModelInstance", payload)
        answer = self._json(status, headers, body, handle, versioned=False)
        version = answer.get("versionNumber")
        if type(version) is not int or version < 1:
            raise FetchError(
                f"Kaggle model {handle.slug}: the API's answer has no version number "
                f"(versionNumber = {version!r}) at {strip_query(self.endpoint)}"
            )
        return version

    def download_url(self, handle: KaggleHandle) -> str:
        """The URL to GET for exactly ``handle``'s version (a signed storage URL).

        ``DownloadModelInstanceVersion`` (kagglehub/http_resolver.py:522-537)
        answers with a redirect, which kagglesdk's requests session follows;
        here it is returned instead, so the HTTP layer fetches it without the
        API's credentials. It carries a signature in its query string: never
        print, log or record it whole (:func:`hubpin.handles.strip_query`).
        """
        if handle.version is None:
            raise ValueError(f"{handle}: pin a version before downloading")
        payload = {
            "ownerSlug": handle.owner,
            "modelSlug": handle.model,
            "framework": handle.framework_enum,
            "instanceSlug": handle.variation,
            "versionNumber": handle.version,
        }
        url = rpc_url(self.endpoint, _SERVICE, "DownloadModelInstanceVersion")
        status, headers, body = self._call("DownloadModelInstanceVersion", payload)
        location = _header(headers, "location")
        if status in (301, 302, 303, 307, 308) and location:
            target = urllib.parse.urljoin(url, location)
        elif status == 200 and "json" in _header(headers, "content-type"):
            # the HttpRedirect message itself (kagglesdk/common/types/http_redirect.py)
            target = str(self._json(status, headers, body, handle, versioned=True).get("url", ""))
        else:
            self._json(status, headers, body, handle, versioned=True)  # raises for errors
            target = ""
        if urllib.parse.urlsplit(target).scheme.lower() not in ("http", "https"):
            raise FetchError(
                f"Kaggle model {handle.kagglehub_handle}: expected a redirect to the archive "
                f"from {strip_query(url)}, got HTTP {status}"
            )
        return target

    def _call(
        self, method: str, payload: Mapping[str, object]
    ) -> tuple[int, Mapping[str, str], bytes]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.credentials is not None:
            headers |= self.credentials.headers()
        url = rpc_url(self.endpoint, _SERVICE, method)
        return self._request("POST", url, json.dumps(payload).encode(), headers)

    def _json(
        self,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        handle: KaggleHandle,
        *,
        versioned: bool,
    ) -> dict[str, object]:
        """The answer as JSON, or the one-line error its status (or its JSON ``code``) means.

        kagglesdk treats ``{"code": >= 400}`` in a JSON body as an error even
        under HTTP 200 (kaggle_http_client.py:124-134), so hubpin does too.
        """
        answer: object = None
        if "json" in _header(headers, "content-type") or body[:1] in (b"{", b"["):
            try:
                answer = json.loads(body or b"null")
            except ValueError:
                answer = None
        if isinstance(answer, dict) and isinstance(answer.get("code"), int) and status < 400:
            status = max(status, answer["code"])
        if status >= 400:
            raise self._error(status, handle, versioned=versioned)
        if not isinstance(answer, dict):
            raise FetchError(
                f"Kaggle model {handle.slug}: the API at {strip_query(self.endpoint)} answered "
                f"HTTP {status} without a JSON object"
            )
        return answer

    def _error(self, status: int, handle: KaggleHandle, *, versioned: bool) -> FetchError:
        """Why the API refused, what fixes it; never a credential."""
        name = handle.kagglehub_handle if versioned else handle.slug
        where = urllib.parse.urlsplit(self.endpoint).netloc
        creds = self.credentials
        if status in (401, 403) and creds is None:
            return FetchError(
                f"Kaggle model {name}: HTTP {status}: it needs Kaggle credentials: set "
                "KAGGLE_API_TOKEN, or KAGGLE_USERNAME and KAGGLE_KEY (or put kaggle.json in "
                f"~/.kaggle); if it is gated, also accept its terms on its Kaggle page, {handle.page_url}"
            )
        if status == 401 and creds is not None:
            return FetchError(
                f"Kaggle model {name}: HTTP 401: {where} refused the {creds.kind} from "
                f"{creds.source}; check it, or create a new token at "
                "https://www.kaggle.com/settings/api"
            )
        if status == 403 and creds is not None:
            return FetchError(
                f"Kaggle model {name}: HTTP 403: access denied for the {creds.kind} from "
                f"{creds.source}; its terms must be accepted on its Kaggle page, "
                f"{handle.page_url}, with that account (or the account lacks access)"
            )
        if status == 404:
            what = "no such model/version" if versioned else "no such model"
            return FetchError(f"Kaggle model {name}: {what} on {where} (HTTP 404)")
        return FetchError(f"Kaggle model {name}: the API at {where} answered HTTP {status}")


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return (value or "").lower() if name == "content-type" else (value or "")


# -- Pins ------------------------------------------------------------------------------


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
