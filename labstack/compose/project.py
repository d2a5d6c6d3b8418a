"""One compose project of this checkout: the exact `docker compose` command lines (printed before they run), and
up/down of the notebook on the CPU or the CUDA image."""

from __future__ import annotations

import errno
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from labstack import ROOT, payload
from labstack.build.layers import NOTEBOOK, build_layer, layer_ref
from labstack.compose.env import (
    ENV_FILE,
    NOTEBOOK_PORT,
    PORT_MAX,
    default_project,
    ensure_env,
    folder_project,
    read_env,
)
from labstack.engine import connect
from labstack.errors import BadInput, ExitCode, LabstackError
from labstack.matrix import Matrix

COMPOSE_FILE = ROOT / "compose" / "compose.yaml"
GPU_FILE = ROOT / "compose" / "compose.gpu.yaml"
MIN_COMPOSE = (2, 20)  # `include:` in the root compose.yaml
HEALTH_TIMEOUT_S = 180


@dataclass(frozen=True)
class Project:
    """One compose project: its name, env file and files; `command()` gives the exact CLI line."""

    name: str
    env_file: Path = ENV_FILE
    gpu: bool = False

    @property
    def files(self) -> list[Path]:
        return [COMPOSE_FILE, GPU_FILE] if self.gpu else [COMPOSE_FILE]

    def command(self, *action: str) -> list[str]:
        command = ["docker", "compose", "--project-name", self.name]
        if self.env_file.is_file():
            command += ["--env-file", str(self.env_file)]
        for path in self.files:
            command += ["--file", str(path)]
        return [*command, "--profile", "notebook", *action]


def shell_line(command: list[str], overrides: dict[str, str], root: Path = ROOT) -> str:
    """The command as you would type it from the repository root (variables first, paths relative)."""

    def short(word: str) -> str:
        return os.path.relpath(word, root) if word.startswith(str(root) + os.sep) else word

    prefix = [f"{key}={shlex.quote(value)}" for key, value in overrides.items()]
    return " ".join(prefix + [shlex.quote(short(word)) for word in command])


def run_compose(project: Project, action: list[str], overrides: dict[str, str] | None = None, **kwargs):
    """Print the exact command, then run it with `overrides` in its environment (they beat .env)."""
    overrides = overrides or {}
    command = project.command(*action)
    print("$ " + shell_line(command, overrides), flush=True)
    return subprocess.run(command, env={**os.environ, **overrides}, check=False, **kwargs)


def compose_version() -> tuple[int, ...]:
    try:
        out = subprocess.run(
            ["docker", "compose", "version", "--short"], capture_output=True, text=True, timeout=30, check=False
        )
    except FileNotFoundError:
        out = None
    if out is None or out.returncode != 0:
        raise LabstackError(
            "Docker Compose v2 is missing (`docker compose version` fails): `sudo scripts/install-docker.sh` "
            "installs it"
        )
    return tuple(int(part) for part in re.findall(r"\d+", out.stdout)[:3])


def check_compose() -> None:
    version = compose_version()
    if version < MIN_COMPOSE:
        have = ".".join(map(str, version))
        raise LabstackError(
            f"Docker Compose {have} is too old: labstack needs {'.'.join(map(str, MIN_COMPOSE))} or newer "
            "(`sudo scripts/install-docker.sh` installs 2.26)"
        )


def notebook_url(values: dict[str, str]) -> str:
    bind = values.get("NOTEBOOK_BIND") or "127.0.0.1"
    host = "127.0.0.1" if bind in ("0.0.0.0", "::") else bind
    return f"http://{host}:{values.get('NOTEBOOK_PORT') or NOTEBOOK_PORT}/lab?token={values['JUPYTER_TOKEN']}"


def project_folder(values: Mapping[str, str], environ: Mapping[str, str] = os.environ) -> Path:
    """The folder compose mounts at /work: `${PROJECT_DIR:-${PWD:-..}}` in compose/compose.yaml, where a variable
    of the environment beats .env's and a relative path is relative to compose/."""

    def variable(name: str) -> str:
        return environ[name] if name in environ else values.get(name, "")

    return (COMPOSE_FILE.parent / (variable("PROJECT_DIR") or variable("PWD") or "..")).resolve()


