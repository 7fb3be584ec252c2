"""Air-gapped machines and company networks: bundles, mirrors, and one model under several handles."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from conftest import Model, Project
from hubserver import HubServer


def test_bundle_then_sync_from_it_with_no_network(
    project: Project,
    hub: HubServer,
    models: dict[str, Model],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    project.models(double=hub.handle("google/double/1"), triple=hub.handle("google/triple/1"))
    assert project.run("lock")[0] == 0
    code, _, err = project.run("bundle", str(tmp_path / "bundle"))
    assert code == 0, err
    assert "2 archives" in err and "hubpin sync --from" in err
    for name in ("double", "triple"):
        sha = hashlib.sha256(models[name].archive).hexdigest()
        assert (tmp_path / "bundle" / "archives" / sha).read_bytes() == models[name].archive
    assert (tmp_path / "bundle" / "models.lock").read_bytes() == project.lock.read_bytes()

    hub.stop()
    offline_cache = tmp_path / "offline-cache"
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(offline_cache))
    code, out, err = project.run("sync", "--from", str(tmp_path / "bundle"))
    assert code == 0, err
    assert "2 fetched" in out
    assert (
        offline_cache
        / hashlib.sha1(hub.handle("google/double/1").encode()).hexdigest()
        / "saved_model.pb"
    ).is_file()


def test_bundle_copies_archives_jobs_at_a_time(
    project: Project, hub: HubServer, models: dict[str, Model], tmp_path: Path
) -> None:
    project.models(double=hub.handle("google/double/1"), triple=hub.handle("google/triple/1"))
    assert project.run("lock", "--no-fill")[0] == 0
    hub.hold_until = 2  # each archive request waits until both are in flight
    code, _, err = project.run("bundle", "--jobs", "2", str(tmp_path / "bundle"))
    assert code == 0, err
    assert hub.together.is_set(), "bundle --jobs 2 fetched the two archives one at a time"
    for name in ("double", "triple"):
        sha = hashlib.sha256(models[name].archive).hexdigest()
        assert (tmp_path / "bundle" / "archives" / sha).read_bytes() == models[name].archive
    assert (tmp_path / "bundle" / "models.lock").read_bytes() == project.lock.read_bytes()


def test_a_tampered_bundle_publishes_nothing(
    project: Project, hub: HubServer, models: dict[str, Model], tmp_path: Path
) -> None:
    handle = hub.handle("google/double/1")
    project.models(double=handle)
    assert project.run("lock", "--no-fill")[0] == 0
    assert project.run("bundle", str(tmp_path / "b"))[0] == 0
    sha = hashlib.sha256(models["double"].archive).hexdigest()
    (tmp_path / "b" / "archives" / sha).write_bytes(models["triple"].archive)
    code, _, err = project.run("sync", "--from", str(tmp_path / "b"))
    assert code == 1 and "does not match the lock" in err, err
    assert not project.entry(handle).exists()
    code, _, err = project.run("sync", "--from", str(tmp_path / "nowhere"))
    assert code == 2 and "not a hubpin bundle" in err
    code, _, err = project.run("bundle", str(tmp_path / "b.tar"))
    assert code == 0, err
    # what it says to run works: sync --from reads the bundle extracted, not the .tar
    assert err.rstrip().endswith(
        f"on each machine that syncs from it, extract it first (mkdir b && tar xf "
        f"{tmp_path / 'b.tar'} -C b) and run: hubpin sync --from b"
    ), err
    import tarfile

    with tarfile.open(tmp_path / "b.tar") as tar:
        names = set(tar.getnames())
    assert {
        f"./archives/{hashlib.sha256(models['double'].archive).hexdigest()}",
        "./models.lock",
    } <= names
    code, _, err = project.run("sync", "--from", str(tmp_path / "b.tar"))
    assert code == 2 and "extract it first" in err


def test_mirrors_are_tried_in_order_and_verified(project: Project, hub: HubServer) -> None:
    canonical = "https://tfhub.dev/google/double/1"
    project.write(
        f'[[mirrors]]\nprefix = "https://tfhub.dev/"\nreplace = "{hub.url}/missing/"\n\n'
        f'[[mirrors]]\nprefix = "https://tfhub.dev/"\nreplace = "{hub.url}/"\n',
        "hubpin.toml",
    )
    project.models(double=canonical)
    code, _, err = project.run("sync")
    assert code == 0, err
    assert (
        "mirror" in err and "missing/google/double/1" in err and "404" in err
    )  # the first mirror, skipped
    assert (project.entry(canonical) / "saved_model.pb").is_file(), (
        "the cache key is the canonical handle's"
    )
    assert any(path == "/archives/google/double/1.tar.gz" for _, path, _ in hub.requests)


def test_file_mirror_for_a_tfhub_handle(
    project: Project, models: dict[str, Model], tmp_path: Path
) -> None:
    mirror = tmp_path / "mirror" / "google" / "quint"
    mirror.mkdir(parents=True)
    (mirror / "1").write_bytes(models["quint"].archive)
    project.write(
        f'[[mirrors]]\nprefix = "https://tfhub.dev/"\nreplace = "{(tmp_path / "mirror").as_uri()}/"\n',
        "hubpin.toml",
    )
    project.models(quint="https://tfhub.dev/google/quint/1")
    code, _, err = project.run("sync")
    assert code == 0, err
    assert (project.entry("https://tfhub.dev/google/quint/1") / "saved_model.pb").is_file()


def test_also_fills_every_handle_of_one_model_from_one_download(
    project: Project, hub: HubServer
) -> None:
    main, kaggle = (
        hub.handle("google/double/1"),
        "https://www.kaggle.com/models/google/double/frameworks/TensorFlow2/variations/double/versions/1",
    )
    project.write(f'[models.double]\nhandle = "{main}"\nalso = ["{kaggle}"]\n')
    code, _, err = project.run("sync")
    assert code == 0, err
    first, second = project.entry(main), project.entry(kaggle)
    assert (second / "saved_model.pb").read_bytes() == (first / "saved_model.pb").read_bytes()
    assert (
        os.stat(first / "saved_model.pb").st_ino == os.stat(second / "saved_model.pb").st_ino
    )  # hard link
    assert (
        second.with_name(second.name + ".descriptor.txt")
        .read_text()
        .startswith(f"Module: {kaggle}\n")
    )
    assert hub.archive_requests("google/double/1") == 1
    code, _, err = project.run("prune", "--dry-run")
    assert code == 0 and "0 paths" in err


class _ForwardProxy:
    """A plain-HTTP forward proxy on loopback that relays GETs and remembers what it relayed."""

    def __init__(self) -> None:
        import threading
        import urllib.request
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.seen: list[str] = []
        proxy = self

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
                return None  # relay redirects to the client, as a proxy does

        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect())

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                proxy.seen.append(self.path)
                try:
                    upstream = direct.open(
                        urllib.request.Request(
                            self.path,
                            headers={"Range": self.headers.get("Range", "")}
                            if self.headers.get("Range")
                            else {},
                        )
                    )
                    status, headers, body = upstream.status, upstream.headers, upstream.read()
                except urllib.error.HTTPError as exc:
                    status, headers, body = exc.code, exc.headers, exc.read()
                self.send_response(status)
                for key in ("Location", "Content-Range"):
                    if headers.get(key):
                        self.send_header(key, headers[key])
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_proxies_come_from_the_standard_environment(
    project: Project, hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = _ForwardProxy()
    try:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "")
        handle = hub.handle("google/double/1")
        project.models(double=handle)
        code, _, err = project.run("sync")
        assert code == 0, err
        assert f"{handle}?tf-hub-format=compressed" in proxy.seen
        archive = f"{hub.url}/archives/google/double/1.tar.gz?"
        assert any(path.startswith(archive) for path in proxy.seen), proxy.seen
        assert (project.entry(handle) / "saved_model.pb").is_file()

        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        before = len(proxy.seen)
        assert project.run("lock", "double")[0] == 0
        assert len(proxy.seen) == before, "NO_PROXY hosts must be reached directly"
    finally:
        proxy.stop()


def test_two_bundle_runs_into_one_folder_at_once_both_succeed(
    project: Project, hub: HubServer, models: dict[str, Model], tmp_path: Path
) -> None:
    """Each writer has its own temp file: with one fixed ``.<sha>.tmp`` name the second run
    truncated the first's file mid-write and then found it renamed away (exit 1)."""
    from faultkit import heavy_archive, spawn_hubpin
    from hubserver import Faults

    hub.models["google/heavy/1"] = heavy_archive(tmp_path, models["double"].folder, files=3)
    hub.faults["google/heavy/1"] = Faults(delay=0.01, chunk=16 << 10)  # both runs overlap
    project.models(heavy=hub.handle("google/heavy/1"))
    assert project.run("lock", "--no-fill")[0] == 0
    out = tmp_path / "bundle"
    runs = [spawn_hubpin(project.root, project.cache, "bundle", str(out)) for _ in range(2)]
    results = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], results
    sha = hashlib.sha256(hub.models["google/heavy/1"]).hexdigest()
    assert (out / "archives" / sha).read_bytes() == hub.models["google/heavy/1"]
    assert (out / "models.lock").read_bytes() == project.lock.read_bytes()
    assert sorted(p.name for p in out.rglob("*")) == sorted(["archives", "models.lock", sha])
