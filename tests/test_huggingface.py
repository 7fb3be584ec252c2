"""Hugging Face repositories: pinned to a commit with every file's blob id and sha256, synced
into Hugging Face's own cache, and found there by unmodified huggingface_hub with the Hub
stopped and HF_HUB_OFFLINE=1.

The Hub is the loopback stand-in (tests/hfserver.py), first checked against the real
huggingface_hub; HF_ENDPOINT points every client at it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomllib
import urllib3
from conftest import WORKTREE, Project, hubpin_imports, run_python
from hfserver import HfServer, git_blob_sha1
from kerasmodels import outputs_in_process
from oci_registry import OciLogin, Registry

from hubpin.errors import InputError
from hubpin.huggingface import HfHandle, parse_hf

CONFIG = b'{"registered_name": "none", "n": 1}'
WEIGHTS = bytes(range(256)) * 40  # an LFS file (by suffix), 10 KiB
VOCAB = b"[PAD]\n[UNK]\nthe\nfox\n"
FILES = {"config.json": CONFIG, "model.weights.h5": WEIGHTS, "assets/tokenizer/vocab.txt": VOCAB}
TOKEN = "hf_n0body-sees-this-t0ken"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HfServer]:
    """The stand-in with ``org/bert`` on ``main``, reached through HF_ENDPOINT; caches in tmp_path."""
    for var in list(os.environ):
        if var.startswith(("HF_", "HUGGING")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    server = HfServer().start()
    server.add("org/bert", FILES)
    server.tokens[TOKEN] = "alice"
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    yield server
    server.stop()


def client(code: str, **env: str) -> list[object]:
    """Run ``code`` with the real huggingface_hub in a fresh interpreter (it reads HF_* at
    import); each line it prints is JSON."""
    result = subprocess.run(
        [sys.executable, "-c", "import json, huggingface_hub as h\n" + code],
        env={**os.environ, "PYTHONPATH": WORKTREE, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [
        json.loads(line) for line in result.stdout.splitlines() if line.startswith(("[", "{", '"'))
    ]


def _lock(project: Project) -> dict[str, dict[str, object]]:
    return tomllib.loads(project.lock.read_text())["models"]


def _snapshot_root(tmp_path: Path) -> Path:
    return tmp_path / "hf-cache" / "models--org--bert"


# -- the stand-in, against the real client ----------------------------------------------


def test_stand_in_answers_the_real_huggingface_hub(hub: HfServer, tmp_path: Path) -> None:
    """hf_hub_download (small and LFS), snapshot_download, model_info, a gated repository,
    the token kept off the CDN, a main that moves, Range."""
    first = hub.repos["org/bert"].refs["main"]
    hub.add("org/gated", {"config.json": b"{}"}, gated=True)
    code = """
print(json.dumps(open(h.hf_hub_download("org/bert", "config.json")).read()))
print(json.dumps(h.hf_hub_download("org/bert", "model.weights.h5")))
print(json.dumps(h.snapshot_download("org/bert")))
info = h.model_info("org/bert")
print(json.dumps([info.sha, sorted(s.rfilename for s in info.siblings)]))
try:
    h.hf_hub_download("org/gated", "config.json")
except h.errors.GatedRepoError as e:
    print(json.dumps(["gated", e.response.status_code]))
"""
    out = client(code, HF_TOKEN=TOKEN)
    assert out[0] == CONFIG.decode()
    assert Path(str(out[1])).read_bytes() == WEIGHTS
    assert out[2] == str(_snapshot_root(tmp_path) / "snapshots" / first)
    assert out[3] == [first, sorted(FILES)]
    assert out[4] == ["gated", 403]  # a token, but alice has not accepted the terms
    blob = _snapshot_root(tmp_path) / "blobs"
    assert (blob / hashlib.sha256(WEIGHTS).hexdigest()).is_file()  # LFS: named by X-Linked-Etag
    assert (blob / git_blob_sha1(CONFIG)).is_file()  # small: named by the git blob ETag
    assert all(r.authorization == f"Bearer {TOKEN}" for r in hub.log("hub"))
    cdn = hub.log("cdn")
    assert cdn and all(r.authorization is None for r in cdn)  # the token stays on the Hub

    second = hub.push("org/bert", {**FILES, "config.json": b'{"n": 2}'})
    assert client('print(json.dumps(open(h.hf_hub_download("org/bert", "config.json")).read()))')
    assert (_snapshot_root(tmp_path) / "refs" / "main").read_text() == second

    http = urllib3.PoolManager()
    answer = http.request(
        "GET", f"{hub.url}/org/bert/resolve/{first}/config.json", headers={"Range": "bytes=2-5"}
    )
    assert (answer.status, answer.data) == (206, CONFIG[2:6])


def test_handles_as_people_write_them() -> None:
    assert parse_hf("hf:org/bert") == HfHandle("org/bert", "main")
    assert parse_hf("hf:org/bert@v1.0") == HfHandle("org/bert", "v1.0")
    assert parse_hf("hf://org/bert") == HfHandle("org/bert", "main")  # KerasHub's form
    assert parse_hf("https://huggingface.co/org/bert") == HfHandle("org/bert", "main")
    assert parse_hf("https://huggingface.co/org/bert/tree/refs%2Fpr%2F1") == HfHandle(
        "org/bert", "refs/pr/1"
    )
    assert parse_hf("https://tfhub.dev/google/x/1") is None and parse_hf("kaggle:a/b/c/d") is None
    for bad in ("hf:bert", "hf:org/bert@", "hf:org/b--ert", "https://huggingface.co/org"):
        with pytest.raises(InputError, match=r"expected hf:<org>/<repo>|not allowed"):
            parse_hf(bad)


# -- lock and sync ------------------------------------------------------------------------


def test_pinned_commit_is_what_unmodified_clients_load_offline(
    project: Project, hub: HfServer, tmp_path: Path
) -> None:
    commit = hub.repos["org/bert"].refs["main"]
    project.models(bert="hf:org/bert")
    code, out, err = project.run("sync")
    assert code == 0, err
    pin = _lock(project)["bert"]
    assert pin["kind"] == "huggingface" and pin["huggingface"]["commit"] == commit  # type: ignore[index]
    files = {f["path"]: f for f in pin["huggingface"]["files"]}  # type: ignore[index]
    assert files["config.json"] == {
        "path": "config.json",
        "size": len(CONFIG),
        "blob_id": git_blob_sha1(CONFIG),
    }
    assert files["model.weights.h5"]["sha256"] == hashlib.sha256(WEIGHTS).hexdigest()
    root = _snapshot_root(tmp_path)
    assert (root / "refs" / "main").read_bytes() == commit.encode()  # no trailing newline
    link = root / "snapshots" / commit / "assets" / "tokenizer" / "vocab.txt"
    assert os.readlink(link) == f"../../../../blobs/{git_blob_sha1(VOCAB)}"  # relative
    assert not list((root / "snapshots").glob("*.json"))  # hubpin's record is beside, not in it
    code, resolved, _ = project.run("resolve", "bert")
    assert resolved.strip() == str(root / "snapshots" / commit)
    hub.stop()

    code = """
