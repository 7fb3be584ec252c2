"""The shape of the code: hubpin's modules import each other in one direction only.

Data flows settings/manifest → handles → lock → plan → sources → fetch/unpack →
cache; an import going the other way is a cycle, and cycles are what make a new
source or cache kind an edit in several modules. Imports are read with ``ast``,
including those inside functions and under ``TYPE_CHECKING``: a lazy import is
still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "hubpin"


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module → the package's modules it imports (``from a import b`` counts a.b if a module)."""
    modules = {module_name(p, package): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in modules else node.module)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, …, a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_cycles_among_hubpin_modules() -> None:
    graph = import_graph(PACKAGE)
    assert {"hubpin.cli", "hubpin.sync", "hubpin.cache.local", "hubpin.gcs.client"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_the_cycle_check_sees_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    """The check itself can fail: a cycle through a function-level import is found."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.c import X\n"
    )
    (package / "c.py").write_text("def f():\n    import pkg.a\n")
    assert find_cycle(import_graph(package)) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]


def test_only_the_scheme_table_chooses_a_cache_implementation() -> None:
    """Callers hold the Cache interface; which kind serves a cache_dir is the scheme table's
    entry (hubpin.storage.schemes names it as "module:Class"; project.py loads it)."""
    graph = import_graph(PACKAGE)
    users = {
        name
        for name, deps in graph.items()
        if deps & {"hubpin.cache.local", "hubpin.cache.store"}
        and not name.startswith("hubpin.cache")
    }
    # stamp.py replays a no-op sync without pydantic: it may open the local cache directly.
    assert users == {"hubpin.stamp"}
    from hubpin.storage.schemes import scheme

    assert scheme("gs://b/p").cache == "hubpin.cache.store:StoreCache"  # type: ignore[union-attr]
    assert scheme("/tmp/x").cache == "hubpin.cache.local:LocalCache"  # type: ignore[union-attr]


# Scheme names as literals: comparing a location's scheme with one of them outside the
# scheme table is what made a new store an edit in seven modules.
_SCHEME_WORDS = {"gs", "s3", "oci", "file", "http", "https", "kaggle"}
_SCHEME_PREFIXES = tuple(f"{word}://" for word in _SCHEME_WORDS)
# fetch.py is the HTTP client, kaggle/ reads Kaggle's http(s) URLs (handle.py), endpoints
# (endpoint.py) and API answers (api.py): their redirect and URL policies compare http and
# https on purpose; so does huggingface.py for the Hub's URLs. oci/reference.py parses its own oci:// references, kerashub.py the
# kaggle:// URLs keras_hub's preset tables hold.
_MAY_NAME_SCHEMES = {
    "hubpin.storage.schemes",
    "hubpin.fetch",
    "hubpin.kaggle.handle",
    "hubpin.kaggle.endpoint",
    "hubpin.kaggle.api",
    "hubpin.huggingface",
    "hubpin.oci.reference",
    "hubpin.kerashub",
}


def scheme_decisions(package: Path) -> list[str]:
    """Places outside the scheme table that compare with a scheme name or test a prefix."""
    found = []
    for path in sorted(package.rglob("*.py")):
        name = module_name(path, package)
        if name in _MAY_NAME_SCHEMES:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            literals: list[ast.AST] = []
            if isinstance(node, ast.Compare):
                literals = [node.left, *node.comparators]
                literals += [
                    e for c in node.comparators if isinstance(c, ast.Tuple) for e in c.elts
                ]
                words = {n.value for n in literals if isinstance(n, ast.Constant)}
                if words & _SCHEME_WORDS:
                    found.append(f"{name}:{node.lineno}")
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "startswith"
                and any(
                    isinstance(a, ast.Constant)
                    and isinstance(a.value, str)
                    and a.value.startswith(_SCHEME_PREFIXES)
                    for a in node.args
                )
            ):
                found.append(f"{name}:{node.lineno}")
    return found


def test_only_the_scheme_table_decides_what_a_scheme_is() -> None:
    assert scheme_decisions(PACKAGE) == []


def test_the_scheme_check_finds_a_comparison(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text(
        "def f(s, u):\n    return s in ('gs', 'x') or u.startswith('s3://')\n"
    )
    assert scheme_decisions(package) == ["pkg.a:2", "pkg.a:2"]


def test_a_registry_is_one_storage_back_end() -> None:
    """oci:// is served like gs:// and s3://: its back-end (storage/oci.py) is the one module
    below the CLI that reaches the registry code, so bundles, `sync --from` and the transport
    hold the storage interface and never branch on a registry."""
    graph = import_graph(PACKAGE)
    users = {
        name
        for name, deps in graph.items()
        if any(dep.startswith("hubpin.oci") for dep in deps) and not name.startswith("hubpin.oci")
    }
    # `hubpin image` is a command of its own (the cache as an image), not a bundle target.
    assert users == {"hubpin.storage.oci", "hubpin.cli.manage"}


# What a pin is and what is done with it are its kind's (kinds.py) and its handler's
# (handlers/); handles.py defines the Kind enum. Anywhere else, a test of a pin's class
# is a branch that a new kind of pin would have to be added to.
_MAY_TEST_PIN_KINDS = {"kinds", "handles", "handlers"}  # below the package


def pin_classes(package: Path) -> set[str]:
    """The pin kinds kinds.py defines: PinBase and every class below it."""
    found = {"PinBase"}
    tree = ast.parse((package / "kinds.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
            isinstance(b, ast.Name) and b.id in found for b in node.bases
        ):
            found.add(node.name)
    return found


def pin_kind_tests(package: Path) -> list[str]:
    """Places outside kinds.py, handles.py and handlers/ that test a pin's class:
    ``isinstance(x, <a pin class>)``, ``type(x) is <a pin class>``, a ``case <a pin
    class>()`` pattern, or any use of ``Kind.<member>``."""
    classes = pin_classes(package)

    def names_a_class(node: ast.AST) -> bool:
        if isinstance(node, ast.Tuple):
            return any(names_a_class(e) for e in node.elts)
        if isinstance(node, ast.BinOp):  # A | B
            return names_a_class(node.left) or names_a_class(node.right)
        name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
        return name in classes

    found = []
    for path in sorted(package.rglob("*.py")):
        name = module_name(path, package)
        if name.partition(".")[2].split(".")[0] in _MAY_TEST_PIN_KINDS:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            hit = (
                (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id in {"isinstance", "issubclass"}
                    and len(node.args) == 2
                    and names_a_class(node.args[1])
                )
                or (
                    isinstance(node, ast.Compare)
                    and any(
                        isinstance(op, ast.Is | ast.IsNot | ast.Eq | ast.NotEq) for op in node.ops
                    )
                    and any(names_a_class(n) for n in [node.left, *node.comparators])
                )
                or (isinstance(node, ast.MatchClass) and names_a_class(node.cls))
                or (
                    isinstance(node, ast.Attribute)
                    and isinstance(node.value, ast.Name)
                    and node.value.id == "Kind"
                )
            )
            if hit:
                found.append(f"{name}:{node.lineno}")
    return found


def test_only_kinds_and_handlers_test_a_pins_class() -> None:
    """A new kind of pin is one class in kinds.py and one handler: no caller branches on it."""
    assert {"ArchivePin", "KagglePin", "HfPin"} <= pin_classes(PACKAGE)
    assert pin_kind_tests(PACKAGE) == []


def test_the_pin_kind_check_finds_a_test(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "handlers").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "kinds.py").write_text(
        "class PinBase: ...\nclass ArchivePin(PinBase): ...\nclass KagglePin(ArchivePin): ...\n"
    )
    (package / "handlers" / "__init__.py").write_text("def f(p):\n    return isinstance(p, X)\n")
    (package / "handlers" / "a.py").write_text("def f(p):\n    return isinstance(p, KagglePin)\n")
    (package / "a.py").write_text(
        "from pkg import kinds\n"
        "def f(p):\n"
        "    if isinstance(p, (int, kinds.KagglePin)):\n"
        "        return type(p) is ArchivePin\n"
        "    match p:\n"
        "        case KagglePin():\n"
        "            return Kind.ARCHIVE\n"
        "    return isinstance(p, str)\n"
    )
    assert pin_kind_tests(package) == ["pkg.a:3", "pkg.a:4", "pkg.a:6", "pkg.a:7"]
