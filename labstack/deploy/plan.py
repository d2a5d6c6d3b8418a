"""What a deploy does on one host, decided from what the host reported (payload/hostfacts.py) and what the images
here are: pure functions, so every decision is unit-tested without a host.

Per image: `unchanged` (the host holds it under its name, same ID and labels: nothing moves, no tag changes),
`transfer` (with the bytes of the layers the host lacks), `skip` (a CUDA image the host cannot run, when the
images were not named), `rollback`, or `fail` with the reason. A host that cannot take any image (Docker
missing, stopped or not usable by this user, too little disk) fails as a whole at preflight.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from labstack.errors import ExitCode
from labstack.gpu import device_nodes_problem, docker_gpu_problem, nvml_problem, version_tuple
from labstack.matrix import GB

PREVIOUS = "-previous"  # the tag that keeps what a deploy replaced: `<ref>-previous`
DISK_MARGIN = 1.1  # a pull or load needs a little more than the layers: downloads land before they are unpacked
MB = 1000**2


@dataclass(frozen=True)
class LocalImage:
    """An image on this machine's daemon, as deploy sends and checks it."""

    ref: str
    id: str
    labels: dict[str, str]
    layers: tuple[str, ...]  # diff IDs, bottom up
    layer_sizes: dict[str, int]  # diff ID -> bytes unpacked
    size: int
    digests: frozenset[str] = frozenset()  # manifest digests known here (RepoDigests), sha256:...
    created: str = ""

    @property
    def cuda(self) -> bool:
        return self.labels.get("labstack.variant") == "cuda"

    @property
    def name(self) -> str:
        """What the table calls it: torch-cpu-lab for a labstack image (refs differ only at their ends), else the
        ref's last part."""
        framework, variant = self.labels.get("labstack.framework"), self.labels.get("labstack.variant")
        if framework and variant:
            layer = self.labels.get("labstack.layer")
            return f"{framework}-{variant}" + (f"-{layer}" if layer else "")
        return self.ref.rpartition("/")[2]

    @property
    def previous(self) -> str:
        return self.ref + PREVIOUS

    def missing_bytes(self, held_layers: set[str]) -> int:
        missing = sum(self.layer_sizes.get(layer, 0) for layer in self.layers if layer not in held_layers)
        return min(missing, self.size)


# History entries of instructions that only change the config: they add no layer (WORKDIR does under BuildKit,
# which creates the folder, and does not under the classic builder, so it is tried both ways).
METADATA = re.compile(
    r"^(?:/bin/sh -c #\(nop\)\s*)?(ARG|ENV|ENTRYPOINT|CMD|USER|LABEL|EXPOSE|VOLUME|STOPSIGNAL|HEALTHCHECK|SHELL|"
    r"ONBUILD|MAINTAINER|WORKDIR)\b"
)


def layer_sizes(layers: list[str], history: list[dict], size: int) -> dict[str, int]:
    """Bytes per layer from `docker history` (newest first), whose entries are not marked as layers: those with a
    size are; of the empty ones, RUN, COPY and ADD are (their files may all be empty), and WORKDIR is under
    BuildKit only. The first reading whose count is the layers' wins; when none fits, each layer counts as the
    whole image, and `missing_bytes` never counts more than the image."""
    entries = list(reversed(history))

    def instruction(entry: dict) -> str:
        found = METADATA.match((entry.get("CreatedBy") or "").strip())
        return found.group(1) if found else ""

    readings = (
        [e for e in entries if e.get("Size", 0) > 0],
        [e for e in entries if e.get("Size", 0) > 0 or instruction(e) in ("", "WORKDIR")],
        [e for e in entries if e.get("Size", 0) > 0 or instruction(e) == ""],
        entries,
    )
    for candidates in readings:
        if len(candidates) == len(layers):
            return {layer: int(e.get("Size", 0)) for layer, e in zip(layers, candidates, strict=True)}
    return {layer: size for layer in layers}


def containerd_store(facts: dict) -> bool:
    """Docker's containerd image store (the default from Docker 29) reports an image's manifest digest as its ID."""
    status = ((facts.get("docker") or {}).get("info") or {}).get("DriverStatus") or []
    return any("io.containerd.snapshotter" in str(value) for pair in status for value in pair)


def same_image(local: LocalImage, held: dict | None, containerd: bool = False, digest: str = "") -> bool:
    """The host holds this very image, and the labels agree: its ID is our image ID, or a manifest digest we know
    for it. A containerd image store reports the manifest digest as the ID, and one made by `docker load` or by
    another registry is not known here: there the same layers, in order, with the same creation time count."""
    if not held:
        return False
    if (held.get("labels") or {}) != local.labels:
        return False
    known = {local.id, *local.digests, *([digest] if digest else [])}
    held_digests = {d.rpartition("@")[2] for d in held.get("repo_digests") or []}
    if held["id"] in known or held_digests & known:
        return True
    return containerd and list(held.get("layers") or []) == list(local.layers) and held.get("created") == local.created


def docker_problem(docker: dict, host: str) -> str | None:
    """Docker on the host, as this user: missing, stopped, hung or not permitted; None when usable."""
    if docker.get("ok"):
        return None
    error = docker.get("error", "")
    text = error.lower()
    if docker.get("code") == 127 or "command not found" in text:
        return f"Docker is not installed on {host}: install Docker Engine there (on Debian: scripts/install-docker.sh)"
    if "permission denied" in text:
        return (
            f"this user cannot use Docker on {host} ({error}): add it to the docker group there "
            "(`sudo usermod -aG docker USER`, then log in again)"
        )
    if "did not answer" in text:
        return f"{error} on {host}: restart it there (`sudo systemctl restart docker`)"
    if "cannot connect" in text or "is the docker daemon running" in text:
        return f"the Docker daemon on {host} is not running ({error}): start it there (`sudo systemctl start docker`)"
    return f"Docker on {host} failed: {error}"


