"""How every ``python -m PACKAGE`` command ends: exit 0, or non-zero with a one-line reason.

DESIGN.md: "Every command ... exits non-zero on failure with a one-line reason". Expected
failures (a missing file, a bad argument value, data that cannot be used) are the
exceptions named in ``CLI_ERRORS``; the command prints ``[PROG: ]error: MESSAGE`` on stderr
and exits 1. Ctrl-C prints ``[PROG: ]interrupted[; HINT]`` and exits 130 (128 + SIGINT, as
shells do). Anything else is a bug and keeps its traceback.

Use::

    def main(argv=None) -> int:
        args = build_parser().parse_args(argv)
        return run_cli(lambda: COMMANDS[args.command](args), prog=f"python -m model {args.command}")

and ``return fail("...")`` inside a command for a failure found without an exception.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

# FileNotFoundError, PermissionError ... are OSErrors; json.JSONDecodeError and every
# jndlab *Error (AudioError, ManifestError, JudgmentsError ...) is a ValueError or RuntimeError.
CLI_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, RuntimeError)
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130


def one_line(error: BaseException | str) -> str:
    """The message of ``error`` on one line: the lines of ``str(error)`` joined by ``; ``.

    An exception without a message gives its class name (``KeyError`` has no useful text).
    Raises nothing.
    """
    text = error if isinstance(error, str) else str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines and not isinstance(error, str):
        return type(error).__name__
    return "; ".join(lines)


def _lead(prog: str | None) -> str:
    return f"{prog}: " if prog else ""


def fail(message: BaseException | str, *, prog: str | None = None) -> int:
    """Print ``[PROG: ]error: MESSAGE`` (one line) on stderr and return ``EXIT_FAILURE`` (1).

    ``message``: the reason, or an exception whose message is the reason.
    ``prog``: the command as users type it (e.g. ``"python -m model train"``), or ``None``
    for a bare ``error: ...``. Raises nothing.
    """
    print(f"{_lead(prog)}error: {one_line(message)}", file=sys.stderr)
    return EXIT_FAILURE


def run_cli(
    command: Callable[[], int | None],
    *,
    prog: str | None = None,
    errors: tuple[type[BaseException], ...] = CLI_ERRORS,
    interrupted_hint: str | None = None,
) -> int:
    """Run ``command()`` and turn an expected failure into a one-line reason and an exit code.

    Returns ``command()``'s own exit code (``None`` counts as 0); ``EXIT_FAILURE`` (1) after
    printing ``[PROG: ]error: MESSAGE`` for an exception in ``errors`` (default ``CLI_ERRORS``:
    ``ValueError``, ``OSError``, ``RuntimeError`` and their subclasses); ``EXIT_INTERRUPTED``
    (130) after printing ``[PROG: ]interrupted[; HINT]`` for ``KeyboardInterrupt``.

    Raises every other exception unchanged (a bug: its traceback is the useful report), and
    ``SystemExit`` as raised (argparse's own usage errors exit 2).
    """
    try:
        code = command()
    except KeyboardInterrupt:
        hint = f"; {interrupted_hint}" if interrupted_hint else ""
        print(f"{_lead(prog)}interrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except errors as error:
        return fail(error, prog=prog)
    return 0 if code is None else int(code)
