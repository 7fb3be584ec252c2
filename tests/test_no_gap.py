"""Replacing an entry leaves no gap: readers in other processes, one looking at the folder as
fast as it can and one running tf.saved_model.load, while ``verify --repair`` and ``sync``
replace a damaged entry again and again, must always find the complete model; and
``hubpin.resolve`` / ``hubpin.load`` in a loop must always find it with its record."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Model, Project
from faultkit import heavy_archive, heavy_model, hubpin_env, leftovers

from hubpin import atomic

LOOKER = r"""
import json, os, sys
entry, stop = sys.argv[1], sys.argv[2]
expected = set(json.loads(sys.argv[3]))
pb = open(sys.argv[4], "rb").read()
pb_path = os.path.join(entry, "saved_model.pb")
looks = full = absent = straddled = 0
wrong = []


def folder():
    try:
        return os.stat(entry).st_ino
    except FileNotFoundError:
        return None


open(stop + ".ready", "w").close()
while True:
    for _ in range(200):  # cheap looks, about a microsecond each: a gap of a few is seen
        looks += 1
        if not os.path.exists(pb_path):
            absent += 1
    if os.path.exists(stop):
        break
    # A whole look: every file listed, saved_model.pb read in full. One that began in the
    # old folder and ended in the new saw the old one being removed (a reader holding a
    # folder open sees that however it was replaced); every other one must be complete.
    full += 1
    before = folder()
    found = {
        os.path.relpath(os.path.join(d, f), entry).replace(os.sep, "/")
        for d, _, files in os.walk(entry) for f in files
    }
    try:
        with open(pb_path, "rb") as fh:
            same = fh.read() == pb
    except OSError:
        same = False
    after = folder()
    if before is None or after is None:
        absent += 1
    elif before != after:
        straddled += 1
    elif found != expected or not same:
        wrong.append(f"{len(found)}/{len(expected)} files, saved_model.pb intact: {same}")
print(json.dumps({"looks": looks, "full": full, "absent": absent, "straddled": straddled,
                  "wrong": wrong[:5]}))
"""

# Run by both hubpin readers: a call that must find the entry with its record. The only
# failure allowed is DamagedEntryError naming the test's own damage (a byte appended).
BY_ALIAS = r"""
import hubpin
counts = {"calls": 0, "damaged": 0}
failures = []


def by_alias(call):
    counts["calls"] += 1
    try:
        call()
    except hubpin.DamagedEntryError as exc:
        if "assets/blob-0.bin is" not in str(exc):
            failures.append(f"DamagedEntryError: {exc}")
        counts["damaged"] += 1
    except Exception as exc:
        failures.append(f"{type(exc).__name__}: {str(exc)[:300]}")
"""

LOADER = (
    BY_ALIAS
    + r"""
import json, os, sys
import tensorflow as tf
entry, stop, scale, bias, alias = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
loads, tf_failures = 0, []


def hubpin_load():  # the same, by alias: hubpin checks the entry against its record first
    got = hubpin.load(alias)(tf.constant([1.0, 2.0])).numpy().tolist()
    if got != [scale + bias, 2 * scale + bias]:
        failures.append(f"computed {got}")


while not os.path.exists(stop):
    try:
        model = tf.saved_model.load(entry)
        got = model(tf.constant([1.0, 2.0])).numpy().tolist()
        if got != [scale + bias, 2 * scale + bias]:
            tf_failures.append(f"computed {got}")
    except Exception as exc:  # what hub.load would raise to the user
        tf_failures.append(f"{type(exc).__name__}: {str(exc)[:200]}")
    loads += 1
    by_alias(hubpin_load)
    if loads == 1:
        open(stop + ".ready", "w").close()
print(json.dumps({"loads": loads, "failures": tf_failures[:5], "hubpin_loads": counts["calls"],
                  "damaged": counts["damaged"], "hubpin_failures": failures[:5]}))
"""
)

HUBPIN_READER = (
    BY_ALIAS
    + r"""
import json, os, sys
stop, alias = sys.argv[1], sys.argv[2]
while not os.path.exists(stop):
    by_alias(lambda: hubpin.resolve(alias))
    if counts["calls"] == 1:
        open(stop + ".ready", "w").close()
print(json.dumps({"reads": counts["calls"], "damaged": counts["damaged"], "failures": failures[:5],
                  "failed": len(failures)}))
