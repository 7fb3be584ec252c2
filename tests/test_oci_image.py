"""`hubpin image`: the ready cache as an OCI image, byte-for-byte reproducible, pushed to the
real Distribution registry and checked by independent clients: skopeo copies it into an OCI
layout, umoci unpacks it, and unmodified hub.load and hubpin.load run from that filesystem."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Model, Project, run_here
from hubserver import HubServer
from kaggleserver import KaggleServer
from oci_registry import OciLogin, Registry
from test_kaggle_sync import SLUG, kaggle  # noqa: F401 - the Kaggle stand-in fixture


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def _unpack(login: OciLogin, image: str, scratch: Path) -> Path:
    """skopeo copies the image into an OCI layout, umoci unpacks it: the runtime bundle."""
    if not shutil.which("umoci"):
        pytest.skip("needs umoci (apt-get install -y docker-registry skopeo umoci)")
    layout, unpacked = scratch / "layout", scratch / "unpacked"
    login.skopeo("copy", f"docker://{image}", f"oci:{layout}:x")
    done = subprocess.run(
        ["umoci", "unpack", "--rootless", "--image", f"{layout}:x", str(unpacked)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return unpacked


def test_image_of_the_cache_is_reproducible_and_loads_unmodified_from_its_filesystem(
    project: Project,
    hub: HubServer,
    locked_for_registry: tuple[str, str],
    registry: Registry,
    models: dict[str, Model],
    oci_login: OciLogin,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    double, triple = locked_for_registry
    assert project.run("sync", "--locked")[0] == 0
    code, out, err = project.run("image", f"oci://{registry.host}/team/cache:v1")
    assert code == 0, err
    digest = out.strip()
    assert digest.startswith("sha256:") and "TFHUB_CACHE_DIR=/models/tfhub_modules" in err

    # Another machine, later: another cache folder, other file times, same lock: same bytes.
    time.sleep(1.1)
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert project.run("sync", "--locked")[0] == 0
    code, out, err = project.run("image", f"oci://{registry.host}/team/cache:v2")
    assert code == 0, err
    assert out.strip() == digest

    # skopeo reads it as an image; umoci unpacks it; the cache is in its filesystem.
    # An index over one layer for each platform (containerd refuses a foreign architecture).
    image = f"docker://{registry.host}/team/cache:v1"
    raw = oci_login.skopeo("inspect", "--raw", image)
    assert f"sha256:{hashlib.sha256(raw.encode()).hexdigest()}" == digest
    index = json.loads(raw)
    assert {m["platform"]["architecture"] for m in index["manifests"]} >= {"amd64", "arm64"}
    layers = {
        json.loads(
            oci_login.skopeo("inspect", "--raw", f"{image.rpartition(':')[0]}@{m['digest']}")
        )["layers"][0]["digest"]
        for m in index["manifests"]
    }
    assert len(layers) == 1
    for arch in ("amd64", "arm64"):
        inspect = json.loads(oci_login.skopeo("inspect", image, arch=arch))
        assert inspect["Architecture"] == arch and inspect["Layers"] == sorted(layers)
        assert "TFHUB_CACHE_DIR=/models/tfhub_modules" in inspect["Env"]
    unpacked = _unpack(oci_login, f"{registry.host}/team/cache:v1", tmp_path)
    root = unpacked / "rootfs" / "models"
    cache = root / "tfhub_modules"
    for handle, name in ((double, "double"), (triple, "triple")):
        key = hashlib.sha1(handle.encode()).hexdigest()
        assert (cache / key / "saved_model.pb").read_bytes() == (
            models[name].folder / "saved_model.pb"
        ).read_bytes()
        assert (cache / f"{key}.descriptor.txt").read_text() == f"Module: {handle}\n"
        record = json.loads((cache / f"{key}.hubpin.json").read_text())
        assert record["handle"] == handle and record["tree_digest"].startswith("tree-v1:")
    assert (root / "models.lock").read_bytes() == project.lock.read_bytes()
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        f"{hashlib.sha1(h.encode()).hexdigest()}{suffix}"
        for h in (double, triple)
        for suffix in ("", ".descriptor.txt", ".hubpin.json")
    )

    # Unmodified hub.load and hubpin.load, no network (the hub is stopped), writing nothing.
    hub.stop()
    for path in (unpacked / "rootfs").rglob("*"):
        if not path.is_symlink():
            path.chmod(path.stat().st_mode & ~0o222)
    before = _snapshot(root)
    elsewhere = tmp_path / "app"
    elsewhere.mkdir()
    out = run_here(
        "import tensorflow as tf, tensorflow_hub as hub, hubpin\n"
        f"m = hub.load({double!r})\n"
        "print(m(tf.constant([1.0, 2.0])).numpy().tolist())\n"
        "m = hubpin.load('triple')\n"
        "print(m(tf.constant([1.0, 2.0])).numpy().tolist())\n",
        env={"TFHUB_CACHE_DIR": str(cache), "HUBPIN_LOCK": str(root / "models.lock")},
        cwd=elsewhere,
    )
    lines = out.strip().splitlines()
    assert json.loads(lines[-2]) == models["double"].expected([1.0, 2.0])
    assert json.loads(lines[-1]) == models["triple"].expected([1.0, 2.0])
    assert _snapshot(root) == before
    for path in (unpacked / "rootfs").rglob("*"):
        path.chmod(path.stat().st_mode | 0o200)


def test_a_damaged_cache_entry_makes_no_image(
    project: Project,
    locked_for_registry: tuple[str, str],
    registry: Registry,
) -> None:
    double, _ = locked_for_registry
    assert project.run("sync", "--locked")[0] == 0
    variables = next(project.entry(double).rglob("variables.data-*"))
    data = bytearray(variables.read_bytes())
    data[0] ^= 0xFF  # same size, other bytes: only hashing while packing sees it
    variables.write_bytes(bytes(data))
    os.utime(variables, ns=(variables.stat().st_atime_ns, variables.stat().st_mtime_ns))
    uploads = registry.requests("PUT", "/blobs/uploads/")
    manifests = registry.requests("PUT", "/manifests/")
    code, out, err = project.run("image", f"oci://{registry.host}/team/damaged:v1")
    assert code == 1 and out == ""
    assert "double: " in err and "changed since it was synced" in err
    assert "run: hubpin verify --repair" in err and "Traceback" not in err
    assert registry.requests("PUT", "/blobs/uploads/") == uploads
    assert registry.requests("PUT", "/manifests/") == manifests


def test_image_needs_a_synced_cache(
    project: Project,
    locked_for_registry: tuple[str, str],
    registry: Registry,
) -> None:
    code, _, err = project.run("image", f"oci://{registry.host}/team/empty:v1")
    assert code == 1
    assert "double (" in err and "is not ready" in err and "run: hubpin sync --locked" in err
    code, _, err = project.run("image", f"oci://{registry.host}/team/empty")
    assert code == 2 and "name the tag to write" in err


def test_a_kaggle_model_is_in_kagglehubs_layout_in_the_image(
    project: Project,
    kaggle: KaggleServer,  # noqa: F811 - the fixture imported above
    registry: Registry,
    models: dict[str, Model],
    oci_login: OciLogin,
    tmp_path: Path,
) -> None:
    oci_login.allow(registry)
    project.write(f'[models.affine]\nhandle = "kaggle:{SLUG}"\n')
    code, _, err = project.run("sync")
    assert code == 0, err
    code, _, err = project.run("image", f"oci://{registry.host}/team/kaggle:v1")
    assert code == 0, err
    kaggle.stop()
    rootfs = _unpack(oci_login, f"{registry.host}/team/kaggle:v1", tmp_path) / "rootfs"
    entry = rootfs / "models" / "kagglehub" / "models" / SLUG / "1"
    assert (entry.parent / "1.complete").read_bytes() == b""
    out = run_here(
        f"import kagglehub\nprint(kagglehub.model_download({SLUG + '/1'!r}, 'saved_model.pb'))\n"
        f"print(kagglehub.model_download({SLUG + '/1'!r}))\n",
        env={"KAGGLEHUB_CACHE": str(rootfs / "models" / "kagglehub")},
    )
    one_file, found = (Path(line) for line in out.strip().splitlines()[-2:])
    assert one_file == entry / "saved_model.pb" and found == entry
    assert (found / "saved_model.pb").read_bytes() == (
        models["double"].folder / "saved_model.pb"
    ).read_bytes()
