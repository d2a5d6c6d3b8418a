"""labstack tasks: `invoke --list` shows them; each calls plain functions in the labstack package."""

from __future__ import annotations

import functools
import sys

from invoke import Collection, Exit, task

from labstack.errors import LabstackError


def one_line_errors(body):
    """Turn a LabstackError into `Exit(message, code)`: one line on stderr, no traceback."""

    @functools.wraps(body)
    def wrapper(*args, **kwargs):
        try:
            return body(*args, **kwargs)
        except LabstackError as err:
            raise Exit(f"labstack: {err}", code=err.code) from None
        except KeyboardInterrupt:
            raise Exit("labstack: interrupted", code=130) from None

    return wrapper


FRAMEWORK_HELP = "torch, tensorflow, a comma list or all (default: all)"
VARIANT_HELP = "cpu, cuda, a comma list or all (default: cpu)"


@task(help={"framework": FRAMEWORK_HELP})
@one_line_errors
def lock(c, framework="all"):
    """Resolve the hashed lockfiles of the chosen frameworks from images/matrix.toml with uv."""
    from labstack.lock import lock_framework
    from labstack.matrix import load_matrix
    from labstack.pipconf import host_pip_sources

    matrix = load_matrix()
    sources = host_pip_sources()
    for name in dict.fromkeys(i.framework for i in matrix.select(framework, "all")):
        for path in lock_framework(matrix, name, sources):
            print(f"wrote {path.relative_to(path.parents[2])}")


@task(
    help={
        "refresh": "build a new OS layer even if one exists (default: reuse the newest)",
        "from_image": "start from this Debian image, pinned by digest, instead of building the OS layer",
    }
)
@one_line_errors
def base(c, refresh=False, from_image=None):
    """Build the OS layer from Debian packages (mmdebstrap) and the shared base image on top of it."""
    from labstack.base import check_pinned, ensure_base
    from labstack.engine import connect
    from labstack.matrix import load_matrix

    matrix = load_matrix()
    if from_image:
        check_pinned(from_image, matrix.suite)
    print(ensure_base(connect(), matrix, refresh=refresh, from_image=from_image))


@task(
    help={
        "framework": FRAMEWORK_HELP,
        "variant": VARIANT_HELP,
        "refresh_base": "rebuild the OS layer first (default: reuse the newest)",
        "from_image": "start the base from this Debian image pinned by digest (default: the local OS layer)",
    }
)
@one_line_errors
def build(c, framework="all", variant="cpu", refresh_base=False, from_image=None):
    """Build images (default: the CPU images) offline from a verified wheelhouse; print a size/time table."""
    from labstack.build import build_images
    from labstack.matrix import load_matrix
    from labstack.report import print_build_summary

    matrix = load_matrix()
    images = matrix.select(framework, variant)
    print_build_summary(build_images(matrix, images, refresh_base=refresh_base, from_image=from_image))


@task(help={"framework": FRAMEWORK_HELP, "variant": VARIANT_HELP})
@one_line_errors
def wheels(c, framework="all", variant="all"):
    """Download and verify the wheels of the chosen lockfiles into the wheelhouse (for offline builds)."""
    from labstack.lock import read_lock
    from labstack.matrix import load_matrix
    from labstack.wheelhouse import ensure_wheels, wheelhouse_dir

    matrix = load_matrix()
    for image in matrix.select(framework, variant):
        found = ensure_wheels(read_lock(image, matrix), matrix)
        print(f"{image.ref}: {len(found)} wheels verified in {wheelhouse_dir()}")


