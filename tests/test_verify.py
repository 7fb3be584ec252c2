"""``hubpin verify [--repair] [--json]`` and ``sync --verify`` against real damage on disk."""

from __future__ import annotations

import json
import shutil

from conftest import Model, Project, run_here
from faultkit import leftovers, snapshot
from hubserver import HubServer

DOUBLE, TRIPLE = "google/double/1", "google/triple/1"


def _synced(project: Project, hub: HubServer) -> tuple[str, str]:
    double, triple = hub.handle(DOUBLE), hub.handle(TRIPLE)
    project.models(double=double, triple=triple)
    code, _, err = project.run("sync")
    assert code == 0, err
    return double, triple


def _flip(path) -> None:  # type: ignore[no-untyped-def]
    """Change one byte, keeping the size (what a stat-only check cannot see)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_verify_reports_each_damaged_path_and_repairs_only_what_is_damaged(
    project: Project, hub: HubServer, models: dict[str, Model]
) -> None:
    double, triple = _synced(project, hub)
    entry = project.entry(double)
    triple_before = snapshot(project.entry(triple))
    code, out, err = project.run("verify")
    assert code == 0 and "double               ok" in out and "triple               ok" in out

    _flip(entry / "saved_model.pb")
    (entry / "variables" / "variables.index").unlink()
    (entry / "notes.txt").write_text("left by someone")
    code, out, err = project.run("verify")
    assert code == 1
    lines = out.splitlines()
    at = lines.index("double               DAMAGED")
    assert lines[at + 1 : at + 4] == [
        "  missing variables/variables.index",
        "  extra file notes.txt",
        "  changed saved_model.pb",
    ]
    assert "triple               ok" in lines
    assert err == f"1 of 2 models damaged in {project.cache}; run: hubpin verify --repair\n"

    code, out, _ = project.run("verify", "--json")
    assert code == 1
    report = json.loads(out)
    assert report["models"]["triple"] == {"ok": True, "problems": []}
    assert report["models"]["double"]["ok"] is False
    assert "changed saved_model.pb" in report["models"]["double"]["problems"]

    downloads = {p: hub.archive_requests(p) for p in (DOUBLE, TRIPLE)}
    code, out, err = project.run("verify", "--repair")
    assert code == 0, err
    assert "double               repaired" in out
    assert hub.archive_requests(DOUBLE) == downloads[DOUBLE] + 1
    assert hub.archive_requests(TRIPLE) == downloads[TRIPLE], "an intact model was re-fetched"
    assert snapshot(entry) == snapshot(models["double"].folder)
    assert snapshot(project.entry(triple)) == triple_before
    assert leftovers(project.cache) == []
    assert project.run("verify")[0] == 0


def test_plain_sync_trusts_sizes_but_sync_verify_rehashes(
    project: Project, hub: HubServer, models: dict[str, Model]
) -> None:
    double, _ = _synced(project, hub)
    _flip(project.entry(double) / "saved_model.pb")
    code, out, err = project.run("sync")
    assert code == 0 and "0 fetched, 2 already present" in out
    code, out, err = project.run("sync", "--verify")
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.startswith("double "))
    assert "fetched" in line and "replaced an entry that had: changed saved_model.pb" in line
    assert snapshot(project.entry(double)) == snapshot(models["double"].folder)
    assert project.run("verify")[0] == 0


def test_a_tmp_cleaner_emptying_the_entry_is_repaired_and_loads(
    project: Project, hub: HubServer, models: dict[str, Model]
) -> None:
    double, _ = _synced(project, hub)
    shutil.rmtree(project.entry(double) / "variables")  # what tensorflow_hub users hit
    code, _, err = project.run("status")
    assert code == 0
    code, out, err = project.run("verify", "double")
    assert code == 1 and "  missing variables/variables.index" in out
    assert "  missing folder variables" in out and "triple" not in out + err
    assert project.run("verify", "--repair", "double")[0] == 0
    out = run_here(
        "import tensorflow as tf, tensorflow_hub as hub\n"
        f"print(hub.load({double!r})(tf.constant([3.0])).numpy().tolist())",
        env={"TFHUB_CACHE_DIR": str(project.cache)},
    )
    assert json.loads(out.strip().splitlines()[-1]) == models["double"].expected([3.0])


def test_a_lost_record_is_restored_without_downloading(project: Project, hub: HubServer) -> None:
    double, _ = _synced(project, hub)
    record = project.entry(double).with_name(project.entry(double).name + ".hubpin.json")
    record.write_text("{not json")
    code, out, err = project.run("verify")
    assert code == 1 and "no hubpin record for the entry" in out
    before = hub.archive_requests(DOUBLE)
    code, _, err = project.run("verify", "--repair")
    assert code == 0, err
    assert hub.archive_requests(DOUBLE) == before, "an intact entry was downloaded again"
    assert json.loads(record.read_text())["tree_digest"].startswith("tree-v1:")


def test_a_failed_repair_leaves_the_damaged_entry_as_it_was(
    project: Project, hub: HubServer
) -> None:
    double, _ = _synced(project, hub)
    _flip(project.entry(double) / "saved_model.pb")
    damaged = snapshot(project.entry(double))
    hub.stop()
    project.write("retries = 0\n", "hubpin.toml")
    code, _, err = project.run("verify", "--repair")
    assert code == 1
    assert "double               repair failed:" in err and "gave up after 1 tries" in err
    assert snapshot(project.entry(double)) == damaged
    assert leftovers(project.cache) == []


def test_verify_of_a_model_never_synced(project: Project, hub: HubServer) -> None:
    project.models(double=hub.handle(DOUBLE))
    assert project.run("lock", "--no-fill")[0] == 0
    code, out, _ = project.run("verify", "--json")
    assert code == 1
    assert json.loads(out)["models"]["double"] == {"ok": False, "problems": ["not synced"]}
    code, out, err = project.run("verify")  # before the first sync: nothing is damaged
    assert (code, out) == (1, "double               not synced\n"), out
    assert err == f"1 of 1 models not synced into {project.cache}; run: hubpin sync\n", err
    code, out, _ = project.run("verify", "--repair", "--json")
    assert code == 0
    assert json.loads(out)["models"]["double"]["repaired"] is True
