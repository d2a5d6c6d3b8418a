"""`docker compose run train`, the notebook and `invoke up-*` for real, on the CPU images."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from labstack.build.layers import layer_ref

from .conftest import TEST_GID, TEST_UID, labstack_lines, wait_for

FRAMEWORKS = ["torch", "tensorflow"]
TARGET_ACCURACY = 0.90  # the generated patterns are learnable: a learning CNN passes this in 3 epochs


def image_env(images, framework: str) -> dict:
    return {"TRAIN_IMAGE": layer_ref(images[framework], "lab")}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_train_learns_the_generated_dataset(stack, images, framework):
    started = time.monotonic()
    result = stack.train("--epochs", "3", env=image_env(images, framework))
    wall = time.monotonic() - started
    run = stack.runs / f"mnist-{framework}"
    epochs = [m for m in stack.metrics(f"mnist-{framework}") if m["event"] == "epoch"]
    assert [m["epoch"] for m in epochs] == [1, 2, 3], result.stdout
    assert epochs[-1]["test_accuracy"] >= TARGET_ACCURACY, epochs
    assert not any(m["synthetic"] for m in epochs)
    first = next(m for m in stack.metrics(f"mnist-{framework}") if m["event"] == "first_step")
    print(f"\n{framework}: first step {first['seconds_since_process_start']} s after process start; "
          f"`docker compose run` wall {wall:.1f} s")  # fmt: skip
    record = json.loads((run / "environment.jsonl").read_text().splitlines()[-1])
    assert record["framework"] == framework and record["device"] == "cpu"
    assert record["image"] == layer_ref(images[framework], "lab") and record["manifest"]["framework"] == framework
    for path in [run, *run.iterdir()]:
        assert (path.stat().st_uid, path.stat().st_gid) == (TEST_UID, TEST_GID), path
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["metrics.jsonl", "environment.jsonl", "train.lock", f"checkpoint.{'pt' if framework == 'torch' else 'npz'}"]
    )


def test_synthetic_smoke_run_says_so_everywhere(stack, images):
    result = stack.train("--synthetic", "--epochs", "1", env=image_env(images, "torch"))
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines and all(line.startswith("[synthetic data]") for line in lines), result.stdout
    metrics = stack.metrics("synthetic-torch")
    assert metrics and all(m["synthetic"] is True for m in metrics)
    record = json.loads((stack.runs / "synthetic-torch" / "environment.jsonl").read_text())
    assert record["synthetic"] is True


def start_detached(stack, images, framework: str, *args: str) -> str:
    name = f"{stack.name}-train"
    stack.compose("run", "--detach", "--name", name, "train", *args, env=image_env(images, framework), check=True)
    return name


def container_inspect(name: str) -> dict:
    out = subprocess.run(["docker", "inspect", name], capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]


def container_state(name: str) -> dict:
    return container_inspect(name)["State"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_sigkill_loses_at_most_the_current_epoch(stack, images, framework):
    run = f"mnist-{framework}"
    name = start_detached(stack, images, framework, "--epochs", "200")
    wait_for(lambda: sum(m["event"] == "epoch" for m in stack.metrics(run)) >= 2, 180, "two epochs")
    subprocess.run(["docker", "kill", "--signal", "KILL", name], capture_output=True, check=True)
    wait_for(lambda: not container_state(name)["Running"], 30, "the container to die")
    last = max(m["epoch"] for m in stack.metrics(run) if m["event"] == "epoch")
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)

    result = stack.train("--epochs", str(last + 2), env=image_env(images, framework))
    start = [m for m in stack.metrics(run) if m["event"] == "start"][-1]
    # The checkpoint is written before its metrics line: it holds the last logged epoch or the one after.
    assert start["resumed"] and start["from_epoch"] in (last, last + 1), result.stdout
    assert start["from_sample"] == 0
    assert "resuming from checkpoint" in result.stdout
    epochs = [m for m in stack.metrics(run) if m["event"] == "epoch" and m["resumed"]]
    assert epochs and epochs[-1]["epoch"] == last + 2 and epochs[-1]["test_accuracy"] >= TARGET_ACCURACY
    assert not list((stack.runs / run).glob(".checkpoint*")), "a temp file outlived the resumed run"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_sigterm_writes_a_checkpoint_and_the_next_run_continues_there(stack, images, framework):
    run = f"mnist-{framework}"
    # Small batches: an epoch has ~190 steps, so the signal lands inside one.
    name = start_detached(stack, images, framework, "--epochs", "200", "--batch-size", "16")
    wait_for(lambda: any(m["event"] == "epoch" for m in stack.metrics(run)), 180, "the first epoch")
    subprocess.run(["docker", "stop", "--time", "60", name], capture_output=True, check=True)
    assert container_state(name)["ExitCode"] == 143
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    stop = [m for m in stack.metrics(run) if m["event"] == "stop"]
    assert len(stop) == 1 and stop[0]["signal"] == "SIGTERM", stack.metrics(run)[-3:]

    stack.train("--epochs", str(stop[0]["epoch"]), "--batch-size", "16", env=image_env(images, framework))
    start = [m for m in stack.metrics(run) if m["event"] == "start"][-1]
    assert (start["from_epoch"] + 1, start["from_sample"]) == (stop[0]["epoch"], stop[0]["sample"])
    finished = [m for m in stack.metrics(run) if m["event"] == "epoch"][-1]
    assert finished["epoch"] == stop[0]["epoch"] and finished["resumed"]


def test_a_second_trainer_on_a_running_run_is_refused_naming_the_first_container(stack, images):
    run = "synthetic-torch"
    # Many short epochs: still running when the second starts; a step line every 5 steps, duplicates would show.
    name = start_detached(stack, images, "torch", "--synthetic", "--epochs", "1000", "--log-every", "5")
    try:
        wait_for(lambda: any(m["event"] == "first_step" for m in stack.metrics(run)), 180, "the first trainer's step")
        short_id = container_inspect(name)["Id"][:12]  # a container's host name, unless the compose file sets one
        second = stack.train("--synthetic", "--epochs", "1000", check=False, env=image_env(images, "torch"))
        assert_one_line_error(second, f"run {run} is in use by PID", f"in container {short_id} (started ",
                              f"stop it (docker stop {short_id}) or give another --run")  # fmt: skip
        assert second.returncode == 2
        assert container_state(name)["Running"], "the refusal disturbed the first trainer"
        subprocess.run(["docker", "stop", "--time", "60", name], capture_output=True, check=True)
        lines = (stack.runs / run / "metrics.jsonl").read_text().splitlines()
        assert len(lines) == len(set(lines)), "duplicate lines in metrics.jsonl"
        events = [json.loads(line) for line in lines]
        assert [m["event"] for m in events].count("start") == 1, "the second trainer wrote metrics"
        steps = [(m["epoch"], m["sample"]) for m in events if m["event"] == "step"]
        assert len(steps) == len(set(steps)), "a step was logged twice"
        assert len((stack.runs / run / "environment.jsonl").read_text().splitlines()) == 1
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def assert_one_line_error(result, *words):
    assert result.returncode != 0
    lines = labstack_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("labstack: ") and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_unknown_framework_is_one_line(stack, images):
    result = stack.train("--framework", "jax", check=False)
    assert_one_line_error(result, "unknown framework jax")
    assert result.returncode == 2


def test_framework_the_image_lacks_is_one_line(stack, images):
    result = stack.train("--synthetic", check=False, env={"FRAMEWORK": "tensorflow"})
    assert_one_line_error(result, "not tensorflow", "invoke env --framework tensorflow")


def test_data_folder_without_mnist_is_one_line(stack, images, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = stack.train(check=False, env={"DATA_DIR": str(empty)})
    assert_one_line_error(result, "no MNIST in /data", "invoke data")
    assert not any(stack.runs.iterdir()), "a failed start left files in the runs folder"


def test_missing_data_folder_is_one_line_and_not_created(stack, images, tmp_path):
    missing = tmp_path / "no-such-folder"
    result = stack.train(check=False, env={"DATA_DIR": str(missing)})
    lines = labstack_lines(result.stderr)
    assert result.returncode != 0 and len(lines) == 1 and "does not exist" in lines[0], result.stderr
    assert not missing.exists()


def test_unwritable_runs_folder_is_one_line(stack, images, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o755)  # owned by the test's own user (root here), not by TEST_UID
    result = stack.train("--synthetic", check=False, env={"RUNS_DIR": str(locked)})
    assert_one_line_error(result, "not writable by uid 4321", "invoke env")
    assert result.returncode == 2 and not any(locked.iterdir())


def get(url: str, headers: dict | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_up_cpu_serves_the_notebook_with_its_token_only(stack, images):
    result = stack.invoke("up-cpu", "--framework", "torch")
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip().splitlines()[-1]
    port, token = stack.values["NOTEBOOK_PORT"], stack.values["JUPYTER_TOKEN"]
    assert url == f"http://127.0.0.1:{port}/lab?token={token}"
    assert "docker compose --project-name" in result.stdout and "up --detach --wait" in result.stdout
    base = f"http://127.0.0.1:{port}"
    assert get(f"{base}/api/status", {"Authorization": f"token {token}"}) == 200
    assert get(url) == 200
    assert get(f"{base}/api/status") == 403
    assert get(f"{base}/api/status", {"Authorization": "token not-the-token"}) == 403
    ps = json.loads(
        subprocess.run(
            ["docker", "inspect", f"{stack.name}-notebook-1"], capture_output=True, text=True, check=True
        ).stdout
    )[0]
    assert ps["State"]["Health"]["Status"] == "healthy"
    assert ps["Config"]["User"] == f"{TEST_UID}:{TEST_GID}"
    # JupyterLab's root is the lab's project folder, the /work of the train service too; the task says which.
    assert {m["Destination"]: m["Source"] for m in ps["Mounts"]}["/work"] == str(stack.project)
    assert ps["Config"]["WorkingDir"] == "/work" and f"/work is {stack.project}" in result.stderr
    bindings = ps["HostConfig"]["PortBindings"]["8888/tcp"]
    assert [b["HostIp"] for b in bindings] == ["127.0.0.1"]
    assert not ps["HostConfig"]["Privileged"] and ps["HostConfig"]["IpcMode"] != "host"
    down = stack.invoke("down")
    assert down.returncode == 0, down.stderr
    assert get_refused(base)


def get_refused(base: str) -> bool:
    try:
        get(f"{base}/api/status")
    except (urllib.error.URLError, ConnectionError):
        return True
    return False


def test_notebook_refuses_to_start_without_a_token(stack, images):
    result = stack.compose(
        "--profile", "notebook", "run", "--rm", "--no-deps", "notebook", env={"JUPYTER_TOKEN": "",
        "NOTEBOOK_IMAGE": stack.values["NOTEBOOK_IMAGE"]},
    )  # fmt: skip
    assert_one_line_error(result, "JUPYTER_TOKEN is empty")


@pytest.mark.skipif(Path("/dev/nvidiactl").exists(), reason="this host has an NVIDIA GPU")
def test_up_gpu_on_a_cpu_host_fails_cleanly_and_starts_nothing(stack, images):
    result = stack.invoke("up-gpu", "--framework", "torch")
    assert result.returncode == 5
    lines = labstack_lines(result.stderr)
    assert len(lines) == 1 and "invoke up-cpu" in lines[0] and "Traceback" not in result.stderr, result.stderr
    containers = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={stack.name}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert containers == []


def test_defaults_without_env_file_resolve_to_the_checkout_and_the_matrix(tmp_path, monkeypatch):
    """`docker compose` from the root with no .env: mounts are ./data and ./runs, images the matrix's."""
    from labstack import ROOT
    from labstack.matrix import load_matrix

    empty = tmp_path / "empty.env"
    empty.write_text("")
    for name in ("LABSTACK_REPOSITORY", "TRAIN_IMAGE", "DATA_DIR", "RUNS_DIR", "PROJECT_DIR", "TRAIN_NETWORK", "UID",
                 "GID"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PWD", str(ROOT))
    services = compose_config(empty, [ROOT / "compose.yaml"], ROOT, dict(os.environ))
    train = services["train"]
    assert {v["source"]: v["target"] for v in train["volumes"]} == {
        str(ROOT): "/work",
        str(ROOT / "data"): "/data",
        str(ROOT / "runs"): "/runs",
    }
    assert train["image"] == layer_ref(load_matrix().image("torch", "cpu"), "lab")
    assert train["user"] == "1000:1000" and train["network_mode"] == "none"
    assert services["notebook"]["ports"][0]["host_ip"] == "127.0.0.1"


def compose_config(env_file: Path, files: list[Path], cwd: Path, environ: dict) -> dict:
    """The services as `docker compose config` resolves them, run from `cwd` with exactly `environ`."""
    command = ["docker", "compose", "--env-file", str(env_file), *[w for f in files for w in ("--file", str(f))]]
    out = subprocess.run(
        [*command, "--profile", "notebook", "config", "--format", "json"],
        cwd=cwd, capture_output=True, text=True, check=True, env=environ,
    ).stdout  # fmt: skip
    return json.loads(out)["services"]


def work_mount(service: dict) -> dict:
    return next(v for v in service["volumes"] if v["target"] == "/work")


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "gpu-overlay"])
def test_project_folder_is_the_configured_one_else_where_compose_runs(tmp_path, gpu):
    from labstack import ROOT

    files = [ROOT / "compose.yaml"] + ([ROOT / "compose" / "compose.gpu.yaml"] if gpu else [])
    here, configured = tmp_path / "here", tmp_path / "configured"
    here.mkdir()
    env_file = tmp_path / "test.env"
    environ = {k: v for k, v in os.environ.items() if k not in ("PWD", "PROJECT_DIR")}

    def sources(env_text: str, **extra: str) -> set[str]:
        env_file.write_text(env_text)
        services = compose_config(env_file, files, here, environ | extra)
        for name in ("train", "notebook"):
            assert services[name]["working_dir"] == "/work"
            assert work_mount(services[name])["bind"].get("create_host_path") is not True
        return {work_mount(services[name])["source"] for name in ("train", "notebook")}

    assert sources("", PWD=str(here)) == {str(here)}
    assert sources(f"PROJECT_DIR={configured}\n", PWD=str(here)) == {str(configured)}
    assert sources(f"PROJECT_DIR={configured}\n", PWD=str(here), PROJECT_DIR=str(here)) == {str(here)}
    assert sources("") == {str(ROOT)}, "PWD unset: the checkout"


