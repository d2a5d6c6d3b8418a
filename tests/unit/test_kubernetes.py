"""invoke kube-job: the Job manifest is valid for Kubernetes by the API's own JSON schema (strict, offline), and
carries the image by digest, the limits, /dev/shm in memory, and a non-root, no-privilege container."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from labstack.cluster.kubernetes import KubeJob, digest_of, manifest, validate, write
from labstack.errors import BadInput, LabstackError
from tests.invoking import assert_one_line_failure, run_invoke

DIGEST = "lab.example:5000/labstack/torch@sha256:" + "c" * 64
IMAGE_ID = "sha256:" + "d" * 64


def job(**changes) -> KubeJob:
    values = dict(run="mnist-gpu", image=DIGEST, image_id=IMAGE_ID, command=("python", "train.py", "--run", "x"))
    return KubeJob(**{**values, **changes})


def container(document: dict) -> dict:
    return document["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("version", ["1.27", "1.31", "1.35"])
@pytest.mark.parametrize("gpus", [0, 2])
def test_the_manifest_is_valid_for_kubernetes_by_its_own_schema(version, gpus):
    validate(manifest(job(gpus=gpus)), version)


def test_the_schema_check_is_strict_so_a_wrong_field_fails():
    broken = copy.deepcopy(manifest(job()))
    container(broken)["resource"] = container(broken).pop("resources")  # a typo kubectl would reject
    with pytest.raises(LabstackError, match=r"not valid for Kubernetes 1\.31 at spec\.template\.spec\.containers"):
        validate(broken, "1.31")
    for version in ("1.1", "9.99", "latest"):
        with pytest.raises(BadInput, match=f"--kubernetes '?{version}"):
            validate(manifest(job()), version)


def test_the_job_carries_the_image_by_digest_the_limits_and_shm_in_memory():
    document = manifest(job(cpus=4, memory="16G", gpus=1, grace_s=300, time="2:00:00"))
    spec = document["spec"]["template"]["spec"]
    train = container(document)
    assert train["image"] == DIGEST and document["metadata"]["annotations"] == {"labstack.image_id": IMAGE_ID}
    assert train["resources"]["limits"] == {"cpu": "4", "memory": "16384Mi", "nvidia.com/gpu": 1}
    assert train["resources"]["requests"] == train["resources"]["limits"]
    shm = next(v for v in spec["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "8192Mi"}
    assert {"name": "shm", "mountPath": "/dev/shm"} in train["volumeMounts"]
    assert spec["terminationGracePeriodSeconds"] == 300 and document["spec"]["activeDeadlineSeconds"] == 7200
    assert "nvidia.com/gpu" not in container(manifest(job()))["resources"]["limits"]


def test_the_container_runs_as_the_images_user_without_privileges():
    document = manifest(job())
    pod = document["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True and (pod["runAsUser"], pod["runAsGroup"]) == (1000, 1000)
    assert container(document)["securityContext"] == {"allowPrivilegeEscalation": False,
                                                      "capabilities": {"drop": ["ALL"]}}  # fmt: skip
    assert "hostIPC" not in document["spec"]["template"]["spec"]


@pytest.mark.parametrize(
    ("changes", "match"),
    [({"run": "Mnist"}, "lowercase"), ({"image": "labstack/torch:2.13.0-cpu-lab"}, "registry digest"),
     ({"memory": "lots"}, "--mem")],
)  # fmt: skip
def test_what_kubernetes_would_refuse_is_bad_input_here(changes, match):
    with pytest.raises(BadInput, match=match):
        job(**changes)


def test_the_digest_comes_from_invoke_pushs_record(tmp_path):
    record = tmp_path / "digests.json"
    record.write_text(json.dumps({"images": [{"ref": "labstack/torch:2.13.0-cpu-lab", "digest": DIGEST,
                                              "image_id": IMAGE_ID}]}))  # fmt: skip
    assert digest_of("labstack/torch:2.13.0-cpu-lab", record) == (DIGEST, IMAGE_ID)
    with pytest.raises(LabstackError, match="invoke push --registry HOST:PORT --image labstack/tf:1-cpu"):
        digest_of("labstack/tf:1-cpu", record)
    with pytest.raises(LabstackError, match="no registry digest"):
        digest_of("labstack/torch:2.13.0-cpu-lab", tmp_path / "missing.json")


def test_the_written_file_is_yaml_that_reads_back_as_the_manifest(tmp_path):
    out = write(job(), "1.31", tmp_path / "job.yaml")
    assert yaml.safe_load(out.read_text()) == manifest(job())
    assert "&id" not in out.read_text()  # no YAML anchors: people read and edit this file


def test_invoke_kube_job_says_what_is_wrong_in_one_line(tmp_path):
    runs = ("--runs", str(tmp_path))
    assert_one_line_failure(run_invoke("kube-job", "--digest", "nope", *runs), 2, "registry digest")
    assert_one_line_failure(run_invoke("kube-job", "--digest", DIGEST, "--cpus", "x", *runs), 2, "--cpus 'x'")
    assert_one_line_failure(run_invoke("kube-job", "--record", str(tmp_path / "none.json"), *runs), 1,
                            "push it first")  # fmt: skip
    done = run_invoke("kube-job", "--digest", DIGEST, "--gpus", "1", "--run", "smoke", *runs)
    assert done.returncode == 0, done.stderr
    assert container(yaml.safe_load((tmp_path / "smoke" / "kubernetes" / "job.yaml").read_text()))["image"] == DIGEST
