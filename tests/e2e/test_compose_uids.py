"""`invoke env` as root, for real, in a copy of this checkout, on a machine where an account owns UID 1000 (issue 14,
item 2): the containers run as an ID that no account owns (under sudo, the account that ran it), the folders go to
that ID, and no other account can read the notebook's token: not from .env, not from the Jupyter process."""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from labstack.compose.env import read_env
from tests.invoking import checkout_copy

from .conftest import COMMAND_TIMEOUT, SESSION
from .labhosts import free_port

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="`invoke env` as root: CI runs as root")

ACCOUNT_UID = 1000  # the image's user, and on many machines a real account: on a lab server, the first student's
SUDO = ("SUDO_UID", "SUDO_GID", "SUDO_USER", "SUDO_COMMAND")


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int

    def run(self, *command: str) -> subprocess.CompletedProcess:
        """`command` as this account, with its own group only (no supplementary ones, no capabilities)."""
        return subprocess.run(
            ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", *command],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip


@pytest.fixture(scope="module")
def account_1000():
    """The account that owns UID 1000 here, or a throwaway one made for these tests and always removed."""
    try:
        entry = pwd.getpwuid(ACCOUNT_UID)
    except KeyError:
        entry = None
    if entry:
        yield Account(entry.pw_name, entry.pw_uid, entry.pw_gid)
        return
    name = f"lse2e{SESSION}"
    group = ["--user-group"] if not group_exists(ACCOUNT_UID) else ["--no-user-group", "--gid", str(ACCOUNT_UID)]
    subprocess.run(
        ["useradd", "--uid", str(ACCOUNT_UID), *group, "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        entry = pwd.getpwnam(name)
        yield Account(name, entry.pw_uid, entry.pw_gid)
    finally:
        subprocess.run(["userdel", name], capture_output=True, check=False)
        if group[0] == "--user-group":
            subprocess.run(["groupdel", name], capture_output=True, check=False)  # when userdel left it


def group_exists(gid: int) -> bool:
    try:
        grp.getgrgid(gid)
    except KeyError:
        return False
    return True


@pytest.fixture
def checkout():
    """A copy of this checkout in a folder every account may enter (pytest's tmp_path is root's alone, which would
    hide .env from another account whatever its mode), with a free notebook port; always removed."""
    base = Path(tempfile.mkdtemp(prefix=f"labstack-uids-{SESSION}-"))
    base.chmod(0o755)
    try:
        copy = checkout_copy(base / "labstack")
        (copy / ".env").write_text(f"NOTEBOOK_PORT={free_port()}\n")
        (copy / ".env").chmod(0o600)
        yield copy
    finally:
        shutil.rmtree(base, ignore_errors=True)


def invoke_env(copy: Path, **sudo: str) -> subprocess.CompletedProcess:
    """`invoke env` as root in the copy (its own tasks.py and labstack/), with SUDO_* exactly as given."""
    environ = {k: v for k, v in os.environ.items() if k not in SUDO} | sudo
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "env", "--framework", "torch"], cwd=copy, capture_output=True, text=True,
        timeout=COMMAND_TIMEOUT, env={**environ, "PWD": str(copy), "PYTHONPATH": str(copy)},
    )  # fmt: skip
    assert result.returncode == 0, f"invoke env in {copy}:\n{result.stdout}\n{result.stderr}"
    return result


def owner(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_uid, info.st_gid


def owned_by_no_one(uid: int, gid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        try:
            grp.getgrgid(gid)
        except KeyError:
            return True
    return False


def test_root_without_sudo_gives_the_containers_an_id_no_account_owns_and_keeps_it(account_1000, checkout):
    first = invoke_env(checkout)
    values = read_env(checkout / ".env")
    uid, gid = int(values["UID"]), int(values["GID"])
    assert uid != account_1000.uid and owned_by_no_one(uid, gid), f"{uid}:{gid} belongs to someone here"
    assert uid != 0 and gid != 0
    line = (
        f"labstack: running as root: the containers run as UID {uid}:{gid}, which no account or group here owns "
        "(`sudo invoke env` from your own account uses yours)"
    )
    assert line in first.stdout.splitlines(), first.stdout
    for folder in ("data", "runs"):
        assert owner(checkout / folder) == (uid, gid), folder
    assert owner(checkout / "notebooks")[0] != account_1000.uid
    assert owner(checkout / ".env") == (0, 0) and (checkout / ".env").stat().st_mode & 0o777 == 0o600

    again = invoke_env(checkout)
    assert (read_env(checkout / ".env")["UID"], read_env(checkout / ".env")["GID"]) == (str(uid), str(gid))
    assert line in again.stdout.splitlines(), again.stdout


def test_an_env_that_names_an_account_is_replaced_and_its_folders_left_alone(account_1000, checkout):
    """What `invoke env` as root wrote before: UID 1000, data/ and runs/ handed to it."""
    (checkout / ".env").write_text(f"UID={account_1000.uid}\nGID={account_1000.gid}\n")
    for folder in ("data", "runs"):
        os.chown(checkout / folder, account_1000.uid, account_1000.gid)
    result = invoke_env(checkout)
    uid = int(read_env(checkout / ".env")["UID"])
    assert uid != account_1000.uid and owned_by_no_one(uid, uid)
    assert (
        f"labstack: running as root: .env's UID {account_1000.uid} belongs to account {account_1000.name}, so the "
        f"containers now run as UID {uid}:{uid}, which no account or group here owns"
    ) in result.stdout, result.stdout
    for folder, key in (("data", "DATA_DIR"), ("runs", "RUNS_DIR")):
        assert owner(checkout / folder) == (account_1000.uid, account_1000.gid), f"{folder} taken from its account"
        assert (
            f"labstack: {key} {checkout / folder} belongs to UID {account_1000.uid} (account {account_1000.name}), "
            f"not to {uid}, and is left as it is"
        ) in result.stdout, result.stdout


def test_under_sudo_the_account_that_ran_it_gets_the_containers_the_folders_and_env(account_1000, checkout):
    result = invoke_env(checkout, SUDO_UID=str(account_1000.uid), SUDO_GID=str(account_1000.gid))
    ids = (account_1000.uid, account_1000.gid)
    values = read_env(checkout / ".env")
    assert (int(values["UID"]), int(values["GID"])) == ids
    assert owner(checkout / ".env") == ids and (checkout / ".env").stat().st_mode & 0o777 == 0o600
    for folder in ("data", "runs"):
        assert owner(checkout / folder) == ids, folder
    assert (
        f"labstack: running as root under sudo: the containers run as UID {ids[0]}:{ids[1]}, yours "
        f"({account_1000.name}), from SUDO_UID"
    ) in result.stdout.splitlines(), result.stdout
    assert account_1000.run("cat", str(checkout / ".env")).returncode == 0, "the account cannot read its own .env"


def compose(copy: Path, *args: str, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
    command = ["docker", "compose", "--env-file", str(copy / ".env"), "--profile", "notebook", *args]
    return subprocess.run(
        command, cwd=copy, capture_output=True, text=True, timeout=timeout, env={**os.environ, "PWD": str(copy)}
    )


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_no_other_account_can_read_the_notebook_token(account_1000, checkout, images):
    invoke_env(checkout)
    values = read_env(checkout / ".env")
    token = values["JUPYTER_TOKEN"]
    try:
        up = compose(checkout, "up", "--detach", "--wait", "--wait-timeout", "180", "notebook", timeout=300)
        assert up.returncode == 0, up.stderr
        container = compose(checkout, "ps", "--quiet", "notebook").stdout.split()[0]
        inspect = json.loads(subprocess.run(["docker", "inspect", container], capture_output=True, check=True).stdout)
        tini = inspect[0]["State"]["Pid"]
        (jupyter,) = children(tini)  # tini execs nothing else: notebook.py execs JupyterLab
        status = Path(f"/proc/{jupyter}/status").read_text()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uid_line.split()[1:] == [values["UID"]] * 4, uid_line
        # The token is there, in the environment of the process, for root to see ...
        assert f"JUPYTER_TOKEN={token}".encode() in Path(f"/proc/{jupyter}/environ").read_bytes()
        # ... and for no other account.
        environ = account_1000.run("cat", f"/proc/{jupyter}/environ")
        assert environ.returncode != 0 and token not in environ.stdout, f"{account_1000.name} read the token"
        env_file = account_1000.run("cat", str(checkout / ".env"))
        assert env_file.returncode != 0 and token not in env_file.stdout, f"{account_1000.name} read .env"
        readme = account_1000.run("cat", str(checkout / "README.md"))
        assert readme.returncode == 0, f"{account_1000.name} cannot even reach the checkout: the test proves nothing"
        # Nor on any command line, which `ps` shows to every account.
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                assert token.encode() not in cmdline.read_bytes(), f"the token is on the command line of {cmdline}"
            except OSError:  # the process ended
                continue
    finally:
        compose(checkout, "down", "--remove-orphans", timeout=120)
