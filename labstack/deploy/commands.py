"""The body of `invoke deploy` (tasks.py only declares it)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from rich.console import Console

from labstack.build.layers import LAYER_NAMES, layer_ref
from labstack.deploy.push import build_hint
from labstack.deploy.push import chosen_refs as matrix_refs
from labstack.deploy.report import FAILED_HOSTS, print_table, write_reports
from labstack.deploy.run import VIAS, Deploy, deploy_all, local_images
from labstack.engine import connect, image_or_none
from labstack.errors import BadInput, LabstackError, whole_number
from labstack.hosts import Host, parse_hosts, ssh_config
from labstack.matrix import Matrix, choose, load_matrix
from labstack.paths import revision

DEPLOY_LAYER = "lab"  # what a lab runs on its servers: the lab images (the framework images are the benchmark's)
MAX_DEFAULT_JOBS = 8
# A Docker image reference as deploy accepts one: lowercase path components, an optional tag; nothing that ssh,
# a shell or docker could read as an option.
REF = re.compile(r"[a-z0-9][a-z0-9._-]*(?::[0-9]+)?(?:/[a-z0-9][a-z0-9._-]*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?")


def deploy_hosts(text: str) -> list[Host]:
    """The lab servers: ssh:// hosts only (local:// already holds the images; docker:// is no server)."""
    hosts = parse_hosts(text)
    others = [h.spec for h in hosts if h.scheme != "ssh"]
    if others:
        raise BadInput(
            f"deploy sends to lab servers over ssh, not to {', '.join(others)}: name them as "
            "ssh://[user@]host[:port], in --hosts or in the lab's labstack.hosts setting"
        )
    if not hosts:
        raise BadInput("no host to deploy to: name them with --hosts ssh://HOST,... or --hosts @hosts.txt")
    ssh_config()  # a wrong LABSTACK_SSH_CONFIG is one line here, not a failure of every host
    return hosts


def chosen_refs(client, matrix: Matrix, text: str | None) -> list[str]:
    """The images to send: the lab image of each matrix name, a matrix ref at its own layer (as `invoke push`
    reads them), any other image ref as it is; or every lab image built here. Deploy builds nothing."""
    if not text:
        refs = [ref for _, _, ref in matrix_refs(matrix, None, DEPLOY_LAYER) if image_or_none(client, ref)]
        if not refs:
            raise LabstackError("no lab image is built here: run `invoke build` first (deploy builds nothing)")
        return refs
    names = tuple(image.name for image in matrix.images)
    known = {layer_ref(image, layer) for image in matrix.images for layer in LAYER_NAMES} | {*names, "all"}
    chosen = []
    for word in (w.strip() for w in text.split(",") if w.strip()):
        if word in known:
            chosen += matrix_refs(matrix, word, DEPLOY_LAYER)
        elif REF.fullmatch(word):
            chosen.append((None, None, word))
        else:
            choose("image", word, names)  # the one-line 'unknown image' error, with the names it knows
    for image, layer, ref in chosen:
        if image_or_none(client, ref) is None:
            build = build_hint(image, layer) if image else "`invoke build`"
            raise LabstackError(f"{ref} is not an image here: build it ({build}); deploy builds nothing")
    return list(dict.fromkeys(ref for _, _, ref in chosen))


def deploy(
    image: str | None, hosts: str, via: str = "auto", check: bool = False, rollback: bool = False,
    jobs: str | None = None, out: str = "reports/deploy",
) -> None:  # fmt: skip
    (via,) = choose("--via", via, VIAS, many=False)
    parallel = whole_number("jobs", jobs) if jobs is not None else None  # hosts deployed at the same time
    if check and rollback:
        raise BadInput("--check and --rollback do not go together: --check shows what a deploy would send")
    targets = deploy_hosts(hosts)
    client = connect()
    refs = chosen_refs(client, load_matrix(), image)
    images = local_images(client, refs)
    console = Console(stderr=True)
    verb = "checking" if check else "rolling back" if rollback else "deploying"
    console.print(f"{verb} {', '.join(refs)} on {', '.join(h.label for h in targets)} (--via {via})")
    run = Deploy(client, images, via, check, rollback, named=bool(image), say=lambda text: console.print(text))
    started = time.monotonic()
    try:
        results, stopped = deploy_all(run, targets, parallel or min(len(targets), MAX_DEFAULT_JOBS))
    finally:
        run.close()
    seconds = time.monotonic() - started
    options = {"images": refs, "via": via, "check": check, "rollback": rollback, "hosts": [h.spec for h in targets]}
    report = write_reports(results, options, seconds, Path(out), revision() or "unknown")
    print_table(results, images, check)
    print(f"{len(targets)} hosts in {seconds:.1f} s; report: {report}, JUnit: {report.parent / 'junit.xml'}")
    if stopped is not None:
        raise stopped
    failed = [r for r in results if not r.ok]
    if failed:
        again = os.path.relpath(Path(out) / FAILED_HOSTS)
        raise LabstackError(
            f"{len(failed)} of {len(targets)} hosts failed ({', '.join(r.host.label for r in failed)}): the reasons "
            f"are above; rerun only them with `invoke deploy --hosts @{again}`"
        )
