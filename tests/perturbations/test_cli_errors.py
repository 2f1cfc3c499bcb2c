"""The one CLI error wrapper (perturbations.cli_errors)."""

from __future__ import annotations

import pytest

from perturbations.cli_errors import EXIT_FAILURE, EXIT_INTERRUPTED, fail, one_line, run_cli


def _raise(error):
    def command():
        raise error

    return command


def test_the_command_s_exit_code_passes_through():
    assert run_cli(lambda: 0) == 0
    assert run_cli(lambda: 3) == 3
    assert run_cli(lambda: None) == 0


@pytest.mark.parametrize(
    "error",
    [ValueError("bad --levels"), FileNotFoundError(2, "No such file", "x.wav"), RuntimeError("ffmpeg is missing")],
)
def test_expected_failures_give_one_line_and_exit_1(capsys, error):
    assert run_cli(_raise(error)) == EXIT_FAILURE == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"error: {error}\n"


def test_prog_prefixes_the_line(capsys):
    assert run_cli(_raise(ValueError("no judgments")), prog="python -m model train") == 1
    assert capsys.readouterr().err == "python -m model train: error: no judgments\n"


def test_a_multiline_message_is_joined_into_one_line(capsys):
    assert run_cli(_raise(ValueError("first\n\n  second  \n"))) == 1
    assert capsys.readouterr().err == "error: first; second\n"


def test_interrupt_exits_130_with_its_hint(capsys):
    assert run_cli(_raise(KeyboardInterrupt()), prog="python -m se train") == EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == "python -m se train: interrupted\n"
    assert run_cli(_raise(KeyboardInterrupt()), interrupted_hint="rerun to resume") == 130
    assert capsys.readouterr().err == "interrupted; rerun to resume\n"


def test_other_exceptions_keep_their_traceback():
    with pytest.raises(KeyError):
        run_cli(_raise(KeyError("bug")))
    with pytest.raises(SystemExit):
        run_cli(_raise(SystemExit(2)))


def test_errors_can_be_narrowed(capsys):
    with pytest.raises(RuntimeError):
        run_cli(_raise(RuntimeError("not expected here")), errors=(ValueError, OSError))
    assert run_cli(_raise(OSError("disk full")), errors=(ValueError, OSError)) == 1
    assert capsys.readouterr().err == "error: disk full\n"


def test_fail_and_one_line(capsys):
    assert fail("--workers must be at least 1") == 1
    assert capsys.readouterr().err == "error: --workers must be at least 1\n"
    assert one_line(KeyError()) == "KeyError"
    assert one_line("a\nb") == "a; b"
    assert one_line("") == ""
