"""The one error path of every command (``experiments.run``, ``compare``, ``plot``, ``bench``).

A bad input -- a config value, a missing or wrong file, a run folder that is not one -- prints
one line naming what is wrong (for a config value: the dotted key, the value and what is
allowed, i.e. ``str(ConfigError)``) on stderr and exits with code 2, without a traceback.
``--debug`` re-raises instead, for the traceback. Anything else (a bug) raises as usual::

    def main(argv=None) -> int:
        return run_command(_main, argv)          # _main(argv) parses and works; may raise

    # python -m experiments.run bad.yaml psro.capacity=-1
    # error: config error at psro.capacity = -1: must be an integer >= 2

What counts as a bad input: ``envs.settings.SettingError`` (hence ``ConfigError``),
:class:`CommandError` (a command's own one-line complaint, e.g. ``--out`` naming a file),
``FileNotFoundError``, ``NotADirectoryError``, ``IsADirectoryError``, ``FileExistsError``,
``PermissionError``, ``marl.checkpoint.CheckpointError``, a ``SystemExit`` carrying a message
(``raise SystemExit("unknown benchmark ...")``), plus the command's own ``errors``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from envs.settings import SettingError

__all__ = ["DEBUG_HELP", "CommandError", "EXIT_BAD_INPUT", "one_line", "run_command"]

EXIT_BAD_INPUT = 2
DEBUG_HELP = "on an error, show the traceback instead of the one-line message"

_FILE_ERRORS = (
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    FileExistsError,
    PermissionError,
)


class CommandError(Exception):
    """A bad command-line input that is not a config value (a path, a file's content)."""


def _user_errors(extra: Sequence[type[BaseException]]) -> tuple[type[BaseException], ...]:
    errors = [SettingError, CommandError, *_FILE_ERRORS, *extra]
    checkpoint = sys.modules.get("marl.checkpoint")  # only raisable once imported
    if checkpoint is not None:
        errors.append(checkpoint.CheckpointError)
    return tuple(errors)


def one_line(err: BaseException) -> str:
    """``err``'s message on one line (its type name when it has none)."""
    text = " ".join(str(err).split())
    return text or type(err).__name__


def run_command(
    fn: Callable[[list[str]], Any],
    argv: Sequence[str] | None = None,
    errors: Sequence[type[BaseException]] = (),
) -> int:
    """``fn(argv)``; its int result is the exit code (anything else: 0). A bad input (see the
    module docstring; ``errors``: more exception types that mean one) prints ``error: <one
    line>`` on stderr and returns 2 -- unless ``--debug`` is in ``argv``: then it re-raises."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        result = fn(argv)
    except _user_errors(errors) as err:
        if debug:
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SystemExit as err:
        if debug or not isinstance(err.code, str):
            raise  # argparse's own exits (usage, --help) and plain exit codes pass through
        print(f"error: {one_line(err.code)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
