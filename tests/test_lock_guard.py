"""The pin is a guarantee: a lock hubpin could not have made is refused, offline, by name.

Each kind of pin is its own type (an archive, a Kaggle archive, a gs:// folder, a
local folder) with its fields required; the fields the handle determines are
recomputed by ``lock --check`` and by every command that trusts the lock.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from pathlib import Path

import pytest
from conftest import Model, Project
from faultkit import spawn_hubpin
from hubserver import Faults, HubServer

import hubpin
from hubpin.errors import DamagedEntryError


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("hubpin: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _edit_lock(project: Project, alias: str, **fields: str) -> None:
    """Set (or, with "", delete) ``key = "value"`` lines in ``[models.<alias>]``."""
    text = project.lock.read_text()
    head, _, rest = text.partition(f"[models.{alias}]\n")
    body, sep, tail = rest.partition("\n[")
    lines = body.splitlines()
    for key, value in fields.items():
        lines = [line for line in lines if not line.startswith(f"{key} = ")]
        if value:
            lines.append(f"{key} = {value}")
    project.lock.write_text(
        head + f"[models.{alias}]\n" + "\n".join(sorted(lines)) + "\n" + sep + tail
    )


@pytest.fixture
def local(project: Project, models: dict[str, Model]) -> Project:
    """A project with a local archive (``double``) and a local folder (``folder``), locked."""
    (project.root / "double.tar.gz").write_bytes(models["double"].archive)
    shutil.copytree(models["triple"].folder, project.root / "triple")
    shutil.copytree(models["quint"].folder, project.root / "quint")
    project.models(double="double.tar.gz", folder="triple")
    code, _, err = project.run("lock", "--no-fill")
    assert code == 0, err
    return project


# ------------------------------------------------------------ item 3: a pin's kind is a type


def test_a_folder_pin_with_an_archives_fields_is_refused_by_name(local: Project) -> None:
    """A folder pin carrying a cache_key made prune keep (and sync trust) a key it never fills."""
    _edit_lock(local, "folder", cache_key=f'"{"0" * 40}"')
    code, _, err = local.run("sync", "--frozen")
    line = _one_error_line(err)
    assert code == 2 and "models.folder.cache_key: unknown key" in line, line


def test_a_table_missing_its_kinds_field_names_it_and_an_unknown_kind_is_refused(
    local: Project,
) -> None:
    _edit_lock(local, "double", archive_size="")
    code, _, err = local.run("status")
    line = _one_error_line(err)
    assert code == 2 and "models.double.archive_size: required key is missing" in line, line
    _edit_lock(local, "double", archive_size="4", kind='"zip"')
    code, _, err = local.run("status")
    line = _one_error_line(err)
    assert (
        code == 2
        and "models.double: kind must be 'archive', 'gcs', 'folder' or 'huggingface'" in line
    ), line


def test_lock_bytes_of_every_kind_survive_a_read_and_write(local: Project) -> None:
    from hubpin.lockfile import dumps, read_lock

    assert dumps(read_lock(local.lock)) == local.lock.read_text()
    demo = Path(__file__).resolve().parent.parent / "examples" / "demo" / "models.lock"
    assert dumps(read_lock(demo)) == demo.read_text()


# ------------------------------------------------------------ item 1: one key, one tree


def test_two_aliases_claiming_one_handle_with_different_models_are_refused(
    project: Project, hub: HubServer
) -> None:
    tiny, tiny2 = hub.handle("google/double/1"), hub.handle("google/triple/1")
    project.write(
        f'[models.tiny]\nhandle = "{tiny}"\nalso = ["{tiny2}"]\n\n[models.tiny2]\nhandle = "{tiny2}"\n'
    )
    code, _, err = project.run("lock", "--no-fill")
    assert code == 2, err
    clash = [line for line in err.splitlines() if "both claim cache key" in line]
    assert len(clash) == 1 and "tiny and tiny2" in clash[0] and tiny2 in clash[0], err
    assert "Traceback" not in err and not project.lock.exists()


def test_lock_check_refuses_a_lock_whose_aliases_share_a_key(
    project: Project, hub: HubServer
) -> None:
    """A lock made before this check (or assembled by hand) fails CI's ``lock --check``."""
    from hubpin.lockfile import manifest_digest, read_lock, write_lock
    from hubpin.manifest import load_manifest
    from hubpin.settings import load_settings

    tiny, tiny2 = hub.handle("google/double/1"), hub.handle("google/triple/1")
    project.models(tiny=tiny, tiny2=tiny2)
    assert project.run("lock", "--no-fill")[0] == 0
    project.write(
        f'[models.tiny]\nhandle = "{tiny}"\nalso = ["{tiny2}"]\n\n[models.tiny2]\nhandle = "{tiny2}"\n'
    )
    lock = read_lock(project.lock)
    lock.models["tiny"].also = [tiny2]
    settings = load_settings(project.root)
    lock.manifest_digest = manifest_digest(load_manifest(project.manifest), settings)
    write_lock(project.lock, lock)
    code, _, err = project.run("lock", "--check")
    line = _one_error_line(err)
    assert code == 1 and "tiny and tiny2 both claim cache key" in line and tiny2 in line, line
    code, _, err = project.run("sync", "--frozen")
    assert code == 2 and "both claim cache key" in _one_error_line(err)


