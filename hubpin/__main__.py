"""``python -m hubpin`` and the ``hubpin`` command."""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hubpin.ops.status import StatusReport


def main() -> int:
    try:
        return _main()
    except BaseException as error:  # Ctrl-C while still importing: the same line as later on
        from hubpin.errors import reader_gone

        if _caused_by(error, BrokenPipeError) and reader_gone():
            return _reader_gone()
        if not _caused_by(error, KeyboardInterrupt):
            raise
        from hubpin.errors import INTERRUPTED

        print(INTERRUPTED, file=sys.stderr)
        return 130


def _caused_by(error: BaseException | None, kind: type[BaseException]) -> bool:
    """Whether ``error`` is, or was caused by, a ``kind``. Python wraps a KeyboardInterrupt
    raised inside a class body's ``__set_name__`` (pydantic builds classes while it is
    imported) in a RuntimeError, so Ctrl-C can arrive as that error's cause."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kind):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


SIGPIPE_EXIT = 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader left


def _reader_gone() -> int:
    """stdout's reader closed the pipe (``hubpin status | head -1``): stop quietly, as tools
    killed by SIGPIPE do, rather than with a traceback. stdout is pointed at /dev/null so the
    interpreter's last flush of what is still buffered cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return SIGPIPE_EXIT


def _main() -> int:
    # What start-up allocates (modules, classes, schemas, the lock's pins) lives to the end:
    # the cyclic collector would only traverse it again and again (a tenth of a first
    # `status` of 2,000 models, measured). It stays off while hubpin starts and reads; a
    # command that runs on turns it on (hubpin.cli.main).
    gc.disable()
    # The CLI uses no pydantic plugins; not scanning installed packages for them
    # saves about 8 ms of every run (a no-op sync must be instant in Docker builds).
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    from hubpin.stamp import replay

    # A sync identical to the last clean one, a passing `lock --check` or a `status`: stat
    # checks only.
    code = replay(sys.argv[1:], _show_status)
    if code is not None:
        return code
    import signal  # here, not before the replay: it takes no locks, and each ms counts there

    signal.signal(signal.SIGTERM, _terminate)
    from hubpin.cli import main as cli_main

    return cli_main()


def _show_status(report: StatusReport, as_json: bool) -> None:
    from hubpin.cli.report import show_status  # the CLI's renderer, imported only to print

    show_status(report, as_json)


class Terminated(KeyboardInterrupt):
    """SIGTERM (``docker stop``, ``kill``), handled as Ctrl-C is: the same line, nothing
    half-written published, the cache's locks released; exit 143."""


_terminated: list[int] = []  # the SIGTERM received, if one was


def _terminate(signum: int, frame: object) -> None:
    _terminated.append(signum)
    raise Terminated


def run() -> None:
    """``hubpin`` run by other code that goes on after it (``runpy.run_module``): it exits by
    SystemExit, except when interrupted (see :func:`_leave`)."""
    _leave(_command(), whole_process=False)


def script() -> None:
    """The ``hubpin`` script and ``python -m hubpin``: the process leaves with ``os._exit`` once
    the command has returned and its output is flushed.

    Nothing of hubpin's is left for the interpreter's shutdown (no atexit work,
    finalizer or thread of its own), and that shutdown, which frees every module and
    object one by one (pydantic's schemas, urllib3, the pins), took 30-50 ms of a sync.
    """
    _leave(_command(), whole_process=True)


def _command() -> int:
    try:
        return main()
    except KeyboardInterrupt:  # a signal just after main() returned
        return 130


def _leave(code: int, whole_process: bool) -> None:
    """Exit with ``code``. An interrupted run leaves at once, skipping the interpreter's
    shutdown: after Ctrl-C about 0.1 s into start-up, that shutdown ended the process by
    SIGINT (exit -2, not 130) in about one run of three, after hubpin had said it stopped.
    Its threads may still hold cache locks (mid-download): those are released first, or
    each would be a ``<key>.lock`` that tensorflow_hub waits for."""
    if code == 130:
        held = sys.modules.get("hubpin.cache.lock")
        if held is not None:
            held.release_held()
        sys.stderr.flush()
        os._exit(143 if _terminated else 130)
    if whole_process:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BrokenPipeError:  # what was still buffered had no reader left
            code = _reader_gone()
        except OSError as exc:  # stdout on a full disk, say: one line, not a traceback
            with contextlib.suppress(OSError):
                os.write(2, f"hubpin: error: cannot write the output: {exc}\n".encode())
            code = code or 1
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    # ``python -m hubpin`` runs this module as the process's own __main__; runpy.run_module
    # from other code leaves that code's __main__ in place, and that code goes on after it.
    main_spec = getattr(sys.modules["__main__"], "__spec__", None)
    if main_spec is not None and main_spec.name == __spec__.name:
        script()
    run()
