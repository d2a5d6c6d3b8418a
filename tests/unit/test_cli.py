"""The tasks as a user types them: bad input gives one line and a non-zero exit, never a traceback."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import docker.errors
import pytest

from labstack import ROOT
from labstack.build.lock import read_lock
from labstack.matrix import load_matrix
from tests.invoking import checkout_copy, invoke_in_copy

INVOKE = [sys.executable, "-m", "invoke"]


def run_invoke(*args, env=None):
    return subprocess.run(
        [*INVOKE, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


def assert_one_line_failure(result, code, *words):
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0]


def test_invoke_list_shows_every_task_with_a_description():
    listing = run_invoke("--list").stdout
    for name in ("build", "lock", "base", "wheels", "validate", "test"):
        line = next(line for line in listing.splitlines() if line.strip().startswith(name + " "))
        assert len(line.split()) > 1


@pytest.mark.parametrize(("args", "word"), [(["--framework", "jax"], "framework"), (["--variant", "rocm"], "variant")])
def test_unknown_framework_or_variant(args, word):
    assert_one_line_failure(run_invoke("build", *args), 2, f"unknown {word}", "choose from")


def test_no_docker_daemon():
    result = run_invoke("build", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert_one_line_failure(
        result, 3, "cannot reach the Docker daemon at DOCKER_HOST=unix:///nonexistent/docker.sock: no such socket",
        "fix or unset DOCKER_HOST",
    )  # fmt: skip


def test_a_docker_host_socket_nothing_listens_on_is_named_as_refusing(tmp_path):
    path = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX) as closed:
        closed.bind(str(path))  # the file stays; nothing listens on it
    result = run_invoke("build", env={"DOCKER_HOST": f"unix://{path}"})
    assert_one_line_failure(
        result, 3, f"cannot reach the Docker daemon at DOCKER_HOST=unix://{path}: connection refused",
        "fix or unset DOCKER_HOST",
    )  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_a_socket_without_permission_names_the_docker_group(tmp_path):
    """A real listening socket the caller may not open: root without CAP_DAC_OVERRIDE, as a user outside the docker
    group is on /var/run/docker.sock."""
    path = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX) as daemon:
        daemon.bind(str(path))
        daemon.listen()
        path.chmod(0)
        result = subprocess.run(
            ["setpriv", "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-m", "invoke", "build"],
            cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "DOCKER_HOST": f"unix://{path}"},
        )  # fmt: skip
    assert_one_line_failure(result, 3, f"permission denied on the socket {path}", "docker group", "sudo")


def test_the_default_socket_missing_means_docker_is_not_running():
    from labstack.engine import daemon_problem  # here: the other tests of this file run without it

    err = docker.errors.DockerException(
        "Error while fetching server API version: ('Connection aborted.', FileNotFoundError(2, 'No such file or "
        "directory'))"
    )
    problem = daemon_problem(err, environ={})
    assert problem.startswith("cannot reach the Docker daemon at /var/run/docker.sock: no such socket")
    assert "Docker is not running" in problem and "sudo scripts/install-docker.sh" in problem


def test_tampered_wheelhouse_is_refused_before_any_download(tmp_path):
    matrix = load_matrix()
    image = matrix.image("torch", "cpu")
    pin = next(p for p in read_lock(image, matrix) if p.name == "filelock")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / f"filelock-{pin.version}-py3-none-any.whl").write_bytes(b"not the wheel you locked")
    result = run_invoke("wheels", "--framework", "torch", "--variant", "cpu", env={"LABSTACK_CACHE": str(tmp_path)})
    assert_one_line_failure(result, 1, "does not match the hash", "filelock")


@pytest.mark.parametrize("below", ["", "sub"], ids=["the-folder", "a-folder-above"])
def test_a_cache_folder_that_is_a_file_is_one_line_naming_it(tmp_path, below):
    cache = tmp_path / "cache-file"
    cache.write_text("not a folder")
    result = run_invoke(
        "wheels", "--framework", "torch", "--variant", "cpu",
        env={"LABSTACK_CACHE": str(cache / below) if below else str(cache), "DOCKER_HOST": "unix:///nonexistent/x"},
    )  # fmt: skip
    assert_one_line_failure(result, 2, "the cache folder", str(cache), "is a file, not a folder", "set LABSTACK_CACHE")


def test_pinned_base_is_required_for_pulled_images():
    result = run_invoke("base", "--from-image", "debian:bookworm-slim")
    assert_one_line_failure(result, 2, "not pinned", "@sha256")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--gpu", "maybe"], ["unknown --gpu", "auto, require, skip"]),
        (["--hosts", "gpu1", "--image", "none"], ["bad host", "ssh://"]),
        (["--image", "jax-cpu"], ["unknown image", "torch-cpu"]),
        (["--image", "none", "--hosts", "none"], ["nothing to validate"]),
        (["--jobs", "x"], ["--jobs 'x' is not a whole number"]),
        (["--jobs", "-1"], ["--jobs -1 is too small: 0 or more"]),
    ],
)
def test_validate_bad_input(args, words):
    assert_one_line_failure(run_invoke("validate", *args), 2, *words)


@pytest.mark.parametrize(
    ("args", "words"),
    [(["--repeat", "x"], ["--repeat 'x' is not a whole number"]), (["--repeat", "0"], ["--repeat 0 is too small"])],
)
def test_benchmark_counts_are_one_line_not_a_traceback(args, words):
    """invoke's own int() on an int-typed option printed a ValueError traceback: options are text, parsed here."""
    assert_one_line_failure(run_invoke("benchmark", *args), 2, *words)


