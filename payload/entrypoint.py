#!/usr/bin/env python3
"""What the train service runs under tini: the built-in MNIST trainer, or the lab's own command.

    docker compose run --rm train                          train.py with its defaults
    docker compose run --rm train --synthetic --epochs 1   a first argument starting with '-': options of train.py
    docker compose run --rm train python my_train.py ...   anything else: a command of the image, run as given

The command replaces this process (exec, no shell: nothing the user typed is ever parsed by one), so it is the
process tini starts and forwards SIGTERM to: `docker stop` reaches the lab's script, which can checkpoint within
the grace period. A command that cannot start is one `labstack: ...` line on stderr and the shell's exit code:
127 when there is no such command or file, 126 when it exists but cannot be executed. Standard library only.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from pathlib import Path

TRAINER = Path(__file__).with_name("train.py")
NOT_FOUND = 127
CANNOT_EXECUTE = 126


def command_for(argv: list[str], python: str = sys.executable) -> list[str]:
    """The docker-library convention: no arguments or options first go to the default program, the built-in
    trainer; a first word that is not an option is the command itself."""
    if not argv or argv[0].startswith("-"):
        return [python, str(TRAINER), *argv]
    return list(argv)


def why_not(name: str, err: OSError, cwd: str) -> tuple[str, int]:
    """One line saying why `name` did not start and what to do, and the shell's exit code for it."""
    if isinstance(err, FileNotFoundError):
        if "/" in name:
            return f"{name}: no such file (the working folder {cwd} is your project folder)", NOT_FOUND
        if Path(cwd, name).is_file():
            return (
                f"{name} is a file in {cwd}, not a command: run it with its interpreter, e.g. `python {name}`",
                NOT_FOUND,
            )
        return (
            f"{name}: no such command in the image: give a command (python my_train.py) or options of the "
            "built-in trainer (--epochs 3)",
            NOT_FOUND,
        )
    if Path(cwd, name).is_dir():
        return f"{name} is a folder, not a command", CANNOT_EXECUTE
    if err.errno == errno.ENOEXEC:
        return f"{name} is not a program (no #! line?): run it with its interpreter, e.g. `bash {name}`", CANNOT_EXECUTE
    if isinstance(err, PermissionError):
        return f"{name}: permission denied: `chmod +x {name}`, or run it with its interpreter", CANNOT_EXECUTE
    return f"cannot run {name}: {err.strerror or err}", CANNOT_EXECUTE


def main(argv: list[str], execvp: Callable[[str, list[str]], object] = os.execvp) -> int:
    command = command_for(argv)
    try:
        execvp(command[0], command)
    except OSError as err:
        message, code = why_not(command[0], err, os.getcwd())
        print(f"labstack: {message}", file=sys.stderr)
        return code
    return 0  # only an execvp that returns (a test's) gets here


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