def up_notebook(matrix: Matrix, framework: str, variant: str, project: Project, project_dir: Path | None = None) -> str:
    """Build (cached) the notebook image, start it with `--wait` (healthy = answers with its token), return its URL.
    The GPU preflight happens before this is called."""
    check_compose()
    image = matrix.image(framework, variant)
    values = read_env(project.env_file)
    if not values.get("JUPYTER_TOKEN"):
        if project.env_file != ENV_FILE:
            raise BadInput(f"{project.env_file} has no JUPYTER_TOKEN: run `invoke env`")
        values = ensure_env(matrix, framework, project=project_dir)
        print(f"wrote {ENV_FILE.name} (UID/GID, images, a new notebook token)")
    check_token(values, project.env_file)
    check_port(values, project)
    build_layer(matrix, image, NOTEBOOK)
    ref = layer_ref(image, NOTEBOOK.name)
    overrides = {"NOTEBOOK_IMAGE": ref}
    action = ["up", "--detach", "--wait", "--wait-timeout", str(HEALTH_TIMEOUT_S), "notebook"]
    started = time.monotonic()
    result = run_compose(project, action, overrides)
    if result.returncode != 0:
        problem = port_problem(values, project) or notebook_said(project)
        if problem:
            raise LabstackError(problem)
        logs = project.command("logs", "notebook")
        raise LabstackError(
            f"the notebook did not become healthy (docker compose exit {result.returncode}): see "
            f"`{shell_line(logs, {})}`, then `invoke down`"
        )
    seconds = time.monotonic() - started
    print(f"notebook on {ref} healthy after {seconds:.0f} s; /work is {project_folder(values)}", file=sys.stderr)
    return notebook_url(values)


def check_token(values: Mapping[str, str], env_file: Path, environ: Mapping[str, str] = os.environ) -> None:
    """The token compose will give the notebook (the environment's JUPYTER_TOKEN beats .env's) is long enough for
    the notebook to start: payload/notebook.py refuses a shorter one, which compose only reports as unhealthy."""
    minimum = payload.load("notebook").MIN_TOKEN_LENGTH
    where = "your environment" if "JUPYTER_TOKEN" in environ else str(env_file)
    token = environ.get("JUPYTER_TOKEN", values.get("JUPYTER_TOKEN", ""))
    if len(token) < minimum:
        fix = (
            "unset it (compose then takes .env's), or give one that long"
            if where == "your environment"
            else "`invoke env --new-token` writes a new one"
            if env_file == ENV_FILE
            else f"give it a longer one (`invoke env --new-token` writes one to {ENV_FILE.name})"
        )
        raise BadInput(
            f"JUPYTER_TOKEN in {where} is {len(token)} characters, the notebook needs {minimum} or more: {fix}"
        )


def notebook_address(values: Mapping[str, str]) -> tuple[str, int]:
    return values.get("NOTEBOOK_BIND") or "127.0.0.1", int(values.get("NOTEBOOK_PORT") or NOTEBOOK_PORT)


def port_holder(client, bind: str, port: int, project_name: str, local: bool) -> str | None:
    """Who holds `bind:port` on the Docker host: 'the container NAME' (one that publishes it, other than this
    project's own notebook, which compose keeps), 'another program' (found by binding it here, when the daemon
    is this machine's), or None when it is free."""
    for container in client.api.containers():
        labels = container.get("Labels") or {}
        if (labels.get("com.docker.compose.project"), labels.get("com.docker.compose.service")) == (
            project_name,
            "notebook",
        ):
            if any(p.get("PublicPort") == port for p in container.get("Ports") or []):
                return None  # this project's notebook already serves there: `up` keeps or replaces it
            continue
        for published in container.get("Ports") or []:
            if published.get("PublicPort") == port and _overlaps(published.get("IP") or "0.0.0.0", bind):
                names = [n.lstrip("/") for n in container.get("Names") or []]
                return f"the container {names[0] if names else container['Id'][:12]}"
    if not local or not bound_elsewhere(bind, port):
        return None
    program = listening_program(port)
    return f"another program ({program})" if program else "another program"


