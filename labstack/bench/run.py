"""`invoke benchmark`: run the payload's bench.py in each image (and with --local on this host, from a venv made of
the same wheels), collect one JSON document, then write the Markdown report and the chart from it.

With --model, bench.py also times the lab's own model, in each image's lab layer (the lab's packages are there),
with the project folder mounted read-only at /work and on PYTHONPATH."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import docker.errors
import docker.types
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from labstack import payload
from labstack.bench.prices import Prices
from labstack.bench.report import answer_cells, write_report
from labstack.bench.results import REPORT_SCHEMA, Document, load_document, load_references, read_document
from labstack.bench.stats import summarise
from labstack.bench.verdict import NO_REFERENCE, Analysis, analyse
from labstack.build.images import build_images
from labstack.build.layers import LAB, build_layer, layer_ref
from labstack.build.lock import read_lock
from labstack.build.wheelhouse import ensure_wheels, wheelhouse_dir
from labstack.compose.env import project_dir
from labstack.engine import connect
from labstack.errors import BadInput, ExitCode, LabstackError, Terminated
from labstack.gpu import gpu_preflight, gpu_problems, local_gpu
from labstack.matrix import VARIANTS, Image, Matrix, choose, load_matrix
from labstack.paths import REPORTS_DIR, cache_dir, has_local_changes, revision
from labstack.payload import run_probe

RUN_TIMEOUT = {"quick": 600, "full": 1800}  # seconds for one framework's run, start-up included
PROJECT_MOUNT = "/work"  # where the lab's code is in the container, as in the compose services and Slurm jobs
MODEL_FRAMEWORKS = ("torch",)  # what bench.py's --model can time, for now


def choose_workloads(value: str) -> list[str]:
    if value == "":  # --model without --workloads: the lab's model alone
        return []
    return list(choose("workload", value, payload.load("workloads").WORKLOADS))


def check_model_spec(spec: str) -> str:
    """The form of a --model spec, checked here by bench.py's own rule before Docker is asked."""
    bench = payload.load("bench")
    try:
        bench.parse_model_spec(spec)
    except bench.UserModelError as err:
        raise BadInput(str(err)) from None
    return spec


def project_folder(option: str | None, setting: str) -> Path:
    """The lab's code: --project, else the labstack.project setting (relative to the checkout, as compose reads
    it), else the current folder. It must be a folder."""
    if not option:
        return project_dir(setting) or Path.cwd()
    folder = Path(option).expanduser().resolve()
    if not folder.is_dir():
        raise BadInput(f"--project {option}: {folder} is not a folder: name the folder that holds your model's code")
    return folder


@dataclass(frozen=True)
class Target:
    """One run of bench.py: an image in a container, or its framework on this host (`where` = local)."""

    image: Image
    where: str  # "image" or "local"
    device: str  # "cpu" or "cuda": a CUDA image can also be measured on its CPU
    layer: str = "framework"  # the image's layer that runs: "lab" for the lab's own model

    @property
    def ref(self) -> str:
        return layer_ref(self.image, self.layer)

    @property
    def label(self) -> str:
        name = self.image.name if self.layer == "framework" else f"{self.image.name}-{self.layer}"
        return f"{name} ({'container' if self.where == 'image' else 'bare host'})"


def plan_targets(images: list[Image], local: bool, layer: str = "framework") -> list[Target]:
    targets = []
    for image in images:
        device = "cuda" if image.variant == "cuda" else "cpu"
        targets.append(Target(image, "image", device, layer))
        if local:
            targets.append(Target(image, "local", device))
    return targets


def bench_arguments(target: Target, workloads: list[str], quick: bool, model: str | None = None) -> list[str]:
    args = ["--framework", target.image.framework, "--device", target.device]
    if workloads:
        args += ["--workloads", ",".join(workloads)]
    if model:
        args += ["--model", model]
    return [*args, "--quick"] if quick else args


def parse_event(line: str) -> dict | None:
    """A progress event bench.py wrote on stderr, or None for any other line (a framework's own output)."""
    line = line.strip()
    if not line.startswith('{"event"'):
        return None
    try:
        return json.loads(line)
    except ValueError:
        return None


class RunInterrupted(Exception):
    """Ctrl-C or SIGTERM during a run: what bench.py printed when it was stopped, and which signal it was."""

    def __init__(self, partial: dict | None, signal: KeyboardInterrupt) -> None:
        super().__init__("interrupted")
        self.partial = partial
        self.signal = signal