# The lab's own code: the project folder at /work, any command, SIGTERM, the network switch.

MY_TRAIN = """\
import json, os, pathlib, sys
out = pathlib.Path("out")
out.mkdir(exist_ok=True)
(out / "result.json").write_text(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "uid": os.getuid()}))
print("my_train done")
"""


def test_own_script_runs_in_the_folder_compose_runs_from_and_writes_as_the_user(stack, images):
    (stack.project / "my_train.py").write_text(MY_TRAIN)
    # No PROJECT_DIR: the folder `docker compose` runs from (PWD) is the project, as in a lab's own checkout.
    result = stack.train("python", "my_train.py", "--epochs", "3", cwd=stack.project, env={"PROJECT_DIR": ""})
    assert "my_train done" in result.stdout, result.stderr
    written = stack.project / "out" / "result.json"
    assert json.loads(written.read_text()) == {"argv": ["--epochs", "3"], "cwd": "/work", "uid": TEST_UID}
    for path in (written.parent, written):
        assert (path.stat().st_uid, path.stat().st_gid) == (TEST_UID, TEST_GID), path


def test_the_configured_project_folder_wins_over_the_current_one(stack, images, tmp_path):
    (stack.project / "my_train.py").write_text(MY_TRAIN)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    stack.train("python", "my_train.py", cwd=elsewhere)
    assert (stack.project / "out" / "result.json").is_file() and not any(elsewhere.iterdir())


