"""Bad data ends in one `labstack:` line from the payload's mnist.py, for `invoke data`, the program itself and
training alike, never a traceback: a gzip archive whose body is damaged (a SHA256SUMS written with `sha256sum`
vouches for it anyway) and a SHA256SUMS that is binary junk. tests/e2e/test_payload_faults.py runs the same in the
images."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from labstack import payload
from tests.faults import BINARY_SUMS, damaged_data, gzipped_stand_in
from tests.invoking import assert_one_line_failure, run_invoke

mnist = payload.load("mnist")
TIMEOUT = 120


@pytest.fixture
def damaged(tmp_path) -> Path:
    return damaged_data(tmp_path / "data")


DAMAGED = "train-images-idx3-ubyte.gz is a damaged gzip file ("


def test_a_damaged_gzip_body_is_one_data_error_for_verify_load_and_record(damaged):
    for step in (mnist.verify, mnist.load, mnist.record):
        with pytest.raises(mnist.DataError) as err:
            step(damaged)
        assert DAMAGED in str(err.value) and "invoke data --download" in str(err.value), step.__name__
        assert err.value.code == 2


def test_the_mnist_program_says_one_line_for_a_damaged_gzip_body(damaged):
    result = subprocess.run(
        [sys.executable, str(payload.path("mnist")), "verify", str(damaged)],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert_one_line_failure(result, 2, DAMAGED)


def test_invoke_data_verify_says_one_line_for_a_damaged_gzip_body(damaged):
    assert_one_line_failure(run_invoke("data", "--verify", "--folder", str(damaged)), 2, DAMAGED)


def test_invoke_data_record_says_one_line_for_a_damaged_gzip_body(damaged):
    assert_one_line_failure(run_invoke("data", "--record", "--folder", str(damaged)), 2, DAMAGED)


# Binary junk, and a good sidecar whose last line is NUL bytes (as a file cut short by a crash can end).
@pytest.mark.parametrize(("kind", "line"), [("binary", 1), ("nul-line", 5)])
def test_a_binary_sha256sums_is_one_line_naming_it(tmp_path, kind, line):
    folder = gzipped_stand_in(tmp_path / "data")
    sums = folder / mnist.SUMS
    sums.write_bytes(BINARY_SUMS if kind == "binary" else sums.read_bytes() + b"\0" * 40 + b"\n")
    with pytest.raises(mnist.DataError) as err:
        mnist.verify(folder)
    assert f"{sums} line {line} is not text (a damaged or binary file): delete it" in str(err.value)
    result = run_invoke("data", "--verify", "--folder", str(folder))
    assert_one_line_failure(result, 2, f"SHA256SUMS line {line} is not text", "invoke data --record")
    mnist.record(folder)  # the fix the line names
    assert mnist.verify(folder)[1] == mnist.SUMS
