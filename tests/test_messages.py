"""The messages a newcomer meets first: one line each, naming what to change."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import WORKTREE, Model, Project
from gcs_emulator import _free_port

import hubpin


def _archive(project: Project, models: dict[str, Model]) -> None:
    (project.root / "double.tar.gz").write_bytes(models["double"].archive)


def test_a_plain_http_handle_is_one_error_line(project: Project) -> None:
    project.models(a="http://example.com/m.tar.gz")
    code, out, err = project.run("lock")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1, err
    assert err.startswith("hubpin: error: a (http://example.com/m.tar.gz): ") and "https" in err


def test_add_refuses_a_url_without_its_scheme_and_says_the_fix(project: Project) -> None:
    project.models(a="double.tar.gz")
    before = project.manifest.read_text()
    code, _, err = project.run("add", "bert", "tfhub.dev/google/bert/1")
    assert code == 2 and err.count("\n") == 1, err
    assert "no scheme" in err and "run: hubpin add bert https://tfhub.dev/google/bert/1" in err
    assert project.manifest.read_text() == before
    (project.root / "my.models").mkdir()
    (project.root / "my.models" / "x").mkdir()  # an existing folder that looks like a host: a path
    assert project.run("add", "local", "my.models/x")[0] == 0


def test_a_lower_case_format_in_the_manifest_is_accepted(
    project: Project, models: dict[str, Model]
) -> None:
    _archive(project, models)
    project.write('[models.a]\nhandle = "double.tar.gz"\nformat = "compressed"\n')
    code, _, err = project.run("lock")
    assert code == 0, err
    assert 'format = "COMPRESSED"' in project.lock.read_text()


@pytest.mark.parametrize("command", ["lock", "sync", "verify", "status"])
def test_a_cache_dir_that_is_a_file_says_so(
    project: Project, models: dict[str, Model], monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    _archive(project, models)
    project.models(a="double.tar.gz")
    if command != "lock":
        assert project.run("lock", "--no-fill")[0] == 0
    a_file = project.root.parent / "not-a-folder"
    a_file.write_text("")
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(a_file))
    code, _, err = project.run(command)
    assert code == 2, err
    assert err.splitlines()[-1] == (
        f"hubpin: error: the cache folder {a_file} is a file, not a folder; point TFHUB_CACHE_DIR "
        "(or --cache-dir, or cache_dir in hubpin.toml) at a folder"
    )


def test_not_synced_is_said_once(project: Project, models: dict[str, Model]) -> None:
    _archive(project, models)
    project.models(a="double.tar.gz")
    assert project.run("lock", "--no-fill")[0] == 0
    with pytest.raises(hubpin.NotSyncedError) as raised:
        hubpin.Lock(project.lock).resolve("a")
    message = str(raised.value)
    assert message.count("not synced") == 1 and message.endswith("; run: hubpin sync"), message


def test_status_warns_of_a_temporary_cache_only_when_it_is_the_default(
    project: Project, models: dict[str, Model], monkeypatch: pytest.MonkeyPatch
) -> None:
    _archive(project, models)
    project.models(a="double.tar.gz")
    assert project.run("lock", "--no-fill")[0] == 0
    chosen = Path(tempfile.gettempdir()) / "ci-models"  # a tmpfs picked for a throw-away job
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(chosen))
    code, out, err = project.run("status")
    assert code == 0 and "temporary folder" not in out + err, out
    monkeypatch.delenv("TFHUB_CACHE_DIR")  # tensorflow_hub's default, $TMPDIR/tfhub_modules
    code, out, err = project.run("status")
    assert code == 0 and "WARNING: the cache is under a temporary folder" in err, err


# A slim install without hubpin's gs:// and s3:// extras: gcsfs and botocore answer as missing.
WITHOUT_STORES = """
import runpy, sys
class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("gcsfs", "botocore"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _NotInstalled())
sys.argv = ["hubpin", "lock"]
runpy.run_module("hubpin", run_name="__main__")
"""


@pytest.mark.parametrize(
    ("handle", "needs", "extra", "packages"),
    [
        (
            "gs://bucket/m.tar.gz",
            "gs:// locations need gcsfs",
            "gcs",
            "'gcsfs>=2024.2' 'google-crc32c>=1.5'",
        ),
        ("s3://bucket/m.tar.gz", "s3:// locations need botocore", "s3", "'botocore>=1.40'"),
    ],
)
def test_a_missing_store_client_names_packages_that_are_published(
    project: Project, handle: str, needs: str, extra: str, packages: str
) -> None:
    project.models(a=handle)
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_STORES],
        cwd=project.root,
        env={**os.environ, "PYTHONPATH": WORKTREE},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[0] == (
        f"hubpin: error: a ({handle}): {needs}, which is not installed; run: pip install "
        f"{packages} (hubpin's {extra} extra; or, in a clone of hubpin: pip install '.[{extra}]')"
    )
    assert f"hubpin[{extra}]" not in result.stderr


@pytest.mark.parametrize(
    ("cache", "needs", "command"),
    [
        ("gs://bucket/tfhub", "gs:// locations need gcsfs", "status"),
        ("s3://bucket/tfhub", "s3:// locations need botocore", "sync"),
    ],
)
def test_a_store_cache_without_its_client_is_one_line_too(
    project: Project, models: dict[str, Model], cache: str, needs: str, command: str
) -> None:
    """cache_dir on gs:// or s3:// with the extra not installed: the cache's first check
    imported the client's exceptions before making the client, and ended in a traceback."""
    _archive(project, models)
    project.write('[models.a]\nhandle = "double.tar.gz"\n')
    assert project.run("lock", "--no-fill")[0] == 0
    argv = ["hubpin", command] + (["--frozen"] if command == "sync" else [])
    script = WITHOUT_STORES.replace('sys.argv = ["hubpin", "lock"]', f"sys.argv = {argv!r}")
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=project.root,
        env={**os.environ, "PYTHONPATH": WORKTREE, "TFHUB_CACHE_DIR": cache},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr
    assert f"{needs}, which is not installed; run: pip install" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("handle", "variable", "check"),
    [
        (
            "kaggle:acme/bert/tensorFlow2/base/1",
            "HUBPIN_KAGGLE_ENDPOINT",
            "the API endpoint: kaggle_endpoint in hubpin.toml (HUBPIN_KAGGLE_ENDPOINT, "
            "KAGGLE_API_ENDPOINT)",
        ),
        ("hf:org/bert@main", "HF_ENDPOINT", "the Hub's address: HF_ENDPOINT"),
    ],
)
def test_an_api_endpoint_that_is_down_names_its_setting(
    project: Project, monkeypatch: pytest.MonkeyPatch, handle: str, variable: str, check: str
) -> None:
    endpoint = f"http://127.0.0.1:{_free_port()}"  # bound once and released: nothing listens
    monkeypatch.setenv(variable, endpoint)
    monkeypatch.setenv("HUBPIN_RETRIES", "1")
    project.models(a=handle)
    code, _, err = project.run("lock")
    assert code == 1 and "retrying" not in err, err
    line = err.splitlines()[0]
    assert line.startswith(f"hubpin: error: a ({handle}): {endpoint}/"), line
    assert line.endswith(
        f": cannot reach {endpoint.removeprefix('http://')}: connection refused (gave up after 2 "
        "tries); check the network and any proxy (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), that the "
        f"host is up, or {check}"
    ), line


