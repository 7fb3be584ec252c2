"""Kaggle Models: handles, credentials, the API client, the host's checksums, kagglehub's cache.

Everything runs against tests/kaggleserver.py on loopback; the fidelity tests
run the *real* kagglehub 1.0.3 against the same stand-in, so what hubpin sends
and what kagglehub sends can be compared request by request.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import json
import logging
import os
import shutil
import socket
import tarfile
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import pytest
from kaggleserver import KaggleServer, gcs_hashes

from hubpin.cache.kagglehub import (
    in_kagglehub_cache,
    kagglehub_cache_root,
    kagglehub_entry,
    kagglehub_marker,
    publish_to_kagglehub,
)
from hubpin.checksums import Checker, Declared, crc32c_available, from_headers
from hubpin.errors import FetchError, InputError, IntegrityError, TruncatedError
from hubpin.fetch import Fetcher
from hubpin.kaggle.api import KaggleApi
from hubpin.kaggle.credentials import Credentials, load_credentials
from hubpin.kaggle.endpoint import endpoint, rpc_url
from hubpin.kaggle.handle import KaggleHandle, parse_handle
from hubpin.settings import Settings

SLUG = "google/affine/tensorFlow2/double"
TOKEN = "KGAT_7f3c0ffee5ecret70ken"
USER, KEY = "alice", "a11ce-k3y-5ecret"


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No Kaggle variable, proxy or real home leaks in; HOME is this test's folder."""
    for var in list(os.environ):
        if var.startswith(("KAGGLE", "HUBPIN_", "TFHUB_")) or var.lower().endswith("_proxy"):
            monkeypatch.delenv(var)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def kaggle(models) -> Iterator[KaggleServer]:
    """The stand-in on 127.0.0.1 (API) and 127.0.0.2 (storage), with one public model."""
    server = KaggleServer().start()
    server.add(SLUG, models["double"].archive)
    server.tokens[TOKEN] = USER
    server.users[USER] = KEY
    yield server
    server.stop()


@pytest.fixture
def kaggle7777(models, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[KaggleServer]:
    """The stand-in where kagglesdk's KAGGLE_API_ENVIRONMENT=TEST sends the real kagglehub."""
    try:
        server = KaggleServer(api_port=7777, api_name="localhost")
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            pytest.skip("port 7777 (kagglesdk's TEST environment) is in use by another process")
        raise
    server.start()
    server.add(SLUG, models["double"].archive)
    server.tokens[TOKEN] = USER
    server.users[USER] = KEY
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "TEST")
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    yield server
    server.stop()


@pytest.fixture
def fetcher() -> Iterator[Fetcher]:
    f = Fetcher(Settings(retries=3))
    yield f
    f.close()


@pytest.fixture(scope="session")
def many_files(models, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The "double" SavedModel plus 30 asset files: more than kagglehub's 25-file page."""
    from savedmodels import pack

    folder = tmp_path_factory.mktemp("many") / "model"
    shutil.copytree(models["double"].folder, folder)
    (folder / "assets").mkdir(exist_ok=True)
    for i in range(30):
        (folder / "assets" / f"vocab-{i:02d}.txt").write_text(f"token {i}\n")
    return pack(folder)


def fetch_checked(fetcher: Fetcher, url: str, **options: bool) -> tuple[bytes, Checker]:
    """Download ``url`` through the Fetcher, checking it against the declared checksums."""
    download = fetcher.open(url)
    checker = Checker(download.declared or Declared(), **options)
    parts = []
    for chunk in download.chunks:
        checker.update(chunk)
        parts.append(chunk)
    checker.check(f"test: {download.final_url}")
    return b"".join(parts), checker


def unpack(data: bytes, folder: Path) -> Path:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def assert_storage_got_no_credentials(server: KaggleServer, *secrets: str) -> None:
    storage = server.log("storage")
    assert storage, "nothing was downloaded from storage"
    for request in storage:
        assert "authorization" not in {k.lower() for k in request.headers}, request
        for secret in secrets:
            assert secret not in repr(request)


def compute(folder: str | Path, xs: list[float]) -> list[float]:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(folder))
    return [round(v, 5) for v in loaded(tf.constant(xs, dtype=tf.float32)).numpy().tolist()]


# -- handles -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "version"),
    [
        ("kaggle:google/affine/tensorFlow2/double", None),
        ("kaggle:google/affine/tensorFlow2/double/3", 3),
        ("https://www.kaggle.com/models/google/affine/tensorFlow2/double/3", 3),
        ("https://kaggle.com/models/google/affine/tensorFlow2/double", None),
        ("https://www.kaggle.com/models/google/affine/tensorFlow2/double/3/", 3),
        ("https://www.kaggle.com/models/google/affine/tensorFlow2/double/3?tfhub-redirect=true", 3),
        (
            "https://www.kaggle.com/models/google/affine/frameworks/tensorFlow2/variations/double/versions/3",
            3,
        ),
        (
            "https://www.kaggle.com/models/google/affine/frameworks/tensorFlow2/variations/double",
            None,
        ),
        ("http://127.0.0.1:8123/models/google/affine/tensorFlow2/double/3", 3),
    ],
)
def test_parse_accepts_the_forms_people_copy(written: str, version: int | None) -> None:
    handle = parse_handle(written, "http://127.0.0.1:8123")
    assert handle == KaggleHandle("google", "affine", "tensorFlow2", "double", version)
    assert handle.slug == SLUG
    assert handle.framework_enum == "MODEL_FRAMEWORK_TENSOR_FLOW_2"
    pinned = handle.with_version(7)
    assert pinned.version == 7 and handle.version == version  # frozen: a new handle
    assert pinned.kagglehub_handle == f"{SLUG}/7"
    assert pinned.model_url == f"https://www.kaggle.com/models/{SLUG}/7"
    assert pinned.page_url == "https://www.kaggle.com/models/google/affine"
    assert str(pinned) == f"kaggle:{SLUG}/7"


