"""The bodies of `invoke env`, `data`, `up-cpu`, `up-gpu` and `down` (tasks.py only declares them)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from labstack.build.layers import layer_ref
from labstack.compose.data import data_helper
from labstack.compose.env import ENV_FILE, ensure_env, project_dir, read_env
from labstack.compose.project import Project, project_from_env, shared_name_note, up_notebook
from labstack.compose.project import down as compose_down
from labstack.compose.user import container_user
from labstack.engine import connect, image_or_none
from labstack.errors import BadInput, shown
from labstack.gpu import gpu_preflight
from labstack.matrix import load_matrix


def env(framework: str, new_token: bool = False, project_setting: str = "") -> None:
    project = project_dir(project_setting)
    matrix = load_matrix()
    image = matrix.image(framework, "cpu")
    old = read_env(ENV_FILE)  # a broken .env, or a bad SUDO_UID, is refused before Docker is asked
    before = old.get("COMPOSE_PROJECT_NAME")
    user = container_user(old)
    built = image_or_none(connect(), layer_ref(image, "lab"))
    values = ensure_env(
        matrix, framework, new_token=new_token, image_id=built.id if built else None, project=project, user=user
    )
    print(f"wrote {ENV_FILE} (mode 600): UID={values['UID']} GID={values['GID']} TRAIN_IMAGE={values['TRAIN_IMAGE']}")
    name = values["COMPOSE_PROJECT_NAME"]
    if before and before != name:
        print(
            f"COMPOSE_PROJECT_NAME is now {name} (was {before}): `invoke down` no longer stops containers started "
            f"under {before}; `docker ps --filter label=com.docker.compose.project={before}` lists them (another "
            "checkout may own some)"
        )
    if "PROJECT_DIR" in values:
        print(f"PROJECT_DIR={values['PROJECT_DIR']} (mounted at /work)")
    if not built:
        print(f"{values['TRAIN_IMAGE']} is not built yet: `invoke build --framework {framework}`")


def data(folder: str | None = None, **action: bool) -> None:
    data_helper(folder, **action)


def up(
    framework: str, variant: str, project: str | None = None, env_file: str | None = None, project_setting: str = ""
) -> None:
    """Start the notebook on the CPU or (after the GPU preflight) the CUDA image; print its URL. `project` is the
    compose project's name; `project_setting` the lab's folder, written to .env if this writes it."""
    env_path = compose_options(project, env_file)
    folder = project_dir(project_setting)
    matrix = load_matrix()
    image = matrix.image(framework, variant)
    if variant == "cuda":
        gpu_preflight(connect(), image, matrix)
    warn_shared_name(env_path, project)
    compose_project = Project(project_from_env(env_path, project), env_path, gpu=variant == "cuda")
    print(up_notebook(matrix, framework, variant, compose_project, folder))


def down(project: str | None = None, env_file: str | None = None) -> None:
    env_path = compose_options(project, env_file)
    warn_shared_name(env_path, project)
    compose_down(Project(project_from_env(env_path, project), env_path))


# Compose's own rule for a project name; it refuses any other, but only after Docker is asked.
PROJECT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


def compose_options(project: str | None, env_file: str | None) -> Path:
    """--project and --env-file of up-* and down, checked before Docker is asked; the env file's path. A named env
    file must exist: compose would leave a missing one out and act on this checkout's own project instead."""
    if project and not PROJECT_NAME.fullmatch(project):
        raise BadInput(
            f"--project {shown(project)} is not a compose project name: lowercase letters, digits, '-' and '_', "
            "starting with a letter or digit"
        )
    if not env_file:
        return ENV_FILE
    path = Path(env_file)
    try:
        problem = "" if path.is_file() else "is a folder" if path.is_dir() else "does not exist"
    except OSError as err:  # a name the file system refuses (too long)
        problem = f"cannot be read ({err.strerror or err})"
    if problem:
        raise BadInput(
            f"--env-file {shown(env_file)} {problem}: give the env file compose reads (`invoke env` writes .env)"
        )
    return path


def warn_shared_name(env_path: Path, project: str | None) -> None:
    note = shared_name_note(env_path, project)
    if note:
        print(note, file=sys.stderr)
