"""`invoke slurm` on a real Slurm cluster (tests/e2e/slurmcluster.py) whose nodes n1..n3 run their containers on the
simulated lab servers gpu1..gpu3: the torch CPU lab image is on n1 and n2 only, so n3 is a node without it.

The node preflight names n3 and starts nothing; two nodes train with torch.distributed (gloo) and all-reduce; the
limits a container sees are the job's allocation; scancel leaves no container and a checkpoint, and the same job
submitted again resumes from it; the nodes' epilog removes what a job left behind. The figures (submit to first
step, the node preflight, cancel to no container) go to reports/slurm-figures.json."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labstack import ROOT
from labstack.build.layers import layer_ref
from labstack.payload import IN_IMAGE, in_image
from tests.e2e.conftest import MATRIX, wait_for
from tests.e2e.slurmcluster import SlurmCluster

LABEL = "labstack.slurm.job"
JOB_TIMEOUT = 240
LIMITS = """\
import json, os, pathlib
def read(path):
    try:
        return pathlib.Path(path).read_text().split()
    except OSError:
        return None
cpu = read("/sys/fs/cgroup/cpu.max")
memory = read("/sys/fs/cgroup/memory.max")
if cpu is None:  # cgroup v1
    quota, period = read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    cpu = [quota[0], period[0]]
    memory = read("/sys/fs/cgroup/memory/memory.limit_in_bytes")
shm = os.statvfs("/dev/shm")
import torch
print("LIMITS " + json.dumps({
    "cpus": int(cpu[0]) / int(cpu[1]), "memory_bytes": int(memory[0]), "shm_bytes": shm.f_blocks * shm.f_frsize,
    "uid": os.getuid(), "gid": os.getgid(), "torch_threads": torch.get_num_threads(),
    "omp": os.environ.get("OMP_NUM_THREADS"), "job": os.environ.get("SLURM_JOB_ID"),
    "rank": os.environ.get("RANK"), "world_size": os.environ.get("WORLD_SIZE"),
    "image_id": os.environ.get("LABSTACK_IMAGE_ID"), "network": sorted(os.listdir("/sys/class/net")),
}))
"""


@pytest.fixture(scope="module")
def job_image(images, lab_hosts):
    """(ref, ID) of the torch CPU lab image, on gpu1 and gpu2 (n1, n2) by ID and not on gpu3 (n3)."""
    ref = layer_ref(MATRIX.image("torch", "cpu"), "lab")
    inspected = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", ref], capture_output=True,
                               text=True, check=True)  # fmt: skip
    image_id = inspected.stdout.strip()
    for host in lab_hosts.hosts[:2]:
        if host.image_ids().get(ref) != image_id:
            assert host.load_image(ref) == image_id
    absent = lab_hosts.hosts[2]
    absent.docker("image", "rm", "--force", image_id, timeout=120)
    assert absent.docker("image", "inspect", image_id).returncode != 0
    return ref, image_id


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """The folders the login node and the nodes share: project (with limits.py), runs, data."""
    root = tmp_path_factory.mktemp("cluster")
    for name in ("project", "runs", "data"):
        (root / name).mkdir()
    (root / "project" / "limits.py").write_text(LIMITS)
    root.chmod(0o755)
    return root


def render(shared: Path, run: str, *options: str, submit: SlurmCluster | None = None) -> subprocess.CompletedProcess:
    """`invoke slurm` as a user types it, from the project folder; with `submit`, --submit to that cluster."""
    limits = [] if "--time" in options else ["--time", "5", "--signal-lead", "30"]  # invoke takes an option once
    command = [
        sys.executable, "-m", "invoke", "-r", str(ROOT), "slurm", "--run", run, "--runs", str(shared / "runs"),
        "--data", str(shared / "data"), "--project", str(shared / "project"), *limits, *options,
        *(["--submit"] if submit else []),
    ]  # fmt: skip
    env = submit.environ() if submit else None
    return subprocess.run(command, cwd=shared / "project", capture_output=True, text=True, timeout=120, env=env)


def script_of(shared: Path, run: str) -> Path:
    return shared / "runs" / run / "slurm" / "docker.sh"


def sbatch(cluster: SlurmCluster, script: Path, *options: str) -> tuple[str, float]:
    """(job ID, the wall clock when sbatch was called)."""
    began = time.time()
    done = cluster.run("sbatch", "--parsable", *options, str(script))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0], began


def events(shared: Path, run: str, job: str) -> list[tuple[float, str]]:
    """(seconds since the epoch, event) the job's batch script and tasks recorded."""
    path = shared / "runs" / run / "slurm" / f"{job}.events"
    if not path.is_file():
        return []
    return [(int(line.split()[0]) / 1e9, line.split(" ", 1)[1]) for line in path.read_text().splitlines()]


