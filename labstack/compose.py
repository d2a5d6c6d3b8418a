"""The compose services from the host: `.env` (UID/GID, image refs from the matrix, notebook token), the exact
`docker compose` command lines, and up/down of the notebook on the CPU or the CUDA image."""

from __future__ import annotations

import os
import re
import secrets
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from labstack import ROOT
from labstack.errors import LabstackError
from labstack.matrix import Matrix
from labstack.notebook import notebook_ref

COMPOSE_FILE = ROOT / "compose" / "compose.yaml"
GPU_FILE = ROOT / "compose" / "compose.gpu.yaml"
ENV_FILE = ROOT / ".env"
MIN_COMPOSE = (2, 20)  # `include:` in the root compose.yaml
NOTEBOOK_PORT = 8888
TOKEN_BYTES = 24
HEALTH_TIMEOUT_S = 180
# The folders the services mount; created by `invoke env` so that they belong to you, not to root.
FOLDERS = {"DATA_DIR": "data", "RUNS_DIR": "runs", "NOTEBOOK_DIR": "notebooks"}
ENV_HEADER = (
    "# Written by `invoke env` from images/matrix.toml; read by docker compose (and `invoke up-cpu/up-gpu`).\n"
    "# Edit freely: `invoke env` keeps JUPYTER_TOKEN (unless --new-token) and rewrites the rest.\n"
)


def default_project(root: Path = ROOT) -> str:
    """The name Compose gives a project in `root` (its folder name, lower case, [a-z0-9_-] only)."""
    name = re.sub(r"[^a-z0-9_-]", "", root.name.lower()).lstrip("-_")
    return name or "labstack"


def parse_env(text: str) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (comments and blank lines skipped, surrounding quotes removed)."""
    values = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def read_env(path: Path = ENV_FILE) -> dict[str, str]:
    return parse_env(path.read_text()) if path.is_file() else {}


def one_framework(matrix: Matrix, framework: str) -> str:
    """The tasks that start one image take one framework name, not a list or 'all'."""
    if framework not in matrix.frameworks:
        raise LabstackError(f"unknown framework {framework}: choose {' or '.join(matrix.frameworks)}", code=2)
    return framework


def env_values(
    matrix: Matrix,
    framework: str,
    *,
    uid: int,
    gid: int,
    root: Path = ROOT,
    token: str | None = None,
    image_id: str | None = None,
    port: int = NOTEBOOK_PORT,
) -> dict[str, str]:
    """Everything .env sets: who owns files in the mounts, which images (from the matrix), the notebook."""
    image = matrix.image(one_framework(matrix, framework), "cpu")
    values = {
        "COMPOSE_PROJECT_NAME": default_project(root),
        "UID": str(uid),
        "GID": str(gid),
        "TRAIN_IMAGE": image.ref,
        "TRAIN_IMAGE_ID": image_id or "",
        "NOTEBOOK_IMAGE": notebook_ref(image),
        "NOTEBOOK_BIND": "127.0.0.1",
        "NOTEBOOK_PORT": str(port),
        "JUPYTER_TOKEN": token or secrets.token_hex(TOKEN_BYTES),
    }
    values |= {key: str(root / folder) for key, folder in FOLDERS.items()}
    return values


def render_env(values: dict[str, str]) -> str:
    for key, value in values.items():
        if "\n" in value or not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key):
            raise LabstackError(f"cannot write {key}={value!r} to .env", code=2)
    return ENV_HEADER + "".join(f"{key}={value}\n" for key, value in values.items())


def write_env(path: Path, values: dict[str, str]) -> Path:
    """Write .env atomically, readable by you only (it holds the notebook token)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(render_env(values))
    os.replace(tmp, path)
    return path


def make_folders(values: dict[str, str]) -> list[Path]:
    """Create the mounted folders that do not exist yet (as the invoking user, so they are theirs)."""
    made = []
    for key in FOLDERS:
        folder = Path(values[key])
        if not folder.is_dir():
            folder.mkdir(parents=True)
            made.append(folder)
    return made


def ensure_env(
    matrix: Matrix, framework: str, path: Path = ENV_FILE, *, new_token: bool = False, image_id: str | None = None
) -> dict[str, str]:
    """(Re)write .env for `framework`, keeping the existing notebook token and port unless told otherwise."""
    old = read_env(path)
    token = None if new_token else old.get("JUPYTER_TOKEN") or None
    port = int(old.get("NOTEBOOK_PORT") or NOTEBOOK_PORT)
    uid, gid = container_user(os.getuid(), os.getgid(), matrix)
    values = env_values(matrix, framework, uid=uid, gid=gid, token=token, image_id=image_id, port=port)
    write_env(path, values)
    make_folders(values)
    if os.getuid() == 0:
        hand_over_folders(values, uid, gid)
    return values


