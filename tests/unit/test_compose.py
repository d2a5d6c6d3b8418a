"""Compose files, .env and the compose command lines: pure logic, no Docker."""

from __future__ import annotations

import os
import re
import socket
import stat
from pathlib import Path

import pytest

from labstack import ROOT
from labstack.build.layers import layer_ref
from labstack.compose.data import data_helper
from labstack.compose.env import (
    default_project,
    env_values,
    folder_project,
    parse_env,
    project_dir,
    read_env,
    write_env,
)
from labstack.compose.project import (
    COMPOSE_FILE,
    GPU_FILE,
    Project,
    notebook_url,
    project_folder,
    project_from_env,
    shared_name_note,
    shell_line,
)
from labstack.errors import LabstackError
from labstack.matrix import load_matrix
from tests.invoking import assert_one_line_failure, checkout_copy, invoke_in_copy, run_invoke

MATRIX = load_matrix()
COMPOSE_TEXT = COMPOSE_FILE.read_text()
GPU_TEXT = GPU_FILE.read_text()


def defaults(text: str, variable: str) -> set[str]:
    return set(re.findall(r"\$\{" + variable + r":-([^}]*)\}", text))


@pytest.fixture
def default_repository(monkeypatch):
    monkeypatch.delenv("LABSTACK_REPOSITORY", raising=False)


def test_compose_image_defaults_follow_the_matrix(default_repository):
    torch_cpu = MATRIX.image("torch", "cpu")
    assert defaults(COMPOSE_TEXT, "TRAIN_IMAGE") == {layer_ref(torch_cpu, "lab")} == {torch_cpu.ref + "-lab"}
    assert defaults(COMPOSE_TEXT, "NOTEBOOK_IMAGE") == {layer_ref(torch_cpu, "notebook")}
    assert layer_ref(MATRIX.image("torch", "cuda"), "lab") in GPU_TEXT


def test_compose_user_defaults_are_the_image_user():
    assert f'"${{UID:-{MATRIX.uid}}}:${{GID:-{MATRIX.gid}}}"' in COMPOSE_TEXT


@pytest.mark.parametrize("text", [COMPOSE_TEXT, GPU_TEXT], ids=["compose.yaml", "compose.gpu.yaml"])
def test_every_variable_has_a_default(text):
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    bare = re.findall(r"\$\{(\w+)\}", code) + re.findall(r"\$(?!\{|\$)(\w+)", code)
    assert bare == []


def test_no_unsafe_defaults():
    code = "\n".join(line.split("#", 1)[0] for line in COMPOSE_TEXT.splitlines() + GPU_TEXT.splitlines())
    assert "ipc:" not in code and "privileged" not in code and "network_mode: host" not in code
    assert "shm_size: ${SHM_SIZE:-" in code
    assert '"${NOTEBOOK_BIND:-127.0.0.1}:' in code


def test_train_has_no_network_unless_the_lab_turns_it_on():
    code = "\n".join(line.split("#", 1)[0] for line in COMPOSE_TEXT.splitlines() + GPU_TEXT.splitlines())
    assert re.findall(r"network_mode: .*", code) == ["network_mode: ${TRAIN_NETWORK:-none}"]


def test_the_project_folder_is_never_created_by_docker():
    code = "\n".join(line.split("#", 1)[0] for line in COMPOSE_TEXT.splitlines())
    project = code[code.index("x-project:") : code.index("services:")]
    assert "source: ${PROJECT_DIR:-${PWD:-..}}" in project and "target: /work" in project
    assert "create_host_path: false" in project
    assert "NOTEBOOK_DIR" not in code


def test_gpu_overlay_holds_only_the_reservation_and_nvidia_settings():
    code = "\n".join(line.split("#", 1)[0] for line in GPU_TEXT.splitlines())
    keys = set(re.findall(r"^\s*([a-z_]+):", code, re.M))
    assert keys <= {"x", "gpu", "deploy", "resources", "reservations", "devices", "driver", "count", "capabilities",
                    "environment", "services", "train", "notebook"}  # fmt: skip
    assert "NVIDIA_VISIBLE_DEVICES" in code and "driver: nvidia" in code


def test_root_compose_file_includes_the_services():
    assert "include:\n  - compose/compose.yaml" in (ROOT / "compose.yaml").read_text()