def event_time(found: list[tuple[float, str]], name: str) -> float:
    return next(when for when, what in found if what.split()[0] == name)


def finished(cluster: SlurmCluster, shared: Path, run: str, job: str, timeout: float = JOB_TIMEOUT) -> str:
    """Wait until the job has left the queue; its output."""
    output = shared / "runs" / run / "slurm" / f"{job}.out"
    try:
        wait_for(lambda: not cluster.run("squeue", "--noheader", "--jobs", job).stdout.strip(), timeout,
                 f"job {job} to end")  # fmt: skip
    except AssertionError as error:
        said = output.read_text() if output.is_file() else "(no output)"
        raise AssertionError(f"{error}\n{said}\n{cluster.tails('n1')}") from None
    return output.read_text() if output.is_file() else ""


def containers(host, job: str) -> list[str]:
    return host.docker("ps", "--all", "--quiet", "--filter", f"label={LABEL}={job}").stdout.split()


def test_every_runtime_renders_a_script_that_bash_and_shellcheck_accept(job_image, shared):
    _, image_id = job_image
    for runtime in ("docker", "pyxis", "apptainer"):
        done = render(shared, f"lint-{runtime}", "--runtime", runtime, "--nodes", "2", "--gpus-per-task", "1")
        assert done.returncode == 0, done.stderr
        script = shared / "runs" / f"lint-{runtime}" / "slurm" / f"{runtime}.sh"
        assert f"IMAGE_ID={image_id}" in script.read_text()
        assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
        linted = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
        assert linted.returncode == 0, linted.stdout


def test_a_node_without_the_image_fails_the_preflight_and_nothing_starts(
    slurm_cluster, lab_hosts, job_image, shared, slurm_figures
):
    ref, image_id = job_image
    assert render(shared, "preflight", "--nodes", "3", "--command", "--synthetic --epochs 1").returncode == 0
    job, _ = sbatch(slurm_cluster, script_of(shared, "preflight"))
    output = finished(slurm_cluster, shared, "preflight", job)
    said = [line for line in output.splitlines() if re.match(r"labstack: n\d+: ", line)]
    assert said == [f"labstack: n3: {ref} ({image_id[7:19]}) is not on this node's Docker: invoke deploy --hosts "
                    f"ssh://n3 --image {ref}"], output  # fmt: skip
    oks = {line.split()[0]: int(line.split()[2]) for line in output.splitlines() if " ok " in line}
    assert set(oks) == {"n1", "n2"}
    recorded = events(shared, "preflight", job)
    assert [what.split()[0] for _, what in recorded] == ["start", "preflight-start", "preflight-failed"]
    assert not (shared / "runs" / "preflight" / "metrics.jsonl").exists()  # the trainer never ran
    slurm_figures["node_preflight_3_nodes_ms"] = round(
        (event_time(recorded, "preflight-failed") - event_time(recorded, "preflight-start")) * 1000
    )
    slurm_figures["node_check_each_ms"] = oks


