"""invoke slurm's pure parts: option parsing, the rendered batch script (settings quoted, directives, lint), and
the script's own shell functions (GPUs and memory per task, the driver check), sourced and called one by one.
The script on a real cluster: tests/e2e/test_slurm.py."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from labstack.cluster.commands import image_ref, trainer_command
from labstack.cluster.job import RUNTIMES, Job, Resources, memory_mb, render, sif_name, time_limit_s
from labstack.errors import BadInput
from labstack.errors import whole_number as count
from labstack.payload import in_image
from tests.invoking import assert_one_line_failure, run_invoke

IMAGE_ID = "sha256:" + "ab" * 32


def job(tmp_path: Path, **changes) -> Job:
    values = dict(
        run="r1", image="labstack/torch:2.13.0-cpu-lab", image_id=IMAGE_ID, command=("python", "train.py"),
        runs=tmp_path / "runs", project=tmp_path, data=tmp_path / "data",
    )  # fmt: skip
    return Job(**{**values, **changes})


def written(tmp_path: Path, the_job: Job) -> Path:
    script = tmp_path / f"{the_job.runtime}.sh"
    script.write_text(render(the_job))
    return script


def sourced(script: Path, code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Source the rendered script (settings and functions, nothing runs) and run `code` with them."""
    clean = {"PATH": os.environ["PATH"], "LABSTACK_SCRIPT": str(script), **(env or {})}
    return subprocess.run(["bash", "-c", f'source "$LABSTACK_SCRIPT"; {code}'], capture_output=True, text=True,
                          env=clean, timeout=30)  # fmt: skip


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 5400), ("1:30", 90), ("1:30:00", 5400), ("2-00", 172800), ("1-12:30", 131400), ("0-0:0:5", 5)],
)
def test_slurm_time_limits_read_as_slurm_reads_them(text, seconds):
    assert time_limit_s(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "1h", "-5", "1:2:3:4", "a-1"])
def test_a_time_limit_slurm_would_not_read_is_bad_input(text):
    with pytest.raises(BadInput, match="--time"):
        time_limit_s(text)


def test_memory_and_counts_are_checked_as_text_from_the_command_line():
    assert (memory_mb("4096"), memory_mb("4G"), memory_mb("512m")) == (4096, 4096, 512)
    assert count("nodes", "3") == 3
    for bad in ("x", "1.5", ""):
        with pytest.raises(BadInput, match="--nodes"):
            count("nodes", bad)
    with pytest.raises(BadInput, match="too small"):
        count("nodes", "0")
    with pytest.raises(BadInput, match="--mem"):
        memory_mb("lots")


def test_the_signal_comes_before_the_time_limit():
    with pytest.raises(BadInput, match=r"--signal-lead 120 s .* below the time limit \(60 s\)"):
        Resources(time="1")
    assert Resources(time="1", signal_lead_s=30).signal_lead_s == 30


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"run": "../elsewhere"}, "--run"),
        ({"run": "a b"}, "--run"),
        ({"runtime": "podman"}, "--runtime 'podman': choose from docker, pyxis, apptainer"),
        ({"image_id": "sha256:abc"}, "image ID"),
        ({"min_driver": "new"}, "min_driver"),
        ({"min_driver": "580;reboot"}, "min_driver"),
    ],
)
def test_a_job_that_cannot_be_written_safely_is_bad_input(tmp_path, changes, match):
    with pytest.raises(BadInput, match=match):
        job(tmp_path, **changes)


def test_settings_reach_the_script_exactly_whatever_they_contain(tmp_path):
    """Paths and commands are data: quoted once, never read as shell (the marker file must not appear)."""
    hostile = tmp_path / "it's $(touch pwned) `touch pwned2` ; a b"
    hostile.mkdir()
    command = ("python", "my train.py", "--note", "$HOME; rm -rf /", "'")
    script = written(tmp_path, job(tmp_path, project=hostile, command=command))
    shown = sourced(script, 'printf "%s\\n" "$PROJECT"; printf "%s\\n" "${COMMAND[@]}"', {"HOME": "/nowhere"})
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [str(hostile), *command]
    assert not list(tmp_path.rglob("pwned*"))


def test_the_directives_are_the_jobs_resources(tmp_path):
    resources = Resources(nodes=2, tasks_per_node=4, cpus_per_task=8, gpus_per_task=1, mem="64G", time="2:00:00",
                          partition="gpu", signal_lead_s=300)  # fmt: skip
    text = render(job(tmp_path, resources=resources))
    directives = [line.split(" ", 1)[1] for line in text.splitlines() if line.startswith("#SBATCH ")]
    assert directives == [
        "--job-name=labstack-r1", "--nodes=2", "--ntasks-per-node=4", "--cpus-per-task=8", "--time=2:00:00",
        "--signal=B:TERM@300", f"--output={tmp_path}/runs/r1/slurm/%j.out", "--open-mode=append",
        "--gpus-per-task=1", "--mem=64G", "--partition=gpu",
    ]  # fmt: skip
    # sbatch reads directives only up to the first command: every one of them comes before it.
    first_command = next(i for i, line in enumerate(text.splitlines()[1:], 1) if line and not line.startswith("#"))
    assert all(i < first_command for i, line in enumerate(text.splitlines()) if line.startswith("#SBATCH"))


