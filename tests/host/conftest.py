"""Host checks: each target of --hosts (local://, ssh://user@host, ...) as a testinfra host.

Probes run from source (`python3 -c`), so nothing has to be copied to a lab server first. Every command
has a timeout; an unreachable host fails every check with the same one-line reason and the run goes on.
"""

from __future__ import annotations

import sys

import pytest
import testinfra

from labstack.gpu import nvml_problem
from labstack.pytest_report import ENVIRONMENT
from labstack.validate import Target, apply_gpu_gate, parse_hosts, probe_command, run_json


def pytest_generate_tests(metafunc):
    if "target" in metafunc.fixturenames:
        targets = parse_hosts(metafunc.config.getoption("--hosts") or "local://")  # testinfra's own option
        metafunc.parametrize("target", targets, ids=[t.label for t in targets], scope="session")


class Machine:
    """A testinfra host plus the Python that runs probes there."""

    def __init__(self, target: Target, config):
        self.target = target
        local = target.spec.startswith("local://")
        self.host = testinfra.get_host(
            target.spec,
            ssh_config=config.getoption("--ssh-config", None),
            ssh_identity_file=config.getoption("--ssh-identity-file", None),
            ssh_extra_args="-o BatchMode=yes",  # never wait for a password
            timeout=10,
        )
        # On this machine: the Python running the suite (it has nvidia-ml-py); elsewhere: the host's python3.
        self.python = sys.executable if local else "python3"

    def probe(self, name: str) -> dict:
        return run_json(self.host, *probe_command(self.python, name))

    def run(self, command: str, *args: str, timeout: int = 60):
        return self.host.run(f"timeout {timeout} {command}", *args)


@pytest.fixture(scope="session")
def machine(target, request) -> Machine:
    machine = Machine(target, request.config)
    try:
        reached = machine.host.run("true")
        failure = None if reached.rc == 0 else (reached.stderr.strip() or f"rc {reached.rc}")
    except Exception as err:  # testinfra raises with the ssh CommandResult when ssh itself fails (exit 255)
        result = err.args[0] if err.args else None
        text = (getattr(result, "stderr", None) or str(err)).strip()
        failure = text.splitlines()[0] if text else type(err).__name__
    if failure:
        pytest.fail(
            f"{target.label} is unreachable: {failure[:300]}: check the name, that sshd runs and that your key is "
            f"accepted (`ssh -o BatchMode=yes {target.label} true`)",
            pytrace=False,
        )
    if request.config.getoption("--labstack-report", None):
        ENVIRONMENT[target.label] = machine.probe("all")
    return machine


@pytest.fixture(scope="session")
def host_nvml(machine, request) -> dict:
    """The host's NVML report; a GPU check that cannot run here skips (auto) or fails (require) with why."""
    nvml = machine.probe("nvml")
    apply_gpu_gate(request.config.getoption("--gpu"), nvml_problem(nvml, where=machine.target.label))
    return nvml
