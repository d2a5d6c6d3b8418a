"""The registry as a user names it (HOST:PORT, strictly), where an image lands there, and what push picks."""

from __future__ import annotations

import pytest

from labstack.deploy import registry
from labstack.deploy.push import chosen_refs
from labstack.deploy.registry import LocalRegistry, parse_registry, pinned_ref, registry_config, registry_ref
from labstack.errors import BadInput, ExitCode, LabstackError
from labstack.matrix import load_matrix


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5000", "127.0.0.1:5000"),
        ("localhost:5000", "localhost:5000"),
        ("registry.lab.example:443", "registry.lab.example:443"),
        ("gpu-1:1", "gpu-1:1"),
        ("Lab1:65535", "Lab1:65535"),
        ("10.0.0.7:05000", "10.0.0.7:5000"),
    ],
)
def test_a_registry_is_host_and_port(text, expected):
    assert parse_registry(text) == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "empty"),
        ("http://127.0.0.1:5000", "scheme"),
        ("https://lab:443", "scheme"),
        ("127.0.0.1:5000/labstack", "path"),
        ("lab:5000/", "path"),
        ("user@lab:5000", "path"),
        ("lab :5000", "spaces"),
        (" lab:5000", "spaces"),
        ("lab:5000\n", "spaces"),
        ("-lab:5000", "starts with '-'"),
        ("--help", "starts with '-'"),
        ("127.0.0.1", "no port"),
        ("lab:", "no port"),
        ("lab:0", "1 to 65535"),
        ("lab:65536", "1 to 65535"),
        ("lab:http", "1 to 65535"),
        ("lab:-1", "1 to 65535"),
        ("lab:\uff15\uff10\uff10\uff10", "1 to 65535"),  # fullwidth digits: isdigit() says yes
        ("[::1]:5000", "IPv6"),
        ("::1:5000", "IPv6"),
        (":5000", "not a host name"),
        ("lab_1:5000", "not a host name"),
        ("lab-.example:5000", "not a host name"),
        ("lab..example:5000", "not a host name"),
    ],
)
def test_anything_but_host_and_port_is_one_line_naming_what_is_wrong(text, words):
    with pytest.raises(BadInput) as caught:
        parse_registry(text)
    message = str(caught.value)
    assert caught.value.code == ExitCode.BAD_INPUT
    assert words in message and "\n" not in message


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("labstack/torch:2.13.0-cpu", "127.0.0.1:5000/labstack/torch:2.13.0-cpu"),
        ("labstack/torch:2.13.0-cpu-lab", "127.0.0.1:5000/labstack/torch:2.13.0-cpu-lab"),
        ("lab/team/torch:1", "127.0.0.1:5000/lab/team/torch:1"),
        ("busybox", "127.0.0.1:5000/busybox:latest"),
        ("other.example:5000/labstack/torch:2.13.0-cpu", "127.0.0.1:5000/labstack/torch:2.13.0-cpu"),
        ("localhost/labstack/torch:1", "127.0.0.1:5000/labstack/torch:1"),
    ],
)
def test_an_image_keeps_its_repository_path_and_tag_in_the_registry(ref, expected):
    assert registry_ref(ref, "127.0.0.1:5000") == expected


def test_a_ref_pinned_by_digest_is_not_pushed():
    with pytest.raises(BadInput, match="pinned by digest"):
        registry_ref("labstack/torch@sha256:" + "0" * 64, "127.0.0.1:5000")


def test_the_pinned_ref_is_the_repository_at_the_digest():
    digest = "sha256:" + "a" * 64
    assert pinned_ref("127.0.0.1:5000/labstack/torch:2.13.0-cpu", digest) == f"127.0.0.1:5000/labstack/torch@{digest}"


def test_the_config_listens_on_loopback_only_without_deletes_or_health_checks(tmp_path):
    config = registry_config(tmp_path / "store", 41234)
    assert 'addr: "127.0.0.1:41234"' in config
    assert f'rootdirectory: "{tmp_path / "store"}"' in config
    assert "delete:\n    enabled: false" in config
    assert "health:\n  storagedriver:\n    enabled: false" in config
    assert "auth" not in config


def test_a_missing_registry_binary_names_the_bootstrap(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "REGISTRY_BINARY", tmp_path / "docker-registry")
    with pytest.raises(LabstackError, match=r"docker-registry is missing: run scripts/bootstrap.sh --full"):
        LocalRegistry(tmp_path / "store").__enter__()
    assert not (tmp_path / "store").exists()


def test_push_takes_every_image_at_the_layer_by_default():
    matrix = load_matrix()
    chosen = chosen_refs(matrix, None, "lab")
    assert [ref for _, _, ref in chosen] == [f"{i.ref}-lab" for i in matrix.images]


def test_a_name_takes_the_layer_and_a_ref_keeps_its_own():
    matrix = load_matrix()
    torch_cpu = matrix.image("torch", "cpu")
    chosen = chosen_refs(matrix, f"torch-cpu, {torch_cpu.ref}, {torch_cpu.ref}-notebook, torch-cpu", "lab")
    assert [(layer, ref) for _, layer, ref in chosen] == [
        ("lab", f"{torch_cpu.ref}-lab"),
        ("framework", torch_cpu.ref),
        ("notebook", f"{torch_cpu.ref}-notebook"),
    ]


def test_an_unknown_image_name_is_the_matrix_choosers_error():
    with pytest.raises(BadInput, match="unknown image jax: choose from"):
        chosen_refs(load_matrix(), "jax", "lab")