NO_SHELLCHECK = "shellcheck is not installed: run scripts/bootstrap.sh --full"


@pytest.mark.skipif(not shutil.which("shellcheck"), reason=NO_SHELLCHECK)
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_every_runtime_passes_bash_n_and_shellcheck(tmp_path, runtime):
    resources = Resources(nodes=2, gpus_per_task=1, mem="8G")
    script = written(tmp_path, job(tmp_path, runtime=runtime, resources=resources, min_driver="580"))
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    linted = subprocess.run(["shellcheck", "--severity=style", str(script)], capture_output=True, text=True)
    assert linted.returncode == 0, linted.stdout


def test_the_epilog_passes_shellcheck():
    if not shutil.which("shellcheck"):
        pytest.skip(NO_SHELLCHECK)
    epilog = Path(__file__).parents[2] / "labstack" / "cluster" / "epilog.sh"
    linted = subprocess.run(["shellcheck", "--severity=style", str(epilog)], capture_output=True, text=True)
    assert linted.returncode == 0, linted.stdout


@pytest.mark.parametrize(
    ("env", "gpus"),
    [
        ({}, ""),
        ({"SLURM_STEP_GPUS": "4,5,6,7", "GPUS_PER_TASK": "2", "SLURM_LOCALID": "1"}, "6,7"),
        ({"SLURM_STEP_GPUS": "4,5,6,7", "GPUS_PER_TASK": "2", "SLURM_LOCALID": "0"}, "4,5"),
        ({"SLURM_STEP_GPUS": "3", "GPUS_PER_TASK": "2", "SLURM_LOCALID": "0"}, "3"),  # fewer than asked: all
        ({"SLURM_JOB_GPUS": "1,2", "GPUS_PER_TASK": "0"}, "1,2"),
    ],
)
def test_a_task_gets_its_own_share_of_the_allocated_gpus(tmp_path, env, gpus):
    script = written(tmp_path, job(tmp_path))
    shown = sourced(script, 'GPUS_PER_TASK=${GPUS_PER_TASK_:-$GPUS_PER_TASK}; task_gpus',
                    {k if k != "GPUS_PER_TASK" else "GPUS_PER_TASK_": v for k, v in env.items()})  # fmt: skip
    assert shown.stdout == gpus


@pytest.mark.parametrize(
    ("env", "memory"),
    [
        ({"SLURM_MEM_PER_CPU": "512", "SLURM_CPUS_PER_TASK": "4"}, "2048"),
        ({"SLURM_MEM_PER_NODE": "8000", "SLURM_NTASKS_PER_NODE": "4"}, "2000"),
        ({"SLURM_MEM_PER_NODE": "8000"}, "8000"),
        ({"SLURM_MEM_PER_NODE": "0"}, ""),
        ({}, ""),
    ],
)
def test_a_tasks_memory_is_its_share_of_the_allocation(tmp_path, env, memory):
    assert sourced(written(tmp_path, job(tmp_path)), "task_memory_mb", env).stdout == memory


def test_a_signal_before_the_training_step_is_kept_for_after_the_preflight(tmp_path):
    """--signal=B: reaches only the batch script; before the training step there is nothing to pass it on to, so it
    is only kept (the batch script then stops after the preflight instead of starting the training)."""
    script = written(tmp_path, job(tmp_path))
    done = sourced(script, f'EVENTS_DIR={shlex.quote(str(tmp_path))}; on_signal TERM; echo "$SIGNALLED"')
    assert done.stdout.split() == ["TERM"] and done.returncode == 0, done.stderr
    assert (tmp_path / "0.events").read_text().split()[1:] == ["signal", "TERM"]


def fake_nvidia_smi(folder: Path, version: str | None) -> str:
    """A PATH whose nvidia-smi prints `version` (None: fails as on a node without a driver): no driver exists on a
    CPU machine, so this is the one stand-in."""
    tool = folder / "bin" / "nvidia-smi"
    tool.parent.mkdir()
    tool.write_text(f"#!/bin/sh\necho {version}\n" if version else "#!/bin/sh\nexit 9\n")
    tool.chmod(0o755)
    return f"{tool.parent}:{os.environ['PATH']}"


