"""Run many `invoke` command lines in one checkout copy, fast: invoke and labstack are imported once, then each
command line runs in a forked child through `invoke.main.program.run()`, exactly what `python -m invoke` runs,
with its own stdout, stderr, exit status and process group. A plain `python -m invoke` spends about 1.4 s of CPU
importing; a child costs a few milliseconds, so scanning a thousand command lines fits in a unit test run.

Usage: python forked_invoke.py JOBS.json RESULTS.json, run with the copy as the working folder and first on
PYTHONPATH. JOBS.json: {"timeout": seconds, "jobs": [[ARG, ...], ...]}; RESULTS.json: one
{"argv", "code", "stdout", "stderr", "timed_out", "seconds"} per job, in order.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path


def run_child(argv: list[str]) -> None:
    """In the forked child: `invoke ARGV` as the command line runs it, then exit with its status."""
    from invoke.main import program

    code = 1
    try:
        sys.argv = ["invoke", *argv]
        program.run()
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:  # sys.exit("text") prints the text and exits 1, as the interpreter does
            print(exc.code, file=sys.stderr)
    except BaseException:  # what the interpreter does with an uncaught exception: a traceback and exit 1
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed stream must not keep the child alive
                stream.flush()
        os._exit(code)


def run_one(argv: list[str], timeout: float) -> dict:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.setsid()  # its own process group: a timeout ends whatever it started too
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            run_child(argv)
        started = time.monotonic()
        deadline = started + timeout
        timed_out = False
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                timed_out = True
                os.killpg(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
                break
            time.sleep(0.01)
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {
            "argv": argv,
            "code": code,
            "stdout": out.read().decode(errors="replace"),
            "stderr": err.read().decode(errors="replace"),
            "timed_out": timed_out,
            "seconds": round(time.monotonic() - started, 2),
        }


def main(jobs_path: str, results_path: str) -> None:
    import invoke.main  # noqa: F401 - imported once, before forking

    import tasks  # noqa: F401 - the copy's tasks.py and the labstack it imports
    from labstack import ROOT

    if ROOT.resolve() != Path.cwd().resolve():
        sys.exit(f"labstack was imported from {ROOT}, not from this copy {Path.cwd()}: put the copy on PYTHONPATH")
    spec = json.loads(Path(jobs_path).read_text())
    results = [run_one(argv, spec["timeout"]) for argv in spec["jobs"]]
    Path(results_path).write_text(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:])
