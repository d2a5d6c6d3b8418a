"""What every task shares: the lab's settings applied first, and every failure or signal ending in one
`labstack: ...` line with its exit code, never a traceback."""

from __future__ import annotations

import contextlib
import functools
import signal

from invoke import Exit

from labstack.errors import ExitCode, LabstackError
from labstack.settings import Settings, export, from_config


class Terminated(KeyboardInterrupt):
    """SIGTERM (timeout, systemd, Slurm, docker stop), handled like Ctrl-C: what is measured so far is kept."""


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
