"""The bodies of `invoke env`, `data`, `up-cpu`, `up-gpu` and `down` (tasks.py only declares them)."""

from __future__ import annotations

import sys
from pathlib import Path

from labstack.build.layers import layer_ref
from labstack.compose.data import data_helper
from labstack.compose.env import ENV_FILE, ensure_env, project_dir, read_env
from labstack.compose.project import Project, project_from_env, shared_name_note, up_notebook
from labstack.compose.project import down as compose_down
from labstack.compose.user import container_user
from labstack.engine import connect, image_or_none
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
    folder = project_dir(project_setting)
    matrix = load_matrix()
    image = matrix.image(framework, variant)
    if variant == "cuda":
        gpu_preflight(connect(), image, matrix)
    env_path = Path(env_file) if env_file else ENV_FILE
    warn_shared_name(env_path, project)
    compose_project = Project(project_from_env(env_path, project), env_path, gpu=variant == "cuda")
    print(up_notebook(matrix, framework, variant, compose_project, folder))


def down(project: str | None = None, env_file: str | None = None) -> None:
    env_path = Path(env_file) if env_file else ENV_FILE
    warn_shared_name(env_path, project)
    compose_down(Project(project_from_env(env_path, project), env_path))


def warn_shared_name(env_path: Path, project: str | None) -> None:
    note = shared_name_note(env_path, project)
    if note:
        print(note, file=sys.stderr)
