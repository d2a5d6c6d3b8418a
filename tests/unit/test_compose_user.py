"""Who the containers run as (issue 14, item 2): the pure choice from the IDs in use, SUDO_UID, and the .env and
folders `invoke env` hands over. No Docker; tests that chown run as root only (CI does)."""

from __future__ import annotations

import os
import stat

import pytest

from labstack.compose.env import env_values, hand_over_folders, read_env, write_env
from labstack.compose.user import UNOWNED_IDS, ContainerUser, choose_user, first_unowned, sudo_ids
from labstack.errors import BadInput, LabstackError
from labstack.matrix import load_matrix
from tests.invoking import assert_one_line_failure, checkout_copy, invoke_in_copy

MATRIX = load_matrix()
AS_ROOT = pytest.mark.skipif(os.getuid() != 0, reason="only root can chown, and only root picks an ID")


def owners(**named: int):
    """An account (or group) database: name=ID pairs; the lookup `choose_user` is given."""
    by_id = {number: name for name, number in named.items()}
    return by_id.get


NOBODY = owners()


def test_a_user_gets_themselves_whatever_sudo_or_env_say():
    chosen = choose_user(1234, 567, {"SUDO_UID": "abc"}, {"UID": "1"}, owners(me=1234), NOBODY)
    assert chosen == ContainerUser(1234, 567)


def test_root_gets_the_first_id_no_account_and_no_group_owns():
    assert choose_user(0, 0, {}, {}, NOBODY, NOBODY).uid == UNOWNED_IDS[0] == 65533
    accounts, groups = owners(a=65533, b=65531), owners(g=65532)
    chosen = choose_user(0, 0, {}, {}, accounts, groups)
    assert (chosen.uid, chosen.gid, chosen.owner) == (65530, 65530, None)
    assert chosen.note == (
        "running as root: the containers run as UID 65530:65530, which no account or group here owns "
        "(`sudo invoke env` from your own account uses yours)"
    )


def test_never_1000_nor_an_id_debian_or_systemd_hand_out():
    assert 1000 not in UNOWNED_IDS and 65534 not in UNOWNED_IDS and 65535 not in UNOWNED_IDS
    assert not set(UNOWNED_IDS) & set(range(60000, 65520)), "Debian's on-demand IDs, systemd's dynamic users"
    assert all(n < 100000 for n in UNOWNED_IDS), "subordinate IDs of rootless containers"
    reserved = dict.fromkeys(range(65520, 65534), "x")
    assert first_unowned(reserved.get, NOBODY) == 59999


def test_no_free_id_is_one_error_naming_the_fix():
    with pytest.raises(LabstackError, match="run `sudo invoke env` from your own account"):
        choose_user(0, 0, {}, {}, lambda n: "taken", NOBODY)


def test_the_id_env_named_is_kept_while_no_account_owns_it():
    kept = choose_user(0, 0, {}, {"UID": "61000", "GID": "61000"}, NOBODY, NOBODY)
    assert (kept.uid, kept.gid) == (61000, 61000) and "UID 61000:61000, which no account" in kept.note


@pytest.mark.parametrize(
    ("accounts", "groups", "says"),
    [
        (
            owners(alice=1000),
            NOBODY,
            ".env's UID 1000 belongs to account alice, so the containers now run as UID 65533:65533, which no account",
        ),
        (NOBODY, owners(staff=1000), ".env's GID 1000 belongs to group staff, so the containers now run as UID 65533"),
    ],
    ids=["uid-taken", "gid-taken"],
)
def test_an_id_env_named_that_is_owned_now_is_replaced_and_said(accounts, groups, says):
    chosen = choose_user(0, 0, {}, {"UID": "1000", "GID": "1000"}, accounts, groups)
    assert (chosen.uid, chosen.gid) == (65533, 65533) and says in chosen.note


def test_root_in_env_is_never_kept():
    assert choose_user(0, 0, {}, {"UID": "0", "GID": "0"}, NOBODY, NOBODY).uid == 65533


def test_under_sudo_the_account_that_ran_it():
    chosen = choose_user(0, 0, {"SUDO_UID": "1001", "SUDO_GID": "1002"}, {"UID": "65533"}, owners(bob=1001), NOBODY)
    assert (chosen.uid, chosen.gid, chosen.owner) == (1001, 1002, (1001, 1002))
    assert chosen.note == "running as root under sudo: the containers run as UID 1001:1002, yours (bob), from SUDO_UID"


