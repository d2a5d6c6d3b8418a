"""Simulated lab servers on this one machine: each has its own Docker daemon and its own sshd, and labstack reaches
them as `ssh://gpu1`, `ssh://gpu2`, ... through an ssh config file of their own (LABSTACK_SSH_CONFIG).

Each daemon has its own data-root, exec-root, pid file, socket and a bridge created for it (`-b NAME`), with
iptables and masquerading off and an empty config file, so it changes nothing of the main daemon. Never
`--bridge=none`: a daemon started that way deletes the host's docker0 and breaks the main daemon's builds. Each
sshd listens on a loopback port with its own host key and authorized key, and `SetEnv DOCKER_HOST` sends its
sessions to its own daemon. Everything is stopped and removed on close, also after a failed test.

A host can be given a small disk (`disk_mb`: its data root is a tmpfs of that size), and tests inject faults
for a block: sshd down, stalled or refusing port forwarding, dockerd stopped.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
START_TIMEOUT = 60
STOP_TIMEOUT = 20
PREFIX = "lsh"


class LabHostError(RuntimeError):
    """A simulated host did not start: the message ends with the tail of its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace") if path.is_file() else "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def wait_until(ready, timeout: float, what: str, process: subprocess.Popen, log: Path) -> None:
    """Wait for `ready()`; a process that exits, or a timeout, is an error with the tail of its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LabHostError(f"{what} exited with {process.returncode}:\n{log_tail(log)}")
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            if ready():
                return
        time.sleep(0.2)
    raise LabHostError(f"{what} was not ready after {timeout} s:\n{log_tail(log)}")


def run_checked(command: list[str]) -> None:
    """A setup command whose failure is a LabHostError with its stderr."""
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise LabHostError(f"{' '.join(command)} failed: {done.stderr.strip()}")


def free_subnets(count: int) -> list[ipaddress.IPv4Network]:
    """/24s in 10.254.0.0/16 that no address of this machine is in (the bridges must not shadow a route)."""
    taken = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    used = {ipaddress.ip_interface(word).network for word in taken.split() if "/" in word and word[0].isdigit()}
    subnets = []
    for subnet in ipaddress.ip_network("10.254.0.0/16").subnets(new_prefix=24):
        if not any(subnet.overlaps(u) for u in used):
            subnets.append(subnet)
        if len(subnets) == count:
            return subnets
    raise LabHostError("no free /24 in 10.254.0.0/16 for the simulated hosts' bridges")


@dataclass
class LabHost:
    """One simulated lab server: its folder, bridge, dockerd and sshd."""

    name: str  # the ssh alias: gpu1
    folder: Path
    bridge: str
    subnet: ipaddress.IPv4Network
    port: int = 0
    disk_mb: int | None = None  # the data root is a tmpfs of this size: a lab server whose disk is nearly full
    dockerd: subprocess.Popen | None = None
    sshd: subprocess.Popen | None = None
    extra: list[subprocess.Popen] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return self.folder / "docker.sock"

    @property
    def data_root(self) -> Path:
        return self.folder / "data"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def spec(self) -> str:
        return f"ssh://{self.name}"

    def docker(self, *args: str, timeout: float = 60, **options) -> subprocess.CompletedProcess:
        """The docker CLI against this host's daemon."""
        return subprocess.run(
            ["docker", "-H", self.docker_host, *args], capture_output=True, text=True, timeout=timeout, **options
        )

    # --- start

    def create_bridge(self) -> None:
        gateway = next(self.subnet.hosts())
        for command in (
            ["ip", "link", "add", self.bridge, "type", "bridge"],
            ["ip", "addr", "add", f"{gateway}/{self.subnet.prefixlen}", "dev", self.bridge],
            ["ip", "link", "set", self.bridge, "up"],
        ):
            run_checked(command)

    def mount_small_disk(self) -> None:
        """With `disk_mb`, a tmpfs of that size as the data root (overlay2 works on tmpfs), so that a load or pull
        that needs more fails with "no space left on device"; mounted once, kept when the daemon restarts, and
        unmounted by close."""
        if self.disk_mb is None or os.path.ismount(self.data_root):
            return
        self.data_root.mkdir(mode=0o710, exist_ok=True)
        run_checked(["mount", "-t", "tmpfs", "-o", f"size={self.disk_mb}m,mode=0710", "tmpfs", str(self.data_root)])

    def start_dockerd(self) -> None:
        self.mount_small_disk()
        config = self.folder / "daemon.json"
        config.write_text("{}\n")
        log = self.folder / "dockerd.log"  # appended to: a restarted daemon's log follows the first one's
        command = [
            "dockerd", "--data-root", str(self.data_root), "--exec-root", str(self.folder / "exec"),
            "--pidfile", str(self.folder / "docker.pid"), "-H", self.docker_host, "-b", self.bridge,
            "--iptables=false", "--ip-masq=false", "--config-file", str(config),
        ]  # fmt: skip
        with log.open("ab") as out:
            self.dockerd = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )

    def wait_for_dockerd(self) -> None:
        wait_until(
            lambda: self.docker("version", "--format", "{{.Server.Version}}", timeout=10).returncode == 0,
            START_TIMEOUT, f"dockerd of {self.name}", self.dockerd, self.folder / "dockerd.log",
        )  # fmt: skip

    def write_sshd_config(self, client_key: Path | None = None, forwarding: bool = True) -> Path:
        """The host key is made once and kept, so a restarted sshd is the same host to known_hosts; without
        `client_key` the authorized key written before stays. Remote forwards bind to the host's loopback
        (GatewayPorts off), which is where its daemon pulls through them."""
        host_key = self.folder / "ssh_host_ed25519_key"
        if not host_key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
        authorized = self.folder / "authorized_keys"
        if client_key is not None:
            shutil.copyfile(client_key.with_suffix(".pub"), authorized)
            authorized.chmod(0o600)
        config = self.folder / "sshd_config"
        config.write_text(
            f"Port {self.port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {host_key}\n"
            f"PidFile {self.folder / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {authorized}\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes no\n"  # the folder lies in /tmp, which sshd would reject as world-writable
            f"AllowTcpForwarding {'yes' if forwarding else 'no'}\n"
            f"SetEnv DOCKER_HOST={self.docker_host}\n"
        )
        return config

    def start_sshd(self) -> None:
        """sshd in the foreground (-D), logging to its file (-e); waits until it sends its banner."""
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
        log = self.folder / "sshd.log"
        with log.open("ab") as out:
            self.sshd = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.folder / "sshd_config")],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        wait_until(self.sshd_answers, START_TIMEOUT, f"sshd of {self.name}", self.sshd, log)

    def sshd_answers(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as conn:
            return conn.recv(64).startswith(b"SSH-")

    def restart_sshd(self, forwarding: bool = True) -> None:
        """sshd stopped and started again on the same port with the same host key, forwarding allowed or not."""
        stop(self.sshd)
        self.write_sshd_config(forwarding=forwarding)
        self.start_sshd()

    # --- faults the tests inject

    def kill_sshd(self) -> None:
        """The host goes down for ssh: its sshd is killed (connections are refused)."""
        stop(self.sshd, signal.SIGKILL)

    @contextlib.contextmanager
    def sshd_down(self):
        """sshd killed for the block, then started again on the same port."""
        self.kill_sshd()
        try:
            yield self
        finally:
            self.start_sshd()

    @contextlib.contextmanager
    def sshd_stalled(self):
        """sshd stopped (SIGSTOP) for the block: the kernel still accepts connections, nothing answers them."""
        os.kill(self.sshd.pid, signal.SIGSTOP)
        try:
            yield self
        finally:
            os.kill(self.sshd.pid, signal.SIGCONT)

    @contextlib.contextmanager
    def forwarding_refused(self):
        """sshd restarted with `AllowTcpForwarding no` for the block, then with forwarding allowed again: a lab
        server whose admin forbids tunnels. It holds for connections made in the block; one opened before keeps
        what its sshd allowed (each connection's sshd is a process of its own that outlives the listener)."""
        self.restart_sshd(forwarding=False)
        try:
            yield self
        finally:
            self.restart_sshd(forwarding=True)

    @contextlib.contextmanager
    def dockerd_stopped(self):
        """dockerd stopped (SIGTERM, waited for) for the block: sshd still answers, `docker` there cannot reach
        its daemon. Then started again on the same data root, images kept, and waited for. Containers are not
        removed first: a running one is stopped by the daemon itself and is not restarted."""
        stop(self.dockerd)
        try:
            yield self
        finally:
            self.start_dockerd()
            self.wait_for_dockerd()

    def load_image(self, ref: str) -> str:
        """`docker save REF | docker -H HOST load`: the image from the main daemon; returns its ID there."""
        with subprocess.Popen(["docker", "save", ref], stdout=subprocess.PIPE) as save:
            loaded = self.docker("load", "-q", stdin=save.stdout, timeout=300)
            save.stdout.close()
        if save.returncode or loaded.returncode:
            raise LabHostError(f"loading {ref} into {self.name} failed: {loaded.stderr.strip()}")
        return self.docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()

    def image_ids(self) -> dict[str, str]:
        """{repository:tag: image ID} of every tagged image on this host's daemon."""
        listed = self.docker("image", "ls", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}").stdout
        return dict(line.split() for line in listed.splitlines() if not line.startswith("<none>"))

    def wipe(self) -> None:
        """Remove every image of this host's daemon: the next deploy starts from nothing there."""
        ids = self.docker("image", "ls", "--all", "--quiet", "--no-trunc").stdout.split()
        if ids:
            self.docker("image", "rm", "--force", *sorted(set(ids)), timeout=120)

    # --- stop

    def close(self) -> None:
        """Stop everything of this host and remove its bridge and folder; each step runs even if one before fails."""
        steps = (self._stop_sshd, self._stop_dockerd, self._kill_shims, self._unmount, self._delete_bridge)
        for step in steps:
            with contextlib.suppress(Exception):
                step()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _stop_sshd(self) -> None:
        if self.sshd and self.sshd.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.sshd.pid, signal.SIGCONT)
        stop(self.sshd)

    def _stop_dockerd(self) -> None:
        if self.dockerd and self.dockerd.poll() is None:
            containers = self.docker("ps", "-aq", timeout=20).stdout.split()
            if containers:
                self.docker("rm", "-f", *containers, timeout=60)
        stop(self.dockerd)

    def _kill_shims(self) -> None:
        """containerd and its shims started by this daemon (their command lines name its exec-root)."""
        for pid in processes_naming(str(self.folder)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _unmount(self) -> None:
        with open("/proc/self/mounts") as mounts:
            points = [line.split()[1] for line in mounts if line.split()[1].startswith(str(self.folder) + "/")]
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)

    def _delete_bridge(self) -> None:
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)


