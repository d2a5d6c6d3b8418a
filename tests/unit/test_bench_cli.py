"""`invoke benchmark` as a user types it: bad input is one `labstack:` line and a non-zero exit, before any
container starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_cli import assert_one_line_failure, run_invoke


def test_benchmark_is_listed_with_a_description():
    line = next(line for line in run_invoke("--list").stdout.splitlines() if line.strip().startswith("benchmark "))
    assert "GPU" in line


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--workloads", "mnist"], ["unknown workload mnist", "choose from matmul, mnist_cnn"]),
        (["--framework", "jax"], ["unknown framework jax"]),
        (["--variant", "rocm"], ["unknown variant rocm: choose from cpu, cuda, auto or all"]),
        (["--variant", "auto,cpu"], ["auto chooses the variants itself"]),
        (["--repeat", "0"], ["--repeat 0"]),
        (["--cpus", "two"], ["--cpus two"]),
        (["--cpus", "nan"], ["--cpus nan: give a number of CPUs"]),
        (["--cpus", "inf"], ["--cpus inf: give a number of CPUs"]),
        (["--out", "/proc/version/report"], ["--out /proc/version/report: cannot write there"]),
        (["--compare", "/nonexistent/old.json"], ["--compare file /nonexistent/old.json does not exist"]),
    ],
)
def test_bad_input_is_one_line_with_exit_2(args, words):
    # no Docker: every one of these is refused before Docker is asked (exit 3 would mean it was not)
    assert_one_line_failure(run_invoke("benchmark", *args, env=NO_DOCKER), 2, *words)


NO_DOCKER = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


@pytest.mark.parametrize(
    "body",
    [
        '{"schema": "labstack-benchmark/1", "runs": [{"framework": "torch", "device": "cpu", "results": '
        '[{"workload": "transformer", "precision": "fp32", "unit": "x", "throughput": 1, "config": "big"}]}]}',
        '{"schema": "labstack-benchmark/1", "runs": ["a run"]}',
        '{"schema": "labstack-benchmark/1", "runs": [{"framework": "torch", "device": "cpu", "threads": [1], '
        '"results": [{"workload": "mnist_cnn", "precision": "fp32", "unit": "x", "throughput": 1}]}]}',
    ],
)
def test_a_compare_file_with_the_schema_and_a_wrong_body_is_refused_before_measuring(tmp_path, body):
    old = tmp_path / "old.json"
    old.write_text(body)
    result = run_invoke("benchmark", "--compare", str(old), env=NO_DOCKER)
    assert_one_line_failure(result, 2, "is not a labstack benchmark JSON", "of the wrong kind")


def test_a_compare_file_that_is_not_a_benchmark_is_refused(tmp_path):
    old = tmp_path / "old.json"
    old.write_text('{"hello": 1}')
    assert_one_line_failure(run_invoke("benchmark", "--compare", str(old)), 2, "not a labstack benchmark JSON")


def test_no_docker_daemon():
    result = run_invoke("benchmark", "--quick", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert_one_line_failure(result, 3, "cannot reach the Docker daemon")


def test_results_that_cannot_be_written_where_asked_are_written_elsewhere_and_named(tmp_path, monkeypatch):
    """The disk filled (or the folder went away) after measuring: the results are kept, and the line says where."""
    import json
    import re

    from labstack.bench.run import write_json
    from labstack.errors import LabstackError

    monkeypatch.setenv("TMPDIR", str(tmp_path / "rescue"))
    (tmp_path / "rescue").mkdir()
    blocked = tmp_path / "a-file"
    blocked.write_text("")  # the report folder's name is taken by a file
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    with pytest.raises(LabstackError, match=r"cannot write .*a-file/benchmark.json .*the results are in ") as err:
        write_json({"runs": [1, 2]}, blocked)
    rescued = re.search(r"the results are in (\S+)$", str(err.value)).group(1)
    assert json.loads(Path(rescued).read_text()) == {"runs": [1, 2]} and rescued.startswith(str(tmp_path / "rescue"))
