"""The simulated lab servers leave nothing behind: closing them ends their daemons, shims and sshd, even with a
container still running, and removes their bridges, mounts and folders; the main daemon's docker0 stays. The
faults tests inject hold for their block only: sshd refusing port forwarding, dockerd stopped; a small-disk host
has a data root of that size."""

from __future__ import annotations

import contextlib
import ipaddress
import subprocess
import time

import pytest

from tests.e2e.conftest import SMALL_DISK_MB
from tests.e2e.labhosts import LabHost, LabHostError, LabHosts, free_port, processes_naming

FORWARD_REFUSED = "remote port forwarding failed for listen port 0"
DAEMON_DOWN = "Is the docker daemon running?"


def ssh(lab: LabHosts, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """ssh through the simulated hosts' own config, never asking for anything."""
    command = ["ssh", "-F", str(lab.ssh_config), "-o", "BatchMode=yes", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def control_master(lab: LabHosts, host: LabHost):
    """`ssh -M -S SOCKET -N HOST` for the block, as labstack holds one to add forwards to; yields SOCKET."""
    control = lab.folder / f"{host.name}-{free_port()}.ctl"
    master = subprocess.Popen(
        ["ssh", "-F", str(lab.ssh_config), "-o", "BatchMode=yes", "-M", "-S", str(control), "-N", host.name],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while ssh(lab, "-S", str(control), "-O", "check", host.name).returncode:
            assert master.poll() is None and time.monotonic() < deadline, f"no ssh master to {host.name}"
            time.sleep(0.1)
        yield str(control)
    finally:  # as labstack closes one: -O exit, then SIGTERM, then SIGKILL (a master was once seen still running
        # 20 s after SIGTERM on a loaded machine)
        ssh(lab, "-S", str(control), "-O", "exit", host.name)
        master.terminate()
        try:
            master.wait(20)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait(20)


def remote_forward(lab: LabHosts, host: LabHost) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """A remote forward asked for both ways: `-O forward -R 0:...` through a master (prints the port sshd chose),
    and `-o ExitOnForwardFailure=yes -R 0:... HOST true` on a connection of its own."""
    target = f"0:127.0.0.1:{free_port()}"
    with control_master(lab, host) as control:
        through_master = ssh(lab, "-S", control, "-O", "forward", "-R", target, host.name)
    own = ssh(lab, "-o", "ExitOnForwardFailure=yes", "-R", target, host.name, "true")
    return through_master, own


def test_closing_a_simulated_host_leaves_no_process_bridge_mount_or_folder(os_image):
    lab = LabHosts(1)
    try:
        (host,) = lab.start().hosts
        host.load_image(os_image)
        started = host.docker("run", "-d", os_image, "sleep", "600")
        assert started.returncode == 0, started.stderr
        assert processes_naming(str(lab.folder)), "nothing of the simulated host was running"
    finally:
        lab.close()
    assert not processes_naming(str(lab.folder)), "a process of the simulated host survived its close"
    assert subprocess.run(["ip", "link", "show", host.bridge], capture_output=True).returncode != 0
    with open("/proc/self/mounts") as mounts:
        assert str(lab.folder) not in mounts.read()
    assert not lab.folder.exists()
    assert subprocess.run(["ip", "link", "show", "docker0"], capture_output=True).returncode == 0


def test_a_daemon_that_cannot_start_is_an_error_at_once_with_the_tail_of_its_log(tmp_path):
    host = LabHost("gpu9", tmp_path, "lshmissing9", ipaddress.ip_network("10.254.250.0/24"))  # bridge not created
    started = time.monotonic()
    try:
        host.start_dockerd()
        with pytest.raises(LabHostError) as err:
            host.wait_for_dockerd()
    finally:
        host.close()
    assert time.monotonic() - started < 30, "the fixture waited for a daemon that had already exited"
    assert "dockerd of gpu9 exited" in str(err.value)
    assert "lshmissing9 must be created manually" in str(err.value)


def test_a_host_refuses_port_forwarding_in_the_block_only_and_stays_the_same_host(lab_hosts):
    host = lab_hosts.hosts[-1]
    with host.forwarding_refused():
        refused, refused_own = remote_forward(lab_hosts, host)
    allowed, allowed_own = remote_forward(lab_hosts, host)  # known_hosts still accepts it: same host key
    assert refused.returncode == 255 and FORWARD_REFUSED in refused.stderr, refused
    assert refused_own.returncode == 255 and FORWARD_REFUSED in refused_own.stderr, refused_own
    assert allowed.returncode == 0 and allowed.stdout.strip().isdigit(), allowed
    assert allowed_own.returncode == 0, allowed_own


def test_a_host_whose_daemon_is_stopped_answers_ssh_but_not_docker_then_has_its_data_again(lab_hosts):
    host = lab_hosts.hosts[-1]
    volume = f"labstack-test-{free_port()}"  # kept in the data root, as images are; cheaper to make than one
    assert host.docker("volume", "create", volume).returncode == 0
    try:
        with host.dockerd_stopped():
            down = ssh(lab_hosts, host.name, "docker info")
        up = ssh(lab_hosts, host.name, f"docker volume inspect --format '{{{{.Name}}}}' {volume}")
    finally:
        host.docker("volume", "rm", volume)
    assert down.returncode == 1 and DAEMON_DOWN in down.stderr and host.docker_host in down.stderr, down
    assert up.returncode == 0 and up.stdout.strip() == volume, up


def test_a_small_disk_host_has_a_data_root_of_that_size_that_an_image_does_not_fit_in(small_disk_host, os_image):
    (host,) = small_disk_host.hosts
    root = ssh(small_disk_host, host.name, "docker info --format '{{.DockerRootDir}}'")
    assert root.returncode == 0, root.stderr
    size = ssh(small_disk_host, host.name, f"df -B1 --output=size {root.stdout.strip()} | tail -1")
    assert int(size.stdout) == SMALL_DISK_MB * 2**20, size
    with pytest.raises(LabHostError, match="no space left on device"):
        host.load_image(os_image)
    assert host.docker("info").returncode == 0, "a full disk stopped the daemon"


def test_closing_a_small_disk_host_unmounts_its_data_root():
    lab = LabHosts(1, disk_mb=16)
    try:
        (host,) = lab.start().hosts
        with open("/proc/self/mounts") as mounts:
            assert f" {host.data_root} tmpfs " in mounts.read()
    finally:
        lab.close()
    with open("/proc/self/mounts") as mounts:
        assert str(lab.folder) not in mounts.read()
    assert not lab.folder.exists()
