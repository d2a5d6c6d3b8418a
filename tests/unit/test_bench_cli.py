"""`invoke benchmark` as a user types it: bad input is one `labstack:` line and a non-zero exit, before any
container starts."""

from __future__ import annotations

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
        (["--compare", "/nonexistent/old.json"], ["--compare file /nonexistent/old.json does not exist"]),
    ],
)
def test_bad_input_is_one_line_with_exit_2(args, words):
    assert_one_line_failure(run_invoke("benchmark", *args), 2, *words)


def test_a_compare_file_that_is_not_a_benchmark_is_refused(tmp_path):
    old = tmp_path / "old.json"
    old.write_text('{"hello": 1}')
    assert_one_line_failure(run_invoke("benchmark", "--compare", str(old)), 2, "not a labstack benchmark JSON")


def test_no_docker_daemon():
    result = run_invoke("benchmark", "--quick", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert_one_line_failure(result, 3, "cannot reach the Docker daemon")