def test_env_values_come_from_the_matrix(default_repository, tmp_path):
    values = env_values(MATRIX, "tensorflow", uid=1234, gid=99, root=tmp_path / "My Lab", token="t" * 48)
    image = MATRIX.image("tensorflow", "cpu")
    assert values["TRAIN_IMAGE"] == image.ref + "-lab" == "labstack/tensorflow:" + image.tag + "-lab"
    assert values["NOTEBOOK_IMAGE"] == image.ref + "-notebook"
    assert (values["UID"], values["GID"], values["JUPYTER_TOKEN"]) == ("1234", "99", "t" * 48)
    assert values["RUNS_DIR"] == str(tmp_path / "My Lab" / "runs")
    assert values["COMPOSE_PROJECT_NAME"] == default_project(tmp_path / "My Lab")


def test_env_values_name_the_project_folder_only_when_the_lab_set_one(tmp_path):
    assert "PROJECT_DIR" not in env_values(MATRIX, "torch", uid=1, gid=1, root=tmp_path)
    values = env_values(MATRIX, "torch", uid=1, gid=1, root=tmp_path, project=tmp_path / "code")
    assert values["PROJECT_DIR"] == str(tmp_path / "code")
    assert "NOTEBOOK_DIR" not in values, "the notebook opens the project folder"


def test_the_project_setting_becomes_an_absolute_existing_folder(tmp_path, monkeypatch):
    (tmp_path / "code").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path))
    assert project_dir("", tmp_path) is None
    assert project_dir("code", tmp_path / "checkout" / "..") == tmp_path / "code"
    assert project_dir("~/code", ROOT) == project_dir(str(tmp_path / "code")) == tmp_path / "code"
    with pytest.raises(LabstackError) as err:
        project_dir("missing", tmp_path)
    assert err.value.code == 2 and f"names {tmp_path / 'missing'}, which is not a folder" in str(err.value)


@pytest.mark.parametrize(
    ("values", "environ", "expected"),
    [
        ({}, {"PWD": "/lab/code"}, "/lab/code"),
        ({"PROJECT_DIR": "/lab/other"}, {"PWD": "/lab/code"}, "/lab/other"),
        ({"PROJECT_DIR": "/lab/other"}, {"PWD": "/lab/code", "PROJECT_DIR": "/lab/mine"}, "/lab/mine"),
        ({"PROJECT_DIR": "/lab/other"}, {"PWD": "/lab/code", "PROJECT_DIR": ""}, "/lab/code"),
        ({}, {}, str(ROOT)),
        ({"PROJECT_DIR": "code"}, {}, str(ROOT / "compose" / "code")),
    ],
    ids=["pwd", "env-file", "variable-beats-env-file", "empty-variable", "nothing-set", "relative-to-compose"],
)
def test_project_folder_is_what_compose_mounts(values, environ, expected):
    assert project_folder(values, environ) == Path(expected)


def test_env_values_follow_labstack_repository(monkeypatch):
    monkeypatch.setenv("LABSTACK_REPOSITORY", "registry.example/lab")
    assert env_values(MATRIX, "torch", uid=1, gid=1)["TRAIN_IMAGE"].startswith("registry.example/lab/torch:")


def test_new_tokens_are_random_and_long():
    tokens = {env_values(MATRIX, "torch", uid=1, gid=1)["JUPYTER_TOKEN"] for _ in range(3)}
    assert len(tokens) == 3 and all(len(t) >= 32 for t in tokens)


def test_env_file_round_trips_and_is_private(tmp_path):
    values = env_values(MATRIX, "torch", uid=1000, gid=1000, root=tmp_path)
    path = write_env(tmp_path / ".env", values)
    assert read_env(path) == values
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_parse_env_skips_comments_and_strips_quotes():
    assert parse_env("# c\n\nA=1\nB='two words'\nC=\"x\"\nnot a line\n") == {"A": "1", "B": "two words", "C": "x"}


@pytest.mark.parametrize("name", ["jax", "all", "torch,tensorflow", ""])
def test_one_framework_refuses_anything_but_one_name(name):
    with pytest.raises(LabstackError) as err:
        MATRIX.one_framework(name)
    assert err.value.code == 2 and str(err.value).endswith("choose from torch, tensorflow")


def test_compose_command_cpu_and_gpu(tmp_path):
    env = tmp_path / ".env"
    env.write_text("A=1\n")
    cpu = Project("lab", env).command("up", "-d")
    assert cpu == ["docker", "compose", "--project-name", "lab", "--env-file", str(env), "--file", str(COMPOSE_FILE),
                   "--profile", "notebook", "up", "-d"]  # fmt: skip
    gpu = Project("lab", env, gpu=True).command("up")
    assert gpu[gpu.index(str(COMPOSE_FILE)) + 1 : gpu.index(str(COMPOSE_FILE)) + 3] == ["--file", str(GPU_FILE)]
    assert "--env-file" not in Project("lab", tmp_path / "missing.env").command("down")