@task(
    help={
        "image": "images to check, by name (torch-cpu) or ref, comma-separated; 'none' for hosts only "
        "(default: every labstack image built here)",
        "hosts": "testinfra hosts to check: local://, ssh://user@host, ... comma-separated; 'none' for images only "
        "(default: local://)",
        "gpu": "auto: GPU checks where NVML finds a GPU, skipped with the reason elsewhere; require: fail them "
        "without a usable GPU; skip: leave them out (default: auto)",
        "out": "folder for report.json and junit.xml (default: reports/validate)",
        "jobs": "targets checked at the same time (default: 2 to 4 by CPU count)",
    }
)
@one_line_errors
def validate(c, image=None, hosts="local://", gpu="auto", out="reports/validate", jobs=0):
    """Check images and hosts (driver, toolkit, GPU in container, shm) without building; table, JUnit, JSON."""
    import time
    from pathlib import Path

    from rich.console import Console

    from labstack.build import git_output
    from labstack.matrix import load_matrix
    from labstack.report import print_validation, target_line
    from labstack.validate import all_passed, check_gpu_mode, default_jobs, plan_targets, validate, write_report

    check_gpu_mode(gpu)
    targets = plan_targets(load_matrix(), image, hosts)
    console = Console(stderr=True)
    console.print(f"validating {', '.join(t.label for t in targets)} (--gpu {gpu})")
    started = time.monotonic()
    with console.status("running the checks"):
        results = validate(targets, gpu, Path(out), jobs or default_jobs(), lambda r: console.print(target_line(r)))
    seconds = time.monotonic() - started
    report = write_report(results, gpu, seconds, Path(out), git_output("rev-parse", "HEAD") or "unknown")
    print_validation(results)
    failed = sum(r.count("fail") for r in results)
    print(f"{len(targets)} targets in {seconds:.1f} s; report: {report}, JUnit: {report.parent / 'junit.xml'}")
    if not all_passed(results):
        raise Exit(f"labstack: {failed} checks failed: the reasons are above, and in {report}", code=1)


@task(
    help={
        "unit": "run only the unit tests, without Docker (default: all tests)",
        "variant": "image variants the image tests build and check: cpu, cuda or all (default: all)",
    }
)
def test(c, unit=False, variant="all"):
    """Run the test suite: unit tests, then image tests against real built images."""
    target = "tests/unit" if unit else "tests"
    c.run(f"{sys.executable} -m pytest {target} --variant {variant}", pty=False)


ONE_FRAMEWORK_HELP = "torch or tensorflow (default: torch)"
PROJECT_HELP = "compose project name (default: COMPOSE_PROJECT_NAME from .env, else the checkout's folder name)"
ENV_FILE_HELP = "env file compose reads (default: .env in the repository root, written by `invoke env`)"


@task(
    help={
        "framework": "framework of TRAIN_IMAGE and NOTEBOOK_IMAGE: " + ONE_FRAMEWORK_HELP,
        "new_token": "generate a new notebook token (default: keep the one in .env)",
    }
)
@one_line_errors
def env(c, framework="torch", new_token=False):
    """Write .env for docker compose: your UID/GID, the image refs from the matrix, a notebook token."""
    from labstack.compose import ENV_FILE, ensure_env, one_framework
    from labstack.engine import connect, image_or_none
    from labstack.matrix import load_matrix

    matrix = load_matrix()
    image = matrix.image(one_framework(matrix, framework), "cpu")
    built = image_or_none(connect(), image.ref)
    values = ensure_env(matrix, framework, new_token=new_token, image_id=built.id if built else None)
    print(f"wrote {ENV_FILE} (mode 600): UID={values['UID']} GID={values['GID']} TRAIN_IMAGE={values['TRAIN_IMAGE']}")
    if not built:
        print(f"{image.ref} is not built yet: `invoke build --framework {framework}`")


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
    from labstack.compose import data_helper

    data_helper(folder, download=download, generate=generate, verify=verify, record=record)


@task(help={"framework": FRAMEWORK_HELP})
@one_line_errors
def notebook_lock(c, framework="all"):
    """Resolve the notebook (JupyterLab) lockfiles, constrained by each framework image's own lockfile."""
    from labstack.matrix import load_matrix
    from labstack.notebook import lock_notebook
    from labstack.pipconf import host_pip_sources

    matrix = load_matrix()
    sources = host_pip_sources()
    for image in matrix.select(framework, "all"):
        print(f"wrote {lock_notebook(matrix, image, sources)}")


