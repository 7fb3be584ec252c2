"""The command line: every command, its flags and help (read by the README check)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from hubpin.cli.completion import SHELLS
from hubpin.handles import Format

# Where each command's function lives, imported only when that command runs: parsing
# arguments (and --help) then costs argparse alone, and `status` never imports what only
# downloads need (kagglehub's client, the OCI and S3 stores, the unpacker).
_COMMANDS = {
    "lock": "lock",
    "sync": "sync",
    "verify": "report",
    "status": "report",
    "resolve": "report",
    "outdated": "report",
    "prune": "manage",
    "add": "manage",
    "remove": "manage",
    "bundle": "manage",
    "image": "manage",
    "env": "manage",
    "completion": "completion",
}


def build_parser(
    only: str | None = None, common: argparse.ArgumentParser | None = None
) -> argparse.ArgumentParser:
    """The command line; with ``only``, the parser of that one command alone (what running
    it needs: argparse builds each command's parser with the common options and asks
    gettext for every title, about 4 ms for all of them, measured), which parses its
    arguments exactly as the whole parser does (:func:`parser_for`). ``common``: the common
    options' parser, when the caller has one."""
    common = common or _common()
    parser = _Parser(
        prog="hubpin",
        parents=[common],
        description="Pin TensorFlow Hub models in a lock and sync them into tensorflow_hub's cache.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="store_true",
        help="print hubpin's version (with -v, also those of the packages that decide its behaviour)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help: str) -> Any:
        if only is not None and name != only:
            return _Unused()
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=_Command(name))
        return p

    p = command("lock", "pin every model of the manifest into the lock")
    check = p.add_mutually_exclusive_group()
    check.add_argument(
        "--check", action="store_true", help="exit 1 if the lock is missing or stale (no network)"
    )
    _dry_run_flags(
        p,
        check,
        "what would be pinned, kept or dropped (no network, writes nothing)",
        "with --dry-run: the plan as JSON on stdout",
    )
    check.add_argument(
        "--upgrade",
        action="store_true",
        help="move unversioned Kaggle handles to their current version and Hugging Face "
        "revisions to the commit they name now (ALIAS…: only these)",
    )
    p.add_argument(
        "--fill",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also unpack what is downloaded into the cache, so a later sync has nothing to fetch "
        "(default: the lock_fills_cache setting, true); --no-fill only hashes",
    )
    p.add_argument(
        "aliases", nargs="*", metavar="ALIAS", help="re-pin only these (default: new or changed)"
    )

    p = command("sync", "make the cache match the lock (locking first if needed)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--locked", action="store_true", help="fail (exit 1) instead of updating a stale lock"
    )
    mode.add_argument(
        "--frozen", action="store_true", help="use the lock as is, without reading the manifest"
    )
    p.add_argument("--offline", action="store_true", help="never open a network connection")
    p.add_argument("--jobs", "-j", type=int, default=None, help="models synced at once")
    p.add_argument(
        "--verify", action="store_true", help="re-hash present entries instead of the size check"
    )
    p.add_argument(
        "--from",
        dest="bundle",
        default=None,
        metavar="BUNDLE",
        help="take archives only from what `hubpin bundle` wrote (a folder, gs://bucket/prefix or "
        "oci://registry/repository:tag or @sha256:digest), verified against the lock; never from "
        "upstream",
    )
    _dry_run_flags(
        p,
        p,
        "what would be downloaded, adopted, replaced or left (no network if locked; writes nothing)",
        "the plan as JSON on stdout, with each step's outcome unless --dry-run",
    )
    p.add_argument("aliases", nargs="*", metavar="ALIAS", help=_SOME)

    p = command("verify", "re-hash cached models against the lock")
    p.add_argument("--repair", action="store_true", help="re-fetch whatever is damaged")
    p.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    p.add_argument("aliases", nargs="*", metavar="ALIAS", help=_SOME)

    p = command("status", "one row per alias: format, size, cache state")
    p.add_argument("--json", action="store_true", help="machine-readable report on stdout")

    p = command("resolve", "print the local path (COMPRESSED) or gs:// location of an alias")
    p.add_argument("alias", metavar="ALIAS", help="a model's alias in the lock")

    p = command(
        "prune",
        "remove leftovers, and the entries this project created that no lock pins",
    )
    p.description = (
        "Remove what crashed syncs left, and the cache entries this project's lock created "
        "that no lock pins now. The cache is shared (the default $TMPDIR/tfhub_modules by "
        "everything on the machine), so prune tells its own entries by hubpin's record "
        "beside each one (<key>.hubpin.json names the lock that created it) and never "
        "removes an entry that a lock noted in the cache's hubpin-projects/ folder pins "
        "(each sync notes its lock and keys there; a lock that no longer exists is forgotten)."
    )
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    p.add_argument(
        "--all-unpinned",
        action="store_true",
        help="also entries other projects created that no lock pins now (their lock was "
        "deleted or moved, or dropped the model)",
    )
    p.add_argument(
        "--foreign",
        action="store_true",
        help="also entries hubpin did not create (tensorflow_hub's own downloads) that no lock pins",
    )

    p = command("add", "add a model to the manifest")
    p.add_argument(
        "alias",
        metavar="ALIAS",
        help="the name code loads it by: hubpin.load(ALIAS) ([A-Za-z0-9_.-]+)",
    )
    p.add_argument(
        "handle",
        metavar="HANDLE",
        help="a tfhub.dev, Kaggle or Hugging Face URL, kaggle:…, hf:…, keras-hub:<preset>, a "
        "gs:// or s3:// archive, or a path (relative to the manifest)",
    )
    p.add_argument(
        "--format",
        type=_format,
        default=None,
        dest="model_format",
        metavar="FORMAT",
        help="COMPRESSED, UNCOMPRESSED or AUTO (default: none written; the format default applies)",
    )

    p = command("remove", "remove models from the manifest and the lock")
    p.add_argument("aliases", nargs="+", metavar="ALIAS", help="the models to remove")

    p = command(
        "bundle",
        "write the locked archives and the lock to a folder, a .tar, gs://bucket/prefix or "
        "oci://registry/repository:tag, for `hubpin sync --from OUT` (air-gapped machines, fleets)",
    )
    p.add_argument(
        "out",
        metavar="OUT",
        help="a folder, a .tar file, gs://bucket/prefix or oci://registry/repository:tag (prints "
        "the manifest digest); rerunning finishes an interrupted bundle and writes only what is "
        "missing",
    )
    p.add_argument("--jobs", "-j", type=int, default=None, help="archives copied at once")
    p.add_argument("aliases", nargs="*", metavar="ALIAS", help=_SOME)

    p = command(
        "image",
        "push an OCI image whose filesystem is the ready cache under /models, reproducible byte "
        "for byte (Kubernetes image volumes, KServe modelcars, COPY --from)",
    )
    p.add_argument("out", metavar="OUT", help="oci://registry/repository:tag")
    p.add_argument("aliases", nargs="*", metavar="ALIAS", help=_SOME)

    p = command(
        "outdated",
        "locked vs current version (Kaggle) or commit (Hugging Face) of each model; exit 1 if "
        "any is behind",
    )
    p.add_argument("--json", action="store_true", help="machine-readable report on stdout")

    command("env", "print shell exports that point tensorflow_hub at this cache")

    p = command(
        "completion",
        "print a shell completion script; bash: source <(hubpin completion bash)",
    )
    p.add_argument("shell", choices=SHELLS, metavar="SHELL", help=" | ".join(SHELLS))
    p.set_defaults(parser=parser)
    return parser


