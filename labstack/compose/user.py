"""Who the containers run as, and so who owns what they write and who can read their processes (the notebook's token
is in its environment): you; under sudo, the account that ran sudo; as root without sudo, an ID that no account or
group on this machine owns, so that nothing is handed to a real account by accident."""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from labstack.errors import BadInput, LabstackError

# Tried in this order as root without sudo. Debian's policy reserves 65000-65533 for no one, and systemd's dynamic
# users (DynamicUser=) end at 65519: 65533 down to 65520 are nobody's, now and later. Then the top of the range that
# adduser fills from the bottom (1000 upwards). Not 60000-64999 (IDs Debian packages create on demand: slurm's is
# 64030), not 65534 (nobody, shared by every daemon that drops to it), not 100000 and above (subordinate IDs, where
# another user's rootless containers run).
UNOWNED_IDS = (*range(65533, 65519, -1), *range(59999, 49999, -1))
ID_MAX = 2**32 - 2  # (uid_t)-1 means "no change" to chown
SUDO_FIX = "run `sudo invoke env` from your own account, or unset SUDO_UID and SUDO_GID"

Owner = Callable[[int], "str | None"]


@dataclass(frozen=True)
class ContainerUser:
    """The UID:GID the containers run as; `owner`: the account .env and the folders go to under sudo (else None);
    `note`: the line that says which ID and why (as root only)."""

    uid: int
    gid: int
    owner: tuple[int, int] | None = None
    note: str | None = None


def sudo_ids(environ: Mapping[str, str]) -> tuple[int, int] | None:
    """SUDO_UID/SUDO_GID, the account that ran sudo; None without sudo, or when root itself ran it (SUDO_UID 0).
    A value that is not an ID is BadInput: sudo sets both, so someone set them by hand."""
    raw_uid = environ.get("SUDO_UID", "").strip()
    if not raw_uid:
        return None
    ids = []
    for name in ("SUDO_UID", "SUDO_GID"):
        text = environ.get(name, "").strip()
        if not text:
            raise BadInput(f"SUDO_UID is set but {name} is not: {SUDO_FIX}")
        if not (text.isascii() and text.isdigit() and int(text) <= ID_MAX):
            raise BadInput(f"{name} is {text!r}, not a user or group ID: {SUDO_FIX}")
        ids.append(int(text))
    return None if ids[0] == 0 else (ids[0], ids[1])


def first_unowned(uid_owner: Owner, gid_owner: Owner, candidates: tuple[int, ...] = UNOWNED_IDS) -> int | None:
    """The first candidate that no account owns as a UID and no group as a GID (one number for both)."""
    return next((n for n in candidates if uid_owner(n) is None and gid_owner(n) is None), None)


def previous_ids(values: Mapping[str, str]) -> tuple[int, int] | None:
    """UID/GID as an earlier .env named them, when both are IDs."""
    uid, gid = values.get("UID", ""), values.get("GID", "")
    if uid.isascii() and uid.isdigit() and gid.isascii() and gid.isdigit():
        return int(uid), int(gid)
    return None


def choose_user(
    uid: int,
    gid: int,
    environ: Mapping[str, str],
    previous: Mapping[str, str],
    uid_owner: Owner,
    gid_owner: Owner,
) -> ContainerUser:
    """Who the containers run as, for a process of `uid`:`gid`: themselves; as root, SUDO_UID's account, else the
    UID:GID .env named when no account or group owns them still, else the first of UNOWNED_IDS free as both."""
    if uid != 0:
        return ContainerUser(uid, gid)
    sudo = sudo_ids(environ)
    if sudo:
        name = uid_owner(sudo[0])
        whose = f"yours ({name})" if name else "yours"
        note = f"running as root under sudo: the containers run as UID {sudo[0]}:{sudo[1]}, {whose}, from SUDO_UID"
        return ContainerUser(*sudo, owner=sudo, note=note)
    why = "which no account or group here owns (`sudo invoke env` from your own account uses yours)"
    before = previous_ids(previous)
    if before and before[0] != 0 and uid_owner(before[0]) is None and gid_owner(before[1]) is None:
        return ContainerUser(*before, note=f"running as root: the containers run as UID {before[0]}:{before[1]}, {why}")
    chosen = first_unowned(uid_owner, gid_owner)
    if chosen is None:
        raise LabstackError(
            f"running as root, and every ID labstack would give the containers ({UNOWNED_IDS[0]} to "
            f"{UNOWNED_IDS[-1]}) belongs to an account or group here: run `sudo invoke env` from your own account"
        )
    note = f"running as root: the containers run as UID {chosen}:{chosen}, {why}"
    if before and before[0] != 0:
        name, group = uid_owner(before[0]), gid_owner(before[1])
        taken = f"UID {before[0]} belongs to account {name}" if name else f"GID {before[1]} belongs to group {group}"
        note = f"running as root: .env's {taken}, so the containers now run as UID {chosen}:{chosen}, {why}"
    return ContainerUser(chosen, chosen, note=note)


def database_owner(listed: dict[int, str], lookup: Callable[[int], str]) -> Owner:
    """ID -> the name that owns it: every entry an account database lists (files and the other NSS sources), else a
    lookup by ID, for sources that do not list theirs (LDAP or SSSD without enumeration)."""

    def owner(number: int) -> str | None:
        if number in listed:
            return listed[number]
        try:
            return lookup(number)
        except (KeyError, OverflowError):
            return None

    return owner


def account_owner() -> Owner:
    """UID -> the account that owns it on this machine, or None."""
    return database_owner({e.pw_uid: e.pw_name for e in pwd.getpwall()}, lambda uid: pwd.getpwuid(uid).pw_name)


def group_owner() -> Owner:
    """GID -> the group that owns it on this machine, or None."""
    return database_owner({e.gr_gid: e.gr_name for e in grp.getgrall()}, lambda gid: grp.getgrgid(gid).gr_name)


def container_user(previous: Mapping[str, str], environ: Mapping[str, str] = os.environ) -> ContainerUser:
    """choose_user for this process on this machine."""
    return choose_user(os.getuid(), os.getgid(), environ, previous, account_owner(), group_owner())
