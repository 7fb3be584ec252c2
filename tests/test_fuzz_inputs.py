"""Property tests: every malformed manifest, settings file, HUBPIN_* variable and lock gives
exit 2 and one line naming the file, never a traceback."""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import tomllib
from conftest import Model
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hubpin.cli import main
from hubpin.settings import Settings

FUZZ = settings(
    max_examples=int(os.environ.get("HUBPIN_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
VALID_MANIFEST = (
    '[models.double]\nhandle = "double.tar.gz"\n\n[models.spice]\nhandle = "models/spice"\n'
)
ALIAS = st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True)
SCALARS = st.one_of(
    st.integers(-(2**40), 2**40), st.floats(allow_nan=False), st.text(max_size=20), st.booleans()
)
NOT_STR = st.one_of(
    st.integers(), st.floats(allow_nan=False), st.booleans(), st.lists(st.integers(), max_size=2)
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in list(os.environ):
        if var.startswith(("HUBPIN_", "TFHUB_")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "cache"))


@contextlib.contextmanager
def project(manifest: str | bytes = VALID_MANIFEST, **files: str | bytes) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, content in {"models.toml": manifest, **files}.items():
            data = content.encode() if isinstance(content, str) else content
            (root / name.replace("_", ".")).write_bytes(data)
        yield root


def run(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(argv))
    return code, err.getvalue()


# pydantic's own wording, which a person must never see (hubpin says what it expected and found)
PYDANTIC_WORDS = (
    "Input should be",
    "validation error",
    "Value error,",
    "Field required",
    "Extra inputs are not permitted",
    "For further information visit",
    "errors.pydantic.dev",
)


def assert_rejected(code: int, err: str, names: str) -> None:
    """Exit 2 and one line per mistake, each an error naming the file, in hubpin's words."""
    lines = err.strip().splitlines()
    assert code == 2, err
    assert lines, err
    for line in lines:
        assert line.startswith("hubpin: error: ") and names in line, err
    assert "Traceback" not in err
    assert not [word for word in PYDANTIC_WORDS if word in err], err


def _parses(text: str) -> bool:
    try:
        tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError):
        return False
    return True


# ---------------------------------------------------------------- manifests

BREAKERS = st.sampled_from(
    ["[", "]", '"', "'''", "=", "\x00", "[[models", "\\", "\n=\n", "{", "\x7f"]
)


@FUZZ
@given(at=st.integers(0, len(VALID_MANIFEST)), junk=BREAKERS)
def test_manifest_that_is_not_toml(at: int, junk: str) -> None:
    text = VALID_MANIFEST[:at] + junk + VALID_MANIFEST[at:]
    assume(not _parses(text))
    with project(text) as root:
        assert_rejected(*run("-m", str(root / "models.toml"), "lock", "--check"), "models.toml")


@FUZZ
@given(data=st.binary(min_size=1, max_size=200))
def test_manifest_that_is_not_text(data: bytes) -> None:
    try:  # read as text files are read: universal newlines
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
        assume(not _parses(text))
    except UnicodeDecodeError:
        pass
    with project(data) as root:
        assert_rejected(*run("-m", str(root / "models.toml"), "sync", "--offline"), "models.toml")


def _bad_model(draw: st.DrawFn) -> tuple[str, Any]:
    """One ``[models.<alias>]`` table that breaks exactly one rule."""
    good = {"handle": "x.tar.gz"}
    fault = draw(
        st.sampled_from(["key", "alias", "handle-type", "handle", "format", "sha", "tags", "table"])
    )
    alias = draw(ALIAS)
    if fault == "key":
        key = draw(
            st.text(min_size=1, max_size=10).filter(
                lambda k: k not in ("handle", "format", "io_device", "tags", "sha256")
            )
        )
        return alias, good | {key: draw(SCALARS)}
    if fault == "alias":
        return draw(st.text(min_size=1, max_size=10).filter(lambda a: not _alias_ok(a))), good
    if fault == "handle-type":
        return alias, {"handle": draw(NOT_STR)}
    if fault == "handle":
        bad = draw(
            st.one_of(
                st.just(""),
                st.text(min_size=1, max_size=8).map(lambda t: f" {t}"),
                st.from_regex(r"[a-z]{2,8}", fullmatch=True)
                .filter(lambda s: s not in ("http", "https", "gs", "file"))
                .map(lambda s: f"{s}://host/m"),
                st.just("https:///no-host"),
                st.text(min_size=1, max_size=8).map(lambda t: f"a\x01{t}"),
            )
        )
        return alias, {"handle": bad}
    if fault == "format":
        value = draw(
            st.one_of(
                NOT_STR,
                st.text(max_size=12).filter(
                    lambda f: f not in ("COMPRESSED", "UNCOMPRESSED", "AUTO")
                ),
            )
        )
        return alias, good | {"format": value}
    if fault == "sha":
        value = draw(st.one_of(NOT_STR, st.text(max_size=70).filter(lambda s: not _sha_ok(s))))
        return alias, good | {"sha256": value}
    if fault == "tags":
        return alias, good | {
            "tags": draw(st.one_of(st.integers(), st.lists(st.integers(), min_size=1)))
        }
    return alias, draw(SCALARS)


def _alias_ok(alias: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9_.-]+", alias) is not None


def _sha_ok(value: str) -> bool:
    return re.fullmatch(r"[0-9a-f]{64}", value) is not None


@st.composite
def bad_manifests(draw: st.DrawFn) -> str:
    models = {a: {"handle": f"{a}.tar.gz"} for a in draw(st.lists(ALIAS, max_size=3, unique=True))}
    if draw(st.booleans()):
        key = draw(st.text(min_size=1, max_size=10).filter(lambda k: k != "models"))
        doc: dict[str, Any] = {"models": models, key: draw(SCALARS)}
    elif draw(st.booleans()):
        doc = {"models": draw(st.one_of(SCALARS, st.lists(st.integers(), max_size=3)))}
    else:
        alias, table = _bad_model(draw)
        doc = {"models": models | {alias: table}}
    return tomli_w.dumps(doc)


@FUZZ
@given(text=bad_manifests())
def test_manifest_that_breaks_the_schema(text: str) -> None:
    with project(text) as root:
        assert_rejected(*run("-m", str(root / "models.toml"), "lock", "--check"), "models.toml")


def test_manifest_nested_too_deeply() -> None:
    with project("[models.x]\nhandle = " + "[" * 5000 + "]" * 5000 + "\n") as root:
        assert_rejected(
            *run("-m", str(root / "models.toml"), "lock", "--check"), "nested too deeply"
        )


# ---------------------------------------------------------------- settings

SETTING_FAULTS: dict[str, st.SearchStrategy[Any]] = {
    "retries": st.one_of(
        st.integers(max_value=-1),
        st.integers(min_value=101),
        st.text(max_size=5).filter(lambda t: not t.strip().lstrip("+-").isdigit()),
    ),
    "jobs": st.one_of(
        st.integers(max_value=0), st.integers(min_value=65), st.lists(st.integers(), max_size=2)
    ),
    "connect_timeout": st.one_of(st.floats(max_value=0), st.integers(max_value=0)),
    "read_timeout": st.one_of(st.floats(max_value=0), st.just("soon")),
    "lock_timeout": st.floats(max_value=-0.001),
    "max_unpacked_size": st.one_of(
        st.integers(max_value=0), st.floats(min_value=0.1, max_value=0.9)
    ),
    "max_compression_ratio": st.one_of(st.floats(max_value=0.99), st.just("high")),
    "max_members": st.one_of(
        st.integers(max_value=0),
        st.floats(min_value=1.1, max_value=9.9).filter(lambda f: not f.is_integer()),
    ),
    "allow_http": st.one_of(st.integers(min_value=2), st.lists(st.booleans(), min_size=1)),
    "cache_dir": NOT_STR,
    "format": st.text(max_size=10).filter(
        lambda f: f not in ("COMPRESSED", "UNCOMPRESSED", "AUTO")
    ),
    "mirrors": st.one_of(
        SCALARS,
        st.lists(
            st.dictionaries(st.sampled_from(["prefix", "replace", "x"]), NOT_STR, min_size=1),
            min_size=1,
        ),
    ),
}


@st.composite
def bad_settings(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        key = draw(
            st.text(min_size=1, max_size=12).filter(
                lambda k: k not in SETTING_FAULTS and k not in Settings.model_fields
            )
        )
        return tomli_w.dumps({key: draw(SCALARS)})
    name = draw(st.sampled_from(sorted(SETTING_FAULTS)))
    return tomli_w.dumps({name: draw(SETTING_FAULTS[name])})


@FUZZ
@given(text=bad_settings())
def test_settings_file_that_breaks_the_schema(text: str) -> None:
    with project(hubpin_toml=text) as root:
        assert_rejected(*run("-m", str(root / "models.toml"), "env"), "hubpin.toml")


@FUZZ
@given(at=st.integers(0, 20), junk=BREAKERS)
def test_settings_file_that_is_not_toml(at: int, junk: str) -> None:
    text = "retries = 3\njobs = 2\n"
    text = text[:at] + junk + text[at:]
    assume(not _parses(text))
    with project(hubpin_toml=text) as root:
        assert_rejected(*run("-m", str(root / "models.toml"), "sync", "--offline"), "hubpin.toml")


@FUZZ
@given(
    var=st.sampled_from(
        [
            "RETRIES",
            "JOBS",
            "CONNECT_TIMEOUT",
            "LOCK_TIMEOUT",
            "MAX_UNPACKED_SIZE",
            "MAX_COMPRESSION_RATIO",
            "MAX_MEMBERS",
        ]
    ),
    value=st.text(alphabet="abcxyz-_!?", min_size=1, max_size=8),
)
def test_environment_variable_that_is_not_a_number(var: str, value: str) -> None:
    with project() as root, _env(f"HUBPIN_{var}", value):
        assert_rejected(*run("-m", str(root / "models.toml"), "env"), f"HUBPIN_{var}")


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    os.environ[name] = value
    try:
        yield
    finally:
        del os.environ[name]


# ---------------------------------------------------------------- locks


@pytest.fixture(scope="module")
def valid_lock(
    models: dict[str, Model], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("lockfuzz")
    (root / "double.tar.gz").write_bytes(models["double"].archive)
    (root / "models" / "spice").mkdir(parents=True)
    (root / "models" / "spice" / "saved_model.pb").write_bytes(b"pb")
    (root / "models.toml").write_text(VALID_MANIFEST)
    assert run("-m", str(root / "models.toml"), "lock")[0] == 0
    return tomllib.loads((root / "models.lock").read_text())


PIN_FIELDS = {
    "handle": NOT_STR,
    "format": st.text(max_size=12).filter(
        lambda f: f not in ("COMPRESSED", "UNCOMPRESSED", "AUTO")
    ),
    "kind": st.text(max_size=8).filter(lambda k: k not in ("archive", "gcs", "folder")),
    "cache_key": st.one_of(
        NOT_STR, st.text(max_size=45), st.from_regex(r"[0-9a-f]{40}", fullmatch=True)
    ),
    "archive_sha256": st.one_of(NOT_STR, st.text(max_size=70).filter(lambda s: not _sha_ok(s))),
    "archive_size": st.one_of(
        st.integers(max_value=-1), st.text(max_size=5), st.floats(min_value=0.1, max_value=0.9)
    ),
    "unpacked_size": st.one_of(st.integers(max_value=-1), st.text(max_size=5)),
    "file_count": st.one_of(st.integers(max_value=-1), st.lists(st.integers(), max_size=2)),
    "tree_digest": NOT_STR,
}
REQUIRED = [
    "handle",
    "format",
    "kind",
    "tree_digest",
    "unpacked_size",
    "file_count",
    "cache_key",
    "url",
    "archive_sha256",
    "archive_size",
]


@st.composite
def bad_locks(draw: st.DrawFn, lock: dict[str, Any]) -> str:
    doc = {k: (dict(v) if isinstance(v, dict) else v) for k, v in lock.items()}
    doc["models"] = {a: dict(p) for a, p in lock["models"].items()}
    pin = doc["models"]["double"]
    fault = draw(
        st.sampled_from(["top", "pin-key", "missing", "field", "version", "models", "kind", "text"])
    )
    if fault == "top":
        key = draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in doc))
        doc[key] = draw(SCALARS)
    elif fault == "pin-key":
        key = draw(
            st.text(min_size=1, max_size=10).filter(
                lambda k: (
                    k
                    not in (
                        *REQUIRED,
                        "location",
                        "io_device",
                        "tags",
                        "expected_sha256",
                        "objects",
                    )
                )
            )
        )
        pin[key] = draw(SCALARS)
    elif fault == "missing":
        del pin[draw(st.sampled_from(REQUIRED))]
    elif fault == "field":
        name = draw(st.sampled_from(sorted(PIN_FIELDS)))
        value = draw(PIN_FIELDS[name])
        assume(value != pin[name])
        pin[name] = value
    elif fault == "version":
        doc["version"] = draw(
            st.one_of(st.integers().filter(lambda v: v != 1), st.text(max_size=4))
        )
    elif fault == "models":
        doc["models"] = draw(st.one_of(SCALARS, st.lists(st.integers(), min_size=1, max_size=3)))
    elif fault == "kind":  # an archive pin relabelled: it lacks what that kind needs
        pin["kind"] = draw(st.sampled_from(["gcs", "folder"]))
        pin.pop("location", None)
    else:
        text = tomli_w.dumps(doc)
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(BREAKERS) + text[at:]
        assume(not _parses(text))
        return text
    return tomli_w.dumps(doc)


@FUZZ
@given(
    data=st.data(),
    command=st.sampled_from(
        [("sync", "--frozen", "--offline"), ("status",), ("verify",), ("resolve", "double")]
    ),
)
def test_lock_that_is_malformed(
    valid_lock: dict[str, Any], data: st.DataObject, command: tuple[str, ...]
) -> None:
    text = data.draw(bad_locks(valid_lock))
    with project(models_lock=text) as root:
        (root / "models" / "spice").mkdir(parents=True)
        code, err = run("-m", str(root / "models.toml"), *command)
        assert_rejected(code, err, "models.lock")


def test_lock_whose_cache_key_escapes_the_cache(valid_lock: dict[str, Any]) -> None:
    """A hand-edited cache_key names the folder sync writes and prune deletes: refused."""
    doc = {**valid_lock, "models": {a: dict(p) for a, p in valid_lock["models"].items()}}
    doc["models"]["double"]["cache_key"] = "../../../../etc"
    with project(models_lock=tomli_w.dumps(doc)) as root:
        code, err = run("-m", str(root / "models.toml"), "sync", "--frozen", "--offline")
        assert_rejected(code, err, "models.lock")
        assert "models.double.cache_key" in err


def test_lock_whose_numbers_are_quoted(valid_lock: dict[str, Any]) -> None:
    """hubpin writes sizes and counts as TOML integers; a quoted one is a hand edit, refused
    (hypothesis found `archive_size = "0"` accepted: pydantic turned the string into 0)."""
    doc = {**valid_lock, "models": {a: dict(p) for a, p in valid_lock["models"].items()}}
    doc["models"]["double"]["archive_size"] = "0"
    doc["models"]["double"]["file_count"] = True
    with project(models_lock=tomli_w.dumps(doc)) as root:
        code, err = run("-m", str(root / "models.toml"), "sync", "--frozen", "--offline")
        assert_rejected(code, err, "models.lock")
        assert "models.double.archive_size: expected an integer, found '0'" in err, err
        assert "models.double.file_count: expected an integer, found true" in err, err
