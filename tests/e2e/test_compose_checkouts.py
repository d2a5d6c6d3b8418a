"""Two checkouts of labstack on one Docker daemon, in folders of the same name: each is its own compose project, and
`invoke down` in one leaves the other's containers and network alone (issue 14, item 3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from labstack.compose.env import read_env
from tests.invoking import checkout_copy

from .conftest import COMMAND_TIMEOUT, SESSION

# Far longer than the test, so a container that has stopped was stopped by someone; SIGTERM ends it at once, as it
# ends the trainer (plain `sleep` as PID 1 ignores it, and `down` would wait out the grace period).
WORK = ["--entrypoint", "sh"], ["-c", 'trap "exit 143" TERM; sleep 600 & wait']


def run(root: Path, *command: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """A command as a user types it in the checkout `root` (PWD set as a shell sets it); `python -m invoke` there
    imports that checkout's tasks.py and labstack/ (PYTHONPATH, ahead of the installed one)."""
    return subprocess.run(
        command, cwd=root, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
        env={**os.environ, "PWD": str(root), "PYTHONPATH": str(root), **(env or {})},
    )  # fmt: skip


def invoke(root: Path, *args: str) -> subprocess.CompletedProcess:
    result = run(root, sys.executable, "-m", "invoke", *args)
    assert result.returncode == 0, f"invoke {' '.join(args)} in {root}:\n{result.stdout}\n{result.stderr}"
    return result


def project_containers(name: str, running_only: bool = False) -> set[str]:
    command = ["docker", "ps", "--quiet", "--no-trunc", "--filter", f"label=com.docker.compose.project={name}"]
    out = subprocess.run(command if running_only else [*command, "--all"], capture_output=True, text=True)
    return set(out.stdout.split())


def network_exists(name: str) -> bool:
    return subprocess.run(["docker", "network", "inspect", name], capture_output=True).returncode == 0


def start_services(root: Path, image: str) -> set[str]:
    """A training run and a notebook as `docker compose run --detach` starts them, a `sleep` in place of their work;
    the notebook's project network comes with it. The IDs of the containers started."""
    project = read_env(root / ".env")["COMPOSE_PROJECT_NAME"]
    before = project_containers(project)
    env = {"TRAIN_IMAGE": image, "NOTEBOOK_IMAGE": image}
    for service in ("train", "notebook"):
        options, command = WORK
        result = run(root, "docker", "compose", "--profile", "notebook", "run", "--detach", *options, service, *command,
                     env=env)  # fmt: skip
        assert result.returncode == 0, f"docker compose run {service} in {root}:\n{result.stderr}"
    return project_containers(project, running_only=True) - before


def remove_projects(names: set[str]) -> None:
    """Everything the test started: containers by compose's project label, then the project networks."""
    for name in names:
        leftovers = project_containers(name)
        if leftovers:
            subprocess.run(["docker", "rm", "--force", *leftovers], capture_output=True, check=False)
        if network_exists(f"{name}_default"):
            subprocess.run(["docker", "network", "rm", f"{name}_default"], capture_output=True, check=False)


def test_invoke_down_in_one_checkout_leaves_the_other_running(os_image, tmp_path):
    # Both folders have the same name, as two clones of labstack usually do. Not `labstack` itself: on a shared
    # daemon, code that names projects after the folder alone would then stop a real `labstack` project's containers.
    folder = f"labstack-e2e-{SESSION}"
    a, b = (checkout_copy(tmp_path / side / folder) for side in ("a", "b"))
    projects: set[str] = set()
    try:
        for root in (a, b):
            invoke(root, "env")
            projects.add(read_env(root / ".env")["COMPOSE_PROJECT_NAME"])
        ours = {root: start_services(root, os_image) for root in (a, b)}
        for root, started in ours.items():
            name = read_env(root / ".env")["COMPOSE_PROJECT_NAME"]
            assert len(started) == 2 and network_exists(f"{name}_default"), started
            for inspect in inspect_containers(started):
                assert inspect["Name"].lstrip("/").startswith(f"{name}-"), inspect["Name"]
                assert inspect["Config"]["Labels"]["com.docker.compose.project.working_dir"] == str(root)
        name_b = read_env(b / ".env")["COMPOSE_PROJECT_NAME"]

        invoke(a, "down")

        assert ours[b] <= project_containers(name_b, running_only=True), f"`invoke down` in {a} stopped {b}'s"
        assert network_exists(f"{name_b}_default"), f"`invoke down` in {a} removed the network of {b}"
        assert not any(project_containers(name) & ours[a] for name in projects), "a's containers outlived its down"
        assert len(projects) == 2, f"both checkouts are compose project {projects}"
    finally:
        for root in (a, b):
            if (root / ".env").is_file():
                run(root, sys.executable, "-m", "invoke", "down")
        remove_projects(projects)
    assert not any(project_containers(name) for name in projects), "containers left behind"


def inspect_containers(ids: set[str]) -> list[dict]:
    if not ids:
        return []
    out = subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True, check=True).stdout
    return json.loads(out)