_SOME = "only these models (default: every model of the lock)"
_EPILOG = """\
first steps:
  hubpin add bert https://tfhub.dev/tensorflow/bert_en_uncased_L-12_H-768_A-12/4
  hubpin lock            pin it: writes models.lock (commit it with models.toml)
  hubpin sync --locked   fill the cache from the lock (a Dockerfile's RUN, CI)
  hubpin.load("bert")    in Python: load it from the lock, never downloading

exit codes: 0 success, 1 a check or an operation failed, 2 bad usage or input file
"""


def _common() -> argparse.ArgumentParser:
    """The options every command takes, before or after its name."""
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("project options")
    g.add_argument(
        "-m", "--manifest", type=Path, default=argparse.SUPPRESS, help="models.toml to use"
    )
    g.add_argument(
        "--lock",
        type=Path,
        default=argparse.SUPPRESS,
        help="lock file (default: <manifest stem>.lock)",
    )
    g.add_argument(
        "--cache-dir",
        "--tfhub_cache_dir",
        dest="cache_dir",
        default=argparse.SUPPRESS,
        help="cache folder (default: TFHUB_CACHE_DIR, hubpin.toml, $TMPDIR/tfhub_modules)",
    )
    g.add_argument(
        "--tfhub_model_load_format",
        "--format-default",
        dest="load_format",
        type=_format,
        default=argparse.SUPPRESS,
        help="default format for models that set none (COMPRESSED, UNCOMPRESSED, AUTO)",
    )
    g.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="errors only"
    )
    g.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="more detail"
    )
    g.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=argparse.SUPPRESS,
        help="progress bars (default: when stderr is a terminal)",
    )
    return common


