"""The one reader of benchmark JSON: what `invoke benchmark` writes (labstack-benchmark/1, many runs), what the
payload's bench.py prints (labstack-bench-run/1, one run: the committed GPU references are such files) and
the older shapes of both, read into typed records. Everything after this reads the records, never the JSON.

Older shapes it absorbs: a run without `where` was measured on a bare host; the CPU's vendor, family and
physical cores once sat in a separate `cpu_details` record beside the cpu probe's; runs before `other_load`
only have the load average; results before `epoch_s`/`tokens_per_s` get them from their throughput; results
before the CPU was tuned have no `tuning`: their precision was their setting (`derived_tuning`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from labstack import ROOT, payload
from labstack.errors import BadInput

RUN_SCHEMA = "labstack-bench-run/1"
REPORT_SCHEMA = "labstack-benchmark/1"
REFERENCES_DIR = ROOT / "references"


@dataclass(frozen=True)
class Result:
    """One workload at one precision, measured in one run."""

    workload: str
    precision: str
    unit: str
    throughput: float
    config: dict = field(default_factory=dict)
    spread_iqr: float = 0.0
    epoch_s: float | None = None  # mnist_cnn: one MNIST epoch at this throughput
    tokens_per_s: float | None = None  # transformer
    tuning: tuple[str, ...] = ()  # the knobs on top of the default (bench.py's KNOBS); () is the default
    best: bool = False  # the fastest setting of its workload in its run

    @property
    def setting(self) -> str:
        return setting_name(self.tuning)


def setting_name(tuning: tuple[str, ...] | list[str]) -> str:
    return " + ".join(tuning) or "default"


def derived_tuning(workload: str, precision: str) -> tuple[str, ...]:
    """The knobs of a result written before bench.py tuned: its precision was its only setting."""
    if precision == "amp_bf16":
        return ("bf16_autocast",)
    return ("bf16",) if workload == "matmul" and precision == "bf16" else ()


@dataclass(frozen=True)
class Run:
    """One run of bench.py: one framework on one device, in a container (`where` = image) or on a bare host."""

    framework: str
    device: str
    results: tuple[Result, ...]
    where: str = "local"
    framework_version: str | None = None
    device_name: str | None = None
    image: str | None = None
    image_id: str | None = None
    mode: str | None = None
    started: str = ""
    errors: tuple[dict, ...] = ()
    environment: dict = field(default_factory=dict)
    threads: dict = field(default_factory=dict)
    framework_extra: dict = field(default_factory=dict)
    other_load: float | None = None
    cpu_steal: float | None = None
    loadavg_start: tuple[float, ...] = ()
    labstack_revision: str | None = None
    reference_file: str | None = None  # set for a committed GPU reference
    own: bool = False  # a GPU run of this very benchmark, preferred to any committed reference

    @property
    def cpu(self) -> dict:
        return self.environment.get("cpu") or {}

    @property
    def usable_cpus(self) -> int | None:
        return self.cpu.get("usable_cpus")

    @property
    def driver(self) -> str:
        return (self.environment.get("nvml") or {}).get("driver_version", "?")


@dataclass(frozen=True)
class Document:
    """One `invoke benchmark` (or a single bench.py run, read as a document of one run)."""

    runs: tuple[Run, ...]
    created: str | None = None
    mode: str | None = None
    repeat: int = 1
    host: dict = field(default_factory=dict)
    interrupted: bool = False
    compare_file: str | None = None

    @property
    def host_cpus(self) -> int:
        return (self.host.get("cpu") or {}).get("usable_cpus") or 1


def read_result(data: dict) -> Result:
    workload, config, throughput = data["workload"], data.get("config") or {}, float(data["throughput"])
    workloads = payload.load("workloads")
    epoch_s, tokens_per_s = data.get("epoch_s"), data.get("tokens_per_s")
    if workload == "mnist_cnn" and epoch_s is None and throughput > 0:
        epoch_s = workloads.MNIST_EPOCH / throughput
    if workload == "transformer" and tokens_per_s is None and config.get("seq"):
        tokens_per_s = throughput * config["seq"]
    tuning = data.get("tuning")
    return Result(
        workload=workload,
        precision=data["precision"],
        tuning=tuple(tuning) if tuning is not None else derived_tuning(workload, data["precision"]),
        best=bool(data.get("best")),
        unit=data["unit"],
        throughput=throughput,
        config=config,
        spread_iqr=float(data.get("spread_iqr") or 0.0),
        epoch_s=epoch_s,
        tokens_per_s=tokens_per_s,
    )


def read_run(data: dict, **overrides) -> Run:
    environment = dict(data.get("environment") or {})
    if environment.get("cpu_details"):  # the older shape: vendor, family and physical cores apart
        environment["cpu"] = {**environment.pop("cpu_details"), **(environment.get("cpu") or {})}
    fields_ = {
        "framework": data["framework"],
        "device": data["device"],
        "results": tuple(read_result(r) for r in data.get("results") or []),
        "where": data.get("where") or "local",
        "framework_version": data.get("framework_version"),
        "device_name": data.get("device_name"),
        "image": data.get("image"),
        "image_id": data.get("image_id"),
        "mode": data.get("mode"),
        "started": data.get("started") or "",
        "errors": tuple(data.get("errors") or ()),
        "environment": environment,
        "threads": data.get("threads") or {},
        "framework_extra": data.get("framework_extra") or {},
        "other_load": data.get("other_load"),
        "cpu_steal": data.get("cpu_steal"),
        "loadavg_start": tuple(data.get("loadavg_start") or ()),
        "labstack_revision": data.get("labstack_revision"),
    }
    return Run(**(fields_ | overrides))


def read_document(data: object, what: str = "benchmark JSON") -> Document:
    """A document of either schema; anything else is bad input that says what was expected."""
    if not isinstance(data, dict) or data.get("schema") not in (RUN_SCHEMA, REPORT_SCHEMA):
        raise BadInput(f"{what} is not a labstack benchmark JSON (no known 'schema')")
    try:
        if data["schema"] == RUN_SCHEMA:
            run = read_run(data)
            return Document(runs=(run,), created=run.started, mode=run.mode)
        return Document(
            runs=tuple(read_run(r) for r in data.get("runs") or []),
            created=data.get("created"),
            mode=data.get("mode"),
            repeat=int(data.get("repeat") or 1),
            host=data.get("host") or {},
            interrupted=bool(data.get("interrupted")),
            compare_file=(data.get("compare") or {}).get("file"),
        )
    except KeyError as err:
        raise BadInput(f"{what} is not a labstack benchmark JSON: a run or result lacks {err}") from None
    except (TypeError, ValueError, AttributeError) as err:
        raise BadInput(f"{what} is not a labstack benchmark JSON: a run or result holds a value of the wrong kind "
                       f"({err})") from None  # fmt: skip


def load_document(path: Path, what: str) -> Document:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"{what} {path} does not exist") from None
    except (OSError, ValueError) as err:
        raise BadInput(f"{what} {path} is not a labstack benchmark JSON: {err}") from None
    return read_document(data, f"{what} {path}")


def load_references(directory: Path = REFERENCES_DIR) -> list[Run]:
    """The committed GPU reference runs (bench.py documents measured with --device cuda), each with its file."""
    references = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        for run in load_document(path, "reference").runs:
            if run.device == "cuda" and run.results:
                references.append(replace(run, reference_file=path.name))
    return references
