"""hubpin.load / resolve / KerasLayer / install: strictly from the lock, never from the network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Model, Project, heavy_imports_after, run_python
from gcs_emulator import Emulator
from hubserver import HubServer

import hubpin


@pytest.fixture
def synced(project: Project, hub: HubServer) -> Project:
    """double and triple pinned and synced, then the hub stopped: no network from here on."""
    project.write(
        f'[models.double]\nhandle = "{hub.handle("google/double/1")}"\n\n'
        f'[models.triple]\nhandle = "{hub.handle("google/triple/1")}"\nio_device = "/job:localhost"\n'
    )
    code, _, err = project.run("sync")
    assert code == 0, err
    hub.stop()
    return project


def test_load_by_alias_computes_the_model(synced: Project, models: dict[str, Model]) -> None:
    import tensorflow as tf

    model = hubpin.load("double")
    assert model(tf.constant([1.0, 4.0])).numpy().tolist() == models["double"].expected([1.0, 4.0])
    assert model._is_hub_module_v1 is False
    layer = hubpin.KerasLayer("triple", trainable=False)
    assert layer(tf.constant([2.0])).numpy().tolist() == models["triple"].expected([2.0])
    assert hubpin.resolve("double") == str(
        synced.entry(synced.lock.read_text().split('handle = "')[1].split('"')[0])
    )


def test_lock_object_api_from_elsewhere(
    synced: Project, models: dict[str, Model], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tensorflow as tf

    monkeypatch.chdir(tmp_path)
    with pytest.raises(hubpin.LockMissingError, match=r"no models.lock in .* run: hubpin lock"):
        hubpin.load("double")
    lock = hubpin.Lock(synced.lock)
    model = lock.load("triple", verify=True)
    assert model(tf.constant([0.0])).numpy().tolist() == models["triple"].expected([0.0])
    monkeypatch.setenv("HUBPIN_LOCK", str(synced.lock))
    assert hubpin.resolve("triple") == lock.resolve("triple")


def test_load_options_reach_tensorflow(synced: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    import tensorflow as tf

    received = []
    real = tf.compat.v1.saved_model.load_v2

    def spy(path, tags=None, options=None):  # type: ignore[no-untyped-def]
        received.append((path, tags, options))
        return real(path, tags=tags, options=options)

    monkeypatch.setattr(tf.compat.v1.saved_model, "load_v2", spy)
    hubpin.load("triple")
    hubpin.load("double")
    (_, _, triple_options), (_, _, double_options) = received
    assert isinstance(triple_options, tf.saved_model.LoadOptions)
    assert triple_options.experimental_io_device == "/job:localhost"
    assert double_options is None
    mine = tf.saved_model.LoadOptions(experimental_io_device="/job:localhost/device:CPU:0")
    hubpin.load("triple", options=mine)
    assert received[-1][2] is mine


def test_errors_name_the_alias_and_what_to_run(synced: Project) -> None:
    with pytest.raises(
        hubpin.UnknownAliasError, match=r"alias 'dubble' is not pinned .* did you mean double"
    ):
        hubpin.load("dubble")
    entry = Path(hubpin.resolve("double"))
    (entry / "variables" / "variables.index").unlink()
    with pytest.raises(
        hubpin.DamagedEntryError,
        match=r"double: .*missing file variables/variables.index.*hubpin verify --repair",
    ):
        hubpin.load("double")
    (entry / "saved_model.pb").write_bytes(b"short")
    with pytest.raises(hubpin.DamagedEntryError, match=r"saved_model\.pb is 5 bytes, expected"):
        hubpin.resolve("double")
    import shutil

    shutil.rmtree(entry)
    with pytest.raises(
        hubpin.NotSyncedError,
        match=r"double \(http://127.0.0.1:\d+/google/double/1\) is not synced .*run: hubpin sync",
    ):
        hubpin.load("double")
    synced.write(
        synced.manifest.read_text() + '\n[models.extra]\nhandle = "https://example.invalid/x/1"\n'
    )
    with pytest.raises(
        hubpin.StaleLockError,
        match="extra: in the manifest but not in the lock; run: hubpin lock && hubpin sync",
    ):
        hubpin.resolve("triple")


def test_verify_true_rehashes(synced: Project) -> None:
    entry = Path(hubpin.resolve("double"))
    data = (entry / "saved_model.pb").read_bytes()
    (entry / "saved_model.pb").write_bytes(
        bytes([data[0] ^ 1]) + data[1:]
    )  # same size, other bytes
    assert hubpin.resolve("double") == str(entry)  # the fast check sees sizes only
    with pytest.raises(hubpin.DamagedEntryError, match=r"changed saved_model\.pb"):
        hubpin.resolve("double", verify=True)


def test_install_routes_hub_through_the_lock(synced: Project, models: dict[str, Model]) -> None:
    handles = [
        line.split('"')[1]
        for line in synced.lock.read_text().splitlines()
        if line.startswith("handle = ")
    ]
    out = run_python(
        "import json, tensorflow as tf, tensorflow_hub as hub, hubpin\n"
        "hubpin.install()\n"
        f"m = hub.load({handles[0]!r})\n"
        f"layer = hub.KerasLayer({handles[1]!r})\n"
        "result = {'double': m(tf.constant([3.0])).numpy().tolist(),\n"
        "          'triple': layer(tf.constant([3.0])).numpy().tolist()}\n"
        "try:\n"
        "    hub.load('https://tfhub.dev/google/unpinned/1')\n"
        "except hubpin.UnpinnedHandleError as e:\n"
        "    result['refused'] = str(e)\n"
        "try:\n"  # a folder the lock does not pin: before, strict let every path through
        f"    hub.load({str(models['quint'].folder)!r})\n"
        "except hubpin.UnpinnedHandleError as e:\n"
        "    result['path_refused'] = str(e)\n"
        f"result['resolved'] = hub.resolve({handles[0]!r})\n"
        "again = hub.load(hub.resolve(hubpin.resolve('double') + '/'))\n"  # where it put it
        "result['again'] = again(tf.constant([3.0])).numpy().tolist()\n"
        "print(json.dumps(result))\n",
        cwd=synced.root,
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert result["double"] == models["double"].expected([3.0])
    assert result["triple"] == models["triple"].expected([3.0])
    assert "https://tfhub.dev/google/unpinned/1 is not pinned" in result["refused"]
    assert "hubpin add ALIAS https://tfhub.dev/google/unpinned/1" in result["refused"]
    assert result["resolved"] == str(synced.entry(handles[0]))
    assert f"handle {models['quint'].folder} is not pinned" in result["path_refused"]
    assert result["again"] == models["double"].expected([3.0])


def test_import_hubpin_stays_light(synced: Project) -> None:
    assert heavy_imports_after("import hubpin\nhubpin.resolve('double')", synced.root) == []


def test_uncompressed_alias_loads_its_pinned_gs_location_with_its_options(
    project: Project,
    hub: HubServer,
    gcs: Emulator,
    models: dict[str, Model],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """TensorFlow's own GCS reader only talks to Google, so assert on what it is asked to load."""
    import tensorflow as tf

    location = f"gs://{gcs.bucket()}/tfhub-modules/google/spice/2/uncompressed"
    gcs.upload_folder(models["quint"].folder, location)
    hub.uncompressed["google/spice/2"] = location
    handle = hub.handle("google/spice/2")
    project.write(
        f'[models.spice]\nhandle = "{handle}"\nformat = "UNCOMPRESSED"\nio_device = "/job:localhost"\n'
    )
    code, _, err = project.run("sync")
    assert code == 0, err
    hub.stop()

    asked = []

    class Stop(Exception):
        pass

    def spy(path, tags=None, options=None):  # type: ignore[no-untyped-def]
        asked.append((path, options))
        raise Stop

    monkeypatch.setattr(tf.compat.v1.saved_model, "load_v2", spy)
    assert hubpin.resolve("spice") == location
    with pytest.raises(Stop):
        hubpin.load("spice")
    ((path, options),) = asked
    assert path == location
    assert options.experimental_io_device == "/job:localhost"
    out = run_python(
        f"import hubpin, tensorflow_hub as hub\nhubpin.install()\nprint(hub.resolve({handle!r}))",
        cwd=project.root,
        env={"TFHUB_MODEL_LOAD_FORMAT": "UNCOMPRESSED"},
    )
    assert out.strip().splitlines()[-1] == location


