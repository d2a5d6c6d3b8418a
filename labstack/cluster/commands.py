"""The body of `invoke slurm` (tasks.py only declares it): a batch job on a labstack image, rendered into the run's
folder and, with --submit, handed to sbatch."""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from labstack.build.layers import LAYER_NAMES, layer_ref
from labstack.cluster import kubernetes as kubernetes_
from labstack.cluster.export import write_atomically
from labstack.cluster.job import Job, Resources, check_image_id, check_names, render, sif_name
from labstack.deploy.commands import DEPLOY_LAYER, REF
from labstack.engine import connect, image_or_none
from labstack.errors import BadInput, LabstackError, shown
from labstack.errors import whole_number as count
from labstack.matrix import load_matrix
from labstack.paths import file_in_the_way
from labstack.payload import in_image, missing_payload

SBATCH_TIMEOUT = 60
ID = "sha256:"


@dataclass(frozen=True)
class Submitted:
    job_id: str
    script: Path
    output: Path


def image_ref(text: str | None, framework: str) -> tuple[str, str]:
    """(ref, min_driver from the matrix) of --image: a matrix name (torch-cpu: its lab image), a matrix ref, or any
    image ref; default: the lab's framework's CPU lab image."""
    matrix = load_matrix()
    word = (text or f"{framework}-cpu").strip()
    for image in matrix.images:
        refs = {layer_ref(image, layer) for layer in LAYER_NAMES}
        if word == image.name or word in refs:
            ref = layer_ref(image, DEPLOY_LAYER) if word == image.name else word
            return ref, (image.min_driver or "") if image.variant == "cuda" else ""
    if "," in word:
        raise BadInput(f"--image {word!r}: a job runs one image; name one")
    if not REF.fullmatch(word):
        names = ", ".join(image.name for image in matrix.images)
        raise BadInput(f"--image {word!r} is neither an image name ({names}) nor an image reference")
    return word, ""


def local_identity(ref: str) -> tuple[str, str]:
    """(image ID, labstack.min_driver label) of the image as built or deployed here: the job is pinned to it."""
    try:
        client = connect()
    except LabstackError as error:
        raise LabstackError(
            f"{error.args[0]}; without Docker here, name the image's ID with --image-id (`docker image inspect "
            f"--format '{{{{.Id}}}}' {ref}` where it was built)",
            error.code,
        ) from None
    found = image_or_none(client, ref)
    if found is None:
        raise LabstackError(f"{ref} is not an image here: build it (`invoke build`) or pull it; the job is pinned to "
                            "its ID, which only a local image gives")  # fmt: skip
    problem = missing_payload(ref, found.labels)
    if problem:
        raise BadInput(problem)
    return found.id, (found.labels or {}).get("labstack.min_driver", "")


def trainer_command(text: str | None, run: str) -> tuple[str, ...]:
    """What runs in the image, by the train service's contract: options (or nothing) go to the built-in trainer,
    which is told the run; anything else is the lab's own command, run as given from the project folder."""
    try:
        words = shlex.split(text or "")
    except ValueError as error:
        raise BadInput(f"--command {text!r}: {error}") from None
    trainer = not words or words[0].startswith("-")
    if trainer and not any(w == "--run" or w.startswith("--run=") for w in words):
        words += ["--run", run]
    return ("python", in_image("entrypoint"), *words)


def folder(text: str, what: str, must_exist: bool = True) -> Path:
    """A folder option, checked before Docker is asked: one that must exist, or (runs) one that can be made."""
    if not text.strip():
        raise BadInput(f"--{what} is empty: name the {what} folder")
    path = Path(text).expanduser().absolute()
    in_the_way = file_in_the_way(path)
    if in_the_way:
        raise BadInput(f"--{what} {shown(text)} {in_the_way}, not a folder: name another with --{what}")
    if must_exist and not path.is_dir():
        raise BadInput(f"{what} folder {path} does not exist: create it, or name another with --{what}")
    return path


