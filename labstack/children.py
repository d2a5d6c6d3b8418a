"""The child processes a command has running now, so that Ctrl-C or SIGTERM stops them too instead of leaving
them behind or waiting for them: validate's pytest processes, deploy's ssh masters, pulls and loads.

Each child gets a session of its own, so stopping it stops what it started too (ssh, docker).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading


class Children:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.processes: set[subprocess.Popen] = set()
        self.stopping = False

    def popen(self, command: list[str], **options) -> subprocess.Popen:
        """Start a child in its own session and keep it on the list until `forget`; refused once stopping."""
        with self.lock:
            if self.stopping:
                raise KeyboardInterrupt
            process = subprocess.Popen(command, start_new_session=True, **options)
            self.processes.add(process)
        return process

    def forget(self, process: subprocess.Popen) -> None:
        with self.lock:
            self.processes.discard(process)

    @contextlib.contextmanager
    def start(self, command: list[str], **options):
        process = self.popen(command, **options)
        try:
            yield process
        finally:
            self.forget(process)

    def stop_all(self, sig: int = signal.SIGTERM) -> None:
        """Signal every child's process group; no new child starts after this."""
        with self.lock:
            self.stopping = True
            for process in self.processes:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
