"""Host checks: each host of --hosts (local://, ssh://user@host, ...) as a testinfra host.

Probes run from source (`python3 -c`), so nothing has to be copied to a lab server first. ssh gets labstack's
options (labstack.hosts: no password prompt, connect timeout and keep-alive), and every remote command has a
timeout: an unreachable or stalled host fails every check within seconds with the same one-line reason, and
the run goes on.
"""

from __future__ import annotations

import json
import sys

import pytest
import testinfra

from labstack import payload
from labstack.gpu import nvml_problem
from labstack.hosts import SSH_OPTIONS, Host, parse_hosts, ssh_config, unreachable_message
from labstack.validate.plugin import ENVIRONMENT, apply_gpu_gate

PROBE_TIMEOUT = 120


def pytest_generate_tests(metafunc):
    if "target" in metafunc.fixturenames:
        hosts = parse_hosts(metafunc.config.getoption("--hosts") or "local://")  # testinfra's own option
        metafunc.parametrize("target", hosts, ids=[h.label for h in hosts], scope="session")


class Machine:
    """A testinfra host plus the Python that runs probes there."""

    def __init__(self, target: Host, config):
        self.target = target
        self.ssh_config = config.getoption("--ssh-config", None) or (ssh_config() if target.scheme == "ssh" else None)
        self.host = testinfra.get_host(
            target.spec,
            ssh_config=self.ssh_config,
            ssh_identity_file=config.getoption("--ssh-identity-file", None),
            ssh_extra_args=" ".join(SSH_OPTIONS),
        )
        # On this machine: the Python running the suite (it has nvidia-ml-py); elsewhere: the host's python3.
        self.python = sys.executable if target.scheme == "local" else "python3"

    def probe(self, name: str) -> dict:
        return self.run_json(self.python, "-c", payload.standalone("probe"), name)

    def run_json(self, *command: str, timeout: int = PROBE_TIMEOUT) -> dict:
        """Run a command that prints one JSON line; a failure is an assertion with its stderr."""
        result = self.host.run("timeout %s" + " %s" * len(command), str(timeout), *command)
        lines = result.stdout.strip().splitlines()
        assert result.rc == 0 and lines, f"command failed (rc {result.rc}): {result.stderr.strip()[-500:]}"
        return json.loads(lines[-1])

    def run(self, command: str, *args: str, timeout: int = 60):
        return self.host.run(f"timeout {timeout} {command}", *args)


def unreachable_reason(err: Exception) -> str:
    """The line ssh printed when it gave up (testinfra raises with its CommandResult when ssh exits 255)."""
    result = err.args[0] if err.args else None
    text = (getattr(result, "stderr", None) or str(err)).strip()
    return text.splitlines()[-1] if text else type(err).__name__


@pytest.fixture(scope="session")
def machine(target, request) -> Machine:
    machine = Machine(target, request.config)
    try:
        reached = machine.host.run("true")
        failure = None if reached.rc == 0 else (reached.stderr.strip() or f"rc {reached.rc}")
    except Exception as err:
        failure = unreachable_reason(err)
    if failure:
        pytest.fail(unreachable_message(target, failure[:300], machine.ssh_config), pytrace=False)
    if request.config.getoption("--labstack-report", None):
        ENVIRONMENT[target.label] = machine.probe("all")
    return machine


@pytest.fixture(scope="session")
def host_nvml(machine, request) -> dict:
    """The host's NVML report; a GPU check that cannot run here skips (auto) or fails (require) with why."""
    nvml = machine.probe("nvml")
    apply_gpu_gate(request.config, nvml_problem(nvml, where=machine.target.label))
    return nvml