print(json.dumps(open(h.hf_hub_download("org/bert", "config.json")).read()))
print(json.dumps(h.hf_hub_download("org/bert", "model.weights.h5")))
print(json.dumps(h.snapshot_download("org/bert")))
try:
    h.hf_hub_download("org/bert", "preprocessor.json")
except FileNotFoundError as e:
    print(json.dumps(type(e).__name__))
"""
    out = client(code, HF_HUB_OFFLINE="1")
    assert out[0] == CONFIG.decode() and Path(str(out[1])).read_bytes() == WEIGHTS
    assert out[2] == str(root / "snapshots" / commit)
    assert (
        out[3] == "LocalEntryNotFoundError"
    )  # an absent optional file is absent, as KerasHub needs


def test_main_moves_lock_keeps_the_commit_outdated_tells_upgrade_moves(
    project: Project, hub: HfServer, tmp_path: Path
) -> None:
    first = hub.repos["org/bert"].refs["main"]
    project.models(bert="hf:org/bert")
    assert project.run("sync")[0] == 0
    second = hub.push("org/bert", {**FILES, "config.json": b'{"n": 2}'})
    before = project.lock.read_bytes()
    assert project.run("lock")[0] == 0 and project.run("lock", "bert")[0] == 0
    assert project.lock.read_bytes() == before  # plain lock never moves a branch
    assert project.run("sync", "--locked")[0] == 0
    root = _snapshot_root(tmp_path)
    assert (root / "refs" / "main").read_text() == first

    code, out, _ = project.run("outdated")
    assert code == 1
    assert out.splitlines()[1].split()[:4] == ["bert", first[:12], second[:12], "behind"]
    assert "run: hubpin lock --upgrade bert" in out
    assert project.run("lock", "--upgrade")[0] == 0
    assert _lock(project)["bert"]["huggingface"]["commit"] == second  # type: ignore[index]
    code, _, err = project.run("sync")
    assert code == 0, err
    assert (root / "refs" / "main").read_text() == second
    assert (root / "snapshots" / second / "config.json").read_bytes() == b'{"n": 2}'
    assert project.run("outdated")[0] == 0


def test_a_corrupt_file_publishes_nothing(project: Project, hub: HfServer, tmp_path: Path) -> None:
    """Each file is checked before it is renamed into blobs/ (verified blobs may stay: they are
    named by their hash); no snapshot, ref or record appears until every file is verified."""
    project.models(bert="hf:org/bert")
    assert project.run("lock")[0] == 0
    root = _snapshot_root(tmp_path)
    for path, check, blob in (
        ("config.json", "git blob sha1", git_blob_sha1(CONFIG)),
        ("model.weights.h5", "sha256", hashlib.sha256(WEIGHTS).hexdigest()),
    ):
        hub.corrupt = {path}
        code, out, err = project.run("sync")
        assert code == 1, out + err
        assert f"{path}: {check} is " in err and "nothing of it was published" in err, err
        assert not (root / "blobs" / blob).exists()
        assert not (root / "snapshots").exists() and not (root / "refs").exists()
        assert not list((root / "hubpin").glob("*.json"))
    hub.corrupt = set()
    assert project.run("sync")[0] == 0
    assert project.run("verify")[0] == 0


def test_verify_finds_a_damaged_blob_and_repair_fetches_it(
    project: Project, hub: HfServer, tmp_path: Path
) -> None:
    project.models(bert="hf:org/bert")
    assert project.run("sync")[0] == 0
    blob = _snapshot_root(tmp_path) / "blobs" / hashlib.sha256(WEIGHTS).hexdigest()
    blob.write_bytes(bytes(len(WEIGHTS)))  # same size: only a re-hash tells
    assert project.run("status")[0] == 0
    code, out, err = project.run("verify")
    assert code == 1 and "model.weights.h5: sha256 is" in out + err
    code, out, err = project.run("verify", "--repair")
    assert code == 0, err
    assert blob.read_bytes() == WEIGHTS
    assert project.run("verify")[0] == 0


def test_token_goes_to_the_hub_only_and_gated_repos_say_what_they_need(
    project: Project, hub: HfServer, tmp_path: Path
) -> None:
    hub.add("org/gated", FILES, gated=True)
    project.models(g="hf:org/gated")
    code, _, err = project.run("lock")
    assert code == 1
    assert (
        "g (hf:org/gated): Hugging Face repository org/gated is gated (HTTP 401): it needs a token"
        in err
    )
    assert "https://huggingface.co/org/gated" in err

    token_file = tmp_path / "hf-home" / "token"  # where `hf auth login` writes it
    token_file.parent.mkdir(parents=True)
    token_file.write_text(TOKEN + "\n")
    since = len(hub.requests)
    code, _, err = project.run("lock")
    assert code == 1 and "has not accepted the terms; accept them on" in err
    assert TOKEN not in err

    hub.repos["org/gated"].accepted.add("alice")
    code, out, err = project.run("sync")
    assert code == 0, err
    assert TOKEN not in out + err + project.lock.read_text()
    asked = hub.requests[since:]
    assert all(r.authorization == f"Bearer {TOKEN}" for r in asked if r.server == "hub")
    cdn = [r for r in asked if r.server == "cdn"]
    assert cdn and all(r.authorization is None for r in cdn)  # the LFS redirect's other host


def test_prune_removes_only_snapshots_this_project_made_and_no_lock_pins(
    project: Project, hub: HfServer, tmp_path: Path
) -> None:
    """Hugging Face's cache is the machine's: prune removes a snapshot its own sync made once
    no project's lock pins it, and never one another lock claims or hubpin did not make."""
    first = hub.repos["org/bert"].refs["main"]
    project.models(bert="hf:org/bert")
    assert project.run("sync")[0] == 0  # P makes the snapshot of the first commit
    other = project.root.parent / "other"  # Q pins the same commit, finds it present
    other.mkdir()
    (other / "models.toml").write_text('[models.bert]\nhandle = "hf:org/bert"\n')
    q = ["-m", str(other / "models.toml")]
    assert project.run(*q, "sync")[0] == 0
    root = _snapshot_root(tmp_path)
    theirs = tmp_path / "hf-cache" / "models--org--theirs" / "snapshots" / ("e" * 40)
    theirs.mkdir(parents=True)  # what huggingface_hub left: no hubpin record
    (theirs / "config.json").write_bytes(b"{}")
    second = hub.push("org/bert", {**FILES, "config.json": b'{"n": 2}'})
    assert project.run("lock", "--upgrade")[0] == 0 and project.run("sync")[0] == 0

    code, _, err = project.run("prune")  # Q's lock still pins the first commit
    assert code == 0, err
    assert (root / "snapshots" / first).is_dir() and (root / "hubpin" / f"{first}.json").exists()
    assert "1 pinned by other projects' locks" in err, err

    assert project.run(*q, "lock", "--upgrade")[0] == 0 and project.run(*q, "sync")[0] == 0
    code, _, err = project.run("prune", "--dry-run")
    assert code == 0 and f"would remove {root / 'snapshots' / first}" in err, err
    assert (root / "snapshots" / first).is_dir()
    code, _, err = project.run("prune")
    assert code == 0, err
    assert f"removed {root / 'snapshots' / first}" in err, err
    assert not (root / "snapshots" / first).exists()
    assert not (root / "hubpin" / f"{first}.json").exists()
    assert not (root / "blobs" / git_blob_sha1(CONFIG)).exists()  # only the first linked it
    assert (root / "blobs" / hashlib.sha256(WEIGHTS).hexdigest()).exists()  # the second's too
    assert (theirs / "config.json").read_bytes() == b"{}"
    assert project.run("verify")[0] == 0 and project.run(*q, "verify")[0] == 0
    assert (root / "refs" / "main").read_text() == second


