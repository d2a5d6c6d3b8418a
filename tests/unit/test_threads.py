"""The thread rule (payload/threads.py): the CPU limit read from fake cgroup trees, the variables it sets, and
the startup hook in a real Python process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from labstack import payload

threads = payload.load("threads")
ALL = set(threads.VARIABLES)


def cgroup_tree(tmp_path, files: dict[str, str], own: str = "0::/\n1:cpu,cpuacct:/\n"):
    """A fake /sys/fs/cgroup with FILES (relative path -> content) and a fake /proc/self/cgroup saying OWN."""
    root = tmp_path / "cgroup"
    for relative, content in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(content)
    root.mkdir(exist_ok=True)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(own)
    return {"root": str(root), "proc_self_cgroup": str(proc)}


def test_v1_quota_and_period_give_the_cpus(tmp_path):
    tree = cgroup_tree(tmp_path, {"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"})
    assert threads.cgroup_cpu_quota(**tree) == 1.0


def test_v1_under_the_combined_cpu_cpuacct_mount(tmp_path):
    tree = cgroup_tree(tmp_path, {"cpu,cpuacct/cpu.cfs_quota_us": "50000", "cpu,cpuacct/cpu.cfs_period_us": "100000"})
    assert threads.cgroup_cpu_quota(**tree) == 0.5


def test_v1_without_a_quota_is_no_limit(tmp_path):
    tree = cgroup_tree(tmp_path, {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"})
    assert threads.cgroup_cpu_quota(**tree) is None


def test_v1_in_a_container_whose_own_path_is_the_hosts(tmp_path):
    """/proc/self/cgroup names /docker/ID, but the container's own cgroup is mounted at the root."""
    tree = cgroup_tree(
        tmp_path,
        {"cpu/cpu.cfs_quota_us": "200000", "cpu/cpu.cfs_period_us": "100000"},
        own="4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n",
    )
    assert threads.cgroup_cpu_quota(**tree) == 2.0


def test_v2_cpu_max(tmp_path):
    assert threads.cgroup_cpu_quota(**cgroup_tree(tmp_path, {"cpu.max": "150000 100000\n"})) == 1.5


def test_v2_max_is_no_limit(tmp_path):
    assert threads.cgroup_cpu_quota(**cgroup_tree(tmp_path, {"cpu.max": "max 100000\n"})) is None


def test_v2_the_tightest_of_the_own_cgroup_and_its_parents(tmp_path):
    tree = cgroup_tree(
        tmp_path,
        {"cpu.max": "max 100000", "job/cpu.max": "200000 100000", "job/step/cpu.max": "400000 100000"},
        own="0::/job/step\n",
    )
    assert threads.cgroup_cpu_quota(**tree) == 2.0


def test_no_cgroup_at_all_is_no_limit(tmp_path):
    assert threads.cgroup_cpu_quota(str(tmp_path / "none"), str(tmp_path / "none-either")) is None


def test_unreadable_files_are_no_limit(tmp_path):
    tree = cgroup_tree(tmp_path, {"cpu.max": "garbage", "cpu/cpu.cfs_quota_us": "12x"}, own="not a cgroup line")
    assert threads.cgroup_cpu_quota(**tree) is None


@pytest.mark.parametrize(
    ("quota", "affinity", "usable"),
    [
        (None, 8, 8),  # no quota: the affinity
        (1.0, 8, 1),
        (1.5, 8, 2),  # part of a second CPU still keeps a second thread busy part of the time
        (0.25, 8, 1),  # never below one
        (4.0, 2, 2),  # a cpuset smaller than the quota
        (None, 0, 1),
    ],
)
def test_usable_cpus(quota, affinity, usable):
    assert threads.usable_cpus(quota, affinity) == usable


def test_a_limit_below_the_machine_sets_every_variable():
    assert threads.thread_environment({}, 2, 64) == dict.fromkeys(ALL, "2")


@pytest.mark.parametrize("cpu_count", [2, None])
def test_no_limit_sets_nothing(cpu_count):
    assert threads.thread_environment({}, 2, cpu_count) == {}


def test_the_users_omp_num_threads_keeps_the_libraries_that_fall_back_to_it_unset():
    """torch sizes its OpenMP pool from MKL's count: MKL_NUM_THREADS=1 beside the user's 2 would overrule them."""
    added = threads.thread_environment({"OMP_NUM_THREADS": "2"}, 1, 2)
    assert added == {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}


def test_each_variable_the_user_set_is_theirs_and_the_rest_follow_the_limit():
    added = threads.thread_environment({"MKL_NUM_THREADS": "4", "TF_NUM_INTEROP_THREADS": "3"}, 1, 2)
    assert added == {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1"}


def test_an_empty_variable_counts_as_unset():
    assert threads.thread_environment({"OMP_NUM_THREADS": ""}, 1, 2)["OMP_NUM_THREADS"] == "1"


def test_apply_adds_to_the_environment_it_is_given(monkeypatch):
    monkeypatch.setattr(threads, "cpu_limit", lambda: {"cpu_count": 8, "usable_cpus": 3})
    environ = {"OMP_NUM_THREADS": "5"}
    added = threads.apply(environ)
    assert environ == {"OMP_NUM_THREADS": "5", **added} and added["TF_NUM_INTRAOP_THREADS"] == "3"


def test_at_start_never_raises(monkeypatch):
    def broken():
        raise RuntimeError("cgroup went away")

    monkeypatch.setattr(threads, "cpu_limit", broken)
    threads.at_start()


def start_python(site_packages, code: str, cpus: set[int] | None = None) -> subprocess.CompletedProcess:
    """A fresh Python that processes SITE_PACKAGES' .pth files as it would its own, on CPUS if given."""
    return subprocess.run(
        [sys.executable, "-c", f"import site; site.addsitedir({str(site_packages)!r}); {code}"],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        env={k: v for k, v in os.environ.items() if k not in ALL},
    )


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one CPU: a limit below the machine cannot be made here")
def test_the_startup_hook_sets_the_limit_in_a_new_python_on_one_cpu(tmp_path):
    written = threads.install_startup_hook(str(tmp_path), str(payload.path("threads")))
    assert sorted(os.path.basename(p) for p in written) == ["labstack_threads.pth", "labstack_threads.py"]
    one_cpu = {min(os.sched_getaffinity(0))}
    started = start_python(tmp_path, "import os; print(os.environ.get('OMP_NUM_THREADS'))", cpus=one_cpu)
    assert (started.returncode, started.stdout.strip(), started.stderr) == (0, "1", "")


def test_the_startup_hook_is_silent_when_its_module_is_gone(tmp_path):
    threads.install_startup_hook(str(tmp_path), str(tmp_path / "deleted.py"))
    started = start_python(tmp_path, "print('started')")
    assert (started.returncode, started.stdout.strip(), started.stderr) == (0, "started", "")


def test_installing_the_hook_again_replaces_it(tmp_path):
    threads.install_startup_hook(str(tmp_path), str(tmp_path / "old.py"))
    threads.install_startup_hook(str(tmp_path), str(payload.path("threads")))
    assert os.path.realpath(tmp_path / "labstack_threads.py") == str(payload.path("threads").resolve())