def test_shell_line_is_what_you_type_from_the_root():
    line = shell_line(Project("lab", ROOT / "no.env", gpu=True).command("up"), {"NOTEBOOK_IMAGE": "a b"})
    assert line == (
        "NOTEBOOK_IMAGE='a b' docker compose --project-name lab --file compose/compose.yaml "
        "--file compose/compose.gpu.yaml --profile notebook up"
    )


def test_notebook_url():
    values = {"NOTEBOOK_BIND": "0.0.0.0", "NOTEBOOK_PORT": "9999", "JUPYTER_TOKEN": "abc"}
    assert notebook_url(values) == "http://127.0.0.1:9999/lab?token=abc"
    assert notebook_url({"JUPYTER_TOKEN": "abc"}) == "http://127.0.0.1:8888/lab?token=abc"


COMPOSE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")  # what Compose accepts as a project name


def test_folder_project_is_the_name_compose_itself_gives(tmp_path):
    assert folder_project(tmp_path / "wt-compose") == "wt-compose"
    assert folder_project(tmp_path / "My.Lab_1") == "mylab_1"
    assert folder_project(tmp_path / "...") == "labstack"


def test_checkouts_in_folders_of_the_same_name_get_their_own_projects(tmp_path):
    a, b = tmp_path / "a" / "labstack", tmp_path / "b" / "labstack"
    assert default_project(a) != default_project(b)
    for root in (a, b, tmp_path / "My.Lab_1", tmp_path / "-_x", tmp_path / "..."):
        name = default_project(root)
        assert COMPOSE_NAME.fullmatch(name), name
        assert name.startswith(folder_project(root) + "-"), "the folder's name stays readable in `docker ps`"


def test_the_project_name_is_stable_and_names_the_resolved_path(tmp_path):
    # A fixed value: the name must not change between runs or Python versions (no salted hash()).
    assert default_project(Path("/srv/a/labstack")) == "labstack-5dcb3d91"
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert default_project(tmp_path / "link" / ".." / "real") == default_project(tmp_path / "real")


def test_project_name_from_the_flag_else_env_else_the_checkout(tmp_path):
    env = tmp_path / ".env"
    assert project_from_env(env, None, tmp_path) == default_project(tmp_path)
    env.write_text("COMPOSE_PROJECT_NAME=mine\n")
    assert project_from_env(env, None, tmp_path) == "mine"
    assert project_from_env(env, "flag", tmp_path) == "flag"


def test_a_env_naming_the_project_after_the_folder_alone_gets_a_note(tmp_path):
    root = tmp_path / "labstack"
    env = tmp_path / ".env"
    assert shared_name_note(env, None, root) is None, "no .env: the checkout's own name"
    env.write_text("COMPOSE_PROJECT_NAME=labstack\n")  # as `invoke env` wrote it before
    note = shared_name_note(env, None, root)
    assert note and "another folder named labstack" in note and default_project(root) in note
    assert shared_name_note(env, "labstack", root) is None, "--project is deliberate"
    env.write_text(f"COMPOSE_PROJECT_NAME={default_project(root)}\n")
    assert shared_name_note(env, None, root) is None


def test_data_helper_takes_one_action(tmp_path):
    with pytest.raises(LabstackError) as err:
        data_helper(str(tmp_path), generate=True, verify=True)
    assert err.value.code == 2


def test_data_helper_generates_then_verifies(tmp_path, capsys):
    data_helper(str(tmp_path), generate=True)
    data_helper(str(tmp_path), verify=True)
    assert "SHA256SUMS" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("action", "below", "words"),
    [("--generate", "", ["is a file, not a folder"]), ("--verify", "sub", ["cannot be made", "is a file"])],
    ids=["the-folder", "a-folder-above"],
)
def test_data_folder_that_is_a_file_is_one_line(tmp_path, action, below, words):
    named = tmp_path / "mnist.gz"
    named.write_bytes(b"\x1f\x8b not a folder")
    folder = named / below if below else named
    result = run_invoke("data", action, "--folder", str(folder), env={"DOCKER_HOST": "unix:///nonexistent/x"})
    assert_one_line_failure(result, 2, f"--folder {folder}", *words, "give a folder")
    assert named.read_bytes() == b"\x1f\x8b not a folder"