def test_parse_keeps_the_framework_spelling_kagglehub_caches_under() -> None:
    handle = parse_handle("kaggle:google/affine/TensorFlow2/double/1")
    assert handle is not None and handle.framework == "TensorFlow2"
    assert handle.framework_enum == "MODEL_FRAMEWORK_TENSOR_FLOW_2"
    assert kagglehub_entry(Path("/c"), handle) == Path(
        "/c/models/google/affine/TensorFlow2/double/1"
    )
    assert parse_handle("kaggle:o/m/pyTorch/v").framework_enum == "MODEL_FRAMEWORK_PY_TORCH"
    assert parse_handle("kaggle:o/m/tfLite/v").framework_enum == "MODEL_FRAMEWORK_TF_LITE"


@pytest.mark.parametrize(
    "other",
    [
        "https://tfhub.dev/google/spice/2",
        "https://storage.googleapis.com/kaggle-models-data/1/2/archive.tar.gz",
        "gs://bucket/model.tar.gz",
        "mirror/classifier.tar.gz",
        "file:///srv/models/x.tar.gz",
        "http://127.0.0.1:9999/models/google/affine/tensorFlow2/double/3",  # not the endpoint's port
        "http://127.0.0.1:8123/archives/google/spice/2.tar.gz",  # the endpoint's host, not a model
    ],
)
def test_parse_leaves_other_handles_alone(other: str) -> None:
    assert parse_handle(other, "http://127.0.0.1:8123") is None


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("kaggle:google/affine/tensorFlow2", "found 3"),
        ("kaggle:google/affine/tensorFlow2/double/3/extra", "found 6"),
        ("kaggle:google/affine/tensorFlow2/double/latest", "positive integer"),
        ("kaggle:google/affine/tensorFlow2/double/0", "positive integer"),
        ("kaggle:google/affine/tensorflow3/double", "unknown Kaggle framework 'tensorflow3'"),
        ("kaggle:google/../tensorFlow2/double", "not a Kaggle slug"),
        ("kaggle:google//tensorFlow2/double", "not a Kaggle slug"),
        ("https://www.kaggle.com/models/google/affine", "found 2"),
        ("https://www.kaggle.com/datasets/owner/data", "not a Kaggle model URL"),
        ("https://user:pw@www.kaggle.com/models/google/affine/tensorFlow2/x/y", "positive integer"),
    ],
)
def test_parse_rejects_malformed_kaggle_handles_in_one_line(bad: str, says: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_handle(bad, "http://127.0.0.1:8123")
    message = str(caught.value)
    assert says in message and "\n" not in message
    assert "expected kaggle:<owner>/<model>/<framework>/<variation>[/<version>]" in message
    assert "pw@" not in message and ":pw" not in message


def test_endpoint_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    assert endpoint(None) == "https://api.kaggle.com"  # kagglesdk 0.1.38's PROD
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "TEST")
    assert endpoint(None) == "http://localhost:7777"
    monkeypatch.setenv("KAGGLE_API_ENDPOINT", "https://www.kaggle.com/")
    assert endpoint(None) == "https://www.kaggle.com"
    assert endpoint("http://127.0.0.1:8123/api/v1") == "http://127.0.0.1:8123"
    assert endpoint("  ") == "https://www.kaggle.com"  # blank setting: not set
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "NOPE")
    monkeypatch.delenv("KAGGLE_API_ENDPOINT")
    with pytest.raises(InputError, match="KAGGLE_API_ENVIRONMENT='NOPE'"):
        endpoint(None)
    with pytest.raises(InputError, match="kaggle_endpoint"):
        endpoint("ftp://example.com")
    service = "models.ModelApiService"
    assert rpc_url("https://api.kaggle.com", service, "GetModelInstance") == (
        "https://api.kaggle.com/v1/models.ModelApiService/GetModelInstance"
    )
    assert rpc_url("https://www.kaggle.com", service, "GetModelInstance") == (
        "https://www.kaggle.com/api/v1/models.ModelApiService/GetModelInstance"
    )


