"""KerasHub's built-in preset names, mapped as the installed keras_hub maps them, without Keras.

``keras_hub.models.X.from_preset("bert_tiny_en_uncased")`` looks the name up in
``BUILTIN_PRESETS`` (keras_hub/src/utils/preset_utils.py, ``get_file``) and loads
its ``kaggle_handle``, a versioned ``kaggle://<owner>/<model>/keras/<variation>/<N>``.
That table is filled by ``register_presets`` from plain dicts in
``keras_hub/src/models/*/*_presets.py``. Importing keras_hub to read it would import
Keras and TensorFlow (20 s, and the CLI never imports TensorFlow), so those files
are read as source: each module-level ``name = {...}`` literal, with ``**other``
merges of earlier ones (as mit_presets.py writes ``backbone_presets``).

A handle ``keras-hub:<preset>`` is then the Kaggle handle the installed keras_hub
would ask kagglehub for; hubpin pins and syncs that version, so unmodified
``from_preset("<preset>")`` finds it in kagglehub's cache offline.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path

from hubpin.errors import InputError

PREFIX = "keras-hub:"


def is_preset_handle(handle: str) -> bool:
    return handle.startswith(PREFIX)


def keras_hub_version() -> str | None:
    from importlib import metadata  # 10 ms of imports (email.*) that lock --check rarely needs

    try:
        return metadata.version("keras-hub")
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=4)
def _presets(root: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for path in sorted(Path(root, "src", "models").glob("*/*_presets.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        except (OSError, SyntaxError, ValueError):
            continue
        names: dict[str, dict[object, object]] = {}
        for node in tree.body:
            if not (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Dict)
            ):
                continue
            value = _literal_dict(node.value, names)
            if value is None:
                continue
            names[node.targets[0].id] = value
            for preset, config in value.items():
                if isinstance(preset, str) and isinstance(config, dict):
                    handle = config.get("kaggle_handle")
                    if isinstance(handle, str):
                        found[preset] = handle
    return found


def _literal_dict(node: ast.Dict, names: dict[str, dict[object, object]]) -> dict | None:
    """A dict literal, with ``**name`` merges of dicts already read; None if not literal."""
    result: dict[object, object] = {}
    for key, value in zip(node.keys, node.values, strict=True):
        if key is None:  # {**other}
            if not (isinstance(value, ast.Name) and value.id in names):
                return None
            result.update(names[value.id])
            continue
        try:
            result[ast.literal_eval(key)] = ast.literal_eval(value)
        except ValueError:
            return None
    return result


def keras_hub_root() -> Path | None:
    """The installed keras_hub package folder, found without importing it."""
    try:
        spec = importlib.util.find_spec("keras_hub")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def preset_kaggle_handle(handle: str) -> str:
    """``keras-hub:<preset>`` → the ``kaggle:<o>/<m>/<f>/<v>/<N>`` handle keras_hub maps it to."""
    name = handle[len(PREFIX) :]
    root = keras_hub_root()
    if root is None:
        raise InputError(
            f"{handle}: keras_hub is not installed, so hubpin cannot tell which Kaggle version "
            "this preset names; run: pip install keras-hub (or write the kaggle: handle itself)"
        )
    presets = _presets(str(root))
    target = presets.get(name)
    if target is None:
        import difflib  # for a mistake's message only

        close = difflib.get_close_matches(name, list(presets), n=3)
        hint = f"; did you mean: {', '.join(close)}?" if close else ""
        raise InputError(
            f"{handle}: not a built-in preset of keras_hub {keras_hub_version() or '?'} "
            f"({len(presets)} known){hint} (a preset of your own: use its kaggle: or hf: handle)"
        )
    if not target.startswith("kaggle://"):
        raise InputError(
            f"{handle}: keras_hub maps it to {target!r}, which is not a Kaggle handle; "
            "hubpin pins keras-hub: presets hosted on Kaggle only"
        )
    return "kaggle:" + target[len("kaggle://") :]