@pytest.mark.parametrize(
    ("version", "said"),
    [
        ("580.65.06", ""),
        ("590.1", ""),
        ("580.65.5", "labstack: n7: NVIDIA driver 580.65.5 is older than the 580.65.06 that"),
        ("535.104.05", "labstack: n7: NVIDIA driver 535.104.05 is older than the 580.65.06 that"),
        (None, "labstack: n7: no NVIDIA driver answers (nvidia-smi)"),
    ],
)
def test_the_preflight_checks_a_cuda_images_driver(tmp_path, version, said):
    script = written(tmp_path, job(tmp_path, min_driver="580.65.06"))
    env = {"PATH": fake_nvidia_smi(tmp_path, version), "SLURMD_NODENAME": "n7"}
    checked = sourced(script, "check_image() { :; }; check_node", env)
    assert (checked.returncode == 0) == (not said)
    assert checked.stderr.startswith(said) if said else checked.stdout.startswith("n7 ok ")


def test_the_built_in_trainer_is_told_the_run_and_the_labs_command_runs_as_given():
    entry = in_image("entrypoint")
    assert trainer_command(None, "r1") == ("python", entry, "--run", "r1")
    assert trainer_command("--synthetic --epochs 2", "r1") == ("python", entry, "--synthetic", "--epochs", "2",
                                                               "--run", "r1")  # fmt: skip
    assert trainer_command("--run=mine", "r1") == ("python", entry, "--run=mine")
    assert trainer_command("python 'my train.py' --lr 0.1", "r1") == ("python", entry, "python", "my train.py",
                                                                      "--lr", "0.1")  # fmt: skip
    with pytest.raises(BadInput, match="--command"):
        trainer_command("python 'unclosed", "r1")


def test_the_image_is_a_matrix_name_a_matrix_ref_or_a_ref():
    assert image_ref(None, "torch")[0].endswith("/torch:2.13.0-cpu-lab")
    ref, min_driver = image_ref("torch-cuda", "torch")
    assert ref.endswith("-lab") and min_driver.split(".")[0].isdigit()
    assert image_ref("lab.example:5000/team/img:v1", "torch") == ("lab.example:5000/team/img:v1", "")
    for bad in ("torch-cpu,tensorflow-cpu", "--privileged", "UPPER:case"):
        with pytest.raises(BadInput, match="--image"):
            image_ref(bad, "torch")
    assert sif_name("labstack/torch:2.13.0-cpu-lab") == "torch-2.13.0-cpu-lab.sif"


NO_DOCKER = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


def slurm_cli(tmp_path: Path, *args: str, env: dict | None = None, data: str = "") -> subprocess.CompletedProcess:
    (tmp_path / "data").mkdir(exist_ok=True)
    folders = ("--runs", str(tmp_path / "runs"), "--data", data or str(tmp_path / "data"), "--project", str(tmp_path))
    return run_invoke("slurm", *folders, *args, env={**NO_DOCKER, **(env or {})})


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("--nodes", "x"), 2, ("--nodes 'x' is not a whole number",)),
        (("--gpus-per-task", "-1"), 2, ("--gpus-per-task -1 is too small",)),
        (("--time", "1h"), 2, ("--time '1h'",)),
        (("--time", "1", "--signal-lead", "90"), 2, ("--signal-lead 90 s",)),
        (("--runtime", "podman"), 2, ("choose from docker, pyxis, apptainer",)),
        (("--run", "../up"), 2, ("--run '../up'",)),
        (("--image", "--privileged"), 2, ("neither an image name",)),
        (("--command", "python 'open"), 2, ("--command",)),
        ((), 3, ("cannot reach the Docker daemon", "--image-id")),
        (("--image-id", "sha256:abc"), 2, ("image ID",)),
        (("--data", "/nonexistent"), 2, ("data folder /nonexistent",)),
    ],
)
def test_invoke_slurm_says_what_is_wrong_in_one_line(tmp_path, args, code, words):
    """Everything typed is checked before Docker is asked: with no daemon here, only a good command reaches it."""
    data = args[1] if args[:1] == ("--data",) else ""
    assert_one_line_failure(slurm_cli(tmp_path, *args[2 if data else 0 :], data=data), code, *words)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("*.sh"))


def test_a_login_node_without_docker_writes_the_job_from_the_images_id(tmp_path):
    done = slurm_cli(tmp_path, "--image", "torch-cuda", "--image-id", IMAGE_ID, "--run", "gpu")
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "runs" / "gpu" / "slurm" / "docker.sh").read_text()
    assert f"IMAGE_ID={IMAGE_ID}" in text
    assert "MIN_DRIVER=580" in text  # a CUDA image's driver floor comes from the matrix when Docker cannot say
    said = done.stdout.strip().splitlines()[-1]
    assert said == f"labstack: submit it with: sbatch {tmp_path}/runs/gpu/slurm/docker.sh"


def test_submitting_where_there_is_no_sbatch_says_where_to_run_it(tmp_path):
    done = slurm_cli(tmp_path, "--image-id", IMAGE_ID, "--submit", env={"PATH": str(Path(sys.executable).parent)})
    assert_one_line_failure(done, 1, "sbatch is not here: run this on the cluster's login node")
