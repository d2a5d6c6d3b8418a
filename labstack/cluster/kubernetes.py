"""`invoke kube-job`: a Kubernetes Job manifest for a labstack image, generated and validated offline.

The image by registry digest (what a cluster pulls: `invoke push` records it), the train service's contract
(the built-in trainer or the lab's command, the runs folder at /runs, checkpoints on SIGTERM within the grace
period), CPU/memory/GPU limits, /dev/shm as a memory-backed emptyDir, and a non-root, no-privilege security
context. It is checked against the Kubernetes API's own JSON schema (kubernetes-validate, strict: no unknown
field) for the chosen Kubernetes version before it is written; nothing here talks to a cluster.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from labstack.cluster.export import write_atomically
from labstack.cluster.job import RUN_NAME, memory_mb, time_limit_s
from labstack.errors import BadInput, LabstackError, shown

DEFAULT_KUBERNETES = "1.31"
RECORD_HINT = "default: reports/push/digests.json"  # deploy.push.DEFAULT_OUT, for --record's messages
DIGEST_REF = re.compile(r"[a-z0-9][a-z0-9._:/-]*@sha256:[0-9a-f]{64}")
IMAGE_UID = 1000  # the images' own user (images/base/Dockerfile: lab, 1000:1000)
# Claims a cluster admin creates once; a Job mounts them by name.
DEFAULT_RUNS_CLAIM = "labstack-runs"
DEFAULT_DATA_CLAIM = "labstack-data"


@dataclass(frozen=True)
class KubeJob:
    run: str
    image: str  # HOST:PORT/labstack/torch@sha256:... (registry digest)
    image_id: str
    command: tuple[str, ...]  # python ENTRYPOINT ... (the image's tini stays the entrypoint)
    cpus: int = 2
    memory: str = "8G"
    gpus: int = 0
    time: str = "1:00:00"
    grace_s: int = 120
    runs_claim: str = DEFAULT_RUNS_CLAIM
    data_claim: str = DEFAULT_DATA_CLAIM
    retries: int = 3  # a Job whose pod fails starts a new one, which resumes from the checkpoint

    def __post_init__(self) -> None:
        if not RUN_NAME.fullmatch(self.run) or not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", self.run):
            raise BadInput(f"--run {self.run!r}: Kubernetes names are lowercase letters, digits, '-' and '.'")
        if not DIGEST_REF.fullmatch(self.image):
            raise BadInput(f"{self.image!r} is not an image by registry digest (HOST:PORT/REPO@sha256:...)")
        memory_mb(self.memory)


def manifest(job: KubeJob) -> dict[str, Any]:
    mem_mib = memory_mb(job.memory)
    limits: dict[str, Any] = {"cpu": str(job.cpus), "memory": f"{mem_mib}Mi"}
    if job.gpus:
        limits["nvidia.com/gpu"] = job.gpus  # extended resources: requests default to limits
    labels = {"app.kubernetes.io/name": "labstack", "app.kubernetes.io/component": "train", "labstack.run": job.run}
    metadata: dict[str, Any] = {"name": f"labstack-{job.run}", "labels": dict(labels)}
    if job.image_id:
        metadata["annotations"] = {"labstack.image_id": job.image_id}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": job.retries,
            "activeDeadlineSeconds": time_limit_s(job.time),
            "ttlSecondsAfterFinished": 7 * 24 * 3600,
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "restartPolicy": "Never",
                    # SIGTERM, then this long before SIGKILL: the trainer checkpoints in it.
                    "terminationGracePeriodSeconds": job.grace_s,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": IMAGE_UID,
                        "runAsGroup": IMAGE_UID,
                        "fsGroup": IMAGE_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "train",
                            "image": job.image,
                            "imagePullPolicy": "IfNotPresent",
                            "args": list(job.command),
                            "workingDir": "/runs",
                            "env": [
                                {"name": "LABSTACK_IMAGE", "value": job.image},
                                {
                                    "name": "LABSTACK_IMAGE_ID",
                                    "value": job.image_id or "unknown (named by --digest)",
                                },
                                {"name": "LABSTACK_RUN", "value": job.run},
                                {"name": "HOME", "value": "/tmp"},
                                {"name": "TF_CPP_MIN_LOG_LEVEL", "value": "2"},
                            ],
                            "resources": {"requests": dict(limits), "limits": limits},
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [
                                {"name": "runs", "mountPath": "/runs"},
                                {"name": "data", "mountPath": "/data", "readOnly": True},
                                {"name": "shm", "mountPath": "/dev/shm"},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "runs", "persistentVolumeClaim": {"claimName": job.runs_claim}},
                        {"name": "data", "persistentVolumeClaim": {"claimName": job.data_claim, "readOnly": True}},
                        # Memory-backed, counted against the pod's memory: half of it, as the Slurm jobs give.
                        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{mem_mib // 2}Mi"}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    }


def validate(document: dict[str, Any], version: str) -> None:
    """Against the Kubernetes API's JSON schema of that version, strictly (an unknown field is an error)."""
    if not re.fullmatch(r"v?1\.\d{1,2}(\.\d+)?", version):
        raise BadInput(f"--kubernetes {version!r} is not a Kubernetes version (1.31)")
    try:
        kubernetes_validate.validate(document, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(p) for p in error.path) or "the manifest"
        raise LabstackError(
            f"the Job manifest is not valid for Kubernetes {version} at {where}: {error.message}"
        ) from None
    except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.utils.VersionNotSupportedError, IndexError):
        known = kubernetes_validate.utils.all_versions()
        raise BadInput(f"--kubernetes {version}: no schema for that version here ({known[0]} to {known[-1]})") from None


def digest_of(ref: str, record: Path) -> tuple[str, str]:
    """(registry digest, image ID) `invoke push` recorded for `ref` (reports/push/digests.json)."""
    try:
        pushed = json.loads(record.read_text())["images"]
    except FileNotFoundError:
        pushed = []
    except IsADirectoryError:
        raise BadInput(
            f"--record {shown(str(record))} is a folder: give the file `invoke push` wrote ({RECORD_HINT})"
        ) from None
    except OSError as error:  # a name the file system refuses, a file it cannot read
        raise BadInput(
            f"--record {shown(str(record))} cannot be read ({error.strerror or error}): give the file `invoke push` "
            f"wrote ({RECORD_HINT})"
        ) from None
    except (ValueError, KeyError, TypeError) as error:
        raise LabstackError(f"{record} cannot be read ({error}): push again with `invoke push`") from None
    for entry in pushed:
        if entry.get("ref") == ref and DIGEST_REF.fullmatch(entry.get("digest", "")):
            return entry["digest"], entry.get("image_id", "")
    raise LabstackError(
        f"{ref} has no registry digest in {record}: a cluster pulls by digest, so push it first "
        f"(`invoke push --registry HOST:PORT --image {ref}`) or give --digest HOST:PORT/REPO@sha256:..."
    )


def write(job: KubeJob, version: str, out: Path) -> Path:
    document = manifest(job)
    validate(document, version)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = f"# labstack Job for run {job.run}, valid for Kubernetes {version}: kubectl apply -f {out.name}\n"
    write_atomically(out, header + yaml.safe_dump(document, sort_keys=False))
    return out
