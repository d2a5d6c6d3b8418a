"""`invoke train`: the compose `train` service in the foreground, as `docker compose run --rm train` runs it, except
that a signal to this command becomes a checkpoint in the container.

Why not the bare client: measured with Compose 2.26.1, a `docker compose run` without a terminal that gets SIGTERM
or SIGINT (from `timeout`, systemd, Slurm's scancel, a cancelled CI job: they signal the whole process group, or
the `docker` process) prints `canceled` and exits without signalling the container, which trains on and writes no
checkpoint. So this command signals the container itself, through the Docker API and by its name, then shows its
output until it exits (following its logs itself when the compose client died too), and ends in one line that says
where the run stopped. The Slurm path does the same in its batch script (labstack/cluster/templates/docker.sh).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import docker
import docker.errors

from labstack import payload
from labstack.compose.commands import compose_options
from labstack.compose.project import Project, check_compose, project_from_env, shell_line
from labstack.engine import connect, image_or_none
from labstack.errors import BadInput, LabstackError
from labstack.gpu import gpu_preflight
from labstack.matrix import load_matrix
from labstack.payload import FRAMEWORK_LABEL, missing_payload

SERVICE = "train"
# What a signal to `invoke train` is called in its last line; its exit code is 128 + the signal's number.
CAUGHT = {signal.SIGTERM: "terminated", signal.SIGINT: "interrupted", signal.SIGHUP: "hung up"}
DEFAULT_GRACE_S = 60.0  # compose/compose.yaml's STOP_GRACE_PERIOD default
MARGIN_S = 30.0  # beyond the grace period: the trainer finishes its step and writes the checkpoint in that
STOP_KILL_S = 10  # `docker stop`'s own grace, once the container has outlived ours
POLL_S = 0.2
LOOK_S = 1.0  # how often to look for the container before any signal
FIND_S = 120.0  # how long compose may take to create the container (a cold image start) after a signal
RUNS_IN_CONTAINER = PurePosixPath("/runs")
DURATION = re.compile(r"(\d+(?:\.\d*)?)(ns|us|µs|ms|s|m|h)")
DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def train_words(command: str | None, remainder: str, argv: list[str] | None = None) -> list[str]:
    """What the train service gets: the words after `--` exactly as the shell gave them (from `argv`; invoke itself
    hands tasks only those words joined by spaces, `remainder`), or `--command "WORDS"` split as a shell would split
    it, but never by a shell."""
    if command is not None and remainder.strip():
        raise BadInput(f"give the train service's arguments once: after `--` ({remainder!r}) or --command, not both")
    argv = sys.argv if argv is None else argv
    if command is None and "--" in argv:
        after = argv[argv.index("--") + 1 :]
        if " ".join(after) == remainder:
            return after
    text = command if command is not None else remainder
    try:
        return shlex.split(text)
    except ValueError as error:
        raise BadInput(f"cannot split {text!r} into words ({error}): close the quote") from None


def is_trainer(words: list[str]) -> bool:
    """The train service's contract (payload/entrypoint.py): nothing, or options first, is the built-in trainer."""
    return not words or words[0].startswith("-")


def option(words: list[str], name: str) -> str | None:
    """The last value of `--name VALUE` or `--name=VALUE` among the trainer's options, as argparse takes it."""
    found = None
    for index, word in enumerate(words):
        if word == name and index + 1 < len(words):
            found = words[index + 1]
        elif word.startswith(name + "="):
            found = word.partition("=")[2]
    return found


def trainer_run(words: list[str], framework: str) -> str | None:
    """The run the built-in trainer writes to, named by train.py's own rule; None where it refuses the name."""
    trainer = payload.load("train")
    try:
        framework = option(words, "--framework") or framework
        return trainer.run_name(framework, "--synthetic" in words, option(words, "--run"))
    except trainer.UsageError:
        return None


def duration_seconds(text: str | None, default: float = DEFAULT_GRACE_S) -> float:
    """A compose duration (`docker compose config` writes Go's: 1m0s, 90s, 1m30s, 500ms) in seconds."""
    parts = DURATION.findall(text or "")
    if not parts or "".join(number + unit for number, unit in parts) != (text or "").strip():
        return default
    return sum(float(number) * DURATION_UNITS[unit] for number, unit in parts)