def test_two_projects_own_model_tar_gz_never_share_an_entry(
    tmp_path: Path, project: Project, models: dict[str, Model]
) -> None:
    """The same relative archive path in two projects sharing a cache: each keeps its model."""
    other = tmp_path / "other"
    other.mkdir()
    (project.root / "model.tar.gz").write_bytes(models["double"].archive)
    (other / "model.tar.gz").write_bytes(models["triple"].archive)
    for root in (project.root, other):
        (root / "models.toml").write_text('[models.m]\nhandle = "model.tar.gz"\n')
    for _ in range(2):
        for root in (project.root, other):
            code, _, err = project.run("-m", str(root / "models.toml"), "sync")
            assert code == 0, err
    mine = project.run("resolve", "m")[1].strip()
    theirs = project.run("-m", str(other / "models.toml"), "resolve", "m")[1].strip()
    assert mine != theirs
    for entry, name in ((mine, "double"), (theirs, "triple")):
        pb = (Path(entry) / "saved_model.pb").read_bytes()
        assert pb == (models[name].folder / "saved_model.pb").read_bytes()
    code, out, err = project.run("sync")
    assert code == 0 and "1 already present" in out, err


def test_a_sync_never_replaces_a_model_another_projects_lock_pins(
    tmp_path: Path, project: Project, hub: HubServer, models: dict[str, Model]
) -> None:
    """Two projects share a cache and pin one URL whose model changed upstream in between."""
    handle = hub.handle("google/double/1")
    other = tmp_path / "other"
    other.mkdir()
    for root in (project.root, other):
        (root / "models.toml").write_text(f'[models.m]\nhandle = "{handle}"\n')
    code, _, err = project.run("sync")
    assert code == 0, err
    hub.models["google/double/1"] = models["triple"].archive
    theirs = ("-m", str(other / "models.toml"))
    assert project.run(*theirs, "lock", "--no-fill")[0] == 0
    code, _, err = project.run(*theirs, "sync")
    assert code == 1, err
    assert f"which {project.lock} pins for {handle}" in err, err
    assert "does not replace another project's entry" in err, err
    code, _, err = project.run("verify")
    assert code == 0, err
    pb = (project.entry(handle) / "saved_model.pb").read_bytes()
    assert pb == (models["double"].folder / "saved_model.pb").read_bytes()


def test_a_lock_keying_a_local_archive_by_path_says_run_hubpin_lock(local: Project) -> None:
    """Locks of older hubpins keyed a local archive by sha1(path): refused by name, re-pinned."""
    old_key = hashlib.sha1(b"double.tar.gz").hexdigest()
    _edit_lock(local, "double", cache_key=f'"{old_key}"')
    code, _, err = local.run("sync", "--frozen")
    line = _one_error_line(err)
    assert (
        code == 2 and "double: cache_key is" in line and "keyed a local archive by its path" in line
    )
    assert line.endswith("run: hubpin lock"), line
    code, _, err = local.run("lock", "--no-fill")
    assert code == 0 and "re-pinning" in err, err
    assert old_key not in local.lock.read_text()
    assert local.run("lock", "--check")[0] == 0


# ------------------------------------------------------------ item 2: lock --check recomputes


def test_a_folder_pin_pointed_elsewhere_fails_every_check_and_lock_repins_it(
    local: Project,
) -> None:
    """The issue's attack: ``location`` (with that folder's tree digest) edited to another folder."""
    from hubpin.digests import hash_tree

    honest = local.lock.read_text()
    other = hash_tree(local.root / "quint")
    _edit_lock(local, "folder", location='"quint"', tree_digest=f'"{other.digest()}"')
    code, _, err = local.run("lock", "--check")
    line = _one_error_line(err)
    assert code == 1 and "folder: location is 'quint'" in line and "triple" in line, line
    for argv in (("sync", "--locked"),):
        code, _, err = local.run(*argv)
        assert code == 1 and "folder: location is 'quint'" in _one_error_line(err)
    for argv in (("sync", "--frozen"), ("status",), ("verify",), ("resolve", "folder")):
        code, _, err = local.run(*argv)
        assert code == 2 and "folder: location is 'quint'" in _one_error_line(err), argv
    import hubpin

    with pytest.raises(hubpin.LockfileError, match="folder: location is 'quint'"):
        hubpin.Lock(local.lock).resolve("folder")
    code, _, err = local.run("lock", "--no-fill")
    assert code == 0, err
    assert local.lock.read_text() == honest