def container_user(uid: int, gid: int, matrix: Matrix) -> tuple[int, int]:
    """Your UID/GID, so files in the mounts are yours; root gets the image's user instead: no container of
    ours runs as root (root on the host can still read and remove everything they write)."""
    return (matrix.uid, matrix.gid) if uid == 0 else (uid, gid)


def hand_over_folders(values: dict[str, str], uid: int, gid: int) -> None:
    """As root, give the (top of the) mounted folders to the container user, so it can write there."""
    for key in FOLDERS:
        folder = Path(values[key])
        if folder.stat().st_uid == 0:
            os.chown(folder, uid, gid)


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


def up_notebook(matrix: Matrix, framework: str, variant: str, project: Project) -> str:
    """Build (cached) the notebook image, start it with `--wait` (healthy = answers with its token), return its URL.
    The GPU preflight happens before this is called."""
    from labstack.notebook import build_notebook_image

    check_compose()
    image = matrix.image(one_framework(matrix, framework), variant)
    values = read_env(project.env_file)
    if not values.get("JUPYTER_TOKEN"):
        if project.env_file != ENV_FILE:
            raise LabstackError(f"{project.env_file} has no JUPYTER_TOKEN: run `invoke env`", code=2)
        values = ensure_env(matrix, framework)
        print(f"wrote {ENV_FILE.name} (UID/GID, images, a new notebook token)")
    ref = build_notebook_image(matrix, image)
    overrides = {"NOTEBOOK_IMAGE": ref}
    action = ["up", "--detach", "--wait", "--wait-timeout", str(HEALTH_TIMEOUT_S), "notebook"]
    started = time.monotonic()
    result = run_compose(project, action, overrides)
    if result.returncode != 0:
        logs = project.command("logs", "notebook")
        raise LabstackError(
            f"the notebook did not become healthy (docker compose exit {result.returncode}): see "
            f"`{shell_line(logs, {})}`, then `invoke down`"
        )
    print(f"notebook on {ref} healthy after {time.monotonic() - started:.0f} s", file=sys.stderr)
    return notebook_url(values)


def down(project: Project) -> None:
    result = run_compose(Project(project.name, project.env_file, gpu=True), ["down", "--remove-orphans"])
    if result.returncode != 0:
        raise LabstackError(f"docker compose down failed (exit {result.returncode}): see its message above")


def project_from_env(env_file: Path, name: str | None) -> str:
    return name or read_env(env_file).get("COMPOSE_PROJECT_NAME") or default_project()


def load_script(name: str):
    """A stdlib-only script of scripts/ (they run in the images) imported as a module on the host."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"labstack_scripts_{name}", ROOT / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def data_helper(
    folder: str | None, *, download: bool = False, generate: bool = False, verify: bool = False, record: bool = False
) -> Path:
    """`invoke data`: one of download (default), generate, verify, record on the data folder."""
    chosen = [name for name, on in (("download", download), ("generate", generate), ("verify", verify),
                                    ("record", record)) if on]  # fmt: skip
    if len(chosen) > 1:
        raise LabstackError(f"choose one of --download, --generate, --verify, --record, not {' and '.join(chosen)}", 2)
    action = chosen[0] if chosen else "download"
    path = Path(folder or read_env().get("DATA_DIR") or ROOT / "data")
    mnist = load_script("mnist")
    if action == "download":
        from labstack.pipconf import host_pip_sources

        cert = host_pip_sources().cert  # the host's proxy CA, as pip uses it
        if cert and "SSL_CERT_FILE" not in os.environ:
            os.environ["SSL_CERT_FILE"] = cert
    try:
        if action == "download":
            mnist.download(path)
            print(f"MNIST downloaded and verified in {path}")
        elif action == "generate":
            mnist.generate(path)
            print(f"wrote a learnable stand-in dataset (NOT MNIST) and its {mnist.SUMS} to {path}")
        elif action == "record":
            print(f"recorded the checksums in {mnist.record(path)}")
        else:
            _, source, _ = mnist.verify(path)
            print(f"{path}: the four IDX files match {source}")
    except mnist.DataError as err:
        raise LabstackError(str(err), code=err.code) from None
    return path
