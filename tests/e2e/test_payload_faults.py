"""Bad data, for real: the `data` and `train` services of compose on the torch CPU lab image, with a damaged gzip
archive or a binary SHA256SUMS in the data folder. Each ends in one `labstack:` line, never a traceback."""

from __future__ import annotations

import pytest

from labstack.build.images import build_images
from labstack.build.layers import LAB, build_layer
from tests.faults import BINARY_SUMS, damaged_data, gzipped_stand_in

from .conftest import MATRIX, labstack_lines

TORCH_CPU = MATRIX.image("torch", "cpu")


@pytest.fixture(scope="module")
def images():
    """Only the torch CPU lab image (the `stack` fixture's TRAIN_IMAGE): these tests need no other."""
    build_images(MATRIX, [TORCH_CPU])
    build_layer(MATRIX, TORCH_CPU, LAB, parent_built=True)
    return {"torch": TORCH_CPU}


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
