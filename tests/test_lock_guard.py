"""The pin is a guarantee: a lock hubpin could not have made is refused, offline, by name.

Each kind of pin is its own type (an archive, a Kaggle archive, a gs:// folder, a
local folder) with its fields required; the fields the handle determines are
recomputed by ``lock --check`` and by every command that trusts the lock.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import Model, Project


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
    assert code == 2 and "models.double: kind must be 'archive', 'gcs' or 'folder'" in line, line


def test_lock_bytes_of_every_kind_survive_a_read_and_write(local: Project) -> None:
    from hubpin.lockfile import dumps, read_lock

    assert dumps(read_lock(local.lock)) == local.lock.read_text()
    demo = Path(__file__).resolve().parent.parent / "examples" / "demo" / "models.lock"
    assert dumps(read_lock(demo)) == demo.read_text()
