"""The thread rule: under a CPU limit the framework's pools fit the limit, and so do those of the lab image's
stack (numpy, scipy, scikit-learn); the user's own variables win; without a limit nothing is forced. Each
case starts a container of the image with that limit (issue 10)."""

from __future__ import annotations

import json

import pytest

from labstack import payload
from labstack.validate.checks.image.conftest import COMMAND_TIMEOUT, run_payload

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


# Every thread pool the lab stack loads, as threadpoolctl (a scikit-learn dependency) finds them.
LAB_POOLS = (
    "import json, numpy, scipy.linalg, sklearn.cluster, threadpoolctl; "
    "print(json.dumps([(p['internal_api'], p['prefix'], p['num_threads']) for p in threadpoolctl.threadpool_info()]))"
)


def test_under_a_cpu_limit_every_pool_of_the_lab_stack_has_one_thread(client, image, lab_built):
    if image.name not in lab_built:
        pytest.skip(f"no lab image of {image.name} here: `invoke build --framework {image.framework}` builds it")
    if client.info()["NCPU"] < 2:
        pytest.skip("the Docker host has 1 CPU: a 1-CPU limit equals it, so nothing is set")
    out = client.containers.run(
        lab_built[image.name], ["timeout", str(COMMAND_TIMEOUT), "python3", "-W", "ignore", "-c", LAB_POOLS],
        network_mode="none", remove=True, stderr=False, nano_cpus=1_000_000_000,
    )  # fmt: skip
    pools = json.loads(out.decode().strip().splitlines()[-1])
    assert any(api == "openblas" for api, _, _ in pools), pools
    assert [pool for pool in pools if pool[2] != 1] == [], pools