def parse_document(stdout: str, target: Target, code: int, stderr_tail: list[str]) -> dict:
    lines = [line for line in stdout.strip().splitlines() if line.startswith("{")]
    try:
        doc = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = " | ".join(line.strip() for line in stderr_tail[-3:]) or "no output"
        raise LabstackError(f"the benchmark in {target.label} failed (exit {code}) without results: {tail}") from None
    if code == ExitCode.NO_GPU:  # bench.py's exit for a device it cannot use
        raise LabstackError(f"{target.label}: {doc['errors'][0]['error']}", code=ExitCode.NO_GPU)
    if code == ExitCode.BAD_INPUT and doc.get("errors"):  # a --model that cannot be used: the lab's code says why
        raise LabstackError(f"{target.label}: {doc['errors'][-1]['error']}", code=ExitCode.BAD_INPUT)
    return doc


def stream_events(lines, on_event, tail: list[str]) -> None:
    for line in lines:
        event = parse_event(line)
        if event:
            on_event(event)
        elif line.strip():
            tail.append(line.rstrip())
            del tail[:-20]


def run_in_container(
    client, target: Target, args: list[str], cpus: float | None, timeout: int, on_event, project: Path | None = None
) -> dict:
    """bench.py in a fresh container of the image: no network, the CPU quota given, killed after `timeout`. A
    project folder is mounted read-only at /work and put on PYTHONPATH, and the run is yours (your UID and GID, as
    in the compose services), so it reads your files as you do."""
    options: dict = {"network_mode": "none", "shm_size": "1g", "detach": True, "labels": {"labstack.bench": "1"}}
    if project:
        options.update(
            volumes={str(project): {"bind": PROJECT_MOUNT, "mode": "ro"}},
            environment={"PYTHONPATH": PROJECT_MOUNT},
            working_dir=PROJECT_MOUNT,
            user=f"{os.getuid()}:{os.getgid()}",
        )
    if cpus:
        options["nano_cpus"] = int(cpus * 1e9)
    if target.device == "cuda":
        options["device_requests"] = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
    try:
        container = client.containers.run(target.ref, ["python", payload.in_image("bench"), *args], **options)
    except docker.errors.DockerException as err:
        reason = getattr(err, "explanation", None) or str(err)
        raise LabstackError(f"cannot start {target.label}: {reason}") from None
    timer = threading.Timer(timeout, container.kill)
    tail: list[str] = []
    try:
        timer.start()
        try:
            chunks = container.logs(stream=True, follow=True, stdout=False, stderr=True)
            stream_events(_lines(chunks), on_event, tail)
            code = container.wait(timeout=60)["StatusCode"]
        except KeyboardInterrupt as stop:
            container.stop(timeout=20)  # SIGTERM: tini passes it on and bench.py prints what it measured
            stdout = container.logs(stdout=True, stderr=False).decode(errors="replace")
            raise RunInterrupted(_partial(stdout), stop) from None
        if not timer.is_alive():
            raise LabstackError(f"the benchmark in {target.label} ran past {timeout} s and was stopped")
        stdout = container.logs(stdout=True, stderr=False).decode(errors="replace")
        doc = parse_document(stdout, target, code, tail)
        labels = client.images.get(target.ref).labels or {}
        doc["image_id"] = container.image.id
        doc["image_revision"] = labels.get("org.opencontainers.image.revision")
        return doc
    finally:
        timer.cancel()
        container.remove(force=True)


def _lines(chunks):
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.decode(errors="replace")
    if pending:
        yield pending.decode(errors="replace")


def _partial(stdout: str) -> dict | None:
    lines = [line for line in stdout.strip().splitlines() if line.startswith("{")]
    try:
        return json.loads(lines[-1]) if lines else None
    except ValueError:
        return None


def local_python(matrix: Matrix) -> str:
    """A host Python of the images' version, for the bare-host venvs."""
    for candidate in (sys.executable, shutil.which(f"python{matrix.python_version}"), shutil.which("python3")):
        if not candidate:
            continue
        out = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True
        )
        if out.stdout.strip() == matrix.python_version:
            return candidate
    raise LabstackError(
        f"--local needs Python {matrix.python_version} on this host (the images' version, for the same wheels)"
    )


