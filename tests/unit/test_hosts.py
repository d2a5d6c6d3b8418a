"""Hosts are checked part by part before anything runs: nothing a user types becomes an ssh option or shell."""

from __future__ import annotations

import pytest

from labstack.errors import ExitCode, LabstackError
from labstack.hosts import (
    SSH_CONFIG_VARIABLE,
    SSH_OPTIONS,
    Host,
    parse_host,
    parse_hosts,
    ssh_config,
)


@pytest.mark.parametrize(
    ("text", "host"),
    [
        ("local://", Host("local")),
        ("ssh://gpu1", Host("ssh", "gpu1")),
        ("ssh://lab@gpu1.example.org:2222", Host("ssh", "gpu1.example.org", "lab", 2222)),
        ("ssh://lab_1@10.0.0.7", Host("ssh", "10.0.0.7", "lab_1")),
        ("ssh://lab@[fe80::1]:22", Host("ssh", "[fe80::1]", "lab", 22)),
        ("docker://labstack-test-1", Host("docker", "labstack-test-1")),
    ],
)
def test_a_host_is_read_into_its_parts_and_written_back_the_same(text, host):
    assert parse_host(text) == host
    assert host.spec == text


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("ssh://-oProxyCommand=touch X", "a host name cannot start with '-'"),
        ("ssh://-oProxyCommand=sh@gpu1", "a user cannot start with '-'"),
        ("ssh://lab@gpu1;touch X", "may hold only letters"),
        ("ssh://lab@gpu1 -o x", "may hold only letters"),
        ("ssh://lab@$(touch X)", "may hold only letters"),
        ("ssh://lab@gpu1:22x", "port '22x'"),
        ("ssh://lab@gpu1:0", "port '0'"),
        ("ssh://lab@", "ssh:// names no host: give ssh://USER@HOST"),
        ("ssh://", "ssh:// names no host: give ssh://USER@HOST"),
        ("ssh://:22", "ssh:// names no host: give ssh://USER@HOST"),
        ("docker://", "docker:// names no container: give docker://NAME (`docker ps` lists them)"),
        ("gpu1", "write local://"),
        ("paramiko://gpu1", "write local://"),
        ("local://elsewhere", "takes nothing after it"),
        ("docker://-privileged", "a container cannot start with '-'"),
    ],
)
def test_a_bad_host_is_one_bad_input_error_naming_the_part(text, words):
    with pytest.raises(LabstackError) as err:
        parse_host(text)
    assert err.value.code == ExitCode.BAD_INPUT and words in str(err.value) and text.strip() in str(err.value)


def test_a_list_keeps_its_order_and_drops_repeats_and_blanks():
    hosts = parse_hosts("ssh://b, local://,, ssh://a ,ssh://b")
    assert [h.label for h in hosts] == ["b", "local", "a"]


def test_ssh_never_prompts_and_gives_up_on_a_silent_host_within_a_minute():
    options = dict(o.split("=") for o in SSH_OPTIONS[1::2])
    assert options["BatchMode"] == "yes" and int(options["ConnectTimeout"]) <= 10
    assert int(options["ServerAliveInterval"]) * int(options["ServerAliveCountMax"]) < 60


def test_a_hosts_file_gives_one_host_a_line_without_comments_and_blank_lines(tmp_path):
    path = tmp_path / "hosts.txt"
    path.write_text("# the lab\nssh://lab@gpu1\n\n  ssh://gpu2:2222   # the old one\nlocal://\nssh://lab@gpu1\n")
    assert parse_hosts(f"@{path}") == [Host("ssh", "gpu1", "lab"), Host("ssh", "gpu2", None, 2222), Host("local")]


def test_a_hosts_file_and_hosts_on_the_command_line_mix_in_order(tmp_path):
    path = tmp_path / "hosts.txt"
    path.write_text("ssh://gpu2\nssh://gpu3\n")
    assert [h.label for h in parse_hosts(f"ssh://gpu1, @{path},ssh://gpu2")] == ["gpu1", "gpu2", "gpu3"]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("ssh://gpu1\n# fine\ngpu2\n", ["line 3", "bad host 'gpu2'", "write local://"]),
        ("ssh://gpu1\nssh://-oProxyCommand=x\n", ["line 2", "cannot start with '-'"]),
        ("ssh://gpu1, ssh://gpu2\n", ["line 1", "may hold only letters"]),
        ("# nothing yet\n\n", ["names no host"]),
        (b"\xff\xfe\x00", ["cannot read the hosts file", "not a text file"]),
    ],
)
def test_a_bad_hosts_file_is_one_bad_input_error_naming_the_file_and_line(tmp_path, content, words):
    path = tmp_path / "hosts.txt"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(LabstackError) as err:
        parse_hosts(f"@{path}")
    assert err.value.code == ExitCode.BAD_INPUT and str(path) in str(err.value), err.value
    assert all(word in str(err.value) for word in words), err.value


def test_a_missing_hosts_file_says_so(tmp_path):
    with pytest.raises(LabstackError) as err:
        parse_hosts(f"@{tmp_path / 'nope.txt'}")
    assert err.value.code == ExitCode.BAD_INPUT
    assert str(err.value) == f"cannot read the hosts file {tmp_path / 'nope.txt'}: No such file or directory"


def test_labstacks_ssh_config_is_the_file_the_variable_names_or_none(tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text("Host gpu1\n  Port 2222\n")
    assert ssh_config({SSH_CONFIG_VARIABLE: str(config)}) == str(config)
    assert ssh_config({}) is None and ssh_config({SSH_CONFIG_VARIABLE: ""}) is None
    with pytest.raises(LabstackError) as err:
        ssh_config({SSH_CONFIG_VARIABLE: str(tmp_path)})
    assert err.value.code == ExitCode.BAD_INPUT and "not a readable file" in str(err.value)


def test_a_container_that_cannot_be_reached_gets_dockers_advice_never_ssh_advice():
    from labstack.hosts import unreachable_message  # here: the other tests of this file run without it

    missing = unreachable_message(Host("docker", "lab-1"), "Error response from daemon: No such container: lab-1")
    assert missing == "no container lab-1 on this Docker: `docker ps` lists the running ones; give one of them"
    stopped = unreachable_message(Host("docker", "lab-1"), "Error response from daemon: Container abc is not running")
    assert "is not running" in stopped and "docker start lab-1" in stopped
    for message in (missing, stopped):
        assert "ssh" not in message
    host = unreachable_message(Host("ssh", "gpu1", "lab"), "Connection refused", "/etc/lab/ssh_config")
    assert host.startswith("lab@gpu1 is unreachable: Connection refused")
    assert "`ssh -F /etc/lab/ssh_config -o BatchMode=yes lab@gpu1 true`" in host