def cuda_problem(image: LocalImage, facts: dict, host: str) -> tuple[str, str] | None:
    """(short, full) reason the host cannot run a CUDA image on its GPU, or None. The short one is the table's."""
    nvml = facts.get("nvml") or {}
    problem = nvml_problem(nvml, host)
    if problem:
        short = "no NVIDIA GPU" if nvml.get("kind") in ("no-driver", None) else "NVIDIA driver unusable"
        return short, problem
    driver, needed = nvml.get("driver_version", ""), image.labels.get("labstack.min_driver", "")
    if needed and version_tuple(driver) < version_tuple(needed):
        have, need = version_tuple(driver)[:1], version_tuple(needed)[:1]
        short = f"driver {have[0] if have else driver} < {need[0] if need else needed}"
        return short, (
            f"driver {driver} on {host} < {needed} required by CUDA {image.labels.get('labstack.cuda', '?')} in "
            f"{image.ref}: upgrade the NVIDIA driver there, or deploy the CPU image"
        )
    problem = device_nodes_problem(facts.get("nodes") or [])
    if problem:
        return "no /dev/nvidia-uvm" if "uvm" in problem else "NVIDIA devices missing", f"{host}: {problem}"
    problem = docker_gpu_problem((facts.get("docker") or {}).get("info") or {}, bool(facts.get("hooks_found")))
    if problem:
        return "no NVIDIA container toolkit", f"{host}: {problem}"
    return None


@dataclass
class Action:
    """What deploy does with one image on one host, and then what happened."""

    image: LocalImage
    kind: str  # unchanged | transfer | skip | rollback | fail
    reason: str = ""  # skip/fail: the full one-line reason
    short: str = ""  # skip: what the table cell says
    stage: str = ""  # fail: where it failed (preflight, transfer, verify, tag, smoke, rollback)
    missing_bytes: int = 0
    held_id: str | None = None  # what the host's tag pointed at before (kept as -previous when replaced)
    previous_id: str | None = None  # what the host's -previous tag pointed at (rollback target)
    done: str = ""  # what happened: pulled / loaded / rolled back / unchanged
    sent_bytes: int = 0
    seconds: float = 0.0  # transfer, verify, tag and smoke on this host
    waited: float = 0.0  # waiting for the push to the deploy registry (once for every host)

    def fail(self, stage: str, reason: str) -> None:
        self.kind, self.stage, self.reason = "fail", stage, reason

    @property
    def ok(self) -> bool:
        return self.kind != "fail"

    def cell(self, check: bool = False) -> str:
        """The table's cell: unchanged / pulled 412 MB 38 s / skipped: driver 535 < 580 / FAILED (transfer)."""
        if self.kind == "fail":
            return f"FAILED ({self.stage})"
        if self.kind == "skip":
            return f"skipped: {self.short}"
        if self.kind == "unchanged":
            return "unchanged"
        if check:
            verb = "roll back" if self.kind == "rollback" else "send"
            return f"would {verb}" + (f" {human(self.missing_bytes)}" if self.kind == "transfer" else "")
        if self.kind == "rollback":
            return f"rolled back {self.seconds:.0f} s"
        return f"{self.done} {human(self.sent_bytes)} {self.seconds:.0f} s"


class PreflightFailure(Exception):
    def __init__(self, message: str, code: int = ExitCode.FAILED) -> None:
        super().__init__(message)
        self.code = code


def plan_host(
    facts: dict, images: list[LocalImage], host: str, named: bool = False, rollback: bool = False
) -> list[Action]:
    """Each image's action on this host; raises PreflightFailure when the host can take none of them."""
    problem = docker_problem(facts.get("docker") or {}, host)
    if problem:
        raise PreflightFailure(problem)
    held = facts.get("images") or {}
    held_layers = set(facts.get("layers") or [])
    actions = []
    for image in images:
        current, previous = held.get(image.ref), held.get(image.previous)
        action = Action(image, "transfer", held_id=current and current["id"], previous_id=previous and previous["id"])
        cuda = cuda_problem(image, facts, host) if image.cuda else None
        if rollback:
            action.kind = "rollback"
            if not previous:
                action.fail("rollback", f"{host} has no {image.previous}: nothing to roll back to")
        elif same_image(image, current, containerd_store(facts)):
            action.kind = "unchanged"
        elif cuda and named:
            action.fail("preflight", cuda[1])
        elif cuda:
            action.kind, action.short, action.reason = "skip", cuda[0], cuda[1]
        else:
            action.missing_bytes = image.missing_bytes(held_layers)
            held_layers |= set(image.layers)  # a second image on the same base needs its base once
        actions.append(action)
    needed = sum(a.missing_bytes for a in actions if a.kind == "transfer") * DISK_MARGIN
    free = facts.get("free_bytes")
    if free is not None and needed > free:
        raise PreflightFailure(
            f"{host} has {human(free)} free at {facts.get('free_at')}; the images need about "
            f"{human(int(needed))} there: free space (`docker image prune`, `docker system prune`) or deploy "
            "fewer images (--image)",
            ExitCode.NO_DISK,
        )
    return actions


def human(size: int) -> str:
    if size >= GB:
        return f"{size / GB:.2f} GB"
    if size >= MB:
        return f"{size / MB:.0f} MB"
    return f"{size / 1000:.0f} kB"
