"""Write the image manifest and refuse a wrong build (runs inside `docker build`, after the install).

The manifest is plain text and JSON under /opt/labstack/manifest, readable without starting Python
(`docker run --rm IMAGE cat /opt/labstack/manifest/versions.json`, or `docker cp`):
  pip-freeze.txt  every installed distribution, name==version
  dpkg.txt        every Debian package, name=version
  versions.json   Python, framework and CUDA/cuDNN versions as compiled and as loaded (from probe.py, so the
                  manifest and the probes can never disagree about what the image holds)
The build fails if a cuda image holds a CPU build of the framework, or a cpu image holds CUDA libraries, or if
the framework installed is another release than the version the image is tagged and labelled with.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.metadata
import json
import platform
import subprocess
import sys
from pathlib import Path

import probe  # the payload's probes, beside this file in the image


def distributions() -> dict[str, str]:
    found = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found[name.lower().replace("_", "-")] = dist.version
    return dict(sorted(found.items()))


# What a build records of the framework probe: the versions, not what this build machine's devices are.
BUILD_FACTS = ("version", "built_with_cuda", "cuda_compiled", "cudnn_compiled", "cudnn_loaded")


def framework_versions(framework: str) -> dict:
    found = probe.run(framework)
    if not found.get("available"):
        raise SystemExit(f"labstack: {framework} does not import in this image: {found.get('reason')}")
    return {key: found[key] for key in BUILD_FACTS if key in found}


def framework_distributions(framework: str) -> dict[str, str]:
    """{distribution: version} of what provides the framework's import (torch; tensorflow-cpu or tensorflow), as its
    package metadata says: what pip installed, whatever the module claims."""
    providers = {n.lower().replace("_", "-") for n in importlib.metadata.packages_distributions().get(framework, [])}
    own = sorted(n for n in providers if n == framework or n.startswith(f"{framework}-"))
    return {name: importlib.metadata.version(name) for name in own}


def version_problems(framework: str, tagged: str, installed: dict[str, str]) -> list[str]:
    """The installed framework is the release the tag names; a local label (+cpu) is the variant's business."""
    if not tagged:
        return ["no framework version to check: build with `invoke build` (it passes LABSTACK_FRAMEWORK_VERSION)"]
    if not installed:
        return [f"no installed distribution provides {framework}"]
    return [
        f"image tagged {tagged} holds {name} {version}: images/matrix.toml [frameworks.{framework}] version and the "
        f"lockfile disagree: make them one release and run `invoke lock --framework {framework}`"
        for name, version in installed.items()
        if version.split("+", 1)[0] != tagged
    ]


def cuda_runtime_from_wheels(dists: dict[str, str]) -> str | None:
    """major.minor of the CUDA runtime wheel (nvidia-cuda-runtime or nvidia-cuda-runtime-cuNN)."""
    for name, version in dists.items():
        if name.startswith("nvidia-cuda-runtime"):
            return ".".join(version.split(".")[:2])
    return None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--framework", required=True, choices=["torch", "tensorflow"])
    parser.add_argument("--variant", required=True, choices=["cpu", "cuda"])
    parser.add_argument("--cuda", default="", help="CUDA major.minor the matrix expects (cuda variant)")
    parser.add_argument("--cuda-patterns", required=True, help="comma list from images/matrix.toml [cuda]")
    parser.add_argument("--version", required=True, help="the framework version the image is tagged with")
    parser.add_argument("--out", type=Path, default=Path(probe.MANIFEST_DIR))
    args = parser.parse_args()

    dists = distributions()
    framework = framework_versions(args.framework)
    cuda_dists = sorted(n for n in dists if any(fnmatch.fnmatchcase(n, p) for p in args.cuda_patterns.split(",")))
    runtime = cuda_runtime_from_wheels(dists)

    problems = version_problems(args.framework, args.version, framework_distributions(args.framework))
    if args.variant == "cpu":
        if framework["built_with_cuda"]:
            problems.append(f"cpu image got a CUDA build of {args.framework} {framework['version']}")
        if cuda_dists:
            problems.append(f"cpu image holds CUDA packages: {', '.join(cuda_dists)}")
    else:
        if not framework["built_with_cuda"]:
            problems.append(f"cuda image got a CPU build of {args.framework} {framework['version']}")
        if runtime != args.cuda:
            problems.append(f"cuda image has CUDA runtime {runtime} from its wheels, the matrix says {args.cuda}")
    for problem in problems:
        print(f"labstack: {problem}", file=sys.stderr)
    if problems:
        return 1

    dpkg = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package}=${Version}\n"], capture_output=True, text=True, check=True
    ).stdout
    versions = {
        "python": platform.python_version(),
        "framework": args.framework,
        "variant": args.variant,
        args.framework: framework,
        "cuda_runtime_wheel": runtime,
        "cuda_packages": {n: dists[n] for n in cuda_dists},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pip-freeze.txt").write_text("".join(f"{n}=={v}\n" for n, v in dists.items()))
    (args.out / "dpkg.txt").write_text("".join(sorted(dpkg.splitlines(keepends=True))))
    (args.out / "versions.json").write_text(json.dumps(versions, indent=2, sort_keys=True) + "\n")
    print(json.dumps(versions, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
