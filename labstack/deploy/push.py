"""The body of `invoke push` (tasks.py only declares it): the matrix's images at one layer, pushed to a lab's
registry by HOST:PORT, their digests recorded for deploy to pin."""

from __future__ import annotations

import datetime
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from labstack.build.layers import LAYER_NAMES, layer_ref
from labstack.deploy.registry import manifest_digest, parse_registry, pinned_ref, push, registry_ref
from labstack.engine import connect, image_or_none
from labstack.errors import BadInput, LabstackError
from labstack.matrix import GB, Image, Matrix, choose, load_matrix
from labstack.paths import revision

DEFAULT_OUT = "reports/push/digests.json"


@dataclass(frozen=True)
class Pushed:
    ref: str
    image_id: str
    registry_ref: str
    digest: str  # HOST:PORT/repo@sha256:..., what a host pulls to get exactly this image
    manifest_digest: str  # sha256:...
    size_bytes: int
    seconds: float
    verified: bool  # the registry's HTTP API gave the same digest (False: not readable over plain http)


def chosen_refs(matrix: Matrix, text: str | None, layer: str) -> list[tuple[Image, str, str]]:
    """(image, layer, ref) to push: every matrix image at `layer`, or those named. A name (torch-cpu) takes
    `layer`; a ref names its own layer (labstack/torch:2.13.0-cpu is the framework image, whatever --layer says)."""
    if not text:
        return [(image, layer, layer_ref(image, layer)) for image in matrix.images]
    by_ref = {layer_ref(image, name): (image, name) for image in matrix.images for name in LAYER_NAMES}
    chosen: dict[str, tuple[Image, str, str]] = {}
    for word in (w.strip() for w in text.split(",")):
        if word in by_ref:
            image, its_layer = by_ref[word]
            chosen.setdefault(word, (image, its_layer, word))
        else:
            for image in matrix.images_named(word):
                ref = layer_ref(image, layer)
                chosen.setdefault(ref, (image, layer, ref))
    return list(chosen.values())


def build_hint(image: Image, layer: str) -> str:
    return f"`invoke build --framework {image.framework} --variant {image.variant} --layer {layer}`"


def existing(
    client, wanted: list[tuple[Image, str, str]], named: bool, layer: str, verb: str = "push"
) -> list[tuple[str, Any]]:
    """(ref, docker image) of what is built here; a named image not built here, or none at all, is an error that
    names the build, since `verb` (push, export) builds nothing."""
    present = []
    for matrix_image, its_layer, ref in wanted:
        local = image_or_none(client, ref)
        if local is not None:
            present.append((ref, local))
        elif named:
            raise LabstackError(
                f"{ref} is not built here: run {build_hint(matrix_image, its_layer)} ({verb} builds nothing)"
            )
    if not present:
        raise LabstackError(
            f"no labstack {layer} image is built here: run `invoke build --layer {layer}` first ({verb} builds nothing)"
        )
    return present


def write_record(path: Path, registry: str, pushed: list[Pushed]) -> Path:
    record = {
        "registry": registry,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "labstack_revision": revision() or "unknown",
        "images": [asdict(p) for p in pushed],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(partial, path)
    return path


def print_pushed(pushed: list[Pushed], console: Console | None = None) -> None:
    table = Table(title="labstack push")
    for column in ("image", "registry ref", "digest", "size", "push"):
        # fold, not "…": the refs and digests are what a reader copies from the table
        table.add_column(column, justify="right" if column in ("size", "push") else "left", overflow="fold")
    for p in pushed:
        short = p.manifest_digest[: len("sha256:") + 12]
        table.add_row(p.ref, p.registry_ref, short, f"{p.size_bytes / GB:.2f} GB", f"{p.seconds:.1f} s")
    (console or Console()).print(table)


def verified(registry: str, target: str, digest: str) -> bool:
    repository, tag = target.split("/", 1)[1].rsplit(":", 1)
    try:
        found = manifest_digest(registry, repository, tag)
    except LabstackError:
        return False  # a registry behind TLS: the daemon reached it, our plain-http read does not
    if found != digest:
        raise LabstackError(f"{registry} holds {found} for {target}, not the {digest} just pushed: push again")
    return True


def push_images(registry: str | None, image: str | None = None, layer: str = "lab", out: str = DEFAULT_OUT) -> None:
    """Push, then print the table and where the digests are. Nothing is printed before the registry answers the
    daemon, so an unreachable registry is one line."""
    if not registry:
        raise BadInput("--registry is required: give the lab registry's HOST:PORT, e.g. 127.0.0.1:5000")
    address = parse_registry(registry)
    (layer,) = choose("layer", layer, LAYER_NAMES, many=False)
    wanted = chosen_refs(load_matrix(), image, layer)
    client = connect()
    present = existing(client, wanted, bool(image), layer)
    console = Console(stderr=True)

    def say(text: str) -> None:
        console.print(text, soft_wrap=True, markup=False, highlight=False)

    path = Path(out)
    pushed: list[Pushed] = []
    started = time.monotonic()
    for ref, local in present:
        began = time.monotonic()
        digest = push(client, ref, address, say)
        seconds = time.monotonic() - began
        target = registry_ref(ref, address)
        pushed.append(
            Pushed(
                ref=ref,
                image_id=local.id,
                registry_ref=target,
                digest=pinned_ref(target, digest),
                manifest_digest=digest,
                size_bytes=int(local.attrs.get("Size") or 0),
                seconds=round(seconds, 2),
                verified=verified(address, target, digest),
            )
        )
        write_record(path, address, pushed)  # after each image: a later failure or Ctrl-C keeps what got there
    print_pushed(pushed)
    images = f"{len(pushed)} image{'s' * (len(pushed) != 1)}"
    print(f"{images} pushed to {address} in {time.monotonic() - started:.1f} s; digests: {path}")