def host_path(mounts: list[dict], inside: PurePosixPath) -> Path | None:
    """Where a path inside the container lies on this host, through the container's bind mounts (the deepest)."""
    best = None
    for mount in mounts:
        target = PurePosixPath(mount.get("Destination") or mount.get("Target") or "/nonexistent")
        below = inside == target or target in inside.parents
        if below and mount.get("Source") and (best is None or len(target.parts) > len(best[0].parts)):
            best = (target, Path(mount["Source"]))
    return best[1] / inside.relative_to(best[0]) if best else None


def stop_event(lines: list[str], since: float) -> dict | None:
    """The trainer's last `stop` event written at or after `since` (a Unix time), from metrics.jsonl's lines."""
    for line in reversed(lines):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "stop" and float(event.get("time", 0)) >= since:
            return event
    return None


def shown(path: Path, here: Path | None = None) -> str:
    """A folder as the user would type it: relative to where they stand when it is below, else absolute."""
    here = here or Path.cwd()
    try:
        return str(path.relative_to(here))
    except ValueError:
        return str(path)


@dataclass
class Outcome:
    """How the container ended after the signal."""

    sig: signal.Signals
    name: str
    code: int | None = None  # the container's exit code; None when unknown
    started: bool = True  # False: the signal came before compose created the container
    stopped_after_s: float | None = None  # set when it outlived the grace period and `docker stop` ended it
    trainer: bool = True
    run: str | None = None
    folder: str | None = None  # the run folder as shown to the user
    event: dict | None = None  # the trainer's `stop` event


def caught(sig: signal.Signals) -> str:
    return f"{CAUGHT[sig]} ({sig.name})"


def sent(sig: signal.Signals) -> signal.Signals:
    """What the container gets: SIGINT for Ctrl-C (train.py records it as such), SIGTERM for anything else."""
    return signal.SIGINT if sig == signal.SIGINT else signal.SIGTERM


def outcome_message(outcome: Outcome) -> str:
    """The last line of `invoke train` after a signal (without the `labstack: ` its caller adds)."""
    what, name = caught(outcome.sig), outcome.name
    if not outcome.started:
        return f"{what} before the container {name} started: nothing ran; run the same command again to start"
    if outcome.stopped_after_s is not None:
        kept = f"; {outcome.folder} keeps its last checkpoint" if outcome.trainer and outcome.folder else ""
        return (
            f"{what}: {name} did not exit within {outcome.stopped_after_s:.0f} s of {sent(outcome.sig).name} "
            f"(STOP_GRACE_PERIOD plus {MARGIN_S:.0f} s), so it was stopped with `docker stop`{kept}"
        )
    exited = f"exit {outcome.code}" if outcome.code is not None else "exit code unknown"
    if outcome.trainer and outcome.event:
        event = outcome.event
        return (
            f"{what}: run {outcome.run} checkpointed at epoch {event.get('epoch')}, sample {event.get('sample')} "
            f"({outcome.folder}); run the same command again to resume"
        )
    if outcome.trainer and outcome.code == 0:
        return f"{what}: run {outcome.run} had finished ({exited}); nothing to resume"
    if outcome.trainer:
        where = f" in {outcome.folder}/metrics.jsonl" if outcome.folder else ""
        return f"{what}: {name} ended ({exited}) without recording a checkpoint{where}"
    return f"{what}: {name} (your command) ended after {sent(outcome.sig).name} ({exited})"


class Signals:
    """SIGTERM, SIGINT and SIGHUP to this process, recorded instead of raised while the container runs."""

    def __init__(self) -> None:
        self.received: list[signal.Signals] = []
        self.previous: dict = {}

    def __enter__(self) -> Signals:
        for sig in CAUGHT:
            self.previous[sig] = signal.signal(sig, self._record)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _record(self, signum, frame) -> None:
        self.received.append(signal.Signals(signum))

    @property
    def first(self) -> signal.Signals | None:
        return self.received[0] if self.received else None


def train_service(project: Project) -> dict:
    """The train service as compose resolves it for this project (image, stop grace period), by `config`."""
    command = project.command("config", "--format", "json")
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        why = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
        raise LabstackError(f"docker compose cannot read the train service ({why}): `{shell_line(command, {})}`")
    return json.loads(result.stdout)["services"][SERVICE]