def test_a_kind_edited_to_folder_and_an_expected_sha256_edited_fail_lock_check(
    local: Project, models: dict[str, Model]
) -> None:
    _edit_lock(local, "double", kind='"folder"', location='"quint"')
    text = local.lock.read_text()
    for key in ("archive_sha256", "archive_size", "cache_key", "url"):
        text = re.sub(rf"(\[models\.double\][^\[]*?)\n{key} = [^\n]*", r"\1", text)
    local.lock.write_text(text)
    code, _, err = local.run("lock", "--check")
    line = _one_error_line(err)
    assert code == 1 and "double: kind is 'folder', the handle makes it 'archive'" in line, line

    sha = hashlib.sha256(models["double"].archive).hexdigest()
    local.write(
        f'[models.double]\nhandle = "double.tar.gz"\nsha256 = "{sha}"\n\n'
        '[models.folder]\nhandle = "triple"\n'
    )
    assert local.run("lock", "--no-fill")[0] == 0
    _edit_lock(local, "double", archive_sha256=f'"{"0" * 64}"')
    code, _, err = local.run("lock", "--check")
    line = _one_error_line(err)
    assert code == 1 and "double: archive_sha256 is 000" in line and sha in line, line
    assert local.run("lock", "--no-fill")[0] == 0
    _edit_lock(local, "double", url='"https://example.invalid/other.tar.gz"')
    code, _, err = local.run("lock", "--check")
    line = _one_error_line(err)
    assert code == 1 and "double: url is 'https://example.invalid/other.tar.gz'" in line, line


# ------------------------------------------------------------ item 8: as tensorflow_hub means it


