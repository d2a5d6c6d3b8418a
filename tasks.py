"""labstack tasks: `invoke --list` shows them. Each declares its options and calls one function of the library;
the lab's defaults come from invoke's configuration (invoke.example.yaml shows every setting)."""

from __future__ import annotations

from invoke import Collection, Exit, task

from labstack.bench import commands as bench
from labstack.build import commands as build_
from labstack.cli import one_line_errors, run_tests, settings
from labstack.cluster import commands as cluster
from labstack.cluster import export as export_
from labstack.compose import commands as compose
from labstack.compose import train as compose_train
from labstack.deploy import commands as deploy_
from labstack.deploy.push import DEFAULT_OUT as PUSH_OUT
from labstack.deploy.push import push_images
from labstack.settings import DEFAULTS
from labstack.validate import commands as validate_

FRAMEWORK_HELP = "torch, tensorflow, a comma list or all (default: all)"
VARIANT_HELP = "cpu, cuda, a comma list or all (default: cpu)"
LAYER_HELP = (
    "framework: the bare framework images; lab: plus the lab layer (everyday stack, torchvision, your packages); "
    "notebook: plus JupyterLab (default: lab)"
)
LOCK_LAYER_HELP = "which layer's lockfiles: framework, lab or notebook (default: framework)"
ONE_FRAMEWORK_HELP = "torch or tensorflow (default: the lab's labstack.framework setting, torch)"
PROJECT_HELP = (
    "compose project name (default: COMPOSE_PROJECT_NAME from .env, else the checkout's folder name and a hash of "
    "its path)"
)
ENV_FILE_HELP = "env file compose reads (default: .env in the repository root, written by `invoke env`)"


@task(help={"framework": FRAMEWORK_HELP, "layer": LOCK_LAYER_HELP})
@one_line_errors
def lock(c, framework="all", layer="framework"):
    """Resolve the hashed lockfiles of the chosen frameworks (or of a layer on them) from images/matrix.toml."""
    build_.lock(framework, layer)


@task(help={"package": "NAME or NAME==VERSION from your package index (default version: the newest that fits)"})
@one_line_errors
def lab_add(c, package):
    """Add a package to the lab layer (images/matrix.toml), pinned, and re-lock every lab and notebook lock."""
    build_.lab_add(package)


@task(
    help={
        "refresh": "build a new OS layer even if one exists (default: reuse the newest)",
        "from_image": "start from this Debian image, pinned by digest, instead of building the OS layer",
    }
)
@one_line_errors
def base(c, refresh=False, from_image=None):
    """Build the OS layer from Debian packages (mmdebstrap) and the shared base image on top of it."""
    build_.base(refresh, from_image)


@task(
    help={
        "framework": FRAMEWORK_HELP,
        "variant": VARIANT_HELP,
        "refresh_base": "rebuild the OS layer first (default: reuse the newest)",
        "from_image": "start the base from this Debian image pinned by digest (default: the local OS layer)",
        "layer": LAYER_HELP,
    }
)
@one_line_errors
def build(c, framework="all", variant="cpu", refresh_base=False, from_image=None, layer="lab"):
    """Build the images (default: the CPU lab images) offline from a verified wheelhouse; print a size/time table."""
    build_.build(framework, variant, refresh_base, from_image, layer)


@task(help={"framework": FRAMEWORK_HELP, "variant": "cpu, cuda, a comma list or all (default: all)"})
@one_line_errors
def wheels(c, framework="all", variant="all"):
    """Download and verify the wheels of the chosen lockfiles into the wheelhouse (for offline builds)."""
    build_.wheels(framework, variant)


@task(help={"framework": FRAMEWORK_HELP})
@one_line_errors
def notebook_lock(c, framework="all"):
    """Same as `invoke lock --layer notebook` (the notebook lockfiles, constrained by the lab locks)."""
    build_.lock(framework, "notebook")


@task(help={"framework": FRAMEWORK_HELP, "variant": VARIANT_HELP})
@one_line_errors
def notebook_image(c, framework="all", variant="cpu"):
    """Same as `invoke build --layer notebook` (JupyterLab on each lab image, offline)."""
    build_.build(framework, variant, layer="notebook")


