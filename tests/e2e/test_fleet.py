"""`invoke validate --hosts @hosts.txt` against three simulated lab servers (each its own sshd and dockerd): every
host gets its host checks, at the same time, and a host that is down or stalled is one failed target with a
one-line reason while the others pass."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from labstack import ROOT

HOST_CHECKS = {
    "docker_daemon_is_reachable",
    "compose_v2_is_installed",
    "disk_has_room_for_the_cpu_images",
    "dev_shm_is_large_enough_for_dataloader_workers",
}
STALLED_RUN_LIMIT_S = 60


def validate_fleet(lab_hosts, tmp_path, timeout: float = 300) -> tuple[subprocess.CompletedProcess, dict, float]:
    """`invoke validate --image none --hosts @FILE --gpu skip --jobs 3` as a user runs it; (result, report, s)."""
    hosts = lab_hosts.hosts_file(tmp_path / "hosts.txt")
    out = tmp_path / "report"
    command = [sys.executable, "-m", "invoke", "validate", "--image", "none", "--hosts", f"@{hosts}",
               "--gpu", "skip", "--jobs", "3", "--out", str(out)]  # fmt: skip
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=lab_hosts.environ())
    seconds = time.monotonic() - started
    report_file = out / "report.json"
    assert report_file.is_file(), result.stdout[-2000:] + result.stderr[-2000:]
    return result, json.loads(report_file.read_text()), seconds


def outcomes(report: dict) -> dict[str, dict[str, tuple[str, str | None]]]:
    """{target: {check: (outcome, reason)}}."""
    return {t["target"]: {r["check"]: (r["outcome"], r["reason"]) for r in t["results"]} for t in report["targets"]}


def assert_passed(checks: dict, host: str) -> None:
    assert set(checks) == HOST_CHECKS, f"{host}: {checks}"
    assert {outcome for outcome, _ in checks.values()} == {"pass"}, f"{host}: {checks}"


def assert_failed_in_one_line(checks: dict, host: str, *words: str) -> None:
    assert checks, f"{host} reported nothing"
    for check, (outcome, reason) in checks.items():
        assert outcome == "fail", f"{host}: {check} is {outcome}, not fail"
        assert "\n" not in reason and f"{host} is unreachable" in reason, reason
        assert all(word in reason for word in words), reason


def test_each_simulated_host_is_its_own_docker_daemon_behind_its_own_sshd(lab_hosts):
    for host in lab_hosts.hosts:
        result = subprocess.run(
            ["ssh", "-F", str(lab_hosts.ssh_config), "-o", "BatchMode=yes", host.name,
             "docker info --format '{{.DockerRootDir}}'"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == str(host.folder / "data")
    docker0 = subprocess.run(["ip", "link", "show", "docker0"], capture_output=True, text=True)
    assert docker0.returncode == 0, "a simulated host's daemon removed docker0: the main daemon's builds break"


def test_an_image_loaded_into_a_host_keeps_its_id_and_runs_there(lab_hosts, os_image):
    host = lab_hosts.hosts[0]
    expected = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", os_image], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        assert host.load_image(os_image) == expected
        result = subprocess.run(
            ["ssh", "-F", str(lab_hosts.ssh_config), "-o", "BatchMode=yes", host.name,
             f"docker run --rm {os_image} cat /etc/debian_version"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0 and result.stdout.strip(), result.stderr
    finally:
        host.docker("rmi", os_image)


def test_three_healthy_hosts_from_a_file_pass_every_host_check_at_the_same_time(lab_hosts, tmp_path):
    result, report, seconds = validate_fleet(lab_hosts, tmp_path)
    print(f"\nfleet validate, 3 healthy hosts: {seconds:.1f} s wall ({report['seconds']} s inside validate)")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    checked = outcomes(report)
    assert list(checked) == ["gpu1", "gpu2", "gpu3"]
    for host, checks in checked.items():
        assert_passed(checks, host)
    each = [t["seconds"] for t in report["targets"]]
    assert report["seconds"] < sum(each), f"the hosts ran one after another: {report['seconds']} s, each {each}"


def test_a_host_whose_sshd_is_down_is_one_failed_target_and_the_others_pass(lab_hosts, tmp_path):
    with lab_hosts.hosts[1].sshd_down():
        result, report, seconds = validate_fleet(lab_hosts, tmp_path)
    print(f"\nfleet validate, 3 hosts with gpu2's sshd down: {seconds:.1f} s wall")
    assert result.returncode == 1, result.stderr[-2000:]
    assert "checks failed" in result.stderr.strip().splitlines()[-1] and "Traceback" not in result.stderr
    checked = outcomes(report)
    try_it = f"ssh -F {lab_hosts.ssh_config} -o BatchMode=yes gpu2 true"  # what to try names labstack's config
    assert_failed_in_one_line(checked["gpu2"], "gpu2", "Connection refused", try_it)
    assert_passed(checked["gpu1"], "gpu1")
    assert_passed(checked["gpu3"], "gpu3")


def test_a_stalled_host_fails_within_the_connect_timeout_and_the_others_pass(lab_hosts, tmp_path):
    with lab_hosts.hosts[2].sshd_stalled():
        result, report, seconds = validate_fleet(lab_hosts, tmp_path, timeout=STALLED_RUN_LIMIT_S * 2)
    print(f"\nfleet validate, 3 hosts with gpu3's sshd stopped (SIGSTOP): {seconds:.1f} s wall")
    assert seconds < STALLED_RUN_LIMIT_S, f"a stalled host held the run for {seconds:.0f} s"
    assert result.returncode == 1, result.stderr[-2000:]
    checked = outcomes(report)
    assert_failed_in_one_line(checked["gpu3"], "gpu3", "timed out")
    assert_passed(checked["gpu1"], "gpu1")
    assert_passed(checked["gpu2"], "gpu2")