def test_every_mistake_of_a_manifest_at_once_with_suggestions(project: Project) -> None:
    manifest = project.write(
        "[models.bert]\n"
        'handel = "https://tfhub.dev/google/bert/1"\n'
        'fromat = "COMPRESSED"\n'
        "\n"
        "[models.spice]\n"
        'handle = "https://tfhub.dev/google/spice/2"\n'
        'format = "sideways"\n'
        'sha256 = "abc"\n'
        "tags = 3\n"
        "\n"
        "[model.extra]\n"
        'handle = "https://tfhub.dev/google/extra/1"\n'
    )
    code, out, err = project.run("lock")
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"hubpin: error: {manifest}:2: models.bert.handel: unknown key; did you mean handle?",
        f"hubpin: error: {manifest}:3: models.bert.fromat: unknown key; did you mean format?",
        f"hubpin: error: {manifest}:7: models.spice.format: expected one of 'COMPRESSED', "
        "'UNCOMPRESSED' or 'AUTO', found 'SIDEWAYS'",
        f"hubpin: error: {manifest}:8: models.spice.sha256: expected 64 lower-case hexadecimal "
        "digits (the archive's sha256), found 'abc'",
        f"hubpin: error: {manifest}:9: models.spice.tags: expected an array, found 3",
        f"hubpin: error: {manifest}:11: model: unknown table [model.extra]; did you mean "
        "[models.extra]?",
    ]