@task(
    help={
        "image": "images to check, by name (torch-cpu) or ref, comma-separated; 'none' for hosts only "
        "(default: every labstack image built here)",
        "hosts": "hosts to check: local://, ssh://[user@]host[:port], docker://container, comma-separated, or @FILE "
        f"(one a line); 'none' for images only (default: the lab's labstack.hosts setting, {DEFAULTS['hosts']})",
        "gpu": "auto: GPU checks where NVML finds a GPU, skipped with the reason elsewhere; require: fail them "
        "without a usable GPU; skip: leave them out (default: auto)",
        "out": "folder for report.json and junit.xml (default: reports/validate)",
        "jobs": "targets checked at the same time (default: 2 to 4 by CPU count)",
    }
)
@one_line_errors
def validate(c, image=None, hosts=None, gpu="auto", out="reports/validate", jobs="0"):
    """Check images and hosts (driver, toolkit, GPU in container, shm) without building; table, JUnit, JSON."""
    validate_.validate(image, hosts or settings(c).hosts, gpu, out, jobs)


@task(
    help={
        "registry": "the lab's registry as HOST:PORT, no scheme (e.g. 127.0.0.1:5000; a plain-http registry that is "
        "not on loopback must be in the daemon's insecure-registries) (required)",
        "image": "images to push, by name (torch-cpu, at --layer) or ref (its own layer), comma-separated or all "
        "(default: every matrix image built here at --layer)",
        "layer": "framework, lab or notebook: which layer of the named images (default: lab)",
        "out": f"where the digests are recorded, as JSON (default: {PUSH_OUT})",
    }
)
@one_line_errors
def push(c, registry=None, image=None, layer="lab", out=PUSH_OUT):
    """Push the images to a lab's registry (same repository and tag there); record their digests for deploy."""
    push_images(registry, image, layer, out)


@task(
    help={
        "image": "images to export, by name (torch-cpu, at --layer) or ref (its own layer), comma-separated or all "
        "(default: every matrix image built here at --layer)",
        "layer": "framework, lab or notebook: which layer of the named images (default: lab)",
        "out": f"folder for NAME.tar, NAME.tar.sha256 and NAME.json (default: {export_.DEFAULT_OUT})",
    }
)
@one_line_errors
def export(c, image=None, layer="lab", out=export_.DEFAULT_OUT):
    """Write the images as docker save archives with checksums, for clusters without Docker (Apptainer, enroot)."""
    export_.export(image, layer, out)


@task(
    help={
        "unit": "run only the unit tests, without Docker (default: all tests)",
        "variant": "image variants the image tests build and check: cpu, cuda or all (default: all)",
    }
)
@one_line_errors
def test(c, unit=False, variant="all"):
    """Run the test suite: unit tests, then the shipped checks and the build, bench and e2e tests on real images."""
    code = run_tests(unit, variant)
    if code:
        raise Exit(code=code)


@task(
    help={
        "framework": "framework of TRAIN_IMAGE and NOTEBOOK_IMAGE: " + ONE_FRAMEWORK_HELP,
        "new_token": "generate a new notebook token (default: keep the one in .env)",
    }
)
@one_line_errors
def env(c, framework=None, new_token=False):
    """Write .env for docker compose: your UID/GID, the image refs from the matrix, a notebook token."""
    compose.env(framework or settings(c).framework, new_token, settings(c).project)


@task(
    help={
        "download": "download MNIST from a public mirror and check it (default action when none is given)",
        "generate": "write a small learnable stand-in dataset, not MNIST, for tests and smoke runs (default: off)",
        "verify": "check the files against the MNIST checksums or the folder's SHA256SUMS (default: off)",
        "record": "write SHA256SUMS for files you supplied yourself (default: off)",
        "folder": "data folder (default: DATA_DIR from .env, else ./data)",
    }
)
@one_line_errors
def data(c, download=False, generate=False, verify=False, record=False, folder=None):
    """Get MNIST into the data folder (download, or generate a stand-in), or verify/record what is there."""
    compose.data(folder, download=download, generate=generate, verify=verify, record=record)


@task(help={"framework": ONE_FRAMEWORK_HELP, "project": PROJECT_HELP, "env_file": ENV_FILE_HELP})
@one_line_errors
def up_cpu(c, framework=None, project=None, env_file=None):
    """Start the notebook on the CPU image; print its URL with the token."""
    compose.up(framework or settings(c).framework, "cpu", project, env_file, settings(c).project)


@task(help={"framework": ONE_FRAMEWORK_HELP, "project": PROJECT_HELP, "env_file": ENV_FILE_HELP})
@one_line_errors
def up_gpu(c, framework=None, project=None, env_file=None):
    """Check the GPU host (driver, toolkit, Compose v2), then start the notebook on the CUDA image."""
    compose.up(framework or settings(c).framework, "cuda", project, env_file, settings(c).project)


@task(help={"project": PROJECT_HELP, "env_file": ENV_FILE_HELP})
@one_line_errors
def down(c, project=None, env_file=None):
    """Stop and remove the compose services (notebook, any train run) of this checkout."""
    compose.down(project, env_file)