def test_no_arguments_still_run_the_built_in_trainer(stack, images):
    result = stack.train()
    epochs = [m for m in stack.metrics("mnist-torch") if m["event"] == "epoch"]
    assert [m["epoch"] for m in epochs] == [1, 2, 3], result.stdout


@pytest.mark.parametrize(
    ("command", "code", "words"),
    [
        (["no-such-command"], 127, "no-such-command: no such command in the image"),
        (["my_train.py", "--epochs", "3"], 127, "my_train.py is a file in /work, not a command: run it"),
        (["./missing.sh"], 127, "./missing.sh: no such file"),
    ],
    ids=["unknown", "script-without-interpreter", "missing-file"],
)
def test_a_command_that_cannot_start_is_one_line(stack, images, command, code, words):
    (stack.project / "my_train.py").write_text(MY_TRAIN)
    result = stack.train(*command, check=False)
    assert_one_line_error(result, words)
    assert result.returncode == code and "tini" not in result.stderr


def test_missing_project_folder_is_one_line_and_not_created(stack, images, tmp_path):
    missing = tmp_path / "no-such-project"
    result = stack.train("python", "my_train.py", check=False, env={"PROJECT_DIR": str(missing)})
    lines = labstack_lines(result.stderr)
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert f"bind source path does not exist: {missing}" in lines[0]
    assert not missing.exists()