"""
)


def _start(script: str, cache: Path, *args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        env=hubpin_env(cache),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_ready(proc: subprocess.Popen[str], stop: Path, what: str) -> None:
    deadline = time.monotonic() + 180
    while not stop.with_name(stop.name + ".ready").exists():
        assert proc.poll() is None, f"{what} died: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, f"{what} never started"
        time.sleep(0.05)


def test_replacing_a_damaged_entry_never_hides_it_from_readers(
    project: Project, models: dict[str, Model], tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = tmp_path_factory.getbasetemp()
    source = heavy_model(base, models["double"].folder)
    (project.root / "mirror").mkdir()
    (project.root / "mirror" / "heavy.tar.gz").write_bytes(
        heavy_archive(base, models["double"].folder)
    )
    handle = "mirror/heavy.tar.gz"
    project.models(heavy=handle)
    assert project.run("sync")[0] == 0
    entry = project.entry(handle)
    files = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
    blob = entry / "assets" / "blob-0.bin"

    stops = project.root.parent / "stops"
    stops.mkdir()
    replaced = 0

    def replace(times: int) -> None:
        nonlocal replaced
        for _ in range(times):
            if replaced % 2:  # the same size, other bytes: only a re-hash sees it
                blob.write_bytes(bytes(b ^ 0xFF for b in blob.read_bytes()))
                code, out, err = project.run("verify", "--repair")
                assert code == 0 and "heavy                repaired" in out, err
            else:  # a size that differs: sync's stat check sees it
                with blob.open("ab") as fh:
                    fh.write(b"!")
                code, out, err = project.run("sync")
                assert code == 0 and "replaced an entry that had: assets/blob-0.bin is" in out, err
            replaced += 1

    # Part 1: a reader looking as fast as it can, on a core of its own (two renames leave
    # a gap of microseconds: it sees it on most replacements).
    stop = stops / "looker"
    looker = _start(
        LOOKER,
        project.cache,
        str(entry),
        str(stop),
        json.dumps(files),
        str(source / "saved_model.pb"),
    )
    resolver_stop = stops / "resolver"
    resolver = _start(HUBPIN_READER, project.cache, str(resolver_stop), "heavy", cwd=project.root)
    try:
        _wait_ready(looker, stop, "the looking reader")
        _wait_ready(resolver, resolver_stop, "hubpin.resolve")
        replace(60)
    finally:
        stop.touch()
        resolver_stop.touch()
        looked, err = looker.communicate(timeout=120)
        resolved, resolve_err = resolver.communicate(timeout=120)
    assert looker.returncode == 0, err[-2000:]
    assert resolver.returncode == 0, resolve_err[-2000:]
    looks = json.loads(looked)
    resolves = json.loads(resolved)
    with project.capsys.disabled():  # the figures, shown with -s
        print(f"\n{replaced} replacements; looker: {looks}; hubpin.resolve: {resolves}")
    # Before: the record was unlinked before the swap and written after; 1,831 resolves failed.
    assert resolves["failures"] == [] and resolves["reads"] > replaced, resolves
    assert looks["absent"] == 0 and looks["wrong"] == [], (
        f"{looks['absent']} of {looks['looks']} looks found no saved_model.pb, "
        f"{len(looks['wrong'])} whole looks a partial entry, over {replaced} replacements"
    )
    assert looks["full"] > replaced

    # Part 2: tf.saved_model.load in a loop, computing with what it loaded, as hub.load would.
    stop = stops / "loader"
    loader = _start(
        LOADER,
        project.cache,
        str(entry),
        str(stop),
        str(models["double"].scale),
        str(models["double"].bias),
        "heavy",
        cwd=project.root,
    )
    try:
        _wait_ready(loader, stop, "the loading reader")
        while replaced < 80:
            replace(1)
    finally:
        stop.touch()
        loaded, err = loader.communicate(timeout=120)
    assert loader.returncode == 0, err[-2000:]
    loads = json.loads(loaded)
    with project.capsys.disabled():
        print(f"{replaced} replacements; loader: {loads}")
    assert loads["failures"] == [], loads
    assert loads["loads"] > 5, loads
    # Before: 205 of 2,345 hubpin.load calls raised NotSyncedError ("no hubpin record").
    assert loads["hubpin_failures"] == [], loads
    assert project.run("verify")[0] == 0
    assert leftovers(project.cache) == []


def test_exchange_swaps_two_folders_in_one_step_here(tmp_path: Path) -> None:
    """renameat2(RENAME_EXCHANGE) on the tests' file system; elsewhere exchange says False."""
    old, new = tmp_path / "entry", tmp_path / "work"
    old.mkdir()
    new.mkdir()
    (old / "saved_model.pb").write_text("old")
    (new / "saved_model.pb").write_text("new")
    if not sys.platform.startswith("linux") or atomic._load() is None:
        assert atomic.exchange(new, old) is False
        pytest.skip("no renameat2 here: publish uses two renames")
    assert atomic.exchange(new, old) is True
    assert (old / "saved_model.pb").read_text() == "new"
    assert (new / "saved_model.pb").read_text() == "old"
    with pytest.raises(FileNotFoundError):
        atomic.exchange(tmp_path / "missing", old)
    assert (old / "saved_model.pb").read_text() == "new"


def test_exchange_on_tmpfs(tmp_path: Path) -> None:
    """tensorflow_hub's default cache is under $TMPDIR, often a tmpfs."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        (mount / "a").mkdir()
        (mount / "b").mkdir()
        (mount / "a" / "x").write_text("a")
        assert atomic.exchange(mount / "a", mount / "b") is (atomic._load() is not None)
        if atomic._load() is not None:
            assert (mount / "b" / "x").read_text() == "a"
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