def parser_for(argv: list[str]) -> argparse.ArgumentParser:
    """The parser ``argv`` needs: that of the command it runs alone, when argparse finds the
    command where the whole parser would (the same options before it, nothing unknown
    before it: ``hubpin -h status`` is the whole help); else the whole parser. ``completion``
    prints every command, so it gets them all."""
    common = _common()
    scan = _Scan(add_help=False, parents=[common])
    scan.add_argument("--version", action="store_true")
    scan.add_argument("command", nargs="?")
    scan.add_argument("rest", nargs=argparse.REMAINDER)
    try:
        found, unknown = scan.parse_known_args(argv)
    except _Unparsed:  # the whole parser says what is wrong
        return build_parser(common=common)
    name = found.command
    if unknown or found.version or name not in _COMMANDS or name == "completion":
        return build_parser(common=common)
    return build_parser(only=name, common=common)


class _Unparsed(Exception):
    pass


class _Scan(argparse.ArgumentParser):
    """Finds the command's name in argv, silently: a mistake is left to the whole parser."""

    def error(self, message: str) -> NoReturn:
        raise _Unparsed(message)


class _Unused:
    """Stands for the parser of a command that is not run (:func:`build_parser`'s ``only``)."""

    description: str | None = None

    def add_argument(self, *args: Any, **kwargs: Any) -> None:
        return None

    def add_mutually_exclusive_group(self, **kwargs: Any) -> _Unused:
        return self

    def set_defaults(self, **kwargs: Any) -> None:
        return None


class _Command:
    """A command's function, imported from its module when the command is run."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, args: argparse.Namespace) -> int:
        module = importlib.import_module(f"hubpin.cli.{_COMMANDS[self.name]}")
        func: Callable[[argparse.Namespace], int] = getattr(module, f"cmd_{self.name}")
        return func(args)


class _Parser(argparse.ArgumentParser):
    """argparse, with a one-line suggestion for a mistyped command (``synk`` → sync) or
    option (``sync --lockd`` → --locked)."""

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:  # type: ignore[override]
        found, extra = self.parse_known_args(args, namespace)
        if extra:
            self.exit(2, f"{self.prog}: error: {self._unknown_options(found, extra)}\n")
        return found

    def _unknown_options(self, found: argparse.Namespace, extra: list[str]) -> str:
        """What was not understood, with the closest options of the command it was given to."""
        import difflib  # for a mistake's message only

        command = getattr(found, "command", None)
        parser: argparse.ArgumentParser = self
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and command in action.choices:
                parser = action.choices[command]
        where = f"{self.prog} {command}" if command else self.prog
        options = [o for o in parser._option_string_actions if o.startswith("--")]
        for word in extra:
            close = difflib.get_close_matches(word.partition("=")[0], options, n=1)
            if word.startswith("-") and close:
                return f"{where} has no option {word}; did you mean {close[0]}?"
        return f"{where} does not take {' '.join(extra)}; see: {where} --help"

    def error(self, message: str) -> NoReturn:
        """argparse's other mistakes (an option's value missing or not of its type, two
        options that exclude each other) in one line naming where the help is, instead of
        the command's whole usage block above it."""
        self.exit(2, f"{self.prog}: error: {message}; see: {self.prog} --help\n")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if isinstance(action, argparse._SubParsersAction) and value not in action.choices:
            names = list(action.choices)
            import difflib  # for a mistake's message only

            close = difflib.get_close_matches(value, names, n=3)
            hint = (
                f"did you mean: {', '.join(close)}?" if close else f"commands: {', '.join(names)}"
            )
            self.exit(2, f"{self.prog}: error: unknown command {value!r}; {hint}\n")
        super()._check_value(action, value)


def _dry_run_flags(
    p: argparse.ArgumentParser, group: argparse._ActionsContainer, help: str, json_help: str
) -> None:
    group.add_argument("--dry-run", action="store_true", help=help)
    p.add_argument("--json", action="store_true", help=json_help)


_VERSIONED = (
    "tensorflow",
    "tensorflow-hub",
    "kagglehub",
    "isal",
    "gcsfs",
    "urllib3",
    "pydantic",
    "google-crc32c",
)


def _versions(verbose: bool) -> list[str]:
    import importlib.metadata
    import platform

    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    from hubpin import __version__

    lines = [f"hubpin {version('hubpin') or __version__}"]
    if verbose:
        python = (
            f"{platform.python_version()} ({platform.python_implementation()}, {sys.executable})"
        )
        lines.append(f"  {'python':<15} {python}")
        lines.append(f"  {'platform':<15} {platform.platform()}")
        for name in _VERSIONED:
            lines.append(f"  {name:<15} {version(name) or 'not installed'}")
    return lines


def _format(value: str) -> Format:
    try:
        return Format(value.upper())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a format (expected COMPRESSED, UNCOMPRESSED or AUTO)"
        ) from None
