"""A signal to a training run started without a terminal, as timeout, systemd, Slurm and CI send it, for real: the
bare `docker compose run` client leaves the container training (measured, so the docs' claim is checked), and
`invoke train` turns the signal into a checkpoint, one `labstack:` line and 128 + the signal's number."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import pty
import re
import signal
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import docker.errors
import pytest

from labstack import ROOT
from labstack.engine import connect
from labstack.payload import IN_IMAGE

from .conftest import COMMAND_TIMEOUT, labstack_lines, wait_for

# A synthetic epoch is 32 steps of 64 samples: a step line every 5 steps, so the first comes within seconds.
TRAINING = ("--synthetic", "--epochs", "1000", "--log-every", "5")
STARTED_S = 240  # image start and the first steps, on 2 shared CPUs
RESUMED = "run the same command again to resume"


def train_command(stack, *words: str) -> list[str]:
    return [sys.executable, "-m", "invoke", "train", "--project", stack.name, "--env-file", str(stack.env_file),
            "--", *words]  # fmt: skip


def start(command: list[str], tmp_path: Path, label: str) -> tuple[subprocess.Popen, Path, Path]:
    """Start `command` as a scheduler does: its own session and process group, no terminal, stdin /dev/null."""
    out, err = tmp_path / f"{label}.out", tmp_path / f"{label}.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                   start_new_session=True)  # fmt: skip
    return process, out, err


def wait_for_steps(stack, run: str) -> None:
    wait_for(lambda: any(m["event"] == "step" for m in stack.metrics(run)), STARTED_S, f"a step line of {run}")


def project_containers(stack) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={stack.name}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return out.split()


def finish(process: subprocess.Popen, err: Path, what: str = "") -> tuple[int, list[str], str]:
    """Exit code, what labstack said on stderr (compose's progress lines left out), and all of stderr; prints the
    seconds from now (the signal) to the exit, a figure for docs/compose.md, never asserted."""
    started = time.monotonic()
    code = process.wait(timeout=COMMAND_TIMEOUT)
    if what:
        print(f"\n{what}: exit {code} {time.monotonic() - started:.1f} s after the signal")
    stderr = err.read_text()
    return code, [line for line in labstack_lines(stderr) if line.startswith("labstack: ")], stderr


def assert_checkpointed(stack, run: str, code: int, said: list[str], stderr: str, sig: str, exit_code: int, what):
    """One `labstack:` line naming where the run stopped, a checkpoint and one `stop` event, no container left."""
    assert code == exit_code, stderr
    assert "Traceback" not in stderr, stderr
    stops = [m for m in stack.metrics(run) if m["event"] == "stop"]
    assert len(stops) == 1 and stops[0]["signal"] == sig, stack.metrics(run)[-3:]
    epoch, sample = stops[0]["epoch"], stops[0]["sample"]
    assert said == [
        f"labstack: {what} ({sig if what != 'hung up' else 'SIGHUP'}): run {run} checkpointed at epoch {epoch}, "
        f"sample {sample} ({stack.runs / run}); {RESUMED}"
    ], stderr
    assert (stack.runs / run / "checkpoint.pt").is_file()
    wait_for(lambda: not project_containers(stack), 30, "the run's container to be removed")
    return stops[0]


def test_group_sigterm_to_invoke_train_checkpoints_and_the_same_command_resumes(stack, tmp_path):
    run = "group-term"
    process, _, err = start(train_command(stack, *TRAINING, "--run", run), tmp_path, "first")
    wait_for_steps(stack, run)
    os.killpg(process.pid, signal.SIGTERM)  # what Slurm and CI do
    stop = assert_checkpointed(stack, run, *finish(process, err, "SIGTERM to the group"), "SIGTERM", 143,
                               "terminated")  # fmt: skip

    again = subprocess.run(train_command(stack, "--synthetic", "--epochs", str(stop["epoch"]), "--log-every", "5",
                                         "--run", run),
                           cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=COMMAND_TIMEOUT)  # fmt: skip
    assert again.returncode == 0, again.stderr
    start_event = [m for m in stack.metrics(run) if m["event"] == "start"][-1]
    assert start_event["resumed"] and (start_event["from_epoch"] + 1, start_event["from_sample"]) == (
        stop["epoch"], stop["sample"])  # fmt: skip
    assert [m["epoch"] for m in stack.metrics(run) if m["event"] == "epoch"][-1] == stop["epoch"]
    lines = (stack.runs / run / "metrics.jsonl").read_text().splitlines()
    steps = [(m["epoch"], m["sample"]) for m in map(json.loads, lines) if m["event"] == "step"]
    assert steps and len(steps) == len(set(steps)), "a step was trained and logged twice"
    assert not project_containers(stack)


def test_the_timeout_command_checkpoints_through_invoke_train(stack, tmp_path):
    run = "timeout"
    # A long limit, ended by hand once the run steps: SIGALRM is how timeout's own timer tells it the time is up,
    # so it then does exactly what it does at the limit (SIGTERM to the command and to its process group).
    command = ["timeout", "--preserve-status", "-s", "TERM", "3600", *train_command(stack, *TRAINING, "--run", run)]
    process, _, err = start(command, tmp_path, "timeout")
    wait_for_steps(stack, run)
    os.kill(process.pid, signal.SIGALRM)
    assert_checkpointed(stack, run, *finish(process, err, "timeout"), "SIGTERM", 143, "terminated")


@pytest.mark.parametrize(
    ("sig", "whom", "recorded", "exit_code", "what"),
    [
        (signal.SIGTERM, "process", "SIGTERM", 143, "terminated"),  # systemd's KillMode=mixed: the main process
        (signal.SIGHUP, "group", "SIGTERM", 129, "hung up"),  # a closed ssh session or terminal
        (signal.SIGINT, "group", "SIGINT", 130, "interrupted"),  # Ctrl-C where there is no terminal to carry it
    ],
    ids=["sigterm-process", "sighup-group", "sigint-group"],
)
def test_signals_to_invoke_train_checkpoint(stack, tmp_path, sig, whom, recorded, exit_code, what):
    run = f"{whom}-{sig.name.lower()}"
    process, _, err = start(train_command(stack, *TRAINING, "--run", run), tmp_path, run)
    wait_for_steps(stack, run)
    (os.kill if whom == "process" else os.killpg)(process.pid, sig)
    assert_checkpointed(stack, run, *finish(process, err, f"{sig.name} to the {whom}"), recorded, exit_code, what)


def signalled(stack, since: int) -> bool:
    """Whether the daemon has sent a signal to one of the project's containers since `since` (docker kill)."""
    events = subprocess.run(
        ["docker", "events", "--since", str(since), "--until", str(int(time.time()) + 1), "--filter",
         f"label=com.docker.compose.project={stack.name}", "--filter", "event=kill", "--format", "{{.Action}}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return bool(events.strip())


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc: what systemd's control group holds besides the main process."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rpartition(")")[2].split()
            parents[int(stat.parent.name)] = int(fields[1])
    found, todo = [], [pid]
    while todo:
        above = todo.pop()
        below = [child for child, parent in parents.items() if parent == above]
        found += below
        todo += below
    return found


def test_sigterm_to_every_process_checkpoints_and_shows_the_trainers_last_words(stack, tmp_path):
    """systemd's default KillMode=control-group signals every process of the unit, the compose client included:
    whether or not the client forwards it, the run checkpoints, and `invoke train`, following the container's logs
    itself once the client is gone, still shows what the trainer said last."""
    run = "every-process"
    process, out, err = start(train_command(stack, *TRAINING, "--run", run), tmp_path, run)
    wait_for_steps(stack, run)
    for pid in [process.pid, *descendants(process.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    stop = assert_checkpointed(stack, run, *finish(process, err, "SIGTERM to every process"), "SIGTERM", 143,
                               "terminated")  # fmt: skip
    assert f"SIGTERM: checkpoint written at epoch {stop['epoch']}, sample {stop['sample']}" in out.read_text()


def test_a_command_that_outlives_the_grace_period_is_stopped_and_a_second_signal_is_answered(stack, tmp_path):
    """Your own command that ignores SIGTERM: `invoke train` waits STOP_GRACE_PERIOD plus its margin, says so when
    signalled again meanwhile, then `docker stop`s the container rather than leaving it behind."""
    # Words with spaces and quotes, after `--`: they must reach the container as the shell gave them.
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('re' + 'ady', flush=True); " \
             "time.sleep(600)"  # fmt: skip
    out, err = tmp_path / "deaf.out", tmp_path / "deaf.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(train_command(stack, "python", "-c", script), cwd=ROOT, stdin=subprocess.DEVNULL,
                                   stdout=stdout, stderr=stderr, start_new_session=True,
                                   env={**os.environ, "STOP_GRACE_PERIOD": "1s"})  # fmt: skip
    wait_for(lambda: "ready\n" in out.read_text(), STARTED_S, "the command to start")
    since = int(time.time()) - 1
    os.killpg(process.pid, signal.SIGTERM)
    wait_for(lambda: signalled(stack, since), 60, "invoke train to signal the container")  # the first one handled
    os.killpg(process.pid, signal.SIGTERM)
    code, said, stderr = finish(process, err)
    assert code == 143 and len(said) == 2, stderr
    again = re.fullmatch(r"labstack: SIGTERM again: still waiting up to \d+ s for (\S+) to checkpoint and exit; "
                         r"`docker kill \1` ends it at once, without a checkpoint", said[0])  # fmt: skip
    assert again, stderr
    assert said[1] == (
        f"labstack: terminated (SIGTERM): {again[1]} did not exit within 31 s of SIGTERM (STOP_GRACE_PERIOD plus "
        "30 s), so it was stopped with `docker stop`"
    )
    wait_for(lambda: not project_containers(stack), 30, "the container to be removed")


def test_ctrl_c_in_a_terminal_is_the_terminals(stack, tmp_path):
    """With a terminal, `invoke train` leaves it to compose: the container gets a terminal of its own, and Ctrl-C
    reaches the trainer through it (SIGINT, a checkpoint, 130), as with `docker compose run`."""
    run = "terminal"
    main, terminal = pty.openpty()

    def controlling_terminal() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(train_command(stack, *TRAINING, "--run", run), cwd=ROOT, stdin=terminal,
                               stdout=terminal, stderr=terminal, preexec_fn=controlling_terminal)  # fmt: skip
    os.close(terminal)
    shown: list[bytes] = []

    def drain() -> None:
        with contextlib.suppress(OSError):  # EIO once the terminal's last user has gone
            while chunk := os.read(main, 4096):
                shown.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        wait_for_steps(stack, run)
        os.write(main, b"\x03")  # Ctrl-C, typed
        code = process.wait(timeout=COMMAND_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
        reader.join(timeout=5)
        os.close(main)
    output = b"".join(shown).decode(errors="replace")
    stops = [m for m in stack.metrics(run) if m["event"] == "stop"]
    assert code == 130 and len(stops) == 1 and stops[0]["signal"] == "SIGINT", output
    assert "Traceback" not in output
    assert f"SIGINT: checkpoint written at epoch {stops[0]['epoch']}, sample {stops[0]['sample']}" in output
    wait_for(lambda: not project_containers(stack), 30, "the run's container to be removed")


def test_the_bare_compose_client_without_a_terminal_leaves_the_container_training(stack, tmp_path):
    """Characterises Compose 2.26.1 with docker CLI 28: SIGTERM to the `docker compose run` process (what systemd's
    KillMode=mixed, `kill PID` and `timeout --foreground` signal) ends the client and not the container, which
    trains on, without a checkpoint. (To the whole process group it is a race in the client: docs/compose.md has
    the figures.) If this fails, Compose forwards the signal now; docs/compose.md's warning can then go."""
    run, name = "bare", f"{stack.name}-bare"
    command = ["docker", "compose", "--project-name", stack.name, "--env-file", str(stack.env_file), "run", "--rm",
               "--name", name, "train", *TRAINING, "--run", run]  # fmt: skip
    process, _, err = start(command, tmp_path, "bare")
    client = connect()
    try:
        wait_for_steps(stack, run)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) != 0
        steps = sum(m["event"] == "step" for m in stack.metrics(run))
        # Still training long after its client has gone: more steps, no stop event, no checkpoint.
        wait_for(lambda: sum(m["event"] == "step" for m in stack.metrics(run)) > steps + 1, 120, "more steps")
        assert client.containers.get(name).status == "running", err.read_text()
        assert not any(m["event"] == "stop" for m in stack.metrics(run))
        assert not (stack.runs / run / "checkpoint.pt").exists()
    finally:
        with contextlib.suppress(docker.errors.APIError):
            client.containers.get(name).stop(timeout=60)  # the trainer checkpoints on this one
        with contextlib.suppress(docker.errors.APIError):
            client.containers.get(name).remove(force=True)  # unless compose's --rm (AutoRemove) got there first


def test_invoke_train_errors_are_one_line(stack):
    """A missing image is refused before compose starts anything; the trainer's own refusal passes through as it is,
    with its exit code and no second line."""
    elsewhere = {**os.environ, "TRAIN_IMAGE": "labstack/none:0-cpu-lab"}
    missing = subprocess.run(train_command(stack, "--synthetic"), cwd=ROOT, capture_output=True, text=True,
                             timeout=COMMAND_TIMEOUT, env=elsewhere)  # fmt: skip
    assert missing.returncode == 1 and "Traceback" not in missing.stderr, missing.stderr
    assert labstack_lines(missing.stderr) == [
        "labstack: the train service's image labstack/none:0-cpu-lab is not built here: `invoke build` builds the lab "
        "images, or set TRAIN_IMAGE (`invoke env --framework ...` writes it to .env)"
    ]
    assert not project_containers(stack)
    refused = subprocess.run(train_command(stack, "--framework", "jax"), cwd=ROOT, capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT)  # fmt: skip
    said = labstack_lines(refused.stderr)
    assert refused.returncode == 2 and len(said) == 1 and "unknown framework jax" in said[0], refused.stderr


def test_invoke_train_refuses_an_image_without_the_payload_and_gpu_on_a_cpu_image_or_host(stack, os_image):
    """The service's entrypoint is labstack's payload: an image without it used to end in tini's `exec python
    failed`. --gpu wants a CUDA lab image and a GPU host: each refusal is one line, before compose starts anything."""

    def train(image: str, *options: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "invoke", "train", "--project", stack.name, "--env-file",
                   str(stack.env_file), *options, "--", "--synthetic"]  # fmt: skip
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=COMMAND_TIMEOUT, env={**os.environ, "TRAIN_IMAGE": image})  # fmt: skip

    bare = train(os_image)
    said = labstack_lines(bare.stderr)
    assert bare.returncode == 2 and "Traceback" not in bare.stderr, bare.stderr
    assert said == [f"labstack: the train service's image {os_image} is not a labstack image (no {IN_IMAGE}, no "
                    "labstack.framework label): build one with `invoke build` and name it (torch-cpu), or build your "
                    "own image FROM a labstack lab image (TRAIN_IMAGE in .env)"]  # fmt: skip
    cpu_image = stack.values["TRAIN_IMAGE"]
    on_cpu = train(cpu_image, "--gpu")
    said = labstack_lines(on_cpu.stderr)
    assert on_cpu.returncode == 2 and len(said) == 1, on_cpu.stderr
    assert f"its image {cpu_image} is the cpu variant: set TRAIN_IMAGE" in said[0]
    if Path("/dev/nvidia0").exists():
        return  # a GPU host: the preflight below would pass, and the run needs a CUDA lab image built here
    # A CUDA-labelled lab image (one layer over the OS image): the host's GPU preflight refuses it here, as up-gpu's.
    client = connect()
    tag = f"{stack.name}-cuda-label:test"
    client.images.build(fileobj=io.BytesIO(f"FROM {os_image}\n".encode()), tag=tag, rm=True,
                        labels={"labstack.framework": "torch", "labstack.variant": "cuda"})  # fmt: skip
    try:
        no_gpu = train(tag, "--gpu")
    finally:
        client.images.remove(tag, force=True)
    said = labstack_lines(no_gpu.stderr)
    assert no_gpu.returncode == 5 and len(said) == 1 and "Traceback" not in no_gpu.stderr, no_gpu.stderr
    assert not project_containers(stack)