def ensure_local_venv(image: Image, matrix: Matrix) -> Path:
    """A venv with exactly the image's lockfile installed offline from the verified wheelhouse:
    ~/.cache/labstack/venvs/<image name>, rebuilt when the lockfile changes."""
    ensure_wheels(read_lock(image, matrix), matrix)
    venv = cache_dir() / "venvs" / image.name
    marker = venv / "labstack-lock.sha256"
    digest = hashlib.sha256(image.lockfile.read_bytes()).hexdigest()
    if marker.is_file() and marker.read_text().strip() == digest:
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    print(f"making {venv} from {image.lockfile.name} (offline, hashes required)", flush=True)
    subprocess.run([local_python(matrix), "-m", "venv", str(venv)], check=True)
    install = [
        str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-index", "--find-links",
        str(wheelhouse_dir()), "--require-hashes", "--no-deps", "--requirement", str(image.lockfile),
    ]  # fmt: skip
    if subprocess.run(install, check=False).returncode != 0:
        raise LabstackError(f"could not install {image.lockfile.name} into {venv}: see pip's message above")
    marker.write_text(digest + "\n")
    return venv


def run_local(target: Target, matrix: Matrix, args: list[str], timeout: int, on_event) -> dict:
    """bench.py on this host, in the venv made from the image's own lockfile and wheels."""
    venv = ensure_local_venv(target.image, matrix)
    tail: list[str] = []
    with tempfile.TemporaryFile("w+") as stdout:
        process = subprocess.Popen(
            [str(venv / "bin" / "python"), str(payload.path("bench")), *args],
            stdout=stdout, stderr=subprocess.PIPE, text=True, errors="replace",
        )  # fmt: skip
        timer = threading.Timer(timeout, process.kill)
        timer.start()
        try:
            stream_events(process.stderr, on_event, tail)
            code = process.wait()
        except KeyboardInterrupt as stop:
            process.terminate()  # the terminal's SIGINT reached it too; it prints what it measured
            process.wait(timeout=30)
            stdout.seek(0)
            raise RunInterrupted(_partial(stdout.read()), stop) from None
        finally:
            timer.cancel()
        if code in (-9, 137):
            raise LabstackError(f"the benchmark in {target.label} ran past {timeout} s and was stopped")
        stdout.seek(0)
        return parse_document(stdout.read(), target, code, tail)


@dataclass
class BenchOptions:
    framework: str = "all"
    variant: str = "auto"
    workloads: str = "all"
    quick: bool = False
    local: bool = False
    repeat: int = 1
    compare: str | None = None
    out: str | None = None
    cpus: float | None = None
    model: str | None = None  # package.module:function: the lab's own model, timed beside (or instead of) ours
    project: str | None = None  # the folder that holds its code (default: the labstack.project setting, else here)
    project_setting: str = ""
    default_framework: str = "torch"  # the lab's labstack.framework setting
    prices: Prices = field(default_factory=Prices)


def with_defaults(options: BenchOptions) -> BenchOptions:
    """The defaults that depend on --model: the lab's framework (only torch runs a lab model for now), and the
    built-in workloads run beside it only when --workloads names them."""
    model = bool(options.model)
    return replace(
        options,
        framework=options.framework or ("torch" if model else options.default_framework),
        workloads=options.workloads if options.workloads is not None else ("" if model else "all"),
    )


def host_record() -> dict:
    return {
        "cpu": run_probe("cpu"),
        "system": run_probe("system"),
        "labstack_revision": revision(),
        "labstack_dirty": has_local_changes(),
    }


def select_images(matrix: Matrix, options: BenchOptions, client) -> list[Image]:
    """The images to run: the chosen variants, or with 'auto' the CPU images plus the CUDA ones this host's GPU
    can run. Asking for cuda on a host without a usable GPU is an error (exit 5) that says why."""
    if options.variant != "auto":
        images = matrix.select(options.framework, options.variant)
        for image in images:
            if image.variant == "cuda":
                gpu_preflight(client, image, matrix)
        return images
    images = matrix.select(options.framework, "cpu")
    cuda = matrix.select(options.framework, "cuda")
    gpu = local_gpu()
    if gpu.nvml.get("available"):
        info = client.info()
        images += [i for i in cuda if not gpu_problems(i, matrix, gpu, info)]
    return images


def default_out_dir(now: dt.datetime) -> Path:
    return REPORTS_DIR / f"benchmark-{now:%Y%m%d-%H%M%S}"