@pytest.mark.parametrize(
    ("line", "task", "words"),
    [
        (b"NOTEBOOK_PORT=abc\n", ["env", "--framework", "torch"], ["NOTEBOOK_PORT is 'abc', not a port", "8888"]),
        (b"NOTEBOOK_PORT=99999\n", ["up-cpu", "--framework", "torch"], ["NOTEBOOK_PORT is '99999'"]),
        (b"NOTEBOOK_PORT=\xff\xfe\x00junk\n", ["env", "--framework", "torch"], ["line 2 (NOTEBOOK_PORT) is not text"]),
        (b"\x00\x01\xff\n", ["data", "--verify"], ["line 2 is not text", "fix or delete that line"]),
    ],
    ids=["port-abc-env", "port-too-big-up-cpu", "binary-port-env", "binary-line-data"],
)
def test_a_broken_env_file_is_one_line_naming_it_before_docker_is_asked(tmp_path, monkeypatch, line, task, words):
    copy = checkout_copy(tmp_path / "checkout")
    (copy / ".env").write_bytes(b"UID=1000\n" + line)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    result = invoke_in_copy(copy, "labstack-test", *task)
    assert_one_line_failure(result, 2, f"{copy / '.env'}", *words)


def test_a_short_token_is_refused_before_the_notebook_starts_naming_the_minimum_and_the_fix(tmp_path):
    from labstack.compose.project import check_token  # here: the other tests of this file run without it

    env_file = tmp_path / "test.env"
    with pytest.raises(LabstackError) as err:
        check_token({"JUPYTER_TOKEN": "abc"}, env_file, environ={})
    assert err.value.code == 2
    assert str(err.value).startswith(f"JUPYTER_TOKEN in {env_file} is 3 characters, the notebook needs 16 or more")
    assert "invoke env --new-token" in str(err.value)
    with pytest.raises(LabstackError, match=r"in your environment is 5 characters.*unset it"):
        check_token({"JUPYTER_TOKEN": "a" * 48}, env_file, environ={"JUPYTER_TOKEN": "short"})
    check_token({"JUPYTER_TOKEN": "a" * 16}, env_file, environ={})


class FakeDocker:
    """`client.api.containers()` as the Docker SDK gives it: running containers with their published ports."""

    def __init__(self, *containers: dict) -> None:
        self.api = self
        self.listed = list(containers)

    def containers(self) -> list[dict]:
        return self.listed


def published(name: str, port: int, ip: str = "127.0.0.1", project: str = "", service: str = "") -> dict:
    labels = {"com.docker.compose.project": project, "com.docker.compose.service": service} if project else {}
    ports = [{"IP": ip, "PrivatePort": 8888, "PublicPort": port, "Type": "tcp"}]
    return {"Id": "f" * 64, "Names": [f"/{name}"], "Labels": labels, "Ports": ports}


def test_the_port_holder_is_the_container_that_publishes_it_but_never_this_projects_notebook():
    from labstack.compose.project import port_holder  # here: the same

    other = published("someone-notebook-1", 8888, ip="0.0.0.0")
    assert port_holder(FakeDocker(other), "127.0.0.1", 8888, "mine", local=False) == "the container someone-notebook-1"
    assert port_holder(FakeDocker(other), "127.0.0.1", 8889, "mine", local=False) is None
    assert port_holder(FakeDocker(published("x", 8888, ip="127.0.0.2")), "127.0.0.1", 8888, "mine", False) is None
    own = published("mine-notebook-1", 8888, project="mine", service="notebook")
    assert port_holder(FakeDocker(own), "127.0.0.1", 8888, "mine", local=True) is None


def test_a_port_a_program_listens_on_is_taken_by_another_program_when_the_daemon_is_here():
    from labstack.compose.project import port_holder  # here: the same

    with socket.socket() as program:
        program.bind(("127.0.0.1", 0))
        program.listen()
        port = program.getsockname()[1]
        held = port_holder(FakeDocker(), "127.0.0.1", port, "mine", local=True)
        assert held == f"another program ({Path('/proc/self/comm').read_text().strip()}, PID {os.getpid()})"
        assert port_holder(FakeDocker(), "127.0.0.1", port, "mine", local=False) is None
    assert port_holder(FakeDocker(), "127.0.0.1", port, "mine", local=True) is None