def test_validate_reads_hosts_from_a_file_and_a_bad_line_is_one_line_naming_it(tmp_path):
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("# lab\nlocal://\nssh://gpu1;reboot\n")
    result = run_invoke("validate", "--image", "none", "--hosts", f"@{hosts}")
    assert_one_line_failure(result, 2, f"{hosts} line 3", "bad host 'ssh://gpu1;reboot'")
    result = run_invoke("validate", "--image", "none", "--hosts", f"@{tmp_path / 'missing.txt'}")
    assert_one_line_failure(result, 2, "cannot read the hosts file", "missing.txt")


def test_an_unreadable_ssh_config_stops_validate_before_any_host_is_reached(tmp_path):
    result = run_invoke(
        "validate", "--image", "none", "--hosts", "ssh://gpu1", env={"LABSTACK_SSH_CONFIG": str(tmp_path / "none")}
    )
    assert_one_line_failure(result, 2, "LABSTACK_SSH_CONFIG names", "not a readable file")


def test_the_test_task_passes_no_user_text_through_a_shell(tmp_path):
    marker = tmp_path / "X"
    result = run_invoke("test", "--unit", "--variant", f"cpu --co -q; touch {marker} #")
    assert not marker.exists(), "the --variant value ran as a shell command"
    assert_one_line_failure(result, 2, "unknown variant")


def test_a_host_that_starts_with_a_dash_is_refused_before_ssh_sees_it():
    marker = ROOT / f"injected-{uuid.uuid4().hex[:8]}"  # ssh would run the ProxyCommand in the checkout
    try:
        result = run_invoke("validate", "--image", "none", "--hosts", f"ssh://-oProxyCommand=touch {marker.name}")
        assert not marker.exists(), "the host was handed to ssh as an option"
    finally:
        marker.unlink(missing_ok=True)
    assert_one_line_failure(result, 2, "bad host", "-oProxyCommand")