def check_gpu_image(ref: str, labels: dict[str, str]) -> tuple[str, str]:
    """(framework, variant) of a labstack image that --gpu can run: a CUDA one; else the fix, in one line."""
    framework, variant = labels.get(FRAMEWORK_LABEL, ""), labels.get("labstack.variant", "")
    if variant != "cuda":
        raise BadInput(
            f"--gpu runs the train service on the GPU, but its image {ref} is the {variant or 'unknown'} variant: set "
            f"TRAIN_IMAGE in .env to the CUDA lab image (e.g. `invoke build --variant cuda` builds "
            f"labstack/{framework or 'torch'}:VERSION-cudaX-lab)"
        )
    return framework, variant


def train(
    command: str | None,
    remainder: str,
    project_name: str | None = None,
    env_file: str | None = None,
    gpu: bool = False,
) -> int:
    """`invoke train`: run the train service with WORDS in the foreground (with the GPU overlay and after the GPU
    preflight, for --gpu); its exit code, or after a signal, one LabstackError with 128 + the signal's number."""
    words = train_words(command, remainder)
    env_path = compose_options(project_name, env_file)  # as up-* and down check them, before Docker is asked
    check_compose()
    client = connect()
    project = Project(project_from_env(env_path, project_name), env_path, gpu=gpu)
    service = train_service(project)
    image = service.get("image", "")
    found = image_or_none(client, image)
    if found is None:
        raise LabstackError(
            f"the train service's image {image} is not built here: `invoke build` builds the lab images, or set "
            "TRAIN_IMAGE (`invoke env --framework ...` writes it to .env)"
        )
    labels = found.labels or {}
    refused = missing_payload(image, labels)
    if refused:  # the service's entrypoint is labstack's, for the lab's own command too
        raise BadInput(f"the train service's image {refused} (TRAIN_IMAGE in .env)")
    if gpu:
        matrix = load_matrix()
        framework, variant = check_gpu_image(image, labels)
        gpu_preflight(client, matrix.image(framework, variant), matrix)
    grace = duration_seconds(service.get("stop_grace_period"))
    name = f"{project.name}-train-{secrets.token_hex(4)}"
    full = project.command("run", "--rm", "--name", name, SERVICE, *words)
    print("$ " + shell_line(full, {}), flush=True)
    with Signals() as signals:
        # Without a terminal, compose gets a session of its own: a signal to our process group (timeout, Slurm, CI)
        # then reaches us only, and compose goes on showing the container's output while it checkpoints. With a
        # terminal it stays in ours, the terminal's foreground group, so that the terminal works as it always does.
        client_process = subprocess.Popen(full, start_new_session=not sys.stdin.isatty())
        code = None
        attrs = None  # the container as Docker describes it, looked up once compose has created it
        looked = 0.0
        while code is None and signals.first is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = client_process.wait(timeout=POLL_S)
            if attrs is None and time.monotonic() - looked > LOOK_S:
                attrs, looked = inspect(client, name), time.monotonic()
        if signals.first is None:
            return code or 0
        run = Run(client, name, client_process, signals, grace, words)
        outcome = run.stop(attrs or run.find())
    raise LabstackError(outcome_message(outcome), code=128 + outcome.sig.value)


def inspect(client: docker.DockerClient, name: str) -> dict | None:
    try:
        return client.api.inspect_container(name)
    except docker.errors.NotFound:
        return None