def test_a_project_synced_while_another_prunes_keeps_its_snapshot(
    project: Project, hub: HfServer, tmp_path: Path
) -> None:
    """Q's sync finds the snapshot present and notes Q while P's prune is planning (held here
    in its read of a note, a FIFO, after it listed the notes). Before: P's prune went on from
    the notes it had read and removed the snapshot Q's sync had called "already present"."""
    from faultkit import sync_while_reading_a_note

    first = _dropped_by_p(project, hub)
    other = project.root.parent / "other"
    root = _snapshot_root(tmp_path)
    fifo = root / "hubpin" / "users" / "0-held.json"
    code, out, q_err, err = sync_while_reading_a_note(fifo, project.root, project.cache, other)
    assert code == 0 and "already present" in out, out + q_err
    assert "1 pinned by other projects' locks" in err, err
    assert (root / "snapshots" / first / "config.json").read_bytes() == CONFIG


def _dropped_by_p(project: Project, hub: HfServer) -> str:
    """P made the snapshot of org/bert's first commit and pins another now (its prune's to
    remove); Q, in ``<root>/../other``, pins the first commit and has not synced. The first
    commit."""
    first = hub.repos["org/bert"].refs["main"]
    project.models(bert="hf:org/bert")
    assert project.run("sync")[0] == 0
    hub.push("org/bert", {**FILES, "config.json": b'{"n": 2}'})
    assert project.run("lock", "--upgrade")[0] == 0 and project.run("sync")[0] == 0
    other = project.root.parent / "other"
    other.mkdir()
    (other / "models.toml").write_text(f'[models.bert]\nhandle = "hf:org/bert@{first}"\n')
    return first