class StalledSshServer:
    """Accepts TCP, sends an SSH banner, then never says another word: a hung lab server."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self.listener.accept()
                connection.sendall(b"SSH-2.0-OpenSSH_9.2p1 stalled\r\n")
                self.connections.append(connection)

    def close(self) -> None:
        for connection in [*self.connections, self.listener]:
            connection.close()


def validate_in_background(server: StalledSshServer, out) -> subprocess.Popen:
    """`invoke validate` of the stalled host only, in a session of its own (so a test can kill all of it)."""
    return subprocess.Popen(
        [*INVOKE, "validate", "--image", "none", "--hosts", f"ssh://lab@127.0.0.1:{server.port}", "--out", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


def test_a_host_that_stalls_after_its_banner_fails_in_under_a_minute(tmp_path):
    server = StalledSshServer()
    started = time.monotonic()
    process = validate_in_background(server, tmp_path)
    try:
        _, stderr = process.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail("invoke validate was still waiting for the stalled host after 90 s")
    finally:
        server.close()
    seconds = time.monotonic() - started
    assert seconds < 60, f"the stalled host held invoke validate for {seconds:.0f} s"
    assert process.returncode == 1 and stderr.strip().splitlines()[-1].startswith("labstack: "), stderr
    results = json.loads((tmp_path / "report.json").read_text())["targets"][0]["results"]
    assert results and all(r["outcome"] == "fail" for r in results)
    assert all("timed out" in r["reason"] and "unreachable" in r["reason"] for r in results), results[0]
    assert {r["target"] for r in results} == {f"lab@127.0.0.1:{server.port}"}, "the column names the whole host"


def test_sigterm_ends_a_task_with_one_line_and_exit_143(tmp_path):
    """timeout, systemd and Slurm stop a task with SIGTERM: one line, its own exit code, no traceback."""
    server = StalledSshServer()  # keeps validate busy long enough to be stopped
    process = validate_in_background(server, tmp_path)
    try:
        time.sleep(3)
        process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        _, stderr = process.communicate(timeout=60)
        seconds = time.monotonic() - stopped
        left = subprocess.run(["pgrep", "-f", f"127.0.0.1:{server.port}|Port={server.port}"], capture_output=True)
    finally:
        server.close()
    assert process.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == "labstack: terminated (SIGTERM)" and "Traceback" not in stderr, stderr
    assert seconds < 5, f"validate took {seconds:.1f} s to stop: it waited for its checks instead of stopping them"
    assert left.stdout == b"", "a check process or its ssh outlived the stopped task"


def real_filelock_wheel(folder: Path) -> tuple[Path, str]:
    """The torch CPU lock's filelock wheel, from this host's wheel cache, else downloaded and verified by labstack,
    copied into `folder`; and its sha256."""
    from labstack.build.wheelhouse import ensure_wheels, sha256_file, wheelhouse_dir

    matrix = load_matrix()
    pin = next(p for p in read_lock(matrix.image("torch", "cpu"), matrix) if p.name == "filelock")
    cached = sorted(wheelhouse_dir().glob(f"filelock-{pin.version}-*.whl"))
    source = cached[0] if cached else ensure_wheels([pin], matrix, folder / "download")["filelock"]
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / source.name
    shutil.copyfile(source, wheel)
    digest = sha256_file(wheel)
    assert digest in pin.hashes, "the host's cached wheel is not the locked one"
    return wheel, digest


def edit_lock_hash(lock: Path, digest: str) -> None:
    text = lock.read_text()
    assert digest in text
    lock.write_text(text.replace(digest, ("f" if digest[0] != "f" else "e") + digest[1:]))


EDITED_LOCK_WORDS = (
    "images/torch/requirements-cpu.lock: the --hash of filelock==4.3.1 does not match the wheel the index serves",
    "the lock was probably edited: restore it (`git checkout -- images/torch/requirements-cpu.lock`) or run "
    "`invoke lock --framework torch`",
)


def test_an_edited_lock_hash_is_blamed_on_the_lock_when_the_cached_wheel_matched_it_before(tmp_path, monkeypatch):
    from labstack.build.wheelhouse import find_wheels

    matrix = load_matrix()
    wheels = tmp_path / "cache" / "wheels"
    wheel, digest = real_filelock_wheel(wheels)
    pin = next(p for p in read_lock(matrix.image("torch", "cpu"), matrix) if p.name == "filelock")
    assert find_wheels([pin], matrix, wheels)[0] == {"filelock": wheel}  # what a build with the good lock does
    copy = checkout_copy(tmp_path / "checkout")  # no git here: only the wheelhouse can tell
    edit_lock_hash(copy / "images" / "torch" / "requirements-cpu.lock", digest)
    monkeypatch.setenv("LABSTACK_CACHE", str(tmp_path / "cache"))
    result = invoke_in_copy(copy, "labstack-msg-test", "wheels", "--framework", "torch", "--variant", "cpu")
    assert_one_line_failure(result, 1, *EDITED_LOCK_WORDS, "is the wheel that matched this lock when it was downloaded")
    assert "tampered" not in result.stderr


def test_an_edited_lock_hash_is_blamed_on_the_lock_when_gits_copy_names_the_wheel(tmp_path, monkeypatch):
    wheels = tmp_path / "cache" / "wheels"
    _, digest = real_filelock_wheel(wheels)  # copied in by hand: no record of it
    copy = checkout_copy(tmp_path / "checkout")
    git = ["git", "-C", str(copy), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    for step in (["init", "-q"], ["add", "images"], ["commit", "-q", "-m", "locks"]):
        subprocess.run([*git, *step], capture_output=True, check=True)
    edit_lock_hash(copy / "images" / "torch" / "requirements-cpu.lock", digest)
    monkeypatch.setenv("LABSTACK_CACHE", str(tmp_path / "cache"))
    result = invoke_in_copy(copy, "labstack-msg-test", "wheels", "--framework", "torch", "--variant", "cpu")
    assert_one_line_failure(result, 1, *EDITED_LOCK_WORDS, "git's copy of the lock names its hash")
    assert "tampered" not in result.stderr


def test_a_wheel_changed_after_it_matched_the_lock_is_still_blamed_on_the_wheel(tmp_path):
    from labstack.build.wheelhouse import find_wheels

    matrix = load_matrix()
    wheels = tmp_path / "cache" / "wheels"
    wheel, _ = real_filelock_wheel(wheels)
    pin = next(p for p in read_lock(matrix.image("torch", "cpu"), matrix) if p.name == "filelock")
    find_wheels([pin], matrix, wheels)
    wheel.write_bytes(wheel.read_bytes() + b"\0")  # the lock is git's own, the wheel is not the one it names
    result = run_invoke(
        "wheels", "--framework", "torch", "--variant", "cpu", env={"LABSTACK_CACHE": str(tmp_path / "cache")}
    )
    assert_one_line_failure(result, 1, f"wheel {wheel} does not match the hash in the lockfile (tampered")
