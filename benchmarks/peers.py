"""The peers of ``bench.py`` other than tensorflow_hub: kagglehub's ``model_download`` on the
test suite's Kaggle stand-in (tests/kaggleserver.py) and huggingface_hub's ``snapshot_download``
on its Hub stand-in (tests/hfserver.py), each stand-in in its own process.

kagglehub 1.x sends ``KAGGLE_API_ENVIRONMENT=TEST`` to ``http://localhost:7777``, so the
stand-in listens there (the one fixed port, as in the test suite); hubpin reads the same
variable. Both fill kagglehub's cache (``KAGGLEHUB_CACHE``), each a fresh one per run.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

SLUG = "bench/big/tensorFlow2/v"


def serve_kaggle(archive: Path) -> None:
    """``--serve-kaggle``: the stand-in with ``archive`` as SLUG version 1; prints its URL."""
    from kaggleserver import KaggleServer

    server = KaggleServer(api_port=7777, api_name="localhost")
    server.add(SLUG, archive.read_bytes())
    serve_until_eof(server.start())


def serve_until_eof(server: Any) -> None:
    """What a ``--serve…`` process does with its started stand-in: print its URL for
    :func:`server_process`, serve until its stdin closes, stop."""
    print(server.url, flush=True)
    sys.stdin.read()
    server.stop()


@contextlib.contextmanager
def server_process(args: list[str], what: str) -> Iterator[str]:
    """A stand-in in a process of its own (``bench.py`` run with ``args``), so that its work
    never shares a GIL with what is measured; yields its URL, stops it on leaving."""
    cmd = [sys.executable, str(Path(__file__).with_name("bench.py")), *args]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url:
            raise RuntimeError(f"{what} did not start")
        yield url
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


def kaggle_process(fixtures: Path, archive_name: str) -> contextlib.AbstractContextManager[str]:
    args = ["--serve-kaggle", archive_name, "--fixtures", str(fixtures)]
    return server_process(args, "Kaggle stand-in (is port 7777 in use?)")


def kagglehub_vs_hubpin(
    run: Callable[..., tuple[float, int]],
    interleaved: Callable[..., object],
    scratch: Path,
    runs: int,
) -> object:
    """Interleaved timings: ``hubpin sync --frozen`` (whole process) and in-process
    ``kagglehub.model_download`` of SLUG version 1, each into a fresh cache."""
    import kagglehub

    os.environ["KAGGLE_API_ENVIRONMENT"] = "TEST"
    project = scratch / "kaggle-project"
    project.mkdir()
    (project / "models.toml").write_text(f'[models.big]\nhandle = "kaggle:{SLUG}/1"\n')
    run(
        project,
        scratch / "kaggle-lock-cache",
        "lock",
        "--no-fill",
        KAGGLEHUB_CACHE=str(scratch / "kaggle-lock-kh"),
    )

    def ours(cache: Path) -> float:
        return run(project, cache, "sync", "--frozen", KAGGLEHUB_CACHE=str(cache / "kh"))[0]

    def theirs(cache: Path) -> float:
        os.environ["KAGGLEHUB_CACHE"] = str(cache / "kh")
        start = time.perf_counter()
        path = Path(kagglehub.model_download(f"{SLUG}/1"))
        elapsed = time.perf_counter() - start
        assert (path / "saved_model.pb").is_file(), path
        return elapsed

    return interleaved({"hubpin": ours, "kagglehub": theirs}, runs, scratch)


HF_REPO = "bench/big"


def serve_hf(archive: Path) -> None:
    """``--serve-hf``: the Hub stand-in with a repository holding ``archive`` as an LFS file."""
    from hfserver import HfServer

    server = HfServer().start()
    server.add(HF_REPO, {"config.json": b"{}", "model.weights.h5": archive.read_bytes()})
    serve_until_eof(server)


def hf_process(fixtures: Path, archive_name: str) -> contextlib.AbstractContextManager[str]:
    args = ["--serve-hf", archive_name, "--fixtures", str(fixtures)]
    return server_process(args, "Hugging Face stand-in")


def snapshot_download_vs_hubpin(
    run: Callable[..., tuple[float, int]],
    interleaved: Callable[..., object],
    url: str,
    scratch: Path,
    runs: int,
) -> object:
    """Interleaved: ``hubpin sync --frozen`` (whole process; sha256 of every file checked)
    and in-process ``huggingface_hub.snapshot_download`` (sizes only), fresh caches."""
    from huggingface_hub import snapshot_download

    project = scratch / "hf-project"
    project.mkdir()
    (project / "models.toml").write_text(f'[models.big]\nhandle = "hf:{HF_REPO}"\n')
    run(
        project,
        scratch / "hf-lock-cache",
        "lock",
        "--no-fill",
        HF_ENDPOINT=url,
        HF_HUB_CACHE=str(scratch / "hf-lock-hub"),
    )

    def ours(cache: Path) -> float:
        return run(
            project, cache, "sync", "--frozen", HF_ENDPOINT=url, HF_HUB_CACHE=str(cache / "hf")
        )[0]

    def theirs(cache: Path) -> float:
        start = time.perf_counter()
        path = Path(snapshot_download(HF_REPO, cache_dir=str(cache / "hf"), endpoint=url))
        elapsed = time.perf_counter() - start
        assert (path / "model.weights.h5").is_file(), path
        return elapsed

    return interleaved({"hubpin": ours, "huggingface_hub": theirs}, runs, scratch)
