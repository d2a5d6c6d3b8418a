"""A Slurm batch job on a labstack image, as data, and the batch script rendered from it: pure, no Docker, no Slurm.

One source for three runtimes. The script is a block of settings (every value quoted with shlex, so nothing the
user typed is ever read as shell), one runtime's part (how a node is checked and a step launched: templates/
docker.sh, pyxis.sh, apptainer.sh) and the part every runtime shares (templates/common.sh: the node preflight,
the limits, the signals, the events). `invoke slurm` writes it into the run's folder; bash -n and shellcheck
lint all three renderings in the tests, and the docker one runs on a real cluster there.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from labstack.errors import BadInput

TEMPLATES = Path(__file__).with_name("templates")
RUNTIMES = ("docker", "pyxis", "apptainer")
DEFAULT_SIGNAL_LEAD_S = 120
# Slurm's --time forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S.
TIME = re.compile(r"(?:(?P<days>\d+)-)?(?P<a>\d+)(?::(?P<b>\d+))?(?::(?P<c>\d+))?")
MEMORY = re.compile(r"(?P<amount>\d+)(?P<unit>[KMGT]?)", re.IGNORECASE)
# A run is a folder name under the runs folder: no path, nothing a shell or Slurm's %-patterns would read.
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
PARTITION = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def time_limit_s(text: str) -> int:
    """Seconds in a Slurm --time value (`90`, `1:30:00`, `2-00:00`); anything else is bad input."""
    found = TIME.fullmatch(text.strip())
    if not found or text.strip() in ("0", ""):
        raise BadInput(f"--time {text!r} is not a Slurm time limit: minutes (90), H:M:S (1:30:00) or D-H:M (1-12:00)")
    days = int(found["days"] or 0)
    a, b, c = (int(found[k]) if found[k] is not None else None for k in ("a", "b", "c"))
    if found["days"] is not None:  # D-H, D-H:M, D-H:M:S
        hours, minutes, seconds = a, b or 0, c or 0
    elif c is not None:  # H:M:S
        hours, minutes, seconds = a, b, c
    elif b is not None:  # M:S
        hours, minutes, seconds = 0, a, b
    else:  # M
        hours, minutes, seconds = 0, a, 0
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds  # type: ignore[operator]
    if total <= 0:
        raise BadInput(f"--time {text!r} is zero: give the job some time")
    return total


def memory_mb(text: str) -> int:
    """MB in a Slurm --mem value (`4096`, `4G`, `512M`); a bare number is MB, as Slurm reads it."""
    found = MEMORY.fullmatch(text.strip())
    if not found or int(found["amount"]) == 0:
        raise BadInput(f"--mem {text!r} is not an amount of memory per node: use MB (4096) or a unit (4G, 512M)")
    factor = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[found["unit"].upper()]
    return max(1, int(int(found["amount"]) * factor))


@dataclass(frozen=True)
class Resources:
    """What the job asks Slurm for; the script hands the same figures to every container."""

    nodes: int = 1
    tasks_per_node: int = 1
    cpus_per_task: int = 2
    gpus_per_task: int = 0
    mem: str = ""  # per node, Slurm's form (4G); empty: the cluster's default
    time: str = "1:00:00"
    partition: str = ""
    signal_lead_s: int = DEFAULT_SIGNAL_LEAD_S

    def __post_init__(self) -> None:
        limit = time_limit_s(self.time)
        if self.mem:
            memory_mb(self.mem)
        if self.partition and not PARTITION.fullmatch(self.partition):
            raise BadInput(f"--partition {self.partition!r} is not a partition name")
        if not 0 < self.signal_lead_s < limit:
            raise BadInput(
                f"--signal-lead {self.signal_lead_s} s must be above 0 and below the time limit ({limit} s): the "
                "trainer checkpoints that long before the limit"
            )
        if self.signal_lead_s > 65535:
            raise BadInput("--signal-lead is at most 65535 s (Slurm's limit)")

    @property
    def tasks(self) -> int:
        return self.nodes * self.tasks_per_node


@dataclass(frozen=True)
class Job:
    """One batch job: where its files go, which image (by ID), what runs, with what."""

    run: str
    image: str  # the reference people read: labstack/torch:2.13.0-cpu-lab
    image_id: str  # sha256:...: what every node must hold, and what runs
    command: tuple[str, ...]  # in the image: python ENTRYPOINT ... (labstack.payload.in_image)
    runs: Path  # absolute; mounted at /runs
    project: Path  # absolute; mounted at /work
    data: Path  # absolute; mounted read-only at /data
    runtime: str = "docker"
    resources: Resources = field(default_factory=Resources)
    min_driver: str = ""  # CUDA images: the oldest driver they run on (the labstack.min_driver label, 580.65.06)
    container_image: str = ""  # pyxis: dockerd://REF or a squashfs file; apptainer: the SIF file

    def __post_init__(self) -> None:
        check_names(self.runtime, self.run)
        check_image_id(self.image_id)
        if self.min_driver and not re.fullmatch(r"\d+(\.\d+)*", self.min_driver):
            raise BadInput(f"min_driver {self.min_driver!r} is not a driver version (580.65.06)")
        for path in (self.runs, self.project, self.data):
            if not path.is_absolute():
                raise ValueError(f"{path} must be absolute: the nodes do not start where the login node does")

    @property
    def folder(self) -> Path:
        """The run's slurm folder: the scripts, every job's output and events."""
        return self.runs / self.run / "slurm"

    @property
    def script(self) -> Path:
        return self.folder / f"{self.runtime}.sh"

    @property
    def pyxis_image(self) -> str:
        return self.container_image or f"dockerd://{self.image}"

    @property
    def sif(self) -> str:
        return self.container_image or str(self.runs.parent / "exports" / f"{sif_name(self.image)}")


def check_names(runtime: str, run: str) -> None:
    if runtime not in RUNTIMES:
        raise BadInput(f"--runtime {runtime!r}: choose from {', '.join(RUNTIMES)}")
    if not RUN_NAME.fullmatch(run):
        raise BadInput(f"--run {run!r} is not a run name: letters, digits, '.', '_', '-' (at most 64)")


def check_image_id(image_id: str) -> str:
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", image_id):
        raise BadInput(f"image ID {image_id!r} is not sha256:<64 hex digits>")
    return image_id


def sif_name(ref: str) -> str:
    """labstack/torch:2.13.0-cpu-lab -> torch-2.13.0-cpu-lab.sif, the name `invoke export` gives it."""
    repository, _, tag = ref.rpartition(":")
    return f"{PurePosixPath(repository).name}-{tag}.sif"


def directives(job: Job) -> list[str]:
    """The #SBATCH lines. --signal=B: goes to the batch script, which passes it to the running step (so a signal that
    Slurm sends early, even before the step, is never lost on a finished preflight step); its tasks stop their
    containers, the trainer checkpoints and exits before the limit."""
    r = job.resources
    lines = [
        f"--job-name=labstack-{job.run}",
        f"--nodes={r.nodes}",
        f"--ntasks-per-node={r.tasks_per_node}",
        f"--cpus-per-task={r.cpus_per_task}",
        f"--time={r.time}",
        f"--signal=B:TERM@{r.signal_lead_s}",
        f"--output={job.folder}/%j.out",
        "--open-mode=append",
    ]
    if r.gpus_per_task:
        lines.append(f"--gpus-per-task={r.gpus_per_task}")
    if r.mem:
        lines.append(f"--mem={r.mem}")
    if r.partition:
        lines.append(f"--partition={r.partition}")
    return [f"#SBATCH {shlex.quote(line)}" for line in lines]


def settings_block(job: Job) -> list[str]:
    values = {
        "RUNTIME": job.runtime,
        "RUN": job.run,
        "IMAGE": job.image,
        "IMAGE_ID": job.image_id,
        "MIN_DRIVER": job.min_driver,
        "GPUS_PER_TASK": str(job.resources.gpus_per_task),
        "RUNS": str(job.runs),
        "PROJECT": str(job.project),
        "DATA": str(job.data),
        "SCRIPT": str(job.script),
        "EVENTS_DIR": str(job.folder),
        "CONTAINER_IMAGE": {"pyxis": job.pyxis_image, "apptainer": job.sif}.get(job.runtime, ""),
    }
    lines = [f"{name}={shlex.quote(value)}" for name, value in values.items()]
    lines.append("COMMAND=(" + " ".join(shlex.quote(word) for word in job.command) + ")")
    return lines


def render(job: Job, rerender: str = "") -> str:
    """The batch script: directives, settings, the runtime's part, the common part."""
    header = [
        "#!/bin/bash",
        "# shellcheck disable=SC2034 # the settings block: some are read by only one runtime's part",
        *directives(job),
        f"# Written by labstack for run {job.run} ({job.runtime} runtime). Do not edit: render it again with",
        f"#   {rerender or 'invoke slurm'}",
        "# and submit it with `sbatch` (or `invoke slurm ... --submit`); a job resubmitted on the same run resumes",
        "# from its checkpoint.",
        "set -uo pipefail",
        "",
        *settings_block(job),
        "",
    ]
    parts = [(TEMPLATES / f"{job.runtime}.sh").read_text(), (TEMPLATES / "common.sh").read_text()]
    return "\n".join(header) + "\n" + "\n".join(parts)
