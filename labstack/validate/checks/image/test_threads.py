"""The thread rule: under a CPU limit the framework's pools fit the limit, the user's own variables win, and
without a limit nothing is forced. Each case starts a container of the image with that limit (issue 10)."""

from __future__ import annotations

import pytest

from labstack import payload
from labstack.validate.checks.image.conftest import run_payload

VARIABLES = list(payload.load("threads").VARIABLES)
LIMITS = {
    "cpus-1": {"nano_cpus": 1_000_000_000},  # docker run --cpus 1
    "cpuset-0": {"cpuset_cpus": "0"},  # docker run --cpuset-cpus 0
}
# What a user sets for each framework: OMP_NUM_THREADS sizes torch's pool; TensorFlow reads only its own.
USER_SETS = {
    "torch": {"OMP_NUM_THREADS": "2"},
    "tensorflow": {"OMP_NUM_THREADS": "2", "TF_NUM_INTRAOP_THREADS": "2"},
}


def threads_under(client, image, **options) -> dict:
    seen = run_payload(client, image, "probe", "threads", **options)
    pools = seen[image.framework]
    assert pools["available"], pools
    return seen


def skip_on_one_cpu(seen: dict) -> None:
    if seen["cpu_count"] < 2:
        pytest.skip(f"the Docker host has {seen['cpu_count']} CPU: a 1-CPU limit equals it, so nothing is set")


@pytest.mark.parametrize("limit", LIMITS)
def test_a_cpu_limit_sizes_the_framework_pools_to_it(client, image, limit):
    seen = threads_under(client, image, **LIMITS[limit])
    skip_on_one_cpu(seen)
    assert seen["usable_cpus"] == 1, seen
    assert seen["environment"] == dict.fromkeys(VARIABLES, "1")
    pools = seen[image.framework]
    assert pools["intra_op"] == 1, pools
    if image.framework == "tensorflow":
        assert pools["inter_op"] == 1, pools


def test_the_users_thread_variables_win_over_the_limit(client, image):
    user = USER_SETS[image.framework]
    seen = threads_under(client, image, nano_cpus=1_000_000_000, environment=user)
    skip_on_one_cpu(seen)
    environment = seen["environment"]
    assert {name: environment[name] for name in user} == user
    # MKL and OpenBLAS fall back to OMP_NUM_THREADS: filling them in would overrule the user's 2.
    assert environment["MKL_NUM_THREADS"] is None and environment["OPENBLAS_NUM_THREADS"] is None, environment
    assert environment["TF_NUM_INTEROP_THREADS"] == "1", environment
    assert seen[image.framework]["intra_op"] == 2, seen[image.framework]


def test_without_a_limit_nothing_is_forced(client, image):
    seen = threads_under(client, image)
    assert seen["cgroup_cpu_quota"] is None, f"the Docker host gives containers a CPU quota by default: {seen}"
    assert seen["environment"] == dict.fromkeys(VARIABLES), seen["environment"]
    pools = seen[image.framework]
    assert pools["intra_op"] == seen["affinity_cpus"], pools