def test_prune_decides_on_a_snapshot_under_its_lock_with_the_notes_as_they_are_then(
    project: Project, hub: HfServer, tmp_path: Path
) -> None:
    """P's prune planned to remove a snapshot it made and no longer pins, then waits for the
    snapshot's ``hubpin/<commit>.lock`` (held here, as a live sync filling it would); Q's
    sync, which finds the snapshot present, notes Q meanwhile and waits for that lock to
    look again. Under the lock prune reads the notes again and keeps it; Q's sync says
    "already present" (exit 0). Before: prune took no lock and removed the snapshot while
    Q's sync said "already present"."""
    from faultkit import spawn_hubpin, spawn_waiting, sync_while_waiting

    first = _dropped_by_p(project, hub)
    other = project.root.parent / "other"
    root = _snapshot_root(tmp_path)
    lock = root / "hubpin" / f"{first}.lock"
    prune, release = spawn_waiting(
        project.root, project.cache, lock, lambda task: root / "hubpin" / f".{task}.tmp", "prune"
    )
    sync = spawn_hubpin(other, project.cache, "sync")
    notes = root / "hubpin" / "users"
    out, err, prune_err = sync_while_waiting(
        prune, release, sync, lambda: len(list(notes.glob("*.json"))) == 2
    )
    assert sync.returncode == 0 and "already present" in out, out + err
    assert prune.returncode == 0 and "1 pinned by other projects' locks" in prune_err, prune_err
    assert (root / "snapshots" / first / "config.json").read_bytes() == CONFIG
    code, out, _ = project.run("-m", str(other / "models.toml"), "status")
    assert code == 0 and out.splitlines()[-1].split()[-1] == "synced", out


def test_bundle_then_sync_from_it_with_the_hub_stopped(
    project: Project, hub: HfServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``bundle`` copies every pinned file, checked (LFS files by sha256 beside the archives,
    the others by git blob id); ``sync --from`` fills another machine's Hugging Face cache
    from it alone, each file checked again, and a tampered file publishes nothing."""
    project.models(bert="hf:org/bert")
    assert project.run("lock")[0] == 0
    bundle = tmp_path / "bundle"
    code, _, err = project.run("bundle", str(bundle))
    assert code == 0, err
    assert "3 Hugging Face files" in err, err
    assert (bundle / "archives" / hashlib.sha256(WEIGHTS).hexdigest()).read_bytes() == WEIGHTS
    assert (bundle / "huggingface" / git_blob_sha1(CONFIG)).read_bytes() == CONFIG
    hub.stop()

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "machine-b"))
    code, _, err = project.run("sync", "--from", str(bundle))
    assert code == 0, err
    commit = _lock(project)["bert"]["huggingface"]["commit"]  # type: ignore[index]
    snapshot = tmp_path / "machine-b" / "models--org--bert" / "snapshots" / commit
    assert {p: (snapshot / p).read_bytes() for p in FILES} == FILES
    assert project.run("verify")[0] == 0

    (bundle / "huggingface" / git_blob_sha1(VOCAB)).write_bytes(b"[PAD]\n[UNK]\nthe\ncat\n")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "machine-c"))
    code, _, err = project.run("sync", "--from", str(bundle))
    assert code == 1 and "vocab.txt: git blob sha1 is" in err, err
    assert not (tmp_path / "machine-c" / "models--org--bert" / "snapshots").exists()


def test_an_oci_bundle_refuses_a_file_outside_lfs(
    project: Project, hub: HfServer, registry: Registry, oci_login: OciLogin
) -> None:
    """A registry holds blobs by sha256 and the lock has only a git blob id for config.json:
    the bundle fails naming the alias and the file, and pushes no tag."""
    oci_login.allow(registry)
    project.models(bert="hf:org/bert")
    assert project.run("lock")[0] == 0
    target = f"oci://{registry.host}/team/hf:v1"
    code, _, err = project.run("bundle", target)
    assert code == 1, err
    small = {git_blob_sha1(CONFIG), git_blob_sha1(VOCAB)}
    assert any(f"bert (hf:org/bert): {target}/huggingface/{b}: " in err for b in small), err
    assert "models.lock was not written" in err
    code, _, err = project.run("sync", "--from", target)
    assert code == 2 and "no models.lock" in err, err


def test_an_image_holds_the_pinned_snapshot_in_hugging_faces_layout_and_refuses_a_folder(
    project: Project,
    hub: HfServer,
    registry: Registry,
    oci_login: OciLogin,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """`hubpin image` of Hugging Face pins (one commit by two revisions, one alias pinning a
    file of it) holds blobs, snapshots of relative links, refs and hubpin's record, checked
    as packed; from the unpacked image, read-only, with the Hub stopped, unmodified
    huggingface_hub reads exactly the pinned bytes, `sync --locked` keeps both and resolve
    gives the image's snapshot. A damaged blob makes no image; a local folder pin is refused
    (before: HF pins were left out with exit 0, so the image's lock named what it lacked)."""
    from test_oci_image import _unpack

    oci_login.allow(registry)
    commit = hub.repos["org/bert"].refs["main"]
    hub.tag("org/bert", "v1", commit)
    project.write(
        '[models.bert]\nhandle = "hf:org/bert"\n\n'
        '[models.cfg]\nhandle = "hf:org/bert@v1"\ninclude = ["config.json"]\n'
    )
    code, _, err = project.run("sync")
    assert code == 0, err
    root = _snapshot_root(tmp_path)
    blob = root / "blobs" / git_blob_sha1(VOCAB)
    blob.write_bytes(VOCAB.upper())  # same size, other bytes: only packing's hash sees it
    target = f"oci://{registry.host}/team/hf"
    code, out, err = project.run("image", f"{target}:bad")
    assert code == 1 and out == "" and "Traceback" not in err, err
    assert f"bert: {blob} changed since it was synced" in err and "verify --repair" in err
    assert project.run("verify", "--repair")[0] == 0
    code, out, err = project.run("image", f"{target}:v1")
    assert code == 0, err

    rootfs = _unpack(oci_login, f"{registry.host}/team/hf:v1", tmp_path) / "rootfs"
    cache = rootfs / "models" / "huggingface"
    inside = cache / "models--org--bert"
    assert (inside / "refs" / "main").read_bytes() == (inside / "refs" / "v1").read_bytes()
    assert (inside / "refs" / "v1").read_bytes() == commit.encode()
    link = inside / "snapshots" / commit / "assets" / "tokenizer" / "vocab.txt"
    assert os.readlink(link) == f"../../../../blobs/{git_blob_sha1(VOCAB)}"
    hub.stop()
    for path in rootfs.rglob("*"):
        if not path.is_symlink():
            path.chmod(path.stat().st_mode & ~0o222)
    code = """
print(json.dumps(open(h.hf_hub_download("org/bert", "config.json", revision="v1")).read()))
folder = h.snapshot_download("org/bert")
import pathlib
print(json.dumps({str(p.relative_to(folder)): p.read_bytes().hex()
                  for p in pathlib.Path(folder).rglob("*") if p.is_file()}))
"""
    out = client(code, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache))
    assert out[0] == CONFIG.decode()
    assert out[1] == {path: data.hex() for path, data in FILES.items()}
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    code, out, err = project.run("sync", "--locked", "--json")
    assert code == 0, err
    assert [m["action"] for m in json.loads(out)["models"]] == ["keep", "keep"], out
    monkeypatch.setenv("HUBPIN_LOCK", str(rootfs / "models" / "models.lock"))
    monkeypatch.chdir(tmp_path)
    for alias in ("bert", "cfg"):
        code, out, err = project.run("resolve", alias)
        assert (code, out.strip()) == (0, str(inside / "snapshots" / commit)), err
    for path in rootfs.rglob("*"):
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o200)
    monkeypatch.delenv("HUBPIN_LOCK")
    monkeypatch.chdir(project.root)

    (project.root / "mine").mkdir()
    (project.root / "mine" / "saved_model.pb").write_bytes(b"pb")
    with project.manifest.open("a") as fh:
        fh.write('\n[models.mine]\nhandle = "mine"\n')
    assert project.run("lock")[0] == 0
    code, out, err = project.run("image", f"{target}:v2")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "mine (mine): a local folder is read in place" in err and "tar -czf" in err


