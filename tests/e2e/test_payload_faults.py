"""Bad data and a runs folder that fills up, for real: the `data` and `train` services of compose on the CPU lab
images, a damaged gzip archive and a binary SHA256SUMS in the data folder (torch), and a tmpfs as RUNS_DIR that the
trainer fills (torch and TensorFlow). Each ends in one `labstack:` line, never a traceback; a full disk never costs
the last checkpoint."""

from __future__ import annotations

import json

import pytest

from labstack.build.images import build_images
from labstack.build.layers import LAB, build_layer, layer_ref
from labstack.errors import ExitCode
from tests.faults import BINARY_SUMS, damaged_data, gzipped_stand_in, leave_free, small_tmpfs

from .conftest import MATRIX, TEST_GID, TEST_UID, labstack_lines

FRAMEWORKS = ["torch", "tensorflow"]
CPU_IMAGES = [MATRIX.image(framework, "cpu") for framework in FRAMEWORKS]
CHECKPOINT = {"torch": "checkpoint.pt", "tensorflow": "checkpoint.npz"}


@pytest.fixture(scope="module")
def images():
    """The CPU lab images (torch is the `stack` fixture's TRAIN_IMAGE); no notebook image, which these tests
    do not start."""
    build_images(MATRIX, CPU_IMAGES)
    for image in CPU_IMAGES:
        build_layer(MATRIX, image, LAB, parent_built=True)
    return {image.framework: image for image in CPU_IMAGES}


def assert_one_line(result, code: int, *words: str) -> str:
    lines = labstack_lines(result.stderr)
    assert result.returncode == code, result.stderr
    assert len(lines) == 1 and lines[0].startswith("labstack: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def damaged(tmp_path):
    folder = damaged_data(tmp_path / "damaged")
    folder.chmod(0o755)
    return folder


DAMAGED = "labstack: /data/train-images-idx3-ubyte.gz is a damaged gzip file ("


def test_the_data_service_says_one_line_for_a_damaged_gzip_body(stack, damaged):
    result = stack.compose("--profile", "tools", "run", "--rm", "data", "verify", "/data",
                           env={"DATA_DIR": str(damaged)})  # fmt: skip
    assert_one_line(result, 2, DAMAGED, "invoke data --download")


def test_training_on_a_damaged_gzip_body_is_one_line_and_writes_nothing(stack, damaged):
    result = stack.train("--epochs", "1", check=False, env={"DATA_DIR": str(damaged)})
    assert_one_line(result, 2, DAMAGED)
    assert not any(stack.runs.iterdir()), "a failed start left files in the runs folder"


def test_a_binary_sha256sums_is_one_line_for_the_data_service_and_training(stack, tmp_path):
    folder = gzipped_stand_in(tmp_path / "binary-sums")
    (folder / "SHA256SUMS").write_bytes(BINARY_SUMS)
    folder.chmod(0o755)
    env = {"DATA_DIR": str(folder)}
    words = "labstack: /data/SHA256SUMS line 1 is not text (a damaged or binary file): delete it"
    assert_one_line(stack.compose("--profile", "tools", "run", "--rm", "data", "verify", "/data", env=env), 2, words)
    assert_one_line(stack.train("--epochs", "1", check=False, env=env), 2, words)


MIB = 1 << 20


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_runs_folder_that_fills_up_keeps_the_checkpoint_says_one_line_and_resumes(stack, images, tmp_path, framework):
    run = f"synthetic-{framework}"
    with small_tmpfs(tmp_path / "small-runs", 8 * MIB, owner=(TEST_UID, TEST_GID)) as runs:
        env = {"RUNS_DIR": str(runs), "TRAIN_IMAGE": layer_ref(images[framework], "lab")}
        stack.train("--synthetic", "--epochs", "1", env=env)
        checkpoint = runs / run / CHECKPOINT[framework]
        kept = checkpoint.read_bytes()
        # Room for the metrics lines, not for the next checkpoint's temp file beside this one.
        ballast = leave_free(runs, len(kept) // 2)

        full = stack.train("--synthetic", "--epochs", "3", check=False, env=env)
        inside = f"/runs/{run}/{CHECKPOINT[framework]}"
        assert_one_line(
            full,
            ExitCode.NO_DISK,
            f"labstack: cannot write {inside} (No space left on device): the last good checkpoint (epoch 1) is intact "
            f"in {inside}; free space in the runs folder, or move the run folder to a disk with room and point "
            "RUNS_DIR there, then run the same command again to resume",
        )
        assert checkpoint.read_bytes() == kept, "the checkpoint changed"
        assert sorted(p.name for p in (runs / run).iterdir()) == [
            CHECKPOINT[framework], "environment.jsonl", "metrics.jsonl", "train.lock"
        ], "a temp file was left"  # fmt: skip
        lines = (runs / run / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["event"] for line in lines][-2:] == ["start", "first_step"]

        ballast.unlink()  # the user frees space
        resumed = stack.train("--synthetic", "--epochs", "2", env=env)
        assert f"resuming from {CHECKPOINT[framework]} at epoch 2" in resumed.stdout, resumed.stdout
        metrics = [json.loads(line) for line in (runs / run / "metrics.jsonl").read_text().splitlines()]
        assert [m["epoch"] for m in metrics if m["event"] == "epoch"] == [1, 2]
        assert [m["from_epoch"] for m in metrics if m["event"] == "start"] == [0, 1, 1]
