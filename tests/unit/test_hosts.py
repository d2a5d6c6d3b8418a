"""Hosts are checked part by part before anything runs: nothing a user types becomes an ssh option or shell."""

from __future__ import annotations

import pytest

from labstack.errors import ExitCode, LabstackError
from labstack.hosts import SSH_OPTIONS, Host, parse_host, parse_hosts


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
        ("ssh://lab@", "no host name"),
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
