"""One ssh connection per lab server, through the user's own OpenSSH: a master connection (ControlMaster) that
every command, the image stream and the registry tunnel of that host share, so the host is dialled and
authenticated once. Its config, keys and agent are the user's (or labstack's own ssh config, `-F`).

Every remote command is a list of words, each quoted for the remote shell: nothing a user typed is ever read
by a shell as shell text. A host that refuses, stalls or drops the connection becomes one `HostFailure` line
naming the fix.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
import uuid
from pathlib import Path

from labstack.children import Children
from labstack.hosts import CONNECT_TIMEOUT_S, SSH_OPTIONS, Host, ssh_config

# The master gives up by itself after ConnectTimeout (a stalled handshake too, with ServerAliveInterval set);
# this is the limit past which labstack stops waiting for it anyway.
CONNECT_LIMIT_S = CONNECT_TIMEOUT_S + 15
COMMAND_TIMEOUT_S = 120


class HostFailure(Exception):
    """A failure of one host in one stage (connect, preflight, transfer, verify, tag, smoke): the message is one
    line that names the fix."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


def ssh_reason(stderr: str, host: Host, config: str | None) -> str:
    """What ssh's last words mean for the user, with what to do."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip() and "Warning:" not in line]
    last = lines[-1] if lines else "ssh gave no reason"
    target = host.label
    try_it = f"`ssh {'-F ' + config + ' ' if config else ''}-o BatchMode=yes {target} true`"
    text = " ".join(lines).lower()
    if "connection refused" in text:
        return f"{target} refused the ssh connection ({last}): is sshd running there, on that port? try {try_it}"
    if "timed out" in text or "timeout" in text:
        return (
            f"{target} did not answer within {CONNECT_TIMEOUT_S} s ({last}): the host is down, hung or a firewall "
            f"drops ssh; try {try_it}"
        )
    if "could not resolve" in text or "name or service not known" in text:
        return f"cannot resolve {host.name} ({last}): check the name, or give it a Host entry in your ssh config"
    if "host key verification failed" in text or "remote host identification has changed" in text:
        return f"the host key of {target} is unknown or has changed ({last}): check it, then accept it with {try_it}"
    if "permission denied" in text:
        return (
            f"{target} refused the login ({last}): add your public key to its authorized_keys or load it in your "
            f"agent (`ssh-add`); try {try_it}"
        )
    return f"ssh to {target} failed ({last}): try {try_it}"


class Connection:
    """The master connection to one host and the commands run through it."""

    def __init__(self, host: Host, folder: Path, children: Children) -> None:
        self.host = host
        self.children = children
        self.config = ssh_config()
        self.socket = folder / f"{uuid.uuid4().hex[:12]}.sock"  # short: a unix socket path has 108 bytes
        self.log = self.socket.with_suffix(".log")
        self.master: subprocess.Popen | None = None
        self.tunnel_port: int | None = None  # the registry tunnel's port on the host, once opened

    def base(self, *options: str) -> list[str]:
        command = ["ssh", *(["-F", self.config] if self.config else []), *SSH_OPTIONS, *options]
        if self.host.port:
            command += ["-p", str(self.host.port)]
        if self.host.user:
            command += ["-l", self.host.user]
        return [*command, "--", self.host.name.strip("[]")]

    def open(self) -> float:
        """Dial and authenticate once; returns the seconds it took. The master stays until `close`."""
        started = time.monotonic()
        with self.log.open("wb") as log:
            self.master = self.children.popen(
                self.base("-M", "-S", str(self.socket), "-N", "-o", "ControlPersist=no"),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        while not self.socket.exists():
            if self.master.poll() is not None:
                raise HostFailure("connect", ssh_reason(self.log.read_text(errors="replace"), self.host, self.config))
            if time.monotonic() - started > CONNECT_LIMIT_S:
                self.close()
                raise HostFailure(
                    "connect", f"{self.host.label} did not finish the ssh handshake within {CONNECT_LIMIT_S} s"
                )
            time.sleep(0.02)
        return time.monotonic() - started

    def command(self, words: list[str]) -> list[str]:
        """ssh through the master, running `words` quoted one by one for the remote shell."""
        return [*self.base("-S", str(self.socket), "-o", "ControlMaster=no"), shlex.join(words)]

    def run(
        self, words: list[str], stage: str, timeout: float = COMMAND_TIMEOUT_S, stdin: str | None = None
    ) -> subprocess.CompletedProcess:
        """Run a command on the host; ssh's own failure (exit 255) is a HostFailure, the command's is returned."""
        with self.children.start(
            self.command(words), stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ) as process:  # fmt: skip
            try:
                out, err = process.communicate(stdin, timeout=timeout)
            except subprocess.TimeoutExpired:
                kill(process)
                what = " ".join(words[:2])
                raise HostFailure(stage, f"`{what}` on {self.host.label} ran past {timeout:.0f} s") from None
        if process.returncode < 0:
            raise KeyboardInterrupt  # stopped by Ctrl-C or SIGTERM through Children.stop_all
        if process.returncode == 255 and not out:
            raise HostFailure(stage, ssh_reason(err, self.host, self.config))
        return subprocess.CompletedProcess(words, process.returncode, out, err)

    def forward(self, local_port: int) -> int:
        """A reverse tunnel: a port on the host's loopback that reaches 127.0.0.1:local_port here; sshd picks the
        port. Raises HostFailure("tunnel") when sshd refuses forwarding."""
        done = subprocess.run(
            self.base("-S", str(self.socket), "-O", "forward", "-R", f"0:127.0.0.1:{local_port}"),
            capture_output=True, text=True, timeout=CONNECT_LIMIT_S, check=False,
        )  # fmt: skip
        port = done.stdout.strip()
        if done.returncode or not port.isdigit():
            reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
            raise HostFailure(
                "tunnel",
                f"sshd on {self.host.label} refused the registry tunnel ({reason}): allow it there "
                "(`AllowTcpForwarding yes` in sshd_config) or deploy with --via ssh",
            )
        return int(port)

    def close(self) -> None:
        """End the master (and with it every tunnel of this host); never raises."""
        if self.master is None:
            return
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(self.base("-S", str(self.socket), "-O", "exit"), capture_output=True, timeout=5, check=False)
        kill(self.master)
        self.children.forget(self.master)
        self.master = None
        with contextlib.suppress(OSError):
            self.socket.unlink()


def kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