def test_two_nodes_train_and_all_reduce_with_torch_distributed(slurm_cluster, job_image, shared, slurm_figures):
    command = f"python {in_image('allreduce')} --steps 5 --out /runs/ddp/allreduce.json"
    assert render(shared, "ddp", "--nodes", "2", "--cpus-per-task", "1", "--command", command).returncode == 0
    job, submitted = sbatch(slurm_cluster, script_of(shared, "ddp"), "--nodelist=n1,n2")
    output = finished(slurm_cluster, shared, "ddp", job)
    results = json.loads((shared / "runs" / "ddp" / "allreduce.json").read_text())
    assert [(r["rank"], r["node"], r["backend"]) for r in results] == [(0, "n1", "gloo"), (1, "n2", "gloo")], output
    assert all(r["all_reduce"] == [3.0] * 4 and r["sum_ok"] and r["same_weights"] for r in results)
    recorded = events(shared, "ddp", job)
    assert recorded[-1][1] == "step-end 0"
    slurm_figures["submit_to_first_step_ms"] = round((event_time(recorded, "preflight-start") - submitted) * 1000)
    slurm_figures["submit_to_containers_ms"] = round((event_time(recorded, "step-start") - submitted) * 1000)
    slurm_figures["two_node_allreduce_job_s"] = round(recorded[-1][0] - submitted, 2)


def test_the_limits_inside_the_container_are_the_jobs_allocation(slurm_cluster, job_image, shared):
    _, image_id = job_image
    done = render(shared, "limits", "--cpus-per-task", "1", "--mem", "600M", "--command", "python limits.py",
                  submit=slurm_cluster)  # fmt: skip
    assert done.returncode == 0, done.stderr
    job = done.stdout.split("submitted job ")[1].split(":")[0]
    output = finished(slurm_cluster, shared, "limits", job)
    seen = json.loads(next(line for line in output.splitlines() if line.startswith("LIMITS "))[7:])
    assert seen["cpus"] == 1.0 and seen["torch_threads"] == 1 and seen["omp"] == "1"
    assert seen["memory_bytes"] == 600 * 2**20
    assert seen["shm_bytes"] == 300 * 2**20
    assert (seen["uid"], seen["gid"]) == (0, 0)  # the job's user (root here), not the image's own uid 1000
    assert (seen["job"], seen["rank"], seen["world_size"]) == (job, "0", "1")
    assert seen["image_id"] == image_id
    assert seen["network"] == ["lo"]  # one task: no network, as the train service


def test_scancel_leaves_no_container_and_a_checkpoint_and_the_job_resumes(
    slurm_cluster, lab_hosts, job_image, shared, slurm_figures
):
    run = "resume"
    folder = shared / "runs" / run
    options = ("--cpus-per-task", "1", "--command", "--synthetic --epochs 4 --log-every 2")
    assert render(shared, run, *options).returncode == 0
    job, _ = sbatch(slurm_cluster, script_of(shared, run), "--nodelist=n1")
    host = lab_hosts.hosts[0]

    def trained_a_step() -> bool:
        metrics = folder / "metrics.jsonl"
        return metrics.is_file() and '"event": "step"' in metrics.read_text()

    wait_for(trained_a_step, JOB_TIMEOUT, "the trainer's first logged step")
    assert containers(host, job)
    cancelled_at = time.monotonic()
    assert slurm_cluster.run("scancel", job).returncode == 0
    wait_for(lambda: not containers(host, job), 60, "the job's container to be gone")
    slurm_figures["cancel_to_no_container_ms"] = round((time.monotonic() - cancelled_at) * 1000)
    finished(slurm_cluster, shared, run, job)
    stops = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if '"stop"' in line]
    assert [s["signal"] for s in stops] == ["SIGTERM"]
    assert (folder / "checkpoint.pt").is_file()

    again, _ = sbatch(slurm_cluster, script_of(shared, run), "--nodelist=n1")
    output = finished(slurm_cluster, shared, run, again)
    starts = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if '"start"' in line]
    assert len(starts) == 2 and starts[1]["resumed"], output
    assert (starts[1]["from_epoch"], starts[1]["from_sample"]) == (stops[0]["epoch"] - 1, stops[0]["sample"])
    epochs = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if '"epoch"' in line]
    assert epochs[-1]["epoch"] == 4 and events(shared, run, again)[-1][1] == "step-end 0"
    assert not containers(host, again)