def stop(process: subprocess.Popen | None, first: int = signal.SIGTERM) -> None:
    """Signal a process group, wait, then kill it."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, first)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(STOP_TIMEOUT)


def processes_naming(text: str) -> list[int]:
    """Processes whose command line contains `text`, this process excluded."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


class LabHosts:
    """N simulated lab servers gpu1..gpuN, an ssh client key for them and the ssh config that names them."""

    def __init__(self, count: int = 3, disk_mb: int | None = None) -> None:
        self.session = uuid.uuid4().hex[:6]
        self.folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-{self.session}-", dir="/tmp"))  # short socket paths
        self.hosts: list[LabHost] = []
        self.count = count
        self.disk_mb = disk_mb  # each host's data root is a tmpfs of this size (LabHost.disk_mb)

    def start(self) -> LabHosts:
        for tool in ("dockerd", "docker", "ip", "ssh", "ssh-keygen", SSHD):
            if not shutil.which(tool):
                raise LabHostError(
                    f"{tool} is missing: run scripts/bootstrap.sh --full (it installs OpenSSH and Docker)"
                )
        self.key = self.folder / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True)
        for index, subnet in enumerate(free_subnets(self.count), 1):
            folder = self.folder / f"gpu{index}"
            folder.mkdir()
            host = LabHost(f"gpu{index}", folder, f"{PREFIX}{self.session}{index}", subnet, disk_mb=self.disk_mb)
            self.hosts.append(host)
            host.create_bridge()
            host.start_dockerd()
        for host in self.hosts:  # the daemons start side by side; sshd only once its daemon answers
            host.wait_for_dockerd()
            for attempt in range(3):  # another process may take the free port before sshd binds it
                host.port = free_port()
                host.write_sshd_config(self.key)
                try:
                    host.start_sshd()
                    break
                except LabHostError:
                    if attempt == 2:
                        raise
        self.write_ssh_config()
        return self

    def write_ssh_config(self) -> None:
        self.ssh_config = self.folder / "ssh_config"
        self.ssh_config.write_text(
            "".join(
                f"Host {h.name}\n"
                "  HostName 127.0.0.1\n"
                f"  Port {h.port}\n"
                "  User root\n"
                f"  IdentityFile {self.key}\n"
                "  IdentitiesOnly yes\n"
                f"  HostKeyAlias {PREFIX}-{self.session}-{h.name}\n"
                f"  UserKnownHostsFile {self.folder / 'known_hosts'}\n"
                "  StrictHostKeyChecking accept-new\n"
                for h in self.hosts
            )
        )

    def hosts_file(self, path: Path, hosts: list[LabHost] | None = None) -> Path:
        path.write_text("# simulated lab servers\n" + "".join(f"{h.spec}\n" for h in hosts or self.hosts))
        return path

    def environ(self) -> dict[str, str]:
        return {**os.environ, "LABSTACK_SSH_CONFIG": str(self.ssh_config)}

    def close(self) -> None:
        for host in self.hosts:
            host.close()
        shutil.rmtree(self.folder, ignore_errors=True)