CHECKPOINT_ON_SIGTERM = """\
import pathlib, signal, sys, time

step = 0

def checkpoint(signum, frame):
    time.sleep(1)  # a real checkpoint takes a while: well inside the grace period
    tmp = pathlib.Path("checkpoint.tmp")
    tmp.write_text(f"step {step}")
    tmp.replace("checkpoint.txt")
    sys.exit(128 + signum)

signal.signal(signal.SIGTERM, checkpoint)
pathlib.Path("started").touch()
while True:
    step += 1
    time.sleep(0.01)
"""
GRACE_S = 30


@pytest.mark.parametrize("how", ["docker stop", "docker compose down --remove-orphans"])
def test_sigterm_reaches_the_lab_script_which_checkpoints_within_the_grace_period(stack, images, how):
    (stack.project / "trap.py").write_text(CHECKPOINT_ON_SIGTERM)
    name = f"{stack.name}-own"
    env = {"STOP_GRACE_PERIOD": f"{GRACE_S}s"}
    stack.compose("run", "--detach", "--name", name, "train", "python", "trap.py", env=env, check=True)
    wait_for(lambda: (stack.project / "started").exists(), 60, "the script to start")
    assert container_state(name)["Running"]
    inspect = json.loads(subprocess.run(["docker", "inspect", name], capture_output=True, check=True).stdout)[0]
    assert inspect["Config"]["StopTimeout"] == GRACE_S  # so a signal that never arrived would cost GRACE_S
    started = time.monotonic()
    if how == "docker stop":
        subprocess.run(["docker", "stop", name], capture_output=True, check=True, timeout=GRACE_S + 30)
    else:
        stack.compose("down", "--remove-orphans", check=True, timeout=GRACE_S + 30)
    seconds = time.monotonic() - started
    checkpoint = stack.project / "checkpoint.txt"
    assert checkpoint.is_file(), f"no checkpoint after {seconds:.1f} s: the script did not get SIGTERM"
    assert checkpoint.read_text().startswith("step ") and checkpoint.stat().st_uid == TEST_UID
    assert 1 <= seconds < GRACE_S / 2, f"stopped after {seconds:.1f} s, not soon after the 1 s checkpoint"
    if how == "docker stop":
        assert container_state(name)["ExitCode"] == 143
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def interfaces(stack, env: dict) -> list[str]:
    command = ["python", "-c", "import os; print(' '.join(sorted(os.listdir('/sys/class/net'))))"]
    return stack.train(*command, env=env).stdout.split()


