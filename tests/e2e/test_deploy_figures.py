"""The torch CPU image deployed for real to three simulated lab servers, via the registry and via ssh, each timed;
then one payload file changed, the image rebuilt, and deployed again: only the changed layers move.

Nothing here asserts a speed. What is asserted is what the figures mean: every host holds the image by the ID
built here and its torch imports there (the smoke run), and after a payload change a host pulls the changed
layers only. The figures go to reports/deploy-figures.json (conftest.py) and the terminal."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from labstack import payload
from labstack.build.images import build_images
from labstack.deploy.plan import human
from labstack.matrix import REPOSITORY_VARIABLE
from tests.e2e.conftest import MATRIX
from tests.e2e.test_deploy import Deployer, by_host, local_id, statuses

TORCH_CPU = MATRIX.image("torch", "cpu")


@pytest.fixture
def deployer(lab_hosts, tmp_path):
    for host in lab_hosts.hosts:
        host.wipe()
    yield Deployer(lab_hosts, tmp_path, tmp_path / "cache")
    for host in lab_hosts.hosts:
        host.wipe()  # a gigabyte per host: not kept for the tests after


def changed_payload_image(tmp_path, monkeypatch) -> str:
    """The torch CPU image rebuilt with one payload file changed, under a namespace of its own (the session's
    images keep their tags): the build cache reuses every layer below the payload's."""
    folder = tmp_path / "payload"
    shutil.copytree(payload.PAYLOAD_DIR, folder)
    (folder / "probe.py").write_text(payload.source("probe") + "\n# one changed line\n")
    monkeypatch.setattr(payload, "PAYLOAD_DIR", folder)
    monkeypatch.setenv(REPOSITORY_VARIABLE, f"labstack-e2e-payload-{os.getpid()}")
    (rebuilt,) = build_images(MATRIX, [MATRIX.image("torch", "cpu")])
    return rebuilt.image.ref


def first_deploy(deployer, via: str, done: str) -> tuple[dict, dict]:
    """The torch CPU image to the three empty hosts: (report, its figures); each host holds it by our ID."""
    ref = TORCH_CPU.ref
    result, report, seconds = deployer("--image", ref, "--via", via)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert statuses(report) == {"gpu1": [done], "gpu2": [done], "gpu3": [done]}
    for host in deployer.lab_hosts.hosts:
        assert host.image_ids()[ref] == local_id(ref)
    images = [h["images"][0] for h in report["hosts"]]
    figures = {
        "wall_s": round(seconds, 1),
        "per_host_s": [i["seconds"] for i in images],
        "push_s": images[0]["waited_for_push_seconds"],
        "sent_per_host": human(max(i["sent_bytes"] for i in images)),
    }
    return report, figures


def test_the_torch_cpu_image_via_registry_then_a_payload_change_moves_only_its_layers(
    images, deployer, deploy_figures, tmp_path, monkeypatch
):
    ref = TORCH_CPU.ref
    report, figures = first_deploy(deployer, "registry", "pulled")
    deploy_figures["first deploy, torch CPU, 3 hosts, via registry"] = figures
    sent = [h["images"][0]["sent_bytes"] for h in report["hosts"]]

    result, report, seconds = deployer("--image", ref)
    assert statuses(report) == {"gpu1": ["unchanged"], "gpu2": ["unchanged"], "gpu3": ["unchanged"]}
    deploy_figures["second deploy, torch CPU, 3 hosts"] = {"wall_s": round(seconds, 1), "inside_s": report["seconds"]}

    started = time.monotonic()
    changed = changed_payload_image(tmp_path, monkeypatch)
    rebuild_s = time.monotonic() - started
    try:
        result, report, seconds = deployer("--image", changed)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        moved = [h["images"][0]["sent_bytes"] for h in by_host(report).values()]
        assert max(moved) < min(sent) / 100, f"a payload change moved {moved} bytes, the whole image {sent}"
        deploy_figures["after one payload file changed, via registry"] = {
            "rebuild_s": round(rebuild_s, 1),
            "wall_s": round(seconds, 1),
            "sent_per_host": [human(b) for b in moved],
            "sent_per_host_bytes": moved,
        }
    finally:
        subprocess.run(["docker", "image", "rm", changed], capture_output=True, check=False)


def test_the_torch_cpu_image_via_ssh(images, deployer, deploy_figures):
    _, deploy_figures["first deploy, torch CPU, 3 hosts, via ssh"] = first_deploy(deployer, "ssh", "loaded")