@dataclass
class Run:
    """The run's container after a signal: signal it, show its output until it exits, say how it ended."""

    client: docker.DockerClient
    name: str
    client_process: subprocess.Popen
    signals: Signals
    grace: float
    words: list[str]

    def find(self) -> dict | None:
        """The container, once compose has created it; None when compose ended without one."""
        deadline = time.monotonic() + FIND_S
        while (attrs := inspect(self.client, self.name)) is None:
            if self.client_process.poll() is not None or time.monotonic() > deadline:
                return None
            time.sleep(POLL_S)
        return attrs

    def stop(self, attrs: dict | None) -> Outcome:
        sig = self.signals.first
        assert sig is not None
        signalled_at = time.time()
        outcome = Outcome(sig, self.name, trainer=is_trainer(self.words))
        if attrs is None:
            outcome.started = False
            return outcome
        cid = attrs["Id"]
        if outcome.trainer:
            self.describe_run(outcome, attrs)
        api = self.client.api
        with contextlib.suppress(docker.errors.APIError):  # one that has just exited cannot be signalled
            api.kill(cid, signal=sent(sig).name)
        follower = None
        noted = 1
        deadline = time.monotonic() + self.grace + MARGIN_S
        while True:
            state = container_state(self.client, cid)
            if state is None or state["Status"] in ("exited", "dead"):
                break
            if state["Status"] == "created" and self.client_process.poll() is not None:
                remove(self.client, cid)  # compose ended between creating and starting it
                outcome.started = False
                return outcome
            if follower is None and self.client_process.poll() is not None:
                follower = follow_logs(self.client, cid, signalled_at)  # compose died with us: show it ourselves
            if len(self.signals.received) > noted:
                noted = len(self.signals.received)
                print(
                    f"labstack: {self.signals.received[-1].name} again: still waiting up to "
                    f"{deadline - time.monotonic():.0f} s for {self.name} to checkpoint and exit; "
                    f"`docker kill {self.name}` ends it at once, without a checkpoint",
                    file=sys.stderr,
                    flush=True,
                )
            if time.monotonic() > deadline:
                outcome.stopped_after_s = self.grace + MARGIN_S
                with contextlib.suppress(docker.errors.APIError):
                    api.stop(cid, timeout=STOP_KILL_S)
                state = container_state(self.client, cid)
                break
            time.sleep(POLL_S)
        outcome.code = exit_code(self.client, cid, state, signalled_at)
        self.end_client()
        if follower is not None:
            follower.join(timeout=5)
        sys.stdout.flush()
        remove(self.client, cid)
        if outcome.trainer and outcome.folder:
            metrics = Path(outcome.folder) / "metrics.jsonl"
            with contextlib.suppress(OSError, UnicodeDecodeError):
                outcome.event = stop_event(metrics.read_text().splitlines(), signalled_at - 1)
        return outcome

    def describe_run(self, outcome: Outcome, attrs: dict) -> None:
        """The built-in trainer's run and its folder on this host, from the container's settings and mounts."""
        config = attrs.get("Config") or {}
        environment = dict(item.partition("=")[::2] for item in config.get("Env") or [])
        labels = config.get("Labels") or {}
        framework = environment.get("FRAMEWORK") or labels.get("labstack.framework") or "torch"
        outcome.run = trainer_run(self.words, framework)
        inside = PurePosixPath(option(self.words, "--runs") or RUNS_IN_CONTAINER)
        runs = host_path(attrs.get("Mounts") or [], inside)
        if runs and outcome.run:
            outcome.folder = shown(runs / outcome.run)

    def end_client(self) -> None:
        """Compose, if it still runs, removes the container (--rm) and exits once it has; else it is stopped."""
        if self.client_process.poll() is not None:
            return
        try:
            self.client_process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.client_process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.client_process.wait(timeout=10)


def container_state(client: docker.DockerClient, container_id: str) -> dict | None:
    """The container's State, or None once it is gone (compose's --rm removes it when it exits)."""
    attrs = inspect(client, container_id)
    return attrs["State"] if attrs else None


def exit_code(client: docker.DockerClient, container_id: str, state: dict | None, since: float) -> int | None:
    """The container's exit code: from its state, or, once it is removed, from the daemon's `die` event."""
    if state and state["Status"] in ("exited", "dead"):
        return int(state["ExitCode"])
    with contextlib.suppress(docker.errors.APIError, ValueError):
        events = client.events(
            since=int(since) - 1,
            until=int(time.time()) + 1,
            filters={"container": container_id, "event": "die"},
            decode=True,
        )
        for event in events:
            code = (event.get("Actor") or {}).get("Attributes", {}).get("exitCode")
            if code is not None:
                return int(code)
    return None


def follow_logs(client: docker.DockerClient, container_id: str, since: float) -> threading.Thread:
    """Copy the container's output from `since` on to our stdout, until it exits, in a thread."""

    def copy() -> None:
        with contextlib.suppress(docker.errors.APIError, OSError, ValueError):
            stream = client.api.logs(container_id, stream=True, follow=True, stdout=True, stderr=True, since=since)
            for chunk in stream:
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()

    thread = threading.Thread(target=copy, daemon=True)
    thread.start()
    return thread


def remove(client: docker.DockerClient, container_id: str) -> None:
    """Remove the container if the daemon (AutoRemove, from compose's --rm) has not already."""
    with contextlib.suppress(docker.errors.APIError):
        client.api.remove_container(container_id, force=True)
