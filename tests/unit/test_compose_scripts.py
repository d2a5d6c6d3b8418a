"""The in-image scripts' pure logic (IDX, checksums, atomic checkpoints, argument checks), without Docker or a
framework."""

from __future__ import annotations

import errno
import gzip
import json
import os
import platform
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from labstack import ROOT, payload
from labstack.matrix import load_matrix

MATRIX = load_matrix()
mnist = payload.load("mnist")
notebook = payload.load("notebook")
train = payload.load("train")
entrypoint = payload.load("entrypoint")


def test_idx_round_trip():
    payload = bytes(range(256)) * 2
    dims, data = mnist.decode_idx(mnist.encode_idx((2, 16, 16), payload), "x")
    assert dims == (2, 16, 16) and data == payload


@pytest.mark.parametrize(
    ("blob", "words"),
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "bad magic"),
        (b"\x00\x00\x0d\x01\x00\x00\x00\x01\x05", "type 0x0d"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x03\x05", "truncated"),
        (b"\x00\x00\x08\x02\x00\x00", "header"),
    ],
)
def test_bad_idx_names_the_file_and_the_problem(blob, words):
    with pytest.raises(mnist.DataError) as err:
        mnist.decode_idx(blob, "train-labels-idx1-ubyte")
    assert "train-labels-idx1-ubyte" in str(err.value) and words in str(err.value)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gen")
    mnist.generate(folder, train=200, test=50, seed=1)
    return folder


def test_generated_data_is_verified_by_its_sidecar_and_loads(generated):
    data = mnist.load(generated)
    assert data.source == "SHA256SUMS" and (data.train.count, data.test.count) == (200, 50)
    assert len(data.train.images) == 200 * 28 * 28 and set(data.train.labels) <= set(range(10))
    assert len(set(data.train.labels)) == 10


def test_generation_is_deterministic(generated, tmp_path):
    mnist.generate(tmp_path, train=200, test=50, seed=1)
    assert (tmp_path / mnist.SUMS).read_text() == (generated / mnist.SUMS).read_text()


def copy(folder, target):
    target.mkdir()
    for path in folder.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def test_a_changed_byte_is_refused(generated, tmp_path):
    folder = copy(generated, tmp_path / "d")
    path = folder / "t10k-labels-idx1-ubyte"
    data = bytearray(path.read_bytes())
    data[-1] = (data[-1] + 1) % 10
    path.write_bytes(bytes(data))
    with pytest.raises(mnist.DataError, match="does not match its checksum"):
        mnist.verify(folder)


def test_files_without_any_checksum_say_how_to_record_them(generated, tmp_path):
    folder = copy(generated, tmp_path / "d")
    (folder / mnist.SUMS).unlink()
    with pytest.raises(mnist.DataError, match=re.escape("mnist.py record")):
        mnist.verify(folder)
    mnist.record(folder)
    assert mnist.verify(folder)[1] == "SHA256SUMS"


def test_gzip_files_read_and_a_fake_mnist_archive_is_refused(generated, tmp_path):
    folder = tmp_path / "gz"
    folder.mkdir()
    for stem in mnist.FILES.values():
        (folder / f"{stem}.gz").write_bytes(gzip.compress((generated / stem).read_bytes()))
    # The names of the real archives, other contents: the published checksum table catches it.
    with pytest.raises(mnist.DataError, match="does not match its checksum"):
        mnist.verify(folder)
    mnist.record(folder)
    assert mnist.load(folder).train.images == mnist.load(generated).train.images


def test_missing_folder_and_missing_files(tmp_path):
    with pytest.raises(mnist.DataError, match="does not exist"):
        mnist.verify(tmp_path / "nope")
    with pytest.raises(mnist.DataError, match="invoke data --download"):
        mnist.verify(tmp_path)


def test_download_failure_says_what_to_do_offline(tmp_path):
    with pytest.raises(mnist.DataError) as err:
        mnist.download(tmp_path, mirrors=("https://127.0.0.1:9/",), timeout=2)
    assert err.value.code == 1 and "copy them into" in str(err.value) and "--generate" in str(err.value)


