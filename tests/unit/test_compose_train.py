"""`invoke train`'s pure parts: the words the train service gets, the run it writes to, where that is on this host,
and the last line after a signal. The signals themselves are driven for real in tests/e2e/test_train_signals.py."""

from __future__ import annotations

import json
import signal
from pathlib import Path, PurePosixPath

import pytest

from labstack.compose.train import (
    Outcome,
    duration_seconds,
    host_path,
    is_trainer,
    outcome_message,
    shown,
    stop_event,
    train_words,
    trainer_run,
)
from labstack.errors import BadInput
from tests.invoking import assert_one_line_failure, run_invoke

NO_DOCKER = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


@pytest.mark.parametrize(
    ("command", "remainder", "words"),
    [
        (None, "", []),
        (None, "--synthetic --epochs 3", ["--synthetic", "--epochs", "3"]),
        ("python my_train.py --name 'a b'", "", ["python", "my_train.py", "--name", "a b"]),
        (None, "python -c 'print(1)'", ["python", "-c", "print(1)"]),
    ],
)
def test_train_words_split_like_a_shell_but_without_one(command, remainder, words):
    assert train_words(command, remainder, argv=[]) == words


def test_the_words_after_the_double_dash_are_taken_as_the_shell_gave_them():
    argv = ["invoke", "train", "--project", "p", "--", "python", "-c", "print('a b')"]
    assert train_words(None, "python -c print('a b')", argv) == ["python", "-c", "print('a b')"]
    # Called otherwise than from this command line: the remainder invoke gives, split.
    assert train_words(None, "--epochs 3", argv) == ["--epochs", "3"]


def test_train_words_given_twice_or_unclosed_are_bad_input():
    with pytest.raises(BadInput, match="after `--`"):
        train_words("--epochs 3", "--epochs 4", argv=[])
    with pytest.raises(BadInput, match="close the quote"):
        train_words(None, "python 'x", argv=[])


def test_the_trainer_or_your_command_by_the_service_contract():
    assert is_trainer([]) and is_trainer(["--epochs", "3"])
    assert not is_trainer(["python", "my_train.py", "--epochs", "3"])


@pytest.mark.parametrize(
    ("words", "run"),
    [
        ([], "mnist-torch"),
        (["--synthetic", "--epochs", "3"], "synthetic-torch"),
        (["--synthetic", "--framework", "tensorflow"], "synthetic-tensorflow"),
        (["--framework=tensorflow"], "mnist-tensorflow"),
        (["--run", "a", "--synthetic", "--run=b"], "b"),
        (["--run", "../elsewhere"], None),  # train.py refuses it: no folder to name
    ],
)
def test_trainer_run_is_the_folder_train_py_writes(words, run):
    assert trainer_run(words, "torch") == run


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1m0s", 60), ("90s", 90), ("1m30s", 90), ("500ms", 0.5), ("1h", 3600), (None, 60), ("soon", 60), ("", 60)],
)
def test_compose_durations_in_seconds(text, seconds):
    assert duration_seconds(text) == seconds


def test_host_path_follows_the_deepest_bind_mount():
    mounts = [
        {"Source": "/home/lab/runs", "Destination": "/runs"},
        {"Source": "/scratch/big", "Destination": "/runs/big"},
        {"Source": "/home/lab/code", "Destination": "/work"},
    ]
    assert host_path(mounts, PurePosixPath("/runs")) == Path("/home/lab/runs")
    assert host_path(mounts, PurePosixPath("/runs/big/x")) == Path("/scratch/big/x")
    assert host_path(mounts, PurePosixPath("/runsx")) is None
    assert host_path([], PurePosixPath("/runs")) is None


def line(event: str, at: float, **values) -> str:
    return json.dumps({"event": event, "time": at, **values})


def test_stop_event_is_the_last_one_since_the_signal():
    lines = [
        line("stop", 100.0, signal="SIGTERM", epoch=1, sample=64),
        line("start", 200.0),
        "not json",
        line("step", 201.0, epoch=1, sample=320),
        line("stop", 202.0, signal="SIGTERM", epoch=1, sample=384),
        "",
    ]
    assert stop_event(lines, 150.0)["sample"] == 384
    assert stop_event(lines[:2], 150.0) is None  # an earlier run's stop is not this one's


def test_shown_is_relative_below_here_else_absolute():
    assert shown(Path("/w/lab/runs/x"), Path("/w/lab")) == "runs/x"
    assert shown(Path("/tmp/runs/x"), Path("/w/lab")) == "/tmp/runs/x"


TERM, INT, HUP = signal.SIGTERM, signal.SIGINT, signal.SIGHUP


@pytest.mark.parametrize(
    ("outcome", "message"),
    [
        (
            Outcome(TERM, "p-train-1", 143, run="synthetic-torch", folder="runs/synthetic-torch",
                    event={"epoch": 2, "sample": 640}),
            "terminated (SIGTERM): run synthetic-torch checkpointed at epoch 2, sample 640 (runs/synthetic-torch); "
            "run the same command again to resume",
        ),
        (
            Outcome(INT, "p-train-1", 130, run="mnist-torch", folder="runs/mnist-torch", event={"epoch": 1,
                    "sample": 64}),
            "interrupted (SIGINT): run mnist-torch checkpointed at epoch 1, sample 64 (runs/mnist-torch); run the "
            "same command again to resume",
        ),
        (
            Outcome(HUP, "p-train-1", 0, run="mnist-torch", folder="runs/mnist-torch"),
            "hung up (SIGHUP): run mnist-torch had finished (exit 0); nothing to resume",
        ),
        (
            Outcome(TERM, "p-train-1", 143, run="mnist-torch", folder="runs/mnist-torch"),
            "terminated (SIGTERM): p-train-1 ended (exit 143) without recording a checkpoint in "
            "runs/mnist-torch/metrics.jsonl",
        ),
        (
            Outcome(TERM, "p-train-1", 143, trainer=False),
            "terminated (SIGTERM): p-train-1 (your command) ended after SIGTERM (exit 143)",
        ),
        (
            Outcome(HUP, "p-train-1", None, trainer=False),
            "hung up (SIGHUP): p-train-1 (your command) ended after SIGTERM (exit code unknown)",
        ),
        (
            Outcome(TERM, "p-train-1", started=False),
            "terminated (SIGTERM) before the container p-train-1 started: nothing ran; run the same command again "
            "to start",
        ),
        (
            Outcome(TERM, "p-train-1", 137, stopped_after_s=90, run="mnist-torch", folder="runs/mnist-torch"),
            "terminated (SIGTERM): p-train-1 did not exit within 90 s of SIGTERM (STOP_GRACE_PERIOD plus 30 s), so "
            "it was stopped with `docker stop`; runs/mnist-torch keeps its last checkpoint",
        ),
    ],
)  # fmt: skip
def test_the_last_line_after_a_signal(outcome, message):
    assert outcome_message(outcome) == message


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--command", "--epochs 3", "--", "--epochs", "4"], "or --command, not both"),
        (["--command", "python 'x"], "close the quote"),
        (["--env-file", "/nonexistent/test.env"], "--env-file /nonexistent/test.env does not exist"),
    ],
)
def test_bad_train_input_is_one_line_before_docker_is_asked(args, words):
    result = run_invoke("train", *args, env=NO_DOCKER)
    assert_one_line_failure(result, 2, words)


def test_train_without_docker_is_one_line():
    result = run_invoke("train", "--", "--synthetic", env=NO_DOCKER)
    assert_one_line_failure(result, 3, "cannot reach the Docker daemon")
