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
        "unit": "run only the unit tests, without Docker (default: all tests)",
        "variant": "image variants the image tests build and check: cpu, cuda or all (default: all)",
    }
)
def test(c, unit=False, variant="all"):
    """Run the test suite: unit tests, then image tests against real built images."""
    target = "tests/unit" if unit else "tests"
    c.run(f"{sys.executable} -m pytest {target} --variant {variant}", pty=False)


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


ns = Collection(lock, base, build, wheels, test, benchmark)
