"""Every user mistake ends in exit 2 (or 1 for a failed check) and one line naming what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Project


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("hubpin: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        (
            '[models.a]\nhandle = "https://x/y"\nbogus = 1\n',
            "models.toml:3: models.a.bogus: unknown key",
        ),
        (
            '[models.a]\nhandle = "https://x/y"\nformat = "ZIPPED"\n',
            "models.toml:3: models.a.format:",
        ),
        (
            '[models.a]\nhandle = "ftp://x/y.tar.gz"\n',
            "models.toml:2: models.a.handle: unsupported scheme 'ftp'",
        ),
        (
            '[models.a]\nhandle = ""\n',
            "models.toml:2: models.a.handle: a handle must be a non-empty",
        ),
        (
            '[models.a]\nformat = "COMPRESSED"\n',
            "models.toml:1: models.a.handle: required key is missing",
        ),
        (
            '[models."bad alias"]\nhandle = "https://x/y"\n',
            "alias 'bad alias' must match [A-Za-z0-9_.-]+",
        ),
        ('[models.a]\nhandle = "https://x/y"\nsha256 = "abc"\n', "models.toml:3: models.a.sha256:"),
        (
            '[modles.a]\nhandle = "https://x/y"\n',
            "models.toml:1: modles: unknown table [modles.a]; did you mean [models.a]?",
        ),
        (
            '[models.a\nhandle = "https://x/y"\n',
            "models.toml:1: invalid TOML (column 10): Expected ']' at the end of a table",
        ),
        (  # a string without its quotes: the line, and the line as it should be
            '[models.a]\nhandle = "https://x/y"\nformat = COMPRESSED\n',
            "models.toml:3: invalid TOML (column 10): Invalid value; if it is a string, quote "
            'it: format = "COMPRESSED"',
        ),
        (  # git merged two branches that both edited the manifest
            '<<<<<<< HEAD\n[models.a]\nhandle = "https://x/y"\n=======\n>>>>>>> other\n',
            "models.toml:1: invalid TOML (column 1): Invalid statement; a merge conflict's "
            "marker: resolve the conflict",
        ),
        (
            '[models.a]\nhandle = "https://x/y\n',
            "models.toml:2: invalid TOML (column 22): Illegal character '\\n'; a string is not "
            'closed: end it with "',
        ),
        ('[models.a]\nhandle = "gs://"\n', "a gs:// handle needs a bucket"),
    ],
)
def test_bad_manifest_exits_2_naming_file_line_and_key(
    project: Project, manifest: str, expected: str
) -> None:
    project.write(manifest)
    for command in (["lock"], ["lock", "--check"], ["sync"]):
        code, _, err = project.run(*command)
        assert code == 2, (command, err)
        assert expected in _one_error_line(err)


def test_missing_manifest(project: Project) -> None:
    code, _, err = project.run("lock")
    assert code == 2
    assert "no models.toml in" in _one_error_line(err) and "hubpin add ALIAS HANDLE" in err
    code, _, err = project.run("-m", "elsewhere.toml", "lock")
    assert code == 2 and "elsewhere.toml: file not found" in _one_error_line(err)


def test_bad_settings_file_and_environment(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.models(a="https://example.invalid/m/1")
    project.write("jobs = 0\n", "hubpin.toml")
    code, _, err = project.run("lock")
    assert code == 2 and "hubpin.toml:1: jobs: expected a number >= 1, found 0" in _one_error_line(
        err
    )
    project.write("colour = 'blue'\n", "hubpin.toml")
    code, _, err = project.run("lock")
    assert code == 2 and "hubpin.toml:1: colour: unknown key" in _one_error_line(err)
    (project.root / "hubpin.toml").unlink()
    monkeypatch.setenv("HUBPIN_RETRIES", "many")
    code, _, err = project.run("lock")
    assert code == 2 and "environment variable HUBPIN_RETRIES: retries:" in _one_error_line(err)
    monkeypatch.delenv("HUBPIN_RETRIES")
    monkeypatch.setenv("TFHUB_MODEL_LOAD_FORMAT", "SIDEWAYS")
    code, _, err = project.run("lock")
    assert code == 2 and "TFHUB_MODEL_LOAD_FORMAT" in _one_error_line(err)


def test_edited_lock_is_rejected(project: Project) -> None:
    project.models(a="https://example.invalid/m/1")
    project.write('version = 1\nmanifest_digest = "x"\n[models.a]\nhandle = 3\n', "models.lock")
    code, _, err = project.run("sync", "--frozen")
    lock = project.lock
    assert (code, err.splitlines()) == (
        2,
        [
            f"hubpin: error: {lock}:3: models.a: required keys are missing: format, tree_digest, "
            "unpacked_size, file_count, kind, cache_key, url, archive_sha256, archive_size",
            f"hubpin: error: {lock}:4: models.a.handle: expected a string, found 3",
        ],
    )
    project.write("version = 7\n", "models.lock")
    code, _, err = project.run("status")
    assert code == 2 and "lock version 7 is not supported" in _one_error_line(err)


def test_plain_http_to_a_remote_host_is_refused(project: Project) -> None:
    project.models(remote="http://example.invalid/models/m/1")
    code, _, err = project.run("lock")
    assert code == 2
    assert "remote (http://example.invalid/models/m/1)" in err
    assert "plain http is refused for non-loopback hosts" in err and "allow_http" in err
    assert not project.lock.exists()


def test_unknown_alias_and_bad_flags(project: Project) -> None:
    project.models(bert="https://example.invalid/bert/1")
    code, _, err = project.run("sync", "brt")
    assert code == 2 and "no model with alias 'brt'; did you mean bert?" in _one_error_line(err)
    with pytest.raises(SystemExit) as exc:
        project.run("sync", "--jobs", "many")
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        project.run("--tfhub_model_load_format", "ZIP", "lock")
    assert exc.value.code == 2
    code, _, err = project.run("add", "bad alias", "https://example.invalid/x/1")
    assert code == 2 and "must match" in _one_error_line(err)
    assert "bad alias" not in project.manifest.read_text()


@pytest.mark.parametrize(
    ("handle", "meant"),
    [
        ("tfhub.dev/google/spice/2", "https://tfhub.dev/google/spice/2"),
        (
            "www.kaggle.com/models/google/x/tensorFlow2/y",
            "https://www.kaggle.com/models/google/x/tensorFlow2/y",
        ),
        ("https//tfhub.dev/google/x/1.tar.gz", "https://tfhub.dev/google/x/1.tar.gz"),
        ("gs//bucket/m.tar.gz", "gs://bucket/m.tar.gz"),
    ],
)
def test_a_url_written_without_its_scheme_is_bad_input_naming_the_url(
    project: Project, handle: str, meant: str
) -> None:
    """tensorflow_hub would read these as paths too; when nothing is there, the line says
    which URL was probably meant, and it is exit 2 (the manifest is wrong), nothing written."""
    project.models(a=handle)
    for command in ("lock", "sync"):
        code, _, err = project.run(command)
        line = _one_error_line(err)
        assert code == 2, (command, err)
        assert line.startswith(f"hubpin: error: a ({handle}): "), line
        assert line.endswith(f'if it is a URL, write handle = "{meant}" in the manifest'), line
    assert not project.lock.exists()


def test_missing_local_archive_names_alias_and_path(project: Project) -> None:
    project.models(local="mirror/none.tar.gz")
    code, _, err = project.run("lock")
    assert code == 1
    assert "local (mirror/none.tar.gz):" in err and "none.tar.gz: archive not found" in err


def test_an_alias_added_to_the_manifest_but_not_locked_is_a_stale_lock_not_a_typo(
    project: Project,
) -> None:
    """`resolve`/`verify` of a model added to models.toml without re-locking: exit 1 and the
    command that pins it, not "no model with alias …; known: …" (exit 2)."""
    project.models(a="https://example.invalid/a/1")
    project.write('version = 1\nmanifest_digest = "x"\n', "models.lock")  # a lock of no models
    project.models(a="https://example.invalid/a/1", b="https://example.invalid/b/1")
    for command in (["resolve", "b"], ["verify", "b"]):
        code, out, err = project.run(*command)
        line = _one_error_line(err)
        assert (code, out) == (1, ""), (command, err)
        assert line == (
            f"hubpin: error: b: in {project.manifest} but not pinned in {project.lock}; "
            "run: hubpin lock"
        ), line
    code, _, err = project.run("resolve", "c")  # in neither: a typo, bad usage
    assert code == 2 and "no model with alias 'c'" in _one_error_line(err)


def _older_python() -> str | None:
    """An interpreter of 3.7-3.9 that runs (a pyenv shim may name one it cannot start)."""
    import shutil
    import subprocess

    found = [shutil.which(f"python3.{minor}") for minor in (9, 8, 7)]
    found += sorted(map(str, Path.home().glob(".pyenv/versions/3.[789].*/bin/python")))
    for python in filter(None, found):
        probe = subprocess.run([python, "-c", "pass"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return python
    return None


_OLDER_PYTHON = _older_python()


@pytest.mark.skipif(_OLDER_PYTHON is None, reason="no Python 3.7-3.9 on this machine")
def test_python_older_than_310_gets_one_line_naming_the_interpreter(tmp_path: Path) -> None:
    """`python3.9 -m hubpin` from a clone (pip refuses the install): one line, exit 2."""
    import subprocess

    from conftest import WORKTREE

    assert _OLDER_PYTHON is not None
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": WORKTREE, "HOME": str(tmp_path)}
    run = subprocess.run(
        [_OLDER_PYTHON, "-m", "hubpin", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (run.returncode, run.stdout) == (2, ""), run.stderr
    assert run.stderr.startswith("hubpin: error: hubpin needs Python 3.10 or newer, this is 3.")
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr


def test_a_folder_where_a_file_is_expected_names_the_file(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """-m, --lock and HUBPIN_LOCK take files; a project's folder gets the file's path
    (it was "<folder>.lock: no lock file" for -m, "[Errno 21] Is a directory" for --lock)."""
    project.models(a="https://example.invalid/a/1")
    root = project.root
    code, _, err = project.run("-m", str(root), "status")
    assert (code, _one_error_line(err)) == (
        2,
        f"hubpin: error: -m {root}: a folder; -m takes the file: -m {root / 'models.toml'}",
    )
    code, _, err = project.run("--lock", str(root), "status")
    assert (code, _one_error_line(err)) == (
        2,
        f"hubpin: error: --lock {root}: a folder; --lock takes the file: "
        f"--lock {root / 'models.lock'}",
    )
    import hubpin

    monkeypatch.setenv("HUBPIN_LOCK", str(root))
    with pytest.raises(hubpin.LockMissingError) as raised:
        hubpin.Lock()
    assert str(raised.value) == (
        f"{root}: a folder, not a lock file; name the file: {root / 'models.lock'}"
    )


@pytest.mark.parametrize(
    ("handle", "meant"),
    [
        ("tfhub.dev/google/x/1", "https://tfhub.dev/google/x/1"),
        ("https//h.io/m/1", "https://h.io/m/1"),
    ],
)
def test_add_of_a_url_without_its_scheme_says_the_command_with_it(
    project: Project, handle: str, meant: str
) -> None:
    code, _, err = project.run("add", "nb", handle)
    assert code == 2 and _one_error_line(err).endswith(f"for a URL run: hubpin add nb {meant}")
    assert not project.manifest.exists()


def test_a_lock_that_does_not_parse_says_lock_writes_it(project: Project) -> None:
    project.models(a="https://example.invalid/a/1")
    project.write("version = 1\nmanifest_digest = \n", "models.lock")  # cut off mid-write
    for command in (["status"], ["sync", "--frozen"], ["verify"]):
        code, _, err = project.run(*command)
        assert (code, _one_error_line(err)) == (
            2,
            f"hubpin: error: {project.lock}:2: invalid TOML (column 19): Invalid value; "
            "hubpin writes it: run: hubpin lock",
        ), (command, err)
