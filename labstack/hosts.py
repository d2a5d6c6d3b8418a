"""The machines labstack reaches: `local://` (this one), `ssh://[user@]host[:port]` (a lab server, through the
user's own OpenSSH: their ssh config, keys and agent apply) and `docker://container`.

A host is checked before anything runs: its parts must be plain names, so nothing a user types can become an
ssh option (`ssh://-oProxyCommand=...`) or shell text. Every ssh call gets the same options: never ask for a
password, and give up on a host that does not answer, or that stalls in the middle of the handshake, within
seconds instead of waiting forever.

Hosts come from the command line (`ssh://gpu1,ssh://gpu2`), from a file (`@hosts.txt`: one host per line, `#`
comments and blank lines ignored) or both. An ssh config file of labstack's own (LABSTACK_SSH_CONFIG, or the
lab's `ssh_config` setting) is given to every ssh call as `-F FILE`: Host aliases, ports, keys and known hosts
for labstack's ssh without touching the user's ~/.ssh/config.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from labstack.errors import BadInput

SCHEMES = ("local", "ssh", "docker")
SSH_CONFIG_VARIABLE = "LABSTACK_SSH_CONFIG"
CONNECT_TIMEOUT_S = 10
ALIVE_INTERVAL_S = 5
ALIVE_COUNT = 3
# BatchMode: keys and agent only, no password prompt. ConnectTimeout alone does not end a handshake that stalls
# after the server's banner (measured: OpenSSH 9.2 waited for ever); with ServerAliveInterval set, the same
# stalled host fails after ConnectTimeout, and an established session that stops answering fails after
# ServerAliveInterval x ServerAliveCountMax.
SSH_OPTIONS = (
    "-o", "BatchMode=yes",
    "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
    "-o", f"ServerAliveInterval={ALIVE_INTERVAL_S}",
    "-o", f"ServerAliveCountMax={ALIVE_COUNT}",
)  # fmt: skip
SPEC_HELP = "write local://, ssh://[user@]host[:port] or docker://container"

_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
_SSH = re.compile(r"(?:(?P<user>[^@]*)@)?(?P<name>\[[^\]]*\]|[^:]*)(?::(?P<port>[^:]*))?")


@dataclass(frozen=True)
class Host:
    scheme: str
    name: str = ""
    user: str | None = None
    port: int | None = None

    @property
    def spec(self) -> str:
        """The host as testinfra and the reports write it: local://, ssh://user@name:port, docker://name."""
        if self.scheme == "local":
            return "local://"
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{self.scheme}://{user}{self.name}{port}"

    @property
    def label(self) -> str:
        return "local" if self.scheme == "local" else self.spec.partition("://")[2]


def parse_host(text: str) -> Host:
    """One host spec, checked part by part; the error names the part that is wrong."""
    spec = text.strip()
    scheme, separator, rest = spec.partition("://")
    if not separator or scheme not in SCHEMES:
        raise BadInput(f"bad host {spec!r}: {SPEC_HELP}")
    if scheme == "local":
        if rest.strip("/"):
            raise BadInput(f"bad host {spec!r}: local:// names this machine and takes nothing after it")
        return Host("local")
    if scheme == "docker":
        if not rest:
            raise BadInput(
                f"bad host {spec!r}: docker:// names no container: give docker://NAME (`docker ps` lists them)"
            )
        _check(spec, "container", rest, _USER)
        return Host("docker", rest)
    parts = _SSH.fullmatch(rest)
    if parts is None:
        raise BadInput(f"bad host {spec!r}: {SPEC_HELP}")
    user, name, port = parts.group("user"), parts.group("name"), parts.group("port")
    if not name:
        raise BadInput(f"bad host {spec!r}: ssh:// names no host: give ssh://USER@HOST (or ssh://USER@HOST:PORT)")
    if user is not None:
        _check(spec, "user", user, _USER)
    _check(spec, "host name", name, _NAME)
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        raise BadInput(f"bad host {spec!r}: the port {port!r} is not a number from 1 to 65535")
    return Host("ssh", name, user, int(port) if port else None)


def _check(spec: str, what: str, value: str, pattern: re.Pattern) -> None:
    if value.startswith("-"):
        raise BadInput(f"bad host {spec!r}: a {what} cannot start with '-' (ssh would read it as an option)")
    if not pattern.fullmatch(value):
        raise BadInput(
            f"bad host {spec!r}: the {what} {value!r} may hold only letters, digits, '.', '-' and '_'"
            if value
            else f"bad host {spec!r}: no {what}: {SPEC_HELP}"
        )


def unreachable_message(host: Host, failure: str, config: str | None = None) -> str:
    """Why commands cannot run on a host, with the advice for its kind: a docker:// container that does not exist
    or does not run gets Docker's, an ssh:// host ssh's; never ssh advice for a container."""
    if host.scheme == "docker":
        said = failure.lower()
        if "no such container" in said:
            return f"no container {host.name} on this Docker: `docker ps` lists the running ones; give one of them"
        if "is not running" in said or "is paused" in said:
            return f"the container {host.name} is not running: start it (`docker start {host.name}`), or give another"
        return f"cannot run commands in the container {host.name} ({failure}): try `docker exec {host.name} true`"
    if host.scheme == "local":
        return f"cannot run commands on this machine ({failure})"
    options = f"-F {config} " if config else ""
    return (
        f"{host.label} is unreachable: {failure}: check the name, that sshd runs and answers, and that your key is "
        f"accepted (`ssh {options}-o BatchMode=yes {host.label} true`)"
    )


def parse_hosts(text: str) -> list[Host]:
    """A comma-separated list of host specs and `@FILE`s of them, in order, each host once."""
    hosts: list[Host] = []
    for part in (p.strip() for p in text.split(",")):
        if part.startswith("@"):
            hosts += read_hosts_file(Path(part[1:]))
        elif part:
            hosts.append(parse_host(part))
    return list(dict.fromkeys(hosts))


def read_hosts_file(path: Path) -> list[Host]:
    """One host per line, in the command line's grammar; `#` starts a comment; blank lines are ignored. An error
    names the file and the line."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else "not a text file"
        raise BadInput(f"cannot read the hosts file {path}: {reason}") from None
    hosts = []
    for number, line in enumerate(lines, 1):
        text = line.partition("#")[0].strip()
        if not text:
            continue
        try:
            hosts.append(parse_host(text))
        except BadInput as err:
            raise BadInput(f"{path} line {number}: {err}") from None
    if not hosts:
        raise BadInput(f"the hosts file {path} names no host: write one per line ({SPEC_HELP})")
    return hosts


def ssh_config(environ: Mapping[str, str] = os.environ) -> str | None:
    """labstack's own ssh config file (LABSTACK_SSH_CONFIG), given to ssh as `-F FILE`; None: ssh's defaults."""
    value = environ.get(SSH_CONFIG_VARIABLE)
    if not value:
        return None
    if not os.path.isfile(value) or not os.access(value, os.R_OK):
        raise BadInput(f"{SSH_CONFIG_VARIABLE} names {value}, which is not a readable file: fix or unset it")
    return value
