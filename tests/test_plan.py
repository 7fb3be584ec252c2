"""One plan per sync: ``sync --dry-run`` prints it, ``sync`` executes exactly it, and
``sync --json`` prints it with each step's outcome (against the loopback hub)."""

from __future__ import annotations

import json
from typing import Any

from conftest import Project
from hubserver import HubServer
from test_cli import _four_states


def _doc(project: Project, *argv: str, code: int = 0) -> dict[str, Any]:
    got, out, err = project.run("sync", *argv)
    assert got == code, err
    return json.loads(out)


def test_sync_json_prints_the_plan_with_each_steps_outcome(
    project: Project, hub: HubServer
) -> None:
    _four_states(project, hub)
    got, out, err = project.run("sync", "--json")
    assert got == 0, err
    assert err == "", "results go to stdout; nothing failed, so nothing on stderr"
    doc = json.loads(out)
    assert (doc["command"], doc["dry_run"], doc["cache_dir"]) == ("sync", False, str(project.cache))
    steps = {m["alias"]: (m["action"], m["outcome"]["status"]) for m in doc["models"]}
    assert steps == {
        "adopted": ("adopt", "adopted"),
        "double": ("keep", "present"),
        "quint": ("download", "fetched"),
        "triple": ("replace", "fetched"),
    }
    triple = next(m for m in doc["models"] if m["alias"] == "triple")
    assert triple["outcome"]["detail"].startswith("replaced an entry that had: saved_model.pb is")
    assert all(m["outcome"]["exit_code"] == 0 for m in doc["models"])
    assert doc["totals"]["outcomes"] == {
        "fetched": 2,
        "present": 1,
        "adopted": 1,
        "linked": 0,
        "checked": 0,
        "failed": 0,
    }
    assert project.run("verify")[0] == 0, "what the outcomes claim is in the cache"
    again = _doc(project, "--json")
    assert {(m["action"], m["outcome"]["status"]) for m in again["models"]} == {("keep", "present")}


def test_a_failed_step_is_in_the_json_with_its_exit_code(project: Project, hub: HubServer) -> None:
    project.models(double=hub.handle("google/double/1"), triple=hub.handle("google/triple/1"))
    assert project.run("lock", "--no-fill")[0] == 0
    code, _, err = project.run("--progress", "sync", "double")  # a bar of what the plan fetches
    assert code == 0 and "1 model to fetch" in err, err
    got, out, err = project.run("sync", "--offline", "--json")
    assert got == 1
    doc = json.loads(out)
    (double, triple) = doc["models"]
    assert (double["action"], double["outcome"]["status"]) == ("keep", "present")
    assert (triple["action"], triple["outcome"]["status"], triple["outcome"]["exit_code"]) == (
        "fail",
        "failed",
        1,
    )
    message = "not in the cache, and --offline forbids downloading; run: hubpin sync"
    assert triple["outcome"]["detail"] == message
    assert err == f"{'triple':<20} FAILED: {message}\n"


def test_the_sync_does_what_its_dry_run_planned(project: Project, hub: HubServer) -> None:
    _four_states(project, hub)
    planned = _doc(project, "--dry-run", "--json")
    done = _doc(project, "--json")
    for model in done["models"]:
        assert model.pop("outcome")["status"] != "failed"
    assert done["models"] == planned["models"], "the same steps, sizes and reasons"
    assert {k: v for k, v in done["totals"].items() if k != "outcomes"} == planned["totals"]
    assert [m["action"] for m in planned["models"]] == ["adopt", "keep", "download", "replace"]


def test_sync_json_says_what_locking_did_first(project: Project, hub: HubServer) -> None:
    project.models(double=hub.handle("google/double/1"))
    doc = _doc(project, "--json")
    assert doc["lock_first"] == {
        "reasons": ["models.lock does not exist"],
        "pin": ["double"],
        "drop": [],
    }
    (model,) = doc["models"]  # locking filled the cache, so the sync keeps what it wrote
    assert (model["action"], model["outcome"]["status"]) == ("keep", "present")
    assert _doc(project, "--json")["lock_first"] is None


def test_a_link_from_a_step_that_links_itself_waits_for_it(
    project: Project, hub: HubServer
) -> None:
    """c names b's handle (c's entry is b's to fill) and b's archive is a's (b is hard-linked
    from a's entry): c waits for b, which waits for a. Steps were run in two waves (no
    source, a source), so c could run beside b and crash on its missing outcome (KeyError:
    a traceback, and nothing said of the models)."""
    hub.models["google/copy/1"] = hub.models["google/double/1"]  # the same archive
    a, b = hub.handle("google/double/1"), hub.handle("google/copy/1")
    project.models(a=a, b=b, c=b)
    assert project.run("lock", "--no-fill")[0] == 0  # so that the sync fills all three

    def downloads() -> int:
        return hub.downloads("google/double/1") + hub.downloads("google/copy/1")

    before = downloads()
    code, out, err = project.run("sync")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("a                    fetched "), out
    assert lines[1:3] == [
        "b                    hard-linked: hard-linked from a's entry (the same archive)",
        "c                    hard-linked: the same cache entry as b",
    ], out
    assert downloads() == before + 1  # one download fills the three
    code, out, _ = project.run("verify")
    assert code == 0 and out.count(" ok\n") == 3, out