def test_the_time_limits_signal_makes_the_trainer_checkpoint_and_the_job_end_before_the_limit(
    slurm_cluster, lab_hosts, job_image, shared, slurm_figures
):
    """--time 2 with --signal-lead 50: Slurm sends SIGTERM to the batch script 50 s before the limit or up to 60 s
    earlier (sbatch's man page; its timer checks limits every 30 s), so between 10 s and 70 s in; the script passes
    it to the step, the trainer checkpoints, and the job ends before the limit without a container left."""
    run = "limit"
    folder = shared / "runs" / run
    options = ("--cpus-per-task", "1", "--command", "--synthetic --epochs 1000 --log-every 5")
    assert render(shared, run, *options, "--time", "2", "--signal-lead", "50").returncode == 0
    job, _ = sbatch(slurm_cluster, script_of(shared, run), "--nodelist=n1")
    output = finished(slurm_cluster, shared, run, job, timeout=180)
    recorded = events(shared, run, job)
    began, signalled = event_time(recorded, "start"), event_time(recorded, "signal")
    assert 5 < signalled - began <= 75, recorded
    assert recorded[-1][1] == "step-end 143", output
    assert recorded[-1][0] - began < 100, output  # well before the limit's own TERM (120 s) and KILL
    stops = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if '"stop"' in line]
    assert [s["signal"] for s in stops] == ["SIGTERM"] and (folder / "checkpoint.pt").is_file()
    assert f"resubmit to resume: sbatch {script_of(shared, run)}" in output
    assert not containers(lab_hosts.hosts[0], job)
    slurm_figures["time_limit_signal_s_before_limit"] = round(began + 120 - signalled, 1)
    slurm_figures["time_limit_signal_to_job_end_ms"] = round((recorded[-1][0] - signalled) * 1000)


def test_the_epilog_removes_containers_a_job_left_and_those_of_jobs_that_are_over(
    slurm_cluster, lab_hosts, job_image, shared
):
    """A container that ignores TERM outlives its job's tasks, and one of a job Slurm has forgotten (a node that
    failed): the node's epilog, after the next job there, removes both."""
    _, image_id = job_image
    host = lab_hosts.hosts[1]
    forgotten = host.docker("run", "--detach", "--label", f"{LABEL}=999999", "--entrypoint", "sleep", image_id, "300")
    assert forgotten.returncode == 0, forgotten.stderr
    ran = slurm_cluster.run("srun", "--nodelist=n2", "--time=1", "sh", "-c", "echo $SLURM_JOB_ID")
    assert ran.returncode == 0, ran.stderr
    job = ran.stdout.strip()
    own = host.docker("run", "--detach", "--label", f"{LABEL}={job}", "--entrypoint", "sleep", image_id, "300")
    assert own.returncode == 0
    # The srun above has ended, so its epilog may already have run: the next job's epilog sweeps both.
    assert slurm_cluster.run("srun", "--nodelist=n2", "--time=1", "true").returncode == 0
    wait_for(lambda: not containers(host, "999999") and not containers(host, job), 30, "the epilog's sweep")


def test_an_image_without_the_payload_is_refused_before_a_script_is_written(shared, os_image):
    """The OS image has tini but neither python nor the payload: its job would end on every node in tini's
    `exec python failed`, after waiting in the queue."""
    done = render(shared, "no-payload", "--image", os_image)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stdout + done.stderr
    assert lines[0] == (
        f"labstack: {os_image} is not a labstack image (no {IN_IMAGE}, no labstack.framework label): build "
        "one with `invoke build` and name it (torch-cpu), or build your own image FROM a labstack lab image"
    )
    assert not (shared / "runs" / "no-payload").exists()
