"""The one error type the tasks turn into a one-line `labstack: ...` message, and the exit codes it carries."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What a non-zero exit of a labstack command means; the troubleshooting page lists them."""

    FAILED = 1  # something went wrong: the message says what and what to do
    BAD_INPUT = 2  # an option, a name or a file given to labstack is not valid
    NO_DOCKER = 3  # the Docker daemon cannot be reached
    NO_DISK = 4  # not enough free disk for what was asked, or a disk that filled up while writing (train.py too)
    NO_GPU = 5  # no usable GPU, or a GPU this image cannot use
    HANGUP = 129  # SIGHUP (a closed terminal or ssh session) to `invoke train`; its run is checkpointed
    INTERRUPTED = 130  # Ctrl-C (SIGINT); what was measured or written so far is kept
    TERMINATED = 143  # SIGTERM (timeout, systemd, Slurm, docker stop); the same


class LabstackError(Exception):
    """A failure the user can act on: `str(err)` says what went wrong and what to do."""

    def __init__(self, message: str, code: int = ExitCode.FAILED) -> None:
        super().__init__(message)
        self.code = int(code)


class Terminated(KeyboardInterrupt):
    """SIGTERM (timeout, systemd, Slurm, docker stop), raised where Ctrl-C would be, so that everything that keeps
    its results on Ctrl-C keeps them on SIGTERM too; the exit code tells the two apart."""


class BadInput(LabstackError):
    """An option value, a name or a file the user gave is not valid (exit 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ExitCode.BAD_INPUT)


def first_line(err: BaseException) -> str:
    """The first line of another library's message, for our one line (packaging, for one, adds a caret line)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def shown(text: str, limit: int = 200) -> str:
    """A value the user typed, for a one-line message: control and direction characters escaped (\\u202e would
    turn the rest of the line around), a very long one cut, saying how long it was."""
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def whole_number(option: str, text: str | int, minimum: int = 1) -> int:
    """A whole-number option as the command line gives it (text): bad text or too small a value is BadInput naming
    the option, never int()'s traceback."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise BadInput(f"--{option} {text!r} is not a whole number") from None
    if value < minimum:
        raise BadInput(f"--{option} {value} is too small: {minimum} or more")
    return value
