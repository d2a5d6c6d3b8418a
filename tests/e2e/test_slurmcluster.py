"""The test Slurm cluster is a real one: three idle nodes, a step on every node, `scancel` reaching a batch script's
TERM trap, node nI's jobs talking to lab host gpuI's own Docker daemon (batch script and steps alike), munged
running as the munge user, and closing the cluster leaves no daemon, step, task or folder behind."""

from __future__ import annotations

import contextlib
import pwd
import socket
import time
from pathlib import Path

import pytest

from tests.e2e import slurmcluster
from tests.e2e.conftest import wait_for
from tests.e2e.slurmcluster import MUNGE_USER, SlurmCluster, SlurmClusterError, processes_started_by

NODES = {"n1", "n2", "n3"}


def srun_per_node(cluster: SlurmCluster, script: str) -> dict[str, str]:
    """`srun -N3 --ntasks-per-node=1 sh -c SCRIPT` whose output lines start with the node's name: {node: rest}."""
    done = cluster.run(
        "srun", "-N3", "--ntasks-per-node=1", "--time=1", "sh", "-c", f'echo "$SLURMD_NODENAME {script}"'
    )
    assert done.returncode == 0, done.stderr
    return dict(line.split(" ", 1) for line in done.stdout.splitlines())


@contextlib.contextmanager
def explained(cluster: SlurmCluster, job: str, folder: Path, node: str = "n2"):
    """A wait that times out says where the job stood: its state and reason, its output, the node's log."""
    try:
        yield
    except AssertionError as error:
        shown = cluster.run("scontrol", "show", "job", job).stdout
        state = " ".join(w for w in shown.split() if w.startswith(("JobState=", "Reason=", "NodeList=")))
        output = "".join(p.read_text() for p in folder.glob("*.out"))
        raise AssertionError(f"{error}\njob {job}: {state}\noutput: {output}\n{cluster.tails(node)}") from None


def uid_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


def test_three_nodes_are_idle_and_munged_runs_as_the_munge_user(slurm_cluster, slurm_figures):
    slurm_figures["cluster_start_s"] = slurm_cluster.start_s
    slurm_cluster.wait_idle()  # the session's cluster: other modules' jobs may still be completing
    assert slurm_cluster.node_states() == dict.fromkeys(NODES, "idle")
    assert uid_of(slurm_cluster.munged.pid) == pwd.getpwnam(MUNGE_USER).pw_uid


def test_one_step_runs_on_every_node(slurm_cluster):
    assert srun_per_node(slurm_cluster, "$SLURM_JOB_NUM_NODES $SLURM_NTASKS") == dict.fromkeys(NODES, "3 3")


def test_each_nodes_steps_use_its_own_lab_hosts_docker_daemon(slurm_cluster, lab_hosts):
    roots = srun_per_node(slurm_cluster, "$(docker info --format '{{.DockerRootDir}}')")
    assert roots == {f"n{i}": str(host.data_root) for i, host in enumerate(lab_hosts.hosts, 1)}


def test_scancel_reaches_the_batch_scripts_term_trap(slurm_cluster, lab_hosts, slurm_figures, tmp_path):
    """The batch script itself (not only srun's steps) gets its node's DOCKER_HOST; scancel's TERM runs its trap."""
    started, trapped = tmp_path / "started", tmp_path / "trapped"
    script = tmp_path / "job.sh"
    script.write_text(
        "#!/bin/bash\n"
        f"trap 'date +%s%N > {trapped}; exit 143' TERM\n"
        f'echo "$SLURMD_NODENAME $DOCKER_HOST" > {started}\n'
        # bash runs a trap only between commands, and `wait` returns on the signal. The loop: scancel signals
        # every process of the job one by one, and a sleep killed first would otherwise end the script untrapped.
        "while :; do sleep 300 & wait $!; done\n"
    )
    submitted = slurm_cluster.run(
        "sbatch", "--parsable", "--nodelist=n2", "--time=2", f"--chdir={tmp_path}", f"--output={tmp_path}/%j.out",
        str(script),
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip().split(";")[0]
    began = time.monotonic()
    with explained(slurm_cluster, job, tmp_path):
        wait_for(lambda: started.is_file() and started.read_text().strip(), 30, "the batch script to start")
    slurm_figures["sbatch_to_script_ms"] = round((time.monotonic() - began) * 1000)
    assert started.read_text().split() == ["n2", lab_hosts.hosts[1].docker_host]

    cancel_ns = time.time_ns()
    cancelled = slurm_cluster.run("scancel", job)
    assert cancelled.returncode == 0, cancelled.stderr
    with explained(slurm_cluster, job, tmp_path):
        wait_for(lambda: trapped.is_file() and trapped.read_text().strip(), 10, "the TERM trap to run")
    slurm_figures["scancel_to_trap_ms"] = round((int(trapped.read_text()) - cancel_ns) / 1e6, 1)
    slurm_cluster.wait_idle()


def test_closing_the_cluster_leaves_no_daemon_step_task_or_folder():
    """A cluster of its own, closed while a job is running: what remains would be named by its slurm.conf."""
    cluster = SlurmCluster(count=1).start()
    conf, folder = cluster.conf, cluster.folder
    try:
        job = cluster.run("sbatch", "--parsable", "--time=2", "--output=/dev/null", "--wrap=sleep 300")
        assert job.returncode == 0, job.stderr
        wait_for(lambda: cluster.node_states().get("n1") in ("alloc", "mix"), 20, "the job to run")
        daemons = [cluster.munged, cluster.slurmctld, cluster.nodes[0].slurmd]
    finally:
        cluster.close()
    assert all(process.poll() is not None for process in daemons)
    assert not folder.exists()
    assert not processes_started_by(conf)


def test_a_cluster_that_cannot_start_says_why_and_leaves_nothing(monkeypatch):
    """slurmctld's port is taken: start() fails with the line of its log that says so, munged is stopped."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setattr(slurmcluster, "free_port", lambda: taken.getsockname()[1])
        cluster = SlurmCluster(count=1)
        with pytest.raises(SlurmClusterError, match="Address already in use"):
            cluster.start()
    assert cluster.munged.poll() is not None
    assert not cluster.folder.exists()
    assert not processes_started_by(cluster.conf)