def test_a_clean_resync_is_answered_from_the_stamp_by_stat_checks(
    project: Project, hub: HfServer, tmp_path: Path
) -> None:
    """A second plain sync of a lock with a Hugging Face pin takes the stat-only path (no
    pydantic), and prints what the full path prints; a snapshot missing a blob is not taken
    on the stamp's word: the full path fetches it again."""
    project.models(bert="hf:org/bert")
    assert project.run("lock")[0] == 0
    code, first, imported = hubpin_imports(project, "sync")
    assert code == 0 and "pydantic" in imported and "fetched" in first, first
    code, fast, imported = hubpin_imports(project, "sync")
    assert code == 0 and "pydantic" not in imported, "the stamp was not used"
    elsewhere = {"XDG_CACHE_HOME": str(tmp_path / "no-stamps")}
    code, full, imported = hubpin_imports(project, "sync", env=elsewhere)
    assert code == 0 and "pydantic" in imported and fast == full
    (_snapshot_root(tmp_path) / "blobs" / git_blob_sha1(VOCAB)).unlink()
    code, said, imported = hubpin_imports(project, "sync")
    assert code == 0 and "pydantic" in imported and "fetched" in said, said
    assert project.run("verify")[0] == 0


def test_include_and_exclude_choose_the_files(
    project: Project, hub: HfServer, tmp_path: Path
) -> None:
    project.write(
        '[models.bert]\nhandle = "hf:org/bert"\ninclude = ["*.json", "assets/"]\n'
        'exclude = ["assets/tokenizer/vocab.txt"]\n'
    )
    code, _, err = project.run("sync")
    assert code == 0, err
    pin = _lock(project)["bert"]
    assert [f["path"] for f in pin["huggingface"]["files"]] == ["config.json"]  # type: ignore[index]
    assert pin["huggingface"]["complete"] is False  # type: ignore[index]
    commit = pin["huggingface"]["commit"]  # type: ignore[index]
    assert not (_snapshot_root(tmp_path) / "trees" / f"{commit}.json").exists()
    assert project.run("lock", "--check")[0] == 0
    project.write('[models.bert]\nhandle = "hf:org/bert"\ninclude = ["*.json"]\n')
    code, out, _ = project.run("lock", "--check")
    assert (code == 1 and "exclude" in out + project.capsys.readouterr().err) or code == 1

    project.write('[models.x]\nhandle = "https://tfhub.dev/google/x/1"\ninclude = ["*"]\n')
    code, _, err = project.run("lock")
    assert code == 2 and "include and exclude choose files of a Hugging Face repository only" in err


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def _keras(script: str, cwd: Path, **env: str) -> str:
    """Run ``script`` in a fresh interpreter with the tests' helpers (kerasmodels); its stdout."""
    helpers = os.pathsep.join([WORKTREE, str(Path(__file__).parent)])
    return run_python(script, {"PYTHONPATH": helpers, "KERAS_BACKEND": "tensorflow", **env}, cwd)


