"""Deploy's decisions, from what a host reports (payload/hostfacts.py's JSON) and what an image here is: which
image moves, which is unchanged or skipped, which host is refused at preflight and why, and what the reports
say. No host and no Docker: the e2e tests (tests/e2e/test_deploy.py) run the real thing."""

from __future__ import annotations

import json
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from labstack.deploy.commands import REF, deploy, deploy_hosts
from labstack.deploy.plan import LocalImage, PreflightFailure, layer_sizes, plan_host, same_image
from labstack.deploy.report import FAILED_HOSTS, write_reports
from labstack.deploy.run import HostResult, pulled_bytes
from labstack.deploy.ssh import Connection, ssh_reason
from labstack.errors import BadInput, ExitCode
from labstack.hosts import Host, parse_host, read_hosts_file

MB = 1000**2
CPU = LocalImage(
    ref="labstack/torch:2.13.0-cpu-lab", id="sha256:" + "c" * 64, labels={"labstack.variant": "cpu"},
    layers=("sha256:base", "sha256:torch", "sha256:lab"),
    layer_sizes={"sha256:base": 100 * MB, "sha256:torch": 700 * MB, "sha256:lab": 500 * MB}, size=1300 * MB,
    digests=frozenset({"sha256:" + "d" * 64}), created="2026-11-27T04:00:00.123Z",
)  # fmt: skip
CUDA = LocalImage(
    ref="labstack/torch:2.13.0-cuda13.0-lab", id="sha256:" + "e" * 64,
    labels={"labstack.variant": "cuda", "labstack.min_driver": "580.65.06", "labstack.cuda": "13.0"},
    layers=("sha256:base", "sha256:cuda"), layer_sizes={"sha256:base": 100 * MB, "sha256:cuda": 4000 * MB},
    size=4100 * MB,
)  # fmt: skip
NO_GPU = {"available": False, "kind": "no-driver", "reason": "no nvidia-smi and no /dev/nvidia* there"}
GPU_NODES = ["/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm"]


def facts(**changes) -> dict:
    """A healthy CPU server with nothing deployed yet, 50 GB free."""
    base = {
        "python": "3.11.2",
        "docker": {"ok": True, "info": {"ServerVersion": "29.0.0", "DockerRootDir": "/var/lib/docker", "Runtimes": {}}},
        "free_at": "/var/lib/docker",
        "free_bytes": 50_000 * MB,
        "images": {},
        "layers": [],
        "nvml": NO_GPU,
        "nodes": [],
        "hooks_found": False,
    }
    return base | changes


def gpu_facts(driver: str = "580.95.05", **changes) -> dict:
    nvml = {"available": True, "driver_version": driver, "devices": [{"index": 0, "uuid": "GPU-1"}]}
    info = {"ServerVersion": "29.0.0", "DockerRootDir": "/var/lib/docker", "Runtimes": {"nvidia": {}}}
    return facts(nvml=nvml, nodes=GPU_NODES, docker={"ok": True, "info": info}) | changes


def held(image: LocalImage, **changes) -> dict:
    return {"id": image.id, "repo_digests": [], "labels": dict(image.labels), "layers": list(image.layers)} | changes


def test_a_host_without_the_image_gets_it_and_only_the_layers_it_lacks_count():
    (action,) = plan_host(facts(layers=["sha256:base"]), [CPU], "gpu1")
    assert action.kind == "transfer"
    assert action.missing_bytes == 1200 * MB
    assert action.held_id is None


def test_a_host_holding_the_same_id_and_labels_is_unchanged_and_nothing_moves():
    (action,) = plan_host(facts(images={CPU.ref: held(CPU)}), [CPU], "gpu1")
    assert action.kind == "unchanged" and action.missing_bytes == 0
    assert action.cell() == "unchanged"


def test_the_containerd_image_store_reports_the_manifest_digest_as_id_and_that_is_the_same_image():
    manifest = next(iter(CPU.digests))
    assert same_image(CPU, held(CPU, id=manifest))
    assert same_image(
        CPU, held(CPU, id="sha256:" + "f" * 64, repo_digests=[f"127.0.0.1:5000/labstack/torch@{manifest}"])
    )