def listening_program(port: int, proc: Path = Path("/proc")) -> str | None:
    """'NAME, PID N' of the process that listens on TCP `port` here, when /proc tells (Linux; another user's
    processes only as root); else None."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            rows = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    for pid in (entry for entry in proc.iterdir() if entry.name.isdigit()) if inodes else ():
        try:
            if any(os.readlink(fd) in inodes for fd in (pid / "fd").iterdir()):
                return f"{(pid / 'comm').read_text().strip()}, PID {pid.name}"
        except OSError:
            continue
    return None


def bound_elsewhere(bind: str, port: int) -> bool:
    """Whether a socket of this machine holds `bind:port` (binding it fails with 'address in use')."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed connection's TIME_WAIT is no holder
        try:
            probe.bind((bind, port))
        except OSError as err:
            return err.errno == errno.EADDRINUSE
    return False


def _overlaps(published_ip: str, bind: str) -> bool:
    wildcard = ("0.0.0.0", "::", "")
    return published_ip in wildcard or bind in wildcard or published_ip == bind


def daemon_is_local(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the Docker daemon publishes ports on this machine: its socket is a local one."""
    return environ.get("DOCKER_HOST", "unix://").startswith("unix://")


def port_problem(values: Mapping[str, str], project: Project) -> str | None:
    """The notebook's port, taken by another container or program: what holds it, and the fix."""
    bind, port = notebook_address(values)
    local = daemon_is_local()
    holder = port_holder(connect(), bind, port, project.name, local)
    if holder is None:
        return None
    free = next(
        (p for p in range(port + 1, min(port + 100, PORT_MAX + 1)) if not local or not bound_elsewhere(bind, p)),
        port + 1,
    )
    container = holder.removeprefix("the container ")
    stop = "stop that program" if container == holder else f"stop that container (`docker stop {container}`)"
    return (
        f"the notebook's port {bind}:{port} is taken by {holder}: set NOTEBOOK_PORT in {project.env_file} to a "
        f"free port (e.g. NOTEBOOK_PORT={free}; `invoke env` keeps it), or {stop}"
    )


def check_port(values: Mapping[str, str], project: Project) -> None:
    problem = port_problem(values, project)
    if problem:
        raise LabstackError(problem, ExitCode.FAILED)


def notebook_said(project: Project) -> str | None:
    """The notebook's own `labstack:` line from its log (payload/notebook.py refusing to start), if it wrote one."""
    logs = subprocess.run(
        project.command("logs", "--no-log-prefix", "notebook"), capture_output=True, text=True, check=False
    )
    said = [line for line in (logs.stdout + logs.stderr).splitlines() if line.startswith("labstack: ")]
    if not said:
        return None
    return f"the notebook did not start: {said[-1].removeprefix('labstack: ')}; then `invoke down`"


def down(project: Project) -> None:
    result = run_compose(Project(project.name, project.env_file, gpu=True), ["down", "--remove-orphans"])
    if result.returncode != 0:
        raise LabstackError(f"docker compose down failed (exit {result.returncode}): see its message above")


def project_from_env(env_file: Path, name: str | None, root: Path = ROOT) -> str:
    """--project, else .env's COMPOSE_PROJECT_NAME, else this checkout's own name."""
    return name or read_env(env_file).get("COMPOSE_PROJECT_NAME") or default_project(root)


def shared_name_note(env_file: Path, name: str | None, root: Path = ROOT) -> str | None:
    """A note when the project's name comes from a .env that names it after the folder alone, as `invoke env` wrote
    it before names had the checkout's hash: another checkout in a folder of that name shares the project."""
    written = read_env(env_file).get("COMPOSE_PROJECT_NAME")
    if name or written != folder_project(root):
        return None
    return (
        f"note: .env names the compose project {written}, the folder's name alone: a checkout in another folder "
        f"named {root.name} shares it, and `invoke down` stops its containers too. Run `invoke down`, then "
        f"`invoke env`, to give this checkout its own name ({default_project(root)})"
    )
