"""The GPU proof: one command on a bare GPU host (no Docker, no network, the host's own PyTorch, pytest and
nvidia-ml-py), from a checkout of this repository:

    python3 -m labstack.bench.reference [--out references] [--name h100] [--wheels DIR] [--device cuda]

1. probe: the GPUs as NVML and torch see them (payload/probe.py), printed;
2. host checks: `pytest labstack/validate/checks/host -m gpu --gpu require` (driver, devices, NVML, a GPU matmul
   against the CPU; not the Docker checks, which a bare GPU host fails for nothing); testinfra, where the host has
   none, is installed from --wheels into a temporary folder first;
3. the torch benchmark on the GPU at both sizes (payload/bench.py --device cuda, full and --quick), written
   whole or not at all to OUT/NAME-torch-full.json and OUT/NAME-torch-quick.json, each carrying its provenance
   (GPU, driver, torch, CUDA and cuDNN as loaded, host, date, labstack revision), and checked: the device used,
   no workload error;
4. a summary: each step's result and time, each workload's figure, and the files to commit.

Exit 0 only when every step passed. Standard library only (it starts before anything is installed); every step
is a child process with a timeout, so one that hangs is reported, not waited for. `--device cpu` runs the same
pipeline on a CPU (the tests do, in a labstack image): nothing GPU-specific is then claimed or written to
references/ unless --out says so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAYLOAD = ROOT / "payload"
HOST_CHECKS = ROOT / "labstack" / "validate" / "checks" / "host"
TIMEOUTS = {"probe": 120, "checks": 300, "full": 420, "quick": 240}
BUDGET_S = 360  # the bound on an H100: under 6 minutes for everything
# The GPU's model in its NVML name: NVIDIA H100 80GB HBM3 -> h100, NVIDIA A100-SXM4-40GB -> a100, L40S -> l40s.
MODEL = re.compile(r"\b((?:[A-Z]{1,2}\d{2,4}[A-Z]?)|(?:RTX\s?\d{4}(?:\s?Ti)?))\b")


@dataclass
class Step:
    name: str
    ok: bool = False
    seconds: float = 0.0
    detail: str = ""
    files: list[Path] = field(default_factory=list)


def model_slug(gpu_name: str) -> str:
    """A short file name for a GPU: its model number, lowercased; else the whole name, slugged."""
    found = MODEL.search(gpu_name.upper().replace("NVIDIA", " "))
    text = found.group(1) if found else gpu_name
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "gpu"


def run(command: list[str], timeout: float, env: dict[str, str] | None = None) -> tuple[int, str, str, float]:
    """(exit code, stdout, stderr, seconds); a timeout is exit 124 with what it printed so far."""
    began = time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                              env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)  # fmt: skip
        return done.returncode, done.stdout, done.stderr, time.monotonic() - began
    except subprocess.TimeoutExpired as expired:
        said = expired.stderr.decode() if isinstance(expired.stderr, bytes) else (expired.stderr or "")
        return 124, "", f"{said}\nno answer in {timeout:.0f} s", time.monotonic() - began


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def probe(device: str) -> tuple[Step, dict]:
    """The GPUs as NVML and torch see them."""
    code, out, err, seconds = run([sys.executable, str(PAYLOAD / "probe.py"), "nvml", "torch"], TIMEOUTS["probe"])
    step = Step("probe", seconds=seconds)
    try:
        found = json.loads(last_line(out))
    except ValueError:
        step.detail = f"probe.py printed no JSON (exit {code}): {last_line(err)}"
        return step, {}
    nvml, torch = found.get("nvml", {}), found.get("torch", {})
    devices = nvml.get("devices") or torch.get("devices") or []
    names = [d.get("name", "?") for d in devices]
    if device == "cuda" and not torch.get("cuda_available"):
        step.detail = f"torch cannot use a GPU here: {torch.get('reason') or nvml.get('reason') or 'no CUDA device'}"
        return step, found
    step.ok = True
    step.detail = (
        f"{len(names)} GPU(s): {', '.join(names) or 'none'}; driver {nvml.get('driver_version', '?')}; "
        f"torch {torch.get('version', '?')} (CUDA {torch.get('cuda_compiled') or 'none'})"
    )
    return step, found


def find_testinfra(wheels: Path | None, into: Path, python: str = sys.executable) -> tuple[str, str]:
    """(PYTHONPATH addition, what was done): nothing where testinfra imports; else --wheels installed offline."""
    done = subprocess.run([python, "-c", "import testinfra"], capture_output=True)
    if done.returncode == 0:
        return "", "testinfra: the host's"
    found = sorted(wheels.glob("*.whl")) if wheels and wheels.is_dir() else []
    if not found:
        return "", "testinfra is not installed and no --wheels folder holds it (the host checks need it)"
    installed = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--target",
         str(into), *map(str, found)], capture_output=True, text=True,
    )  # fmt: skip
    if installed.returncode != 0:
        return "", f"installing the wheels in {wheels} failed: {last_line(installed.stderr)}"
    return str(into), f"testinfra: from {wheels}"


def host_check_command(gpu: str, report: Path) -> list[str]:
    """pytest over the host's GPU checks, less the one that starts a GPU container (the host has no Docker)."""
    return [sys.executable, "-m", "pytest", str(HOST_CHECKS), "-m", "gpu", "-k", "not docker", "--gpu", gpu,
            "-p", "no:cacheprovider", "-q", "-rs", f"--junitxml={report}"]  # fmt: skip