def test_train_has_no_network_unless_turned_on(stack, images, monkeypatch):
    monkeypatch.delenv("TRAIN_NETWORK", raising=False)
    assert interfaces(stack, {}) == ["lo"]
    with_network = interfaces(stack, {"TRAIN_NETWORK": "bridge"})
    assert "lo" in with_network and len(with_network) > 1, with_network


def notebook_containers(stack) -> list[str]:
    return subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={stack.name}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip


def test_up_cpu_on_a_port_a_program_holds_says_so_and_starts_nothing(stack, images):
    port = int(stack.values["NOTEBOOK_PORT"])
    with socket.socket() as program:
        program.bind(("127.0.0.1", port))
        program.listen()
        result = stack.invoke("up-cpu", "--framework", "torch")
    assert_one_line_error(
        result, f"127.0.0.1:{port}", "taken by another program (", f"PID {os.getpid()})", "NOTEBOOK_PORT", "invoke env"
    )
    assert result.returncode == 1 and notebook_containers(stack) == []


def test_up_cpu_on_a_port_another_container_publishes_names_that_container(stack, images, os_image):
    port = stack.values["NOTEBOOK_PORT"]
    other = f"{stack.name}-other"
    subprocess.run(
        ["docker", "run", "--detach", "--name", other, "--publish", f"127.0.0.1:{port}:9", "--entrypoint", "sleep",
         os_image, "300"], capture_output=True, text=True, check=True,
    )  # fmt: skip
    try:
        result = stack.invoke("up-cpu", "--framework", "torch")
    finally:
        subprocess.run(["docker", "rm", "--force", other], capture_output=True, check=False)
    assert_one_line_error(result, f"127.0.0.1:{port}", f"taken by the container {other}", "NOTEBOOK_PORT")
    assert result.returncode == 1 and notebook_containers(stack) == []


def test_up_cpu_with_a_short_token_says_so_and_names_the_fix(stack, images):
    stack.env_file.write_text(stack.env_file.read_text().replace(stack.values["JUPYTER_TOKEN"], "short"))
    result = stack.invoke("up-cpu", "--framework", "torch")
    assert_one_line_error(result, "JUPYTER_TOKEN", "5 characters", "16", "invoke env --new-token")
    assert result.returncode == 2 and notebook_containers(stack) == []