def write_json(doc: dict, out_dir: Path) -> Path:
    """benchmark.json, atomically. If it cannot be written (the disk filled during the run), the results go to a
    file in the temporary folder instead, and the error names it: what was measured is never lost."""
    path = out_dir / "benchmark.json"
    tmp = path.with_suffix(".json.tmp")
    text = json.dumps(doc, indent=1) + "\n"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        with tempfile.NamedTemporaryFile("w", prefix="labstack-benchmark-", suffix=".json", delete=False) as rescue:
            rescue.write(text)
        raise LabstackError(f"cannot write {path} ({err.strerror or err}): the results are in {rescue.name}") from None
    return path


def check_options(options: BenchOptions) -> list[str]:
    """Every option checked before Docker is needed; returns the workloads (defaults filled: with_defaults)."""
    workloads = choose_workloads(options.workloads)
    if options.model:
        check_model_spec(options.model)
        others = [f for f in choose("framework", options.framework, load_matrix().frameworks)
                  if f not in MODEL_FRAMEWORKS]  # fmt: skip
        if others:
            raise BadInput(f"--model {options.model}: the lab model runs PyTorch models for now, not "
                           f"{', '.join(others)}: give --framework torch")  # fmt: skip
        if options.local:
            raise BadInput("--model runs in the lab images, not in --local venvs (they hold the framework alone): "
                           "leave out --local")  # fmt: skip
    variants = choose("variant", options.variant, (*VARIANTS, "auto"))
    if "auto" in variants and len(variants) > 1:
        raise BadInput(f"--variant {options.variant}: auto chooses the variants itself; give it alone")
    load_matrix().select(options.framework, "cpu" if options.variant == "auto" else options.variant)
    if options.repeat < 1:
        raise BadInput(f"--repeat {options.repeat}: give 1 or more")
    if options.cpus is not None and options.cpus <= 0:
        raise BadInput(f"--cpus {options.cpus}: give a positive number of CPUs")
    return workloads


def measure(
    client, matrix: Matrix, targets: list[Target], options: BenchOptions, doc: dict, out_dir: Path,
    project: Path | None = None,
) -> KeyboardInterrupt | None:  # fmt: skip
    """Run every target (`repeat` times), appending each run to `doc` and writing it as soon as it is there; the
    project folder (--model) is mounted in the containers. An interrupt (Ctrl-C, SIGTERM) keeps what was measured,
    marks the document and is returned."""
    builtin = [w for w in doc["workloads"] if w != "model"]
    args_of = {t: bench_arguments(t, builtin, options.quick, options.model) for t in targets}
    timeout = RUN_TIMEOUT[doc["mode"]]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, transient=False) as progress:
            for repeat in range(options.repeat):
                for target in targets:
                    name = f"{target.label}" + (f" run {repeat + 1}/{options.repeat}" if options.repeat > 1 else "")
                    task = progress.add_task(f"{name}: starting", total=None)

                    def on_event(event, task=task, name=name):
                        kind = event.get("event")
                        if kind == "setup":
                            progress.update(task, total=event["total"], description=f"{name}: loading framework")
                        elif kind == "start":
                            progress.update(task, description=f"{name}: {event['workload']} {event['precision']}")
                        elif kind in ("done", "error"):
                            progress.advance(task)

                    if target.where == "image":
                        run = run_in_container(client, target, args_of[target], options.cpus, timeout, on_event,
                                               project)  # fmt: skip
                    else:
                        run = run_local(target, matrix, args_of[target], timeout, on_event)
                    run.update(where=target.where, image=target.ref, repeat_index=repeat)
                    progress.update(task, description=f"{name}: done")
                    doc["runs"].append(run)
                    write_json(doc, out_dir)
    except RunInterrupted as stop:
        if stop.partial:
            doc["runs"].append({**stop.partial, "where": target.where, "image": target.ref})
        doc["interrupted"] = True
        return stop.signal
    except KeyboardInterrupt as stop:  # between runs: everything finished so far is already in doc
        doc["interrupted"] = True
        return stop
    return None