def host_checks(device: str, wheels: Path | None, report: Path) -> Step:
    """The host's GPU checks only (`-m gpu`, less the one that starts a GPU container): a bare GPU host has no
    Docker, so the Docker, Compose and image-disk checks of the same folder would fail there for nothing. On a GPU
    they must pass (require); on a CPU (the tests) they run to their skip, with the reason."""
    gpu = "require" if device == "cuda" else "auto"
    with tempfile.TemporaryDirectory(prefix="labstack-site-") as site:
        extra, how = find_testinfra(wheels, Path(site))
        if not extra and not how.startswith("testinfra:"):
            return Step("host checks", detail=how)
        path = os.pathsep.join(p for p in (extra, str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        # From the checkout's root: pyproject.toml's addopts load labstack's pytest plugin (the --gpu option).
        code, out, err, seconds = run(host_check_command(gpu, report), TIMEOUTS["checks"], {"PYTHONPATH": path})
    summary = last_line(out) or last_line(err)
    why = [line for line in out.splitlines() if line.startswith(("FAILED ", "ERROR "))][:3]
    summary += "".join(f"; {line}" for line in why)
    return Step("host checks", ok=code == 0, seconds=seconds, detail=f"{summary} ({how})", files=[report])


def benchmark(device: str, mode: str, out: Path) -> tuple[Step, dict]:
    """bench.py at one size, written to `out` whole or not at all, and checked."""
    command = [sys.executable, str(PAYLOAD / "bench.py"), "--device", device, "--framework", "torch"]
    command += ["--quick"] if mode == "quick" else []
    code, stdout, err, seconds = run(command, TIMEOUTS[mode])
    step = Step(f"benchmark {mode}", seconds=seconds)
    try:
        document = json.loads(last_line(stdout))
    except ValueError:
        step.detail = f"bench.py printed no JSON (exit {code}): {last_line(err)}"
        return step, {}
    problems = problems_of(document, device)
    if code != 0:
        problems.insert(0, f"exit {code}")
    if problems:
        step.detail = "; ".join(problems)
        return step, document
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    partial.write_text(json.dumps(document) + "\n")
    os.replace(partial, out)
    step.ok, step.files = True, [out]
    step.detail = f"{len(document['results'])} results on {document.get('device_name')}"
    return step, document


def problems_of(document: dict, device: str) -> list[str]:
    """What makes a benchmark document unfit as a reference: the wrong device, errors, an interruption, nothing
    measured, no GPU record for a GPU run."""
    found = []
    if document.get("device") != device:
        found.append(f"ran on {document.get('device')}, not {device}")
    found += [f"{e.get('workload')}: {e.get('error')}" for e in document.get("errors", [])]
    if document.get("interrupted"):
        found.append("interrupted")
    if not document.get("results"):
        found.append("no result")
    if device == "cuda" and not document.get("environment", {}).get("nvml", {}).get("available", True):
        found.append("no NVML record of the GPU and driver")
    return found


def figures(document: dict) -> list[str]:
    return [
        f"  {r.get('workload')} {' + '.join(r.get('tuning') or []) or 'default'}{' (best)' if r.get('best') else ''} "
        f"{r.get('config', '')}: {r.get('throughput'):.4g} {r.get('unit')}"
        for r in document.get("results", [])
        if isinstance(r.get("throughput"), int | float)
    ]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m labstack.bench.reference", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "references", help="the files' folder (default: references)")
    parser.add_argument("--name", default="", help="file name prefix (default: the GPU's model, e.g. h100)")
    parser.add_argument("--wheels", type=Path, default=ROOT / ".whl", help="wheels for what the host lacks (testinfra)")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: the same steps without a GPU")
    parser.add_argument("--sizes", default="full,quick", help="benchmark sizes, comma list (default: full,quick)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not set(args.sizes.split(",")) <= {"full", "quick"}:
        print(f"labstack: --sizes {args.sizes!r}: full, quick or both", file=sys.stderr)
        return 2
    began = time.monotonic()
    steps: list[Step] = []
    step, found = probe(args.device)
    steps.append(step)
    print(f"[{step.name}] {'ok' if step.ok else 'FAILED'}: {step.detail}", flush=True)
    if not step.ok:
        print(f"labstack: the GPU proof stopped at the probe: {step.detail}", file=sys.stderr)
        return 5
    gpus = found.get("nvml", {}).get("devices") or found.get("torch", {}).get("devices") or []
    name = args.name or (model_slug(gpus[0].get("name", "")) if gpus and args.device == "cuda" else args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    step = host_checks(args.device, args.wheels, args.out / f"{name}-host-checks.xml")
    steps.append(step)
    print(f"[{step.name}] {'ok' if step.ok else 'FAILED'}: {step.detail}", flush=True)
    documents = {}
    sizes = [size for size in ("full", "quick") if size in args.sizes.split(",")]
    for mode in sizes:
        step, documents[mode] = benchmark(args.device, mode, args.out / f"{name}-torch-{mode}.json")
        steps.append(step)
        print(f"[{step.name}] {'ok' if step.ok else 'FAILED'} in {step.seconds:.0f} s: {step.detail}", flush=True)
        print("\n".join(figures(documents[mode])), flush=True)
    total = time.monotonic() - began
    over = f" (over the {BUDGET_S} s budget)" if total > BUDGET_S else ""
    print(f"\nGPU proof ({args.device}) in {total:.0f} s{over}")
    for step in steps:
        print(f"  {'ok    ' if step.ok else 'FAILED'} {step.name:<16} {step.seconds:6.1f} s  {step.detail}")
    written = [str(f.relative_to(ROOT) if f.is_relative_to(ROOT) else f) for s in steps for f in s.files if f.exists()]
    if written:
        print("files: " + " ".join(written))
    failed = [s.name for s in steps if not s.ok]
    if failed:
        print(f"labstack: the GPU proof failed at: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
