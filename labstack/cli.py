"""What every task shares: the lab's settings applied first, and every failure or signal ending in one
`labstack: ...` line with its exit code, never a traceback."""

from __future__ import annotations

import contextlib
import functools
import signal
import subprocess
import sys

from invoke import Exit

from labstack import ROOT
from labstack.errors import ExitCode, LabstackError, Terminated
from labstack.matrix import VARIANTS, choose
from labstack.settings import Settings, export, from_config


def _terminate(signum, frame):
    raise Terminated


@contextlib.contextmanager
def sigterm_as_interrupt():
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def settings(c) -> Settings:
    """The lab's settings of this invocation (invoke's configuration, then the environment)."""
    return from_config(c.config.get("labstack"))


def one_line_errors(body):
    """Wrap a task: apply the lab's settings, then turn LabstackError into `Exit(message, code)` and a signal
    into `interrupted` (130) or `terminated` (143)."""

    @functools.wraps(body)
    def wrapper(c, *args, **kwargs):
        try:
            export(settings(c))
            with sigterm_as_interrupt():
                return body(c, *args, **kwargs)
        except LabstackError as err:
            raise Exit(f"labstack: {err}", code=err.code) from None
        except Terminated:
            raise Exit("labstack: terminated (SIGTERM)", code=ExitCode.TERMINATED) from None
        except KeyboardInterrupt:
            raise Exit("labstack: interrupted", code=ExitCode.INTERRUPTED) from None

    return wrapper


def run_tests(unit: bool, variant: str) -> int:
    """`invoke test`: pytest on the unit tests, or on everything (the developers' tests and the shipped checks)
    with the images of `variant` built once. Every argument is checked or fixed: nothing reaches a shell."""
    variants = ",".join(choose("variant", variant, VARIANTS))
    paths = ["tests/unit"] if unit else ["tests", "labstack/validate/checks"]
    command = [sys.executable, "-m", "pytest", *paths, "--variant", variants]
    print("$ " + " ".join(command), flush=True)
    return subprocess.run(command, cwd=ROOT, check=False).returncode
