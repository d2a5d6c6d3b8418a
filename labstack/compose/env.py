"""`.env` for docker compose: who owns the files the services write (UID/GID), which images they run (from the
matrix), where the mounted folders are, and the notebook's token."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path

from labstack import ROOT
from labstack.build.layers import layer_ref
from labstack.compose.user import ContainerUser, Owner, account_owner, container_user, previous_ids
from labstack.errors import BadInput
from labstack.matrix import Matrix

ENV_FILE = ROOT / ".env"
NOTEBOOK_PORT = 8888
TOKEN_BYTES = 24
# The folders the services mount; created by `invoke env` so that they belong to you, not to root. The project
# folder (PROJECT_DIR, at /work) is the lab's own: never created or handed over, only checked.
FOLDERS = {"DATA_DIR": "data", "RUNS_DIR": "runs"}
ENV_HEADER = (
    "# Written by `invoke env` from images/matrix.toml; read by docker compose (and `invoke up-cpu/up-gpu`).\n"
    "# Edit freely: `invoke env` keeps JUPYTER_TOKEN (unless --new-token) and rewrites the rest.\n"
)


PATH_HASH_DIGITS = 8


def folder_project(root: Path = ROOT) -> str:
    """The name Compose itself gives a project in `root`: its folder name, lower case, [a-z0-9_-] only. Two
    checkouts in folders of the same name (both `labstack`, the usual case) share it: what an older `invoke env`
    wrote to .env, and what a plain `docker compose` uses without a .env."""
    name = re.sub(r"[^a-z0-9_-]", "", root.name.lower()).lstrip("-_")
    return name or "labstack"


def default_project(root: Path = ROOT) -> str:
    """This checkout's own compose project: the folder's name, for `docker ps`, plus a short hash of the checkout's
    absolute path, so that checkouts in folders of the same name never share containers, networks or `down`."""
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:PATH_HASH_DIGITS]
    return f"{folder_project(root)}-{digest}"


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


ENV_FIX = "fix or delete that line (or delete the file and run `invoke env`: it writes a new one)"
PORT_MAX = 65535


def read_env(path: Path = ENV_FILE) -> dict[str, str]:
    """The values of a .env file ({} without one); a line that is not text, or a NOTEBOOK_PORT that is not a port,
    is one BadInput naming the file, the line's key and the fix, before Docker or compose is asked."""
    if not path.is_file():
        return {}
    data = path.read_bytes()
    for number, raw in enumerate(data.splitlines(), 1):
        try:
            line = raw.decode()
        except UnicodeDecodeError:
            line = None
        if line is None or any(ord(c) < 32 and c != "\t" for c in line):
            key = raw.partition(b"=")[0].strip().decode(errors="replace") if b"=" in raw else ""
            named = f" ({key})" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) else ""
            raise BadInput(f"{path} line {number}{named} is not text (binary junk): {ENV_FIX}")
    values = parse_env(data.decode())
    port = values.get("NOTEBOOK_PORT")
    if port is not None and not (port.isdigit() and 1 <= int(port) <= PORT_MAX):
        raise BadInput(
            f"{path}: NOTEBOOK_PORT is {port!r}, not a port: give a whole number from 1 to {PORT_MAX}, e.g. "
            f"NOTEBOOK_PORT={NOTEBOOK_PORT}, or delete the line"
        )
    return values


def project_dir(setting: str, root: Path = ROOT) -> Path | None:
    """The `labstack.project` setting as the absolute folder .env names (compose would read a relative PROJECT_DIR
    from compose/, not from where you stand), relative to the checkout; it must exist. None when it is not set."""
    if not setting:
        return None
    folder = (root / Path(setting).expanduser()).resolve()
    if not folder.is_dir():
        raise BadInput(f"the labstack.project setting names {folder}, which is not a folder: create it, or fix it")
    return folder


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
    project: Path | None = None,
) -> dict[str, str]:
    """Everything .env sets: who owns files in the mounts, which images (from the matrix), the notebook, and the
    project folder when the lab set one (else compose mounts the folder it runs from)."""
    image = matrix.image(framework, "cpu")
    values = {
        "COMPOSE_PROJECT_NAME": default_project(root),
        "UID": str(uid),
        "GID": str(gid),
        "TRAIN_IMAGE": layer_ref(image, "lab"),
        "TRAIN_IMAGE_ID": image_id or "",
        "NOTEBOOK_IMAGE": layer_ref(image, "notebook"),
        "NOTEBOOK_BIND": "127.0.0.1",
        "NOTEBOOK_PORT": str(port),
        "JUPYTER_TOKEN": token or secrets.token_hex(TOKEN_BYTES),
    }
    values |= {key: str(root / folder) for key, folder in FOLDERS.items()}
    if project:
        values["PROJECT_DIR"] = str(project)
    return values


def render_env(values: dict[str, str]) -> str:
    for key, value in values.items():
        if "\n" in value or not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key):
            raise BadInput(f"cannot write {key}={value!r} to .env")
    return ENV_HEADER + "".join(f"{key}={value}\n" for key, value in values.items())


def write_env(path: Path, values: dict[str, str], owner: tuple[int, int] | None = None) -> Path:
    """Write .env atomically, readable by its owner only (it holds the notebook token): a new file, mode 600 from its
    creation and given to `owner` (UID, GID; under sudo, the account that ran it) before the token is in it, then
    renamed over the old one. Never a file left by an earlier try, whose mode could be wider."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            os.fchmod(fd, 0o600)
            if owner:
                os.fchown(fd, *owner)
            handle.write(render_env(values))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
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
    matrix: Matrix,
    framework: str,
    path: Path = ENV_FILE,
    *,
    new_token: bool = False,
    image_id: str | None = None,
    project: Path | None = None,
    user: ContainerUser | None = None,
    say: Callable[[str], object] = print,
) -> dict[str, str]:
    """(Re)write .env for `framework`, keeping the existing notebook token and port unless told otherwise; as root,
    `say` which UID the containers run as and why, and of any mounted folder they cannot write."""
    old = read_env(path)
    token = None if new_token else old.get("JUPYTER_TOKEN") or None
    port = int(old.get("NOTEBOOK_PORT") or NOTEBOOK_PORT)
    user = user or container_user(old)
    values = env_values(
        matrix, framework, uid=user.uid, gid=user.gid, token=token, image_id=image_id, port=port, project=project
    )
    write_env(path, values, user.owner)
    make_folders(values)
    if user.note:
        say(f"labstack: {user.note}")
    if os.getuid() == 0:
        for note in hand_over_folders(values, user.uid, user.gid, previous_ids(old), account_owner()):
            say(f"labstack: {note}")
    return values


def hand_over_folders(
    values: dict[str, str], uid: int, gid: int, previous: tuple[int, int] | None, uid_owner: Owner
) -> list[str]:
    """As root, give the (top of the) mounted folders to the container user, so it can write there: those that
    belong to root, or to the UID .env named before when no account owns it (an ID labstack chose). Never one that
    belongs to an account: what it says of those instead."""
    notes = []
    for key in FOLDERS:
        folder = Path(values[key])
        owner = folder.stat().st_uid
        if owner == uid:
            continue
        if owner == 0 or (previous and owner == previous[0] and uid_owner(owner) is None):
            os.chown(folder, uid, gid)
            continue
        name = uid_owner(owner)
        whose = f"account {name}" if name else "no account"
        notes.append(
            f"{key} {folder} belongs to UID {owner} ({whose}), not to {uid}, and is left as it is: the containers "
            f"cannot write there; `chown {uid}:{gid} {folder}` if nothing in it is that account's, or set {key}"
        )
    return notes