# -- credentials -------------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# (name, setup(home, tmp, monkeypatch), expected Authorization header or None, source contains)
_BEARER = f"Bearer {TOKEN}"
_BASIC = "Basic " + base64.b64encode(f"{USER}:{KEY}".encode()).decode()
CREDENTIAL_CASES = {
    "KAGGLE_API_TOKEN": (lambda h, t, m: m.setenv("KAGGLE_API_TOKEN", TOKEN), _BEARER),
    "KAGGLE_API_TOKEN names a file": (
        lambda h, t, m: m.setenv("KAGGLE_API_TOKEN", str(_write(t / "tok", TOKEN + "\n"))),
        _BEARER,
    ),
    "~/.kaggle/access_token": (lambda h, t, m: _write(h / ".kaggle/access_token", TOKEN), _BEARER),
    "KAGGLE_USERNAME/KAGGLE_KEY": (
        lambda h, t, m: (m.setenv("KAGGLE_USERNAME", USER), m.setenv("KAGGLE_KEY", KEY)),
        _BASIC,
    ),
    "kaggle.json in KAGGLE_CONFIG_DIR": (
        lambda h, t, m: m.setenv(
            "KAGGLE_CONFIG_DIR",
            str(_write(t / "cfg/kaggle.json", json.dumps({"username": USER, "key": KEY})).parent),
        ),
        _BASIC,
    ),
    "~/.kaggle/kaggle.json": (
        lambda h, t, m: _write(
            h / ".kaggle/kaggle.json", json.dumps({"username": USER, "key": KEY})
        ),
        _BASIC,
    ),
    "a token beats a username and key": (
        lambda h, t, m: (
            m.setenv("KAGGLE_USERNAME", "bob"),
            m.setenv("KAGGLE_KEY", "bobs-key"),
            m.setenv("KAGGLE_API_TOKEN", TOKEN),
        ),
        _BEARER,
    ),
    "the environment beats kaggle.json": (
        lambda h, t, m: (
            _write(h / ".kaggle/kaggle.json", json.dumps({"username": "bob", "key": "bobs-key"})),
            m.setenv("KAGGLE_USERNAME", USER),
            m.setenv("KAGGLE_KEY", KEY),
        ),
        _BASIC,
    ),
    "nothing": (lambda h, t, m: None, None),
}


@pytest.mark.parametrize("case", list(CREDENTIAL_CASES))
def test_credentials_from_each_source_as_kagglehub_sends_them(
    case: str,
    kaggle7777: KaggleServer,
    clean_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fetcher: Fetcher,
) -> None:
    """hubpin's Authorization header equals the one the real kagglehub sends, source by source."""
    import kagglehub

    setup, expected = CREDENTIAL_CASES[case]
    setup(clean_env, tmp_path, monkeypatch)
    creds = load_credentials()
    assert (creds.headers()["Authorization"] if creds else None) == expected

    kagglehub.model_download(f"{SLUG}/1")
    theirs = {r.headers.get("Authorization") for r in kaggle7777.log("api")}
    assert theirs == {expected}

    before = len(kaggle7777.log("api"))
    api = KaggleApi(endpoint(None), creds, fetcher.request)
    assert api.current_version(parse_handle(f"kaggle:{SLUG}")) == 1
    ours = {r.headers.get("Authorization") for r in kaggle7777.log("api")[before:]}
    assert ours == {expected}
    if creds is not None:
        shown = f"{creds!r} {creds!s} {creds.source}"
        assert TOKEN not in shown and KEY not in shown and "Basic " not in shown


def test_malformed_kaggle_json_is_one_line_without_the_key(tmp_path: Path, clean_env: Path) -> None:
    path = _write(clean_env / ".kaggle/kaggle.json", json.dumps({"username": USER}))
    with pytest.raises(InputError, match="without 'key'") as caught:
        load_credentials()
    assert str(path) in str(caught.value)
    path.write_text('{"username": "alice", "key": "a11ce-k3y-5ecret"')  # cut short
    with pytest.raises(InputError, match="not valid JSON") as caught:
        load_credentials()
    assert KEY not in str(caught.value) and "\n" not in str(caught.value)


