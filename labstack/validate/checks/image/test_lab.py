"""What every lab image promises (`<image>-lab`: the everyday stack, torchvision, the lab's packages), checked in
real containers: everything it claims imports, nothing below it changed, what it goes without is said, and a user
can try a package without touching the locked ones."""

from __future__ import annotations

import io
import json
import tarfile
import uuid
import zipfile

import pytest
import testinfra
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from labstack import payload
from labstack.build.layers import LAB, claimed, read_layer_lock
from labstack.build.lock import read_lock
from labstack.matrix import load_matrix
from labstack.validate.checks.image.conftest import COMMAND_TIMEOUT, run_python

MATRIX = load_matrix()
MANIFEST = payload.MANIFEST_IN_IMAGE
USER_SITE = "/opt/labstack/user"
# Neither root nor the image's user: compose runs the container as the user's own UID.
STRANGER = "4321:4321"


@pytest.fixture
def lab(image, lab_built) -> str:
    if image.name not in lab_built:
        pytest.skip(f"no lab image of {image.name} here: `invoke build --framework {image.framework}` builds it")
    return lab_built[image.name]


@pytest.fixture
def lab_host(lab, client):
    """A running container of the lab image as the stranger UID, as a testinfra host."""
    name = f"labstack-test-lab-{uuid.uuid4().hex[:8]}"
    container = client.containers.run(
        lab, ["sleep", "infinity"], name=name, detach=True, network_mode="none", user=STRANGER,
        environment={"HOME": "/tmp"},
    )  # fmt: skip
    try:
        yield testinfra.get_host(f"docker://{container.id}")
    finally:
        container.remove(force=True)


def installed(host) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json; "
        "print(json.dumps({d.metadata['Name'].lower().replace('_', '-'): d.version for d in m.distributions()}))"
    )
    return json.loads(run_python(host, code))


def test_every_package_the_lab_image_claims_imports(lab_host, image):
    record = json.loads(lab_host.file(f"{MANIFEST}/lab.json").content_string)
    names = [
        canonicalize_name(Requirement(r).name) for r in claimed(MATRIX, image, LAB, read_layer_lock(MATRIX, image, LAB))
    ]
    assert sorted(record["imports"]) == sorted(names)
    modules = sorted({m for name in names for m in record["imports"][name]})
    assert run_python(lab_host, f"import {', '.join(modules)}; print('ok')").endswith("ok")


def test_the_lab_layer_changed_nothing_of_the_framework_image(lab_host, image):
    versions = installed(lab_host)
    changed = {
        p.name: (p.version, versions.get(p.name)) for p in read_lock(image, MATRIX) if versions.get(p.name) != p.version
    }
    assert not changed, f"the lab image changed framework pins (lock, installed): {changed}"


def test_what_the_lab_image_goes_without_is_said_and_not_claimed(lab_host, lab, image, client):
    """The lock, the manifest and the labels agree on what is missing, and a missing package is not installed."""
    missing = read_layer_lock(MATRIX, image, LAB).missing
    record = json.loads(lab_host.file(f"{MANIFEST}/lab.json").content_string)
    labels = client.images.get(lab).labels
    assert record["missing"] == missing
    assert labels["labstack.lab.missing"] == "; ".join(f"{req}: {why}" for req, why in missing.items())
    labelled = labels["labstack.lab"].split(",")
    versions = installed(lab_host)
    for requirement in missing:
        name = canonicalize_name(Requirement(requirement).name)
        assert requirement not in labelled and name not in versions, f"{requirement} is missing yet present"


def wheel(name: str, version: str, module: str) -> bytes:
    """A minimal pure-Python wheel, made here: trying a package must work without any network."""
    buffer = io.BytesIO()
    dist = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{module}/__init__.py", f"WHO = {name!r}\n")
        archive.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        archive.writestr(
            f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: labstack-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        archive.writestr(f"{dist}/RECORD", "")
    return buffer.getvalue()


def put_wheel(client, container_id: str, filename: str, content: bytes) -> str:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tarfile.TarInfo(filename)
        info.size, info.mode = len(content), 0o644
        tar.addfile(info, io.BytesIO(content))
    client.api.put_archive(container_id, "/tmp", archive.getvalue())
    return f"/tmp/{filename}"


def test_a_user_can_try_a_package_and_it_never_replaces_a_locked_one(lab_host, client):
    container = lab_host.backend.name
    tried = put_wheel(client, container, "labtrial-1.0-py3-none-any.whl", wheel("labtrial", "1.0", "labtrial"))
    result = lab_host.run("timeout %s pip install --no-index %s", str(COMMAND_TIMEOUT), tried)
    assert result.rc == 0, result.stderr
    where = run_python(lab_host, "import labtrial; print(labtrial.__file__)")
    assert where.startswith(f"{USER_SITE}/"), where
    locked = installed(lab_host)
    fake = put_wheel(client, container, "numpy-99.0-py3-none-any.whl", wheel("numpy", "99.0", "numpy"))
    result = lab_host.run("timeout %s pip install --no-index %s", str(COMMAND_TIMEOUT), fake)
    assert result.rc != 0, "pip replaced a locked package"
    assert installed(lab_host)["numpy"] == locked["numpy"] != "99.0"
    assert run_python(lab_host, "import numpy; print(numpy.__file__)").startswith("/opt/venv/")


@pytest.mark.only("cpu", frameworks=("torch",))
def test_torch_lab_images_pair_up_except_for_cuda_and_what_a_variant_goes_without(image, lab_built, client):
    """The matched pair at the lab layer, in the images themselves: the CPU and CUDA lab images hold the same
    packages but for CUDA packages, the torch build, and what one of them goes without (named by its lock).
    Checked from the cpu image, against its cuda twin."""
    pair = [MATRIX.image(image.framework, v) for v in ("cpu", "cuda")]
    if not all(i.name in lab_built for i in pair):
        pytest.skip("compares the cpu and cuda lab images: needs both here (--variant all)")
    freezes = {}
    for each in pair:
        out = client.containers.run(lab_built[each.name], ["cat", f"{MANIFEST}/pip-freeze.txt"], remove=True,
                                    network_mode="none")  # fmt: skip
        freezes[each.variant] = dict(line.split("==", 1) for line in out.decode().split())
    cpu, cuda = freezes["cpu"], freezes["cuda"]
    differing = {n for n in cpu.keys() | cuda.keys() if cpu.get(n) != cuda.get(n) and not MATRIX.is_cuda_package(n)}
    missing = {canonicalize_name(Requirement(r).name) for i in pair for r in read_layer_lock(MATRIX, i, LAB).missing}
    assert differing - {image.framework} == missing, (
        f"cpu and cuda lab images differ in {sorted(differing)}; their locks name as missing only {sorted(missing)}"
    )