@task(help={"framework": FRAMEWORK_HELP, "variant": VARIANT_HELP})
@one_line_errors
def notebook_image(c, framework="all", variant="cpu"):
    """Build the notebook images (JupyterLab on each framework image), offline from the wheelhouse."""
    from labstack.matrix import load_matrix
    from labstack.notebook import build_notebook_image

    matrix = load_matrix()
    for image in matrix.select(framework, variant):
        print(build_notebook_image(matrix, image))


@task(help={"framework": ONE_FRAMEWORK_HELP, "project": PROJECT_HELP, "env_file": ENV_FILE_HELP})
@one_line_errors
def up_cpu(c, framework="torch", project=None, env_file=None):
    """Start the notebook on the CPU image; print its URL with the token."""
    _up(framework, "cpu", project, env_file)


@task(help={"framework": ONE_FRAMEWORK_HELP, "project": PROJECT_HELP, "env_file": ENV_FILE_HELP})
@one_line_errors
def up_gpu(c, framework="torch", project=None, env_file=None):
    """Check the GPU host (driver, toolkit, Compose v2), then start the notebook on the CUDA image."""
    _up(framework, "cuda", project, env_file)


def _up(framework, variant, project, env_file):
    from pathlib import Path

    from labstack.compose import ENV_FILE, Project, one_framework, project_from_env, up_notebook
    from labstack.engine import connect
    from labstack.gpu import gpu_preflight
    from labstack.matrix import load_matrix

    matrix = load_matrix()
    image = matrix.image(one_framework(matrix, framework), variant)
    client = connect()
    if variant == "cuda":
        gpu_preflight(client, image, matrix)
    env_path = Path(env_file) if env_file else ENV_FILE
    compose_project = Project(project_from_env(env_path, project), env_path, gpu=variant == "cuda")
    print(up_notebook(matrix, framework, variant, compose_project))


@task(help={"project": PROJECT_HELP, "env_file": ENV_FILE_HELP})
@one_line_errors
def down(c, project=None, env_file=None):
    """Stop and remove the compose services (notebook, any train run) of this checkout."""
    from pathlib import Path

    from labstack.compose import ENV_FILE, Project, project_from_env
    from labstack.compose import down as compose_down

    env_path = Path(env_file) if env_file else ENV_FILE
    compose_down(Project(project_from_env(env_path, project), env_path))


@task(
    help={
        "framework": FRAMEWORK_HELP,
        "variant": "cpu, cuda, a comma list, all, or auto: the CPU images plus the CUDA ones this host's GPU can "
        "run (default: auto)",
        "workloads": "matmul, mnist_cnn, resnet, transformer, a comma list or all (default: all)",
        "quick": "smaller models and fewer steps, about half a minute per image on 2 CPUs (default: the full sizes)",
        "local": "also run each framework on this host, from a venv of the image's own wheels, to measure the "
        "container's overhead (default: containers only)",
        "repeat": "run everything N times to measure the run-to-run spread (default: 1)",
        "compare": "an earlier benchmark.json: flag changes larger than the measured noise (default: none)",
        "out": "directory for benchmark.json, .md and .png (default: reports/benchmark-<UTC time>)",
        "cpus": "CPU quota for the containers, like docker run --cpus; --local runs are not limited (default: none)",
    }
)
@one_line_errors
def benchmark(
    c, framework="all", variant="auto", workloads="all", quick=False, local=False, repeat=1, compare=None,
    out=None, cpus=None,
):  # fmt: skip
    """Do you need a GPU? Benchmark the images on this machine; write JSON, Markdown and a chart."""
    from labstack.bench import BenchOptions, parse_cpus, print_outcome, run_benchmark

    options = BenchOptions(framework, variant, workloads, quick, local, int(repeat), compare, out, parse_cpus(cpus))
    print_outcome(run_benchmark(options))


ns = Collection(
    lock,
    base,
    build,
    wheels,
    validate,
    benchmark,
    test,
    env,
    data,
    notebook_lock,
    notebook_image,
    up_cpu,
    up_gpu,
    down,
)
