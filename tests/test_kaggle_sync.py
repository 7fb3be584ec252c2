"""Kaggle Models end to end through the CLI, against the loopback Kaggle stand-in.

lock pins the version Kaggle calls current; sync fetches exactly that version
and fills every reader's cache (tensorflow_hub's keys for the handle as written
and its versioned URL, kagglehub's own cache); then, with the stand-in stopped,
unmodified ``hub.load`` and ``kagglehub.model_download`` load the pinned version.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Model, Project, run_here
from kaggleserver import KaggleServer, start_isolated

SLUG = "google/affine/tensorFlow2/double"
URL = f"https://www.kaggle.com/models/{SLUG}"
TOKEN = "KGAT_0ne-t0ken-n0body-sees"
USER, KEY = "alice", "a11ce-k3y-n0body-sees"


@pytest.fixture
def kaggle(
    models: dict[str, Model], project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[KaggleServer]:
    """The stand-in, reached through HUBPIN_KAGGLE_ENDPOINT; kagglehub's cache in tmp_path."""
    server = start_isolated(tmp_path, monkeypatch)
    server.add(SLUG, models["double"].archive)
    server.tokens[TOKEN] = USER
    server.users[USER] = KEY
    yield server
    server.stop()


def _lock(project: Project) -> dict[str, dict[str, object]]:
    import tomllib

    return tomllib.loads(project.lock.read_text())["models"]


def _published(project: Project) -> list[Path]:
    """Whatever a failed sync left in the cache (it must leave nothing)."""
    return sorted(project.cache.iterdir()) if project.cache.exists() else []


def _downloads(kaggle: KaggleServer) -> list[str]:
    return [r.path for r in kaggle.log("storage") if r.method == "GET"]


def test_unversioned_handle_is_pinned_and_every_reader_loads_it_offline(
    project: Project, kaggle: KaggleServer, models: dict[str, Model], tmp_path: Path
) -> None:
    kaggle.bump(SLUG, models["triple"].archive)  # version 2 is current
    project.write(
        f'[models.affine]\nhandle = "{URL}"\n\n[models.short]\nhandle = "kaggle:{SLUG}"\n'
    )
    code, _, err = project.run("sync")
    assert code == 0, err
    pins = _lock(project)
    assert pins["affine"]["kaggle_version"] == pins["short"]["kaggle_version"] == 2
    assert pins["affine"]["versioned_handle"] == f"{URL}/2"
    assert "?" not in str(pins["affine"]["url"])  # the signed query never reaches the lock
    inode = {
        handle: (project.entry(handle) / "saved_model.pb").stat().st_ino
        for handle in (URL, f"kaggle:{SLUG}", f"{URL}/2")
    }  # each alias downloads once; the versioned key is a hard link of one of them
    assert inode[f"{URL}/2"] in (inode[URL], inode[f"kaggle:{SLUG}"])
    kaggle.stop()

    script = f"""
import kagglehub, hubpin, tensorflow as tf, tensorflow_hub as hub
x = tf.constant([1.0, 2.0])
for handle in ({URL!r}, {URL + "/2"!r}):
    print(hub.load(handle)(x).numpy().tolist())
path = kagglehub.model_download({SLUG + "/2"!r})
print(path)
print(tf.saved_model.load(path)(x).numpy().tolist())
print(hubpin.load("short")(x).numpy().tolist())
"""
    out = run_here(script, cwd=project.root).strip().splitlines()
    want = str(models["triple"].expected([1.0, 2.0]))
    assert out[:2] == [want, want] and out[3:] == [want, want]
    assert out[2] == str(tmp_path / "kagglehub" / "models" / SLUG / "2")