@pytest.mark.tf
def test_keras_hub_preset_from_the_hub_loads_offline_as_pinned(
    project: Project, hub: HfServer, tmp_path: Path, bert_presets: dict[int, Path]
) -> None:
    """A real preset pushed to the Hub; after sync, with the Hub stopped and HF_HUB_OFFLINE=1,
    unmodified ``from_preset("hf://org/kbert")`` and ``from_preset(hubpin.resolve(...))``
    compute what the preset computes, though main has moved on to another one."""
    hub.add("org/kbert", _files(bert_presets[3]))
    project.models(kbert="hf://org/kbert")
    code, _, err = project.run("sync")
    assert code == 0, err
    hub.push("org/kbert", _files(bert_presets[1]))  # main moves after the lock
    hub.stop()
    want = outputs_in_process(str(bert_presets[3]))
    script = (
        "import runpy, sys, hubpin\n"
        "sys.argv = ['load', 'hf://org/kbert', hubpin.resolve('kbert')]\n"
        "from kerasmodels import LOAD_SCRIPT\nexec(LOAD_SCRIPT)\n"
    )
    out = _keras(script, project.root, HF_HUB_OFFLINE="1")
    assert [line for line in out.splitlines() if line.startswith("loaded ")] == want * 2


def test_install_answers_a_preset_only_with_listed_files_of_one_pinned_commit(
    project: Project, hub: HfServer, tmp_path: Path
) -> None:
    """``install()``'s answer to KerasHub's ``get_file`` (keras_hub's own module is not
    needed for this: the patch is installed into a bare module; the keras_hub process test
    below runs it for real): a preset two aliases pin at other commits is refused naming
    both (before: the alphabetically last won silently); a file the pin does not list is
    not found, though the shared snapshot holds it (before: returned unchecked)."""
    import types

    import hubpin
    from hubpin.runtime import _PinnedPresets

    old = hub.repos["org/bert"].refs["main"]
    hub.push("org/bert", {**FILES, "config.json": b'{"n": 2}'})
    project.write(
        f'[models.new]\nhandle = "hf:org/bert"\n\n[models.old]\nhandle = "hf:org/bert@{old}"\n'
    )
    assert project.run("sync")[0] == 0
    module = types.ModuleType("preset_utils")
    module.get_file = lambda preset, path: pytest.fail(f"keras_hub asked for {preset} {path}")  # type: ignore[attr-defined]
    _PinnedPresets(hubpin.Lock(project.lock), strict=True).patch(module)
    with pytest.raises(hubpin.PresetConflictError) as refused:
        module.get_file("hf://org/bert", "config.json")
    said = str(refused.value)
    assert "preset hf://org/bert names 2 models pinned in " in said and "\n" not in said
    assert f": new (hf://org/bert@{hub.repos['org/bert'].refs['main']}) and " in said
    assert f" and old (hf://org/bert@{old})" in said and "hubpin.resolve('old')" in said

    project.write('[models.cfg]\nhandle = "hf:org/bert"\ninclude = ["config.json"]\n')
    code, _, err = project.run("sync")  # the snapshot still holds new's files of this commit
    assert code == 0, err
    snapshot = Path(hubpin.Lock(project.lock).resolve("cfg"))
    assert (snapshot / "model.weights.h5").read_bytes() == WEIGHTS
    _PinnedPresets(hubpin.Lock(project.lock), strict=True).patch(module)
    assert module.get_file("hf://org/bert", "config.json") == str(snapshot / "config.json")
    for unlisted in ("model.weights.h5", "../../../../etc/passwd"):
        with pytest.raises(FileNotFoundError, match=r"pinned as cfg in .*lists no such file"):
            module.get_file("hf://org/bert", unlisted)


def test_strict_install_refuses_a_preset_folder_the_lock_does_not_pin(
    project: Project, hub: HfServer, tmp_path: Path
) -> None:
    """``from_preset(<folder>)`` under strict ``install()`` is ``hub.load(<folder>)``'s rule:
    a folder the lock does not pin is refused (before: keras_hub's own ``get_file`` read it,
    unchecked); where ``hubpin.resolve`` put a pinned model still loads, its listed files
    only (keras_hub's module is not needed: the patch is installed into a bare module)."""
    import types

    import hubpin
    from hubpin.runtime import _PinnedPresets

    project.write('[models.cfg]\nhandle = "hf:org/bert"\ninclude = ["config.json"]\n')
    assert project.run("sync")[0] == 0
    other = tmp_path / "other_preset"
    other.mkdir()
    (other / "config.json").write_bytes(CONFIG)
    module = types.ModuleType("preset_utils")
    module.get_file = lambda preset, path: os.path.join(preset, path)  # type: ignore[attr-defined]
    lock = hubpin.Lock(project.lock)
    _PinnedPresets(lock, strict=True).patch(module)
    with pytest.raises(hubpin.UnpinnedHandleError) as refused:
        module.get_file(str(other), "config.json")
    said = str(refused.value)
    assert f"preset {other} is not pinned in {project.lock}" in said and "\n" not in said
    assert "hubpin.resolve" in said and "hubpin lock && hubpin sync" in said

    snapshot = lock.resolve("cfg")
    assert module.get_file(snapshot, "config.json") == os.path.join(snapshot, "config.json")
    assert module.get_file(f"{snapshot}/", "config.json") == os.path.join(snapshot, "config.json")
    with pytest.raises(FileNotFoundError, match=r"pinned as cfg in .*lists no such file"):
        module.get_file(snapshot, "model.weights.h5")  # in no file list of this lock
    module.get_file = lambda preset, path: os.path.join(preset, path)  # type: ignore[attr-defined]
    _PinnedPresets(lock, strict=False).patch(module)  # not strict: keras_hub reads it
    assert module.get_file(str(other), "config.json") == str(other / "config.json")