def test_a_containerd_store_image_loaded_or_pulled_elsewhere_is_the_same_by_layers_and_creation_time():
    store = {"ok": True, "info": {"DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]]}}
    loaded = held(CPU, id="sha256:" + "9" * 64, created=CPU.created)
    (action,) = plan_host(facts(docker=store, images={CPU.ref: loaded}), [CPU], "gpu1")
    assert action.kind == "unchanged"
    (action,) = plan_host(facts(images={CPU.ref: loaded}), [CPU], "gpu1")
    assert action.kind == "transfer", "on the classic store the ID is the config digest: another ID is another image"
    other_time = held(CPU, id="sha256:" + "9" * 64, created="2020-01-01T00:00:00Z")
    (action,) = plan_host(facts(docker=store, images={CPU.ref: other_time}), [CPU], "gpu1")
    assert action.kind == "transfer"


def test_another_id_or_other_labels_under_the_name_is_replaced_and_the_old_id_kept_for_previous():
    other = held(CPU, id="sha256:" + "0" * 64)
    (action,) = plan_host(facts(images={CPU.ref: other}), [CPU], "gpu1")
    assert action.kind == "transfer" and action.held_id == "sha256:" + "0" * 64
    assert not same_image(CPU, held(CPU, labels={"labstack.variant": "cuda"}))


def test_a_second_image_on_the_same_base_counts_the_base_once_against_the_disk():
    actions = plan_host(
        facts(nvml=gpu_facts()["nvml"], nodes=GPU_NODES, docker=gpu_facts()["docker"]), [CPU, CUDA], "g"
    )
    assert [a.missing_bytes for a in actions] == [1300 * MB, 4000 * MB]


def test_too_little_disk_refuses_the_host_at_preflight_with_the_sizes_and_the_fix():
    with pytest.raises(PreflightFailure) as failure:
        plan_host(facts(free_bytes=1000 * MB), [CPU], "gpu1")
    assert failure.value.code == ExitCode.NO_DISK
    assert "gpu1 has 1.00 GB free at /var/lib/docker" in str(failure.value)
    assert "1.43 GB" in str(failure.value) and "docker image prune" in str(failure.value)


def test_an_unchanged_image_needs_no_disk():
    (action,) = plan_host(facts(free_bytes=0, images={CPU.ref: held(CPU)}), [CPU], "gpu1")
    assert action.kind == "unchanged"


@pytest.mark.parametrize(
    ("docker", "words"),
    [
        ({"ok": False, "code": 127, "error": "docker: command not found"}, "Docker is not installed on gpu1"),
        (
            {"ok": False, "code": 1, "error": "permission denied while trying to connect to the Docker daemon socket"},
            "usermod -aG docker",
        ),
        (
            {"ok": False, "code": 1, "error": "Cannot connect to the Docker daemon. Is the docker daemon running?"},
            "the Docker daemon on gpu1 is not running",
        ),
        (
            {"ok": False, "code": 124, "error": "docker info did not answer within 30 s: the Docker daemon hangs"},
            "systemctl restart docker",
        ),
    ],
)  # fmt: skip
def test_docker_missing_stopped_hung_or_not_permitted_fails_the_host_at_preflight(docker, words):
    with pytest.raises(PreflightFailure) as failure:
        plan_host(facts(docker=docker), [CPU], "gpu1")
    assert words in str(failure.value) and "\n" not in str(failure.value)


def test_by_default_a_cuda_image_is_skipped_where_there_is_no_gpu_and_the_cpu_image_still_goes():
    cpu, cuda = plan_host(facts(), [CPU, CUDA], "gpu1")
    assert cpu.kind == "transfer"
    assert cuda.kind == "skip" and cuda.cell() == "skipped: no NVIDIA GPU"


def test_a_cuda_image_the_user_named_fails_where_it_cannot_run():
    _, cuda = plan_host(facts(), [CPU, CUDA], "gpu1", named=True)
    assert cuda.kind == "fail" and cuda.stage == "preflight" and "no NVIDIA driver on gpu1" in cuda.reason


def test_an_old_driver_skips_the_cuda_image_saying_which_driver_is_needed():
    (cuda,) = plan_host(gpu_facts("535.183.01"), [CUDA], "gpu1")
    assert cuda.cell() == "skipped: driver 535 < 580"
    assert "535.183.01" in cuda.reason and "580.65.06" in cuda.reason


@pytest.mark.parametrize(
    ("changes", "short"),
    [
        ({"nodes": ["/dev/nvidia0", "/dev/nvidiactl"]}, "no /dev/nvidia-uvm"),
        ({"docker": {"ok": True, "info": {"Runtimes": {"runc": {}}}}}, "no NVIDIA container toolkit"),
    ],
)
def test_a_gpu_host_without_uvm_or_toolkit_cannot_run_cuda_images(changes, short):
    (cuda,) = plan_host(gpu_facts(**changes), [CUDA], "gpu1")
    assert cuda.cell() == f"skipped: {short}"


def test_a_gpu_host_with_driver_and_toolkit_gets_the_cuda_image():
    (cuda,) = plan_host(gpu_facts(), [CUDA], "gpu1")
    assert cuda.kind == "transfer"


def test_rollback_needs_the_previous_image_on_the_host():
    (action,) = plan_host(facts(images={CPU.ref: held(CPU)}), [CPU], "gpu1", rollback=True)
    assert action.kind == "fail" and "no labstack/torch:2.13.0-cpu-lab-previous" in action.reason
    older = held(CPU, id="sha256:" + "1" * 64)
    (action,) = plan_host(facts(images={CPU.ref: held(CPU), CPU.previous: older}), [CPU], "gpu1", rollback=True)
    assert action.kind == "rollback" and action.previous_id == older["id"] and action.held_id == CPU.id


def test_layer_sizes_follow_the_history_entries_that_add_a_layer_and_never_undercount():
    history = [  # docker history: newest first; metadata steps have no size
        {"Size": 0, "CreatedBy": "LABEL x"},
        {"Size": 30, "CreatedBy": "COPY payload"},
        {"Size": 0, "CreatedBy": "ENV y"},
        {"Size": 70, "CreatedBy": "import"},
    ]
    assert layer_sizes(["sha256:a", "sha256:b"], history, 100) == {"sha256:a": 70, "sha256:b": 30}
    assert layer_sizes(["sha256:a", "sha256:b", "sha256:c"], history[:1], 100) == {
        "sha256:a": 100, "sha256:b": 100, "sha256:c": 100,
    }  # fmt: skip


def test_buildkit_history_gives_each_layer_its_size_empty_runs_and_workdir_included():
    history = [  # the torch CPU lab image's, newest first, as Docker 20.10 with BuildKit reports it
        {"Size": 0, "CreatedBy": "USER lab"},
        {"Size": 0, "CreatedBy": "ENV PATH=/opt/venv/bin:/usr/bin"},
        {"Size": 118, "CreatedBy": "RUN /bin/sh -c user_site=... # buildkit"},
        {"Size": 507, "CreatedBy": "RUN /bin/sh -c sh /tmp/layer/install-layer.sh lab # buildkit"},
        {"Size": 0, "CreatedBy": "USER root"},
        {"Size": 865, "CreatedBy": "RUN /bin/sh -c sh /tmp/labstack/install.sh # buildkit"},
        {"Size": 0, "CreatedBy": 'CMD ["python"]'},
        {"Size": 0, "CreatedBy": "WORKDIR /home/lab"},
        {"Size": 21, "CreatedBy": "RUN |4 LABSTACK_PACKAGES=python3 ..."},
        {"Size": 0, "CreatedBy": "ARG LABSTACK_UID=1000"},
        {"Size": 0, "CreatedBy": "RUN |1 LABSTACK_PACKAGES=python3 ..."},
        {"Size": 173, "CreatedBy": ""},
    ]
    layers = [f"sha256:{n}" for n in range(7)]
    sizes = layer_sizes(layers, history, 1684)
    assert list(sizes.values()) == [173, 0, 21, 0, 865, 507, 118]
    assert sum(sizes.values()) == 1684


def test_when_the_history_cannot_be_read_no_image_counts_more_than_its_size():
    image = LocalImage("x:1", "sha256:x", {}, ("a", "b", "c"), layer_sizes(["a", "b", "c"], [], 100), 100)
    assert image.missing_bytes(set()) == 100 and image.missing_bytes({"a"}) == 100


def test_the_table_names_labstack_images_by_framework_variant_and_layer():
    assert LocalImage("r/os:1", "i", {}, (), {}, 0).name == "os:1"
    lab = LocalImage(
        "x", "i", {"labstack.framework": "torch", "labstack.variant": "cuda", "labstack.layer": "lab"}, (), {}, 0
    )
    assert lab.name == "torch-cuda-lab"


def test_what_a_pull_moved_is_counted_from_the_layers_docker_downloaded():
    manifest = {
        "config": {"size": 5000},
        "layers": [{"digest": "sha256:" + "a" * 64, "size": 60 * MB}, {"digest": "sha256:" + "b" * 64, "size": 800}],
    }
    output = (
        f"{'a' * 12}: Already exists\n{'b' * 12}: Pulling fs layer\n{'b' * 12}: Download complete\n"
        f"{'b' * 12}: Pull complete\nDigest: sha256:x\n"
    )
    assert pulled_bytes(output, manifest) == 5800
    assert pulled_bytes(f"{'a' * 12}: Already exists\n{'b' * 12}: Already exists\n", manifest) == 0


@pytest.mark.parametrize(
    ("stderr", "words"),
    [
        ("ssh: connect to host 127.0.0.1 port 2222: Connection refused", "refused the ssh connection"),
        ("Connection timed out during banner exchange", "did not answer within 10 s"),
        ("ssh: Could not resolve hostname gpu9: Name or service not known", "cannot resolve gpu9"),
        ("lab@gpu1: Permission denied (publickey).", "ssh-add"),
        ("Host key verification failed.", "host key of gpu1"),
    ],
)
def test_what_ssh_said_becomes_one_line_with_the_fix(stderr, words):
    name = "gpu9" if "gpu9" in stderr else "gpu1"
    reason = ssh_reason(
        "Warning: Permanently added 'x' to the list of known hosts.\n" + stderr, Host("ssh", name), None
    )
    assert words in reason and "\n" not in reason and "Warning" not in reason


def test_remote_commands_reach_the_host_as_words_never_as_shell_text(tmp_path):
    connection = Connection(Host("ssh", "gpu1", "lab", 2222), tmp_path, children=None)
    words = ["docker", "tag", "x; touch /tmp/owned", "$(id)"]
    command = connection.command(words)
    assert command[-2] == "gpu1" and command[command.index("--") + 1] == "gpu1"
    assert shlex.split(command[-1]) == words
    assert command[command.index("-p") : command.index("-p") + 2] == ["-p", "2222"]


def test_deploy_takes_ssh_hosts_only():
    assert deploy_hosts("ssh://gpu1,ssh://lab@gpu2:2222") == [Host("ssh", "gpu1"), Host("ssh", "gpu2", "lab", 2222)]
    for text in ("local://", "docker://box", "ssh://gpu1,local://"):
        with pytest.raises(BadInput, match="deploy sends to lab servers over ssh"):
            deploy_hosts(text)


@pytest.mark.parametrize(
    "ref", ["labstack/torch:2.13.0-cpu-lab", "lab.example.org:5000/labstack/torch:2.13.0-cpu", "busybox"]
)
def test_image_refs_are_docker_references(ref):
    assert REF.fullmatch(ref)


@pytest.mark.parametrize("ref", ["-oProxyCommand=x", "labstack/torch:a b", "Lab/Torch", "x;y", "x@sha256:ab"])
def test_anything_else_is_no_image_ref(ref):
    assert not REF.fullmatch(ref)


def test_the_reports_say_each_host_and_image_and_the_failed_hosts_file_reruns_only_the_failed(tmp_path):
    ok, down = HostResult(parse_host("ssh://gpu1"), status="done"), HostResult(parse_host("ssh://lab@gpu2:2222"))
    (ok.actions,) = [plan_host(facts(images={CPU.ref: held(CPU)}), [CPU], "gpu1")]
    down.fail("connect", "gpu2 refused the ssh connection")
    report = write_reports([ok, down], {"via": "auto"}, 3.0, tmp_path, "abc")
    data = json.loads(report.read_text())
    assert not data["passed"]
    assert [(h["host"], h["status"]) for h in data["hosts"]] == [("gpu1", "done"), ("lab@gpu2:2222", "FAILED")]
    assert data["hosts"][0]["images"][0]["status"] == "unchanged"
    assert read_hosts_file(tmp_path / FAILED_HOSTS) == [down.host]
    suites = ET.parse(tmp_path / "junit.xml").getroot()
    assert [(s.get("name"), s.get("failures")) for s in suites] == [("gpu1", "0"), ("lab@gpu2:2222", "1")]
    down.status, down.stage = "done", ""
    write_reports([ok, down], {}, 1.0, tmp_path, "abc")
    assert not Path(tmp_path / FAILED_HOSTS).exists(), "a stale list would rerun hosts that are fine now"


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"via": "ftp"}, "unknown --via ftp: choose from auto, registry, ssh"),
        ({"jobs": "x"}, "--jobs 'x' is not a whole number"),
        ({"jobs": "0"}, "--jobs 0 is too small: 1 or more"),
        ({"check": True, "rollback": True}, "--check and --rollback do not go together"),
        ({"hosts": "local://"}, "deploy sends to lab servers over ssh, not to local://"),
        ({"hosts": "ssh://-oProxyCommand=x"}, "cannot start with '-'"),
    ],
)
def test_bad_options_are_one_line_before_docker_or_any_host_is_reached(options, words):
    arguments = {"image": None, "hosts": "ssh://gpu1"} | options
    with pytest.raises(BadInput) as failure:
        deploy(**arguments)
    assert words in str(failure.value)