@task(
    help={
        "command": "the train service's arguments as one string, when `--` is not at hand: options of the built-in "
        "trainer (--synthetic --epochs 3) or your own command (python my_train.py) (default: the text after `--`, "
        "else the built-in trainer)",
        "project": PROJECT_HELP,
        "env_file": ENV_FILE_HELP,
        "gpu": "on the GPU: compose/compose.gpu.yaml over the train service, after the GPU preflight (TRAIN_IMAGE "
        "must be a CUDA lab image)",
    }
)
@one_line_errors
def train(c, command=None, project=None, env_file=None, gpu=False):
    """Train in the foreground (`invoke train -- --epochs 3`); SIGTERM, Ctrl-C or SIGHUP checkpoints the run."""
    code = compose_train.train(command, c.remainder, project, env_file, gpu)
    if code:
        raise Exit(code=code)


@task(
    help={
        "framework": "torch, tensorflow, a comma list or all (default: the lab's labstack.framework setting, "
        "torch: the GPU references are PyTorch's)",
        "variant": "cpu, cuda, a comma list, all, or auto: the CPU images plus the CUDA ones this host's GPU can "
        "run (default: auto)",
        "workloads": "matmul, mnist_cnn, resnet, transformer, a comma list or all (default: all; with --model, "
        "none unless named)",
        "quick": "smaller models and fewer steps, about half a minute per image on 2 CPUs (default: the full sizes)",
        "local": "also run each framework on this host, from a venv of the image's own wheels, to measure the "
        "container's overhead (default: containers only)",
        "repeat": "run everything N times to measure the run-to-run spread (default: 1)",
        "compare": "an earlier benchmark.json: flag changes larger than the measured noise (default: none)",
        "out": "directory for benchmark.json, .md and .png (default: reports/benchmark-<UTC time>)",
        "cpus": "CPU quota for the containers, like docker run --cpus; --local runs are not limited (default: none)",
        "model": "package.module:function: time your own PyTorch model's training steps, in the lab image; the "
        "function returns (model, (inputs, targets), loss) (docs/benchmark.md) (default: our workloads only)",
        "project": "the folder your --model's code is in, mounted read-only at /work and on PYTHONPATH (default: "
        "the lab's labstack.project setting, else here)",
    }
)
@one_line_errors
def benchmark(
    c, framework=None, variant="auto", workloads=None, quick=False, local=False, repeat="1", compare=None,
    out=None, cpus=None, model=None, project=None,
):  # fmt: skip
    """Do you need a GPU? Benchmark the images on this machine; write JSON, Markdown and a chart."""
    lab = settings(c)
    bench.benchmark(framework, variant, workloads, quick, local, repeat, compare, out, cpus, model, project,
                    lab.project, lab.framework, lab.gpu_hour_price, lab.cpu_hour_price)  # fmt: skip


@task(
    help={
        "hosts": "lab servers: ssh://[user@]host[:port], comma-separated, or @FILE (one a line) "
        "(default: the lab's labstack.hosts setting)",
        "image": "images to send, by name (torch-cpu: its lab image) or ref, comma-separated (default: every lab "
        "image built here; per host the CPU ones, plus the CUDA ones its driver and toolkit can run)",
        "via": "registry: each host pulls through an ssh tunnel to a registry run here, only the layers it lacks; "
        "ssh: docker save | ssh docker load, the whole image; auto: registry, ssh where sshd refuses the tunnel "
        "(default: auto)",
        "check": "connect, check and print the plan; change nothing (default: off)",
        "rollback": "point each image's name back at <ref>-previous, the image the last deploy replaced (default: off)",
        "jobs": "hosts deployed at the same time (default: all, up to 8)",
        "out": "folder for report.json, junit.xml and failed-hosts.txt (default: reports/deploy)",
    }
)
@one_line_errors
def deploy(c, hosts=None, image=None, via="auto", check=False, rollback=False, jobs=None, out="reports/deploy"):
    """Send the images to lab servers by ID over ssh, verify, tag (keeping -previous) and smoke-run them there."""
    deploy_.deploy(image, hosts or settings(c).hosts, via, check, rollback, jobs, out)