@pytest.mark.tf
def test_install_makes_unmodified_keras_hub_load_the_pinned_preset_and_refuse_others(
    project: Project, hub: HfServer, bert_presets: dict[int, Path]
) -> None:
    """Online, with main moved on since the lock, ``from_preset("hf://org/kbert")`` after
    ``hubpin.install()`` computes the pinned preset's outputs (keras_hub alone would fetch
    main's files), and an unpinned preset is refused before anything is downloaded."""
    hub.add("org/kbert", _files(bert_presets[3]))
    hub.add("org/unpinned", _files(bert_presets[3]))
    first = hub.add("org/twice", _files(bert_presets[3]))
    hub.push("org/twice", _files(bert_presets[1]))
    project.write(
        '[models.kbert]\nhandle = "hf://org/kbert"\n\n'
        f'[models.a]\nhandle = "hf:org/twice@{first}"\n\n[models.b]\nhandle = "hf:org/twice"\n'
    )
    code, _, err = project.run("sync")
    assert code == 0, err
    code, snapshot, _ = project.run("resolve", "kbert")
    (Path(snapshot.strip()) / "task.json").write_text("{}")  # in the snapshot, not in the lock
    hub.push("org/kbert", _files(bert_presets[1]))
    want = outputs_in_process(str(bert_presets[3]))  # (version 1's differ: test_kerashub)
    script = (
        "import sys, hubpin\nhubpin.install()\n"
        "sys.argv = ['load', 'hf://org/kbert']\n"
        "from kerasmodels import LOAD_SCRIPT\nexec(LOAD_SCRIPT)\n"
        "try:\n    keras_hub.models.BertBackbone.from_preset('hf://org/unpinned')\n"
        "except hubpin.UnpinnedHandleError as e:\n    print('refused', e)\n"
        "try:\n    keras_hub.models.BertBackbone.from_preset('hf://org/twice')\n"
        "except hubpin.PresetConflictError as e:\n    print('conflict', e)\n"
        "from keras_hub.src.utils.preset_utils import check_file_exists\n"
        "print('task.json', check_file_exists('hf://org/kbert', 'task.json'))\n"
    )
    before = len(hub.log("hub"))
    out = _keras(script, project.root)
    assert [line for line in out.splitlines() if line.startswith("loaded ")] == want
    assert "refused preset hf://org/unpinned is not pinned in" in out, out
    assert "conflict preset hf://org/twice names 2 models pinned in " in out, out
    assert ": a (hf://org/twice@" in out and "hubpin.resolve('b')" in out, out
    assert "task.json False" in out, out  # what keras_hub sees of a file the lock lacks
    assert len(hub.log("hub")) == before  # neither asked the Hub for anything


def test_two_projects_pinning_other_files_of_one_commit_both_stay_synced(
    project: Project, hub: HfServer, tmp_path: Path
) -> None:
    """One snapshot folder per commit is shared by every project on the machine: a project
    that pins only some files of a commit, synced after one that pins them all, leaves the
    other's files and record usable (before: the second sync rewrote the commit's record
    with its own file list, so the first project's `hubpin.resolve` raised DamagedEntryError
    and its next sync rebuilt the snapshot, and so on, turn by turn)."""
    project.models(bert="hf:org/bert")
    other = project.root.parent / "other"
    other.mkdir()
    (other / "models.toml").write_text(
        '[models.bert]\nhandle = "hf:org/bert"\ninclude = ["config.json"]\n'
    )
    q = ["-m", str(other / "models.toml")]
    assert project.run("sync")[0] == 0
    code, _, err = project.run(*q, "sync")
    assert code == 0, err
    for args in ([], q):
        code, out, err = project.run(*args, "status")
        assert code == 0 and "synced" in out, out + err
        code, out, err = project.run(*args, "resolve", "bert")
        assert code == 0, out + err
        code, out, err = project.run(*args, "sync", "--dry-run", "--json")
        assert [s["action"] for s in json.loads(out)["models"]] == ["keep"], out
        assert project.run(*args, "verify")[0] == 0


def _edit_lock(project: Project, change: Callable[[dict[str, Any]], None]) -> None:
    import tomli_w

    data = tomllib.loads(project.lock.read_text())
    change(data["models"]["bert"])
    project.lock.write_text(tomli_w.dumps(data))


def _check_fails(project: Project, *words: str) -> None:
    code, out, err = project.run("lock", "--check")
    assert code == 1 and all(w in out + err for w in words), (code, out + err)
    code, out, err = project.run("sync", "--frozen")
    assert code == 2 and "bert" in err, (code, out + err)