def test_lock_keeps_the_version_outdated_tells_and_upgrade_moves_it(
    project: Project, kaggle: KaggleServer, models: dict[str, Model], tmp_path: Path
) -> None:
    project.write(
        f'[models.latest]\nhandle = "kaggle:{SLUG}"\n\n[models.fixed]\nhandle = "kaggle:{SLUG}/1"\n'
    )
    assert project.run("sync")[0] == 0
    kaggle.bump(SLUG, models["quint"].archive)
    before = project.lock.read_bytes()
    assert project.run("lock")[0] == 0
    assert project.run("lock", "latest")[0] == 0  # re-pinned, at the version it had
    assert project.lock.read_bytes() == before, "plain lock never moves a pinned version"

    downloads = len(_downloads(kaggle))
    code, out, err = project.run("outdated")
    assert code == 1, err
    assert [line.split()[:4] for line in out.splitlines()[1:]] == [
        ["fixed", "1", "2", "behind"],
        ["latest", "1", "2", "behind"],
    ]
    assert "run: hubpin lock --upgrade latest" in out and "the manifest pins version 1" in out
    code, out, _ = project.run("outdated", "--json")
    assert code == 1
    rows = {r["alias"]: r for r in json.loads(out)["models"]}
    assert (rows["latest"]["locked"], rows["latest"]["current"], rows["latest"]["state"]) == (
        1,
        2,
        "behind",
    )
    assert len(_downloads(kaggle)) == downloads, "outdated downloads nothing"

    code, _, err = project.run("lock", "--upgrade")
    assert code == 0, err
    pins = _lock(project)
    assert (pins["latest"]["kaggle_version"], pins["fixed"]["kaggle_version"]) == (2, 1)
    code, _, err = project.run("sync", "--locked")
    assert code == 0, err
    assert (tmp_path / "kagglehub" / "models" / SLUG / "2.complete").exists()
    assert (tmp_path / "kagglehub" / "models" / SLUG / "1.complete").exists()
    code, out, _ = project.run("outdated")
    assert code == 1 and "latest" in out and "current" in out.split("latest")[1].split("\n")[0]


