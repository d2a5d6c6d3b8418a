"""End-to-end tests: real `docker compose` against the real CPU images (built once per session, cached layers make
that quick), each test in its own compose project with its own env file, data and runs folders. Containers run as
a UID/GID that is neither root nor the image's user, so ownership of written files proves `user:` works."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from labstack import ROOT, payload
from labstack.build.base import import_os, latest_os_image
from labstack.build.images import build_images
from labstack.build.layers import LAB, NOTEBOOK, build_layer
from labstack.compose.env import env_values, write_env
from labstack.engine import connect
from labstack.matrix import load_matrix
from tests.e2e.labhosts import LabHosts, free_port
from tests.e2e.slurmcluster import SlurmCluster

MATRIX = load_matrix()
CPU_IMAGES = MATRIX.select("all", "cpu")
TEST_UID = TEST_GID = 4321
COMMAND_TIMEOUT = 300
SESSION = uuid.uuid4().hex[:6]
DEPLOY_FIGURES = ROOT / "reports" / "deploy-figures.json"
SLURM_FIGURES = ROOT / "reports" / "slurm-figures.json"


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def images():
    """The CPU framework and lab images and the torch notebook image, built (or found cached) once."""
    built = {r.image.framework: r.image for r in build_images(MATRIX, CPU_IMAGES)}
    for image in CPU_IMAGES:
        build_layer(MATRIX, image, LAB, parent_built=True)
    build_layer(MATRIX, MATRIX.image("torch", "cpu"), NOTEBOOK, parent_built=True)
    return built


@pytest.fixture(scope="session")
def learnable_data(tmp_path_factory):
    """A generated IDX dataset (3000 train / 1000 test) that a CNN learns to >90% in a few epochs."""
    folder = tmp_path_factory.mktemp("data")
    payload.load("mnist").generate(folder, train=3000, test=1000, seed=7)
    folder.chmod(0o755)
    return folder


@dataclass
class Stack:
    """One compose project of this session: env file, runs folder, and helpers to drive `docker compose`."""

    name: str
    env_file: Path
    runs: Path
    values: dict
    project: Path

    def compose(
        self,
        *args: str,
        env: dict | None = None,
        timeout: float = COMMAND_TIMEOUT,
        check: bool = False,
        cwd: Path = ROOT,
    ):
        """`docker compose ARGS` as a user types it: from the repository root (root compose.yaml, no -f), or from
        another folder `cwd` with `--file` naming the root compose.yaml; PWD is `cwd`, as a shell sets it."""
        files = [] if cwd == ROOT else ["--file", str(ROOT / "compose.yaml")]
        command = ["docker", "compose", "--project-name", self.name, "--env-file", str(self.env_file), *files, *args]
        result = subprocess.run(
            command,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PWD": str(cwd), **(env or {})},
        )
        if check:
            assert result.returncode == 0, f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr}"
        return result

    def train(self, *args: str, check: bool = True, **options):
        """`docker compose run --rm train ARGS`; the options of `compose`, but a failure fails the test by default."""
        return self.compose("run", "--rm", "train", *args, check=check, **options)

    def metrics(self, run: str) -> list[dict]:
        path = self.runs / run / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []

    def invoke(self, *args: str, timeout: float = COMMAND_TIMEOUT):
        command = [sys.executable, "-m", "invoke", *args, "--project", self.name, "--env-file", str(self.env_file)]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def stack(images, learnable_data, tmp_path):
    """A fresh project: TRAIN_IMAGE is the torch CPU image, runs/ and the lab's project folder (PROJECT_DIR)
    belong to the test UID; always torn down."""
    runs = tmp_path / "runs"
    project = tmp_path / "project"
    for folder in (runs, project):
        folder.mkdir()
        os.chown(folder, TEST_UID, TEST_GID)
    values = env_values(MATRIX, "torch", uid=TEST_UID, gid=TEST_GID, port=free_port(), project=project)
    values |= {"DATA_DIR": str(learnable_data), "RUNS_DIR": str(runs)}
    name = f"labstack-e2e-{SESSION}-{uuid.uuid4().hex[:6]}"
    values["COMPOSE_PROJECT_NAME"] = name
    stack = Stack(name, write_env(tmp_path / "test.env", values), runs, values, project)
    try:
        yield stack
    finally:
        stack.compose("--profile", "notebook", "--profile", "tools", "down", "-v", "--remove-orphans", timeout=120)
        leftovers = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={name}"],
            capture_output=True, text=True, check=False,
        ).stdout.split()  # fmt: skip
        if leftovers:
            subprocess.run(["docker", "rm", "-f", *leftovers], capture_output=True, check=False)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


COMPOSE_PROGRESS = re.compile(
    r"^\s*(Network|Container|Volume) \S+\s+(Creating|Created|Starting|Started|Removing|Removed)$"
)


def labstack_lines(stderr: str) -> list[str]:
    """stderr without Compose's own progress lines (network created...): what our program said."""
    return [line for line in stderr.splitlines() if line.strip() and not COMPOSE_PROGRESS.match(line)]


@pytest.fixture(scope="session")
def lab_hosts():
    """Three simulated lab servers (gpu1..gpu3), each with its own dockerd and sshd; always torn down."""
    hosts = LabHosts(3)
    try:
        yield hosts.start()
    finally:
        hosts.close()


SMALL_DISK_MB = 64


@pytest.fixture(scope="session")
def small_disk_host():
    """One simulated lab server, gpu1 of its own ssh config, whose Docker data root is a 64 MB tmpfs: the small OS
    image (about 173 MB) does not fit there. Its LabHosts (`.hosts[0]` is the host); always torn down."""
    hosts = LabHosts(1, disk_mb=SMALL_DISK_MB)
    try:
        yield hosts.start()
    finally:
        hosts.close()


def recorded_figures(path: Path, what: str):
    """{what: figures} the tests of a session measure, written to `path` with the machine's CPUs and load at the
    end of the session, and printed. Recorded, never asserted."""
    found: dict = {"machine": {"cpus": os.cpu_count(), "load_at_start": round(os.getloadavg()[0], 2)}}
    yield found
    found["machine"]["load_at_end"] = round(os.getloadavg()[0], 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(found, indent=2) + "\n")
    print(f"\n{what} figures, also in {path}:\n{json.dumps(found, indent=2)}")


@pytest.fixture(scope="session")
def deploy_figures():
    """What the deploy tests measure (times, bytes sent): reports/deploy-figures.json."""
    yield from recorded_figures(DEPLOY_FIGURES, "deploy")


@pytest.fixture(scope="session")
def slurm_figures():
    """What the Slurm tests measure (cluster start, scancel to the job's trap): reports/slurm-figures.json."""
    yield from recorded_figures(SLURM_FIGURES, "slurm")


@pytest.fixture(scope="session")
def slurm_cluster(lab_hosts):
    """A real Slurm cluster of three nodes n1..n3 (munged, slurmctld, one slurmd each) whose node nI runs its
    jobs' docker commands on lab host gpuI's daemon; started once, every node idle, always torn down."""
    cluster = SlurmCluster(lab_hosts.hosts)
    try:
        yield cluster.start()
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def os_image() -> str:
    """The small OS image (labstack/os:<suite>-<date>) on the main daemon, built if there is none: what the
    simulated hosts get loaded when a test needs an image there."""
    client = connect()
    return latest_os_image(client, MATRIX.suite) or import_os(client, MATRIX)