def run_benchmark(options: BenchOptions) -> Analysis:
    """Everything `invoke benchmark` does: the runs, then benchmark.json, the report and the chart, all from one
    analysis of the document."""
    options = with_defaults(options)
    workloads = check_options(options)
    project = project_folder(options.project, options.project_setting) if options.model else None
    earlier = load_document(Path(options.compare), "--compare file") if options.compare else None
    if earlier:
        comparable(earlier, options.compare)
    out_dir = Path(options.out) if options.out else None
    if out_dir:
        writable_folder(out_dir)
    matrix = load_matrix()
    client = connect()
    images = select_images(matrix, options, client)
    build_images(matrix, images)  # cached layers: seconds when the images exist; builds them when missing
    layer = "framework"
    if options.model:  # the lab's code needs the lab's packages: the lab layer, built like `invoke build` does
        layer = LAB.name
        for image in images:
            build_layer(matrix, image, LAB, parent_built=True)
        print(f"labstack: --model {options.model}: {project} mounted read-only at {PROJECT_MOUNT} in "
              f"{', '.join(layer_ref(i, layer) for i in images)}", flush=True)  # fmt: skip

    now = dt.datetime.now(dt.UTC)
    out_dir = out_dir or default_out_dir(now)
    doc: dict = {
        "schema": REPORT_SCHEMA,
        "created": now.isoformat(timespec="seconds"),
        "mode": "quick" if options.quick else "full",
        "workloads": (["model"] if options.model else []) + workloads,
        "repeat": options.repeat,
        "cpus_limit": options.cpus,
        "host": host_record(),
        "prices": options.prices.record(),
        "runs": [],
        "interrupted": False,
    }
    if options.model:
        doc["model"] = {"spec": options.model, "project": str(project)}
    stopped = measure(client, matrix, plan_targets(images, options.local, layer), options, doc, out_dir, project)
    if options.compare:
        doc["compare"] = {"file": str(options.compare)}
    analysis = analyse(read_document(doc), load_references(), earlier, options.prices)
    doc["summary"] = [{**asdict(row), "setting": row.setting} for row in analysis.rows]
    doc["answers"] = [answer.record() for answer in analysis.answers]
    doc["container_ratios"] = analysis.ratios
    if analysis.changes is not None:
        doc["compare"]["changes"] = analysis.changes
    saved = write_json(doc, out_dir)
    try:
        outputs = [saved, *write_report(analysis, out_dir)]
    except OSError as err:
        reason = err.strerror or err
        raise LabstackError(f"cannot write the report in {out_dir} ({reason}): the results are in {saved}") from None
    if stopped is not None:
        terminated = isinstance(stopped, Terminated)
        raise LabstackError(
            f"{'terminated (SIGTERM)' if terminated else 'interrupted'}: the results measured so far are in {out_dir}",
            code=ExitCode.TERMINATED if terminated else ExitCode.INTERRUPTED,
        )
    print_outcome(analysis, outputs)
    if options.model:
        check_model_ran(doc)
    return analysis


def check_model_ran(doc: dict) -> None:
    """Every run ended without a result of the lab's model: its training step failed; say how (the report,
    written already, lists every failed setting)."""
    if any(r["workload"] == "model" for run in doc["runs"] for r in run.get("results") or ()):
        return
    failed = next((e["error"] for run in doc["runs"] for e in run.get("errors") or () if e["workload"] == "model"),
                  "no result")  # fmt: skip
    raise LabstackError(f"--model {doc['model']['spec']}: its training step failed in every setting: {failed}")


def parse_cpus(value) -> float | None:
    if value in (None, ""):
        return None
    try:
        cpus = float(value)
    except (TypeError, ValueError):
        cpus = math.nan
    if not math.isfinite(cpus):
        raise BadInput(f"--cpus {value}: give a number of CPUs, e.g. 1 or 1.5")
    return cpus


def comparable(earlier: Document, path: str) -> None:
    """A --compare file is summarised before anything is measured: a body that cannot be is refused now, not
    after the whole run."""
    try:
        summarise(earlier.runs)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise BadInput(f"--compare file {path} is not a labstack benchmark JSON: a run or result holds a value of "
                       f"the wrong kind ({err})") from None  # fmt: skip


def writable_folder(folder: Path) -> None:
    """--out is made (and written to) before anything is measured, so a bad one loses no result."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".labstack-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        reason = err.strerror or err
        raise BadInput(f"--out {folder}: cannot write there ({reason}): give a folder you can write") from None


def print_outcome(analysis: Analysis, outputs: list[Path]) -> None:
    """The answer per workload on the terminal (the report's first screen), then where the full report is."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Do you need a GPU?", title_justify="left", show_lines=True)
    for heading in ("workload", "what you wait for", "this CPU, default", "at its best", "GPU", "answer"):
        table.add_column(heading, overflow="fold")
    for answer in analysis.answers:
        table.add_row(*(cell.replace("**", "") for cell in answer_cells(answer)))
    Console(width=max(120, Console().width)).print(table)
    if any(a.reference is None for a in analysis.answers):
        print(f"\n{NO_REFERENCE}")
    print("\nreport: " + ", ".join(map(str, outputs)))