@pytest.mark.parametrize(
    ("handle", "why"),
    [
        ("HTTP://127.0.0.1:1/google/double/1", "write the scheme in lower case (http:)"),
        ("Https://127.0.0.1:1/google/double/1", "write the scheme in lower case (https:)"),
        ("GS://bucket/model.tar.gz", "write the scheme in lower case (gs:)"),
        ("~/models/double", "tensorflow_hub does not expand '~'"),
        ("gs://bucket/model.TAR.GZ", "tensorflow_hub reads any other gs:// name as a model folder"),
    ],
)
def test_handles_tensorflow_hub_reads_otherwise_are_refused_with_the_reason(
    project: Project, handle: str, why: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:1")  # nothing leaves the host
    monkeypatch.setenv("HUBPIN_RETRIES", "0")
    (tmp_path / "models" / "double").mkdir(parents=True)
    project.models(m=handle)
    code, _, err = project.run("lock", "--no-fill")
    line = _one_error_line(err)
    assert code == 2 and "models.m.handle" in line and why in line, line


def test_tfhub_cache_dir_with_a_tilde_is_refused_as_tensorflow_hub_would_not_expand_it(
    local: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # where a failing hubpin would write
    monkeypatch.setenv("TFHUB_CACHE_DIR", "~/tfhub")
    code, _, err = local.run("sync", "--frozen")
    line = _one_error_line(err)
    assert code == 2 and "TFHUB_CACHE_DIR" in line and "does not expand '~'" in line, line


def test_a_relative_cache_dir_in_hubpin_toml_is_relative_to_the_file(
    local: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TFHUB_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    local.write('cache_dir = "models-cache"\n', "hubpin.toml")
    elsewhere = local.root / "src"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out, err = local.run("-m", str(local.manifest), "env")
    assert code == 0 and f"TFHUB_CACHE_DIR={local.root / 'models-cache'}\n" in out, out
    code, _, err = local.run("-m", str(local.manifest), "sync", "--frozen")
    assert code == 0, err
    assert (local.root / "models-cache").is_dir() and not (elsewhere / "models-cache").exists()
    local.write('cache_dir = "~/c"\n', "hubpin.toml")
    code, out, err = local.run("-m", str(local.manifest), "env")
    assert f"TFHUB_CACHE_DIR={tmp_path / 'home' / 'c'}\n" in out, out


def test_a_remote_archives_url_sizes_and_count_edited_by_hand_are_found(
    project: Project, hub: HubServer
) -> None:
    """Before: a ``url`` with a token in its query string passed ``lock --check`` (the lock
    records the host's final URL without one), and ``unpacked_size`` or ``file_count``
    edited by hand passed every check: sync fetched the pinned tree and said ``fetched
    953.7 MiB``; status said that size, ``synced``."""
    handle = hub.handle("google/double/1")
    project.models(double=handle)
    assert project.run("lock", "--no-fill")[0] == 0
    honest = project.lock.read_text()
    _edit_lock(project, "double", url='"https://other.example/m.tar.gz?token=s3cret"')
    code, _, err = project.run("lock", "--check")
    line = _one_error_line(err)
    assert code == 1 and "double: url has a query string" in line and "s3cret" not in line, line
    for field, value in (("unpacked_size", "999999999"), ("file_count", "7")):
        project.lock.write_text(honest)
        _edit_lock(project, "double", **{field: value})
        code, out, err = project.run("sync", "--locked")
        assert code == 1, out + err
        assert f"the lock says {'7' if field == 'file_count' else '4'} files (file_count)" in err
        assert not project.entry(handle).exists()


def test_a_pinned_folder_with_another_model_written_over_it_is_not_synced(
    project: Project, models: dict[str, Model]
) -> None:
    """A folder is read in place, and the user's: another model written over it (here with
    one file more) is not the one the lock pins. Before: ``sync`` and ``sync --locked`` said
    ``checked: … exists`` (exit 0), status ``local folder``, ``hubpin resolve`` gave the
    folder; only ``verify`` hashed it. Now each checks the files' number and total size by
    stat, as a cache entry's sizes are (``--verify`` re-hashes)."""
    shutil.copytree(models["triple"].folder, project.root / "triple")
    project.models(folder="triple")
    assert project.run("sync")[0] == 0
    shutil.rmtree(project.root / "triple")
    shutil.copytree(models["quint"].folder, project.root / "triple")
    (project.root / "triple" / "assets" / "labels.txt").write_text("cat\ndog\n")
    said = "holds 5 files of "
    for argv in (("sync",), ("sync", "--locked"), ("resolve", "folder")):
        code, out, err = project.run(*argv)
        assert code == 1 and said in out + err and "the lock pins 4 of " in out + err, out + err
    code, out, _ = project.run("status")
    assert code == 0 and said in out, out
    with pytest.raises(DamagedEntryError, match=said):
        hubpin.resolve("folder")


def test_an_entry_a_sync_published_is_not_replaced_before_that_sync_ends(
    tmp_path: Path, project: Project, hub: HubServer, models: dict[str, Model]
) -> None:
    """P's sync published ``m`` and is still fetching ``slow`` (it notes its lock in the cache
    only when all are done); Q pins ``m``'s URL at another model (upstream changed between
    the two locks). Before: Q's sync found P not noted and replaced P's new entry (exit 0),
    then P's sync said it fetched ``m`` (exit 0) and P's ``hub.load`` got Q's model."""
    handle, slow = hub.handle("google/double/1"), hub.handle("google/triple/1")
    other = tmp_path / "other"
    other.mkdir()
    (other / "models.toml").write_text(f'[models.m]\nhandle = "{handle}"\n')
    theirs = ("-m", str(other / "models.toml"))
    hub.models["google/double/1"] = models["quint"].archive
    assert project.run(*theirs, "lock", "--no-fill")[0] == 0
    hub.models["google/double/1"] = models["double"].archive
    project.write(f'[models.m]\nhandle = "{handle}"\n\n[models.slow]\nhandle = "{slow}"\n')
    assert project.run("lock", "--no-fill")[0] == 0
    hub.faults["google/triple/1"] = Faults(delay=1.0, chunk=1024)  # about 4 s
    sync = spawn_hubpin(project.root, project.cache, "sync", "--jobs", "2")
    try:
        record = project.cache / f"{project.entry(handle).name}.hubpin.json"
        deadline = time.monotonic() + 60
        while not record.exists() and sync.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        hub.models["google/double/1"] = models["quint"].archive  # what Q's lock pins
        code, _, err = project.run(*theirs, "sync")
        assert sync.poll() is None, "P's sync ended before Q's: nothing was raced"
        out, p_err = sync.communicate(timeout=120)
    finally:
        sync.kill()
    assert code == 1 and f"which {project.lock} pins for {handle}" in err, err
    assert sync.returncode == 0, out + p_err
    assert project.run("verify")[0] == 0