@pytest.mark.parametrize(
    ("environ", "ids"),
    [
        ({}, None),
        ({"SUDO_UID": ""}, None),
        ({"SUDO_UID": "0", "SUDO_GID": "0"}, None),
        ({"SUDO_UID": "1000", "SUDO_GID": "1000"}, (1000, 1000)),
        ({"SUDO_UID": " 4242 ", "SUDO_GID": "100"}, (4242, 100)),
    ],
    ids=["unset", "empty", "root-ran-sudo", "user", "spaces"],
)
def test_sudo_ids(environ, ids):
    assert sudo_ids(environ) == ids


@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({"SUDO_UID": "abc", "SUDO_GID": "1000"}, "SUDO_UID is 'abc', not a user or group ID"),
        ({"SUDO_UID": "1000", "SUDO_GID": "-1"}, "SUDO_GID is '-1', not a user or group ID"),
        ({"SUDO_UID": "4294967295", "SUDO_GID": "1"}, "SUDO_UID is '4294967295'"),
        ({"SUDO_UID": "\u0661\u0660\u0660\u0660", "SUDO_GID": "1"}, "SUDO_UID is '\u0661\u0660\u0660\u0660'"),
        ({"SUDO_UID": "1000"}, "SUDO_UID is set but SUDO_GID is not"),
    ],
    ids=["letters", "negative", "too-big", "arabic-digits", "no-gid"],
)
def test_a_bad_sudo_id_is_bad_input_naming_the_fix(environ, words):
    with pytest.raises(BadInput) as err:
        sudo_ids(environ)
    assert words in str(err.value) and str(err.value).endswith("or unset SUDO_UID and SUDO_GID")


def test_env_is_600_even_over_a_wider_leftover_temporary_file(tmp_path):
    path = tmp_path / ".env"
    leftover = tmp_path / f"..env.tmp-{os.getpid()}"  # what a killed earlier write leaves behind
    leftover.write_text("")
    leftover.chmod(0o644)
    values = env_values(MATRIX, "torch", uid=1, gid=1, root=tmp_path)
    write_env(path, values)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and read_env(path) == values
    assert [p.name for p in tmp_path.iterdir()] == [".env"]


@AS_ROOT
def test_env_under_sudo_belongs_to_the_account_that_ran_it(tmp_path):
    path = write_env(tmp_path / ".env", env_values(MATRIX, "torch", uid=4321, gid=4322, root=tmp_path), (4321, 4322))
    info = path.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (4321, 4322, 0o600)


@AS_ROOT
def test_folders_of_root_or_of_the_former_unowned_id_are_handed_over_an_accounts_never(tmp_path):
    values = {"DATA_DIR": str(tmp_path / "data"), "RUNS_DIR": str(tmp_path / "runs")}
    for key, owner in (("DATA_DIR", 0), ("RUNS_DIR", 65533)):
        os.mkdir(values[key])
        os.chown(values[key], owner, owner)
    assert hand_over_folders(values, 4321, 4321, (65533, 65533), NOBODY) == []
    assert {os.stat(v).st_uid for v in values.values()} == {4321}

    os.chown(values["RUNS_DIR"], 1000, 1000)
    notes = hand_over_folders(values, 65533, 65533, (1000, 1000), owners(alice=1000))
    assert os.stat(values["RUNS_DIR"]).st_uid == 1000, "an account's folder was handed over"
    assert os.stat(values["DATA_DIR"]).st_uid == 4321, "a folder of another unowned ID, not .env's, was handed over"
    data, runs = notes
    assert runs.startswith(f"RUNS_DIR {values['RUNS_DIR']} belongs to UID 1000 (account alice), not to 65533, and is ")
    assert runs.endswith(
        f"`chown 65533:65533 {values['RUNS_DIR']}` if nothing in it is that account's, or set RUNS_DIR"
    )
    assert data.startswith(f"DATA_DIR {values['DATA_DIR']} belongs to UID 4321 (no account), not to 65533")


@AS_ROOT
@pytest.mark.parametrize(
    ("environ", "words"),
    [({"SUDO_UID": "abc", "SUDO_GID": "0"}, "SUDO_UID is 'abc'"), ({"SUDO_UID": "1000"}, "SUDO_GID is not")],
    ids=["letters", "no-gid"],
)
def test_invoke_env_with_a_bad_sudo_id_is_one_line_before_docker_is_asked(tmp_path, monkeypatch, environ, words):
    copy = checkout_copy(tmp_path / "checkout")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    monkeypatch.delenv("SUDO_GID", raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    result = invoke_in_copy(copy, "labstack-test", "env", "--framework", "torch")
    assert_one_line_failure(result, 2, words)
    assert not (copy / ".env").exists()