def test_save_atomic_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "checkpoint.pt"
    train.save_atomic(path, lambda handle: handle.write(b"old"))

    def crash(handle):
        handle.write(b"half of the new one")
        raise OSError("disk full")

    with pytest.raises(train.WriteFailed, match="disk full"):
        train.save_atomic(path, crash)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_stale_temps_of_a_killed_process_are_removed(tmp_path):
    (tmp_path / ".checkpoint.pt.tmp-123").write_bytes(b"x")
    (tmp_path / "checkpoint.pt").write_bytes(b"y")
    train.remove_stale_temps(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def installed_only(*names):
    return lambda name: object() if name in names else None


def test_choose_framework():
    manifest = {"framework": "torch"}
    assert train.choose_framework(None, manifest, installed_only("torch")) == "torch"
    assert train.choose_framework("torch", {}, installed_only("torch")) == "torch"
    with pytest.raises(train.UsageError, match="unknown framework jax"):
        train.choose_framework("jax", manifest, installed_only("torch"))
    with pytest.raises(train.UsageError, match="has torch, not tensorflow"):
        train.choose_framework("tensorflow", manifest, installed_only("torch"))
    with pytest.raises(train.UsageError, match="--framework"):
        train.choose_framework(None, {}, installed_only())


def test_run_names():
    assert train.run_name("torch", False, None) == "mnist-torch"
    assert train.run_name("tensorflow", True, None) == "synthetic-tensorflow"
    for bad in ("../x", ".hidden", "a/b"):
        with pytest.raises(train.UsageError):
            train.run_name("torch", False, bad)


@pytest.mark.parametrize(
    ("args", "words"),
    [(["--epochs", "0"], "--epochs"), (["--batch-size", "-1"], "--batch-size"), (["--lr", "0"], "--lr")],
)
def test_bad_numbers_are_refused(args, words):
    with pytest.raises(train.UsageError, match=words):
        train.parse_args(args)


def test_bad_arguments_are_one_line_exit_2(capsys, tmp_path):
    assert train.main(["--framework", "jax", "--runs", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("labstack: unknown framework jax")


def test_runs_folder_must_exist(tmp_path):
    with pytest.raises(train.UsageError, match="does not exist"):
        train.check_writable(tmp_path / "nope")


@pytest.mark.skipif(os.getuid() == 0, reason="root writes anywhere; tests/e2e checks this with another UID")
def test_unwritable_runs_folder(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(train.UsageError, match="not writable"):
            train.check_writable(tmp_path)
    finally:
        tmp_path.chmod(0o700)


HOLD_THE_RUN = """\
import sys, time
from pathlib import Path
from labstack import payload
payload.load("train").lock_run(Path(sys.argv[1]), "mnist-torch")
print("holding", flush=True)
time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    """A real second process that takes the lock of RUNS/mnist-torch the way train.py does, then sleeps."""
    folder = tmp_path / "mnist-torch"
    folder.mkdir()
    child = subprocess.Popen([sys.executable, "-c", HOLD_THE_RUN, str(folder)], cwd=ROOT, stdout=subprocess.PIPE,
                             text=True)  # fmt: skip
    try:
        assert child.stdout.readline().strip() == "holding"
        yield child
    finally:
        child.kill()
        child.wait(timeout=30)


def test_a_second_trainer_on_a_run_is_refused_in_one_line_naming_the_first(holder, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train, "choose_framework", lambda requested, manifest: "torch")  # no torch on this host
    assert train.main(["--synthetic", "--runs", str(tmp_path), "--run", "mnist-torch"]) == train.BAD_INPUT
    lines = capsys.readouterr().err.splitlines()
    node = platform.node()
    if Path("/.dockerenv").exists():  # this test itself runs in a container: the holder is named as one
        where, fix = f"in container {node}", f"docker stop {node}"
    else:
        where, fix = f"on host {node}", f"kill {holder.pid}"
    assert len(lines) == 1, lines
    assert re.fullmatch(
        rf"labstack: run mnist-torch is in use by PID {holder.pid} {re.escape(where)} "
        rf"\(started \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ\): stop it \({re.escape(fix)}\) or give another --run",
        lines[0],
    ), lines[0]
    assert sorted(p.name for p in (tmp_path / "mnist-torch").iterdir()) == ["train.lock"], "the refused one wrote"


def test_a_lock_file_left_by_a_killed_trainer_does_not_block_the_next(holder, tmp_path):
    folder = tmp_path / "mnist-torch"
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert str(holder.pid) in (folder / "train.lock").read_text(), "the dead holder's file is still there"
    fd = train.lock_run(folder, "mnist-torch")
    try:
        assert json.loads((folder / "train.lock").read_text())["pid"] == os.getpid()
    finally:
        os.close(fd)


def test_a_folder_that_keeps_no_locks_is_one_line_naming_the_nfs_option(tmp_path, monkeypatch):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(train.fcntl, "flock", no_locks)
    with pytest.raises(train.UsageError, match=r"No locks available.*local_lock=flock"):
        train.lock_run(tmp_path, "mnist-torch")


def test_a_lock_file_that_cannot_be_opened_is_one_line(tmp_path):
    (tmp_path / "train.lock").mkdir()  # fails for root too, as another user's read-only file fails for a user
    with pytest.raises(train.UsageError, match=r"cannot open .*train.lock \(Is a directory\).*chown"):
        train.lock_run(tmp_path, "mnist-torch")


def test_a_trainer_in_a_container_is_named_by_its_container():
    text = json.dumps({"pid": 7, "host": "3f2a1b", "container": True, "started": "2026-11-27T11:50:02Z"})
    assert train.describe_holder("mnist-torch", text) == (
        "run mnist-torch is in use by PID 7 in container 3f2a1b (started 2026-11-27T11:50:02Z): stop it "
        "(docker stop 3f2a1b) or give another --run"
    )
    assert "has not written who it is yet" in train.describe_holder("mnist-torch", "")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], [sys.executable, str(entrypoint.TRAINER)]),
        (["--synthetic", "--epochs", "1"], [sys.executable, str(entrypoint.TRAINER), "--synthetic", "--epochs", "1"]),
        (["-h"], [sys.executable, str(entrypoint.TRAINER), "-h"]),
        (["python", "my_train.py", "--epochs", "3"], ["python", "my_train.py", "--epochs", "3"]),
        (["bash", "-c", "echo $HOME; rm -rf /"], ["bash", "-c", "echo $HOME; rm -rf /"]),
    ],
    ids=["nothing", "options", "help", "command", "no-shell-of-ours"],
)
def test_options_go_to_the_built_in_trainer_anything_else_is_the_command(argv, expected):
    assert entrypoint.command_for(argv) == expected
    assert payload.path("train") == entrypoint.TRAINER


def failing(err):
    def execvp(file, args):
        raise err

    return execvp


@pytest.mark.parametrize(
    ("argv", "err", "code", "words"),
    [
        (["no-such-command"], FileNotFoundError(2, "x"), 127, "no-such-command: no such command in the image"),
        (["my_train.py"], FileNotFoundError(2, "x"), 127, "my_train.py is a file in {cwd}, not a command: run it"),
        (["./gone.sh"], FileNotFoundError(2, "x"), 127, "./gone.sh: no such file (the working folder {cwd} is"),
        (["./my_train.py"], PermissionError(13, "x"), 126, "./my_train.py: permission denied: `chmod +x"),
        (["sub"], PermissionError(13, "x"), 126, "sub is a folder, not a command"),
        (["./plain.sh"], OSError(8, "Exec format error"), 126, "./plain.sh is not a program (no #! line?)"),
        (["big"], OSError(7, "Argument list too long"), 126, "cannot run big: Argument list too long"),
    ],
    ids=["unknown", "script-without-interpreter", "missing-file", "not-executable", "folder", "no-shebang", "other"],
)
def test_a_command_that_cannot_start_is_one_line_with_the_shells_code(tmp_path, monkeypatch, capsys, argv, err, code,
                                                                      words):  # fmt: skip
    (tmp_path / "my_train.py").write_text("print('hi')\n")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    assert entrypoint.main(argv, execvp=failing(err)) == code
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("labstack: " + words.format(cwd=tmp_path)), lines


def run_entrypoint(*args, cwd=None):
    return subprocess.run(
        [sys.executable, str(payload.path("entrypoint")), *args],
        cwd=cwd, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_command_replaces_the_entrypoint_process_so_signals_reach_it():
    child = subprocess.Popen(
        [sys.executable, str(payload.path("entrypoint")), sys.executable, "-c", "import os; print(os.getpid())"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0 and int(out) == child.pid


def test_options_reach_the_real_trainer():
    result = run_entrypoint("--help")
    assert result.returncode == 0 and "--synthetic" in result.stdout and "--epochs" in result.stdout


def test_real_failures_are_one_line(tmp_path):
    script = tmp_path / "plain.sh"
    script.write_text("echo hi\n")
    script.chmod(0o755)
    for args, code in ((["no-such-command-xyz"], 127), (["./plain.sh"], 126), (["./missing.sh"], 127)):
        result = run_entrypoint(*args, cwd=tmp_path)
        lines = result.stderr.splitlines()
        assert result.returncode == code and len(lines) == 1 and lines[0].startswith("labstack: "), result.stderr


def test_notebook_token_rules():
    assert "empty" in notebook.token_problem("")
    assert "shorter" in notebook.token_problem("abc")
    assert notebook.token_problem("a" * 48) is None


def run_invoke(*args):
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("task", ["env", "up-cpu", "up-gpu"])
def test_tasks_refuse_an_unknown_framework_in_one_line(task):
    result = run_invoke(task, "--framework", "jax")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "unknown framework jax" in lines[0], result.stderr


def test_new_tasks_are_listed_with_a_description():
    listing = run_invoke("--list").stdout
    for name in ("env", "data", "lab-add", "notebook-lock", "notebook-image", "up-cpu", "up-gpu", "down"):
        line = next(line for line in listing.splitlines() if line.strip().startswith(name + " "))
        assert len(line.split()) > 1