def test_every_mistake_of_the_settings_at_once_in_hubpins_words(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.models(a="https://tfhub.dev/google/a/1")
    settings = project.write(
        'jobs = "many"\nretires = 3\nallow_http = "maybe"\n\n[[mirror]]\nprefix = "a"\n'
        'replace = "b"\n\n[[mirrors]]\nprefx = "https://tfhub.dev/"\nreplace = "b"\n',
        "hubpin.toml",
    )
    code, _, err = project.run("lock")
    assert code == 2
    assert err.splitlines() == [
        f"hubpin: error: {settings}:1: jobs: expected an integer, found 'many'",
        f"hubpin: error: {settings}:2: retires: unknown key; did you mean retries?",
        f"hubpin: error: {settings}:3: allow_http: expected true or false, found 'maybe'",
        f"hubpin: error: {settings}:5: mirror: unknown table [[mirror]]; did you mean [[mirrors]]?",
        f"hubpin: error: {settings}:10: mirrors[0].prefx: unknown key; did you mean prefix?",
    ]
    settings.unlink()
    monkeypatch.setenv("HUBPIN_CONNECT_TIMEOUT", "0")
    monkeypatch.setenv("HUBPIN_RETRIES", "many")
    code, _, err = project.run("lock")
    assert (code, err.splitlines()) == (
        2,
        [
            "hubpin: error: environment variable HUBPIN_RETRIES: retries: expected an integer, "
            "found 'many'",
            "hubpin: error: environment variable HUBPIN_CONNECT_TIMEOUT: connect_timeout: "
            "expected a number > 0, found '0'",
        ],
    )


def test_results_on_stdout_diagnostics_on_stderr(
    project: Project, models: dict[str, Model], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a script reads (``hubpin verify 2>/dev/null``) is on stdout; progress, warnings,
    hints and errors are on stderr."""
    _archive(project, models)
    project.models(a="double.tar.gz")
    code, out, err = project.run("lock")
    assert (code, out) == (0, "") and err.startswith("pinned a → "), err  # progress
    code, out, err = project.run("sync", "--dry-run")
    assert (code, err) == (0, "")
    assert re.fullmatch(r"a +keep +- +\S+ \S+  already present", out.splitlines()[1]), out
    code, out, err = project.run("sync")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "a                    already present",
        f"synced 1 model into {project.cache}: 0 fetched, 1 already present, 0 checked in place, "
        "0 failed",
    ]
    assert project.run("verify") == (0, "a                    ok\n", "")
    code, out, err = project.run("lock", "--check")
    assert (code, out, err) == (0, "models.lock is up to date (1 model)\n", "")

    (project.entry("double.tar.gz") / "saved_model.pb").write_bytes(b"damaged")
    code, out, err = project.run("verify")
    assert (code, out.splitlines()[0]) == (1, "a                    DAMAGED")
    assert out.splitlines()[1].startswith("  changed saved_model.pb"), out
    assert err == f"1 of 1 models damaged in {project.cache}; run: hubpin verify --repair\n"
    code, out, err = project.run("-q", "verify")
    assert (code, out) == (1, "")

    monkeypatch.delenv("TFHUB_CACHE_DIR")  # tensorflow_hub's default, under $TMPDIR
    code, out, err = project.run("status")
    assert code == 0 and out.startswith(f"lock:  {project.lock} ("), out
    assert err == (
        "hubpin: WARNING: the cache is under a temporary folder that cleaners may empty; "
        "set TFHUB_CACHE_DIR or cache_dir in hubpin.toml\n"
    )


def test_resolve_of_a_pinned_folder_that_is_gone_names_it_and_what_to_run(
    project: Project, models: dict[str, Model]
) -> None:
    """A folder pin is read in place: sync cannot bring it back, so the line says what the
    lock expects there and both ways out (sync --frozen says the same)."""
    shutil.copytree(models["triple"].folder, project.root / "triple")
    project.models(mine="triple")
    assert project.run("lock")[0] == 0
    shutil.rmtree(project.root / "triple")
    folder = (project.root / "triple").resolve()
    code, out, err = project.run("resolve", "mine")
    assert (code, out, err.count("\n")) == (1, "", 1), err
    assert err.startswith("hubpin: error: mine (triple): the lock pins the local folder "), err
    assert f" {folder} (4 files, tree tree-v1:" in err and "found nothing there" in err, err
    assert err.rstrip().endswith(
        "or point the handle in the manifest at where it is now and run: hubpin lock"
    ), err
    # sync's and verify's rows start with the alias: the line does not say it again
    row = f"mine                 FAILED: the lock pins the local folder {folder} (4 files, tree "
    code, _, err = project.run("sync", "--frozen")
    assert code == 1 and row in err and "mine (triple)" not in err, err
    code, out, err = project.run("verify")
    assert code == 1 and f"  the lock pins the local folder {folder} (4 files" in out, out
    assert "mine (triple)" not in out + err, out + err
    # verify --repair cannot fetch a folder read in place: the hint does not send one there
    assert err == "1 of 1 models damaged; each is read in place, so its line says what to do\n"