def slurm(
    image: str | None, framework: str, runtime: str, run: str | None, command: str | None, nodes: str,
    tasks_per_node: str, cpus_per_task: str, gpus_per_task: str, mem: str, time: str, partition: str,
    signal_lead: str, runs: str, data: str, project: str, image_id: str | None, container_image: str, submit: bool,
) -> Submitted | Path:  # fmt: skip
    """Render the job into RUNS/RUN/slurm/RUNTIME.sh; with submit, sbatch it and say where its output goes."""
    resources = Resources(
        nodes=count("nodes", nodes), tasks_per_node=count("tasks-per-node", tasks_per_node),
        cpus_per_task=count("cpus-per-task", cpus_per_task), gpus_per_task=count("gpus-per-task", gpus_per_task, 0),
        mem=mem or "", time=time, partition=partition or "", signal_lead_s=count("signal-lead", signal_lead),
    )  # fmt: skip
    ref, min_driver = image_ref(image, framework)
    run = run or f"slurm-{sif_name(ref).removesuffix('.sif')}"
    check_names(runtime, run)
    words = trainer_command(command, run)
    folders = folder(runs, "runs", must_exist=False), folder(project, "project"), folder(data, "data")
    if image_id:  # a login node without Docker: the ID as given, the driver floor from the matrix
        image_id = check_image_id(image_id if image_id.startswith(ID) else ID + image_id)
    else:  # everything the user typed is checked before Docker is asked
        image_id, label = local_identity(ref)
        min_driver = label or min_driver
    job = Job(
        run=run, image=ref, image_id=image_id, command=words, runs=folders[0], project=folders[1], data=folders[2],
        runtime=runtime, resources=resources, min_driver=min_driver, container_image=container_image or "",
    )  # fmt: skip
    try:
        job.folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LabstackError(
            f"cannot create {job.folder}: {error.strerror}; name a runs folder you own with --runs"
        ) from None
    rerender = "invoke slurm " + " ".join(shlex.quote(w) for w in ("--image", ref, "--runtime", runtime, "--run", run))
    write_atomically(job.script, render(job, rerender))
    job.script.chmod(0o755)
    print(f"labstack: wrote {job.script} ({runtime}; {resources.nodes} node(s) x {resources.tasks_per_node} task(s), "
          f"{resources.cpus_per_task} CPU(s) each; {ref} {image_id[7:19]})")  # fmt: skip
    if not submit:
        print(f"labstack: submit it with: sbatch {shlex.quote(str(job.script))}")
        return job.script
    submitted = sbatch(job.script)
    output = job.folder / f"{submitted}.out"
    print(f"labstack: submitted job {submitted}: output {output}; watch: squeue -j {submitted}; stop: scancel "
          f"{submitted} (it checkpoints; submit again to resume)")  # fmt: skip
    return Submitted(submitted, job.script, output)


def sbatch(script: Path) -> str:
    """Submit; the job's ID. sbatch's own refusal (no such partition, too many GPUs...) is our one line."""
    try:
        done = subprocess.run(
            ["sbatch", "--parsable", str(script)], capture_output=True, text=True, timeout=SBATCH_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except FileNotFoundError:
        raise LabstackError(
            f"sbatch is not here: run this on the cluster's login node, or copy {script} there and sbatch it"
        ) from None
    except subprocess.TimeoutExpired:
        raise LabstackError(f"sbatch did not answer in {SBATCH_TIMEOUT} s: is slurmctld up? (scontrol ping)") from None
    if done.returncode != 0:
        said = [line for line in done.stderr.splitlines() if line.strip()]
        reason = re.sub(r"^sbatch: (error|fatal): ", "", said[-1]) if said else f"exit {done.returncode}"
        raise LabstackError(f"sbatch refused the job: {reason}")
    job_id = done.stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise LabstackError(f"sbatch answered {done.stdout.strip()!r}, not a job ID")
    return job_id


def kube_job(
    image: str | None, framework: str, run: str | None, command: str | None, cpus: str, mem: str, gpus: str,
    time: str, grace: str, digest: str | None, record: str, kubernetes: str, runs: str, runs_claim: str,
    data_claim: str,
) -> Path:  # fmt: skip
    """Write RUNS/RUN/kubernetes/job.yaml: the image by registry digest, validated for that Kubernetes version."""
    ref, _ = image_ref(image, framework)
    run = run or f"{sif_name(ref).removesuffix('.sif').replace('_', '-').lower()}"
    words = trainer_command(command, run)
    cpu_count, gpu_count, grace_s = count("cpus", cpus), count("gpus", gpus, 0), count("grace", grace)
    out = folder(runs, "runs", must_exist=False) / run / "kubernetes" / "job.yaml"
    if digest:
        pinned, image_id = digest, ""
    elif not record.strip():
        raise BadInput(f"--record is empty: give the file `invoke push` wrote ({kubernetes_.RECORD_HINT})")
    else:
        pinned, image_id = kubernetes_.digest_of(ref, Path(record))
    job = kubernetes_.KubeJob(
        run=run, image=pinned, image_id=image_id, command=words, cpus=cpu_count, memory=mem, gpus=gpu_count,
        time=time, grace_s=grace_s, runs_claim=runs_claim, data_claim=data_claim,
    )  # fmt: skip
    written = kubernetes_.write(job, kubernetes, out)
    print(f"labstack: wrote {written} ({pinned}; {cpu_count} CPU(s), {mem}, {gpu_count} GPU(s)), valid for "
          f"Kubernetes {kubernetes}; run it with: kubectl apply -f {shlex.quote(str(written))}")  # fmt: skip
    return written
