"""The Kaggle API calls hubpin makes (a variation's current version, a version's download
URL), as kagglehub 1.0.3 makes them, and what each refusal means in one line."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from hubpin.errors import FetchError
from hubpin.handles import strip_query
from hubpin.kaggle.endpoint import rpc_url

if TYPE_CHECKING:
    from hubpin.kaggle.credentials import Credentials
    from hubpin.kaggle.handle import KaggleHandle


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
            return FetchError(
                f"Kaggle model {name}: {what} on {where} (HTTP 404); check the handle in the "
                f"manifest against the model's page, {handle.page_url}"
            )
        return FetchError(f"Kaggle model {name}: the API at {where} answered HTTP {status}")


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return (value or "").lower() if name == "content-type" else (value or "")
