"""`invoke deploy` to three simulated lab servers (each its own sshd and dockerd), as a user runs it: the images go
by ID through a registry run here and one ssh tunnel per host, or by `docker save | ssh docker load`; a second
deploy moves nothing; a host that is down, stalled, without its daemon, short of disk or refusing the tunnel is
one FAILED row (or an ssh fallback) while the others finish; -previous and --rollback; --check; Ctrl-C.

The fault cases use small images: the OS image and children of it with one file changed. The torch CPU image
is deployed for real in test_deploy_figures.py, which records the times."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from labstack import ROOT
from tests.e2e.labhosts import processes_naming

STALLED_RUN_LIMIT_S = 60
DEPLOY_TIMEOUT_S = 600


class Deployer:
    """Runs `invoke deploy --hosts @FILE --out DIR ...` as a subprocess against simulated hosts."""

    def __init__(self, lab_hosts, folder: Path, cache: Path) -> None:
        self.lab_hosts, self.folder, self.cache = lab_hosts, folder, cache
        self.runs = 0

    def environ(self) -> dict[str, str]:
        return {**self.lab_hosts.environ(), "LABSTACK_CACHE": str(self.cache)}  # the registry's storage: this session's

    def command(self, *args: str, hosts: str | None = None) -> tuple[list[str], Path]:
        self.runs += 1
        out = self.folder / f"run{self.runs}"
        hosts = hosts or f"@{self.lab_hosts.hosts_file(self.folder / 'hosts.txt')}"
        return [sys.executable, "-m", "invoke", "deploy", "--hosts", hosts, "--out", str(out), *args], out

    def __call__(self, *args: str, hosts: str | None = None, timeout: float = DEPLOY_TIMEOUT_S):
        """(result, report, wall seconds)."""
        command, out = self.command(*args, hosts=hosts)
        started = time.monotonic()
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=self.environ())
        seconds = time.monotonic() - started
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        report = out / "report.json"
        assert report.is_file(), result.stdout[-2000:] + result.stderr[-2000:]
        return result, json.loads(report.read_text()), seconds


def by_host(report: dict) -> dict[str, dict]:
    return {h["host"]: h for h in report["hosts"]}


def statuses(report: dict) -> dict[str, list[str]]:
    return {h["host"]: [i["status"] for i in h["images"]] for h in report["hosts"]}


def tag_time(host, ref: str) -> str:
    return host.docker("image", "inspect", "--format", "{{.Metadata.LastTagTime}}", ref).stdout.strip()


def local_id(ref: str) -> str:
    done = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", ref], capture_output=True, text=True)
    return done.stdout.strip()


@pytest.fixture(scope="module")
def deployer(lab_hosts, tmp_path_factory):
    return Deployer(lab_hosts, tmp_path_factory.mktemp("deploy"), tmp_path_factory.mktemp("deploy-cache"))


@pytest.fixture(scope="module")
def child_image(os_image, tmp_path_factory):
    """child_image(name): a small image FROM the OS image with one file of its own (a changed payload file, as
    far as a deploy is concerned), tagged labstack-e2e/deploy-<session>:NAME; removed after the module."""
    session, made = uuid.uuid4().hex[:6], []

    def make(name: str) -> str:
        ref = f"labstack-e2e/deploy-{session}:{name}"
        folder = tmp_path_factory.mktemp(f"child-{name}")
        (folder / "file").write_text(f"{name} {session}\n")
        (folder / "Dockerfile").write_text(f"FROM {os_image}\nCOPY file /etc/labstack-deploy-test\n")
        done = subprocess.run(["docker", "build", "-q", "-t", ref, str(folder)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        made.append(ref)
        return ref

    yield make
    if made:
        subprocess.run(["docker", "image", "rm", *made], capture_output=True, check=False)


@pytest.fixture
def fresh_hosts(lab_hosts):
    """Every simulated host without any image: what a deploy sends is all it holds after."""
    for host in lab_hosts.hosts:
        host.wipe()
    return lab_hosts


def test_check_prints_the_plan_and_changes_nothing(deployer, fresh_hosts, os_image):
    result, report, _ = deployer("--image", os_image, "--check")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "nothing was changed" in result.stdout and "would send" in result.stdout
    assert "deploy registry" not in result.stderr, "--check started the registry"
    assert {h["status"] for h in report["hosts"]} == {"checked"}
    assert [i["planned"] for h in report["hosts"] for i in h["images"]] == ["transfer"] * 3
    assert all(host.image_ids() == {} for host in fresh_hosts.hosts)


def test_first_deploy_pulls_through_a_tunnel_per_host_and_a_second_moves_nothing(
    deployer, fresh_hosts, os_image, deploy_figures
):
    result, report, seconds = deployer("--image", os_image)
    deploy_figures["first deploy, OS image, 3 hosts, via registry"] = {"wall_s": round(seconds, 1)}
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    hosts = by_host(report)
    assert statuses(report) == {"gpu1": ["pulled"], "gpu2": ["pulled"], "gpu3": ["pulled"]}
    assert {h["transport"] for h in hosts.values()} == {"registry"}
    ports = [h["tunnel_port"] for h in hosts.values()]
    assert len(set(ports)) == 3 and all(ports), f"each host pulls through its own tunnel: {ports}"
    expected = local_id(os_image)
    for host in fresh_hosts.hosts:
        assert host.image_ids() == {os_image: expected}, "the tunnel's name was left on the host, or the ID differs"
        assert by_host(report)[host.name]["images"][0]["sent_bytes"] > 10_000_000
    tagged = {host.name: tag_time(host, os_image) for host in fresh_hosts.hosts}

    result, report, seconds = deployer("--image", os_image)
    deploy_figures["second deploy, OS image, 3 hosts"] = {"wall_s": round(seconds, 1), "inside_s": report["seconds"]}
    assert result.returncode == 0, result.stderr[-2000:]
    assert statuses(report) == {"gpu1": ["unchanged"], "gpu2": ["unchanged"], "gpu3": ["unchanged"]}
    assert "deploy registry" not in result.stderr, "an unchanged deploy started the registry"
    assert {host.name: tag_time(host, os_image) for host in fresh_hosts.hosts} == tagged, "a tag moved"


def test_one_host_down_fails_alone_and_the_failed_hosts_file_reruns_only_it(
    deployer, lab_hosts, child_image, deploy_figures
):
    ref = child_image("down")
    deployer("--image", ref)  # sends it everywhere: the next runs compare like with like
    _, _, none_down = deployer("--image", ref)
    with lab_hosts.hosts[1].sshd_down():
        result, report, one_down = deployer("--image", ref)
    deploy_figures["unchanged deploy, 3 hosts, none down vs gpu2's sshd down"] = {
        "none_down_s": round(none_down, 1), "one_down_s": round(one_down, 1),
    }  # fmt: skip
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("labstack: 1 of 3 hosts failed (gpu2)") and "failed-hosts.txt" in last, last
    hosts = by_host(report)
    assert hosts["gpu2"]["status"] == "FAILED" and hosts["gpu2"]["stage"] == "connect"
    assert "refused the ssh connection" in hosts["gpu2"]["reason"] and "\n" not in hosts["gpu2"]["reason"]
    assert "gpu2: FAILED (connect): gpu2 refused the ssh connection" in result.stdout
    assert statuses(report)["gpu1"] == statuses(report)["gpu3"] == ["unchanged"]
    failed = Path(report_folder(deployer)) / "failed-hosts.txt"
    assert [line for line in failed.read_text().splitlines() if not line.startswith("#")] == ["ssh://gpu2"]

    result, report, _ = deployer("--image", ref, hosts=f"@{failed}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert list(by_host(report)) == ["gpu2"] and statuses(report)["gpu2"] == ["unchanged"]


def report_folder(deployer) -> Path:
    return deployer.folder / f"run{deployer.runs}"


def test_a_stalled_host_fails_within_the_connect_timeout(deployer, lab_hosts, os_image, deploy_figures):
    with lab_hosts.hosts[2].sshd_stalled():
        result, report, seconds = deployer("--image", os_image, timeout=STALLED_RUN_LIMIT_S * 3)
    deploy_figures["deploy, 3 hosts, gpu3's sshd stalled (SIGSTOP)"] = {"wall_s": round(seconds, 1)}
    assert seconds < STALLED_RUN_LIMIT_S, f"a stalled host held the deploy for {seconds:.0f} s"
    assert result.returncode == 1
    hosts = by_host(report)
    assert hosts["gpu3"]["status"] == "FAILED" and hosts["gpu3"]["stage"] == "connect", hosts["gpu3"]
    assert "did not answer" in hosts["gpu3"]["reason"] or "handshake" in hosts["gpu3"]["reason"]
    assert hosts["gpu1"]["status"] == hosts["gpu2"]["status"] == "done"


def test_a_stopped_docker_daemon_fails_that_host_at_preflight(deployer, lab_hosts, os_image):
    with lab_hosts.hosts[0].dockerd_stopped():
        result, report, _ = deployer("--image", os_image)
    assert result.returncode == 1
    gpu1 = by_host(report)["gpu1"]
    assert (gpu1["status"], gpu1["stage"]) == ("FAILED", "preflight")
    assert "the Docker daemon on gpu1 is not running" in gpu1["reason"] and "systemctl start docker" in gpu1["reason"]
    assert by_host(report)["gpu2"]["status"] == "done"


def test_a_host_short_of_disk_is_refused_at_preflight_before_anything_moves(small_disk_host, tmp_path, os_image):
    deployer = Deployer(small_disk_host, tmp_path, tmp_path / "cache")
    result, report, _ = deployer("--image", os_image)
    assert result.returncode == 1
    gpu1 = by_host(report)["gpu1"]
    assert (gpu1["status"], gpu1["stage"]) == ("FAILED", "preflight"), gpu1
    assert "free at" in gpu1["reason"] and "docker image prune" in gpu1["reason"]
    assert "deploy registry" not in result.stderr, "something was sent to a host that cannot hold it"
    assert small_disk_host.hosts[0].image_ids() == {}


def test_a_host_refusing_the_tunnel_gets_the_image_by_ssh_under_auto_and_fails_under_registry(
    deployer, lab_hosts, child_image
):
    ref = child_image("tunnel")
    gpu2 = lab_hosts.hosts[1]
    with gpu2.forwarding_refused():
        result, report, _ = deployer("--image", ref, "--via", "registry")
        assert result.returncode == 1
        assert statuses(report) == {"gpu1": ["pulled"], "gpu2": ["failed"], "gpu3": ["pulled"]}
        image = by_host(report)["gpu2"]["images"][0]
        assert image["stage"] == "tunnel" and "AllowTcpForwarding" in image["reason"], image
        assert ref not in gpu2.image_ids()

        result, report, _ = deployer("--image", ref)  # --via auto
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    hosts = by_host(report)
    assert statuses(report) == {"gpu1": ["unchanged"], "gpu2": ["loaded"], "gpu3": ["unchanged"]}
    assert hosts["gpu2"]["transport"] == "ssh" and "sent by ssh instead" in " ".join(hosts["gpu2"]["notes"])
    assert gpu2.image_ids()[ref] == local_id(ref)


def test_when_the_deploy_registry_cannot_start_auto_sends_by_ssh_and_registry_fails_saying_why(
    lab_hosts, child_image, tmp_path
):
    ref = child_image("no-registry")
    (tmp_path / "cache").write_text("a file where the cache folder should be: the registry's storage cannot be made")
    deployer = Deployer(lab_hosts, tmp_path, tmp_path / "cache")
    result, report, _ = deployer("--image", ref, "--via", "registry")
    assert result.returncode == 1
    image = by_host(report)["gpu1"]["images"][0]
    # the cache folder that is a file is named as such (labstack.paths.cache_dir), at the registry stage
    assert image["stage"] == "registry" and "is a file, not a folder" in image["reason"], image
    result, report, _ = deployer("--image", ref)  # --via auto
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert statuses(report) == {"gpu1": ["loaded"], "gpu2": ["loaded"], "gpu3": ["loaded"]}
    assert all("deploy registry failed here" in " ".join(h["notes"]) for h in report["hosts"])


def test_via_ssh_a_replaced_image_is_kept_as_previous_and_rollback_restores_it(
    deployer, fresh_hosts, child_image, deploy_figures
):
    ref, old, new = "labstack-e2e/deploy-rollback:" + uuid.uuid4().hex[:6], child_image("old"), child_image("new")
    subprocess.run(["docker", "tag", old, ref], check=True)
    try:
        result, report, seconds = deployer("--image", ref, "--via", "ssh")
        deploy_figures["first deploy, OS image + 1 file, 3 hosts, via ssh"] = {"wall_s": round(seconds, 1)}
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert statuses(report) == {"gpu1": ["loaded"], "gpu2": ["loaded"], "gpu3": ["loaded"]}
        assert {h["transport"] for h in report["hosts"]} == {"ssh"}

        subprocess.run(["docker", "tag", new, ref], check=True)  # a new build under the same name
        result, report, _ = deployer("--image", ref)
        assert result.returncode == 0, result.stderr[-2000:]
        for host in fresh_hosts.hosts:
            held = host.image_ids()
            assert held[ref] == local_id(new) and held[f"{ref}-previous"] == local_id(old), held
        assert {i["replaced"] for h in report["hosts"] for i in h["images"]} == {local_id(old)}

        result, report, _ = deployer("--image", ref, "--rollback")
        assert result.returncode == 0, result.stderr[-2000:]
        assert statuses(report) == {"gpu1": ["rolled back"], "gpu2": ["rolled back"], "gpu3": ["rolled back"]}
        for host in fresh_hosts.hosts:
            held = host.image_ids()
            assert held[ref] == local_id(old) and held[f"{ref}-previous"] == local_id(new), held
    finally:
        subprocess.run(["docker", "image", "rm", ref], capture_output=True, check=False)


def test_rollback_without_a_previous_image_fails_and_says_so(deployer, fresh_hosts, os_image):
    result, report, _ = deployer("--image", os_image, "--rollback")
    assert result.returncode == 1
    image = by_host(report)["gpu1"]["images"][0]
    assert image["stage"] == "rollback" and "nothing to roll back to" in image["reason"]


@pytest.mark.parametrize(
    ("sig", "code", "line"),
    [(signal.SIGINT, 130, "labstack: interrupted"), (signal.SIGTERM, 143, "labstack: terminated (SIGTERM)")],
    ids=["ctrl-c", "sigterm"],
)
def test_a_signal_stops_every_host_writes_the_report_and_leaves_nothing_running(
    deployer, fresh_hosts, child_image, sig, code, line
):
    ref = child_image(f"stopped-{code}")
    command, out = deployer.command("--image", ref, "--via", "ssh")
    process = subprocess.Popen(
        command, cwd=ROOT, env=deployer.environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not processes_naming("docker load"):
        time.sleep(0.05)  # until the transfers are under way
    os.killpg(process.pid, sig)  # as Ctrl-C does to the foreground group; `timeout` and systemd send SIGTERM
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == line and "Traceback" not in stderr
    report = json.loads((out / "report.json").read_text())
    assert {h["status"] for h in report["hosts"]} <= {"interrupted", "done"}
    assert not report["passed"]
    time.sleep(1)
    assert not processes_naming(str(fresh_hosts.ssh_config)), "an ssh process of the deploy was left behind"
