"""A runs folder (a real tmpfs) that fills up while the trainer writes ends in one `labstack:` line, exit 4, with
the last good checkpoint intact and no half-written file. The trainer runs here as its own process on the host's
Python with a stand-in for the framework (`FakeBackend` below): the same code as in the images but for the model;
tests/e2e/test_payload_faults.py runs it with torch in a container."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from labstack import payload
from labstack.errors import ExitCode
from tests.faults import free_bytes, leave_free, small_tmpfs
from tests.invoking import assert_one_line_failure

train = payload.load("train")
TIMEOUT = 120
# A tmpfs gives and takes space in whole pages: small appends fill the page a file already has, so `leave_free`
# and the sizes below are counted in pages.
PAGE = 4096


def test_the_trainer_exit_code_for_a_full_disk_is_labstacks():
    assert train.NO_DISK == ExitCode.NO_DISK and train.FAILED == ExitCode.FAILED


def test_an_append_that_fills_the_disk_mid_line_leaves_the_file_as_it_was(tmp_path):
    with small_tmpfs(tmp_path / "runs", 16 * PAGE) as runs:
        metrics = runs / "metrics.jsonl"
        before = (json.dumps({"event": "start", "pad": "x" * (PAGE - 200)}) + "\n").encode()
        metrics.write_bytes(before)
        leave_free(runs, 0)
        # The line fits the last 100-odd bytes of the file's page only in part: the write stops mid-line.
        with pytest.raises(train.WriteFailed) as err:
            train.append_line(metrics, json.dumps({"event": "step", "pad": "y" * 500}))
        assert err.value.out_of_space and str(err.value) == f"cannot write {metrics} (No space left on device)"
        assert metrics.read_bytes() == before


def test_a_checkpoint_that_does_not_fit_leaves_the_old_one_and_no_temp_file(tmp_path):
    with small_tmpfs(tmp_path / "runs", 64 * PAGE) as runs:
        path = runs / "checkpoint.pt"
        train.save_atomic(path, lambda handle: handle.write(b"old" * 1000))
        leave_free(runs, 8 * PAGE)

        def like_torch_save(handle):
            """torch.save meets the full disk as an OSError and raises a RuntimeError about zip positions."""
            try:
                for _ in range(40):
                    handle.write(b"n" * PAGE)
                    handle.flush()
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1 vs 2") from None

        with pytest.raises(train.WriteFailed) as err:
            train.save_atomic(path, like_torch_save)
        assert err.value.out_of_space and err.value.path == path
        assert path.read_bytes() == b"old" * 1000
        assert sorted(p.name for p in runs.iterdir()) == ["ballast", "checkpoint.pt"]

        def bug(handle):
            raise ValueError("a bug in the writer")

        with pytest.raises(ValueError, match="a bug in the writer"):  # not taken for a full disk
            train.save_atomic(path, bug)


# The trainer as a process of its own, on the host's Python: the framework is the one thing replaced.
FAKE_TRAINER = """
import json, sys
from dataclasses import asdict
sys.path.insert(0, sys.argv.pop(1))
import train

CHECKPOINT_BYTES = int(sys.argv.pop(1))


class FakeBackend:
    name = "torch"

    def __init__(self, data, lr, seed):
        self.count = data.train.count

    def device_record(self):
        return {"device": "cpu", "threads": 1}

    def order(self, seed, epoch):
        return list(range(self.count))

    def train_batch(self, indices):
        return 1.0

    def accuracy(self):
        return 0.5

    def save(self, path, progress):
        body = json.dumps(asdict(progress)).encode() + b"\\n"
        train.save_atomic(path, lambda handle: handle.write(body.ljust(CHECKPOINT_BYTES, b"\\0")))

    def load(self, path):
        return train.Progress(**json.loads(path.read_bytes().split(b"\\n", 1)[0]))


train.BACKENDS["torch"] = FakeBackend
train.SYNTHETIC_SIZES = (256, 64)
train.choose_framework = lambda requested, manifest: "torch"
sys.exit(train.main(sys.argv[1:]))
"""
CHECKPOINT_PAGES = 40


def run_fake_trainer(runs: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", FAKE_TRAINER, str(payload.PAYLOAD_DIR), str(CHECKPOINT_PAGES * PAGE)]
    return subprocess.run(
        [*command, "--synthetic", "--runs", str(runs), "--batch-size", "64", *args],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip


def test_a_runs_folder_that_fills_up_ends_the_trainer_with_one_line_and_the_checkpoint_resumes(tmp_path):
    with small_tmpfs(tmp_path / "runs", 256 * PAGE) as runs:
        first = run_fake_trainer(runs, "--epochs", "1")
        assert first.returncode == 0, first.stderr
        run = runs / "synthetic-torch"
        checkpoint = run / "checkpoint.pt"
        kept = checkpoint.read_bytes()
        ballast = leave_free(runs, CHECKPOINT_PAGES * PAGE // 2)  # room for metrics, not for the next checkpoint

        full = run_fake_trainer(runs, "--epochs", "3")
        assert_one_line_failure(
            full,
            ExitCode.NO_DISK,
            f"labstack: cannot write {checkpoint} (No space left on device): the last good checkpoint (epoch 1) is "
            f"intact in {checkpoint}; free space in the runs folder, or move the run folder to a disk with room and "
            "point RUNS_DIR there, then run the same command again to resume",
        )
        assert checkpoint.read_bytes() == kept
        assert sorted(p.name for p in run.iterdir()) == [
            "checkpoint.pt", "environment.jsonl", "metrics.jsonl", "train.lock"
        ], "a temp file was left"  # fmt: skip
        [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]

        ballast.unlink()
        assert free_bytes(runs) > 2 * CHECKPOINT_PAGES * PAGE
        resumed = run_fake_trainer(runs, "--epochs", "3")
        assert resumed.returncode == 0, resumed.stderr
        starts = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        starts = [m for m in starts if m["event"] == "start"]
        assert [(m["resumed"], m["from_epoch"]) for m in starts] == [(False, 0), (True, 1), (True, 1)]
        assert json.loads(checkpoint.read_bytes().split(b"\n", 1)[0])["epoch"] == 3


def test_a_runs_folder_full_before_the_first_checkpoint_says_there_is_none(tmp_path):
    with small_tmpfs(tmp_path / "runs", 64 * PAGE) as runs:
        leave_free(runs, 4 * PAGE)  # the lock, environment and metrics files get a page each; no checkpoint fits
        full = run_fake_trainer(runs, "--epochs", "1")
        checkpoint = runs / "synthetic-torch" / "checkpoint.pt"
        words = f"cannot write {checkpoint} (No space left on device): no checkpoint was written yet; free space"
        assert_one_line_failure(full, ExitCode.NO_DISK, words)
        assert full.stderr.rstrip().endswith(", then run the same command again"), "nothing to resume from"
        assert not checkpoint.exists()