def test_an_empty_token_file_falls_through_as_in_kagglesdk(
    tmp_path: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KAGGLE_API_TOKEN naming an empty file: no token, and ~/.kaggle/access_token is not read."""
    monkeypatch.setenv("KAGGLE_API_TOKEN", str(_write(tmp_path / "empty", "")))
    _write(clean_env / ".kaggle/access_token", "unused-token")
    assert load_credentials() is None
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    assert load_credentials() == Credentials("KAGGLE_USERNAME/KAGGLE_KEY", None, USER, KEY)


# -- the API client ----------------------------------------------------------------------


def test_current_version_follows_a_version_bump(
    kaggle: KaggleServer, fetcher: Fetcher, models
) -> None:
    api = KaggleApi(kaggle.url, None, fetcher.request)
    handle = parse_handle(f"{kaggle.url}/models/{SLUG}", kaggle.url)
    assert api.current_version(handle) == 1
    assert kaggle.bump(SLUG, models["triple"].archive) == 2
    assert api.current_version(handle) == 2
    # the pinned version stays downloadable, and each version is its own bytes
    one, _ = fetch_checked(fetcher, api.download_url(handle.with_version(1)))
    two, _ = fetch_checked(fetcher, api.download_url(handle.with_version(2)))
    assert one == models["double"].archive and two == models["triple"].archive
    # the REST form kagglehub 0.x used answers the same
    status, _, body = fetcher.request("GET", f"{kaggle.url}/api/v1/models/{SLUG}/get")
    assert status == 200 and json.loads(body)["versionNumber"] == 2
    call = json.loads(kaggle.log("api")[0].body)
    assert call == {
        "ownerSlug": "google",
        "modelSlug": "affine",
        "framework": "MODEL_FRAMEWORK_TENSOR_FLOW_2",
        "instanceSlug": "double",
    }


def test_download_url_is_signed_storage_on_another_host(
    kaggle: KaggleServer, fetcher: Fetcher
) -> None:
    api = KaggleApi(kaggle.url, None, fetcher.request)
    url = api.download_url(parse_handle(f"kaggle:{SLUG}/1"))
    assert url.startswith(kaggle.storage_url + "/kaggle-models-data/")
    assert "X-Goog-Signature=" in url
    assert "127.0.0.2" in url and "127.0.0.2" not in kaggle.url
    unsigned = url.split("?")[0]
    with pytest.raises(FetchError, match="HTTP 403"):
        fetcher.open(unsigned)  # storage checks the signature, as GCS does


def test_private_model_needs_credentials(kaggle: KaggleServer, fetcher: Fetcher, models) -> None:
    kaggle.add("acme/secret/tensorFlow2/v1", models["quint"].archive, private=True)
    handle = parse_handle("kaggle:acme/secret/tensorFlow2/v1")
    anonymous = KaggleApi(kaggle.url, None, fetcher.request)
    with pytest.raises(FetchError) as caught:
        anonymous.current_version(handle)
    message = str(caught.value)
    assert message.startswith("Kaggle model acme/secret/tensorFlow2/v1: HTTP 401")
    assert "set KAGGLE_API_TOKEN, or KAGGLE_USERNAME and KAGGLE_KEY" in message
    assert "\n" not in message

    wrong = Credentials("KAGGLE_API_TOKEN", "not-the-token")
    with pytest.raises(FetchError) as caught:
        KaggleApi(kaggle.url, wrong, fetcher.request).current_version(handle)
    assert "refused the bearer token from KAGGLE_API_TOKEN" in str(caught.value)
    assert "not-the-token" not in str(caught.value)

    for creds in (
        Credentials("KAGGLE_API_TOKEN", TOKEN),
        Credentials("kaggle.json", None, USER, KEY),
    ):
        api = KaggleApi(kaggle.url, creds, fetcher.request)
        assert api.current_version(handle) == 1
        data, _ = fetch_checked(fetcher, api.download_url(handle.with_version(1)))
        assert data == models["quint"].archive
    assert_storage_got_no_credentials(kaggle, TOKEN, KEY)


def test_gated_model_names_its_page_until_the_terms_are_accepted(
    kaggle: KaggleServer, fetcher: Fetcher, models
) -> None:
    kaggle.add("acme/gemma/keras/2b", models["triple"].archive, gated=True)
    handle = parse_handle("https://www.kaggle.com/models/acme/gemma/keras/2b/1")
    creds = Credentials("KAGGLE_USERNAME/KAGGLE_KEY", None, USER, KEY)
    api = KaggleApi(kaggle.url, creds, fetcher.request)
    assert api.current_version(handle) == 1  # the metadata is public
    with pytest.raises(FetchError) as caught:
        api.download_url(handle)
    message = str(caught.value)
    assert message.startswith("Kaggle model acme/gemma/keras/2b/1: HTTP 403")
    assert (
        "terms must be accepted on its Kaggle page, https://www.kaggle.com/models/acme/gemma"
        in message
    )
    assert KEY not in message and "\n" not in message
    with pytest.raises(FetchError, match=r"needs Kaggle credentials.*accept its terms"):
        KaggleApi(kaggle.url, None, fetcher.request).download_url(handle)

    kaggle.accept("acme/gemma/keras/2b", USER)
    data, _ = fetch_checked(fetcher, api.download_url(handle))
    assert data == models["triple"].archive
    assert_storage_got_no_credentials(kaggle, KEY)


def test_no_secret_in_any_message_or_log(
    kaggle: KaggleServer,
    fetcher: Fetcher,
    models,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """Refusals, retries, warnings and a download: no token, key or URL signature is ever shown."""
    # What the CLI shows is hubpin's logger (it stops propagation there, so listen on it);
    # urllib3's own DEBUG log, off unless someone turns the root logger up, prints whole URLs.
    records: list[logging.LogRecord] = []
    listener = logging.Handler(logging.DEBUG)
    listener.emit = records.append  # type: ignore[method-assign]
    hubpin_log = logging.getLogger("hubpin")
    monkeypatch.setattr(hubpin_log, "level", logging.DEBUG)
    hubpin_log.addHandler(listener)
    request.addfinalizer(lambda: hubpin_log.removeHandler(listener))
    kaggle.add("acme/gated/tensorFlow2/v", models["triple"].archive, gated=True, private=True)
    handle = parse_handle("kaggle:acme/gated/tensorFlow2/v/1")
    shown: list[str] = []
    for creds in (
        Credentials("KAGGLE_API_TOKEN", "wr0ng-t0ken"),
        Credentials("kaggle.json", None, USER, KEY),
    ):
        shown.append(repr(creds))
        with pytest.raises(FetchError) as caught:
            KaggleApi(kaggle.url, creds, fetcher.request).download_url(handle)
        shown.append(str(caught.value))
    kaggle.accept("acme/gated/tensorFlow2/v", USER)
    api = KaggleApi(kaggle.url, Credentials("kaggle.json", None, USER, KEY), fetcher.request)
    kaggle.throttle.times, kaggle.throttle.where, kaggle.throttle.status = 1, "storage", 503
    url = api.download_url(handle)
    signature = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["X-Goog-Signature"][0]
    download = fetcher.open(url)
    shown.append(download.final_url)
    assert b"".join(download.chunks) == models["triple"].archive
    kaggle.model("acme/gated/tensorFlow2/v").corrupt.add(1)
    with pytest.raises(IntegrityError) as caught:
        fetch_checked(fetcher, api.download_url(handle))
    shown.append(str(caught.value))
    out, err = capsys.readouterr()
    logged = "\n".join(r.getMessage() for r in records)
    everything = "\n".join([*shown, logged, out, err])
    assert "retrying" in logged  # the 503 was logged...
    for secret in ("wr0ng-t0ken", KEY, _BASIC.split()[1], signature, "X-Goog-Signature"):
        assert secret not in everything  # ...without the signed query


def test_missing_model_or_version_is_a_404_message(kaggle: KaggleServer, fetcher: Fetcher) -> None:
    api = KaggleApi(kaggle.url, None, fetcher.request)
    with pytest.raises(
        FetchError, match=r"google/nothing/tensorFlow2/x: no such model on 127\.0\.0\.1"
    ):
        api.current_version(parse_handle("kaggle:google/nothing/tensorFlow2/x"))
    with pytest.raises(
        FetchError,
        match=rf"{SLUG}/9: no such model/version .*HTTP 404\); check the handle in the manifest "
        r"against the model's page, https://www\.kaggle\.com/models/google/affine$",
    ):
        api.download_url(parse_handle(f"kaggle:{SLUG}/9"))


def test_host_headers_reach_the_api_host_only(
    kaggle: KaggleServer, fetcher: Fetcher, models
) -> None:
    """Credentials given for the API host are sent there, never to the redirect's storage host."""
    kaggle.add("acme/gemma/keras/2b", models["triple"].archive, gated=True)
    kaggle.accept("acme/gemma/keras/2b", USER)
    fetcher.add_host_headers(kaggle.url, Credentials("t", TOKEN).headers())
    for url in (
        f"{kaggle.url}/api/v1/models/acme/gemma/keras/2b/1/download",  # the REST form, GET + 302
        f"{kaggle.url}/models/acme/gemma/keras/2b/1?tf-hub-format=compressed",  # tensorflow_hub's
    ):
        data, _ = fetch_checked(fetcher, url)
        assert data == models["triple"].archive
    api = kaggle.log("api")
    assert [r.headers.get("Authorization") for r in api] == [_BEARER, _BEARER]
    assert_storage_got_no_credentials(kaggle, TOKEN)


# -- rate limits -------------------------------------------------------------------------


def test_429_retry_after_is_honoured_and_counted(kaggle: KaggleServer, fetcher: Fetcher) -> None:
    kaggle.throttle.times, kaggle.throttle.retry_after = 2, "1"
    api = KaggleApi(kaggle.url, None, fetcher.request)
    started = time.monotonic()
    assert api.current_version(parse_handle(f"kaggle:{SLUG}")) == 1
    elapsed = time.monotonic() - started
    calls = [r for r in kaggle.log("api") if r.path.endswith("/GetModelInstance")]
    assert [r.status for r in calls] == [429, 429, 200]
    assert elapsed >= 1.9  # waited as told, twice
    assert calls[1].at - calls[0].at >= 0.95 and calls[2].at - calls[1].at >= 0.95

    kaggle.throttle.times = 10
    fetcher.settings.retries = 2
    with pytest.raises(FetchError, match=r"HTTP 429 .*gave up after 3 tries"):
        api.current_version(parse_handle(f"kaggle:{SLUG}"))


def test_503_with_an_http_date_on_storage(kaggle: KaggleServer, fetcher: Fetcher, models) -> None:
    url = KaggleApi(kaggle.url, None, fetcher.request).download_url(
        parse_handle(f"kaggle:{SLUG}/1")
    )
    kaggle.throttle.times, kaggle.throttle.status, kaggle.throttle.where = 1, 503, "storage"
    kaggle.throttle.retry_after = formatdate(time.time() + 2, usegmt=True)
    started = time.monotonic()
    data, _ = fetch_checked(fetcher, url)
    assert data == models["double"].archive
    assert [r.status for r in kaggle.log("storage")] == [503, 200]
    assert time.monotonic() - started >= 0.9  # an HTTP date has a 1 s resolution


def test_retry_after_is_capped(kaggle: KaggleServer, fetcher: Fetcher) -> None:
    kaggle.throttle.times, kaggle.throttle.retry_after = 1, "3600"
    fetcher.retry_after_cap = 0.3
    started = time.monotonic()
    assert (
        KaggleApi(kaggle.url, None, fetcher.request).current_version(parse_handle(f"kaggle:{SLUG}"))
        == 1
    )
    assert 0.25 <= time.monotonic() - started < 5


def test_parallel_jobs_all_wait_for_a_hosts_retry_after(
    kaggle: KaggleServer, fetcher: Fetcher
) -> None:
    """One job is told to wait; another job's request to that host waits too instead of hammering."""
    kaggle.throttle.times, kaggle.throttle.retry_after = 1, "1"
    api = KaggleApi(kaggle.url, None, fetcher.request)
    handle = parse_handle(f"kaggle:{SLUG}")
    first = threading.Thread(target=api.current_version, args=(handle,))
    first.start()
    while not kaggle.log("api"):
        time.sleep(0.01)
    time.sleep(0.2)  # the first job has read its 429 by now
    assert api.current_version(handle) == 1  # the second job, started after the 429
    first.join()
    calls = kaggle.log("api")
    assert [r.status for r in calls] == [429, 200, 200]
    assert min(r.at for r in calls[1:]) - calls[0].at >= 0.95


# -- the host's checksums ----------------------------------------------------------------


@pytest.mark.parametrize("joint", [False, True], ids=["two X-Goog-Hash headers", "one joined"])
def test_declared_checksums_match_a_good_body(
    kaggle: KaggleServer, fetcher: Fetcher, models, joint: bool
) -> None:
    kaggle.joint_hash_header = joint
    url = KaggleApi(kaggle.url, None, fetcher.request).download_url(
        parse_handle(f"kaggle:{SLUG}/1")
    )
    archive = models["double"].archive
    crc, md5 = gcs_hashes(archive)
    data, checker = fetch_checked(fetcher, url, md5=True)
    assert data == archive
    assert checker.declared == Declared(len(archive), crc, md5)
    assert checker.computed() == Declared(len(archive), crc, md5)
    assert checker.checks == ["length", "crc32c", "md5"]
    _, default = fetch_checked(fetcher, url)
    assert default.checks == ["length", "crc32c"]  # md5 only where crc32c cannot be checked


def test_a_corrupt_body_is_caught_naming_both_checksums(
    kaggle: KaggleServer, fetcher: Fetcher, models
) -> None:
    kaggle.model(SLUG).corrupt.add(1)
    url = KaggleApi(kaggle.url, None, fetcher.request).download_url(
        parse_handle(f"kaggle:{SLUG}/1")
    )
    crc, md5 = gcs_hashes(models["double"].archive)
    for md5_too in (False, True):
        with pytest.raises(IntegrityError) as caught:
            fetch_checked(fetcher, url, md5=md5_too)
        message = str(caught.value)
        assert "corrupt download" in message and "\n" not in message
        assert f"crc32c={crc}" in message  # declared
        assert message.count("crc32c=") == 2  # and computed
        assert (f"md5={md5}" in message) == md5_too
        assert "X-Goog-Signature" not in message


def test_from_headers_reads_every_form() -> None:
    crc, md5 = gcs_hashes(b"hello")
    assert from_headers({"Content-Length": "5", "X-Goog-Hash": f"crc32c={crc},md5={md5}"}) == (
        Declared(5, crc, md5)
    )
    pairs = [
        ("content-length", "5"),
        ("x-goog-hash", f"crc32c={crc}"),
        ("X-GOOG-HASH", f"md5={md5}"),
    ]
    assert from_headers(pairs) == Declared(5, crc, md5)
    ranged = {"Content-Length": "2", "Content-Range": "bytes 3-4/5", "X-Goog-Hash": f"crc32c={crc}"}
    assert from_headers(ranged) == Declared(5, crc, None)  # the whole object's
    transcoded = {"X-Goog-Stored-Content-Encoding": "gzip", "X-Goog-Hash": f"crc32c={crc}"}
    assert (
        from_headers(transcoded) == Declared()
    )  # GCS gunzipped it: the hashes are the stored bytes'
    assert from_headers({"X-Goog-Hash": "crc32c=%%%,md5=short"}) == Declared()  # ignored, not fatal
    with pytest.raises(IntegrityError, match="two different crc32c"):
        from_headers([("x-goog-hash", f"crc32c={crc}"), ("x-goog-hash", "crc32c=AAAAAA==")])


def test_checker_tells_truncation_from_corruption() -> None:
    data = b"0123456789"
    crc, md5 = gcs_hashes(data)
    short = Checker(Declared(10, crc, md5))
    short.update(data[:4])
    with pytest.raises(TruncatedError, match="got 4 of the 10 bytes"):
        short.check("x")
    longer = Checker(Declared(10, None, None))
    longer.update(data + b"!")
    with pytest.raises(IntegrityError, match=r"declared 10 bytes .* have 11 bytes"):
        longer.check("x")
    good = Checker(Declared(10, crc, md5), md5=True)
    good.update(memoryview(data)[:5])
    good.update(bytearray(data[5:]))
    good.check("x")


def test_without_google_crc32c_md5_is_checked_instead(tmp_path: Path) -> None:
    from conftest import run_python

    crc, md5 = gcs_hashes(b"payload")
    out = run_python(
        "import sys; sys.modules['google_crc32c'] = None\n"
        "from hubpin.checksums import Checker, Declared, crc32c_available\n"
        f"c = Checker(Declared(7, {crc!r}, {md5!r})); c.update(b'payload'); c.check('x')\n"
        "bad = Checker(Declared(7, None, 'AAAAAAAAAAAAAAAAAAAAAA==')); bad.update(b'payload')\n"
        "try:\n    bad.check('x')\nexcept Exception as e:\n    print(type(e).__name__)\n"
        "print(crc32c_available(), c.checks)\n",
        env={"PYTHONPATH": str(Path(__file__).parents[1])},
    )
    assert out.split() == ["IntegrityError", "False", "['length',", "'md5']"]
    assert crc32c_available()  # in this environment the compiled one is installed


# -- the real kagglehub against the stand-in ----------------------------------------------


def test_real_kagglehub_downloads_from_the_stand_in(
    kaggle7777: KaggleServer,
    models,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fetcher: Fetcher,
) -> None:
    """Unversioned and versioned, file by file (≤ 25 files) as kagglehub does, then loads."""
    import kagglehub

    pytest.importorskip("tensorflow")
    path = Path(kagglehub.model_download(SLUG))
    root = tmp_path / "kagglehub"
    assert path == root / "models" / SLUG / "1"
    assert (path / "saved_model.pb").is_file() and (
        path / "variables" / "variables.index"
    ).is_file()
    assert (root / "models" / "google/affine/tensorFlow2/double/1.complete").exists()
    assert compute(path, [1.0, 2.0]) == models["double"].expected([1.0, 2.0])

    kaggle7777.bump(SLUG, models["triple"].archive)
    path2 = Path(kagglehub.model_download(SLUG))
    assert path2.name == "2" and compute(path2, [1.0]) == models["triple"].expected([1.0])
    assert Path(kagglehub.model_download(f"{SLUG}/1")) == path  # versioned: from its cache

    # hubpin asks exactly what kagglehub asked
    theirs = [r for r in kaggle7777.log("api") if r.path.endswith("/GetModelInstance")]
    before = len(kaggle7777.log("api"))
    KaggleApi(endpoint(None), None, fetcher.request).current_version(parse_handle(f"kaggle:{SLUG}"))
    ours = kaggle7777.log("api")[before:]
    assert (
        [r.path for r in ours]
        == [theirs[0].path]
        == ["/api/v1/models.ModelApiService/GetModelInstance"]
    )
    assert json.loads(ours[0].body) == json.loads(theirs[0].body)
    assert {r.method for r in ours} == {r.method for r in theirs} == {"POST"}


def test_real_kagglehub_with_credentials_and_the_archive(
    kaggle7777: KaggleServer, many_files: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A private model with a bearer token, a gated one with HTTP Basic; > 25 files: the archive."""
    import kagglehub

    kaggle7777.add("acme/private/tensorFlow2/many", many_files, private=True)
    kaggle7777.add("acme/gated/tensorFlow2/many", many_files, gated=True)
    kaggle7777.accept("acme/gated/tensorFlow2/many", USER)
    monkeypatch.setenv("KAGGLE_API_TOKEN", TOKEN)
    path = Path(kagglehub.model_download("acme/private/tensorFlow2/many/1"))
    assert len(list((path / "assets").iterdir())) == 30 and (path / "saved_model.pb").is_file()
    downloads = [r.path for r in kaggle7777.log("storage")]
    assert downloads and all(p.endswith("/bundle/archive.tar.gz") for p in downloads)

    monkeypatch.delenv("KAGGLE_API_TOKEN")
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    path = Path(kagglehub.model_download("acme/gated/tensorFlow2/many"))
    assert sorted(p.name for p in (path / "assets").iterdir())[0] == "vocab-00.txt"
    auth = {r.headers.get("Authorization") for r in kaggle7777.log("api")}
    assert auth == {_BEARER, _BASIC}
    assert_storage_got_no_credentials(kaggle7777, TOKEN, KEY)


def test_real_kagglehub_rejects_what_the_stand_in_corrupts(
    kaggle7777: KaggleServer, many_files: bytes
) -> None:
    """kagglehub checks the MD5 of X-Goog-Hash: the stand-in's corrupt body really is corrupt."""
    import kagglehub
    from kagglehub.exceptions import DataCorruptionError

    kaggle7777.add("acme/broken/tensorFlow2/many", many_files).corrupt.add(1)
    with pytest.raises(DataCorruptionError):
        kagglehub.model_download("acme/broken/tensorFlow2/many/1")


def test_real_kagglehub_is_refused_like_hubpin(kaggle7777: KaggleServer, models) -> None:
    import kagglehub
    from kagglehub.exceptions import KaggleApiHTTPError

    kaggle7777.add("acme/private/tensorFlow2/v", models["quint"].archive, private=True)
    kaggle7777.add("acme/gated/tensorFlow2/v", models["quint"].archive, gated=True)
    with pytest.raises(KaggleApiHTTPError, match="401"):
        kagglehub.model_download("acme/private/tensorFlow2/v")
    with pytest.raises(KaggleApiHTTPError, match="403"):
        kagglehub.model_download("acme/gated/tensorFlow2/v/1")


# -- kagglehub's cache, filled by hubpin ---------------------------------------------------


class Tripwire:
    """A TCP listener used as every proxy: it counts connection attempts and drops them."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


def test_synced_folder_is_what_kagglehub_returns_offline(
    kaggle: KaggleServer, fetcher: Fetcher, models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resolve, download, verify, publish; then, stand-in stopped, unmodified kagglehub finds it."""
    pytest.importorskip("tensorflow")
    kaggle.bump(SLUG, models["triple"].archive)
    api = KaggleApi(kaggle.url, None, fetcher.request)
    pinned = parse_handle(f"kaggle:{SLUG}").with_version(
        api.current_version(parse_handle(f"kaggle:{SLUG}"))
    )
    assert pinned.version == 2
    data, _ = fetch_checked(fetcher, api.download_url(pinned))
    verified = unpack(data, tmp_path / "verified")
    root = tmp_path / "kagglehub"
    entry = publish_to_kagglehub(verified, root, pinned)
    assert entry == kagglehub_entry(root, pinned) == root / "models" / SLUG / "2"
    marker = kagglehub_marker(root, pinned)
    assert marker == root / "models" / "google/affine/tensorFlow2/double/2.complete"
    assert marker.read_bytes() == b"" and in_kagglehub_cache(root, pinned)
    pb = "saved_model.pb"
    assert (entry / pb).stat().st_ino == (verified / pb).stat().st_ino  # hard-linked, one copy
    assert sorted(p.name for p in entry.parent.iterdir()) == [".complete", "2", "2.complete"]
    files = sorted(p.relative_to(entry).as_posix() for p in entry.rglob("*") if p.is_file())
    markers = entry.parent / ".complete" / "2"
    assert sorted(p.relative_to(markers).as_posix() for p in markers.rglob("*.complete")) == [
        f"{f}.complete" for f in files
    ]  # one per file, as kagglehub's model_download(handle, path) looks for
    kaggle.stop()

    wire = Tripwire()
    try:
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            monkeypatch.setenv(var, f"http://127.0.0.1:{wire.port}")
        monkeypatch.setenv("KAGGLEHUB_CACHE", str(root))
        assert kagglehub_cache_root() == root
        import kagglehub
        import requests

        path = kagglehub.model_download(pinned.kagglehub_handle)
        assert Path(path) == entry
        assert wire.connections == 0  # a cached versioned handle: no request at all
        for name in files:  # file by file, as KerasHub's from_preset asks: no request either
            assert Path(kagglehub.model_download(pinned.kagglehub_handle, name)) == entry / name
        assert wire.connections == 0
        assert compute(path, [1.0, 2.0]) == models["triple"].expected([1.0, 2.0])
        with pytest.raises(requests.exceptions.ConnectionError):
            kagglehub.model_download(pinned.slug)  # unversioned: kagglehub asks the API first
        assert wire.connections >= 1
    finally:
        wire.close()


def test_publish_replaces_atomically_and_is_idempotent(tmp_path: Path, models) -> None:
    handle = KaggleHandle("google", "affine", "tensorFlow2", "double", 4)
    root = tmp_path / "kh"
    first = tmp_path / "first"
    shutil.copytree(models["double"].folder, first)
    entry = publish_to_kagglehub(first, root, handle)
    inode = (entry / "saved_model.pb").stat().st_ino
    assert publish_to_kagglehub(first, root, handle) == entry  # the same files: left alone
    assert (entry / "saved_model.pb").stat().st_ino == inode

    second = tmp_path / "second"
    shutil.copytree(models["triple"].folder, second)
    (entry / "stray.txt").write_text("left by someone")
    publish_to_kagglehub(second, root, handle)
    assert not (entry / "stray.txt").exists()
    digest = hashlib.sha256((second / "saved_model.pb").read_bytes()).hexdigest()
    assert hashlib.sha256((entry / "saved_model.pb").read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in entry.parent.iterdir()) == [".complete", "4", "4.complete"]
    assert sorted(p.name for p in (entry.parent / ".complete").iterdir()) == ["4"]
    assert not (entry.parent / ".complete" / "4" / "stray.txt.complete").exists()
    (entry.parent / ".complete" / "4" / "saved_model.pb.complete").unlink()
    assert not in_kagglehub_cache(root, handle)  # a missing per-file marker counts
    publish_to_kagglehub(second, root, handle)
    assert in_kagglehub_cache(root, handle)

    (second / "link").symlink_to("saved_model.pb")
    with pytest.raises(Exception, match="symlink"):
        publish_to_kagglehub(second, root, handle.with_version(5))
    assert not kagglehub_entry(root, handle.with_version(5)).exists()
    assert not kagglehub_marker(root, handle.with_version(5)).exists()
    with pytest.raises(ValueError, match="pin one first"):
        kagglehub_entry(root, KaggleHandle("google", "affine", "tensorFlow2", "double"))


def test_publish_copies_across_file_systems(tmp_path: Path, models) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another file system than the test folder")
    root = Path(tempfile.mkdtemp(dir=shm))
    try:
        handle = KaggleHandle("google", "affine", "tensorFlow2", "double", 1)
        entry = publish_to_kagglehub(models["double"].folder, root, handle)
        source = models["double"].folder / "saved_model.pb"
        assert (entry / "saved_model.pb").read_bytes() == source.read_bytes()
        assert (entry / "saved_model.pb").stat().st_ino != source.stat().st_ino
        assert in_kagglehub_cache(root, handle)
        assert (
            publish_to_kagglehub(models["double"].folder, root, handle) == entry
        )  # copy2 kept mtimes
    finally:
        shutil.rmtree(root)