@pytest.mark.parametrize("how", ["token", "basic"])
def test_credentials_reach_the_api_only_and_appear_nowhere(
    project: Project,
    kaggle: KaggleServer,
    models: dict[str, Model],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    kaggle.add("acme/private/tensorFlow2/v", models["quint"].archive, private=True)
    if how == "token":
        monkeypatch.setenv("KAGGLE_API_TOKEN", TOKEN)
        secrets = [TOKEN]
    else:
        monkeypatch.setenv("KAGGLE_USERNAME", USER)
        monkeypatch.setenv("KAGGLE_KEY", KEY)
        secrets = [KEY, base64.b64encode(f"{USER}:{KEY}".encode()).decode()]
    project.write('[models.private]\nhandle = "kaggle:acme/private/tensorFlow2/v"\n')
    outputs = [project.run("-v", "sync"), project.run("status", "--json")]
    outputs += [project.run("outdated", "--json"), project.run("verify", "--json")]
    assert [code for code, _, _ in outputs] == [0, 0, 0, 0], outputs[0][2]

    api = [r for r in kaggle.log("api") if "ModelApiService" in r.path]
    assert api and all("authorization" in {k.lower() for k in r.headers} for r in api)
    storage = kaggle.log("storage")
    assert storage and not any("authorization" in {k.lower() for k in r.headers} for r in storage)
    text = "\n".join(o + e for _, o, e in outputs)
    files = [
        p for root in (project.root, project.cache, tmp_path / "kagglehub") for p in root.rglob("*")
    ]
    for secret in secrets:
        assert secret not in text
        assert not [p for p in files if p.is_file() and secret.encode() in p.read_bytes()]


def test_a_gated_model_names_its_page_and_pins_nothing(
    project: Project,
    kaggle: KaggleServer,
    models: dict[str, Model],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kaggle.add("acme/gemma/tensorFlow2/v", models["quint"].archive, gated=True)
    monkeypatch.setenv("KAGGLE_API_TOKEN", TOKEN)
    project.write('[models.gemma]\nhandle = "kaggle:acme/gemma/tensorFlow2/v"\n')
    code, _, err = project.run("sync")
    assert code == 1
    line = next(line for line in err.splitlines() if line.startswith("hubpin: error: gemma"))
    assert "https://www.kaggle.com/models/acme/gemma" in line and "terms" in line
    assert "Traceback" not in err and TOKEN not in err
    assert not project.lock.exists() and not _published(project)

    kaggle.accept("acme/gemma/tensorFlow2/v", USER)
    assert project.run("sync")[0] == 0


def test_a_corrupt_download_is_caught_before_anything_is_pinned(
    project: Project, kaggle: KaggleServer, models: dict[str, Model]
) -> None:
    kaggle.model(SLUG).corrupt.add(1)
    project.write(f'[models.affine]\nhandle = "kaggle:{SLUG}"\n')
    code, _, err = project.run("lock")
    assert code == 1
    line = next(line for line in err.splitlines() if line.startswith("hubpin: error: affine"))
    assert "corrupt download" in line and "crc32c=" in line
    crc = base64.b64encode(hashlib.md5(models["double"].archive).digest()).decode()
    assert crc not in line or "md5" in line  # the declared checksum is named as declared
    assert not project.lock.exists()
    code, _, err = project.run("sync")
    assert code == 1 and "corrupt download" in err
    assert not _published(project)


def test_rate_limits_are_waited_out(project: Project, kaggle: KaggleServer) -> None:
    kaggle.throttle.times, kaggle.throttle.retry_after = 2, "0"
    project.write(f'[models.affine]\nhandle = "kaggle:{SLUG}"\n')
    code, _, err = project.run("sync")
    assert code == 0, err
    assert [r.status for r in kaggle.log("api")][:3] == [429, 429, 200]


def test_kaggle_api_endpoint_as_older_kaggle_tools_read_it(
    project: Project, kaggle: KaggleServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HUBPIN_KAGGLE_ENDPOINT")
    monkeypatch.setenv("KAGGLE_API_ENDPOINT", kaggle.url)
    project.write(f'[models.affine]\nhandle = "kaggle:{SLUG}/1"\n')
    code, _, err = project.run("sync")
    assert code == 0, err
    assert kaggle.log("storage")


def test_uncompressed_kaggle_model_is_refused_in_one_line(
    project: Project, kaggle: KaggleServer
) -> None:
    project.write(f'[models.affine]\nhandle = "kaggle:{SLUG}"\nformat = "UNCOMPRESSED"\n')
    code, _, err = project.run("lock")
    assert code == 2
    assert 'set format = "COMPRESSED"' in err and "affine" in err and "Traceback" not in err


def test_the_kaggle_example_syncs_and_every_reader_finds_it_offline(
    project: Project, kaggle: KaggleServer, models: dict[str, Model], tmp_path: Path
) -> None:
    import shutil

    example = tmp_path / "example"
    shutil.copytree(Path(__file__).parent.parent / "examples" / "kaggle", example)
    kaggle.add("google/mobilenet-v2/tensorFlow2/100-224-classification", models["double"].archive)
    bert = "tensorflow/bert/tensorFlow2/en-uncased-l-12-h-768-a-12"
    kaggle.add(bert, models["triple"].archive)
    for _ in range(3):
        kaggle.bump(bert, models["triple"].archive)  # the example pins version 4
    code, _, err = project.run("-m", str(example / "models.toml"), "sync")
    assert code == 0, err
    kaggle.stop()
    out = run_here("exec(open('check.py').read())", cwd=example)
    assert "bert: version 4" in out and "mobilenet: version 1" in out
    kagglehub = tmp_path / "kagglehub" / "models"
    assert f"kagglehub.model_download {kagglehub / bert / '4'}" in out


def test_a_lost_kagglehub_copy_is_planned_and_put_back_without_a_download(
    project: Project, kaggle: KaggleServer, tmp_path: Path
) -> None:
    project.write(f'[models.affine]\nhandle = "kaggle:{SLUG}"\n')
    assert project.run("sync")[0] == 0
    marker = tmp_path / "kagglehub" / "models" / SLUG / "1.complete"
    marker.unlink()  # as a cleaner of ~/.cache would leave it
    downloads = len(_downloads(kaggle))
    code, out, err = project.run("sync", "--dry-run", "--json")
    assert code == 0, err
    (step,) = json.loads(out)["models"]
    assert (step["action"], step["reason"]) == (
        "link",
        "present; hard-linked for kagglehub's cache",
    )
    assert not marker.exists(), "a dry run writes nothing"
    assert project.run("sync")[0] == 0
    assert marker.exists() and len(_downloads(kaggle)) == downloads


def test_two_aliases_of_one_kaggle_version_share_one_download_without_waiting(
    project: Project, kaggle: KaggleServer, tmp_path: Path
) -> None:
    """The plan sees that both pins are one model: the first downloads it, the second is
    hard-linked from its entry, and neither waits on a lock its own process holds."""
    project.write(
        f'[models.affine]\nhandle = "{URL}/1"\n\n[models.short]\nhandle = "kaggle:{SLUG}/1"\n'
    )
    assert project.run("lock", "--no-fill")[0] == 0
    code, out, err = project.run("sync", "--dry-run", "--json")
    assert code == 0, err
    planned = {m["alias"]: (m["action"], m["download_size"] > 0) for m in json.loads(out)["models"]}
    assert planned == {"affine": ("download", True), "short": ("link", False)}
    before = len(_downloads(kaggle))
    code, out, err = project.run("sync", "--json")
    assert code == 0, err
    assert "waiting" not in err and err == ""
    assert len(_downloads(kaggle)) == before + 1, "one download for both aliases"
    done = {m["alias"]: m["outcome"]["status"] for m in json.loads(out)["models"]}
    assert done == {"affine": "fetched", "short": "linked"}
    inodes = {
        (project.entry(handle) / "saved_model.pb").stat().st_ino
        for handle in (f"{URL}/1", f"kaggle:{SLUG}/1")
    }
    assert len(inodes) == 1, "the second alias's entry is hard-linked from the first's"
    assert (tmp_path / "kagglehub" / "models" / SLUG / "1.complete").exists()
    assert project.run("verify")[0] == 0


def test_two_aliases_of_one_kaggle_model_are_downloaded_once_by_lock_and_sync(
    project: Project, kaggle: KaggleServer, models: dict[str, Model]
) -> None:
    """Locking pins the second alias from the first one's download (same version, archive
    and tree), and the sync hard-links its entry: one download in all."""
    kaggle.bump(SLUG, models["triple"].archive)  # version 2 is current
    project.write(
        f'[models.affine]\nhandle = "{URL}"\n\n[models.short]\nhandle = "kaggle:{SLUG}"\n'
    )
    code, _, err = project.run("sync")
    assert code == 0, err
    assert len(_downloads(kaggle)) == 1, _downloads(kaggle)
    pins = _lock(project)
    assert pins["affine"]["kaggle_version"] == pins["short"]["kaggle_version"] == 2
    assert pins["short"]["cache_key"] == hashlib.sha1(f"kaggle:{SLUG}".encode()).hexdigest()
    assert {k: v for k, v in pins["short"].items() if k not in ("handle", "cache_key")} == {
        k: v for k, v in pins["affine"].items() if k not in ("handle", "cache_key")
    }
    assert project.run("lock", "--check")[0] == 0
    assert project.run("verify")[0] == 0


def test_a_hand_edited_kaggle_pin_fails_lock_check_and_lock_repins_it(
    project: Project, kaggle: KaggleServer
) -> None:
    """kaggle_version and versioned_handle are recomputed from the handle, offline."""
    project.write(f'[models.fixed]\nhandle = "kaggle:{SLUG}/1"\n')
    assert project.run("lock", "--no-fill")[0] == 0
    honest = project.lock.read_text()
    project.lock.write_text(honest.replace("kaggle_version = 1", "kaggle_version = 2"))
    code, _, err = project.run("lock", "--check")
    assert code == 1 and "fixed: kaggle_version is 2, the handle names version 1" in err, err
    edited = honest.replace(f'versioned_handle = "{URL}/1"', f'versioned_handle = "{URL}/2"')
    project.lock.write_text(edited)
    code, _, err = project.run("lock", "--check")
    assert code == 1 and f"fixed: versioned_handle is '{URL}/2', expected '{URL}/1'" in err, err
    code, _, err = project.run("sync", "--frozen")
    assert code == 2 and "versioned_handle" in err and "run: hubpin lock" in err, err
    assert project.run("lock", "--no-fill")[0] == 0
    assert project.lock.read_text() == honest


def test_a_kagglehub_copy_with_other_bytes_fails_verify_and_sync_puts_the_pinned_one_back(
    project: Project, kaggle: KaggleServer, tmp_path: Path
) -> None:
    """kagglehub's copy is what unmodified ``kagglehub.model_download`` and KerasHub's
    ``kaggle://`` presets read: a file of it replaced by other bytes (a new file, not the
    hard link to the verified entry) is a wrong model under the handle, so ``verify`` names
    it and ``sync`` links the pinned file back, with no download."""
    project.write(f'[models.affine]\nhandle = "kaggle:{SLUG}"\n')
    assert project.run("sync")[0] == 0
    copy = tmp_path / "kagglehub" / "models" / SLUG / "1" / "saved_model.pb"
    pinned = copy.read_bytes()
    other = copy.with_name("other")
    other.write_bytes(bytes([pinned[0] ^ 1]) + pinned[1:])  # same size, other bytes
    other.replace(copy)
    downloads = len(_downloads(kaggle))

    code, out, err = project.run("verify")
    assert code == 1, out + err
    assert f"{copy}" in out + err
    code, out, _ = project.run("status")
    assert f"kagglehub's copy {copy}: other bytes" in out, out

    code, out, err = project.run("sync")
    assert code == 0, err
    assert copy.read_bytes() == pinned and len(_downloads(kaggle)) == downloads
    assert project.run("verify")[0] == 0


def test_every_cache_entry_of_a_pin_is_verified_and_repaired(
    project: Project, kaggle: KaggleServer
) -> None:
    """A Kaggle pin fills two tensorflow_hub entries, the handle's and its versioned URL's
    (what unmodified ``hub.load(URL + "/1")`` reads): a file of the second replaced by other
    bytes of the same size is found by `verify` and put back by `verify --repair` (before:
    only the first entry was re-hashed, so `verify` said ok)."""
    project.write(f'[models.affine]\nhandle = "{URL}"\n')
    assert project.run("sync")[0] == 0
    first = project.entry(URL) / "saved_model.pb"
    copy = project.entry(f"{URL}/1") / "saved_model.pb"
    pinned = copy.read_bytes()
    other = copy.with_name("other")
    other.write_bytes(bytes([pinned[0] ^ 1]) + pinned[1:])
    other.replace(copy)
    downloads = len(_downloads(kaggle))

    code, out, err = project.run("verify")
    assert code == 1 and str(project.entry(f"{URL}/1")) in out + err, out + err
    code, out, err = project.run("verify", "--repair")
    assert code == 0, out + err
    assert copy.read_bytes() == pinned and first.read_bytes() == pinned
    assert len(_downloads(kaggle)) == downloads  # linked again from the verified entry
    assert project.run("verify")[0] == 0


def _tar_gz(files: dict[str, bytes]) -> bytes:
    import io
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def test_an_archive_whose_member_is_another_ones_kagglehub_marker_is_refused_by_name(
    project: Project, kaggle: KaggleServer, tmp_path: Path
) -> None:
    """kagglehub marks file ``x`` done with a file ``.complete/<version>/x.complete``, which
    ``x.complete/y``'s marker needs as a folder: refused before anything is written (before:
    lock pinned it, sync published the entry and failed "File exists")."""
    import tarfile

    from hubpin.digests import hash_tree

    clash = _tar_gz({"saved_model.pb": b"pb", "x": b"1", "x.complete/y": b"2"})
    project.write(f'[models.affine]\nhandle = "kaggle:{SLUG}/1"\n')
    kaggle.model(SLUG).versions[1] = clash
    code, _, err = project.run("lock")
    assert code == 1, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "affine" in err and f"kaggle:{SLUG}/1" in err and "x.complete/y" in err, err
    assert "kagglehub" in err and "marker" in err, err
    assert not project.lock.exists() and not _published(project)

    # a lock that pins it anyway (an older hubpin's, or edited by hand): sync refuses it too
    kaggle.model(SLUG).versions[1] = _tar_gz({"saved_model.pb": b"pb"})
    assert project.run("lock", "--no-fill")[0] == 0
    kaggle.model(SLUG).versions[1] = clash
    unpacked = tmp_path / "unpacked"
    with tarfile.open(fileobj=__import__("io").BytesIO(clash)) as tar:
        tar.extractall(unpacked, filter="data")
    tree = hash_tree(unpacked)
    pin = _lock(project)["affine"]
    text = project.lock.read_text()
    for field, value in (
        ("archive_sha256", hashlib.sha256(clash).hexdigest()),
        ("archive_size", len(clash)),
        ("tree_digest", tree.digest()),
        ("unpacked_size", tree.size),
        ("file_count", tree.file_count),
    ):
        text = text.replace(f"{field} = {json.dumps(pin[field])}", f"{field} = {json.dumps(value)}")
    project.lock.write_text(text)
    code, out, err = project.run("sync", "--locked")
    assert code == 1, (out, err)
    assert "x.complete/y" in out + err and "marker" in out + err and "Traceback" not in err
    assert not _published(project), "no entry published"
    assert not (tmp_path / "kagglehub" / "models").exists()