@task(
    help={
        "image": "the image, by name (torch-cpu: its lab image) or ref; the job is pinned to its ID here "
        "(default: the lab's framework's CPU lab image)",
        "runtime": "docker: each task a docker run on its node; pyxis: srun --container-image; apptainer: a SIF "
        "(default: docker)",
        "run": "run name: the folder under --runs for the script, the job output and the checkpoints; the same "
        "run resumes (default: slurm-IMAGE)",
        "command": "options of the built-in trainer (--synthetic --epochs 3) or the lab's own command "
        "(python my_train.py), as train takes them (default: the built-in trainer)",
        "nodes": "nodes (default: 1)",
        "tasks_per_node": "tasks per node, one container each (default: 1)",
        "cpus_per_task": "CPUs per task: the container's --cpus and its thread pools (default: 2)",
        "gpus_per_task": "GPUs per task: the container sees those only (default: 0)",
        "mem": "memory per node, as Slurm's --mem (4G), shared by its tasks (default: the cluster's)",
        "time": "time limit, as Slurm's --time (90, 1:30:00, 1-00:00) (default: 1:00:00)",
        "partition": "partition (default: the cluster's default)",
        "signal_lead": "seconds before the time limit when the tasks get SIGTERM and checkpoint; Slurm may send it up "
        "to 60 s earlier (default: 120)",
        "runs": "runs folder, shared by the nodes, mounted at /runs (default: runs)",
        "data": "data folder, shared by the nodes, mounted read-only at /data (default: data)",
        "project": "the lab's code, shared by the nodes, mounted at /work (default: the lab's labstack.project "
        "setting, else here)",
        "image_id": "the image's ID (sha256:...), for a login node without Docker (default: read here)",
        "container_image": "pyxis: dockerd://REF or a squashfs file; apptainer: the SIF (default: dockerd://IMAGE; "
        "exports/NAME.sif)",
        "submit": "submit it with sbatch and print the job's ID (default: only write the script)",
    }
)
@one_line_errors
def slurm(
    c, image=None, runtime="docker", run=None, command=None, nodes="1", tasks_per_node="1", cpus_per_task="2",
    gpus_per_task="0", mem="", time="1:00:00", partition="", signal_lead="120", runs="runs", data="data",
    project=None, image_id=None, container_image="", submit=False,
):  # fmt: skip
    """Write a Slurm batch script that runs a labstack image on a cluster's nodes; --submit submits it."""
    lab = settings(c)
    cluster.slurm(
        image, lab.framework, runtime, run, command, nodes, tasks_per_node, cpus_per_task, gpus_per_task, mem, time,
        partition, signal_lead, runs, data, project or lab.project or ".", image_id, container_image, submit,
    )  # fmt: skip


@task(
    help={
        "image": "the image, by name (torch-cuda: its lab image) or ref (default: the lab's framework's CPU lab image)",
        "run": "run name: the Job's name and the run folder on the runs claim; lowercase (default: from the image)",
        "command": "options of the built-in trainer or the lab's own command, as train takes them (default: the "
        "built-in trainer)",
        "cpus": "CPUs (requests = limits) (default: 2)",
        "mem": "memory (requests = limits); /dev/shm is half of it (default: 8G)",
        "gpus": "nvidia.com/gpu (default: 0)",
        "time": "activeDeadlineSeconds, as Slurm's --time (default: 1:00:00)",
        "grace": "seconds between SIGTERM and SIGKILL: the trainer checkpoints in them (default: 120)",
        "digest": "the image as HOST:PORT/REPO@sha256:... (default: the digest `invoke push` recorded)",
        "record": "invoke push's record of digests (default: reports/push/digests.json)",
        "kubernetes": "the Kubernetes version to validate against (default: 1.31)",
        "runs": "where the manifest goes: RUNS/RUN/kubernetes/job.yaml (default: runs)",
        "runs_claim": "PersistentVolumeClaim mounted at /runs (default: labstack-runs)",
        "data_claim": "PersistentVolumeClaim mounted read-only at /data (default: labstack-data)",
    }
)
@one_line_errors
def kube_job(
    c, image=None, run=None, command=None, cpus="2", mem="8G", gpus="0", time="1:00:00", grace="120", digest=None,
    record=PUSH_OUT, kubernetes="1.31", runs="runs", runs_claim="labstack-runs", data_claim="labstack-data",
):  # fmt: skip
    """Write a Kubernetes Job for a labstack image by digest, validated offline against the API's schema."""
    cluster.kube_job(
        image, settings(c).framework, run, command, cpus, mem, gpus, time, grace, digest, record, kubernetes, runs,
        runs_claim, data_claim,
    )  # fmt: skip


ns = Collection(
    lock, lab_add, base, build, wheels, validate, push, deploy, slurm, export, kube_job, benchmark, test, env, data,
    up_cpu, up_gpu, down, train, notebook_lock, notebook_image,
)  # fmt: skip
ns.configure({"labstack": DEFAULTS})