def test_a_hand_edited_hugging_face_pin_fails_lock_check_and_lock_repins_it(
    project: Project, hub: HfServer
) -> None:
    """What the handle and the manifest's include/exclude determine of a pin, offline: the
    commit a handle names (``hf:org/bert@<commit>``), which files may be pinned, and whether
    the pin is the whole commit. Each edit below kept the tree digest, file count and size
    adding up, and passed `lock --check` and `sync --frozen` before."""
    from hubpin.cache.huggingface import File, files_digest

    first = hub.repos["org/bert"].refs["main"]
    second = hub.push("org/bert", {**FILES, "config.json": b'{"n": 2}'})
    project.models(bert="hf:org/bert")  # main: the second commit, as an attacker copies it
    assert project.run("lock")[0] == 0
    theirs = tomllib.loads(project.lock.read_text())["models"]["bert"]
    project.models(bert=f"hf:org/bert@{first}")
    assert project.run("lock")[0] == 0
    genuine = project.lock.read_bytes()

    def other_commit(pin: dict[str, Any]) -> None:
        keep = {k: pin[k] for k in ("handle",)}
        pin.update(theirs | keep)
        pin["huggingface"] = theirs["huggingface"] | {"revision": first}

    _edit_lock(project, other_commit)
    _check_fails(project, "bert", f"huggingface.commit is {second}", f"names commit {first}")
    assert project.run("lock")[0] == 0
    assert project.lock.read_bytes() == genuine  # re-pinned, never carried forward

    def incomplete(pin: dict[str, Any]) -> None:
        pin["huggingface"]["complete"] = False

    _edit_lock(project, incomplete)
    _check_fails(project, "huggingface.complete is false")

    project.write('[models.bert]\nhandle = "hf:org/bert"\ninclude = ["*.json"]\n')
    assert project.run("lock")[0] == 0

    def more_files(pin: dict[str, Any]) -> None:
        files = pin["huggingface"]["files"] + [
            {k: v for k, v in f.items()}
            for f in theirs["huggingface"]["files"]
            if f["path"] == "model.weights.h5"
        ]
        pin["huggingface"]["files"] = files
        rows = [File(f["path"], f["size"], f["blob_id"], f.get("sha256")) for f in files]
        pin |= {"tree_digest": files_digest(rows), "file_count": len(rows)}
        pin["unpacked_size"] = sum(f.size for f in rows)

    _edit_lock(project, more_files)
    _check_fails(project, "huggingface.files", "model.weights.h5", "include")


def test_prune_keeps_what_huggingface_hub_downloaded_into_a_snapshot_it_removes(
    project: Project, hub: HfServer, tmp_path: Path
) -> None:
    """A snapshot folder is shared with huggingface_hub: prune removes the files hubpin
    verified into it, never the ones huggingface_hub downloaded there itself (before: the
    whole folder, so `hf_hub_download` of them failed offline; their blobs were left)."""
    first = hub.repos["org/bert"].refs["main"]
    project.write('[models.bert]\nhandle = "hf:org/bert"\ninclude = ["config.json"]\n')
    assert project.run("sync")[0] == 0
    code = (
        f'print(json.dumps(h.hf_hub_download("org/bert", "assets/tokenizer/vocab.txt", '
        f"revision={first!r})))"
    )
    (theirs,) = client(code)
    hub.push("org/bert", {**FILES, "config.json": b'{"n": 2}'})
    assert project.run("lock", "--upgrade")[0] == 0 and project.run("sync")[0] == 0
    code, _, err = project.run("prune")
    assert code == 0, err
    snapshot = _snapshot_root(tmp_path) / "snapshots" / first
    assert not (snapshot / "config.json").exists()  # hubpin's file is gone
    assert Path(str(theirs)).read_bytes() == VOCAB  # huggingface_hub's file stays
    assert not (_snapshot_root(tmp_path) / "hubpin" / f"{first}.json").exists()
    assert not (_snapshot_root(tmp_path) / "blobs" / git_blob_sha1(CONFIG)).exists()


def test_a_blob_that_is_a_symlink_out_of_the_cache_is_damage(
    project: Project, hub: HfServer, tmp_path: Path
) -> None:
    """As for a tensorflow_hub entry, a blob that is a symlink (here to a file outside the
    cache, with the pinned bytes for now) is not a verified file: `status`, `verify` and
    `hubpin.resolve` say so, and `sync` puts a real file in its place, leaving the target
    alone (before: every check passed, following the link)."""
    project.models(bert="hf:org/bert")
    assert project.run("sync")[0] == 0
    blob = _snapshot_root(tmp_path) / "blobs" / hashlib.sha256(WEIGHTS).hexdigest()
    outside = tmp_path / "elsewhere.h5"
    blob.replace(outside)
    blob.symlink_to(outside)
    code, out, err = project.run("verify")
    assert code == 1 and "model.weights.h5" in out + err and "symlink" in out + err, out + err
    code, out, _ = project.run("status")
    assert "synced" not in out.splitlines()[-1], out
    assert project.run("resolve", "bert")[0] == 1
    assert project.run("sync")[0] == 0
    assert not blob.is_symlink() and blob.read_bytes() == WEIGHTS
    assert outside.read_bytes() == WEIGHTS and project.run("verify")[0] == 0


@pytest.mark.parametrize("revision", ["{outside}", "v1//x", "v1/", "v1.lock", "v1@{0}", "a\\\\b"])
def test_a_revision_that_is_no_git_ref_name_is_refused(
    project: Project, hub: HfServer, tmp_path: Path, revision: str
) -> None:
    """The revision names ``refs/<revision>`` in Hugging Face's cache: one that git would not
    take as a ref name is refused in one line, before the Hub is asked (before: an absolute
    one, answered by a Hub or a mirror, made sync write the commit to that path, outside the
    cache: ``refs/`` joined with ``/…`` is ``/…``)."""
    outside = tmp_path / "outside"
    revision = revision.replace("{outside}", str(outside))
    hub.tag("org/bert", revision, hub.repos["org/bert"].refs["main"])
    project.models(bert=f"hf:org/bert@{revision}")
    code, out, err = project.run("sync")
    assert code == 2 and "models.bert.handle" in err and "not a revision" in err, out + err
    assert len(err.strip().splitlines()) == 1, err
    assert not outside.exists() and not project.lock.exists()