# A Python without TensorFlow, as a slim image that has only the CLI's dependencies: the
# modules are hidden by a meta-path finder that answers as a missing install does.
WITHOUT_TF = """
import sys
class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorflow_hub", "tf_keras"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _NotInstalled())
"""


def test_without_tensorflow_the_api_says_what_to_install(synced: Project) -> None:
    out = run_python(
        WITHOUT_TF
        + "import hubpin\n"
        + "print(hubpin.resolve('double'))\n"
        + "for call in (lambda: hubpin.load('double'), lambda: hubpin.KerasLayer('double'),\n"
        + "             hubpin.install):\n"
        + "    try:\n"
        + "        call()\n"
        + "    except ModuleNotFoundError as e:\n"
        + "        print(type(e).__name__, isinstance(e, hubpin.HubpinError), e.name, '|', e)\n",
        cwd=synced.root,
    )
    resolved, *errors = out.splitlines()
    assert Path(resolved).is_dir()  # resolve needs no TensorFlow
    assert len(errors) == 3, out
    for api, line in zip(("load", "KerasLayer", "install"), errors, strict=True):
        said, _, message = line.partition(" | ")
        missing = "tensorflow" if api == "load" else "tensorflow_hub"
        assert said == f"MissingDependencyError True {missing}", line
        assert message.startswith(f"hubpin.{api} needs {missing}, which is not installed"), line
        assert message.endswith(
            "; run: pip install 'tensorflow>=2.15' 'tensorflow-hub>=0.16' 'tf-keras>=2.15' "
            "(hubpin's tf extra; or, in a clone of hubpin: pip install '.[tf]')"
        ), line


def test_a_lock_replaced_with_its_mtime_kept_is_read_again(
    project: Project, hub: HubServer
) -> None:
    """The default lock is read again when its file changes: a new lock with the old one's
    mtime (``touch -d``, ``cp -p``, ``rsync -t``, a reproducible build's fixed times, or two
    writes within one tick of the kernel's coarse clock) is another file (inode, ctime).
    Before: ``hubpin.resolve`` kept the old lock's pin and gave the other model's entry."""
    import os

    project.models(m=hub.handle("google/double/1"))
    assert project.run("sync")[0] == 0
    before = hubpin.resolve("m")
    times = [
        (p, p.stat().st_atime_ns, p.stat().st_mtime_ns) for p in (project.lock, project.manifest)
    ]
    project.models(m=hub.handle("google/triple/1"))
    assert project.run("sync")[0] == 0
    for path, atime, mtime in times:
        os.utime(path, ns=(atime, mtime))
    assert hubpin.resolve("m") == str(project.entry(hub.handle("google/triple/1"))) != before
